"""The local provider: what the studio costs on top of raw diffusers, and what the model cache saves.

1. The same text-to-image generation (same pipeline object, prompt, size, steps and seed) run through
   ``Studio.generate`` (validation, provider, PNG encode, metadata, atomic save, thumbnail, SQLite
   row) and by calling the diffusers pipeline directly, alternating, in one process. Prints min and
   median of wall and CPU time and the ratios (min, and CPU time, are the steadier figures on a busy
   machine), and checks that both produced the same pixels.
2. A first request on a cold cache (loads the model) against a second one (reuses it).

    python bench/bench_local.py                      # a random "small" SD-shaped model (~40 M params)
    python bench/bench_local.py --preset tiny        # the test model: shows the fixed overhead
    python bench/bench_local.py --model /path/or/hf-id --size 512 --steps 2 --guidance 0

Nothing is downloaded unless --model names a Hugging Face id that is not cached. Prints figures;
asserts nothing about time. On a shared, busy machine run it with OMP_NUM_THREADS=1: torch's worker
threads otherwise spin against other processes and single runs swing by 10x.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from providers import local  # noqa: E402
from studio.config import Settings  # noqa: E402
from studio.service import Studio  # noqa: E402
from studio.types import GenerationRequest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model id or path (default: build a random model in a temp folder)")
    parser.add_argument("--preset", default="small", choices=["tiny", "small"], help="random model size")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from tests.tiny_model import save_tiny_model

            started = time.perf_counter()
            model = str(save_tiny_model(Path(scratch) / "model", preset=args.preset))
            print(f"built a random '{args.preset}' model in {time.perf_counter() - started:.1f} s")
        studio = Studio(settings=Settings.load(Path(scratch) / "home", local_model=model))
        try:
            cold_and_warm(studio, args)
            studio_versus_raw(studio, model, args)
        finally:
            studio.close()


def request(args, seed: int) -> GenerationRequest:
    return GenerationRequest(prompt="a lighthouse on a cliff at dusk", provider="local", width=args.size,
                             height=args.size, steps=args.steps, guidance=args.guidance, n=args.n, seed=seed,
                             cache=False)  # always run the model; never answer from the studio's image cache


def cold_and_warm(studio: Studio, args) -> None:
    local.clear_cache()
    timings = []
    for seed in (1, 2):
        started = time.perf_counter()
        result = studio.generate(request(args, seed))
        usage = result.images[0].params["usage"]
        timings.append((time.perf_counter() - started, usage))
    (first, first_usage), (second, second_usage) = timings
    print("\n== model cache: first request vs second ==")
    print(f"device {first_usage['device']} / {first_usage['dtype']}, {args.size}x{args.size}, {args.steps} steps, "
          f"n={args.n}")
    print(f"first  request: {first * 1000:8.1f} ms  (from cache: {first_usage['from_cache']}, "
          f"load {first_usage['load_seconds'] * 1000:.1f} ms, generate {first_usage['generate_seconds'] * 1000:.1f} ms)")
    print(f"second request: {second * 1000:8.1f} ms  (from cache: {second_usage['from_cache']}, "
          f"load {second_usage['load_seconds'] * 1000:.1f} ms, generate {second_usage['generate_seconds'] * 1000:.1f} ms)")
    print(f"models loaded so far in this process: {local.CACHE.loads}")


def studio_versus_raw(studio: Studio, model: str, args) -> None:
    import torch

    provider = studio.provider("local")
    loaded, from_cache = provider.load(model)
    assert from_cache, "the model should already be cached by the first benchmark"
    pipe = loaded.text_to_image  # the very object the studio's requests run on

    def raw(seed: int) -> list[Image.Image]:
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(args.n)]
        with loaded.lock:  # what the provider holds too; uncontended here
            return pipe(prompt=request(args, seed).prompt, width=args.size, height=args.size,
                        num_inference_steps=args.steps, guidance_scale=args.guidance, num_images_per_prompt=args.n,
                        generator=generators).images

    def through_studio(seed: int):
        return studio.generate(request(args, seed)).images[0]

    wall = {"studio": [], "raw": []}
    cpu = {"studio": [], "raw": []}  # CPU seconds of this process: less disturbed by other processes
    same_pixels = True
    for repeat in range(args.repeats):
        seed = 100 + repeat
        # Alternate which goes first, so drift in machine load does not favour either side.
        order = [("studio", through_studio), ("raw", raw)]
        outputs = {}
        for name, run in order if repeat % 2 == 0 else reversed(order):
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            outputs[name] = run(seed)
            wall[name].append((time.perf_counter() - wall_start) * 1000)
            cpu[name].append((time.process_time() - cpu_start) * 1000)
        with Image.open(io.BytesIO(studio.image_bytes(outputs["studio"]))) as saved:
            same_pixels &= np.array_equal(np.asarray(saved.convert("RGB")),
                                          np.asarray(outputs["raw"][0].convert("RGB")))

    print(f"\n== same generation through the studio vs raw diffusers ({args.repeats} runs each, ms) ==")
    print(f"{'':30}{'wall min':>10}{'median':>10}{'cpu min':>10}{'median':>10}")
    for name, label in (("raw", "raw diffusers pipeline call"), ("studio", "Studio.generate (saved)")):
        print(f"{label:30}{min(wall[name]):10.1f}{statistics.median(wall[name]):10.1f}"
              f"{min(cpu[name]):10.1f}{statistics.median(cpu[name]):10.1f}")
    for kind, runs in (("wall", wall), ("cpu", cpu)):
        print(f"ratio studio / raw ({kind}): {min(runs['studio']) / min(runs['raw']):.3f} (min), "
              f"{statistics.median(runs['studio']) / statistics.median(runs['raw']):.3f} (median); "
              f"overhead {min(runs['studio']) - min(runs['raw']):+.1f} ms (min)")
    print(f"identical pixels: {same_pixels}")


if __name__ == "__main__":
    main()

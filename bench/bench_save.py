"""The save step per provider image: re-encoding to add metadata (what every image went through
before) against writing the metadata into the provider's own bytes (what an image in the asked
format, without post-processing, goes through now). Both decode the answer and make the thumbnail;
they differ in how the stored file is made.

    python bench/bench_save.py [--side 1024] [--runs 5]

The image is photo-like (gradients, shapes, grain, slight blur), so PNG compresses as a photo does.
Figures are CPU seconds of this process (time.process_time), median over the runs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from studio.imaging import decode_result, thumbnail_bytes  # noqa: E402
from studio.metadata import format_parameters, read_metadata  # noqa: E402
from studio.metadata_write import encode_image, insert_metadata  # noqa: E402

SAVE_FORMATS = {"png": ("PNG", {}), "jpeg": ("JPEG", {"quality": 90}), "webp": ("WEBP", {"quality": 90})}


def photo_like(side: int) -> Image.Image:
    image = Image.merge("RGB", [Image.linear_gradient("L").rotate(angle).resize((side, side))
                                for angle in (0, 90, 45)])
    draw = ImageDraw.Draw(image)
    for i in range(12):
        box = [side * i // 14, side * ((i * 7) % 12) // 14, side * i // 14 + side // 5, side * ((i * 7) % 12) // 14
               + side // 4]
        draw.ellipse(box, fill=((i * 40) % 256, (i * 90) % 256, (i * 150) % 256))
    image = image.filter(ImageFilter.GaussianBlur(2))
    grain = Image.merge("RGB", [Image.effect_noise((side, side), 24 + 6 * c) for c in range(3)])
    return Image.blend(image, grain, 0.12)


def cpu_median(work, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    source = photo_like(args.side)
    parameters = format_parameters("a harbour at dawn, film grain", "blurry", {
        "Steps": 30, "Sampler": "euler", "CFG scale": 7, "Seed": 42, "Size": f"{args.side}x{args.side}"})
    record = {"id": "0123456789abcdef", "prompt": "a harbour at dawn, film grain", "provider": "bench"}
    print(f"save step per {args.side}x{args.side} photo-like image, CPU ms (median of {args.runs})")
    print(f"{'format':<6} {'answer KB':>9} {'re-encode':>10} {'insert':>8} {'save before':>12} {'save now':>9}"
          f"  pixels kept")
    for fmt, (pil_format, options) in SAVE_FORMATS.items():
        buffer = io.BytesIO()
        source.save(buffer, format=pil_format, **options)
        answer = buffer.getvalue()
        image = decode_result(answer, "bench")

        def re_encode():
            return encode_image(image, fmt, parameters=parameters, studio_json=record, compression=95)

        def insert():
            return insert_metadata(answer, fmt, parameters=parameters, studio_json=record, size=image.size)

        def save_before():  # decode, thumbnail, re-encode with metadata
            decoded = decode_result(answer, "bench")
            thumbnail_bytes(decoded)
            encode_image(decoded, fmt, parameters=parameters, studio_json=record, compression=95)

        def save_now():  # decode (checks the answer), thumbnail, metadata into the answer's bytes
            decoded = decode_result(answer, "bench")
            thumbnail_bytes(decoded)
            insert_metadata(answer, fmt, parameters=parameters, studio_json=record, size=decoded.size)

        kept_before = Image.open(io.BytesIO(re_encode())).tobytes() == Image.open(io.BytesIO(answer)).tobytes()
        inserted = insert()
        kept_now = Image.open(io.BytesIO(inserted)).tobytes() == Image.open(io.BytesIO(answer)).tobytes()
        assert read_metadata(inserted)["studio"]["id"] == record["id"]
        print(f"{fmt:<6} {len(answer) / 1024:>9.0f} {cpu_median(re_encode, args.runs) * 1000:>10.1f} "
              f"{cpu_median(insert, args.runs) * 1000:>8.2f} {cpu_median(save_before, args.runs) * 1000:>12.1f} "
              f"{cpu_median(save_now, args.runs) * 1000:>9.1f}  before {'yes' if kept_before else 'no'}, "
              f"now {'yes' if kept_now else 'no'}")


if __name__ == "__main__":
    main()

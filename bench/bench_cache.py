"""Cache hit vs miss: an identical request with a fixed seed is served from storage without calling
the provider. The provider here is the echo fake with a fixed latency standing in for a cloud call.

    python bench/bench_cache.py [--latency 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.service import Studio  # noqa: E402
from studio.types import GenerationRequest  # noqa: E402
from tests.fakes import echo_provider  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the fake provider takes")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        echo_provider.install(Path(home) / "catalog", latency=args.latency)
        studio = Studio(home)
        misses, hits = [], []
        for run in range(args.runs):
            request = GenerationRequest(prompt=f"a lighthouse {run}", provider="echo", seed=run, n=2,
                                        width=512, height=512)
            start = time.perf_counter()
            first = studio.generate(request)
            misses.append(time.perf_counter() - start)
            start = time.perf_counter()
            second = studio.generate(request)
            hits.append(time.perf_counter() - start)
            assert second.cached and [r.id for r in second.images] == [r.id for r in first.images]
        miss, hit = statistics.median(misses), statistics.median(hits)
        print(f"cache miss (provider latency {args.latency:g} s, 2 images 512x512): {miss * 1000:8.1f} ms, "
              f"${first.cost:.2f}")
        print(f"cache hit (same request, fixed seed):                      {hit * 1000:8.1f} ms, $0.00")
        print(f"hit is {miss / hit:.0f}x faster; provider calls: {echo_provider.EchoProvider.calls} for "
              f"{2 * args.runs} requests")
        studio.close()


if __name__ == "__main__":
    main()

"""Batch from script: the same 40-scene script against a fake provider with a fixed latency, run
one scene after another and then as a job at concurrency 8, in one run.

    python bench/bench_batch.py [--scenes 40] [--concurrency 8] [--latency 0.5]

Prints both times and each one's ratio to the ideal for the queue (scenes / concurrency x latency).
Every scene goes through the whole studio: validation, the provider call, decoding, metadata,
atomic file writes with fsync, index rows, and for the job its own rows and progress updates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import providers  # noqa: E402
from studio.jobs import JobManager, JobStatus  # noqa: E402
from studio.service import Studio  # noqa: E402
from studio.types import GenerationRequest  # noqa: E402
from tests.fakes import echo_provider  # noqa: E402


class FixedLatency(echo_provider.EchoProvider):
    """The echo fake standing in for a cloud API that allows 8 requests at once."""

    max_concurrency = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per provider call")
    args = parser.parse_args()
    FixedLatency.max_concurrency = max(FixedLatency.max_concurrency, args.concurrency)
    script = "\n".join(f"00:{i // 60:02d}:{i % 60:02d} scene {i}: a lighthouse keeper's day, shot {i}"
                       for i in range(args.scenes))
    ideal = args.scenes / args.concurrency * args.latency

    with tempfile.TemporaryDirectory() as home:
        echo_provider.install(Path(home) / "catalog", latency=args.latency)
        providers.register("echo", FixedLatency)
        studio = Studio(home)

        started = time.perf_counter()
        for line in script.splitlines():
            studio.generate(GenerationRequest(prompt=line.split(" ", 1)[1] + " (sequential)", provider="echo"))
        sequential = time.perf_counter() - started

        manager = JobManager(studio)
        started = time.perf_counter()
        job = manager.submit(script, provider="echo", concurrency=args.concurrency)
        final = manager.wait(job.id)
        queued = time.perf_counter() - started
        manager.close()
        studio.close()
        assert final.status is JobStatus.COMPLETED and final.counts == {"COMPLETED": args.scenes}, final.counts

    print(f"{args.scenes} scenes, provider latency {args.latency:.2f} s, concurrency {args.concurrency}")
    print(f"ideal for the queue (scenes / concurrency x latency): {ideal:6.2f} s")
    print(f"sequential:                                       {sequential:6.2f} s  "
          f"({sequential / ideal:5.2f} x ideal)")
    print(f"job queue at concurrency {args.concurrency}:                       {queued:6.2f} s  "
          f"({queued / ideal:5.2f} x ideal)")
    print(f"speed-up: {sequential / queued:.1f} x")


if __name__ == "__main__":
    main()

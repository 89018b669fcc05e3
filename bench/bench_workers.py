"""Celery workers vs the embedded thread runner: a 200-scene batch against a fake provider with a
0.5 s latency, run by 1 worker process, by 4 worker processes, and by the thread runner (4 threads),
in one run.

    python bench/bench_workers.py [--scenes 200] [--latency 0.5] [--workers 4]

Needs Debian's redis-server (started here on a free port, in a temporary directory). Workers are
real ``celery -A studio.worker worker --pool=solo`` processes on one data directory (SQLite, files);
each takes one scene at a time, and the provider allows ``--workers`` requests at once (the Redis
gate), so the ideal is ``scenes x latency / workers``. Workers are started and ready before the
clock starts. Prints each time, its ratio to the ideal, and the throughput ratio of N workers to 1
against the ideal N.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.celery_workers import Worker, worker_env  # noqa: E402
from tests.fakes import echo_provider  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402


def run_batch(home: Path, script: str, concurrency: int, timeout: float) -> float:
    """Submit the script as one job in a studio on ``home`` (the environment picks the runner) and
    wait for it; returns the seconds it took. Raises when it did not complete."""
    from studio.jobs import JobManager, JobStatus
    from studio.service import Studio

    studio = Studio(home)
    manager = JobManager(studio)
    try:
        started = time.perf_counter()
        job = manager.submit(script, provider="echo", concurrency=concurrency)
        final = manager.wait(job.id, timeout=timeout)
        took = time.perf_counter() - started
        if final.status is not JobStatus.COMPLETED:
            raise RuntimeError(f"the job ended {final.status.value}: {final.counts} {final.error or ''}")
        return took
    finally:
        manager.close(wait=0)
        studio.close()


def with_workers(base: Path, script: str, count: int, latency: float, timeout: float) -> float:
    home = base / f"workers-{count}"
    echo_provider.install(home / "catalog")
    with redis_server(base / f"redis-{count}") as url:
        env = worker_env(home, url, ECHO_LATENCY=str(latency))
        workers = [Worker(env, f"bench{n}") for n in range(count)]
        try:
            for worker in workers:
                worker.wait_ready()
            os.environ["STUDIO_BROKER_URL"] = url
            return run_batch(home, script, count, timeout)
        finally:
            os.environ.pop("STUDIO_BROKER_URL", None)
            for worker in workers:
                worker.stop()


def with_threads(base: Path, script: str, count: int, latency: float, timeout: float) -> float:
    home = base / "threads"
    echo_provider.install(home / "catalog", latency=latency)  # the fake in this process
    return run_batch(home, script, count, timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per provider call")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    n = args.workers
    script = "\n".join(f"scene {i}: a lighthouse keeper's day, shot {i}" for i in range(args.scenes))
    os.environ["STUDIO_PROVIDER_PLUGINS"] = echo_provider.PLUGIN_SPEC
    os.environ["STUDIO_PROVIDER_CONCURRENCY"] = f"echo={n}"
    os.environ.pop("STUDIO_BROKER_URL", None)
    timeout = 4 * args.scenes * args.latency + 120
    ideal_one = args.scenes * args.latency
    ideal_n = ideal_one / n
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        one = with_workers(base, script, 1, args.latency, timeout)
        many = with_workers(base, script, n, args.latency, timeout)
        threads = with_threads(base, script, n, args.latency, timeout)
    print(f"{args.scenes} scenes, {args.latency} s per provider call")
    print(f"1 worker:           {one:7.1f} s  (ideal {ideal_one:.1f} s, x{one / ideal_one:.2f})")
    print(f"{n} workers:          {many:7.1f} s  (ideal {ideal_n:.1f} s, x{many / ideal_n:.2f})")
    print(f"thread runner ({n}):  {threads:7.1f} s  (ideal {ideal_n:.1f} s, x{threads / ideal_n:.2f})")
    print(f"{n} workers vs 1: {one / many:.2f}x the throughput (ideal {n}x: {one / many / n:.0%} of it)")


if __name__ == "__main__":
    main()

"""Fault injection figures: a 100-scene batch on the Stability provider while its (loopback) API
answers 30% 429, 10% 500, 5% hangs past the timeout, 3% truncated and 2% invalid image bytes.

    python bench/bench_faults.py [--scenes 100]

Compare with the same batch against a healthy fake in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.faulty import FaultPlan, run_fault_batch  # noqa: E402


def summarize(label: str, figures: dict) -> None:
    items = figures["result"]["items"]
    statuses = Counter(item["status"] for item in items)
    studio = figures["studio"]
    booked = sum(row["cost"] for row in studio.storage.index.generations())
    stored = studio.history(limit=10000).total
    print(f"{label}: {len(items)} scenes in {figures['elapsed']:.1f} s -> {dict(statuses)}; "
          f"{figures['requests']} HTTP requests {figures['faults']}; stored images {stored}; "
          f"booked ${booked:.2f}; repair clean: {studio.repair().clean}")
    reasons = Counter(item["error"] for item in items if item["status"] == "FAILED")
    for reason, count in reasons.items():
        print(f"    FAILED x{count}: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=100)
    args = parser.parse_args()
    for label, plan in (("healthy fake", FaultPlan(0, 0, 0, 0, 0)), ("faulty fake ", FaultPlan())):
        with tempfile.TemporaryDirectory() as home:
            figures = run_fault_batch(Path(home), os.environ.__setitem__, scenes=args.scenes, plan=plan)
            summarize(label, figures)


if __name__ == "__main__":
    main()

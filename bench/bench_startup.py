"""App start time and memory with no model loaded, against what eager heavy imports would cost.

Each figure is a fresh interpreter (median of 3):
- the Home page rendered by Streamlit's AppTest (the real script run, no browser);
- the CLI listing providers;
- the alternative: the same Home page when torch + diffusers are imported up front.

    python bench/bench_startup.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HOME_PAGE = """
import json, resource, sys, time
start = time.perf_counter()
{eager}
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=120)
at.run()
assert not at.exception, at.exception
print(json.dumps({{"seconds": time.perf_counter() - start,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": "torch" in sys.modules}}))
"""

CLI = """
import json, resource, sys, time
start = time.perf_counter()
from studio.cli import main
import io, contextlib
with contextlib.redirect_stdout(io.StringIO()):
    main(["providers", "--json"])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "torch": "torch" in sys.modules}))
"""


def measure(code: str, home: str) -> dict:
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={"STUDIO_HOME": home, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                  "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "rss_mb": statistics.median(r["rss_mb"] for r in runs), "torch": runs[0]["torch"]}


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        rows = [
            ("Home page (AppTest), lazy imports", measure(HOME_PAGE.format(eager=""), home)),
            ("CLI `providers --json`", measure(CLI, home)),
            ("alternative: Home page with torch+diffusers imported up front",
             measure(HOME_PAGE.format(eager="import torch, diffusers"), home)),
        ]
    print(f"{'':64} {'seconds':>8} {'max RSS MB':>11}  torch loaded")
    for label, figures in rows:
        print(f"{label:64} {figures['seconds']:8.2f} {figures['rss_mb']:11.0f}  {figures['torch']}")


if __name__ == "__main__":
    main()

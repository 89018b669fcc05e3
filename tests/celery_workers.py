"""Real Celery worker processes for tests and benchmarks: ``celery -A studio.worker worker``.

``Worker(env, name)`` starts one as a subprocess with the studio's environment (``STUDIO_HOME``,
``STUDIO_BROKER_URL``, the fakes' base URLs and keys, ``PYTHONPATH``), waits for Celery's own
"ready" line and keeps its log; ``stop()`` (or the ``with`` block's end) ends it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 90.0  # seconds for a worker to import the studio and connect (a loaded 2-core machine)


def worker_env(home: Path, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker of the studio at ``home``: this process's (which holds the fakes'
    settings the tests set), plus ``extra``."""
    return {**os.environ, "STUDIO_HOME": str(home), "STUDIO_BROKER_URL": broker_url, "PYTHONPATH": str(ROOT),
            **extra}


class Worker:
    def __init__(self, env: dict[str, str], name: str, *, pool: str = "solo", concurrency: int = 1,
                 queues: str = "cloud,local"):
        self.name = name
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "studio.worker", "worker", f"--pool={pool}",
             f"--concurrency={concurrency}", "-Q", queues, "-n", f"{name}@%h", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"worker-{name}-log", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if " ready." in line:
                self.ready.set()
        self.ready.set()  # ended: nobody waits for a ready line that will never come

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not self.ready.wait(timeout) or self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} did not start:\n" + self.log())

    def log(self) -> str:
        return "\n".join(self.lines[-80:])

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acknowledgement (as a machine that loses power)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # a warm shutdown: the task in hand finishes
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._reader.join(10)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

"""Is the process that opened a row still running? Across machines (issue 13).

Requests in flight (``reservations``) and files about to be written (``pending_writes``) name the
process that made them: its pid and its machine. Crash recovery books or finishes the rows of dead
processes, so it must never take a live one for dead:

* A row of **this machine** is judged by its pid and start time (``/proc``), as always.
* A row of **another machine** cannot be judged by a pid (pid 4242 there says nothing here). Its
  process keeps a heartbeat row in the shared database (``process_heartbeats``, migration 0008)
  while it has rows open (``ProcessBeat``); the row is alive while its heartbeat is younger than
  ``stale_after`` seconds (``STUDIO_JOB_STALE_SECONDS``). A row with no heartbeat at all was made by
  older code: the caller falls back to the row's own expiry.

"This machine" is ``host_identity()``: the host name, the kernel's boot id (a pid from before a
reboot names nobody now) and the pid namespace (containers on one kernel each count their own pids),
each where readable. Tests that need "another machine" on this one set ``STUDIO_TEST_HOST_ID`` in a
second process (tests only: a deployment never sets it); that text then replaces the identity.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from studio.storage.index import sql

log = logging.getLogger(__name__)

TEST_HOST_VARIABLE = "STUDIO_TEST_HOST_ID"
DEFAULT_STALE_SECONDS = 15.0  # STUDIO_JOB_STALE_SECONDS's default


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def host_identity() -> str:
    """This machine as rows record it: ``"<host name>/<boot id>/<pid namespace>"`` (a part that
    cannot be read is left empty), or ``STUDIO_TEST_HOST_ID`` when a test sets it. A host name alone
    (no ``/``: host names cannot hold one) is how older code recorded it."""
    fake = os.environ.get(TEST_HOST_VARIABLE, "").strip()
    return fake or _real_host_identity()


@functools.lru_cache(maxsize=1)
def _real_host_identity() -> str:
    # Read once per process: none of the three changes while it runs.
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{_read('/proc/sys/kernel/random/boot_id')}/{namespace}"


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, as the system tells it (Linux: ``/proc/<pid>/stat``'s starttime,
    in clock ticks since boot); None where it cannot be read. With the pid it names one process: a
    pid reused by another program after a crash has another start time."""
    text = _read(f"/proc/{pid}/stat")
    fields = text.rsplit(")", 1)[-1].split()  # the program's name, in brackets, may hold spaces
    return fields[19] if len(fields) > 19 else None


_own_start: tuple[int, str | None] | None = None  # (pid, start time) of this process, read once per process


def own_start() -> str | None:
    """This process's ``process_started``, read from ``/proc`` once (again after a fork)."""
    global _own_start
    pid = os.getpid()
    if _own_start is None or _own_start[0] != pid:
        _own_start = (pid, process_started(pid))
    return _own_start[1]


def this_process() -> dict:
    """``{"pid", "host", "process_started"}`` of the calling process, as ``HistoryIndex.reserve`` records."""
    return {"pid": os.getpid(), "host": host_identity(), "process_started": own_start()}


def pid_running(pid: int) -> bool:
    """Is some process ``pid`` running on this machine (whoever's it is)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def process_alive(pid: int, started: str | None) -> bool:
    """Is the process ``pid`` that started at ``started`` (``process_started``; None: unknown) still
    running on this machine?"""
    if not pid_running(pid):
        return False
    now = process_started(pid)
    return started is None or now is None or now == started


class Liveness:
    """Judges the processes named by rows of one database (see the module docstring). ``index``: a
    ``HistoryIndex``; ``stale_after``: seconds a heartbeat is trusted."""

    def __init__(self, index, stale_after: float = DEFAULT_STALE_SECONDS):
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, not {stale_after}")
        self.index = index
        self.stale_after = float(stale_after)

    def is_local(self, host: str | None) -> bool:
        """Was a row with this ``host`` made on this machine (by current code, or by older code that
        recorded the bare host name)?"""
        if not host:
            return False
        identity = host_identity()
        return host == identity or ("/" not in host and host == identity.split("/", 1)[0]
                                    and not os.environ.get(TEST_HOST_VARIABLE))

    def heartbeats(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every process's heartbeat row, by (host, pid)."""
        rows = self.index._rows(sql("SELECT host, pid, process_started, beat_at FROM process_heartbeats"))
        return {(row["host"], int(row["pid"])): row for row in rows}

    def alive(self, host: str | None, pid: Any, started: str | None, *, now: float,
              beats: dict[tuple[str, int], dict[str, Any]]) -> bool | None:
        """True/False for a process that can be judged; None for one of another machine with no
        heartbeat (older code: the caller decides by the row's own age). ``beats`` is ``heartbeats()``,
        read once per sweep."""
        if pid is None:
            return None
        pid = int(pid)
        if self.is_local(host):
            if pid == os.getpid() and (started is None or started == own_start()):
                return True  # this very process: no need to ask the system
            return process_alive(pid, started)
        beat = beats.get((host or "", pid))
        if beat is None:
            return None
        if started and beat["process_started"] and started != beat["process_started"]:
            return False  # the heartbeat is a later process's that got the same pid there
        return float(beat["beat_at"]) >= now - self.stale_after


class ProcessBeat:
    """Keeps this process's heartbeat row in one database fresh while requests of this process are
    in flight there (``begin``/``end``, by request id). The first ``begin`` writes the heartbeat at
    once (so its rows are never seen without one) and starts a thread that refreshes it every third
    of ``stale_after``; when the last request ends the thread deletes the heartbeat (unless rows of
    this process are still open there) and stops. A refresh that fails is logged and tried again
    next time (the heartbeat goes stale meanwhile)."""

    def __init__(self, liveness: Liveness):
        self.liveness = liveness
        self.interval = max(0.05, liveness.stale_after / 3)
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()  # request id -> requests in flight under it (one, unless misused)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def begin(self, request_id: str) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this storage is closed")
            self._open[request_id] += 1
            # (A thread inherited through fork is not alive in the child: it gets its own.)
            if self._thread is None or not self._thread.is_alive():
                me = this_process()
                self._write(me)
                self._wake.clear()
                self._thread = threading.Thread(target=self._run, args=(me,), name="studio-process-heartbeat",
                                                daemon=True)
                self._thread.start()

    def end(self, request_id: str) -> None:
        with self._lock:
            self._open[request_id] -= 1
            if self._open[request_id] <= 0:
                del self._open[request_id]
            if not self._open:
                self._wake.set()

    def close(self) -> None:
        """Stop refreshing (the heartbeat then goes stale: this process's rows, if any, count as dead
        after ``stale_after`` on other machines, as after a crash)."""
        with self._lock:
            self._closed = True
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _write(self, me: dict) -> None:
        with self.liveness.index.write() as conn:
            conn.execute(sql("INSERT INTO process_heartbeats (host, pid, process_started, beat_at) "
                             "VALUES (:host, :pid, :process_started, :now) ON CONFLICT (host, pid) DO UPDATE "
                             "SET process_started = excluded.process_started, beat_at = excluded.beat_at"),
                         {**me, "now": time.time()})

    def _forget(self, me: dict) -> None:
        """Delete the heartbeat unless rows of this process are open in the database (a request of
        another ``Storage`` of this process, or one left behind by an error): those keep it, stale."""
        args = {"host": me["host"], "pid": me["pid"]}
        with self.liveness.index.write() as conn:
            conn.execute(sql(
                "DELETE FROM process_heartbeats WHERE host = :host AND pid = :pid "
                "AND NOT EXISTS (SELECT 1 FROM reservations WHERE host = :host AND pid = :pid) "
                "AND NOT EXISTS (SELECT 1 FROM pending_writes WHERE host = :host AND pid = :pid)"), args)

    def _run(self, me: dict) -> None:
        while True:
            self._wake.wait(self.interval)
            with self._lock:
                self._wake.clear()
                if self._closed or not self._open:
                    if not self._closed:
                        try:
                            self._forget(me)
                        except Exception:
                            log.exception("process heartbeat: deleting it failed (it goes stale instead)")
                    self._thread = None  # (after the delete: whoever sees None sees the row gone)
                    return
            try:
                self._write(me)
            except Exception:
                log.exception("process heartbeat: the refresh failed this time")

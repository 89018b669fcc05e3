"""Crash recovery across machines (issue 13): a request in flight on another host is judged by that
process's heartbeat in the shared database, never by its pid on this host.

"Another host" is a real second process on this machine started with ``STUDIO_TEST_HOST_ID``
(``studio.storage.liveness``): its rows then carry that identity instead of this machine's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.service import Studio
from studio.storage import liveness
from tests.fakes import echo_provider

ROOT = Path(__file__).resolve().parent.parent
FAR_HOST = "far-host/00000000-0000-0000-0000-000000000001/pid:[1]"
STALE = 2.0  # STUDIO_JOB_STALE_SECONDS for both processes: the far process beats every 2/3 s
DEADLINE = 60.0

# The far process: one echo generation, held between writing its files and committing their rows
# (its pending writes and its reservation are open) until it is killed.
_FAR_WRITER = r"""
import sys
from studio.service import Studio
from studio.types import GenerationRequest

studio = Studio()

def held(*_args, **_kwargs):
    print("saving", flush=True)
    sys.stdin.readline()  # the test kills this process while it waits here
    raise SystemExit("released")

studio.storage.index.finish_generation = held
studio.generate(GenerationRequest(prompt="far away", provider="echo", n=2, width=64, height=64))
"""


def _deadline_poll(condition, seconds: float = 30.0, what: str = "condition"):
    """Wait for ``condition()`` to be true (it reads shared state another process changes)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _beat_at(index, host: str) -> float | None:
    beats = liveness.Liveness(index).heartbeats()
    return next((float(row["beat_at"]) for (h, _pid), row in beats.items() if h == host), None)


@pytest.fixture
def far_writer(database_url, studio_home, monkeypatch):
    """(Once per database: SQLite in the data directory, and PostgreSQL, which machines share.)"""
    monkeypatch.setenv("STUDIO_JOB_STALE_SECONDS", str(STALE))
    echo_provider.install(studio_home / "catalog")
    Studio(studio_home).close()  # the index exists before the far process starts
    env = {**os.environ, "STUDIO_HOME": str(studio_home), "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC,
           "PYTHONPATH": str(ROOT), liveness.TEST_HOST_VARIABLE: FAR_HOST}
    child = subprocess.Popen([sys.executable, "-c", _FAR_WRITER], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = child.stdout.readline().strip()
        assert line == "saving", child.stderr.read() if child.poll() is not None else line
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def test_a_live_writer_on_another_host_is_left_alone_and_a_dead_one_recovered(far_writer, studio_home):
    """While the far process lives (well past STUDIO_JOB_STALE_SECONDS, kept alive by its heartbeat)
    a start here leaves its pending writes and its request in flight alone; though its pid means
    nothing here. Once it is killed and its heartbeat goes stale, the next start finishes its writes
    (two images indexed, booked as "recovered") and nothing is left open. Before: a start here took
    every other host's write intents for dead and adopted its files under the live writer."""
    here = Studio(studio_home)
    try:
        index = here.storage.index
        assert {row["host"] for row in index.pending()} == {FAR_HOST} and len(index.pending()) == 4
        [in_flight] = index.open_requests()
        assert in_flight["host"] == FAR_HOST and in_flight["pid"] == far_writer.pid
        # Outlive the stale window: the far process's heartbeat is what keeps its rows alive.
        _deadline_poll(lambda: (_beat_at(index, FAR_HOST) or 0) > in_flight["created_at"] + 2 * STALE,
                       what="the far process's heartbeat to outlive the stale window")
        again = Studio(studio_home)
        try:
            assert again.recovered == []
            assert len(again.storage.index.pending()) == 4 and len(again.storage.index.open_requests()) == 1
            assert again.storage.interrupted_requests() == []
            assert again.history(owner=None, limit=10).total == 0 and again.storage.index.generations() == []
        finally:
            again.close()

        os.kill(far_writer.pid, signal.SIGKILL)
        far_writer.wait(30)
        _deadline_poll(lambda: here.storage.interrupted_requests(), what="the dead far process's row to go stale")
    finally:
        here.close()

    after = Studio(studio_home)
    try:
        assert len(after.recovered) == 2
        assert after.storage.index.pending() == [] and after.storage.index.open_requests() == []
        assert after.history(owner=None, limit=10).total == 2
        assert [row["status"] for row in after.storage.index.generations()] == ["recovered"]
    finally:
        after.close()


def test_a_live_request_of_another_host_is_not_booked_as_interrupted_until_its_heartbeat_stops(far_writer,
                                                                                          studio_home):
    """The far request's reservation (no budget hold expires for minutes) is booked as "interrupted,
    possibly billed" within STUDIO_JOB_STALE_SECONDS of its process dying, not an hour later; while
    it lives, requests here (which book dead processes' rows at their start) leave it open."""
    from studio.types import GenerationRequest

    here = Studio(studio_home)
    try:
        [in_flight] = here.storage.index.open_requests()
        _deadline_poll(lambda: (_beat_at(here.storage.index, FAR_HOST) or 0) > in_flight["created_at"] + 2 * STALE,
                       what="the far process's heartbeat to outlive the stale window")
        here.generate(GenerationRequest(prompt="near", provider="echo", width=64, height=64))
        assert [row["id"] for row in here.storage.index.open_requests()] == [in_flight["id"]]
        os.kill(far_writer.pid, signal.SIGKILL)
        far_writer.wait(30)
        _deadline_poll(lambda: here.storage.interrupted_requests(), what="the dead far request to go stale")
        assert here.storage.book_interrupted() == [in_flight["id"]]
        assert here.storage.index.open_requests() == []
    finally:
        here.close()


def test_the_check_at_each_request_start_is_cheap(echo_studio, monkeypatch):
    """``book_interrupted`` runs at every request start: with nothing open it reads no heartbeats and
    asks the system about no process; this process's own request in flight is not looked up either."""
    storage = echo_studio.storage
    me = liveness.this_process()

    def forbidden(*_args, **_kwargs):
        raise AssertionError("looked up")

    monkeypatch.setattr(liveness.Liveness, "heartbeats", forbidden)
    monkeypatch.setattr(liveness, "process_alive", forbidden)
    monkeypatch.setattr(liveness, "process_started", forbidden)
    assert storage.book_interrupted() == []
    assert storage.index.reserve("mine", "2026-11-29", 0.5, None, started_by=me,
                                 request={"provider": "echo"})[0]
    assert storage.book_interrupted() == [] and len(storage.index.open_requests()) == 1


def test_host_identity_names_boot_and_pid_namespace(monkeypatch):
    """A pid from before a reboot, or from another container's pid namespace, is not this machine's."""
    monkeypatch.delenv(liveness.TEST_HOST_VARIABLE, raising=False)
    host, boot, namespace = liveness.host_identity().split("/")
    if Path("/proc/sys/kernel/random/boot_id").exists():
        assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert namespace.startswith("pid:[")
    monkeypatch.setenv(liveness.TEST_HOST_VARIABLE, FAR_HOST)
    assert liveness.host_identity() == FAR_HOST


def test_this_process_beats_only_while_its_request_is_in_flight(echo_studio):
    """The heartbeat row exists while a request runs (other machines read it) and is gone, its
    thread stopped, once the request has ended: an idle process writes nothing."""
    from studio.types import GenerationRequest

    storage = echo_studio.storage
    me = liveness.this_process()
    seen = []

    def progress(_event):
        seen.append((me["host"], me["pid"]) in storage.liveness.heartbeats())

    echo_studio.generate(GenerationRequest(prompt="a beating heart", provider="echo"), progress=progress)
    assert seen and all(seen)
    thread = storage.beat._thread
    if thread is not None:
        thread.join(DEADLINE)
    assert storage.beat._thread is None and storage.liveness.heartbeats() == {}

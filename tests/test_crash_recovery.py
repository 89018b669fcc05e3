"""kill -9 during single generations, many times at random points: after a restart the index and the
files agree, every finished image is there, and its cost is on the books."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.service import Studio
from tests.fakes import echo_provider
from tests.helpers import HoldImageRequests
from tests.s3_server import s3_server, s3_storage_url, storage_url  # noqa: F401  (also registered in conftest)

ROOT = Path(__file__).resolve().parent.parent


def spawn_generation(home: Path, prompt: str, latency: float) -> subprocess.Popen:
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC,
           "ECHO_LATENCY": str(latency), "PYTHONPATH": str(ROOT)}
    code = ("import sys; from studio.service import Studio; from studio.types import GenerationRequest; "
            "s = Studio(); print('ready', flush=True); "
            f"s.generate(GenerationRequest(prompt={prompt!r}, provider='echo', n=4, width=256, height=256)); "
            "print('done', flush=True)")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def assert_index_and_files_agree(studio: Studio) -> None:
    store = studio.storage.files  # files under home, or objects in S3
    by_path = studio.storage.index.all_paths()
    assert set(store.keys("images")) == set(by_path), "orphans or rows without files"
    thumbs = set(store.keys("thumbs"))
    for path, image_id in by_path.items():
        record = studio.storage.get(image_id)
        assert hashlib.sha256(store.get(path)).hexdigest() == record.sha256
        assert record.thumb_path in thumbs


@pytest.mark.slow
def test_kill_minus_9_at_random_points_loses_nothing(storage_url, studio_home):
    """(Once per file store: the killed processes write to the data directory, or to S3.)"""
    rng = random.Random(1234)
    Studio(studio_home).close()  # create the index once
    completed = 0
    killed = 0
    for attempt in range(12):
        process = spawn_generation(studio_home, f"scene {attempt}", latency=0.05)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))  # before, during or after saving
        process.send_signal(signal.SIGKILL)
        out, _err = process.communicate(timeout=30)
        if "done" in out:
            completed += 1
        else:
            killed += 1
    assert killed >= 3, "the random kill points should interrupt several runs"

    studio = Studio(studio_home)  # the restart: interrupted writes are finished here
    assert_index_and_files_agree(studio)
    assert studio.storage.index.pending() == []
    # Requests killed while the provider had them are booked at a start; repair names those once.
    first = studio.repair()
    assert dataclasses.replace(first, interrupted=[]).clean
    assert studio.repair().clean
    total = studio.history(limit=1000).total
    assert total >= 4 * completed  # every request that finished is all there, plus files finished before a kill
    audit = studio.storage.index.generations()
    interrupted = [row for row in audit if row["status"] == "interrupted"]
    # (each spawned process's own start booked the ones killed before it; this start the rest)
    assert set(first.interrupted) <= {row["id"] for row in interrupted}
    assert all(row["cost"] > 0 for row in interrupted)  # possibly billed: booked at their bound
    booked = round(sum(row["cost"] for row in audit if row["status"] != "interrupted"), 6)
    assert booked == pytest.approx(round(sum(r.cost for r in studio.history(limit=1000).items), 6))


def test_intent_of_a_live_process_is_left_alone(studio_home):
    studio = Studio(studio_home)
    studio.storage.index.add_pending("req-live", ["images/x/2026/01/01/abc.png"])
    again = Studio(studio_home)  # same (live) process: must not touch the other writer's files
    assert len(again.storage.index.pending()) == 1
    assert again.recovered == []


def test_recovery_releases_the_dead_requests_budget_reservation(studio_home):
    studio = Studio(studio_home)
    index = studio.storage.index
    assert index.reserve("req-dead", "2026-11-21", 0.5, limit=1.0) == (True, 0.0)
    index.add_pending("req-dead", ["images/x/2026/11/21/gone.png"])
    from sqlalchemy import text  # index.write() is a SQLAlchemy connection: statements are text()

    with index.write() as conn:  # as if written by a process that has since died
        conn.execute(text("UPDATE pending_writes SET pid = 999999999"))
    Studio(studio_home)
    assert index.pending() == []
    assert index.reserve("req-next", "2026-11-21", 1.0, limit=1.0)[0]  # the whole budget is free again


class _KilledBeforeCommit(BaseException):
    """Stands for a kill -9 between writing a request's files and committing their rows: being no
    Exception, no handler of the studio's runs on its way out."""


def test_a_dead_writers_intent_is_finished_when_its_pid_now_runs_another_process(echo_studio, studio_home,
                                                                                  monkeypatch):
    """pid_max is 32,768 on many Linux machines: by the next start a killed writer's pid may belong to
    another live process. The request's record holds the writer's start time as well as its pid, so
    its files are still indexed (with the pid alone they were left without rows, the intent kept)."""
    from sqlalchemy import text

    from studio.types import GenerationRequest

    def killed(*_args, **_kwargs):
        raise _KilledBeforeCommit()

    monkeypatch.setattr(echo_studio.storage.index, "finish_generation", killed)
    with pytest.raises(_KilledBeforeCommit):
        echo_studio.generate(GenerationRequest(prompt="a reused pid", provider="echo", n=2, width=256, height=256))
    index = echo_studio.storage.index
    assert len(index.pending()) == 4 and len(index.open_requests()) == 1  # two images, two thumbnails
    # The intent's pid is this test's, alive; the process that started the request began at another time.
    with index.write() as conn:
        conn.execute(text("UPDATE reservations SET process_started = '1'"))

    again = Studio(studio_home)
    try:
        assert_index_and_files_agree(again)
        assert again.storage.index.pending() == [] and again.storage.index.open_requests() == []
        assert again.history(owner=None, limit=10).total == 2
        assert [row["status"] for row in again.storage.index.generations()] == ["recovered"]
    finally:
        again.close()


# -- a request killed in flight is booked: it may have been billed (issue 10, FX3) ---------------

def _cli(home: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    environment = {**os.environ, "STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "studio", *args], env=environment, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("budget", [None, "1"])
def test_a_request_killed_in_flight_is_booked_as_interrupted_and_counts(cloud_fake, studio_home, monkeypatch,
                                                                       budget):
    """A CLI generation is killed with SIGKILL while the provider has its request. While it runs,
    another process's start leaves it alone; once it is dead, the next start (and repair) books it
    at its reserved bound as "interrupted, possibly billed": in stats, in today's spend, in repair's
    report, with or without a daily budget (before: with a budget its reservation silently expired
    an hour later; without one nothing at all was recorded)."""
    import json

    from studio import monitoring

    if budget is None:
        monkeypatch.delenv("STUDIO_DAILY_BUDGET", raising=False)
    else:
        monkeypatch.setenv("STUDIO_DAILY_BUDGET", budget)
    fake = cloud_fake("openai")
    hold = fake.server.serve(HoldImageRequests(fake))
    child = _cli(studio_home, "generate", "a lighthouse at dusk", "--provider", "openai",
                 "--model", "gpt-image-1-mini")
    try:
        assert hold.received.wait(60), child.stderr.read() if child.poll() is not None else "no request"
        live = Studio(studio_home)  # the child is alive and in flight: its record is left alone
        in_flight = live.storage.index.open_requests()
        assert [row["pid"] for row in in_flight] == [child.pid]
        assert live.storage.index.generations() == []
        bound = in_flight[0]["amount"]
        assert bound > 0
        live.close()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        hold.release.set()
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL

    repair = _cli(studio_home, "repair", "--fix", "--json")  # its start books it; repair says so
    out, err = repair.communicate(timeout=60)
    report = json.loads(out)
    assert report["interrupted"] == [in_flight[0]["id"]] and not report["clean"], err

    studio = Studio(studio_home)
    try:
        assert studio.storage.index.open_requests() == []
        rows = studio.storage.index.generations()
        assert [(r["id"], r["status"], r["cost"]) for r in rows] == [(in_flight[0]["id"], "interrupted", bound)]
        assert "possibly billed" in rows[0]["error"]
        assert studio.spent_today() == pytest.approx(bound)
        [stats] = monitoring.model_stats(studio.storage.index)
        assert (stats.model, stats.requests, stats.interrupted, stats.cost) == ("gpt-image-1-mini", 1, 1,
                                                                              pytest.approx(bound))
        assert Studio(studio_home).storage.index.generations() == rows  # booked once, not at every start
    finally:
        studio.close()

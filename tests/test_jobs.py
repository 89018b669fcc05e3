"""Batch jobs on the echo provider: preview, statuses and progress, real concurrency, cancel, retry,
pause, rate limits, budget, crash recovery (in process and with a killed worker process), export,
CLI and library."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

import providers
import studio as studio_lib
from studio.cli import main
from studio.errors import BudgetExceeded, Busy, ContentBlocked, InvalidRequest, NotFound, ProviderTimeout, RateLimited
from studio.jobs import ItemStatus, JobManager, JobStatus
from studio.types import GenerationRequest
from tests.fakes import batch_echo, echo_provider
from tests.fakes.echo_provider import EchoProvider
from tests.pg_server import query_studio_db

# Every test here runs once per database back end (tests/pg_server.py): embedded SQLite, PostgreSQL.
pytestmark = pytest.mark.usefixtures("database_url")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def jobs(echo_studio):
    manager = JobManager(echo_studio)
    yield manager
    manager.close(wait=5)


def script(count: int, prefix: str = "scene") -> str:
    return "\n".join(f"00:00:{i:02d} {prefix} number {i}" for i in range(count))


def wait_until(condition, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def statuses(manager, job_id) -> list[str]:
    return [item.status.value for item in manager.get(job_id).items]


def db(home: Path, sql: str, *args):
    """Rows of ``sql`` on the studio's database, whichever back end this test runs on."""
    return query_studio_db(home, sql, *args)


def image_files(home: Path) -> list[Path]:
    return [p for p in (home / "images").rglob("*") if p.is_file()] if (home / "images").exists() else []


# -- preview and creation ------------------------------------------------------------------------


def test_preview_expands_styles_assigns_seeds_and_estimates_cost(jobs, studio_home):
    preview = jobs.preview("00:01 a lighthouse --seed 42\n00:02 waves --style none\n00:03 a gull",
                           provider="echo", style="cinematic", seed=100, n=2)
    rows = preview.rows()
    assert [r["seed"] for r in rows] == [42, 101, 102]  # per-scene: base + index; an override wins
    assert rows[0]["prompt"].startswith("cinematic film still of a lighthouse") and rows[1]["prompt"] == "waves"
    assert [r["estimated_cost"] for r in rows] == [0.02, 0.02, 0.02] and preview.estimated_total == 0.06
    assert preview.within_budget and preview.daily_budget is None and preview.provider_ready
    assert (preview.job.provider, preview.job.model, preview.job.concurrency) == ("echo", "echo-1", 4)
    fixed = jobs.preview("a\nb\nc", provider="echo", seed_policy="fixed", seed=7, concurrency=2)
    assert [r["seed"] for r in fixed.rows()] == [7, 7, 7] and fixed.job.concurrency == 2
    assert db(studio_home, "SELECT COUNT(*) FROM jobs") == [(0,)]  # a preview stores nothing
    jobs.create(fixed)
    with pytest.raises(InvalidRequest, match="already started"):
        jobs.create(fixed)  # the same preview twice is one job, not two
    with pytest.raises(InvalidRequest, match="seed policy"):
        jobs.preview("a", provider="echo", seed_policy="sometimes")
    with pytest.raises(InvalidRequest, match="unknown provider"):
        jobs.preview("a", provider="nope")


def test_invalid_scene_or_budget_stops_everything_before_it_starts(jobs, echo_studio, studio_home):
    with pytest.raises(InvalidRequest, match=r"line 2: steps 999 is outside .*nothing was started"):
        jobs.create("fine\nbroken --steps 999\nfine too", provider="echo")
    echo_studio.settings.daily_budget = 0.025
    preview = jobs.preview(script(3), provider="echo")
    assert not preview.within_budget and preview.budget_remaining == 0.025
    with pytest.raises(BudgetExceeded, match=r"estimated at \$0.0300 but only \$0.0250"):
        jobs.create(preview)
    assert db(studio_home, "SELECT COUNT(*) FROM jobs") == [(0,)]
    assert EchoProvider.calls == 0


# -- running -------------------------------------------------------------------------------------


class Stepping(EchoProvider):
    """Reports generation progress in two steps, as a provider with a progress API does; after the
    first step each call waits for a permit from the test, so the test sees every state it checks."""

    permits = threading.Semaphore(0)

    def generate(self, request, ctx):
        ctx.report("generating", 0.0, step=0, total_steps=2)
        ctx.report("generating", 0.5, step=1, total_steps=2)
        if not Stepping.permits.acquire(timeout=60):
            raise AssertionError("the test never let this call finish")
        return super().generate(request, ctx)


def test_items_move_through_statuses_and_each_result_is_visible_at_once(jobs, echo_studio, studio_home):
    providers.register("echo", Stepping)
    Stepping.permits = threading.Semaphore(0)
    job = jobs.submit(script(4), provider="echo", concurrency=1)

    def midway():  # the first scene, between the provider's steps
        current = jobs.get(job.id)
        # The job's progress and its items are separate reads (JobStore.get): it may lag one poll behind.
        return current if [(i.status, 5 <= i.progress < 90) for i in current.items] == [
            (ItemStatus.GENERATING, True)] + [(ItemStatus.PENDING, False)] * 3 and current.progress > 0 else None

    current = wait_until(midway, timeout=60)  # the provider's steps show as the item's progress
    assert current.status is JobStatus.RUNNING and 0 < current.progress < 100 and current.done == 0
    Stepping.permits.release()

    def one_done_one_running_two_waiting():
        current = jobs.get(job.id)
        return current if [i.status.value for i in current.items] == [
            "COMPLETED", "GENERATING", "PENDING", "PENDING"] else None

    current = wait_until(one_done_one_running_two_waiting, timeout=60)
    assert current.status is JobStatus.RUNNING and 0 < current.progress < 100
    partial = jobs.result(job.id)  # a finished scene's image is there before the batch ends
    assert partial["items"][0]["status"] == "COMPLETED" and partial["items"][0]["images"][0]["path"]
    for _ in range(3):
        Stepping.permits.release()
    final = jobs.wait(job.id, timeout=60)
    assert final.status is JobStatus.COMPLETED and final.progress == 100 and final.finished_at
    for item in final.items:
        assert item.status is ItemStatus.COMPLETED and item.progress == 100 and item.attempts == 1
        assert item.started_at and item.finished_at and item.cost == pytest.approx(0.01)
        records = echo_studio.storage.index.images_for_request(item.request_id)
        assert [r.id for r in records] == item.image_ids  # the images carry the item's request id
        assert records[0].user_prompt == item.text and f"job-{job.id}" in records[0].tags
    assert final.cost == pytest.approx(0.04) and final.counts == {"COMPLETED": 4}
    assert db(studio_home, "SELECT COUNT(*), SUM(cost) FROM generations WHERE status = 'completed'") == \
        [(4, 0.04)]


class Gated(EchoProvider):
    """Every call waits until the test opens ``gate`` (or its item is cancelled): the test decides
    when items finish, so what it checks never depends on how fast or loaded the machine is."""

    gate = threading.Event()
    in_flight = 0
    started = 0  # calls made, including those still waiting
    lock = threading.Lock()

    @classmethod
    def install(cls) -> type["Gated"]:
        cls.gate, cls.in_flight, cls.started = threading.Event(), 0, 0
        providers.register("echo", cls)
        return cls

    def generate(self, request, ctx):
        with Gated.lock:
            Gated.in_flight += 1
            Gated.started += 1
        try:
            while not Gated.gate.wait(0.02):
                ctx.check_cancelled()
            return super().generate(request, ctx)
        finally:
            with Gated.lock:
                Gated.in_flight -= 1


class Tracking(EchoProvider):
    """Counts how many calls run at the same moment. Each call waits (up to 10 s) until ``meet``
    calls have been in flight together, so reaching the limit does not depend on timing."""

    active = 0
    peak = 0
    meet = 0
    lock = threading.Condition()

    def generate(self, request, ctx):
        with Tracking.lock:
            Tracking.active += 1
            Tracking.peak = max(Tracking.peak, Tracking.active)
            Tracking.lock.notify_all()
            Tracking.lock.wait_for(lambda: Tracking.peak >= Tracking.meet, timeout=10)
        try:
            return super().generate(request, ctx)
        finally:
            with Tracking.lock:
                Tracking.active -= 1


class SingleDevice(Tracking):
    max_concurrency = 1  # like the local model: one generation at a time on the device


@pytest.mark.parametrize("provider_class, asked, expected_peak", [(Tracking, 4, 4), (SingleDevice, 4, 1)])
def test_items_run_concurrently_up_to_the_provider_limit(echo_studio, provider_class, asked, expected_peak):
    providers.register("echo", provider_class)
    Tracking.active = Tracking.peak = 0
    Tracking.meet = expected_peak  # the calls of one round wait for each other
    EchoProvider.latency = 0.1  # room for a call beyond the limit to overlap, if the limit leaked
    manager = JobManager(echo_studio)
    try:
        job = manager.submit(script(8), provider="echo", concurrency=asked)
        assert job.concurrency == expected_peak
        final = manager.wait(job.id, timeout=60)
    finally:
        manager.close()
    assert final.status is JobStatus.COMPLETED and EchoProvider.calls == 8
    assert Tracking.peak == expected_peak


def test_cancel_interrupts_items_in_flight_and_cancels_the_rest(jobs, studio_home):
    Gated.install()  # the calls never finish on their own: only the cancel can end them
    job = jobs.submit(script(6), provider="echo", concurrency=2)
    wait_until(lambda: Gated.in_flight == 2)
    jobs.cancel(job.id)
    final = jobs.wait(job.id, timeout=60)
    assert not jobs.runner.running(job.id) and Gated.in_flight == 0 and Gated.started == 2
    assert final.status is JobStatus.CANCELLED and final.counts == {"CANCELLED": 6}
    assert final.cost == 0 and image_files(studio_home) == []
    assert db(studio_home, "SELECT COUNT(*) FROM images") == [(0,)]


def test_failed_item_then_retry_and_one_item_cancelled(jobs, studio_home):
    EchoProvider.failures = [ContentBlocked("the safety system refused this prompt")]
    job = jobs.submit(script(3), provider="echo", concurrency=1)
    final = jobs.wait(job.id, timeout=10)
    assert final.status is JobStatus.FAILED and final.counts == {"COMPLETED": 2, "FAILED": 1}
    failed = final.items[0]
    assert (failed.status, failed.error_kind) == (ItemStatus.FAILED, "content_blocked")
    assert "safety system" in failed.error and failed.image_ids == [] and failed.cost == 0
    with pytest.raises(InvalidRequest, match="no failed items to retry"):
        jobs.retry(job.id, indexes=[1])  # scene 2 completed: nothing to retry there
    retried = jobs.wait(jobs.retry(job.id).id, timeout=10)
    assert retried.status is JobStatus.COMPLETED and retried.items[0].attempts == 2
    assert retried.items[0].image_ids and retried.items[0].error is None
    assert EchoProvider.calls == 4  # the two completed scenes were not run again

    second = jobs.create(script(3, "other"), provider="echo", concurrency=1)
    jobs.cancel(second.id, index=2)  # one scene, while it is still waiting
    final = jobs.wait(jobs.start(second.id).id, timeout=30)
    assert statuses(jobs, second.id) == ["COMPLETED", "COMPLETED", "CANCELLED"]
    assert final.status is JobStatus.COMPLETED  # a scene cancelled on purpose is not a failure


def test_transient_errors_retry_and_rate_limits_slow_down_instead_of_failing(jobs):
    EchoProvider.failures = [ProviderTimeout("no answer in time"), RateLimited("slow down", retry_after=0.4),
                             RateLimited("slow down", retry_after=0.4)]
    started = time.monotonic()
    job = jobs.submit(script(4), provider="echo", concurrency=4)
    final = jobs.wait(job.id, timeout=20)
    assert final.status is JobStatus.COMPLETED and final.counts == {"COMPLETED": 4}
    assert time.monotonic() - started >= 0.4  # every worker waited out the shared backoff
    assert sum(item.attempts for item in final.items) == 4 + 3
    gate = jobs.runner._gates["echo"]
    assert gate.limit < gate.max_limit  # fewer requests in flight after rate limits, growing back later


def test_pause_stops_new_items_and_resume_finishes(jobs):
    Gated.install()
    job = jobs.submit(script(10), provider="echo", concurrency=2)
    wait_until(lambda: Gated.in_flight == 2)
    jobs.pause(job.id)
    Gated.gate.set()  # the two items in flight finish; no new one starts
    paused = jobs.wait(job.id, timeout=60)
    assert paused.status is JobStatus.PAUSED and paused.counts == {"COMPLETED": 2, "PENDING": 8}
    assert not jobs.runner.running(job.id) and Gated.started == 2  # no worker is left to start one
    with pytest.raises(InvalidRequest, match="only a running job can be paused"):
        jobs.pause(job.id)
    final = jobs.wait(jobs.resume(job.id).id, timeout=60)
    assert final.status is JobStatus.COMPLETED and Gated.started == 10


def test_running_out_of_budget_midway_pauses_the_job(jobs, echo_studio):
    echo_studio.settings.daily_budget = 0.05
    job = jobs.create(script(3), provider="echo")  # $0.03 fits...
    echo_studio.generate(GenerationRequest(prompt="something else", provider="echo", n=3))  # ...until $0.03 is spent
    final = jobs.wait(jobs.start(job.id).id, timeout=10)
    assert final.status is JobStatus.PAUSED and "budget" in final.error
    assert final.counts == {"COMPLETED": 2, "PENDING": 1}  # the third waits; it did not fail
    echo_studio.settings.daily_budget = 1.0
    assert jobs.wait(jobs.resume(job.id).id, timeout=10).status is JobStatus.COMPLETED


def test_jobs_belong_to_their_owner(jobs):
    job = jobs.create("a", provider="echo", user="alice")
    with pytest.raises(NotFound):
        jobs.get(job.id, "bob")
    assert [j.id for j in jobs.list("alice")] == [job.id] and jobs.list("bob") == []


# -- durability ----------------------------------------------------------------------------------


def test_resume_after_a_crash_completes_saved_items_and_reruns_the_rest(echo_studio, studio_home):
    """A crash leaves two items in flight: one whose generation was saved (images and audit row)
    but whose item row was not updated, one that had saved nothing. Resuming completes the first
    without calling the provider and runs only the second (and the untouched rest) again."""
    first = JobManager(echo_studio)
    job = first.create(script(4), provider="echo")
    store = first.store
    store.update_job(job.id, status=JobStatus.RUNNING, runner="elsewhere:1:dead")  # a holder that never beat
    saved, _unsaved = store.claim(job.id), store.claim(job.id)  # the second claimed item saved nothing
    echo_studio.generate(GenerationRequest(prompt=saved.text, provider="echo", seed=saved.seed, tags=[f"job-{job.id}"]),
                         request_id=saved.request_id)
    saved_files = set(image_files(studio_home))
    assert first.get(job.id).interrupted and first.list()[0].interrupted
    calls_before = EchoProvider.calls

    manager = JobManager(echo_studio)
    try:
        assert manager.recover() == [job.id]
        final = manager.wait(job.id, timeout=10)
    finally:
        manager.close()
        first.close()
    assert final.status is JobStatus.COMPLETED
    assert EchoProvider.calls - calls_before == 3  # the unsaved item and the two never started
    items = final.items
    assert items[0].error is None and "recovered" in items[0].warnings[0] and items[0].attempts == 1
    assert (items[1].attempts, items[2].attempts, items[3].attempts) == (2, 1, 1)
    assert len(image_files(studio_home)) == 4 and saved_files <= set(image_files(studio_home))
    assert db(studio_home, "SELECT COUNT(*) FROM images") == [(4,)]
    assert db(studio_home, "SELECT COUNT(*), SUM(cost) FROM generations WHERE status = 'completed'") \
        == [(4, 0.04)]
    assert db(studio_home, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert echo_studio.repair().clean


def run_cli(home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PROVIDER_PLUGINS": batch_echo.PLUGIN_SPEC,
                "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "studio", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def call_count(log: Path) -> int:
    """How many provider calls the child processes have started (each writes one line first)."""
    return len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0


def calls_per_prompt(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        counts[line] = counts.get(line, 0) + 1
    return counts


def check_nothing_lost_or_duplicated(home: Path, texts: list[str], result: dict) -> None:
    assert result["status"] == "COMPLETED"
    assert [item["status"] for item in result["items"]] == ["COMPLETED"] * len(texts)
    assert [len(item["images"]) for item in result["items"]] == [1] * len(texts)
    rows = db(home, "SELECT user_prompt FROM images ORDER BY user_prompt")
    assert sorted(r[0] for r in rows) == sorted(texts)  # one image per scene, none twice
    assert len(image_files(home)) == len(texts)  # no orphan file beside them
    paid = "SELECT COUNT(*), SUM(cost) FROM generations WHERE status IN ('completed', 'recovered')"
    assert db(home, paid) == [(len(texts), round(0.01 * len(texts), 6))]  # paid once per scene, all recorded
    # The job shows what was booked: attempts killed while the provider had them count as possibly billed.
    interrupted = "SELECT COUNT(*), COALESCE(SUM(cost), 0) FROM generations WHERE status = 'interrupted'"
    (count, possibly_billed), = db(home, interrupted)
    assert db(home, "SELECT COUNT(*) FROM generations") == [(len(texts) + count,)]
    assert result["cost"] == pytest.approx(0.01 * len(texts) + possibly_billed)
    assert subprocess.run([sys.executable, "-m", "studio", "repair", "--json"], cwd=ROOT, capture_output=True,
                          env={**os.environ, "STUDIO_HOME": str(home)}).returncode == 0  # index and files agree


def test_killed_worker_process_then_resume_loses_and_repeats_nothing(studio_home, tmp_path):
    texts = [f"scene number {i}" for i in range(12)]
    path = tmp_path / "script.txt"
    path.write_text("\n".join(texts))
    log = tmp_path / "calls.log"
    env = {"ECHO_LATENCY": "0.05", "ECHO_CALL_LOG": str(log)}
    # Calls 6 and on never return: the kill surely lands mid-job, with 5 scenes done and 2 in flight.
    proc = run_cli(studio_home, "batch", str(path), "--provider", "echo", "--concurrency", "2", "--quiet",
                   env={**env, "ECHO_HOLD_FROM": "6"})
    try:
        wait_until(lambda: proc.poll() is not None or call_count(log) >= 7, timeout=120)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = {row[0] for row in db(studio_home, "SELECT text FROM job_items WHERE status = 'COMPLETED'")}
    saved_before = {row[0] for row in db(studio_home, "SELECT user_prompt FROM images")}  # incl. items not marked yet
    (job_id, status), = db(studio_home, "SELECT id, status FROM jobs")
    assert status == "RUNNING" and len(done_before) == 5
    calls_before = calls_per_prompt(log)

    listed = run_cli(studio_home, "jobs", "--json", env=env).communicate(timeout=60)[0]
    assert json.loads(listed)["jobs"][0]["interrupted"] is True

    resume = run_cli(studio_home, "batch", "--resume", job_id, "--json", env=env)
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    result = json.loads(out)
    check_nothing_lost_or_duplicated(studio_home, texts, result)
    calls = calls_per_prompt(log)
    assert set(calls) == set(texts)
    assert done_before <= saved_before
    assert all(calls[text] == 1 for text in saved_before)  # saved before the kill: never generated again
    # Only a scene whose provider call was cut off by the kill runs twice (one whose files were
    # written but not yet indexed is adopted on resume, and runs once).
    in_flight_at_kill = set(calls_before) - done_before
    assert len(in_flight_at_kill) == 2 and all(count == 1 for count in calls_before.values())
    assert {text for text, count in calls.items() if count > 1} <= in_flight_at_kill - saved_before
    assert max(calls.values()) <= 2


@pytest.mark.slow
def test_kill_minus_9_at_random_points_many_times_then_the_job_finishes_intact(studio_home, tmp_path):
    import random

    rng = random.Random(2026)
    texts = [f"frame {i}" for i in range(16)]
    path = tmp_path / "script.txt"
    path.write_text("\n".join(texts))
    log = tmp_path / "calls.log"
    env = {"ECHO_LATENCY": "0.3", "ECHO_CALL_LOG": str(log)}
    kills = 0
    job_id = None
    for _round in range(8):
        args = ("batch", "--resume", job_id, "--quiet") if job_id else (
            "batch", str(path), "--provider", "echo", "--concurrency", "2", "--quiet")
        before = call_count(log)
        proc = run_cli(studio_home, *args, env=env)
        try:
            # The kill point is counted in provider calls this run has started (each one first writes
            # its line), never in seconds since the start: on a loaded machine the child may need many
            # seconds to import. Then a random moment more: generating, saving or between scenes.
            # A run reaches at most `wanted` + 2 more scenes before the kill, so the first three
            # runs (16, 11 and 6 or more scenes left) are always killed mid-job.
            wanted = rng.randint(1, 3)
            wait_until(lambda: proc.poll() is not None or call_count(log) >= before + wanted, timeout=120)
            time.sleep(rng.uniform(0.0, 0.2))  # where the kill lands, not a wait for anything
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        if job_id is None:
            (job_id,), = db(studio_home, "SELECT id FROM jobs")  # made before its first provider call
        if db(studio_home, "SELECT status FROM jobs") == [("COMPLETED",)]:
            break
    assert kills >= 3
    final = run_cli(studio_home, "batch", "--resume", job_id, "--json", env=env)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    check_nothing_lost_or_duplicated(studio_home, texts, json.loads(out))
    calls = calls_per_prompt(log)
    assert set(calls) == set(texts)
    # Only scenes whose provider call a kill cut off run again: at most two per kill (concurrency 2).
    assert sum(count - 1 for count in calls.values()) <= 2 * kills


def test_process_dying_between_image_files_and_rows_adopts_them_on_resume(studio_home, tmp_path):
    texts = [f"shot {i}" for i in range(5)]
    path = tmp_path / "script.txt"
    path.write_text("\n".join(texts))
    log, crash_log = tmp_path / "calls.log", tmp_path / "crash.log"
    env = {"ECHO_LATENCY": "0", "ECHO_CALL_LOG": str(log), "ECHO_CRASH_LOG": str(crash_log)}
    crashed = run_cli(studio_home, "batch", str(path), "--provider", "echo", "--concurrency", "1", "--json",
                      env={**env, "ECHO_CRASH_ON_SAVE": "3"})
    crashed.communicate(timeout=60)
    assert crashed.returncode == 137
    lost_scene = crash_log.read_text(encoding="utf-8")
    assert lost_scene == "shot 2"
    assert len(image_files(studio_home)) == 3 and db(studio_home, "SELECT COUNT(*) FROM images") == [(2,)]
    (job_id,), = db(studio_home, "SELECT id FROM jobs")

    resume = run_cli(studio_home, "batch", "--resume", job_id, "--json", env=env)
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    result = json.loads(out)
    check_nothing_lost_or_duplicated(studio_home, texts, result)
    assert calls_per_prompt(log) == {text: 1 for text in texts}  # the orphaned scene was not paid twice
    assert result["items"][2]["error"] is None and "recovered" in result["items"][2]["warnings"][0]


def test_pause_and_cancel_reach_a_job_running_in_another_process(echo_studio, studio_home, tmp_path):
    """A CLI process runs the job; this process pauses, then cancels it through the store only.
    Paused: the two scenes in flight finish, no other starts, and the CLI exits saying so. Resumed
    there and cancelled from here: the scenes in flight are interrupted and the CLI exits."""
    path = tmp_path / "script.txt"
    path.write_text("\n".join(f"slow scene {i}" for i in range(6)))
    log, release = tmp_path / "calls.log", tmp_path / "release"
    env = {"ECHO_CALL_LOG": str(log), "ECHO_HOLD_FROM": "1", "ECHO_RELEASE_FILE": str(release)}
    manager = JobManager(echo_studio)
    proc = run_cli(studio_home, "batch", str(path), "--provider", "echo", "--concurrency", "2", "--json", env=env)
    try:
        wait_until(lambda: proc.poll() is not None or call_count(log) >= 2, timeout=120)
        (job_id,), = db(studio_home, "SELECT id FROM jobs")
        with pytest.raises(Busy, match="running in another process"):
            manager.resume(job_id)
        manager.pause(job_id)  # only the store changes here; the other process notices and stops
        release.write_text("go")  # the two scenes in flight may finish now
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "the job is paused" in err, err
        paused = json.loads(out)
        assert paused["status"] == "PAUSED" and paused["counts"] == {"COMPLETED": 2, "PENDING": 4}
        assert call_count(log) == 2  # no scene started after the pause

        release.unlink()
        proc = run_cli(studio_home, "batch", "--resume", job_id, "--json", env=env)
        wait_until(lambda: proc.poll() is not None or call_count(log) >= 4, timeout=120)
        cancelled = manager.cancel(job_id)
        assert cancelled.status is JobStatus.CANCELLED
        out, err = proc.communicate(timeout=120)  # ends only if its two held calls are interrupted
        assert proc.returncode == 1 and "the job is cancelled" in err, err
        final = manager.get(job_id)
        assert final.counts == {"COMPLETED": 2, "CANCELLED": 4} and call_count(log) == 4
        assert final.runner is None  # let go of: any process may act on it at once
    finally:
        manager.close()
        if proc.poll() is None:
            proc.kill()


def test_cancelling_a_job_whose_process_died_settles_its_scenes_in_flight(echo_studio, studio_home, tmp_path):
    """The CLI running the job is killed with two scenes in flight; a cancel from another process
    settles them (no scene stays GENERATING for ever) and keeps what was done."""
    path = tmp_path / "script.txt"
    path.write_text("\n".join(f"doomed scene {i}" for i in range(6)))
    log = tmp_path / "calls.log"
    proc = run_cli(studio_home, "batch", str(path), "--provider", "echo", "--concurrency", "2", "--quiet",
                   env={"ECHO_CALL_LOG": str(log), "ECHO_HOLD_FROM": "3"})
    try:
        wait_until(lambda: proc.poll() is not None or call_count(log) >= 4, timeout=120)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (job_id,), = db(studio_home, "SELECT id FROM jobs")
    manager = JobManager(echo_studio)
    try:
        cancelled = manager.cancel(job_id)
    finally:
        manager.close()
    assert cancelled.status is JobStatus.CANCELLED and cancelled.counts == {"COMPLETED": 2, "CANCELLED": 4}
    in_flight = [item for item in cancelled.items if item.attempts]
    assert [item.status for item in in_flight] == [ItemStatus.COMPLETED] * 2 + [ItemStatus.CANCELLED] * 2
    assert "cancelled while its process was gone" in in_flight[2].error
    assert db(studio_home, "SELECT COUNT(*) FROM reservations") == [(0,)]  # their budget holds were let go


STALE = 2.0  # a shortened staleness window (seconds; the default is 15)


def test_a_live_job_is_refused_by_a_second_manager_and_a_second_process(echo_studio, studio_home, monkeypatch):
    """A server's manager runs a job whose items take longer than the staleness window. Its
    heartbeat keeps advancing, so neither a second manager in the same process (another Streamlit
    session with its own studio) nor a second CLI process takes it over: each scene runs once."""
    from studio.service import Studio

    monkeypatch.setenv("STUDIO_JOB_STALE_SECONDS", str(STALE))  # for the second process
    echo_studio.settings.job_stale_seconds = STALE
    Gated.install()
    server = JobManager(echo_studio)
    other_studio = Studio(studio_home)
    other_studio.settings.job_stale_seconds = STALE
    other = JobManager(other_studio)
    try:
        job = server.submit(script(4), provider="echo", concurrency=2)
        wait_until(lambda: Gated.in_flight == 2)
        first_beat = other.store.get(job.id, items=False).heartbeat_at
        # The items stay in flight past two staleness windows; the test only reads the store meanwhile.
        wait_until(lambda: time.time() > first_beat + 2 * STALE, timeout=60, step=0.1)
        held = other.get(job.id, items=False)
        assert held.heartbeat_at > first_beat and not held.interrupted  # the heartbeat advanced
        with pytest.raises(Busy, match="running in another process"):
            other.resume(job.id)
        with pytest.raises(Busy, match="running in another process"):
            other.retry(job.id)
        assert other.recover() == []
        resume = run_cli(studio_home, "batch", "--resume", job.id, "--json")
        _out, err = resume.communicate(timeout=120)
        assert resume.returncode == 1, err  # not bad input: the same command works once the server stops
        assert err.strip().splitlines() == [f"error: job {job.id} is running in another process "
                                            f"({server.runner.runner_id}); pause or cancel it there, or wait for it"]
        listed = run_cli(studio_home, "jobs", "--json").communicate(timeout=120)[0]
        assert json.loads(listed)["jobs"][0]["interrupted"] is False
        assert Gated.started == 2  # nobody else started a scene
        Gated.gate.set()
        final = server.wait(job.id, timeout=60)
    finally:
        Gated.gate.set()
        other.close()
        server.close()
        other_studio.close()
    assert final.status is JobStatus.COMPLETED and Gated.started == 4 and final.cost == pytest.approx(0.04)
    assert [item.attempts for item in final.items] == [1, 1, 1, 1]
    assert db(studio_home, "SELECT COUNT(*) FROM images") == [(4,)]
    assert db(studio_home, "SELECT COUNT(*), SUM(cost) FROM generations WHERE status = 'completed'") \
        == [(4, 0.04)]


def test_pause_and_cancel_from_another_process_stop_a_job_held_by_a_server(echo_studio, studio_home):
    """The job runs in this process, as in a Streamlit or Gradio server; ``python -m studio job ID
    --pause`` / ``--cancel`` in another process only write the store, and the runner here obeys:
    no new scene starts after the pause, and the scenes in flight are interrupted by the cancel."""
    Gated.install()
    server = JobManager(echo_studio)
    try:
        job = server.submit(script(6), provider="echo", concurrency=2)
        wait_until(lambda: Gated.in_flight == 2)
        pause = run_cli(studio_home, "job", job.id, "--pause", "--json")
        out, err = pause.communicate(timeout=120)
        assert pause.returncode == 0, err
        assert json.loads(out)["status"] == "PAUSED"
        Gated.gate.set()  # the two scenes in flight finish; the runner must not start a third
        paused = server.wait(job.id, timeout=60)
        assert paused.status is JobStatus.PAUSED and paused.counts == {"COMPLETED": 2, "PENDING": 4}
        assert not server.runner.running(job.id) and Gated.started == 2

        Gated.gate.clear()
        server.resume(job.id)
        wait_until(lambda: Gated.in_flight == 2)
        cancel = run_cli(studio_home, "job", job.id, "--cancel", "--json")
        out, err = cancel.communicate(timeout=120)
        assert cancel.returncode == 0, err
        final = server.wait(job.id, timeout=60)  # the gate stays shut: only the cancel ends those calls
        assert not server.runner.running(job.id) and Gated.in_flight == 0
    finally:
        Gated.gate.set()
        server.close()
    assert final.status is JobStatus.CANCELLED and final.counts == {"COMPLETED": 2, "CANCELLED": 4}
    assert Gated.started == 4 and final.cost == pytest.approx(0.02)
    assert db(studio_home, "SELECT COUNT(*) FROM images") == [(2,)] and len(image_files(studio_home)) == 2


class StaleReads:
    """The real store, except that ``get`` answers for one job with a copy read earlier: a manager
    that decided to take the job before another one took it (the two reads and writes interleave)."""

    def __init__(self, store, snapshot):
        self._store, self._snapshot = store, snapshot

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get(self, job_id, *, items=True):
        return self._snapshot if job_id == self._snapshot.id else self._store.get(job_id, items=items)


def test_taking_a_job_is_a_compare_and_set_refused_while_a_live_runner_holds_it(echo_studio, studio_home):
    """Two managers on one data directory (two Streamlit sessions, or a server and a CLI). The
    runner's own ``start`` refuses a job another live runner holds, and so does one that read the
    job as free just before the other took it: the store decides, in one statement."""
    from studio.jobs import SQLiteJobStore, ThreadRunner
    from studio.service import Studio

    Gated.install()
    server = JobManager(echo_studio)
    other_studio = Studio(studio_home)
    other = JobManager(other_studio)
    late = None
    try:
        held = server.submit(script(2, "held"), provider="echo", concurrency=1)
        wait_until(lambda: Gated.in_flight == 1)
        with pytest.raises(Busy, match=rf"job {held.id} is running in another process "
                                                 rf"\({server.runner.runner_id}\)"):
            other.runner.start(held.id)
        assert not other.runner.running(held.id)
        assert other.store.get(held.id, items=False).runner == server.runner.runner_id

        free = server.create(script(2, "free"), provider="echo", concurrency=1)
        read_while_free = other.store.get(free.id, items=False)
        assert read_while_free.runner is None
        server.runner.start(free.id)  # the server takes it after the other manager's read
        late = ThreadRunner(other_studio, StaleReads(SQLiteJobStore(other_studio.storage.index), read_while_free))
        with pytest.raises(Busy, match=rf"job {free.id} is running in another process"):
            late.start(free.id)
        assert not late.running(free.id)
        assert other.store.get(free.id, items=False).runner == server.runner.runner_id
        wait_until(lambda: Gated.in_flight == 2)
        assert Gated.started == 2  # one scene of each job, both by the server
        Gated.gate.set()
        finals = [server.wait(job.id, timeout=60) for job in (held, free)]
    finally:
        Gated.gate.set()
        if late is not None:
            late.shutdown(wait=5)
        other.close()
        server.close()
        other_studio.close()
    assert [final.status for final in finals] == [JobStatus.COMPLETED] * 2
    assert [item.attempts for final in finals for item in final.items] == [1, 1, 1, 1]
    assert Gated.started == 4 and db(studio_home, "SELECT COUNT(*) FROM images") == [(4,)]
    assert db(studio_home, "SELECT runner FROM jobs") == [(None,), (None,)]  # let go when done


def test_a_runner_lets_go_of_a_job_only_while_it_holds_it(jobs):
    """Settling a job and clearing its holder is conditional too: a runner presumed dead that wakes
    up after another took the job over must not clear the new holder's claim."""
    job = jobs.create(script(1), provider="echo")
    store = jobs.store
    now = time.time()
    assert store.take(job.id, "host:1:old", now=now, stale_after=STALE)
    assert not store.take(job.id, "host:2:new", now=now, stale_after=STALE)  # a live holder keeps it
    assert store.take(job.id, "host:2:new", now=now, stale_after=STALE, dead="host:1:old")  # found dead
    assert not store.release(job.id, "host:1:old", status=JobStatus.COMPLETED)
    stored = store.get(job.id, items=False)
    assert (stored.runner, stored.status) == ("host:2:new", JobStatus.PENDING)
    assert not store.take(job.id, "host:3:late", now=now, stale_after=STALE, dead="host:1:old")
    assert store.take(job.id, "host:3:late", now=now + STALE + 1, stale_after=STALE)  # its heartbeat aged
    assert store.release(job.id, "host:3:late") and store.get(job.id, items=False).runner is None


class FlakyHeartbeatStore:
    """The real store, except that its first ``heartbeat`` write fails (a database hiccup)."""

    def __init__(self, store):
        self._store, self.heartbeats, self.failed = store, 0, threading.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def heartbeat(self, job_ids, runner, at):
        self.heartbeats += 1
        if not self.failed.is_set():
            self.failed.set()
            raise sqlite3.OperationalError("database is locked")
        return self._store.heartbeat(job_ids, runner, at)


@pytest.mark.background_errors
def test_background_loops_log_their_errors_and_keep_going(echo_studio, caplog):
    """A failing heartbeat tick and a failing event callback are logged with their traceback (and
    would fail any other test); the monitor goes on beating and the job still completes."""
    from studio.jobs import SQLiteJobStore, ThreadRunner

    Gated.install()
    store = FlakyHeartbeatStore(SQLiteJobStore(echo_studio.storage.index))

    def broken_callback(event, job_id, item):
        raise RuntimeError(f"callback broke on {event}")

    runner = ThreadRunner(echo_studio, store, on_event=broken_callback, poll_interval=0.05)
    manager = JobManager(echo_studio, store=store, runner=runner)
    try:
        job = manager.submit(script(2), provider="echo", concurrency=1)
        first_beat = store.get(job.id, items=False).heartbeat_at
        wait_until(lambda: store.failed.is_set() and store.get(job.id, items=False).heartbeat_at > first_beat)
        Gated.gate.set()
        final = manager.wait(job.id, timeout=60)
    finally:
        Gated.gate.set()
        manager.close()
    assert final.status is JobStatus.COMPLETED
    logged = [(r.name, r.getMessage(), r.exc_info[0].__name__) for r in caplog.records if r.exc_info]
    assert ("studio.jobs", f"batch runner {runner.runner_id}: could not refresh the heartbeat",
            "OperationalError") in logged
    assert ("studio.jobs", f"batch job {job.id}: the job.completed notification failed", "RuntimeError") in logged


@pytest.mark.background_errors
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_error_logged_or_raised_in_a_background_thread_is_caught_by_the_fixture(fail_on_background_errors):
    collector = fail_on_background_errors
    logged = threading.Thread(target=lambda: logging.getLogger("studio.example").error("a loop failed"))
    raised = threading.Thread(target=lambda: 1 / 0, name="crashing")
    for thread in (logged, raised):
        thread.start()
        thread.join()
    logging.getLogger("studio.example").error("the test's own thread is not a background loop")
    assert collector.found == ["[%s] studio.example: a loop failed" % logged.name,
                               "[crashing] uncaught ZeroDivisionError: division by zero"]


# -- results -------------------------------------------------------------------------------------


def test_zip_names_scenes_by_order_and_timestamp_with_manifests_and_enriched_script(jobs):
    job = jobs.submit('00:00:05 A lighthouse at dusk\n[01:02.5] =cmd waves\nno time here --n 2', provider="echo",
                      seed=9)
    jobs.wait(job.id, timeout=10)
    archive = zipfile.ZipFile(io.BytesIO(jobs.export_zip(job.id)))
    names = archive.namelist()
    assert names[:4] == ["001_00-00-05_a-lighthouse-at-dusk.png", "002_00-01-02-500_cmd-waves.png",
                         "003_no-time-here_1.png", "003_no-time-here_2.png"]
    assert {"manifest.csv", "manifest.json", "script.json"} <= set(names)
    manifest = json.loads(archive.read("manifest.json"))["images"]
    assert [m["file"] for m in manifest] == names[:4]
    first = manifest[0]
    assert (first["timestamp"], first["text"], first["seed"], first["provider"], first["cost"]) == \
        ("00:00:05", "A lighthouse at dusk", 9, "echo", 0.01)
    assert first["prompt"] == "A lighthouse at dusk"
    csv_text = archive.read("manifest.csv").decode()
    assert {"timestamp", "text", "prompt", "file", "seed", "provider", "cost"} <= set(csv_text.splitlines()[0].split(","))
    assert "'=cmd waves" in csv_text  # a formula-looking scene is neutralised for spreadsheets
    script_json = json.loads(archive.read("script.json"))
    segments = script_json["segments"]
    assert [s["timestamp"] for s in segments] == ["00:00:05", "01:02.5", None]
    assert segments[0]["image"]["file"] == names[0] and len(segments[2]["images"]) == 2
    assert segments[0]["image"]["id"] and segments[0]["status"] == "COMPLETED"
    assert jobs.enriched_script(job.id)["segments"][1]["image"]["file"] == names[1]
    # What a visitor downloads never reveals server paths; the local CLI/library may ask for them.
    assert all("path" not in image for segment in segments for image in segment["images"])
    local = jobs.enriched_script(job.id, with_paths=True)["segments"][1]["image"]
    assert Path(local["path"]).is_file()


# -- CLI and library -----------------------------------------------------------------------------


@pytest.fixture
def cli_echo(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)
    echo_provider.install(studio_home / "catalog")
    yield
    studio_lib.job_manager(home=studio_home).close()


def test_cli_batch_json_jobs_job_export_and_errors(cli_echo, studio_home, tmp_path, capsys):
    path = tmp_path / "teaser.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nA lighthouse\n\n2\n00:00:03,000 --> 00:00:04,000\nWaves\n")
    assert main(["batch", str(path), "--provider", "echo", "--style", "cinematic", "--seed-policy", "fixed",
                 "--seed", "3", "--concurrency", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"job_id", "status", "items"} and out["status"] == "COMPLETED"
    assert [(i["index"], i["timestamp"], i["text"], i["status"]) for i in out["items"]] == [
        (0, "00:00:01,000", "A lighthouse", "COMPLETED"), (1, "00:00:03,000", "Waves", "COMPLETED")]
    image = out["items"][0]["images"][0]
    assert image["seed"] == 3 and Path(image["path"]).is_file() and out["items"][1]["images"][0]["seed"] == 3

    assert main(["jobs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["jobs"]
    assert [(j["id"], j["status"], j["counts"]) for j in listed] == [(out["job_id"], "COMPLETED", {"COMPLETED": 2})]
    assert main(["job", out["job_id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == out["items"]
    target = tmp_path / "out.zip"
    assert main(["job", out["job_id"], "--export", str(target), "--json"]) == 0
    capsys.readouterr()
    assert "001_00-00-01_a-lighthouse.png" in zipfile.ZipFile(target).namelist()

    assert main(["batch", str(path), "--provider", "echo", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["estimated_total"] == 0.02 and len(dry["scenes"]) == 2

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,text\n1,fine\n2,\n")
    for argv, message in ((["batch", str(bad), "--provider", "echo"], "error: line 3: the scene has no text"),
                          (["batch", "--resume", "nope"], "error: no job with id 'nope'"),
                          (["batch"], "error: name a script file"),
                          (["job", "nope"], "error: no job with id 'nope'")):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.err.strip().splitlines() == [captured.err.strip()] and message in captured.err
    assert main(["jobs", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["jobs"]) == 1  # the malformed script made no job


def test_library_batch_job_and_list_jobs(cli_echo, studio_home):
    result = studio_lib.batch([{"timestamp": "00:00:01", "text": "a fox"}, {"timestamp": "00:00:02", "text": "a owl"}],
                              provider="echo", home=studio_home)
    assert result["status"] == "COMPLETED" and [i["text"] for i in result["items"]] == ["a fox", "a owl"]
    assert studio_lib.job(result["job_id"], home=studio_home)["items"] == result["items"]
    assert [j["id"] for j in studio_lib.list_jobs(home=studio_home)] == [result["job_id"]]
    preview = studio_lib.preview_batch("one\ntwo\nthree", provider="echo", home=studio_home)
    assert preview.estimated_total == 0.03
    with pytest.raises(InvalidRequest, match="unknown batch option"):
        studio_lib.batch("x", provider="echo", colour="red", home=studio_home)


def test_generate_takes_a_request_id_that_its_images_carry(echo_studio):
    result = echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo", n=2), request_id="job1-0-1")
    assert result.request_id == "job1-0-1"
    assert [r.id for r in echo_studio.storage.index.images_for_request("job1-0-1")] == [r.id for r in result.images]
    assert echo_studio.storage.index.images_for_request("other") == []
    with pytest.raises(InvalidRequest, match="request_id"):
        echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo"), request_id="bad id; drop table")


def test_scene_tags_given_as_text_are_split_on_commas(jobs):
    from studio.jobs.runner import build_request

    job = jobs.create("a lighthouse", provider="echo", tags="coast, night")
    request = build_request(job, job.items[0] if job.items else jobs.get(job.id).items[0])
    assert request.tags == ["coast", "night", f"job-{job.id}"]


# -- what a job shows: the booked cost, warnings apart from errors (issue 10, FX3) -------------------

def _booked_by_request(home: Path, job_id: str) -> dict[str, float]:
    """The audit log's cost of each attempt of a job (``<job>-<index>-<attempt>``)."""
    rows = db(home, "SELECT id, cost FROM generations WHERE id LIKE ?", f"{job_id}-%")
    return {row[0]: row[1] for row in rows}


def test_job_and_item_cost_is_what_was_booked_even_for_answers_billed_without_an_image(cloud_fake, studio_home):
    """Replicate answers each scene with ``output: null`` after billing it: the audit log books the
    bound against the budget, and the job, its items and its webhook-facing answer show the same."""
    from studio.jobs import get_manager
    from studio.service import Studio

    fake = cloud_fake("replicate")
    fake.outcome = "null_output"
    studio = Studio(studio_home)
    manager = get_manager(studio)
    try:
        job = manager.submit("scene a\nscene b\n", provider="replicate", model="black-forest-labs/flux-schnell")
        manager.wait(job.id, timeout=120)
        answer = manager.result(job.id, public=True)
        spent = studio.spent_today()
    finally:
        manager.close()
        studio.close()
    booked = _booked_by_request(studio_home, job.id)
    assert [item["status"] for item in answer["items"]] == ["FAILED", "FAILED"]
    assert len(booked) == 2 and all(cost > 0 for cost in booked.values())
    for item in answer["items"]:
        assert item["cost"] == pytest.approx(sum(c for rid, c in booked.items()
                                                  if rid.startswith(f"{job.id}-{item['index']}-")))
    assert answer["cost"] == pytest.approx(sum(booked.values())) == pytest.approx(spent)


def test_completed_scenes_carry_warnings_not_errors(cloud_fake, studio_home, capsys):
    """gpt-image-1-mini takes no seed: every scene completes with that warning under ``warnings``
    (item and job), and ``error`` stays empty, in the result and the webhook's item summary."""
    from studio.jobs import get_manager
    from studio.service import Studio

    cloud_fake("openai")
    studio = Studio(studio_home)
    manager = get_manager(studio)
    try:
        job = manager.submit("scene a\nscene b\n", provider="openai", model="gpt-image-1-mini", seed=7)
        manager.wait(job.id, timeout=120)
        answer = manager.result(job.id, public=True)
        stored = manager.get(job.id)
        segments = manager.enriched_script(job.id)["segments"]
    finally:
        manager.close()
        studio.close()
    assert [item["status"] for item in answer["items"]] == ["COMPLETED", "COMPLETED"]
    for item in answer["items"]:
        assert item["error"] is None
        assert any("does not take a seed" in w for w in item["warnings"])
    assert any("does not take a seed" in w for w in answer["warnings"])
    assert len(answer["warnings"]) == len(set(answer["warnings"]))
    assert all(item.error is None and item.warnings for item in stored.items)
    assert stored.to_dict()["warnings"] == answer["warnings"]
    assert [s["warnings"] for s in segments] == [item["warnings"] for item in answer["items"]]
    assert main(["job", job.id]) == 0  # the CLI's text: the job's warning once, scenes with their files
    text = capsys.readouterr().out
    assert text.count("does not take a seed") == 1 and text.splitlines()[1].startswith("warning: ")


def test_a_job_started_with_a_session_key_waits_for_that_key_after_a_restart(cloud_fake, studio_home, monkeypatch):
    """A visitor's batch, started with an OpenAI key pasted for their browser session, is cut short by
    a restart. The restarted server (the operator's key only) must not finish it on the operator's
    key: it pauses it, "needs your key again", and refuses to resume it; the visitor resumes it with
    the key and it completes, every request made with the visitor's key."""
    import dataclasses

    from studio.errors import NotConfigured
    from studio.jobs.manager import NEEDS_KEY_NOTE
    from studio.service import Studio
    from tests.helpers import HoldImageRequests

    fake = cloud_fake("openai")
    visitor_key = fake.api_key
    monkeypatch.setenv("OPENAI_API_KEY", "sk-operator-0123456789abcdefOPERATOR")  # the server's own key
    hold = fake.server.serve(HoldImageRequests(fake))
    shared = Studio(studio_home)

    def keyed_studio() -> Studio:  # as ui.setup makes one for a session that pasted a key
        return Studio(settings=dataclasses.replace(shared.settings, session_keys={"OPENAI_API_KEY": visitor_key}))

    visitor = keyed_studio()
    first = JobManager(visitor)
    job = first.submit("scene a\nscene b\n", provider="openai", model="gpt-image-1-mini", concurrency=1,
                       user="visitor")
    assert hold.received.wait(60)
    first.runner.shutdown()  # the server stops: the scene in flight finishes, the other never starts
    hold.release.set()
    assert first.runner.wait(job.id, timeout=60)
    assert first.get(job.id, "visitor").status is JobStatus.RUNNING

    restarted = JobManager(shared)
    try:
        assert restarted.recover() == []
        paused = restarted.get(job.id, "visitor")
        assert paused.status is JobStatus.PAUSED and paused.error == NEEDS_KEY_NOTE
        assert [item.status for item in paused.items] == [ItemStatus.COMPLETED, ItemStatus.PENDING]
        with pytest.raises(NotConfigured, match="needs your key again") as refused:
            restarted.resume(job.id, "visitor")
        assert refused.value.needs_key
        assert restarted.get(job.id, "visitor").status is JobStatus.PAUSED
    finally:
        restarted.close()

    again = JobManager(keyed_studio())
    try:
        again.resume(job.id, "visitor")
        final = again.wait(job.id, "visitor", timeout=60)
    finally:
        again.close()
        first.close()
    assert final.status is JobStatus.COMPLETED
    images = [r for r in fake.server.requests if r.method == "POST" and "/images/" in r.path]
    assert len(images) == 2 and {r.headers["authorization"] for r in images} == {f"Bearer {visitor_key}"}

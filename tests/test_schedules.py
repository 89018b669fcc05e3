"""Scheduled generation (issue 13): due times, one firing per due time across processes, the
in-process scheduler, the CLI's refusals, the history's schedule tag."""

from __future__ import annotations

import io
import json
import multiprocessing
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta, timezone

import pytest

from studio.errors import InvalidRequest
from studio.schedules import Schedules, next_run, parse_stamp, schedule_of, stamp

UTC = timezone.utc
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)  # a Sunday
MONDAY_9 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- due times ----------------------------------------------------------------------------------


def test_next_run_is_the_first_cron_time_strictly_after():
    assert next_run("0 9 * * 1", T0) == MONDAY_9
    assert next_run("0 9 * * 1", MONDAY_9) == MONDAY_9 + timedelta(days=7)  # not the same time again
    assert next_run("0 9 * * 1", MONDAY_9 - timedelta(seconds=1)) == MONDAY_9
    assert next_run("*/15 * * * *", at("2026-11-29T08:07:30")) == at("2026-11-29T08:15:00")
    assert next_run("@daily", T0) == at("2026-11-30T00:00:00")
    assert next_run("0 0 1 * *", at("2026-12-15T00:00:00")) == at("2027-01-01T00:00:00")


def test_next_run_reads_wall_clock_time_in_the_schedules_zone():
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer (clocks went forward on 29 March 2026).
    assert next_run("0 9 * * *", at("2026-03-28T00:00:00"), "Europe/Paris") == at("2026-03-28T08:00:00")
    assert next_run("0 9 * * *", at("2026-03-29T12:00:00"), "Europe/Paris") == at("2026-03-30T07:00:00")


@pytest.mark.parametrize("cron, says", [("0 9 * *", "five"), ("0 9 * * * 30", "five"), ("61 9 * * *", "not valid"),
                                        ("0 25 * * *", "not valid"), ("", "needs a cron"), ("every day", "five"),
                                        ("a b c d e", "not valid")])
def test_bad_cron_expressions_say_why(cron, says):
    with pytest.raises(InvalidRequest, match=says):
        next_run(cron, T0)


def test_stamps_sort_as_times():
    early, late = stamp(at("2026-01-02T03:04:05")), stamp(at("2026-11-29T08:00:00"))
    assert early == "2026-01-02T03:04:05Z" and early < late and parse_stamp(late) == at("2026-11-29T08:00:00")


# -- firing -------------------------------------------------------------------------------------


@pytest.fixture
def db_studio(studio_home, database_url):
    """The echo studio on each database back end (embedded SQLite, PostgreSQL)."""
    from studio.service import Studio
    from tests.fakes import echo_provider

    echo_provider.install(studio_home / "catalog")
    studio = Studio(studio_home)
    yield studio
    from studio.jobs import get_manager

    get_manager(studio).close()
    studio.close()


def _add(schedules: Schedules, name: str, cron: str = "0 9 * * 1", **options):
    row, _ = schedules.add(name, cron, ["a lighthouse at dusk", "a fox in the snow"], now=T0,
                           options={"provider": "echo", "category": "blog", **options})
    return row


def test_a_due_schedule_fires_once_then_waits_for_its_next_time(db_studio):
    from studio.jobs import get_manager

    schedules = Schedules(db_studio)
    row = _add(schedules, "weekly-blog")
    assert row.next_run_at == stamp(MONDAY_9)
    assert schedules.run_due(MONDAY_9 - timedelta(minutes=1)) == []  # not yet
    fired = schedules.run_due(MONDAY_9 + timedelta(seconds=20))
    assert [(f.name, f.due, f.ok) for f in fired] == [("weekly-blog", stamp(MONDAY_9), True)]
    assert schedules.run_due(MONDAY_9 + timedelta(seconds=40)) == []  # that due time is spent
    job = get_manager(db_studio).wait(fired[0].job_id, "local", timeout=60)
    assert job.status.value == "COMPLETED" and job.total == 2
    after = schedules.get("weekly-blog")
    assert (after.runs, after.last_run_at, after.last_job_id, after.last_error) == (1, stamp(MONDAY_9), job.id, None)
    assert after.next_run_at == stamp(MONDAY_9 + timedelta(days=7))
    # Three weeks with nothing running: the missed times fire once, and the next run is after now.
    late = MONDAY_9 + timedelta(days=22)
    fired = schedules.run_due(late)
    assert len(fired) == 1 and fired[0].due == stamp(MONDAY_9 + timedelta(days=7))
    get_manager(db_studio).wait(fired[0].job_id, "local", timeout=60)
    assert schedules.get("weekly-blog").next_run_at == stamp(MONDAY_9 + timedelta(days=28))
    assert schedules.run_due(late) == []


def test_a_firing_that_cannot_start_a_job_is_logged_and_kept_on_the_schedule(db_studio, caplog):
    schedules = Schedules(db_studio)
    _add(schedules, "too-dear")
    db_studio.settings.daily_budget = 0.001  # the two scenes cost $0.02
    with caplog.at_level("ERROR", logger="studio.schedules"):
        fired = schedules.run_due(MONDAY_9)
    assert len(fired) == 1 and fired[0].job_id is None and "budget" in fired[0].error
    assert "too-dear" in caplog.text and "budget" in caplog.text
    assert "budget" in schedules.get("too-dear").last_error
    assert schedules.get("too-dear").next_run_at == stamp(MONDAY_9 + timedelta(days=7))  # not fired again and again


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(db_studio):
    schedules = Schedules(db_studio)
    _add(schedules, "paused")
    schedules.set_enabled("paused", False)
    assert schedules.run_due(MONDAY_9) == []
    resumed = schedules.set_enabled("paused", True, now=MONDAY_9 + timedelta(days=1))
    assert resumed.next_run_at == stamp(MONDAY_9 + timedelta(days=7))


def test_bad_templates_are_refused_and_nothing_is_stored(db_studio):
    schedules = Schedules(db_studio)
    for name, cron, script, options, says in [
            ("Capitals", "0 9 * * 1", ["x"], {"provider": "echo"}, "lowercase"),
            ("ok", "0 9 * * 1", ["x"], {"provider": "nonesuch"}, "unknown provider"),
            ("ok", "0 9 * * 1", ["x"], {"provider": "echo", "steps": 9999}, "steps"),
            ("ok", "0 9 * * 1", ["x"], {"provider": "echo", "user": "someone"}, "cannot set user"),
            ("ok", "0 9 * 1", ["x"], {"provider": "echo"}, "five")]:
        with pytest.raises(InvalidRequest, match=says):
            schedules.add(name, cron, script, options=options)
    with pytest.raises(InvalidRequest, match="unknown time zone"):
        schedules.add("ok", "0 9 * * 1", ["x"], options={"provider": "echo"}, tz="Mars/Olympus")
    assert schedules.list() == []
    _add(schedules, "taken")
    with pytest.raises(InvalidRequest, match="already exists"):
        _add(schedules, "taken")
    assert [s.name for s in schedules.list()] == ["taken"]


# -- two processes racing for the same due times ------------------------------------------------


def _racer(home: str, now: str, barrier, results) -> None:
    """A process that reads the due schedules, waits until the other one has read them too, then
    fires what it claims (so both try to claim every due time), and reports its firings."""
    from studio.jobs import get_manager
    from studio.service import Studio
    from tests.fakes import echo_provider

    echo_provider.install(None)  # the catalog entry is in the home already

    class Racing(Schedules):
        def due(self, moment):
            rows = super().due(moment)
            barrier.wait(timeout=60)
            return rows

    studio = Studio(home)
    try:
        firings = Racing(studio).run_due(datetime.fromisoformat(now))
        for firing in firings:
            if firing.job_id:
                get_manager(studio).wait(firing.job_id, "local", timeout=60)
        results.put([f.to_dict() for f in firings])
    finally:
        get_manager(studio).close()
        studio.close()


def test_two_processes_racing_fire_each_due_time_once(db_studio, studio_home):
    from tests.pg_server import query_studio_db

    schedules = Schedules(db_studio)
    names = [f"plan-{i}" for i in range(6)]
    for name in names:
        _add(schedules, name)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    now = (MONDAY_9 + timedelta(seconds=5)).isoformat()
    racers = [context.Process(target=_racer, args=(str(studio_home), now, barrier, results)) for _ in range(2)]
    for racer in racers:
        racer.start()
    reports = [results.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    fired = sorted(f["name"] for report in reports for f in report)
    assert fired == names  # each schedule once, between them
    assert all(f["job_id"] and f["error"] is None for report in reports for f in report)
    assert query_studio_db(studio_home, "SELECT COUNT(*) FROM jobs")[0][0] == len(names)
    assert {s.runs for s in schedules.list()} == {1}


# -- the in-process scheduler -------------------------------------------------------------------


def test_the_scheduler_thread_fires_a_job_whose_images_carry_the_schedule(echo_studio):
    from studio.jobs import get_manager
    from studio.scheduler import Scheduler

    schedules = Schedules(echo_studio)
    _add(schedules, "daily-social", cron="0 9 * * *", tags=["social"])
    scheduler = Scheduler(echo_studio, clock=lambda: MONDAY_9 + timedelta(seconds=1)).start()
    try:
        assert scheduler.wait_for(1, timeout=60)
    finally:
        scheduler.stop()
    firing = scheduler.fired[0]
    assert firing.name == "daily-social" and firing.ok
    job = get_manager(echo_studio).wait(firing.job_id, "local", timeout=60)
    assert job.status.value == "COMPLETED"
    page = echo_studio.history(tag="schedule:daily-social")
    assert page.total == 2
    for record in page.items:
        assert schedule_of(record.tags) == "daily-social"
        assert "social" in record.tags and record.category == "blog"
    assert echo_studio.history(tag="schedule:other").total == 0


def test_web_servers_start_a_thread_only_without_a_broker_unless_told(echo_studio):
    from studio.scheduler import start_scheduler, wants_thread

    settings = echo_studio.settings
    assert wants_thread(settings)
    settings.broker_url = "redis://localhost:1/0"
    assert not wants_thread(settings)  # Celery beat fires them
    settings.scheduler = "thread"
    assert wants_thread(settings)
    settings.scheduler = "off"
    assert start_scheduler(echo_studio) is None


# -- the command line ---------------------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str, str]:
    from studio.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("cron", ["0 9 * *", "0 9 * * 8", "99 * * * *", "every monday"])
def test_cli_refuses_a_bad_cron_with_exit_2_and_stores_nothing(echo_studio, cron):
    code, out, err = _cli("schedule", "add", "weekly", "--cron", cron, "--prompt", "a red bike", "-p", "echo")
    assert code == 2 and out == ""
    assert err.startswith("error: cron expression") and err.count("\n") == 1
    assert Schedules(echo_studio).list() == []


def test_cli_add_list_run_due_remove(echo_studio, tmp_path):
    script = tmp_path / "week.txt"
    script.write_text("a lighthouse at dusk\na fox in the snow\n")
    code, out, err = _cli("schedule", "add", "weekly-blog", "--cron", "0 9 * * 1", "--script", str(script),
                          "-p", "echo", "--category", "blog", "--timezone", "Europe/Paris", "--json")
    assert code == 0, err
    added = json.loads(out)
    assert added["cron"] == "0 9 * * 1" and added["timezone"] == "Europe/Paris" and added["category"] == "blog"
    assert "owner" not in added
    code, out, _ = _cli("schedule", "list", "--json")
    assert [s["name"] for s in json.loads(out)["schedules"]] == ["weekly-blog"]
    code, out, _ = _cli("schedule", "run-due", "--json")  # next Monday 09:00 is not now
    assert code == 0 and json.loads(out) == {"fired": []}
    code, out, _ = _cli("schedule", "disable", "weekly-blog", "--json")
    assert code == 0 and json.loads(out)["enabled"] is False
    code, out, _ = _cli("schedule", "enable", "weekly-blog")
    assert code == 0 and out.startswith("weekly-blog: enabled, next run ")
    assert _cli("schedule", "remove", "weekly-blog")[0] == 0
    code, _, err = _cli("schedule", "remove", "weekly-blog")
    assert code != 0 and err.startswith("error: no schedule named")


# -- where the history shows it -----------------------------------------------------------------


def test_a_cron_naming_no_real_day_is_refused_and_nothing_is_stored(echo_studio):
    schedules = Schedules(echo_studio)
    with pytest.raises(InvalidRequest, match="never runs"):
        schedules.add("feb-31", "0 9 31 2 *", ["a lighthouse"], options={"provider": "echo"})
    assert schedules.list() == []
    leap, _ = schedules.add("leap-day", "0 0 29 2 *", ["a lighthouse"], options={"provider": "echo"},
                            now=datetime(2026, 11, 29, tzinfo=UTC))
    assert leap.next_run_at == "2028-02-29T00:00:00Z"  # rare but real: accepted


def _scheduled_image(studio):
    from studio.types import GenerationRequest
    from studio.validation import server_tags

    with server_tags("schedule:daily-blog"):  # as the job runner does for a scheduled job's scenes
        result = studio.generate(GenerationRequest(prompt="a harbour at dawn", provider="echo",
                                                   tags=["blog", "schedule:daily-blog"]))
    return result.images[0]


def test_the_schedule_tag_is_reserved_but_kept_on_edits(echo_studio):
    from studio.types import GenerationRequest

    with pytest.raises(InvalidRequest, match="reserved"):
        echo_studio.generate(GenerationRequest(prompt="x", provider="echo", tags=["Schedule:daily-blog"]))
    record = _scheduled_image(echo_studio)
    kept = echo_studio.update_image(record.id, tags=["schedule:daily-blog", "harbour"])
    assert "schedule:daily-blog" in kept.tags  # an edit that keeps the image's own tag is fine
    with pytest.raises(InvalidRequest, match="reserved"):
        echo_studio.update_image(record.id, tags=["schedule:other"])


def test_gradio_history_details_name_the_schedule(echo_studio):
    from gradio_ui.session_gallery import describe

    record = _scheduled_image(echo_studio)
    from tests.helpers import as_read

    assert "schedule daily-blog" in as_read(describe(record))
    from studio.types import GenerationRequest

    plain = echo_studio.generate(GenerationRequest(prompt="x", provider="echo"))
    assert "schedule" not in describe(plain.images[0])


def test_history_page_details_name_the_schedule(app_home):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from studio.service import Studio

    studio = Studio(app_home)
    try:
        record = _scheduled_image(studio)
    finally:
        studio.close()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "4_History.py"), default_timeout=30)
    at.session_state["hist_selected"] = record.id
    at.run()
    assert not at.exception
    from tests.helpers import as_read

    assert any("Made by schedule daily-blog" in as_read(c.value) for c in at.caption)


# -- Celery beat ----------------------------------------------------------------------------------


def test_the_beat_task_fires_due_schedules_as_celery_jobs(studio_home, redis_url, monkeypatch):
    """What beat's tick does on a worker: the same claim, and the job's scenes go to the queue."""
    import redis

    from studio.jobs import get_manager
    from studio.jobs.celery_runner import CLOUD_QUEUE
    from studio.service import Studio
    from tests.fakes import echo_provider

    echo_provider.install(studio_home / "catalog")
    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    import studio.worker as worker  # its app reads the broker URL when first imported
    from studio.schedule_beat import BEAT_SCHEDULE, BEAT_TASK, run_due_schedules

    monkeypatch.setattr(worker, "_studio", None)  # this test's studio, not one an earlier test made
    studio = Studio(studio_home)
    try:
        Schedules(studio).add("weekly-blog", "0 9 * * 1", ["a lighthouse", "a fox"], options={"provider": "echo"},
                              now=datetime.now(UTC) - timedelta(days=8))  # a Monday 09:00 has passed since
    finally:
        studio.close()
    assert BEAT_SCHEDULE["studio-schedules"]["task"] == BEAT_TASK and BEAT_TASK in worker.app.tasks
    try:
        fired = run_due_schedules.apply().get()
        assert [(f["name"], f["error"]) for f in fired] == [("weekly-blog", None)]
        assert run_due_schedules.apply().get() == []  # that due time is spent
        assert redis.Redis.from_url(redis_url).llen(CLOUD_QUEUE) >= 1  # its scenes wait for a "cloud" worker
        made = get_manager(worker.worker_studio()).get(fired[0]["job_id"])
        assert made.total == 2 and "schedule:weekly-blog" in made.options["tags"]
        # The stored job says the tag is the server's, so a worker's scenes may keep it (validation.server_tags).
        assert made.options["server_tags"] == ["schedule:weekly-blog"]
    finally:
        if worker._studio is not None:
            get_manager(worker._studio).close()
            worker._studio.close()
        monkeypatch.setattr(worker, "_studio", None)


def test_the_scheduler_thread_ends_with_its_studio(studio_home):
    """A studio nothing else holds (a cleared Streamlit cache) is not kept alive by its scheduler."""
    import gc

    from studio.scheduler import Scheduler
    from studio.service import Studio

    studio = Studio(studio_home)
    scheduler = Scheduler(studio, poll=3600)
    assert scheduler.tick() == []
    studio.close()
    del studio
    gc.collect()
    assert scheduler.schedules is None
    scheduler.start()
    scheduler._thread.join(30)
    assert not scheduler._thread.is_alive()

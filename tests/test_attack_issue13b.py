"""A13b: attacks on issue 13's scheduled generation. Each real fault found is one strict xfail
test here (a fix flips it); see the report for repro and cause."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from studio.errors import InvalidRequest
from studio.schedules import Schedules, next_run, schedule_of, stamp

UTC = timezone.utc
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("cron", ["0 9 31 2 *", "0 0 30 2 *"])
def test_a_cron_that_never_matches_is_a_clear_refusal(cron):
    with pytest.raises(InvalidRequest):
        next_run(cron, T0)


def test_a_daily_schedule_fires_once_on_the_day_clocks_go_back():
    first = next_run("30 2 * * *", at("2026-10-24T12:00:00"), "Europe/Paris")
    assert first == at("2026-10-25T00:30:00")  # 02:30 CEST
    following = next_run("30 2 * * *", first, "Europe/Paris")
    assert following.date() != first.date() and following == at("2026-10-26T01:30:00")  # 02:30 CET next day


def test_the_spring_gap_still_fires_that_day():
    # 02:30 does not exist in Paris on 29 March 2026: the run happens once that day (not skipped twice).
    first = next_run("30 2 * * *", at("2026-03-28T12:00:00"), "Europe/Paris")
    assert first.date() == at("2026-03-29T00:00:00").date()
    assert next_run("30 2 * * *", first, "Europe/Paris") == at("2026-03-30T00:30:00")


def test_a_hand_made_image_cannot_claim_a_schedule(echo_studio):
    from studio.types import GenerationRequest

    try:
        result = echo_studio.generate(GenerationRequest(prompt="a cat", provider="echo", tags=["schedule:weekly"],
                                                        user="bob"))
    except InvalidRequest:
        return  # refusing the reserved tag is a fix too
    record = result.images[0] if hasattr(result, "images") else result
    tags = getattr(record, "tags", None) or echo_studio.history(user="bob").items[0].tags
    assert schedule_of(tags) is None


def test_a_firing_cut_short_is_fired_again_or_reported(echo_studio, monkeypatch):
    from studio.jobs import get_manager

    schedules = Schedules(echo_studio)
    schedules.add("weekly", "0 9 * * 1", ["a lighthouse"], now=T0, options={"provider": "echo"})

    def die(*_args, **_kwargs):  # the process ends here, like kill -9: nothing after it runs
        raise KeyboardInterrupt

    monkeypatch.setattr(Schedules, "_submit", die)
    with pytest.raises(KeyboardInterrupt):
        schedules.run_due(MONDAY_9 + timedelta(seconds=5))
    monkeypatch.undo()
    # A fresh process (the scheduler restarted) looks again a little later.
    fired = Schedules(echo_studio).run_due(MONDAY_9 + timedelta(minutes=1))
    after = schedules.get("weekly")
    try:
        refired = [f for f in fired if f.due == stamp(MONDAY_9) and f.ok]
        assert refired or after.last_error, (fired, after)
    finally:
        for firing in fired:
            if firing.job_id:
                get_manager(echo_studio).wait(firing.job_id, "local", timeout=30)
        get_manager(echo_studio).close()


def test_health_reports_a_local_store_that_cannot_be_written(echo_studio):
    import shutil

    from fastapi.testclient import TestClient

    from studio.http import create_app
    from studio.types import GenerationRequest

    images = echo_studio.storage.files.root / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.write_text("not a folder")  # a lost mount point, a misconfigured volume: nothing can be saved
    with pytest.raises(Exception):  # the store really is broken: a save fails
        echo_studio.generate(GenerationRequest(prompt="a dog", provider="echo"))
    answer = TestClient(create_app(echo_studio)).get("/health")
    assert answer.json()["backends"]["storage"]["ok"] is False
    assert answer.status_code == 503

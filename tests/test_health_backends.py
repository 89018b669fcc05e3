"""GET /health with the scale-out back ends (issue 13): each of PostgreSQL, S3, Redis and the Celery
workers reports ok or not with a detail that holds no secret, and the answer is 503 while a
required one is down (a load balancer reads the status code)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from sqlalchemy.engine import make_url


def _health(studio):
    from fastapi.testclient import TestClient

    from studio.http import create_app

    answer = TestClient(create_app(studio)).get("/health")
    return answer.status_code, answer.json()


def _studio(home):
    from studio.service import Studio

    return Studio(home)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once closed


@pytest.fixture
def pg_with_password(pg_database, monkeypatch):
    """STUDIO_DATABASE_URL on a new PostgreSQL database, with a password in it (the throwaway server
    trusts local connections, so it is never asked for): (url, database name)."""
    url = make_url(pg_database()).set(password="hunter2-secret")
    rendered = url.render_as_string(hide_password=False)
    monkeypatch.setenv("STUDIO_DATABASE_URL", rendered)
    return rendered, url.database


def test_postgresql_is_reported_without_its_password_and_a_dropped_database_is_503(
        studio_home, pg_with_password, pg_server):
    url, name = pg_with_password
    studio = _studio(studio_home)
    try:
        status, body = _health(studio)
        database = body["backends"]["database"]
        assert status == 200 and database["ok"] is True and database["kind"] == "postgresql"
        assert ":***@" in database["detail"] and "hunter2" not in json.dumps(body)
        assert "host=" not in database["detail"]  # the query string (socket folder, options) is left out
        pg_server.drop(name)  # the database goes away under the running studio
        status, body = _health(studio)
        assert status == 503 and body["status"] == "degraded"
        assert body["backends"]["database"]["ok"] is False and "hunter2" not in json.dumps(body)
    finally:
        studio.close()


def test_s3_storage_is_probed_and_shown_without_credentials(studio_home, s3_storage_url):
    import os

    studio = _studio(studio_home)
    try:
        status, body = _health(studio)
        storage = body["backends"]["storage"]
        assert status == 200 and storage["ok"] is True and storage["kind"] == "s3"
        assert storage["detail"].startswith(s3_storage_url)
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(body)
    finally:
        studio.close()


def test_redis_up_without_workers_is_healthy_and_says_no_worker_answered(studio_home, redis_url, monkeypatch):
    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    studio = _studio(studio_home)
    try:
        status, body = _health(studio)
        broker, workers = body["backends"]["broker"], body["backends"]["workers"]
        assert broker["ok"] is True and broker["kind"] == "redis" and broker["detail"] == redis_url
        assert workers["ok"] is False and workers["required"] is False and workers["workers"] == []
        assert "no worker answered" in workers["detail"]
        assert status == 200  # no worker: reported, but the web server still serves
    finally:
        studio.close()


def test_a_broker_that_does_not_answer_is_503_and_its_password_is_not_shown(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_BROKER_URL", f"redis://:s3cret-pw@127.0.0.1:{_closed_port()}/0")
    studio = _studio(studio_home)
    try:
        status, body = _health(studio)
        assert status == 503 and body["backends"]["broker"]["ok"] is False
        assert "s3cret" not in json.dumps(body)
    finally:
        studio.close()


def test_a_probe_that_hangs_is_reported_as_timed_out():
    from studio.health_backends import bounded

    release = threading.Event()

    def hangs(studio):
        release.wait(30)
        return {"ok": True}

    try:
        with pytest.raises(TimeoutError, match="no answer within 0.2 s"):
            bounded(hangs, 0.2)(None)
    finally:
        release.set()
    assert bounded(lambda studio: {"ok": True}, 5)(None) == {"ok": True}


@pytest.mark.parametrize("url, shown", [
    ("postgresql://studio:pw@db:5432/studio?sslkey=/k", "postgresql://studio:***@db:5432/studio"),
    ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("postgresql+psycopg://u@/db?host=/tmp/x", "postgresql+psycopg://u@/db"),
])
def test_urls_are_shown_without_passwords_or_queries(url, shown):
    from studio.health_backends import redact_url

    assert redact_url(url) == shown


def test_the_embedded_default_answers_as_before(echo_studio):
    status, body = _health(echo_studio)
    assert status == 200
    assert body["backends"]["database"] == {"kind": "sqlite", "ok": True}
    assert body["backends"]["workers"] == {"kind": "threads", "ok": True}


def test_a_live_celery_worker_answers_the_health_ping(studio_home, redis_url, monkeypatch):
    from tests.celery_workers import Worker, worker_env

    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    studio = _studio(studio_home)
    try:
        with Worker(worker_env(studio_home, redis_url), "health") as worker:
            worker.wait_ready()
            status, body = _health(studio)
        workers = body["backends"]["workers"]
        assert status == 200 and workers["ok"] is True and workers["kind"] == "celery"
        assert len(workers["workers"]) == 1 and workers["workers"][0].startswith("health@")
    finally:
        studio.close()

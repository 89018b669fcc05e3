"""Issue 13 (scale-out: PostgreSQL, S3, Celery on Redis) attacked from outside (helper A13).

Each test here shows one fault found by deploying the studio as a team would: real back ends
(throwaway PostgreSQL, redis-server, moto's S3 server; fixtures from tests/conftest.py) and the
studio's own entry points. Faults still open are marked ``xfail(strict=True)``: the test fails
today and will report XPASS (a failure) once the fault is fixed, so the mark must then go.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from studio.jobs.model import JobStatus
from tests.helpers import wait_for
from tests.celery_workers import ROOT, Worker, worker_env
from tests.fakes import echo_provider

DEADLINE = 120.0  # seconds a wait on another process may take on a loaded 2-core machine


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=DEADLINE)


def cli_env(home, **extra: str) -> dict[str, str]:
    import os

    return {**os.environ, "STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


# -- settings -----------------------------------------------------------------------------------


def test_an_unreachable_database_url_is_one_clear_line(studio_home):
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    env = cli_env(studio_home, STUDIO_DATABASE_URL="postgresql://studio:hunter2pw@127.0.0.1:1/studio")
    done = run_cli("history", env=env)
    assert "hunter2pw" not in done.stdout + done.stderr  # (holds today: the password is never shown)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "unexpected" not in lines[0] and "sqlalche.me" not in lines[0]


@pytest.mark.parametrize("url", [
    "postgresql:/studio:hunter2pw@127.0.0.1/studio",  # one slash short
    "postgres:studio:hunter2pw@127.0.0.1/studio",  # no slashes
    "postgresql://studio:hunter2pw@127.0.0.1:54x2/studio",  # a typo in the port
])
def test_a_mistyped_database_url_is_one_clear_line_and_exit_2(url, studio_home, tmp_path):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = cli_env(studio_home, STUDIO_DATABASE_URL=url)
    done = subprocess.run([sys.executable, "-m", "studio", "history"], env=env, cwd=workdir, capture_output=True,
                          text=True, timeout=DEADLINE)
    assert "hunter2pw" not in done.stdout + done.stderr
    assert list(workdir.iterdir()) == []  # nothing made on disk from the URL's text
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], done.stderr


@pytest.mark.parametrize("url", [
    "redis//localhost:6379/0",  # no colon: 'unexpected ModuleNotFoundError: No module named 'redis//localhost''
    "redis://localhost:6379/zz",  # a typo in the database number: 'unexpected ValueError: invalid literal'
    "rediss://localhost:6379/0",  # TLS without ssl_cert_reqs: 'unexpected ValueError: A rediss:// URL must ...'
])
def test_a_mistyped_broker_url_is_refused_before_a_job_is_made(url, echo_env, studio_home, tmp_path):
    from tests.pg_server import query_studio_db

    script = tmp_path / "scenes.txt"
    script.write_text("a boat\na kite\n")
    done = run_cli("batch", str(script), "--provider", "echo", env=cli_env(studio_home, STUDIO_BROKER_URL=url))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], done.stderr
    # Refused with the settings: before the studio opens its database, so no job (nor database) is made.
    if (studio_home / "index.sqlite3").exists():
        assert query_studio_db(studio_home, "SELECT COUNT(*) FROM jobs") == [(0,)]


# -- Celery: one cluster, several spellings of the broker's address ----------------------------


@pytest.fixture
def echo_env(studio_home, monkeypatch):
    echo_provider.install(studio_home / "catalog")
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)


def test_a_worker_reaching_the_same_redis_by_another_name_settles_the_job(echo_env, studio_home, redis_url,
                                                                          monkeypatch):
    from studio.config import Settings
    from studio.jobs.manager import JobManager
    from studio.service import Studio

    # The web server knows Redis as 127.0.0.1, the worker host as localhost: one Redis, one database.
    other_spelling = redis_url.replace("127.0.0.1", "localhost")
    assert other_spelling != redis_url
    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    web = Studio(studio_home)
    worker_studio = Studio(studio_home, settings=Settings.load(studio_home, broker_url=other_spelling))
    web_jobs, worker_jobs = JobManager(web), JobManager(worker_studio)
    try:
        job = web_jobs.create("scene a\nscene b", provider="echo")
        web_jobs.runner.take(job.id)  # started by the web server: the tasks name its runner as holder
        web_jobs.store.update_job(job.id, status=JobStatus.RUNNING)
        holder = web_jobs.runner.runner_id
        # The worker host runs both scenes (the body of each studio.run_scene task).
        assert worker_jobs.runner.run_scene(job.id, holder, task_id="t1") == "completed"
        assert worker_jobs.runner.run_scene(job.id, holder, task_id="t2") == "completed"
        done = web_jobs.store.get(job.id)
        assert [len(item.image_ids) for item in done.items] == [1, 1]
        assert done.status is JobStatus.COMPLETED, (done.status, done.runner)
    finally:
        worker_jobs.close(wait=0)
        web_jobs.close(wait=0)
        worker_studio.close()
        web.close()


# -- S3 -----------------------------------------------------------------------------------------



def test_a_worker_with_a_missing_bucket_does_not_eat_the_scenes(echo_env, s3_storage_url, studio_home, redis_url,
                                                                  monkeypatch):
    from studio.jobs.manager import JobManager
    from studio.service import Studio

    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    monkeypatch.setenv("STUDIO_JOB_STALE_SECONDS", "2")
    studio = Studio(studio_home)
    jobs = JobManager(studio)
    # One host's worker has a typo in its bucket name; the web server's settings are right.
    bad = Worker(worker_env(studio_home, redis_url, STUDIO_STORAGE_URL="s3://no-such-bucket-a13/studio"), "bad")
    try:
        job = jobs.submit("a harbour\na lighthouse", provider="echo")
        # The bad worker either refuses to run (exits) or has handled both tasks one way or another.
        wait_for(lambda: bad.process.poll() is not None
                 or sum("studio.run_scene[" in line and ("raised" in line or "succeeded" in line)
                        for line in bad.lines) >= 2, "the misconfigured worker to exit or handle both tasks")
        bad.stop()
        with Worker(worker_env(studio_home, redis_url), "good") as good:
            good.wait_ready()
            wait_for(lambda: jobs.get(job.id, items=False).status is not JobStatus.RUNNING,
                     "the good worker to finish the job", timeout=60.0)
            done = jobs.get(job.id)
            assert done.status is JobStatus.COMPLETED, good.log()
            assert [len(item.image_ids) for item in done.items] == [1, 1]
    finally:
        bad.stop()
        jobs.close(wait=0)
        studio.close()


@pytest.mark.background_errors  # the server logs the unexpected error from its request thread
@pytest.mark.parametrize("backend", ["embedded", "s3"])
def test_an_image_whose_object_is_gone_is_not_a_server_error(backend, request, echo_studio, monkeypatch):
    from fastapi.testclient import TestClient

    from studio.http import create_app
    from studio.tokens import tokens_for
    from studio.types import GenerationRequest

    if backend == "s3":
        request.getfixturevalue("s3_storage_url")
        from studio.service import Studio

        echo_studio = Studio(echo_studio.home)  # rebuilt on the bucket (the fixture's studio uses files)
        request.addfinalizer(echo_studio.close)
    assert (backend == "s3") == (echo_studio.storage.files.local_path("x") is None)
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    token = tokens_for(echo_studio).create("user:ann@example.com", "ann")[1]
    record = echo_studio.generate(GenerationRequest(prompt="a kite", provider="echo",
                                                    user="user:ann@example.com")).images[0]
    echo_studio.storage.files.delete(record.path)  # an operator's cleanup, a lifecycle rule
    client = TestClient(create_app(echo_studio), raise_server_exceptions=False)
    answer = client.get(f"/api/v1/images/{record.id}/file", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code in (404, 410), (answer.status_code, answer.text)


# -- a database outage longer than the heartbeat's trust ----------------------------------------


def test_a_request_taken_for_dead_while_it_ran_keeps_its_image(database_url, echo_studio, studio_home, monkeypatch):
    import time

    from studio.storage.index import sql
    from studio.storage.liveness import TEST_HOST_VARIABLE
    from studio.types import GenerationRequest
    from tests.pg_server import query_studio_db

    storage = echo_studio.storage
    plain_generate = echo_provider.EchoProvider.generate
    booked_elsewhere = []

    def generate_while_the_database_was_away(self, request, ctx):
        # While the provider works: this process's heartbeat is old (it could not be written while
        # the database was down), and a process on another machine reserves, which books requests of
        # processes it takes for dead.
        with storage.index.db.write() as conn:
            conn.execute(sql("UPDATE process_heartbeats SET beat_at = :old"), {"old": time.time() - 3600})
        with pytest.MonkeyPatch.context() as other_machine:
            other_machine.setenv(TEST_HOST_VARIABLE, "another-machine")
            booked_elsewhere.extend(storage.book_interrupted())
        return plain_generate(self, request, ctx)

    monkeypatch.setattr(echo_provider.EchoProvider, "generate", generate_while_the_database_was_away)
    result = echo_studio.generate(GenerationRequest(prompt="a kite over the dunes", provider="echo"))
    assert len(booked_elsewhere) == 1  # the request in flight was taken for a dead process's
    assert len(result.images) == 1
    assert query_studio_db(studio_home, "SELECT COUNT(*) FROM images") == [(1,)]
    assert query_studio_db(studio_home, "SELECT COUNT(*) FROM generations") == [(1,)]  # booked once
    assert echo_studio.repair().clean


# -- privacy ------------------------------------------------------------------------------------


@pytest.mark.background_errors
def test_a_database_error_at_commit_shows_no_owner_or_sql_to_the_caller(pg_database, studio_home, monkeypatch):
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from studio.http import create_app
    from studio.service import Studio
    from studio.tokens import tokens_for
    from tests.pg_server import query_studio_db

    monkeypatch.setenv("STUDIO_DATABASE_URL", pg_database())
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    echo_provider.install(studio_home / "catalog")
    studio = Studio(studio_home)
    try:
        token = tokens_for(studio).create("user:ann@example.com", "ann")[1]
        # Stands for any error the database raises on the INSERT (a restart between the pool's ping and
        # the statement, a full disk, a duplicate key): a constraint every new image row breaks.
        with studio.storage.index.db.write() as conn:
            conn.execute(sa.text("ALTER TABLE images ADD CONSTRAINT a13_refuse CHECK (width < 0) NOT VALID"))
        client = TestClient(create_app(studio), raise_server_exceptions=False)
        answer = client.post("/api/v1/generate", json={"prompt": "a kite", "provider": "echo"},
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code >= 500
        for text in (answer.text, *(error for (error,) in query_studio_db(studio_home, "SELECT error FROM generations"))):
            assert "ann@example.com" not in text and "[SQL:" not in text, text[:400]
    finally:
        studio.close()


# -- Redis loses its queue mid-batch ------------------------------------------------------------


def test_scenes_whose_tasks_redis_lost_still_run(echo_env, studio_home, redis_url, monkeypatch):
    import redis

    from studio.jobs.manager import JobManager
    from studio.service import Studio

    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    monkeypatch.setenv("STUDIO_JOB_STALE_SECONDS", "2")
    studio = Studio(studio_home)
    jobs = JobManager(studio)
    client = redis.Redis.from_url(redis_url)
    try:
        job = jobs.submit("a harbour\na lighthouse\na storm", provider="echo")  # no worker is up yet
        wait_for(lambda: client.llen("cloud") == 3, "the three scene tasks to wait in Redis")
        client.flushall()  # Redis comes back empty
        with Worker(worker_env(studio_home, redis_url), "after") as worker:
            worker.wait_ready()
            wait_for(lambda: jobs.get(job.id, items=False).status is not JobStatus.RUNNING,
                     "the worker to finish the job", timeout=60.0)
            done = jobs.get(job.id)
            assert done.status is JobStatus.COMPLETED, worker.log()
            assert [len(item.image_ids) for item in done.items] == [1, 1, 1]
    finally:
        client.close()
        jobs.close(wait=0)
        studio.close()


# -- PostgreSQL restarts mid-batch --------------------------------------------------------------


def _pg_ctl(server, *args: str) -> None:
    """Stop or start the test process's throwaway PostgreSQL server (tests/pg_server.py's options)."""
    from tests.pg_server import _as_postgres_user, postgres_bindir

    home = server.home
    options = (f"-k {home} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=300")
    extra = ["-o", options] if args[0] == "start" else []
    subprocess.run([*_as_postgres_user(), str(postgres_bindir() / "pg_ctl"), "-D", str(home / "data"), "-l",
                    str(home / "log"), "-w", *args, *extra], check=True, capture_output=True, timeout=DEADLINE)


@pytest.mark.background_errors  # the web server's watch logs the database's absence while it is down
@pytest.mark.xfail(strict=False, reason="F13a: tasks are no longer spent while PostgreSQL is down (retried with a "
                                        "backoff; a scene in flight keeps its lease and is settled once the database "
                                        "answers) and the job completes; still open, in some runs: an image file of a "
                                        "scene in flight at the crash is left without a row (repair not clean)")
def test_a_batch_survives_a_postgresql_restart(echo_env, pg_server, pg_database, studio_home, redis_url, monkeypatch):
    from studio.jobs.manager import JobManager
    from studio.jobs.model import ItemStatus
    from studio.service import Studio

    monkeypatch.setenv("STUDIO_DATABASE_URL", pg_database())
    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    monkeypatch.setenv("STUDIO_JOB_STALE_SECONDS", "2")
    studio = Studio(studio_home)
    jobs = JobManager(studio)
    workers = [Worker(worker_env(studio_home, redis_url, ECHO_LATENCY="0.5"), f"w{n}", pool="threads", concurrency=2)
               for n in range(2)]
    down = False
    try:
        for worker in workers:
            worker.wait_ready()
        job = jobs.submit("\n".join(f"a lighthouse, scene {i}" for i in range(16)), provider="echo", concurrency=4)
        wait_for(lambda: sum(item.status is ItemStatus.COMPLETED for item in jobs.get(job.id).items) >= 3,
                 "three scenes to complete")
        _pg_ctl(pg_server, "stop", "-m", "immediate")  # the database server crashes ...
        down = True
        wait_for(lambda: any("OperationalError" in line for worker in workers for line in worker.lines),
                 "a worker to meet the missing database")
        _pg_ctl(pg_server, "start")  # ... and is back a moment later
        down = False
        wait_for(lambda: jobs.get(job.id, items=False).status is not JobStatus.RUNNING, "the job to end",
                 timeout=90.0)
        done = jobs.get(job.id)
        assert done.status is JobStatus.COMPLETED
        assert [len(item.image_ids) for item in done.items] == [1] * 16
        assert studio.repair().clean
    finally:
        if down:
            _pg_ctl(pg_server, "start")
        for worker in workers:
            worker.stop()
        jobs.close(wait=0)
        studio.close()

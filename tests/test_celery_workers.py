"""Batch scenes on Celery workers over a real Redis (issue 13, STUDIO_BROKER_URL).

Workers are real ``celery -A studio.worker worker`` processes (tests/celery_workers.py) on the
test's data directory (SQLite, files), with a real ``redis-server`` (tests/redis_server.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from studio.jobs.celery_runner import (LEASE_PREFIX, TASK_PREFIX, CeleryRunner, cluster_runner_id, queue_for)
from studio.jobs.manager import JobManager
from studio.jobs.model import ItemStatus, JobStatus
from studio.jobs.recovery import RECOVERED_NOTE
from studio.jobs.runner import ThreadRunner
from tests.helpers import wait_for
from tests.celery_workers import ROOT, Worker, worker_env
from tests.fakes import echo_provider

STALE = "2"  # seconds: a killed worker's scene is recovered this long after its last heartbeat
DEADLINE = 120.0  # seconds any wait below may take on a loaded 2-core machine before the test fails



@pytest.fixture
def broker(studio_home, redis_url, monkeypatch):
    """The studio's settings point at the test's Redis; scenes of a lost worker come back quickly."""
    monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
    monkeypatch.setenv("STUDIO_JOB_STALE_SECONDS", STALE)
    return redis_url


@pytest.fixture
def echo_env(studio_home, monkeypatch):
    """The echo provider, for this process and for worker processes (a plugin spec they load)."""
    echo_provider.install(studio_home / "catalog")
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)


@pytest.fixture
def manager(broker, studio_home):
    from studio.service import Studio

    studio = Studio(studio_home)
    jobs = JobManager(studio)
    yield jobs
    jobs.close(wait=0)
    studio.close()


def redis_of(url):
    import redis

    return redis.Redis.from_url(url)


# -- the runner's choice, queues, Flower ---------------------------------------------------------


def test_the_manager_runs_on_celery_only_with_a_broker(studio_home, monkeypatch, redis_url):
    from studio.service import Studio

    studio = Studio(studio_home)
    try:
        assert isinstance(JobManager(studio).runner, ThreadRunner)
        monkeypatch.setenv("STUDIO_BROKER_URL", redis_url)
        with_broker = Studio(studio_home)
        runner = JobManager(with_broker).runner
        assert isinstance(runner, CeleryRunner)
        assert runner.runner_id == cluster_runner_id(runner.redis)  # the same for every process of the cluster
        with_broker.close()
    finally:
        studio.close()


def test_local_scenes_go_to_the_local_queue_and_cloud_ones_to_cloud():
    class Named:
        def __init__(self, name):
            self.name = name

    assert queue_for(Named("local")) == "local"
    assert [queue_for(Named(n)) for n in ("openai", "replicate", "echo")] == ["cloud"] * 3


def test_flower_loads_the_app(studio_home, redis_url):
    code = ("from flower.app import Flower; import studio.worker as w; f = Flower(capp=w.app); "
            "print(sorted(n for n in w.app.tasks if n.startswith('studio.')), f.capp.conf.broker_url)")
    done = subprocess.run([sys.executable, "-c", code], env=worker_env(studio_home, redis_url), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'studio.generate'" in done.stdout and "'studio.run_scene'" in done.stdout and redis_url in done.stdout


# -- scenes through a real worker -----------------------------------------------------------------


def test_a_batch_runs_on_a_worker_process(echo_env, manager, studio_home, broker):
    with Worker(worker_env(studio_home, broker), "one") as worker:
        worker.wait_ready()
        job = manager.submit("\n".join(f"a lighthouse, scene {i}" for i in range(5)), provider="echo")
        job = manager.wait(job.id, timeout=DEADLINE)
        assert job.status is JobStatus.COMPLETED, worker.log()
        assert [len(item.image_ids) for item in job.items] == [1] * 5
        assert job.runner is None  # released: any process may retry or resume it
        assert not manager.runner.running(job.id)  # (this process runs no scenes: the worker did)
        # a single generation on the worker, too: its image is in the shared history
        from studio.jobs.celery_runner import generate_on_worker
        from studio.types import GenerationRequest

        [record] = generate_on_worker(manager.studio, GenerationRequest(prompt="one more lighthouse", provider="echo"),
                                      request_id="single-1", timeout=DEADLINE)
        assert record.request_id == "single-1" and record.prompt.startswith("one more lighthouse")
        assert manager.studio.history(limit=10).total == 6


def test_cancel_and_pause_reach_the_worker_holding_the_scene(echo_env, manager, studio_home, broker, monkeypatch):
    env = worker_env(studio_home, broker, ECHO_LATENCY="120")  # a scene runs until it is cancelled
    with Worker(env, "slow") as worker:
        worker.wait_ready()
        job = manager.submit("scene one\nscene two\nscene three", provider="echo", concurrency=1)

        client = redis_of(broker)

        def in_flight():  # scenes the worker holds: active, with the worker's lease on their request
            items = manager.get(job.id).items
            return [i.index for i in items if i.status.active and client.exists(LEASE_PREFIX + i.request_id)]

        first = wait_for(in_flight, "a scene in flight on the worker")[0]
        manager.cancel(job.id, index=first)
        wait_for(lambda: manager.store.item(job.id, first).status is ItemStatus.CANCELLED, "the scene cancelled")
        second = wait_for(lambda: [i for i in in_flight() if i != first], "the next scene")[0]
        manager.pause(job.id)
        assert manager.get(job.id).status is JobStatus.PAUSED
        assert manager.runner.running(job.id)  # its scene in flight goes on (a pause starts nothing new)
        manager.cancel(job.id)
        done = manager.wait(job.id, timeout=DEADLINE)
        assert done.status is JobStatus.CANCELLED, worker.log()
        assert [i.status for i in done.items] == [ItemStatus.CANCELLED] * 3
        assert not manager.runner.running(job.id) and done.runner is None
        assert second != first


# -- a worker killed mid-batch -------------------------------------------------------------------


class SlowImages:
    """Wraps the OpenAI fake: every image request is answered ``delay`` seconds late (the provider's
    latency); while ``holding`` is set, image requests wait for ``release`` (so a worker's scene
    cannot finish between the moment the test sees it in flight and the kill)."""

    def __init__(self, fake, delay: float):
        self.fake, self.delay = fake, delay
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, request):
        image_request = request.method == "POST" and "/images/" in request.path
        if image_request and self.holding.is_set():
            self.release.wait(DEADLINE)
        response = self.fake(request)
        if image_request:
            response.delay = self.delay
        return response


@pytest.mark.slow
def test_forty_scenes_two_workers_one_killed_every_scene_once(database_url, manager, cloud_fake, studio_home,
                                                              broker):
    """Once on SQLite in the data directory, once on PostgreSQL (STUDIO_DATABASE_URL, which the
    workers get too): both workers and this process share the one database."""
    fake = cloud_fake("openai")
    slow = fake.server.serve(SlowImages(fake, delay=0.3))
    env = worker_env(studio_home, broker)
    client = redis_of(broker)
    with Worker(env, "doomed") as doomed, Worker(env, "survivor") as survivor:
        doomed.wait_ready()
        survivor.wait_ready()
        script = "\n".join(f"a harbour at dawn, scene {i}" for i in range(40))
        job = manager.submit(script, provider="openai", model="gpt-image-1-mini", quality="low")
        doomed_name = f"{socket.gethostname()}:{doomed.pid}"

        wait_for(lambda: manager.get(job.id, items=False).counts.get("COMPLETED", 0) >= 4, "some scenes done")
        slow.holding.set()  # from now on no scene finishes until the kill

        def doomed_in_flight():  # the scene the doomed worker holds: its lease names the worker
            return [key for key in client.scan_iter(LEASE_PREFIX + "*") if client.get(key) == doomed_name.encode()]

        try:
            [lease] = wait_for(doomed_in_flight, "a scene in flight on the doomed worker")
            killed_request = lease.decode().removeprefix(LEASE_PREFIX)
            doomed.kill()
        finally:
            slow.release.set()
        finished = manager.wait(job.id, timeout=DEADLINE)
        assert finished.status is JobStatus.COMPLETED, survivor.log()

    studio = manager.studio
    items = finished.items
    assert Counter(i.status for i in items) == {ItemStatus.COMPLETED: 40}
    # nothing lost, no duplicate image: one image per scene, 40 in history
    assert [len(i.image_ids) for i in items] == [1] * 40
    assert len({image for i in items for image in i.image_ids}) == 40
    assert studio.history(limit=1000).total == 40
    # the killed worker's scene ran again (or completed from what it saved): attempt 2, or the note
    killed = next(i for i in items if killed_request.startswith(f"{job.id}-{i.index}-"))
    assert killed.attempts >= 2 or RECOVERED_NOTE in killed.warnings
    # booked once: one completed (or recovered) audit row per scene; the killed attempt, if the
    # provider may have billed it, once as interrupted; every provider call has exactly one row
    rows = [r for r in studio.storage.index.generations() if r["id"].startswith(f"{job.id}-")]
    assert len({r["id"] for r in rows}) == len(rows)
    done_rows = Counter(int(r["id"].split("-")[1]) for r in rows if r["status"] in ("completed", "recovered"))
    assert done_rows == {index: 1 for index in range(40)}
    interrupted = [r["id"] for r in rows if r["status"] == "interrupted"]
    assert set(interrupted) <= {killed_request}
    assert 40 <= len(fake.calls) <= 40 + len(interrupted)
    assert finished.cost == pytest.approx(sum(r["cost"] for r in rows))
    assert studio.repair().clean


# -- a task delivered again ----------------------------------------------------------------------


def test_a_killed_workers_task_is_delivered_again_and_its_scene_runs_once(echo_env, manager, studio_home, broker):
    """Late acknowledgement through the real broker: worker A is killed with a scene in flight; its
    task was never acknowledged, so Redis hands it to worker B (started once the visibility timeout
    has passed). Meanwhile the scene was recovered and ran again once; the task delivered again
    does not run it a second time. (A runs its task on a thread: with early acknowledgement its main
    thread would acknowledge the task at once, and the test fails; a solo worker defers that ack.)"""
    client = redis_of(broker)
    slow = worker_env(studio_home, broker, ECHO_LATENCY="120", STUDIO_BROKER_VISIBILITY_TIMEOUT="1")
    with Worker(slow, "a", pool="threads") as first:
        first.wait_ready()
        job = manager.submit("the only scene", provider="echo")
        name = f"{socket.gethostname()}:{first.pid}".encode()
        [lease] = wait_for(lambda: [k for k in client.scan_iter(LEASE_PREFIX + "*") if client.get(k) == name],
                           "the scene in flight on worker A")
        request_id = lease.decode().removeprefix(LEASE_PREFIX)
        [task_key] = [k for k in client.scan_iter(TASK_PREFIX + "*") if client.get(k) == request_id.encode()]
        task_id = task_key.decode().removeprefix(TASK_PREFIX)
        first.kill()
    # the scene is recovered (its lease expired: longer than the visibility timeout) and queued again
    wait_for(lambda: manager.store.item(job.id, 0).status is ItemStatus.PENDING, "the scene recovered")
    with Worker(worker_env(studio_home, broker, STUDIO_BROKER_VISIBILITY_TIMEOUT="1"), "b") as second:
        second.wait_ready()
        done = manager.wait(job.id, timeout=DEADLINE)
        assert done.status is JobStatus.COMPLETED, second.log()
        wait_for(lambda: any(task_id in line and "succeeded" in line for line in second.lines),
                 "worker B to run worker A's task again")
    [item] = done.items
    assert item.attempts == 2 and len(item.image_ids) == 1
    assert manager.studio.history(limit=10).total == 1


# -- a task delivered again ----------------------------------------------------------------------


@pytest.fixture
def held_job(echo_env, manager):
    """A job of three echo scenes, RUNNING and held by the cluster's runner, nothing queued to run it
    (this process plays the workers: ``run_scene`` is called directly)."""
    job = manager.create("scene a\nscene b\nscene c", provider="echo")
    runner = manager.runner
    runner.take(job.id)
    manager.store.update_job(job.id, status=JobStatus.RUNNING)
    runner.claim_grace = 0.0  # a scene without a lease is a lost worker's at once
    return job


def test_a_redelivered_scene_that_completed_is_a_no_op(held_job, manager):
    runner = manager.runner
    assert runner.run_scene(held_job.id, runner.runner_id, task_id="task-1") == "completed"
    calls = echo_provider.EchoProvider.calls
    assert runner.run_scene(held_job.id, runner.runner_id, task_id="task-1", redelivered=True) == "done already"
    assert echo_provider.EchoProvider.calls == calls
    assert manager.get(held_job.id).counts == {"COMPLETED": 1, "PENDING": 2}


def test_a_redelivered_scene_in_flight_elsewhere_is_left_to_its_worker(held_job, manager):
    runner, store = manager.runner, manager.store
    item = store.claim(held_job.id, runner.runner_id)  # another worker claimed it and is alive
    runner.redis.set(LEASE_PREFIX + item.request_id, "elsewhere:1", ex=60)
    runner.redis.set(TASK_PREFIX + "task-2", item.request_id)
    assert runner.run_scene(held_job.id, runner.runner_id, task_id="task-2", redelivered=True) == "in flight elsewhere"
    assert store.item(held_job.id, item.index).status is ItemStatus.INITIALIZING
    assert store.item(held_job.id, item.index).request_id == item.request_id
    assert echo_provider.EchoProvider.calls == 0


def test_a_redelivered_scene_whose_worker_died_after_saving_completes_without_running_again(held_job, manager):
    from studio.jobs.runner import build_request

    runner, store, studio = manager.runner, manager.store, manager.studio
    item = store.claim(held_job.id, runner.runner_id)
    runner.redis.set(TASK_PREFIX + "task-3", item.request_id)
    # the dead worker generated and saved the scene's image, then died before marking the item
    studio.generate(build_request(manager.get(held_job.id, items=False), item), request_id=item.request_id)
    assert echo_provider.EchoProvider.calls == 1
    assert runner.run_scene(held_job.id, runner.runner_id, task_id="task-3", redelivered=True) == "done already"
    recovered = store.item(held_job.id, item.index)
    assert recovered.status is ItemStatus.COMPLETED and RECOVERED_NOTE in recovered.warnings
    assert echo_provider.EchoProvider.calls == 1  # not paid again
    assert studio.history(limit=10).total == 1


def test_a_redelivered_scene_whose_worker_died_before_saving_runs_once_more(held_job, manager):
    runner, store = manager.runner, manager.store
    item = store.claim(held_job.id, runner.runner_id)  # claimed by a worker that then died: no lease
    runner.redis.set(TASK_PREFIX + "task-4", item.request_id)
    assert runner.run_scene(held_job.id, runner.runner_id, task_id="task-4", redelivered=True) == "completed"
    again = store.item(held_job.id, item.index)
    assert again.status is ItemStatus.COMPLETED and again.attempts == 2
    assert echo_provider.EchoProvider.calls == 1
    assert manager.studio.history(limit=10).total == 1


def test_resuming_a_silent_job_leaves_scenes_of_live_workers_alone(held_job, manager):
    """The job's heartbeat went stale (say its web server restarted), but one of its two scenes in
    flight still has a live worker's lease: a resume settles only the other one."""
    runner, store = manager.runner, manager.store
    live = store.claim(held_job.id, runner.runner_id)
    dead = store.claim(held_job.id, runner.runner_id)
    runner.redis.set(LEASE_PREFIX + live.request_id, "elsewhere:1", ex=60)
    store.heartbeat([held_job.id], runner.runner_id, time.time() - 3600)
    assert manager.get(held_job.id).interrupted
    manager.resume(held_job.id)
    assert store.item(held_job.id, live.index).status is ItemStatus.INITIALIZING  # its worker's
    assert store.item(held_job.id, live.index).request_id == live.request_id
    assert store.item(held_job.id, dead.index).status is ItemStatus.PENDING  # runs again
    assert echo_provider.EchoProvider.calls == 0

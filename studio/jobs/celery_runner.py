"""Batch scenes as Celery tasks on Redis (``STUDIO_BROKER_URL``): the ``CeleryRunner``.

``JobManager`` picks this runner when ``settings.broker_url`` is set. The process that starts a job
(a web server, the CLI) enqueues one ``studio.run_scene`` task per pending scene; workers started
with ``celery -A studio.worker worker`` run them (``studio/worker.py``). Nothing but the tasks
travels through the broker: the job, its items, progress, pause and cancel live in the job store
(the studio's database, shared by every process), as with the thread runner.

Queues: a scene of the local model goes to queue ``local`` (GPU boxes: ``-Q local``), any other to
``cloud`` (``-Q cloud`` or ``-Q cloud,local``) — ``queue_for``.

Who holds a job: every process using the same broker is one logical runner, ``celery:<cluster id>``
(``cluster_runner_id``: a random id kept in the broker's Redis, so every spelling of its address is
the same cluster, and nothing of the URL or its password is in it), so any web server may pause,
resume or cancel a job another one started. Its heartbeat is refreshed by each worker while it runs a scene of the job, and by the
process that started it while that process lives; a job nobody refreshes for ``stale_after``
seconds is interrupted, and ``JobManager.recover``/``resume`` settle it as usual.

One scene, on a worker (``run_scene``), with late acknowledgement (a killed worker's task is
delivered again) and idempotency by request id:

1. Take a slot of the job's own gate (its concurrency) and of the provider's ``RedisGate`` (the
   provider's limit and the shared backoff after a 429, across every worker).
2. Claim the next pending item (``JobStore.claim``: atomic, only while the job is RUNNING and held
   by this runner), which gives the attempt its request id. Two Redis keys follow at once:
   ``studio:lease:<request id>`` (this worker, expiring after ``stale_after`` seconds and refreshed
   while the scene runs) and ``studio:task:<task id>`` (the request id the task claimed).
3. Run it (``execute_item``) while a heartbeat thread refreshes the lease, the gate slots and the
   job's heartbeat, and interrupts the scene when its cancel (or the job's) shows in the store.
4. Settle the job when nothing is left (``settle``): completed or failed, or paused/cancelled once
   the last scene in flight has ended; whoever releases the job sends its webhook event.

A task delivered again (its worker was killed, or the broker's visibility timeout passed) first
looks up the request id it had claimed: completed, it is a no-op; still leased by a live worker,
it is left to that worker (no-op); otherwise the item is settled by the studio's crash recovery
(``recovery.settle_items``: files the dead worker finished are indexed and booked, its request in
flight is booked as interrupted, and the item completes with its saved images or runs once more).
Every task also sweeps its job for such orphans (active, with no lease), so a killed worker's
scene is recovered by the others within ``stale_after`` seconds, not only when its task returns.

Lost tasks: a task that cannot reach the database or the image store is retried later (the worker
task's backoff, ``studio/worker.py``), never spent. Tasks the broker itself lost (a Redis restarted
without its data, a failover to an empty replica) are sent again by the starting process's watch
(``resend_lost``): a RUNNING job with pending scenes, none in flight, nothing claimed or sent for
``stall_seconds`` (a key in Redis, gone with the lost data) and an empty queue gets one task per
pending scene again. A surplus task finds nothing to claim (claims are atomic) and ends.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

from studio.jobs.model import ACTIVE, ItemStatus, Job, JobItem, JobStatus
from studio.jobs.recovery import RecoveryReport, settle_items
from studio.jobs.runner import (EventCallback, Outcome, Runner, execute_item,
                                heartbeat_timings, runner_alive)
from studio.jobs.store import JobStore, now_iso

SCENE_TASK = "studio.run_scene"
GENERATE_TASK = "studio.generate"
LOCAL_QUEUE, CLOUD_QUEUE = "local", "cloud"
LEASE_PREFIX = "studio:lease:"
TASK_PREFIX = "studio:task:"
SWEEP_PREFIX = "studio:sweep:"
DISPATCH_PREFIX = "studio:dispatched:"  # a job whose scenes were sent, claimed or run lately (expires)
CLUSTER_ID_KEY = "studio:cluster-id"  # the cluster's runner id: created once, shared by every process
MIN_STALL_SECONDS = 30.0  # about a retried task's longest backoff (studio/worker.py): few needless resends
TASK_MEMORY_SECONDS = 7 * 24 * 3600  # how long a task's claimed request id is remembered
# The broker redelivers a task not acknowledged within this many seconds (Redis transport): longer
# than any scene may run (a request's timeout and its saving), or a slow scene's task would be
# delivered a second time while it still runs (harmless, see above, but wasteful).
MIN_VISIBILITY_TIMEOUT = 3600

log = logging.getLogger("studio.jobs")


def cluster_runner_id(client, proposed: str | None = None) -> str:
    """The runner id of every process using the Redis behind ``client``: ``celery:<12 hex digits>``,
    a random id created once in Redis (``SET NX``; ``proposed``, an id without its ``celery:``
    prefix, when given, e.g. the one a process already holds jobs under) and read back by everyone,
    so it does not depend on how a process spells the broker's address. Its host part is no host
    name, so ``runner_alive`` judges it by its heartbeat alone (no pid to check). Raises Redis's
    errors when it cannot be reached."""
    for _ in range(3):  # a Redis emptied between the two calls: create it again
        client.set(CLUSTER_ID_KEY, proposed or secrets.token_hex(6), nx=True)
        value = client.get(CLUSTER_ID_KEY)
        if value is not None:
            return "celery:" + value.decode()
    raise RuntimeError("the broker's Redis keeps losing the cluster id (is it being emptied?)")


def unreachable(exc: BaseException) -> bool:
    """Is ``exc`` the database or the image store being out of reach (down, restarting, refusing),
    rather than a fault of the task itself? Such a task is worth trying again later."""
    import sqlalchemy.exc

    from studio.storage import StorageError

    if isinstance(exc, StorageError):
        return True
    if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


def queue_for(provider) -> str:
    """The queue of a provider's scenes: ``local`` for a model run on this deployment's own devices
    (the ``local`` provider, or one whose class sets ``queue = "local"``), else ``cloud``."""
    queue = getattr(provider, "queue", None)
    if queue in (LOCAL_QUEUE, CLOUD_QUEUE):
        return queue
    return LOCAL_QUEUE if provider.name == "local" else CLOUD_QUEUE


def make_app(settings):
    """The Celery app for ``settings.broker_url`` (Redis), configured for at-least-once scenes: late
    acknowledgement, a task whose worker was lost is requeued, one task prefetched per worker, JSON
    only. Results (single generations only) are kept in the same Redis. Raises ValueError without a
    broker URL."""
    from celery import Celery
    from kombu import Exchange, Queue

    url = settings.broker_url
    if not url:
        raise ValueError("STUDIO_BROKER_URL is not set: workers need the broker's URL, e.g. redis://localhost:6379/0")
    app = Celery("studio", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged when the scene has ended, not when it was received
        task_reject_on_worker_lost=True,  # a worker process that died: the task goes back to the queue
        worker_prefetch_multiplier=1,  # a worker holds only the task it runs; the rest stay for others
        task_queues=tuple(Queue(name, Exchange(name), routing_key=name) for name in (CLOUD_QUEUE, LOCAL_QUEUE)),
        task_default_queue=CLOUD_QUEUE, task_default_exchange=CLOUD_QUEUE, task_default_routing_key=CLOUD_QUEUE,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        result_expires=24 * 3600,
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,  # the studio's own logging configuration stays
    )
    from studio.schedule_beat import BEAT_SCHEDULE  # scheduled batches: beat's tick, a worker's task

    app.conf.update(beat_schedule=BEAT_SCHEDULE, imports=("studio.schedule_beat",))
    return app


def visibility_timeout(settings) -> float:
    """Seconds before Redis delivers an unacknowledged task again: ``broker_visibility_timeout``, or
    by default longer than any scene may take (see ``MIN_VISIBILITY_TIMEOUT``)."""
    if settings.broker_visibility_timeout:
        return float(settings.broker_visibility_timeout)
    return float(max(MIN_VISIBILITY_TIMEOUT, int(2 * settings.request_timeout) + 600))


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url)


def _age_seconds(iso: str | None, now: float) -> float:
    if not iso:
        return float("inf")
    return now - datetime.fromisoformat(iso).astimezone(timezone.utc).timestamp()


class CeleryRunner(Runner):
    """Runs a job's scenes as Celery tasks (see the module docstring). The same class serves the
    process that starts jobs (``take``/``start``/``stop``/``wait``) and the workers (``run_scene``).

    ``stale_after`` (seconds; default ``settings.job_stale_seconds``) is how long a silent job or
    scene lease is trusted; heartbeats are refreshed every ``poll_interval`` (default a fifth of it,
    at most 0.5 s). ``app`` and ``redis`` default to ones made from ``settings.broker_url``."""

    def __init__(self, studio, store: JobStore, *, on_event: EventCallback | None = None, app=None, redis=None,
                 poll_interval: float | None = None, stale_after: float | None = None):
        self.studio = studio
        self.store = store
        self.on_event = on_event
        settings = studio.settings
        if not settings.broker_url:
            raise ValueError("the Celery runner needs settings.broker_url (STUDIO_BROKER_URL)")
        self._runner_id: str | None = None  # read from Redis on first use (cluster_runner_id)
        self.stale_after, self.poll_interval = heartbeat_timings(studio, stale_after, poll_interval)
        # A scene claimed this recently may not have its lease yet (it is set right after the claim).
        self.claim_grace = min(2.0, self.stale_after / 2)
        # A running job with pending scenes and no sign of its tasks this long had them lost.
        self.stall_seconds = max(MIN_STALL_SECONDS, 4 * self.stale_after)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self._app = app
        self._redis = redis
        self._lock = threading.RLock()
        self._gates: dict[str, Any] = {}
        self._watched: set[str] = set()
        self._monitor: threading.Thread | None = None
        self._closed = threading.Event()
        self._unfinished_writes = False  # a scene here failed mid-save and its files are not indexed yet

    # -- connections ----------------------------------------------------------------------------

    @property
    def app(self):
        with self._lock:
            if self._app is None:
                self._app = make_app(self.studio.settings)
            return self._app

    @property
    def redis(self):
        with self._lock:
            if self._redis is None:
                self._redis = redis_client(self.studio.settings.broker_url)
            return self._redis

    @property
    def runner_id(self) -> str:
        """``celery:<cluster id>`` (``cluster_runner_id``), the same in every process of the cluster."""
        with self._lock:
            if self._runner_id is None:
                self._runner_id = cluster_runner_id(self.redis)
            return self._runner_id

    def _keep_cluster_id(self) -> None:
        """Put this process's cluster id back in a Redis that lost it, so processes started since
        join the jobs' holder instead of making up another id."""
        cluster_runner_id(self.redis, self.runner_id.removeprefix("celery:"))

    def gate(self, name: str, limit: int):
        """The shared ``RedisGate`` called ``name`` (a provider, or ``job:<id>``)."""
        from studio.jobs.redis_gate import RedisGate

        with self._lock:
            gate = self._gates.get(name)
            if gate is None or gate.max_limit != max(1, int(limit)):
                gate = RedisGate(self.redis, name, limit, ttl=self.stale_after,
                                 max_hold=self.studio.settings.rate_limit_max_hold)
                self._gates[name] = gate
            return gate

    # -- the interface, in the process that starts jobs -----------------------------------------

    def start(self, job_id: str) -> None:
        if self._closed.is_set():
            raise RuntimeError("the runner is shut down")
        job = self._take(job_id)
        self.store.update_job(job_id, status=JobStatus.RUNNING, started_at=job.started_at or now_iso(),
                              finished_at=None, error=None)
        pending = len(self.store.items(job_id, [ItemStatus.PENDING]))
        self.enqueue(job, pending)
        with self._lock:
            self._watched.add(job_id)
            if self._monitor is None or not self._monitor.is_alive():
                self._monitor = threading.Thread(target=self._watch, name="celery-jobs-monitor", daemon=True)
                self._monitor.start()
        if not pending:
            self.settle(job_id)

    def enqueue(self, job: Job, count: int, holder: str | None = None) -> None:
        """Send ``count`` scene tasks of ``job`` to its provider's queue, for the runner ``holder``
        (default this cluster's). Each runs the next pending scene, so any task may run any scene; a
        surplus task finds nothing and ends."""
        if count <= 0:
            return
        queue = queue_for(self.studio.provider(job.provider))
        holder = holder or self.runner_id
        with self.app.producer_or_acquire() as producer:
            for _ in range(count):
                self.app.send_task(SCENE_TASK, args=[job.id, holder], queue=queue, producer=producer)
        self._mark_dispatched(job.id)

    def _mark_dispatched(self, job_id: str) -> None:
        """Note that the job's scenes were sent, claimed or are running (see ``resend_lost``)."""
        self.redis.set(DISPATCH_PREFIX + job_id, self.worker_name, ex=max(1, round(self.stall_seconds)))

    def resend_lost(self, job: Job) -> int:
        """Send the tasks of a RUNNING job again when the broker lost them: pending scenes, none in
        flight, nothing sent, claimed or run for ``stall_seconds`` (the key is gone, as after a
        Redis restarted empty) and no task waiting in the job's queue. Returns the tasks sent."""
        if job.status is not JobStatus.RUNNING or self.redis.exists(DISPATCH_PREFIX + job.id):
            return 0
        now = time.time()
        if any(self._live(item, now) for item in self.store.items(job.id, ACTIVE)):
            return 0  # a scene is running: its heartbeat marks the job as dispatched again
        if self.redis.llen(queue_for(self.studio.provider(job.provider))):
            return 0  # tasks are waiting (this job's or others'): the queue is not lost
        pending = len(self.store.items(job.id, [ItemStatus.PENDING]))
        if pending:
            log.warning("batch job %s: %d pending scenes had no task left in the broker (Redis lost its "
                        "queue?): sent again", job.id, pending)
            self.enqueue(job, pending)
        return pending

    def stop(self, job_id: str, *, cancel: bool = False, index: int | None = None) -> None:
        # The pause or cancel is already in the store (JobManager wrote it): workers stop claiming
        # scenes, and their heartbeat threads interrupt the cancelled ones. Settle now in case
        # nothing is in flight (then no worker will).
        self.settle(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running(job_id):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._closed.wait(0.1)  # the job's state is in a shared store: polled, as other processes do
        return True

    def running(self, job_id: str) -> bool:
        job = self.store.get(job_id, items=False)
        return (job is not None and job.runner == self.runner_id
                and runner_alive(job.runner, job.heartbeat_at, stale_after=self.stale_after))

    def shutdown(self, wait: float = 0.0) -> None:
        """Stop watching jobs here. Their scenes go on running on the workers (the job is the
        cluster's, not this process's); with no one left to refresh it, a job whose workers are all
        gone becomes interrupted after ``stale_after`` seconds."""
        self._closed.set()
        monitor = self._monitor
        if wait > 0 and monitor is not None and monitor is not threading.current_thread():
            monitor.join(wait)

    def live_requests(self, job_id: str) -> set[str]:
        now = time.time()
        return {item.request_id for item in self.store.items(job_id, ACTIVE) if self._live(item, now)}

    def _watch(self) -> None:
        """While this process lives, jobs it started stay alive (their tasks wait in the queue),
        orphaned scenes are recovered and a finished job is settled even if no worker does it."""
        while not self._closed.wait(self.poll_interval):
            with self._lock:
                watched = list(self._watched)
            for job_id in watched:
                try:
                    job = self.store.get(job_id, items=False)
                    if job is None or job.runner != self.runner_id:
                        with self._lock:
                            self._watched.discard(job_id)
                        continue
                    self.store.heartbeat([job_id], self.runner_id, time.time())
                    self._keep_cluster_id()
                    self.sweep(job)
                    self.resend_lost(job)
                    self.settle(job_id)
                except Exception:
                    log.exception("batch job %s: the Celery runner's watch failed this time", job_id)

    # -- one scene, on a worker -----------------------------------------------------------------

    def run_scene(self, job_id: str, holder: str, *, task_id: str | None = None, redelivered: bool = False) -> str:
        """Run the job's next pending scene (the body of the ``studio.run_scene`` task). Returns what
        happened: an ``Outcome`` status, or ``gone``, ``not running``, ``nothing to do``,
        ``done already``, ``in flight elsewhere``. Raises only when the store or Redis fails (the
        worker's task then tries again later, see ``unreachable``; its scene, if claimed, is
        recovered as a dead worker's)."""
        job = self.store.get(job_id, items=False)
        if job is None:
            return "gone"
        cluster_runner_id(self.redis, holder.removeprefix("celery:"))  # a Redis that lost the id: the holder's
        if self._unfinished_writes:
            self._finish_own_writes()  # an earlier scene here failed mid-save while the database was away
        if redelivered and task_id:
            earlier = self._earlier_attempt(job, task_id)
            if earlier is not None:
                self.settle(job_id, holder)
                return earlier
        self.sweep(job)
        gates = [self.gate(f"job:{job.id}", job.concurrency),
                 self.gate(job.provider, self.studio.settings.concurrency_limit(self.studio.provider(job.provider)))]
        taken = []
        try:
            for gate in gates:
                if not self._acquire(gate, job_id, holder):
                    self.settle(job_id, holder)
                    return "not running"
                taken.append(gate)
            item = self.store.claim(job_id, holder)
            if item is None:
                self.settle(job_id, holder)
                return "nothing to do"
            self._mark_dispatched(job_id)
            self.redis.set(LEASE_PREFIX + item.request_id, self.worker_name, ex=max(1, round(self.stale_after)))
            if task_id:
                self.redis.set(TASK_PREFIX + task_id, item.request_id, ex=TASK_MEMORY_SECONDS)
            outcome = self._run_claimed(job, holder, item, taken)
        finally:
            for gate in taken:
                gate.release()
        if outcome.status in ("retry", "failed"):
            # A scene that failed while saving (the database away a moment: a StorageError) may have
            # left files: what recovery can settle now (writes of processes gone) is settled now.
            self._finish_own_writes()
        provider_gate = gates[1]
        if outcome.status == "rate_limited":
            provider_gate.rate_limited(outcome.retry_after)
        elif outcome.status == "completed":
            provider_gate.succeeded()
        if outcome.status in ("rate_limited", "retry"):
            self.enqueue(job, 1, holder)  # the scene is pending again: one more task will run it
        elif outcome.status == "budget":
            # Spending more today is not allowed: pause instead of failing every remaining scene.
            self.store.update_job(job_id, status=JobStatus.PAUSED, error=outcome.message)
        if outcome.status in ("completed", "failed", "cancelled"):
            self._emit("job.progress", job_id, self.store.item(job_id, item.index) or item)
        self.sweep(job)
        self.settle(job_id, holder)
        return outcome.status

    def _acquire(self, gate, job_id: str, holder: str) -> bool:
        """Wait for a slot of ``gate``; False (no slot) once the job stops running or leaves ``holder``."""
        next_check = 0.0
        while True:
            taken, wait = gate.try_acquire()
            if taken:
                return True
            if time.monotonic() >= next_check:
                job = self.store.get(job_id, items=False)
                if job is None or job.status is not JobStatus.RUNNING or job.runner != holder:
                    return False
                next_check = time.monotonic() + self.poll_interval
            self._closed.wait(min(max(wait, 0.05), self.poll_interval))

    def _run_claimed(self, job: Job, holder: str, item: JobItem, gates: list) -> Any:
        cancel = threading.Event()
        done = threading.Event()
        tokens = [(gate, gate.token) for gate in gates]
        beat = threading.Thread(target=self._beat, args=(job.id, holder, item, tokens, cancel, done),
                                name=f"scene-{job.id}-{item.index}-heartbeat", daemon=True)
        beat.start()
        try:
            try:
                return execute_item(self.studio, self.store, job, item, cancel)
            finally:
                done.set()
                beat.join()
        except Exception as exc:
            if not unreachable(exc):
                raise
            return self._outlast_outage(job, item, exc)
        finally:
            self.redis.delete(LEASE_PREFIX + item.request_id)

    def _finish_own_writes(self) -> None:
        """Settle unfinished writes after a scene failed mid-save (``Storage.recover_interrupted``:
        those of processes that are gone; this live process's own are finished when it starts
        again). When the database is still away, the next scene task run here tries again (and the
        database's error is raised now: the task is retried)."""
        self._unfinished_writes = True
        self.studio.storage.recover_interrupted()
        self._unfinished_writes = False

    def _outlast_outage(self, job: Job, item: JobItem, error: Exception) -> Any:
        """The database or image store went away while ``item`` ran here: keep its lease (nobody else
        re-runs it meanwhile) until the database answers again, then settle it as recovery does
        (``recovery.settle_items``): the item completes with images saved under its request, or is
        pending again with a task sent for it. (Files this live process wrote but did not index are
        judged in flight by ``Storage.recover_interrupted`` and finished only when the worker starts
        again: still open, see tests/test_attack_issue13.py's PostgreSQL restart.) Raises ``error`` when the database is not back
        within the request timeout (the task is then retried; the item is recovered by a sweep)."""
        log.warning("batch job %s: scene %d lost the database or image store mid-run (%s); it is settled once "
                    "the database answers", job.id, item.index, type(error).__name__)
        deadline = time.monotonic() + max(self.stale_after, self.studio.settings.request_timeout)
        delay = self.poll_interval
        while True:
            try:
                self.redis.set(LEASE_PREFIX + item.request_id, self.worker_name, ex=max(1, round(self.stale_after)))
                report = self._recover(job, [item])
                current = self.store.item(job.id, item.index)
                if current is None or current.request_id != item.request_id or not current.status.active:
                    return Outcome("completed" if item.index in report.completed else "recovered")
            except Exception as exc:
                if not unreachable(exc):
                    raise
            if time.monotonic() >= deadline:
                raise error
            self._closed.wait(delay)  # the database (or the sweep lock) is not free yet: ask again later
            delay = min(2 * delay, 5.0)

    def _beat(self, job_id: str, holder: str, item: JobItem, tokens: list, cancel: threading.Event,
              done: threading.Event) -> None:
        """While a scene runs: keep its lease, its gate slots and the job's heartbeat fresh, and
        interrupt it when its cancel (or the whole job's) is in the store. A failing beat is logged
        and tried again next time."""
        while not done.wait(self.poll_interval):
            try:
                self.redis.set(LEASE_PREFIX + item.request_id, self.worker_name, ex=max(1, round(self.stale_after)))
                self._mark_dispatched(job_id)
                for gate, token in tokens:
                    if token is not None:
                        gate.refresh_token(token)
                self.store.heartbeat([job_id], holder, time.time())
                job = self.store.get(job_id, items=False)
                if job is None or job.status is JobStatus.CANCELLED or (item.index, item.request_id) in set(
                        self.store.cancel_requests(job_id)):
                    cancel.set()
            except Exception:
                log.exception("batch job %s: scene %d's heartbeat failed this time", job_id, item.index)

    # -- recovery -------------------------------------------------------------------------------

    def _live(self, item: JobItem, now: float) -> bool:
        """Is a worker on ``item``'s attempt? Its lease is there, or it was claimed a moment ago."""
        if _age_seconds(item.updated_at, now) < self.claim_grace:
            return True
        return bool(self.redis.exists(LEASE_PREFIX + item.request_id))

    def _earlier_attempt(self, job: Job, task_id: str) -> str | None:
        """A task delivered again: what became of the scene it had claimed. None when it had
        claimed none, or its scene was recovered to run again (the task then goes on as new)."""
        request_id = self.redis.get(TASK_PREFIX + task_id)
        if request_id is None:
            return None
        request_id = request_id.decode()
        item = next((i for i in self.store.items(job.id) if i.request_id == request_id), None)
        if item is None:
            return None  # the item moved on to a later attempt since: nothing of this one is left
        if item.status is ItemStatus.COMPLETED:
            return "done already"
        if not item.status.active:
            return None
        if self._live(item, time.time()):
            return "in flight elsewhere"
        report = self._recover(job, [item])
        return "done already" if report.completed else None

    def sweep(self, job: Job) -> RecoveryReport:
        """Recover the job's scenes whose worker is gone (active, no lease). One process at a time
        per job (a Redis lock), so two workers never recover the same scene."""
        now = time.time()
        orphans = [item for item in self.store.items(job.id, ACTIVE) if not self._live(item, now)]
        if not orphans:
            return RecoveryReport()
        return self._recover(job, orphans)

    def _recover(self, job: Job, items: list[JobItem]) -> RecoveryReport:
        lock = SWEEP_PREFIX + job.id
        if not self.redis.set(lock, self.worker_name, nx=True, ex=60):
            return RecoveryReport()  # another process is recovering this job right now
        try:
            current = self.store.get(job.id, items=False) or job
            report = settle_items(self.studio, self.store, current, items,
                                  rerun=current.status is not JobStatus.CANCELLED)
            if report.completed or report.requeued:
                log.warning("batch job %s: scenes %s of a lost worker were recovered (%s completed from saved "
                            "images, %s to run again)", job.id, sorted(report.completed + report.requeued),
                            len(report.completed), len(report.requeued))
            if report.requeued and current.status is JobStatus.RUNNING:
                self.enqueue(current, len(report.requeued), current.runner)
            for index in report.completed:
                self._emit("job.progress", job.id, self.store.item(job.id, index))
            return report
        finally:
            self.redis.delete(lock)

    # -- settling -------------------------------------------------------------------------------

    def settle(self, job_id: str, holder: str | None = None) -> None:
        """Let go of the job when no scene of it is left to run here: RUNNING with nothing pending or
        in flight becomes COMPLETED (or FAILED); PAUSED or CANCELLED with nothing in flight is
        released. Only the process whose release succeeds sends the event, so it is sent once.
        ``holder``: the runner id the job's tasks name (default this cluster's)."""
        holder = holder or self.runner_id
        job = self.store.get(job_id, items=False)
        if job is None or job.runner != holder:
            return
        active = sum(job.counts.get(s.value, 0) for s in ACTIVE)
        pending = job.counts.get(ItemStatus.PENDING.value, 0)
        fields: dict[str, Any] = {}
        event = None
        if job.status is JobStatus.RUNNING:
            if active or pending:
                return
            status = JobStatus.FAILED if job.counts.get(ItemStatus.FAILED.value) else JobStatus.COMPLETED
            fields.update(status=status, finished_at=now_iso())
            event = "job.failed" if status is JobStatus.FAILED else "job.completed"
        else:
            if active:
                return
            event = {JobStatus.PAUSED: "job.paused", JobStatus.CANCELLED: "job.cancelled"}.get(job.status)
        if self.store.release(job_id, holder, **fields) and event:
            self._emit(event, job_id, None)

    def _emit(self, event: str, job_id: str, item: JobItem | None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, job_id, item)
        except Exception:  # a notification must never break the job, but it is not hidden either
            log.exception("batch job %s: the %s notification failed", job_id, event)


# -- single generations -------------------------------------------------------------------------


def generate_on_worker(studio, request, *, request_id: str | None = None, timeout: float | None = None):
    """Run one ``GenerationRequest`` on a worker (``studio.generate`` task, on its provider's queue)
    and wait for it; returns the saved ``ImageRecord``s, read from the shared index. The request
    travels as JSON: image inputs must be server paths or URLs, not bytes (``InvalidRequest``).
    ``timeout`` (seconds) defaults to the studio's request timeout plus a minute; a worker's
    ``StudioError`` comes back as ``ProviderFailure`` naming it."""
    import dataclasses
    import json
    import secrets

    from studio.errors import InvalidRequest, ProviderFailure

    fields = {k: v for k, v in dataclasses.asdict(request).items()}
    fields["mode"] = getattr(fields.get("mode"), "value", fields.get("mode"))
    try:
        json.dumps(fields, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidRequest("a request run on a worker must be JSON: give input images as server paths or "
                             "URLs, not bytes") from None
    request_id = request_id or secrets.token_hex(8)
    provider = studio.provider(request.provider)
    app = make_app(studio.settings)
    result = app.send_task(GENERATE_TASK, args=[fields, request_id], queue=queue_for(provider))
    try:
        answer = result.get(timeout=timeout or studio.settings.request_timeout + 60, propagate=False)
    finally:
        result.forget()
    if result.failed():
        raise ProviderFailure(f"the worker could not run the request: {studio.redact(str(answer))}",
                              provider=provider.name)
    return [studio.storage.get(image_id) for image_id in answer["image_ids"]]

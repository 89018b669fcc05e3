"""Who runs the items: the ``Runner`` interface and the embedded default, worker threads.

``ThreadRunner`` runs each job with up to ``concurrency`` worker threads, and every provider behind
a shared ``ProviderGate``: at most ``Settings.concurrency_limit(provider)`` requests at once across all jobs
(several for cloud APIs, one for the local model on its device). A rate limit does not fail the
item: the item goes back to the queue and the gate makes every worker of that provider wait out
the backoff, with fewer requests in flight until calls succeed again.

A later runner (Celery workers over Redis) implements the same four methods: ``start`` enqueues
one task per pending item, each task calls ``execute_item`` below with a store both sides share,
``stop`` revokes, ``wait`` polls the store. Control travels through the store (job status,
``cancel_requested`` flags), so any process can pause or cancel a job that another one runs.
"""

from __future__ import annotations

import logging
import os
import socket
import secrets
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from providers.retry import DEFAULT_MAX_HOLD_SECONDS, Backoff, server_wait
from studio.errors import BudgetExceeded, Busy, Cancelled, InvalidRequest, RateLimited, StudioError
from studio.jobs.model import STAGE_STATUS, ItemStatus, Job, JobItem, JobStatus
from studio.jobs.store import JobStore, now_iso
from studio.options import merge_options
from studio.types import GenerationRequest, Mode, ProgressEvent
from studio.validation import clean_tags, server_tags

MAX_ATTEMPTS = 3  # tries for an item that failed with a retryable error (timeout, 5xx)
MAX_RATE_LIMITED_ATTEMPTS = 10  # a rate limit is not the item's fault: it may come back more often
HEARTBEAT_STALE_SECONDS = 15.0  # a runner silent for this long is presumed dead (Settings.job_stale_seconds)
DEFAULT_BACKOFF = 2.0
MAX_BACKOFF = 60.0  # our own backoff's cap; a server's Retry-After is waited in full

CACHED_NOTE = "reused stored images of an identical request (same prompt and seed): not paid again"

EventCallback = Callable[[str, str, "JobItem | None"], None]  # (event, job id, item)

log = logging.getLogger("studio.jobs")


def new_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def runner_alive(runner: str | None, heartbeat_at: float | None, now: float | None = None, *,
                 stale_after: float = HEARTBEAT_STALE_SECONDS) -> bool:
    """Is the runner that holds a job still there? Its heartbeat (``time.time()`` seconds) must be
    at most ``stale_after`` seconds old, and on this host its process must exist (so a killed
    worker is noticed at once, not after the stale period)."""
    if not runner or heartbeat_at is None:
        return False
    if (now or time.time()) - heartbeat_at > stale_after:
        return False
    host, _, rest = runner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held_elsewhere(job_id: str, holder: str | None) -> Busy:
    """The refusal when a live runner of another manager or process holds the job: ``Busy``, not
    bad input (the same command works once that runner stops; the CLI exits 1)."""
    return Busy(f"job {job_id} is running in another process ({holder}); "
                          "pause or cancel it there, or wait for it")


def heartbeat_timings(studio, stale_after: float | None, poll_interval: float | None) -> tuple[float, float]:
    """A runner's ``(stale_after, poll_interval)`` in seconds: ``stale_after`` (default: the studio's
    ``job_stale_seconds`` setting) must be positive, ``poll_interval`` (default: a fifth of it, at
    most 0.5 s) between 0 and ``stale_after``; ValueError otherwise."""
    settings = getattr(studio, "settings", None)
    stale = float(stale_after if stale_after is not None else
                  getattr(settings, "job_stale_seconds", HEARTBEAT_STALE_SECONDS))
    if stale <= 0:
        raise ValueError(f"stale_after must be positive, not {stale}")
    poll = poll_interval if poll_interval is not None else min(0.5, stale / 5)
    if not 0 < poll < stale:
        raise ValueError(f"poll_interval must be between 0 and stale_after ({stale} s)")
    return stale, poll


class Runner(ABC):
    """Runs the pending items of jobs kept in a ``JobStore``."""

    runner_id: str
    stale_after: float = HEARTBEAT_STALE_SECONDS  # seconds without a heartbeat before a holder is presumed dead

    store: JobStore

    def take(self, job_id: str) -> None:
        """Become the job's holder, atomically in the store (``JobStore.take``): raises
        ``Busy`` (``held_elsewhere``) while a live runner elsewhere holds it, and
        ``LookupError`` when there is no such job."""
        self._take(job_id)

    def _take(self, job_id: str) -> Job:
        """``take``, returning the job as read before taking it."""
        job = self.store.get(job_id, items=False)
        if job is None:
            raise LookupError(job_id)
        now = time.time()
        # A holder found dead here is named, so the store lets it go only if it is still that one:
        # whoever took the job since (after we read it) keeps it while its heartbeat is fresh.
        dead = job.runner if job.runner and not runner_alive(job.runner, job.heartbeat_at, now,
                                                              stale_after=self.stale_after) else None
        if not self.store.take(job_id, self.runner_id, now=now, stale_after=self.stale_after, dead=dead):
            holder = self.store.get(job_id, items=False)
            raise held_elsewhere(job_id, holder.runner if holder else job.runner)
        return job

    @abstractmethod
    def start(self, job_id: str) -> None:
        """Take the job (as ``take``; refused while a live runner elsewhere holds it) and run (or
        keep running) its pending items; returns at once."""

    @abstractmethod
    def stop(self, job_id: str, *, cancel: bool = False, index: int | None = None) -> None:
        """Stop taking new items of the job (pause); with ``cancel``, also interrupt items in flight
        (all of them, or just ``index``)."""

    @abstractmethod
    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        """Block until this runner has no more work on the job; False on timeout."""

    @abstractmethod
    def running(self, job_id: str) -> bool: ...

    def shutdown(self, wait: float = 0.0) -> None:
        """Stop every job without changing its status, so that a later ``resume`` continues it."""

    def live_requests(self, job_id: str) -> set[str]:
        """Request ids of the job's items in flight on a live worker elsewhere, which a resume must
        leave alone (the Celery runner's); a runner whose items all run in this process: none."""
        return set()


# -- one item ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # completed | failed | cancelled | retry | rate_limited | budget | lost
    retry_after: float | None = None
    message: str | None = None


# What a job's options and a scene's overrides may set on a scene's request.
REQUEST_FIELDS = ("negative_prompt", "width", "height", "n", "steps", "guidance", "quality", "output_format",
                  "compression", "category", "tags", "extra", "style", "postprocess")


# A job option of the job API (studio.jobapi): the job's one input image, as the http(s) URL it was
# given; Studio.prepare fetches it through the outbound guard (studio.netfetch) each time the item runs.
INPUT_IMAGE_URL_OPTION = "input_image_url"
# A job option: where the job's local model is, when it was given as a path (ModelInfo.location); the
# job's ``model`` is its shown name (studio.model_names), which alone may not find a path given freely.
MODEL_LOCATION_OPTION = "model_location"
# A job option only the scheduler sets (never a BatchOptions field): the reserved tags its scenes
# may carry, e.g. ["schedule:daily-blog"] (studio.validation.server_tags).
SERVER_TAGS_OPTION = "server_tags"


def job_server_tags(job: Job) -> list[str]:
    """The reserved tags the server gave ``job`` (``SERVER_TAGS_OPTION``), or []."""
    return [str(tag) for tag in job.options.get(SERVER_TAGS_OPTION) or []]


def build_request(job: Job, item: JobItem) -> GenerationRequest:
    """The request for one scene: the job's options, then the scene's own overrides. Only request
    fields are taken (a job's options also hold settings such as the webhook policy); a job with an
    input image URL (``INPUT_IMAGE_URL_OPTION``) is image-to-image from it."""
    options = {k: v for k, v in job.options.items() if k in REQUEST_FIELDS}
    scene = {k: v for k, v in item.overrides.items() if k in REQUEST_FIELDS}
    if "extra" in scene:  # a scene's provider options add to the job's, option by option
        scene["extra"] = merge_options(options.get("extra"), scene["extra"])
    options.update(scene)
    style = options.pop("style", job.style)
    tags = [*clean_tags(options.pop("tags", None)), f"job-{job.id}"]  # a "a, b" string is two tags
    source = job.options.get(INPUT_IMAGE_URL_OPTION)
    if source is not None:
        from studio.netfetch import is_url

        if not is_url(source):  # never a server path: only the job API sets it, always to a URL
            raise InvalidRequest("a job's input image must be an http(s) URL")
        options.update(mode=Mode.IMAGE_TO_IMAGE, init_image=source)
    model = job.options.get(MODEL_LOCATION_OPTION) or job.model
    return GenerationRequest(prompt=item.text, provider=job.provider, model=model, style=style, seed=item.seed,
                             user=job.owner, tags=tags, **options)


def execute_item(studio, store: JobStore, job: Job, item: JobItem, cancel: threading.Event) -> Outcome:
    """Generate one claimed item and record what happened. Never raises for a generation error."""
    rid = item.request_id
    last = {"status": item.status, "pct": 0.0, "at": time.monotonic()}

    def progress(event: ProgressEvent) -> None:
        status = STAGE_STATUS.get(event.stage, ItemStatus.GENERATING)
        pct = round(event.fraction * 100, 1)
        now = time.monotonic()
        # Every stage change is written; within a stage, at most every 5 points or once a second.
        if status != last["status"] or pct - last["pct"] >= 5 or now - last["at"] >= 1.0:
            last.update(status=status, pct=pct, at=now)
            store.set_stage(job.id, item.index, rid, status, pct)

    try:
        with server_tags(*job_server_tags(job)):  # a scheduled job's scenes carry its schedule: tag
            result = studio.generate(build_request(job, item), progress=progress, cancel=cancel, request_id=rid)
    except Cancelled as error:
        store.fail_item(job.id, item.index, rid, ItemStatus.CANCELLED, error.kind, error.message)
        return Outcome("cancelled")
    except RateLimited as error:
        if item.attempts >= MAX_RATE_LIMITED_ATTEMPTS:
            store.fail_item(job.id, item.index, rid, ItemStatus.FAILED, error.kind, error.message)
            return Outcome("failed", message=error.message)
        store.requeue_item(job.id, item.index, rid, f"rate limited, waiting: {error.message}")
        return Outcome("rate_limited", retry_after=error.retry_after, message=error.message)
    except BudgetExceeded as error:
        store.requeue_item(job.id, item.index, rid, error.message, count_attempt=False)
        return Outcome("budget", message=error.message)
    except StudioError as error:
        if error.retryable and item.attempts < MAX_ATTEMPTS:
            store.requeue_item(job.id, item.index, rid, f"attempt {item.attempts} failed: {error.message}")
            return Outcome("retry", message=error.message)
        store.fail_item(job.id, item.index, rid, ItemStatus.FAILED, error.kind, error.message)
        return Outcome("failed", message=error.message)
    except Exception as exc:  # a bug or a broken disk: the item fails, the job goes on
        message = studio.redact(f"{type(exc).__name__}: {exc}")
        store.fail_item(job.id, item.index, rid, ItemStatus.FAILED, "error", message)
        return Outcome("failed", message=message)
    warnings = list(result.warnings)
    if result.cached:
        warnings.append(CACHED_NOTE)
    saved = store.complete_item(job.id, item.index, rid, [r.id for r in result.images], result.cost, warnings)
    # not saved: the item was taken from us meanwhile (cancelled and reset); its images stay in history
    return Outcome("completed" if saved else "lost")


# -- the provider gate -------------------------------------------------------------------------


class Gate(ABC):
    """Who may send a request to one provider now. ``ProviderGate`` below holds its state in this
    process (the thread runner); ``studio.jobs.redis_gate.RedisGate`` holds it in Redis, shared by
    every Celery worker. A slot taken with ``acquire`` is given back with ``release`` by the same
    thread; ``rate_limited`` and ``succeeded`` report how a request went."""

    @abstractmethod
    def acquire(self, stop: threading.Event) -> bool:
        """Block until a slot is free and no backoff holds the provider; False if ``stop`` is set first."""

    @abstractmethod
    def release(self) -> None:
        """Give back the calling thread's slot; nothing happens when it holds none."""

    @abstractmethod
    def rate_limited(self, retry_after: float | None) -> None:
        """A request got a 429: hold every request to the provider ``retry_after`` seconds (or an
        exponential delay without one) and lower the limit."""

    @abstractmethod
    def succeeded(self) -> None:
        """A request went through: the next backoff starts short again, and after as many successes in
        a row as the limit the limit grows by one, up to the provider's own."""

    def refresh(self) -> None:
        """Keep this thread's slot while its request runs (a shared gate's slots expire; see RedisGate)."""


class ProviderGate(Gate):
    """At most ``limit`` requests at once to one provider, and a shared backoff after a rate limit:
    the limit halves (down to one), every worker waits ``retry_after`` (or an exponential delay),
    and the limit grows back by one after each run of successes. A wait is at most ``max_hold``
    seconds (``Settings.rate_limit_max_hold``): a Retry-After years ahead must not park the job."""

    def __init__(self, limit: int, max_hold: float = DEFAULT_MAX_HOLD_SECONDS):
        self.max_hold = max_hold
        self.max_limit = max(1, int(limit))
        self.limit = self.max_limit
        self.active = 0
        self.backoff_until = 0.0
        self._penalty = 0
        self._streak = 0
        self._cond = threading.Condition()

    def acquire(self, stop: threading.Event) -> bool:
        with self._cond:
            while True:
                if stop.is_set():
                    return False
                wait = self.backoff_until - time.monotonic()
                if wait <= 0 and self.active < self.limit:
                    self.active += 1
                    return True
                self._cond.wait(min(max(wait, 0.0), 0.2) if wait > 0 else 0.2)

    def release(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def rate_limited(self, retry_after: float | None) -> None:
        """A request was rate limited: every worker waits the server's ``retry_after`` in full (it
        knows when its window reopens; waiting less only earns more 429s), or without one an
        exponential delay capped at ``MAX_BACKOFF``."""
        with self._cond:
            self._penalty += 1
            delay = server_wait(retry_after, self.max_hold)  # None: no usable wait (negative, inf, NaN)
            if delay is None:
                delay = Backoff(DEFAULT_BACKOFF, MAX_BACKOFF).delay(self._penalty)
            self.backoff_until = max(self.backoff_until, time.monotonic() + delay)
            self.limit = max(1, self.limit // 2)
            self._streak = 0
            self._cond.notify_all()

    def succeeded(self) -> None:
        with self._cond:
            self._penalty = 0
            self._streak += 1
            if self.limit < self.max_limit and self._streak >= self.limit:
                self.limit += 1
                self._streak = 0
                self._cond.notify_all()


# -- the thread runner -------------------------------------------------------------------------


@dataclass
class _Run:
    job: Job
    wanted: int
    workers: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    cancels: dict[int, threading.Event] = field(default_factory=dict)  # in-flight items by index


class ThreadRunner(Runner):
    """Worker threads in this process, plus one monitor thread that refreshes the heartbeat of every
    job held here and applies pause/cancel requests that other processes wrote to the store.

    ``stale_after`` (seconds; default ``studio.settings.job_stale_seconds``) is how long a silent
    runner is trusted; the heartbeat is refreshed every ``poll_interval`` seconds (default: a fifth
    of it, at most 0.5), so a live runner is never taken for a dead one."""

    def __init__(self, studio, store: JobStore, *, on_event: EventCallback | None = None,
                 poll_interval: float | None = None, runner_id: str | None = None,
                 stale_after: float | None = None):
        self.studio = studio
        self.store = store
        self.on_event = on_event
        self.stale_after, self.poll_interval = heartbeat_timings(studio, stale_after, poll_interval)
        self.runner_id = runner_id or new_runner_id()
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._gates: dict[str, ProviderGate] = {}
        self._monitor: threading.Thread | None = None
        self._closed = threading.Event()

    # -- the interface ----------------------------------------------------------------------

    def start(self, job_id: str) -> None:
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("the runner is shut down")
            job = self._take(job_id)
            run = self._runs.get(job_id)
            if run is None:
                limit = self.studio.settings.concurrency_limit(self.studio.provider(job.provider))
                self._gates.setdefault(job.provider,
                                       ProviderGate(limit, max_hold=self.studio.settings.rate_limit_max_hold))
                run = _Run(job, wanted=max(1, min(job.concurrency, limit)))
                self._runs[job_id] = run
            run.stopping.clear()  # a resume while a pause is still winding down keeps the same run
            self.store.update_job(job_id, status=JobStatus.RUNNING, started_at=job.started_at or now_iso(),
                                  finished_at=None, error=None)
            while run.workers < run.wanted:
                run.workers += 1
                threading.Thread(target=self._worker, args=(run,), name=f"job-{job_id}-worker",
                                 daemon=True).start()
            self._ensure_monitor()

    def stop(self, job_id: str, *, cancel: bool = False, index: int | None = None) -> None:
        with self._lock:
            run = self._runs.get(job_id)
            if run is None:
                return
            if index is None:
                run.stopping.set()
            if cancel:
                for item_index, event in run.cancels.items():
                    if index is None or item_index == index:
                        event.set()

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        with self._lock:
            run = self._runs.get(job_id)
        return True if run is None else run.done.wait(timeout)

    def running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._runs

    def shutdown(self, wait: float = 0.0) -> None:
        with self._lock:
            self._closed.set()
            runs = list(self._runs.values())
            for run in runs:
                run.stopping.set()
        deadline = time.monotonic() + wait
        for run in runs:
            run.done.wait(max(0.0, deadline - time.monotonic()))

    # -- the workers ------------------------------------------------------------------------

    def _worker(self, run: _Run) -> None:
        gate = self._gates[run.job.provider]
        try:
            while True:
                item = None
                if not run.stopping.is_set() and gate.acquire(run.stopping):
                    try:
                        # Only while the job is RUNNING and still ours: a pause, cancel or takeover
                        # written by any process stops new items at once.
                        item = self.store.claim(run.job.id, self.runner_id)
                        if item is not None:
                            self._run_item(run, item, gate)
                    finally:
                        gate.release()
                    if item is not None:
                        continue
                    self._apply_control(run)  # nothing claimed: find out whether the job is still ours
                with self._lock:
                    if not run.stopping.is_set() and self.store.has_pending(run.job.id):
                        continue  # items came back (retry, rate limit) while we looked
                    run.workers -= 1
                    if run.workers:
                        return
                    self._finish(run)
                    return
        except Exception as exc:  # the store itself failed: stop this job, leave it resumable
            log.exception("batch job %s: a worker stopped on an unexpected error", run.job.id)
            with self._lock:
                run.workers -= 1
                run.stopping.set()
                try:
                    self.store.update_job(run.job.id, error=f"the job stopped: {type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("batch job %s: could not record why it stopped", run.job.id)
                if not run.workers:
                    self._finish(run)

    def _run_item(self, run: _Run, item: JobItem, gate: ProviderGate) -> None:
        job = run.job  # what a request is built from never changes after the job is created
        cancel = threading.Event()
        with self._lock:
            run.cancels[item.index] = cancel
        try:
            outcome = execute_item(self.studio, self.store, job, item, cancel)
        finally:
            with self._lock:
                run.cancels.pop(item.index, None)
        if outcome.status == "rate_limited":
            gate.rate_limited(outcome.retry_after)
        elif outcome.status == "completed":
            gate.succeeded()
        elif outcome.status == "budget":
            # Spending more today is not allowed: pause instead of failing every remaining scene.
            self.store.update_job(run.job.id, status=JobStatus.PAUSED, error=outcome.message)
            run.stopping.set()
        if outcome.status in ("completed", "failed", "cancelled"):
            self._emit("job.progress", run.job.id, self.store.item(run.job.id, item.index) or item)

    def _finish(self, run: _Run) -> None:
        """The last worker of a run is leaving (called with the lock held): settle the job's status
        and let go of it, so that any process may resume it at once."""
        self._runs.pop(run.job.id, None)
        event = None
        try:
            job = self.store.get(run.job.id, items=False)
            if job is not None:
                open_items = sum(job.counts.get(s.value, 0) for s in ItemStatus if not s.terminal)
                fields: dict = {}
                if job.status is JobStatus.RUNNING and not open_items:
                    status = JobStatus.FAILED if job.counts.get(ItemStatus.FAILED.value) else JobStatus.COMPLETED
                    fields.update(status=status, finished_at=now_iso())
                    event = "job.failed" if status is JobStatus.FAILED else "job.completed"
                elif job.status is JobStatus.CANCELLED:
                    event = "job.cancelled"
                elif job.status is JobStatus.PAUSED:
                    event = "job.paused"
                # (still RUNNING with work left: the runner was shut down; the job stays resumable)
                if not self.store.release(run.job.id, self.runner_id, **fields):
                    # Taken over meanwhile (we were presumed dead): the new holder settles it.
                    log.warning("batch job %s: taken over by %s; leaving it to that runner", run.job.id,
                                job.runner)
                    event = None
        except Exception:  # the store is unreachable: the stale heartbeat will free the job later
            log.exception("batch job %s: could not settle its status when its workers stopped", run.job.id)
            event = None
        finally:
            run.done.set()
        if event:
            self._emit(event, run.job.id, None)

    def _emit(self, event: str, job_id: str, item: JobItem | None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, job_id, item)
        except Exception:  # a notification must never break the job, but it is not hidden either
            log.exception("batch job %s: the %s notification failed", job_id, event)

    # -- the monitor: heartbeat, and control from other processes ---------------------------

    def _ensure_monitor(self) -> None:
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, name="jobs-monitor", daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        """Every ``poll_interval``: refresh the heartbeat of the jobs held here (so no other process
        takes a live job over), then apply pause and cancel requests from any process. A failing
        tick is logged and the next one tries again; the loop itself never stops before shutdown."""
        while not self._closed.wait(self.poll_interval):
            with self._lock:
                runs = list(self._runs.values())
            if not runs:
                continue
            try:
                self.store.heartbeat([run.job.id for run in runs], self.runner_id, time.time())
            except Exception:
                log.exception("batch runner %s: could not refresh the heartbeat", self.runner_id)
            for run in runs:
                try:
                    self._apply_control(run)
                except Exception:
                    log.exception("batch job %s: could not read its pause/cancel requests", run.job.id)

    def _apply_control(self, run: _Run) -> None:
        """Stop taking items when the stored job is no longer RUNNING here (paused, cancelled or
        taken over, by this process or another), and interrupt items whose cancel was asked for."""
        with self._lock:  # so that a resume (``start``) in between is never undone by a stale read
            job = self.store.get(run.job.id, items=False)
            if job is None or job.runner != self.runner_id or job.status is not JobStatus.RUNNING:
                if not run.stopping.is_set():
                    log.info("batch job %s: stopping here (%s)", run.job.id,
                             "deleted" if job is None else f"{job.status.value.lower()}, held by {job.runner}")
                run.stopping.set()
            cancel_all = job is None or job.status is JobStatus.CANCELLED
            flagged = {index for index, _rid in self.store.cancel_requests(run.job.id)}
            for index, event in run.cancels.items():
                if cancel_all or index in flagged:
                    event.set()

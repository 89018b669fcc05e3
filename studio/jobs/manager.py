"""The batch service: preview a script, turn it into a job, run, watch, control and export it.

``JobManager`` ties a ``Studio`` to a ``JobStore`` (where jobs live), a ``Runner`` (who runs the
items) and a ``WebhookDispatcher``. Front ends (CLI, library, Streamlit page) only talk to it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field, fields as dataclass_fields
from typing import Any

from studio import costs
from studio.application.frontends import random_base_seed  # the one rule for a batch's random base
from studio.errors import BudgetExceeded, InvalidRequest, NotConfigured, NotFound, StudioError
from studio.estimates import BudgetToday
from studio.jobs.export import enriched_script, item_records, job_zip
from studio.jobs.model import SEED_POLICIES, ItemStatus, Job, JobItem, JobStatus
from studio.jobs.recovery import reconcile
from studio.jobs.runner import (MODEL_LOCATION_OPTION, REQUEST_FIELDS, Runner, ThreadRunner, build_request,
                                held_elsewhere, runner_alive)
from studio.jobs.store import JobStore, SQLiteJobStore, now_iso
from studio.scripts import Script, parse_script
from studio.validation import nth_seed
from studio.webhooks import (JOB_API_OPTION, JOB_SECRET_OPTION, DeliveryResult, WebhookDispatcher, check_url,
                             new_secret)

# The request fields a batch sets once for every scene (a scene's overrides may change some).
JOB_REQUEST_FIELDS = tuple(f for f in REQUEST_FIELDS if f != "style")  # the style is a column of its own
# A job option: the job was started with its provider's API key pasted for one browser session
# (Settings.session_keys, never stored). Only a studio holding such a key again may run it.
SESSION_KEY_OPTION = "session_key"
NEEDS_KEY_NOTE = ("needs your key again: this job was started with an API key pasted for a browser session, "
                  "which the studio never stores; paste the key again and resume the job")
log = logging.getLogger("studio.jobs")


@dataclass
class BatchOptions:
    provider: str | None = None
    model: str | None = None
    style: str | None = None
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    n: int = 1
    steps: int | None = None
    guidance: float | None = None
    quality: str | None = None
    output_format: str = "png"
    compression: int = 95
    category: str = ""
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)  # as GenerationRequest.postprocess
    seed_policy: str = "per-scene"  # per-scene: seed, seed+1, ...; fixed: one seed for every scene
    seed: int | None = None  # the base seed; random when not given
    concurrency: int | None = None  # at most the provider's limit; default: that limit
    webhook: str | None = None
    webhook_public_only: bool = False  # shared deployments: only public webhook addresses
    user: str = "local"
    name: str = ""  # the script's file name
    format: str | None = None  # the script's format; by default from the name, then the content

    @classmethod
    def of(cls, options: "BatchOptions | None" = None, **overrides: Any) -> "BatchOptions":
        known = {f.name for f in dataclass_fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise InvalidRequest(f"unknown batch option(s): {', '.join(sorted(unknown))}")
        base = options or cls()
        values = {name: getattr(base, name) for name in known}
        values.update({k: v for k, v in overrides.items() if v is not None})  # None: keep the default
        return cls(**values)


@dataclass
class BatchPreview:
    """What a batch will do, before anything runs: its scenes, prompts, seeds and costs."""

    job: Job
    items: list[JobItem]
    errors: list[str]  # scenes that cannot run, each naming its line
    warnings: list[str]
    provider_ready: bool
    provider_reason: str
    daily_budget: float | None
    spent_today: float
    script: Script

    @property
    def estimated_total(self) -> float:
        return round(sum(item.estimated_cost for item in self.items), 6)

    @property
    def budget_remaining(self) -> float | None:
        """USD left of today's budget, never below 0 (``BudgetToday.left``, the rule every front end
        shows); None without a budget."""
        left = BudgetToday(self.spent_today, self.daily_budget).left
        return None if left is None else round(left, 6)

    @property
    def within_budget(self) -> bool:
        remaining = self.budget_remaining
        return remaining is None or self.estimated_total <= remaining + 1e-9

    def rows(self) -> list[dict[str, Any]]:
        """One row per scene, for a preview table."""
        return [{"scene": item.index + 1, "timestamp": item.timestamp or "", "text": item.text, "prompt": item.prompt,
                 "seed": item.seed, "estimated_cost": round(item.estimated_cost, 4), "line": item.line}
                for item in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.job.provider, "model": self.job.model, "style": self.job.style,
                "seed_policy": self.job.seed_policy, "base_seed": self.job.base_seed,
                "concurrency": self.job.concurrency, "scenes": self.rows(), "estimated_total": self.estimated_total,
                "daily_budget": self.daily_budget, "spent_today": round(self.spent_today, 6),
                "budget_remaining": self.budget_remaining, "within_budget": self.within_budget,
                "provider_ready": self.provider_ready, "provider_reason": self.provider_reason,
                "errors": self.errors, "warnings": self.warnings, "format": self.script.format}


def _check_storable(extra: dict[str, Any] | None) -> None:
    """A job is stored as JSON and resumed from it: provider options that JSON cannot hold (image
    bytes for a reference image) would come back as their repr. Raises InvalidRequest for those."""
    try:
        json.dumps(extra or {}, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidRequest("a batch's provider options must be text, numbers, true/false or lists of "
                             "them (image options as file paths): the job is stored and resumed from them") from None


class JobManager:
    def __init__(self, studio, store: JobStore | None = None, runner: Runner | None = None,
                 webhooks: WebhookDispatcher | None = None):
        self.studio = studio
        self.store = store or SQLiteJobStore(studio.storage.index)
        self.webhooks = webhooks or WebhookDispatcher(lambda: studio.settings.secret("STUDIO_WEBHOOK_SECRET"))
        if self.webhooks.on_result is None:
            self.webhooks.on_result = self._webhook_result
        self.runner = runner or self._default_runner()
        self._lock = threading.Lock()

    def _default_runner(self) -> Runner:
        """Celery workers when the studio has a broker (``STUDIO_BROKER_URL``), else threads here."""
        if self.studio.settings.broker_url:
            from studio.jobs.celery_runner import CeleryRunner  # Celery and Redis load only when used

            return CeleryRunner(self.studio, self.store, on_event=self._on_event)
        return ThreadRunner(self.studio, self.store, on_event=self._on_event)

    # -- before running -----------------------------------------------------------------------

    def preview(self, script: Any, options: BatchOptions | None = None, **overrides: Any) -> BatchPreview:
        """Parse the script and prepare every scene (style, seed, cost) without running anything."""
        opts = BatchOptions.of(options, **overrides)
        parsed = script if isinstance(script, Script) else parse_script(script, name=opts.name, format=opts.format)
        if opts.seed_policy not in SEED_POLICIES:
            raise InvalidRequest(f"seed policy must be {' or '.join(SEED_POLICIES)}, not {opts.seed_policy!r}")
        if opts.webhook:
            check_url(opts.webhook, public_only=opts.webhook_public_only)
        _check_storable(opts.extra)
        provider = self.studio.provider(opts.provider)
        model = provider.model(opts.model, opts.user)
        status = provider.status()
        limit = self.studio.settings.concurrency_limit(provider)  # a setting (provider_concurrency)
        if opts.concurrency is not None and int(opts.concurrency) < 1:
            raise InvalidRequest("concurrency must be at least 1")
        # Scene seeds wrap in the provider's own range (validation.nth_seed), as a request's images do.
        base_seed = opts.seed if opts.seed is not None else random_base_seed(provider.seed_space)
        if not 0 <= int(base_seed) < provider.seed_space:
            raise InvalidRequest(f"seed must be 0-{provider.seed_space - 1} for {provider.name}, not {base_seed}")
        job = Job(id=secrets.token_hex(6), owner=opts.user, status=JobStatus.PENDING, provider=provider.name,
                  model=model.id, style=opts.style, seed_policy=opts.seed_policy, base_seed=int(base_seed),
                  concurrency=min(int(opts.concurrency or limit), limit),
                  options={name: getattr(opts, name) for name in JOB_REQUEST_FIELDS},
                  webhook_url=opts.webhook or None, script_name=parsed.name or opts.name,
                  script_format=parsed.format, total=len(parsed.scenes))
        if model.location:  # a local model given as a path: the job shows its name, runs from the path
            job.options[MODEL_LOCATION_OPTION] = model.location
        if opts.webhook_public_only:
            job.options["webhook_public_only"] = True
        if self._has_session_key(provider):
            job.options[SESSION_KEY_OPTION] = True
        if opts.webhook and (opts.webhook_public_only or not self.studio.settings.secret("STUDIO_WEBHOOK_SECRET")):
            # No unsigned webhooks. Visitors of a shared server cannot know (and must not share)
            # the operator's secret, so such a job gets its own; the front end shows it once.
            job.options[JOB_SECRET_OPTION] = new_secret()
        items, errors, warnings = [], [], []
        if opts.concurrency is not None and int(opts.concurrency) > limit:
            warnings.append(f"{int(opts.concurrency)} scenes at once asked; {provider.name} runs at most {limit} "
                            f"requests at once, so {limit} run at a time (STUDIO_PROVIDER_CONCURRENCY="
                            f"{provider.name}=N raises the limit)")
        for scene in parsed.scenes:
            if "seed" in scene.overrides:
                seed = scene.overrides["seed"]
            elif opts.seed_policy == "fixed":
                seed = job.base_seed
            else:
                seed = nth_seed(job.base_seed, scene.index, provider.seed_space)
            item = JobItem(job_id=job.id, index=scene.index, text=scene.text, timestamp=scene.timestamp,
                           start=scene.start, end=scene.end, line=scene.line, overrides=dict(scene.overrides),
                           seed=seed)
            try:
                prepared_all = self.studio.prepare(build_request(job, item))
            except StudioError as error:
                errors.append(f"line {scene.line}: {error.message}")
                items.append(item)
                continue
            prepared = prepared_all.request
            item.prompt, item.negative_prompt = prepared.prompt, prepared.negative_prompt
            # Input included (prompt and input-image tokens), as the single-request estimate.
            item.estimated_cost = costs.quote(prepared, timeout=self.studio.settings.request_timeout).estimate
            warnings += [w for w in prepared_all.warnings if w not in warnings]
            items.append(item)
        job.estimated_cost = round(sum(i.estimated_cost for i in items), 6)
        budget = self.studio.settings.daily_budget
        return BatchPreview(job, items, errors, warnings, status.ready, status.reason, budget,
                            self.studio.spent_today() if budget is not None else 0.0, parsed)

    def create(self, script: Any, options: BatchOptions | None = None, **overrides: Any) -> Job:
        """Store a job for the script without starting it. Nothing is stored when any scene is
        invalid, the provider is not set up, or the estimate exceeds today's budget."""
        preview = script if isinstance(script, BatchPreview) else self.preview(script, options, **overrides)
        if self.store.get(preview.job.id, items=False) is not None:
            raise InvalidRequest(f"this preview was already started as job {preview.job.id}; preview again")
        if preview.daily_budget is not None:  # a preview may be a while old: check today's spend now
            preview.spent_today = self.studio.spent_today()
        if preview.errors:
            more = f" (and {len(preview.errors) - 1} more)" if len(preview.errors) > 1 else ""
            raise InvalidRequest(f"{preview.errors[0]}{more}; nothing was started")
        if not preview.provider_ready:
            raise NotConfigured(f"{preview.job.provider} is not ready: {preview.provider_reason}",
                                provider=preview.job.provider)
        if not preview.within_budget:
            raise BudgetExceeded(
                f"this batch is estimated at ${preview.estimated_total:.4f} but only "
                f"${preview.budget_remaining:.4f} of today's ${preview.daily_budget:.2f} budget is left")
        self.store.create(preview.job, preview.items)
        return self.get(preview.job.id, preview.job.owner)

    def submit(self, script: Any, options: BatchOptions | None = None, **overrides: Any) -> Job:
        """Create the job and start running it in the background; returns at once."""
        job = self.create(script, options, **overrides)
        self.runner.start(job.id)
        return self.get(job.id, job.owner)

    # -- watching -----------------------------------------------------------------------------

    def get(self, job_id: str, user: str = "local", *, items: bool = True) -> Job:
        job = self.store.get(str(job_id).strip(), items=items)
        if job is None or job.owner != user:
            raise NotFound(f"no job with id {job_id!r}")
        self._mark_interrupted(job)
        return job

    def list(self, user: str = "local", limit: int = 50) -> list[Job]:
        jobs = self.store.list(user, limit=limit)
        for job in jobs:
            self._mark_interrupted(job)
        return jobs

    def _mark_interrupted(self, job: Job) -> None:
        job.interrupted = (job.status is JobStatus.RUNNING and not self.runner.running(job.id)
                           and not self._holder_alive(job))

    def _holder_alive(self, job: Job) -> bool:
        """Is the runner the store names for ``job`` alive (fresh heartbeat, process there)?"""
        return runner_alive(job.runner, job.heartbeat_at, stale_after=self.runner.stale_after)

    def _has_session_key(self, provider) -> bool:
        """Does this manager's studio hold a session key (pasted, not the operator's) for ``provider``?"""
        keys = self.studio.settings.session_keys
        return any(keys.get(name) for name in getattr(provider, "key_names", ()))

    def _lacks_its_session_key(self, job: Job) -> bool:
        """Was ``job`` started with a session key that this manager's studio does not hold? It must
        then not run here: it would be paid with the operator's key."""
        return bool(job.options.get(SESSION_KEY_OPTION)) and not self._has_session_key(
            self.studio.provider(job.provider))

    def _refuse_if_held_elsewhere(self, job: Job) -> None:
        """A job a live runner of another manager or process holds is never run here too."""
        if job.runner and job.runner != self.runner.runner_id and self._holder_alive(job):
            raise held_elsewhere(job.id, job.runner)

    def wait(self, job_id: str, user: str = "local", timeout: float | None = None) -> Job:
        """Block until the job stops running (finished, paused, or interrupted); returns it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.runner.running(job_id):
                self.runner.wait(job_id, min(remaining, 0.5) if remaining is not None else 0.5)
            job = self.get(job_id, user, items=False)
            settled = job.status is not JobStatus.RUNNING or job.interrupted
            if (settled and not self.runner.running(job_id)) or (remaining is not None and remaining <= 0):
                return self.get(job_id, user)
            if not self.runner.running(job_id):
                time.sleep(0.2)  # another process runs it: watch the store

    def result(self, job_id: str, user: str = "local", *, public: bool = False) -> dict[str, Any]:
        """The job as the CLI's ``--json`` prints it: job id, status, and each item with its images
        (``ImageRecord.summary``: server paths, for the CLI and library on the server itself). With
        ``public``, the form that leaves the server (API answers): each image's file name instead
        (``ImageRecord.public_summary``)."""
        job = self.get(job_id, user)
        records = item_records(self.studio, job.items or [])
        return {"job_id": job.id, "status": job.status.value, "progress": round(job.progress, 1),
                "counts": job.counts, "total": job.total, "cost": round(job.cost, 6),
                "estimated_cost": round(job.estimated_cost, 6), "provider": job.provider, "model": job.model,
                "error": job.error, "warnings": job.warnings, "interrupted": job.interrupted,
                "items": [_item_summary(item, records, public=public) for item in job.items or []]}

    def export_zip(self, job_id: str, user: str = "local") -> bytes:
        return job_zip(self.studio, self.get(job_id, user))

    def enriched_script(self, job_id: str, user: str = "local", *, with_paths: bool = False) -> dict[str, Any]:
        return enriched_script(self.studio, self.get(job_id, user), with_paths=with_paths)

    # -- control ------------------------------------------------------------------------------

    def start(self, job_id: str, user: str = "local") -> Job:
        return self.resume(job_id, user)

    def pause(self, job_id: str, user: str = "local") -> Job:
        job = self.get(job_id, user, items=False)
        if job.status not in (JobStatus.RUNNING, JobStatus.PENDING):
            raise InvalidRequest(f"job {job.id} is {job.status.value.lower()}; only a running job can be paused")
        self.store.update_job(job.id, status=JobStatus.PAUSED)
        if self.runner.running(job.id):
            self.runner.stop(job.id)  # items in flight finish; the runner reports job.paused
        elif not self._holder_alive(job):
            self._on_event("job.paused", job.id, None)
        return self.get(job.id, user)

    def resume(self, job_id: str, user: str = "local") -> Job:
        """Continue a paused, pending or interrupted job here. Items an interrupted run left half
        done are settled first: if their images were saved they complete (not generated again),
        otherwise they run again."""
        with self._lock:
            job = self.get(job_id, user, items=False)
            if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED) or (
                    job.status is JobStatus.FAILED and not self.store.has_pending(job.id)):
                return self.get(job.id, user)
            if self.runner.running(job.id):
                self.runner.start(job.id)
                return self.get(job.id, user)
            if self._lacks_its_session_key(job):
                raise NotConfigured(f"job {job.id} {NEEDS_KEY_NOTE}", provider=job.provider, needs_key=True)
            self._refuse_if_held_elsewhere(job)
            self.runner.take(job.id)  # atomic: whoever took it since we read it keeps it
            # (scenes a live Celery worker still runs are its own, not interrupted)
            reconcile(self.studio, self.store, job, live=self.runner.live_requests(job.id))
            self.runner.start(job.id)
        return self.get(job.id, user)

    def _pause_for_its_key(self, job: Job) -> None:
        """A job whose runner died, started with a session key this studio lacks: settle what its
        runner left in flight (as ``resume`` does) and pause it, saying it needs the key again."""
        with self._lock:
            self._refuse_if_held_elsewhere(job)
            self.runner.take(job.id)
            reconcile(self.studio, self.store, job)
            if not self.store.release(job.id, self.runner.runner_id, status=JobStatus.PAUSED, error=NEEDS_KEY_NOTE):
                return  # taken over meanwhile: its new holder decides
        self._on_event("job.paused", job.id, None)

    def recover(self) -> list[str]:
        """Resume every job whose runner died (call once when the studio starts). A job started with
        a key pasted for a browser session is paused instead, until its visitor resumes it with the key
        again (``NEEDS_KEY_NOTE``): it is never run on the operator's key."""
        resumed = []
        for job in self.store.list(None, limit=10_000, statuses=[JobStatus.RUNNING]):
            if not self.runner.running(job.id) and not self._holder_alive(job):
                try:
                    if self._lacks_its_session_key(job):
                        self._pause_for_its_key(job)
                        continue
                    self.resume(job.id, job.owner)
                    resumed.append(job.id)
                except StudioError as error:  # another process got there first
                    log.info("batch job %s: not recovered here: %s", job.id, error.message)
        return resumed

    def cancel(self, job_id: str, user: str = "local", index: int | None = None) -> Job:
        """Cancel the whole job, or one item (``index``, 0-based). Items in flight are interrupted."""
        job = self.get(job_id, user, items=False)
        if index is not None and not 0 <= int(index) < job.total:
            raise InvalidRequest(f"job {job.id} has items 0-{job.total - 1}, not {index}")
        if index is None and job.status.finished:
            return self.get(job.id, user)
        self.store.cancel(job.id, index)
        if index is not None:
            self.runner.stop(job.id, cancel=True, index=index)
            return self.get(job.id, user)
        self.store.update_job(job.id, status=JobStatus.CANCELLED, finished_at=now_iso())
        if self.runner.running(job.id):
            self.runner.stop(job.id, cancel=True)  # the runner reports job.cancelled when its workers stop
        elif not self._holder_alive(job):
            # Its process is gone: no one else will settle what it had in flight (saved: kept).
            reconcile(self.studio, self.store, job, rerun=False)
            self._on_event("job.cancelled", job.id, None)
        return self.get(job.id, user)

    def retry(self, job_id: str, user: str = "local", indexes: list[int] | None = None,
              include_cancelled: bool = False) -> Job:
        """Run failed items (and cancelled ones, if asked) again."""
        job = self.get(job_id, user, items=False)
        if not self.runner.running(job.id):
            self._refuse_if_held_elsewhere(job)  # before anything changes
        statuses = [ItemStatus.FAILED] + ([ItemStatus.CANCELLED] if include_cancelled else [])
        if self.store.reset(job.id, statuses, indexes) == 0:
            raise InvalidRequest(f"job {job.id} has no {' or '.join(s.value.lower() for s in statuses)} items to retry")
        if job.status in (JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.PAUSED):
            self.store.update_job(job.id, status=JobStatus.PENDING, finished_at=None)
        return self.resume(job.id, user)

    def close(self, wait: float = 5.0) -> None:
        """Stop running jobs (they stay resumable) and deliver queued webhooks for a moment."""
        self.runner.shutdown(wait)
        self.webhooks.flush(timeout=min(wait, 2.0))
        self.webhooks.close()

    # -- notifications ------------------------------------------------------------------------

    def _on_event(self, event: str, job_id: str, item: JobItem | None) -> None:
        job = self.store.get(job_id, items=event != "job.progress")
        if job is None or not job.webhook_url:
            return
        if job.options.get(JOB_API_OPTION):  # a job of document 3's API: that document's webhook body
            from studio.jobapi import notify

            notify(self, job, event, item)
            return
        payload: dict[str, Any] = {
            "job_id": job.id, "status": job.status.value, "progress": round(job.progress, 1), "counts": job.counts,
            "total": job.total, "cost": round(job.cost, 6),
            "metadata": {"provider": job.provider, "model": job.model, "style": job.style,
                         "seed_policy": job.seed_policy, "base_seed": job.base_seed, "script": job.script_name,
                         "format": job.script_format, "created_at": job.created_at,
                         "finished_at": job.finished_at, "error": job.error, "warnings": job.warnings}}
        items = [item] if item is not None else (job.items or [])
        records = item_records(self.studio, items)
        summaries = [_item_summary(i, records, public=True) for i in items]  # to a remote receiver
        if item is not None:
            payload["item"] = summaries[0]
            payload["images"] = summaries[0]["images"]
        else:
            payload["items"] = summaries
            payload["images"] = [image for summary in summaries for image in summary["images"]]
        self.webhooks.send(job.webhook_url, event, payload, job_id=job.id,
                           public_only=bool(job.options.get("webhook_public_only")),
                           secret=job.options.get(JOB_SECRET_OPTION))

    def _webhook_result(self, result: DeliveryResult) -> None:
        if result.job_id:
            try:
                self.store.note_webhook(result.job_id, result.ok, None if result.ok else
                                        f"{result.event}: {result.error} after {result.attempts} attempt(s)")
            except Exception:  # the delivery itself is done; only its note on the job is missing
                log.exception("batch job %s: could not record a webhook delivery", result.job_id)


def _item_summary(item: JobItem, records: dict, *, public: bool) -> dict[str, Any]:
    """One item and its images; ``public``: as it may leave the server (no server paths)."""
    images = []
    for image_id in item.image_ids:
        record = records.get(image_id)
        if record is not None:
            images.append(record.public_summary() if public else record.summary())
    return {"index": item.index, "timestamp": item.timestamp, "start": item.start, "text": item.text,
            "prompt": item.prompt, "status": item.status.value, "progress": round(item.progress, 1),
            "attempts": item.attempts, "error": item.error, "warnings": item.warnings, "cost": round(item.cost, 6),
            "images": images}


_managers_lock = threading.Lock()


def get_manager(studio) -> JobManager:
    """The one ``JobManager`` of a ``Studio`` (so every page and call shares its worker threads).
    It is kept on the studio object itself, so it lives and goes with that studio (a studio made
    for one browser session's pasted keys takes its manager with it)."""
    with _managers_lock:
        manager = studio.__dict__.get("_job_manager")
        if manager is None:
            manager = studio.__dict__["_job_manager"] = JobManager(studio)
        return manager

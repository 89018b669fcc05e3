"""Batch actions: preview, run and watch a job made from a script, its images, and the batch's random
base seed. Part of ``studio.application.Application``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from studio.application.forms import BATCH_OPTION_NAMES, coerce_fields, is_blank
from studio.application.frontends import random_base_seed
from studio.errors import InvalidRequest
from studio.types import ImageRecord

if TYPE_CHECKING:
    from studio.service import Studio

BATCH_WATCH_SECONDS = 0.25  # how often a watched batch's progress is redrawn while it runs


class BatchActions:
    """The batch half of ``Application`` (which sets ``studio`` and ``model``)."""

    studio: "Studio"

    @property
    def jobs(self):
        """The studio's ``JobManager`` (``studio.jobs.get_manager``: one per studio)."""
        from studio.jobs import get_manager  # the batch core is only loaded when a batch is used

        return get_manager(self.studio)

    def batch_options(self, values: Mapping[str, Any] | None, *, provider: str | None = None) -> dict[str, Any]:
        """A batch form's values as ``BatchOptions`` fields (``forms.BATCH_OPTION_NAMES``), by the one
        coercion; a ``"W:H"`` size needs ``provider``'s default (or named) model."""
        values = dict(values or {})
        model_id = values.pop("model", None)
        wants_ratio = any(":" in str(values.get(name) or "") for name in ("size", "ratio"))
        model = self.model(provider, model_id) if wants_ratio else None
        fields = coerce_fields(values, allowed=BATCH_OPTION_NAMES, model=model)
        if not is_blank(model_id):
            fields["model"] = str(model_id).strip()
        return fields

    def base_seed(self, provider: str | None) -> int:
        """A random base seed for a batch on ``provider`` (``frontends.random_base_seed`` in its range)."""
        return random_base_seed(self.studio.provider(provider or None).seed_space)

    def preview_batch(self, owner: str, script: str | bytes, *, public_webhooks: bool = True, name: str = "",
                      format: str | None = None, provider: str | None = None, **options: Any):
        """What a batch would do (``studio.jobs`` preview: scenes, seeds, cost, warnings, errors).
        ``script`` is text or an upload's bytes, never a path. ``public_webhooks``: only public webhook
        addresses (a shared server must not probe its own network)."""
        if isinstance(script, str) and not script.strip():
            raise InvalidRequest("the script is empty: paste it or upload a file")
        provider = None if is_blank(provider) else str(provider).strip()
        fields = self.batch_options(options, provider=provider)
        return self.jobs.preview(script, user=owner, name=name or "", format=None if is_blank(format) else format,
                                 provider=provider, webhook_public_only=public_webhooks, **fields)

    def run_batch(self, owner: str, script: str | bytes, **options: Any):
        """Start a batch (``preview_batch``'s arguments) in the studio's workers; returns the job."""
        return self.jobs.submit(self.preview_batch(owner, script, **options))

    def watch_batch(self, owner: str, job_id: str, *, progress: Callable[..., Any] | None = None,
                    timeout: float | None = None, interval: float = BATCH_WATCH_SECONDS) -> Iterator[Any]:
        """Yield the job each time it changes until it stops (finished, paused, interrupted) or
        ``timeout`` seconds pass; draws its progress on ``progress(fraction, desc=...)``. Between
        looks it waits on the job's runner (returning at once when the job ends), at most
        ``interval`` seconds. NotFound for a job that is not ``owner``'s."""
        import time

        from studio.jobs import JobStatus

        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            job = self.jobs.get(job_id, owner)
            state = (job.status, job.progress, tuple(sorted(job.counts.items())))
            if progress is not None:
                progress(job.progress / 100, desc=f"{job.done}/{job.total} scene(s) · {job.status.value.lower()}")
            if state != last:
                last = state
                yield job
            stopped = job.status.finished or job.status is JobStatus.PAUSED or job.interrupted
            if stopped or (deadline is not None and time.monotonic() > deadline):
                return
            self._wait_for_change(job.id, interval)

    def _wait_for_change(self, job_id: str, interval: float) -> None:
        if self.jobs.runner.running(job_id):
            self.jobs.runner.wait(job_id, interval)  # wakes as soon as this process's run ends
        else:  # another process runs it: look again at the next redraw
            threading.Event().wait(interval)

    def job_records(self, owner: str, job) -> list[ImageRecord]:
        """The job's images in scene order (only ``owner``'s: a job's images are its owner's)."""
        ids = [image_id for item in job.items or [] for image_id in item.image_ids]
        found = {r.id: r for r in self.studio.storage.index.get_many(ids)}
        return [self.studio.storage.with_path(found[i]) for i in ids if i in found and found[i].owner == owner]


__all__ = ["BATCH_WATCH_SECONDS", "BatchActions"]

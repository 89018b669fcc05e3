"""Building what the studio keeps about a request: one ``ImageRecord`` per image and one audit row
(``generations``) per request, from the facts gathered while it runs (``RunFacts``)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from studio.model_names import shown_model
from studio.options import recordable
from studio.types import ImageRecord, Mode, PreparedRequest

if TYPE_CHECKING:
    from studio.cache_keys import Sources
    from studio.costs import CostQuote
    from studio.errors import StudioError


def utc_now() -> datetime:
    """Now, as an aware UTC datetime (the one clock records, budgets and schedules read)."""
    return datetime.now(timezone.utc)


@dataclass
class RunFacts:
    """What one ``Studio.generate`` call has established about its request once its inputs are
    checked, shared by the steps after it (budget, provider, saving, audit)."""

    request_id: str
    prepared: PreparedRequest
    record_mode: Mode  # what the history calls it (a variation runs as image-to-image)
    warnings: list[str]  # returned with the result; steps append what they adjust
    quote: CostQuote  # USD expected (recorded) and at most (reserved)
    timeout: float  # seconds the provider may take
    started: float  # time.monotonic() when the call began
    tags: list[str] = field(default_factory=list)
    category: str = ""
    parent: ImageRecord | None = None
    sources: Sources = field(default_factory=dict)  # an edit's inputs, as kept (cache_keys.edit_sources)
    cache_key: str = ""
    keep_size: tuple[int, int] | None = None  # an edit's stored size (its input's), before upscaling
    answered_at: float | None = None  # time.monotonic() when the provider's answer came
    created: datetime | None = None  # its images' creation time (UTC), the same for all of them

    def elapsed(self) -> float:
        """Seconds since the call began."""
        return time.monotonic() - self.started

    def answered(self) -> None:
        """Note that the provider has answered: its images are timed and dated from now."""
        self.answered_at = time.monotonic()
        self.created = utc_now()


def record_params(prepared: PreparedRequest, info: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """The ``params`` of an image's record: the request's settings, the provider's plain ``info``
    values (sampler, revised prompt...) and its ``usage`` figures when it gave any."""
    params = {"width": prepared.width, "height": prepared.height, "n": prepared.n, "steps": prepared.steps,
              "guidance": prepared.guidance, "strength": prepared.strength, "quality": prepared.quality,
              "compression": prepared.compression, "extra": recordable(prepared.extra),
              "run_mode": prepared.mode.value,
              "postprocess": prepared.postprocess}
    if prepared.user_negative_prompt != prepared.negative_prompt:  # a style added its own part
        params["user_negative_prompt"] = prepared.user_negative_prompt
    params.update({k: v for k, v in info.items() if isinstance(v, (str, int, float, bool)) or v is None})
    if usage:
        params["usage"] = usage
    return params


def new_record(run: RunFacts, size: tuple[int, int], seed: int | None, params: dict[str, Any], *,
               cost: float, elapsed: float, created: datetime, cache_key: str | None) -> ImageRecord:
    """The record of one image about to be saved (``size`` in pixels, ``cost`` in USD, ``elapsed`` s);
    a fresh id, no file facts yet (``Storage.write_image_files`` fills them in). Its ``model`` is the
    name the model is shown by (``studio.model_names``), never a server path: the record goes into
    history, API answers and the file's own metadata."""
    prepared = run.prepared
    return ImageRecord(
        id=secrets.token_hex(8), owner=prepared.user, path="", sha256="", width=size[0],
        height=size[1], format=prepared.output_format, size_bytes=0, provider=prepared.provider,
        model=shown_model(prepared.model.id), mode=run.record_mode.value, prompt=prepared.prompt,
        negative_prompt=prepared.negative_prompt, style=prepared.style, params=params, seed=seed,
        category=run.category, tags=run.tags, cost=round(cost, 6), generation_time=round(elapsed, 3),
        created_at=created.isoformat(timespec="microseconds"), status="completed",
        parent_id=run.parent.id if run.parent else None, request_id=run.request_id, cache_key=cache_key,
        user_prompt=prepared.user_prompt,
    )


def generation_row(run: RunFacts, status: str, *, cost: float = 0.0, estimate: float = 0.0,
                   duration: float = 0.0, error: StudioError | None = None, cached: bool = False) -> dict[str, Any]:
    """The audit row of the request: who, what, ``status`` (completed | failed | cached), USD booked
    and estimated, seconds taken, and the error's kind and (redacted) message when it failed."""
    prepared = run.prepared
    now = utc_now()
    return {"id": run.request_id, "owner": prepared.user, "created_at": now.isoformat(timespec="microseconds"),
            "day": now.date().isoformat(), "provider": prepared.provider, "model": shown_model(prepared.model.id),
            "mode": run.record_mode.value, "prompt": prepared.user_prompt, "n": prepared.n, "status": status,
            "error_kind": error.kind if error else None, "error": error.message if error else None,
            "cost": cost, "estimated_cost": estimate, "duration": duration, "cached": cached}


def audit(index, run: RunFacts, status: str, *, reservation: str | None = None, **details: Any) -> None:
    """Write the request's audit row to ``index`` (the storage index): in place of its budget
    reservation when it holds one (``reservation``, its id), else as a new row. ``details`` are
    ``generation_row``'s keywords."""
    row = generation_row(run, status, **details)
    if reservation:
        index.finish_generation(reservation, [], row)
    else:
        index.log_generation(row)

"""``Application``: the actions every front end calls, on behalf of an owner.

Streamlit pages, Gradio tabs and endpoints, the CLI and the HTTP API map their inputs to these calls
and render what comes back; no rule lives in a front end. One instance per ``Studio``::

    app = Application(studio)
    app.sizes_for("replicate", "black-forest-labs/flux-1.1-pro")   # [("16:9 (1360x768)", "1360x768"), ...]
    request = app.form_request("local", {"prompt": "a quay", "provider": "echo", "size": "64x64"})
    app.estimate(request).text()                                   # "Estimated cost: **free** ..."
    result = app.generate_from_form("local", {"prompt": "a quay", "provider": "echo", "n": "2"})
    page = app.history("local", {"text": "quay"}, limit=24)        # the owner's images and shared ones
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from studio import cache_keys
from studio.application.forms import BATCH_OPTION_NAMES, OPTION_NAMES, coerce_fields, is_blank, whole_number
from studio.application.frontends import random_base_seed
from studio.catalog import ModelInfo
from studio.controls import Bounds, concurrency_bounds, variation_count_bounds
from studio.errors import InvalidRequest
from studio.estimates import CostPreview, cost_preview
from studio.paging import MAX_PAGE, page_bounds
from studio.sizes import size_choices
from studio.storage import HistoryQuery
from studio.types import GenerationRequest, ImageRecord, Mode, ProgressCallback

if TYPE_CHECKING:
    from studio.service import GenerationResult, Studio

CSV_MAX_ROWS = 50_000  # rows in one history CSV export
_CSV_PAGE = 1000  # rows read from the index at a time while exporting
BATCH_WATCH_SECONDS = 0.25  # how often a watched batch's progress is redrawn while it runs
# History filters a front end may pass (HistoryQuery's fields, less owner and paging).
HISTORY_FILTERS = ("text", "provider", "model", "tag", "category", "mode", "date_from", "date_to", "parent_id")
_FOLDED_FILTERS = ("tag", "category")  # stored lower-case: the filter is folded the same way


@dataclass
class HistoryPage:
    """One page of history: ``items`` newest first, ``total`` matching images, and ``next_cursor``
    (pass it back as ``cursor`` for the next page; None on the last page)."""

    items: list[ImageRecord]
    total: int
    limit: int
    offset: int
    next_cursor: str | None


class Application:
    """The studio's actions for front ends, always for an ``owner`` (an owner id from the front end's
    identity rules; never shown to anyone)."""

    def __init__(self, studio: "Studio"):
        self.studio = studio

    # -- models and sizes ---------------------------------------------------------------------

    def model(self, provider: str | None, model_id: str | None = None, *, mode: str = "text-to-image",
              owner: str = "local") -> ModelInfo:
        """The catalog entry a request with these values runs on (the provider's default for ``mode``
        when ``model_id`` is blank). Raises InvalidRequest for an unknown provider."""
        handler = self.studio.provider(provider or None)
        return handler.model(None if is_blank(model_id) else str(model_id).strip(), owner, Mode.parse(mode).value)

    def sizes_for(self, provider: str | None, model_id: str | None = None, *,
                  mode: str = "text-to-image") -> list[tuple[str, str]]:
        """(label, "WxH") pairs for a size picker (``studio.sizes.size_choices``): a ratio model's
        ratios labelled "16:9 (1360x768)", the same sizes on every front end."""
        return size_choices(self.model(provider, model_id, mode=mode))

    def batch_concurrency(self, provider: str | None) -> Bounds:
        """Scenes a batch may run at once against ``provider``: 1 up to ``Settings.concurrency_limit``."""
        return concurrency_bounds(self.studio.provider(provider or None), self.studio.settings)

    def variation_count(self, provider: str | None, model_id: str | None = None, *, scene: bool = False) -> Bounds:
        """How many variations one click may ask for (scene variations: one per framing)."""
        model = self.model(provider, model_id, mode="variation")
        return variation_count_bounds(model, len(self.studio.styles.scene_variations()) if scene else None)

    # -- requests from form values ------------------------------------------------------------

    def form_request(self, owner: str, values: Mapping[str, Any], *, mode: str | Mode = Mode.TEXT_TO_IMAGE,
                     init_image: Any = None, mask: Any = None) -> GenerationRequest:
        """The ``GenerationRequest`` for a form's values: ``prompt``, ``provider``, ``model`` and any
        of ``forms.OPTION_NAMES`` (text, numbers or lists, by ``forms.coerce_fields``'s rules; a
        ``"W:H"`` size is the chosen model's size for that ratio). ``init_image``/``mask``: an edit's
        images (bytes, a Pillow image, a stored id or None). Raises InvalidRequest naming a value
        that cannot be read; what the model cannot do is refused or warned about by validation."""
        values = dict(values)
        prompt = values.pop("prompt", "")
        provider = values.pop("provider", None)
        model_id = values.pop("model", None)
        provider = None if is_blank(provider) else str(provider).strip()
        model_id = None if is_blank(model_id) else str(model_id).strip()
        needs_model = any(not is_blank(values.get(name)) and ":" in str(values.get(name))
                          for name in ("size", "ratio"))
        model = self.model(provider, model_id, mode=Mode.parse(mode).value, owner=owner) if needs_model else None
        fields = coerce_fields(values, allowed=OPTION_NAMES, model=model)
        return GenerationRequest(prompt="" if prompt is None else str(prompt), mode=Mode.parse(mode),
                                 provider=provider, model=model_id, init_image=init_image, mask=mask, user=owner,
                                 **fields)

    def estimate(self, request: GenerationRequest, *, count: int = 1) -> CostPreview:
        """What the request is expected to cost, input included, and what today's budget holds and has
        left (``studio.estimates.cost_preview``); ``count`` such requests (scene variations).
        Raises what validation raises for a request it would refuse."""
        return cost_preview(self.studio, request, count=count)

    def cache_key(self, request: GenerationRequest) -> str:
        """The key a request's images are cached under (the same inputs from any front end give the
        same key). Raises what validation raises."""
        prepared = self.studio.prepare(request).request
        return cache_keys.cache_key(prepared, cache_keys.edit_sources(prepared))

    def generate_from_form(self, owner: str, values: Mapping[str, Any], *, progress: ProgressCallback | None = None,
                           cancel: threading.Event | None = None) -> "GenerationResult":
        """Run the request ``form_request`` builds from ``values``; the result's warnings say what was
        made differently from what was asked."""
        request = self.form_request(owner, values)
        return self.studio.generate(request, progress=progress, cancel=cancel)

    def source_image(self, owner: str, image: Any = None, image_id: str | None = None, *, required: bool) -> Any:
        """An edit's or variation's source: uploaded ``image`` (bytes or a Pillow image) or the id of an
        image ``owner`` may see (own or shared; NotFound otherwise). Both or (when ``required``)
        neither given is an InvalidRequest."""
        image_id = None if is_blank(image_id) else str(image_id).strip()
        if image is not None and image_id:
            raise InvalidRequest("give an image or an image id, not both")
        if image_id:
            self.studio.get_image(image_id, owner)  # the one visibility rule (studio.identity.visible_to)
            return image_id
        if image is None and required:
            raise InvalidRequest("upload an image (or give the id of one of your images)")
        return image

    def edit_from_form(self, owner: str, values: Mapping[str, Any], *, image: Any = None,
                       image_id: str | None = None, mask: Any = None, progress: ProgressCallback | None = None,
                       cancel: threading.Event | None = None) -> "GenerationResult":
        """Image-to-image (inpainting with ``mask``) of an uploaded image or a visible stored one."""
        source = self.source_image(owner, image, image_id, required=True)
        values = dict(values)
        prompt = values.pop("prompt", "")
        provider, model = values.pop("provider", None), values.pop("model", None)
        fields = coerce_fields(values, allowed=OPTION_NAMES, model=self._model_for_ratio(
            owner, provider, model, "image-to-image", values))
        return self.studio.edit(source, "" if prompt is None else str(prompt), mask=mask,
                                provider=None if is_blank(provider) else provider,
                                model=None if is_blank(model) else model, user=owner, progress=progress,
                                cancel=cancel, **fields)

    def variations_from_form(self, owner: str, values: Mapping[str, Any], *, image: Any = None,
                             image_id: str | None = None, n: Any = 4, scene: bool = False,
                             progress: ProgressCallback | None = None,
                             cancel: threading.Event | None = None) -> "GenerationResult":
        """``n`` variations of an uploaded image, a visible stored one, or the prompt alone; with
        ``scene``, one per framing. ``n`` outside what the model allows is refused, not clamped."""
        source = self.source_image(owner, image, image_id, required=False)
        values = dict(values)
        if not is_blank(values.get("n")):
            raise InvalidRequest("give the number of variations as n, not in options")
        values.pop("n", None)
        prompt = values.pop("prompt", None)
        provider, model = values.pop("provider", None), values.pop("model", None)
        count = whole_number(4 if is_blank(n) else n, "n")
        options = {name: value for name, value in (("provider", provider), ("model", model)) if not is_blank(value)}
        fields = coerce_fields(values, allowed=OPTION_NAMES, model=self._model_for_ratio(
            owner, provider, model, "variation", values))
        return self.studio.variations(source, prompt=None if is_blank(prompt) else str(prompt), n=count,
                                      scene=bool(scene), user=owner, progress=progress, cancel=cancel,
                                      **options, **fields)

    def _model_for_ratio(self, owner: str, provider: Any, model: Any, mode: str,
                         values: Mapping[str, Any]) -> ModelInfo | None:
        wants_ratio = any(":" in str(values.get(name) or "") for name in ("size", "ratio"))
        return self.model(None if is_blank(provider) else provider, model, mode=mode, owner=owner) \
            if wants_ratio else None

    # -- history -------------------------------------------------------------------------------

    def history_query(self, owner: str, filters: Mapping[str, Any] | None = None, *, limit: Any = 24,
                      offset: Any = 0) -> HistoryQuery:
        """The index query for ``owner``'s history: their images and every shared one
        (``studio.identity.visible_to``), filtered by ``filters`` (``HISTORY_FILTERS``; blank values
        ignored, tag and category folded to lower case). Raises InvalidRequest for an unknown filter
        or a limit outside 1-``MAX_PAGE``."""
        filters = dict(filters or {})
        unknown = sorted(set(filters) - set(HISTORY_FILTERS))
        if unknown:
            raise InvalidRequest(f"unknown history filter(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: {', '.join(HISTORY_FILTERS)}")
        given = {name: str(value).strip() for name, value in filters.items() if not is_blank(value)}
        for name in _FOLDED_FILTERS:
            if name in given:
                given[name] = given[name].lower()
        limit, offset = page_bounds(24 if is_blank(limit) else limit, 0 if is_blank(offset) else offset)
        return HistoryQuery(owner=owner, include_shared=True, limit=limit, offset=offset, **given)

    def history(self, owner: str, filters: Mapping[str, Any] | None = None, *, cursor: str | None = None,
                limit: Any = 24, offset: Any = 0) -> HistoryPage:
        """A page of what ``owner`` may see, newest first. ``cursor``: a page's ``next_cursor`` (it
        wins over ``offset``). Raises InvalidRequest for a bad filter, limit or cursor."""
        if not is_blank(cursor):
            offset = _offset_of(cursor)
        query = self.history_query(owner, filters, limit=limit, offset=offset)
        page = self.studio.history(query)
        following = query.offset + len(page.items)
        return HistoryPage(page.items, page.total, query.limit, query.offset,
                           str(following) if page.items and following < page.total else None)

    def history_count(self, owner: str, filters: Mapping[str, Any] | None = None) -> int:
        """How many images ``owner`` may see that match ``filters``."""
        return self.history(owner, filters, limit=1).total

    def export_history_csv(self, owner: str, filters: Mapping[str, Any] | None = None) -> str:
        """The metadata of every image ``history`` would list (at most ``CSV_MAX_ROWS``), as CSV text
        (``studio.exports.records_to_csv``: no owner ids, no server paths)."""
        from studio.exports import records_to_csv

        records: list[ImageRecord] = []
        cursor: str | None = None
        while len(records) < CSV_MAX_ROWS:
            page = self._history_rows(owner, filters, cursor)
            records.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return records_to_csv(records[:CSV_MAX_ROWS])

    def _history_rows(self, owner: str, filters: Mapping[str, Any] | None, cursor: str | None) -> HistoryPage:
        # Export reads bigger pages than a visitor may ask for (MAX_PAGE): it is the server's own loop.
        query = self.history_query(owner, filters, limit=MAX_PAGE)
        query.limit, query.offset = _CSV_PAGE, 0 if cursor is None else _offset_of(cursor)
        page = self.studio.history(query)
        following = query.offset + len(page.items)
        return HistoryPage(page.items, page.total, query.limit, query.offset,
                           str(following) if page.items and following < page.total else None)

    def spend_by_day(self, owner: str, days: int = 30):
        """USD spent and requests made per UTC day and provider over the last ``days`` days, from the
        audit log (``studio.monitoring.spend_by_day``: the figures ``stats`` and the alerts use)."""
        from studio.monitoring import spend_by_day

        return spend_by_day(self.studio.storage.index, days=whole_number(days, "days"), owner=owner)

    # -- batches -------------------------------------------------------------------------------

    @property
    def jobs(self):
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


def _offset_of(cursor: Any) -> int:
    try:
        return whole_number(cursor, "cursor")
    except InvalidRequest:
        raise InvalidRequest(f"cursor {str(cursor)[:40]!r} is not one this studio gave out") from None


__all__ = ["Application", "BATCH_WATCH_SECONDS", "CSV_MAX_ROWS", "HISTORY_FILTERS", "HistoryPage"]

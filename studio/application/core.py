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
from typing import TYPE_CHECKING, Any, Mapping

from studio import cache_keys
from studio.application.batches import BATCH_WATCH_SECONDS, BatchActions
from studio.application.forms import OPTION_NAMES, coerce_fields, is_blank, whole_number
from studio.application.history import CSV_MAX_ROWS, HISTORY_FILTERS, HistoryActions, HistoryPage
from studio.catalog import ModelInfo
from studio.controls import Bounds, concurrency_bounds, variation_count_bounds
from studio.errors import InvalidRequest
from studio.estimates import CostPreview, cost_preview
from studio.sizes import size_choices
from studio.types import GenerationRequest, Mode, ProgressCallback

if TYPE_CHECKING:
    from studio.service import GenerationResult, Studio


class Application(HistoryActions, BatchActions):
    """The studio's actions for front ends, always for an ``owner`` (an owner id from the front end's
    identity rules; never shown to anyone)."""

    def __init__(self, studio: "Studio", *, on_workers: bool | None = None):
        """``on_workers``: run generate, edit and variations on Celery workers (``STUDIO_BROKER_URL``);
        default: when the studio has a broker URL. A worker's own Application runs them in process."""
        self.studio = studio
        self.on_workers = bool(studio.settings.broker_url) if on_workers is None else on_workers

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
        fields = coerce_fields(values, allowed=OPTION_NAMES,
                               model=self.ratio_model(owner, provider, model_id, Mode.parse(mode).value, values))
        return GenerationRequest(prompt="" if prompt is None else str(prompt), mode=Mode.parse(mode),
                                 provider=provider, model=model_id, init_image=init_image, mask=mask, user=owner,
                                 **fields)

    def estimate(self, request: GenerationRequest | Mapping[str, Any], *, owner: str = "local",
                 count: int = 1) -> CostPreview:
        """What the request is expected to cost, input included, and what today's budget holds and has
        left (``studio.estimates.cost_preview``); ``count`` such requests (scene variations).
        ``request`` may be form values (``form_request`` builds the request for ``owner``). Raises
        what validation raises for a request it would refuse."""
        if not isinstance(request, GenerationRequest):
            request = self.form_request(owner, request)
        return cost_preview(self.studio, request, count=count)

    def cache_key(self, request: GenerationRequest) -> str:
        """The key a request's images are cached under (the same inputs from any front end give the
        same key). Raises what validation raises."""
        prepared = self.studio.prepare(request).request
        return cache_keys.cache_key(prepared, cache_keys.edit_sources(prepared))

    def generate_from_form(self, owner: str, values: Mapping[str, Any], *, progress: ProgressCallback | None = None,
                           cancel: threading.Event | None = None) -> "GenerationResult":
        """Run the request ``form_request`` builds from ``values``; the result's warnings say what was
        made differently from what was asked. With a broker it runs on a worker (``_on_worker``)."""
        request = self.form_request(owner, values)  # bad input is refused here, before the trip
        if self.on_workers:
            return self._on_worker("generate", owner, {"values": dict(values)}, provider=request.provider,
                                   progress=progress, cancel=cancel)
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
        """Image-to-image (inpainting with ``mask``) of an uploaded image or a visible stored one. With a
        broker it runs on a worker (``_on_worker``)."""
        if self.on_workers:
            return self._on_worker("edit", owner, {"values": dict(values), "image": image, "image_id": image_id,
                                                   "mask": mask}, provider=values.get("provider"),
                                   progress=progress, cancel=cancel)
        source = self.source_image(owner, image, image_id, required=True)
        values = dict(values)
        prompt = values.pop("prompt", "")
        provider, model = values.pop("provider", None), values.pop("model", None)
        fields = coerce_fields(values, allowed=OPTION_NAMES, model=self.ratio_model(
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
        ``scene``, one per framing. ``n`` outside what the model allows is refused, not clamped. With a
        broker it runs on a worker (``_on_worker``; a scene's framings one after another there)."""
        if self.on_workers:
            count = whole_number(4 if is_blank(n) else n, "n")
            return self._on_worker("variations", owner, {"values": dict(values), "image": image, "image_id": image_id,
                                                         "n": n, "scene": bool(scene)},
                                   provider=values.get("provider"), source_id=image_id,
                                   requests=count if scene else 1, progress=progress, cancel=cancel)
        source = self.source_image(owner, image, image_id, required=False)
        values = dict(values)
        if not is_blank(values.get("n")):
            raise InvalidRequest("give the number of variations as n, not in options")
        values.pop("n", None)
        prompt = values.pop("prompt", None)
        provider, model = values.pop("provider", None), values.pop("model", None)
        count = whole_number(4 if is_blank(n) else n, "n")
        options = {name: value for name, value in (("provider", provider), ("model", model)) if not is_blank(value)}
        fields = coerce_fields(values, allowed=OPTION_NAMES, model=self.ratio_model(
            owner, provider, model, "variation", values))
        return self.studio.variations(source, prompt=None if is_blank(prompt) else str(prompt), n=count,
                                      scene=bool(scene), user=owner, progress=progress, cancel=cancel,
                                      **options, **fields)

    def _on_worker(self, action: str, owner: str, arguments: dict[str, Any], *, provider: Any,
                   source_id: Any = None, requests: int = 1, progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None) -> "GenerationResult":
        """Run ``<action>_from_form`` on a Celery worker and wait (``studio.jobs.remote_actions``), on
        the queue of ``provider`` (blank: a variation's ``source_id`` image's provider, else the
        default): ``local`` for the local model, ``cloud`` for the rest (``queue_for``)."""
        from studio.jobs.celery_runner import queue_for
        from studio.jobs.remote_actions import run_on_worker

        provider = None if is_blank(provider) else str(provider).strip()
        if provider is None and not is_blank(source_id):
            provider = self.studio.get_image(str(source_id).strip(), owner).provider  # NotFound if not visible
        queue = queue_for(self.studio.provider(provider))
        return run_on_worker(self.studio, action, owner, arguments, queue=queue, requests=requests,
                             progress=progress, cancel=cancel)

    def ratio_model(self, owner: str, provider: Any, model: Any, mode: str,
                    values: Mapping[str, Any]) -> ModelInfo | None:
        """The model that gives a ``"W:H"`` ``size`` or ``ratio`` among ``values`` its pixels (the
        named ``model``, else ``provider``'s default for ``mode``); None when neither is a ratio.
        Every front end (the CLI's --size too) sizes a ratio through this and ``coerce_fields``."""
        wants_ratio = any(not is_blank(values.get(name)) and ":" in str(values.get(name)) for name in ("size", "ratio"))
        return self.model(None if is_blank(provider) else str(provider).strip(), model, mode=mode, owner=owner) \
            if wants_ratio else None


__all__ = ["Application", "BATCH_WATCH_SECONDS", "CSV_MAX_ROWS", "HISTORY_FILTERS", "HistoryPage"]

"""HTTP routes of the studio's own API for making images (``/api/v1``):

- ``POST /generate`` (JSON): images as server URLs, or base64 with ``"return": "base64"`` /
  ``?response=base64``; with ``"job": true`` it runs as a job instead (202 with the job's links:
  follow ``/api/v1/jobs/{id}/events``, then read ``/result``);
- ``POST /edit`` and ``POST /inpaint`` (multipart: an ``image`` file part or a stored ``image_id``,
  a ``mask`` file part, ``prompt``, ``strength``, and the other settings as ``settings`` JSON text);
- ``POST /variations`` (JSON: a stored ``image_id``, or a prompt alone);
- ``POST /estimate`` (JSON, as ``/generate``): the expected cost, the amount the budget holds, what
  is left of today's budget;
- ``GET /providers`` and ``GET /models``: capabilities and prices (with the day each price was
  checked) from the catalog.

Every request goes through the application layer (``studio.application.Application``): the values
are read by the one coercion every front end uses (a ``"16:9"`` size is the size every front end
makes for that ratio), and the core validates them (a bad value is a 400 naming it, before anything
is paid). Routes are plain functions, so FastAPI runs them in its thread pool: a slow provider holds
a worker thread, never the event loop. Errors become ``{error, detail}`` in ``studio.http.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from studio.errors import InvalidRequest
from studio.http.deps import Caller, get_application, get_caller, get_studio
from studio.http.v1_shapes import RETURN_CHOICES, image_answer

router = APIRouter(prefix="/api/v1", tags=["generation"])

# Numbers are taken as the client wrote them (2, 2.0 or "2") and read by the application layer's one
# coercion (studio.application.forms), not by pydantic's own rules: the schema only documents them.
Whole = Annotated[Any, WithJsonSchema({"type": "integer"})]
Real = Annotated[Any, WithJsonSchema({"type": "number"})]


class ImageSettings(BaseModel):
    """What every kind of request may set besides its prompt and images. Values are checked by the
    core against the model (``GET /api/v1/models``); a value the model cannot take is a 400 naming it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: str | None = Field(None, description="provider name (GET /api/v1/providers); default: the server's")
    model: str | None = Field(None, description="model id; default: the provider's default for this kind of work")
    size: str | None = Field(None, description="WxH pixels (1024x1024), or W:H for a model that takes ratios")
    aspect_ratio: str | None = Field(None, description="W:H (16:9), made at the size every front end uses for it")
    n: Whole = Field(None, description="number of images (variations: default 4)")
    seed: Whole = Field(None, description="base seed; image i gets seed + i")
    style: str | None = Field(None, description="style preset name (e.g. cinematic); none: no style")
    negative_prompt: str | None = None
    steps: Whole = None
    guidance: Real = None
    quality: str | None = None
    format: str | None = Field(None, description="png (default), jpeg or webp")
    compression: Whole = Field(None, description="JPEG/WEBP quality 1-100")
    options: dict[str, Any] | None = Field(None, description="the model's provider options (GET /api/v1/models)")
    postprocess: dict[str, Any] | None = Field(None, description="upscale, sharpen, autocontrast, enhance")
    tags: list[str] | None = None
    category: str | None = None
    cache: bool | None = Field(None, description="reuse stored images of the same request (default: when seeded)")
    return_: Literal["url", "base64"] | None = Field(None, alias="return",
                                                     description="url (default) or base64: the files inline")

    def form_values(self) -> dict[str, Any]:
        """The values as the application layer's form fields (``studio.application.forms``)."""
        return {"provider": self.provider, "model": self.model, "size": self.size, "ratio": self.aspect_ratio,
                "n": self.n, "seed": self.seed, "style": self.style, "negative_prompt": self.negative_prompt,
                "steps": self.steps, "guidance": self.guidance, "quality": self.quality,
                "output_format": self.format, "compression": self.compression, "extra": self.options,
                "postprocess": self.postprocess, "tags": self.tags, "category": self.category, "cache": self.cache}


class GenerateBody(ImageSettings):
    prompt: str
    job: bool = Field(False, description="run as a job: answer 202 at once with the job's links")


class EditSettings(ImageSettings):
    """The ``settings`` part of an edit or inpaint (its prompt, images and strength are parts of their own)."""


class VariationsBody(ImageSettings):
    image_id: str | None = Field(None, description="a stored image to vary (yours or shared); else the prompt's")
    prompt: str | None = Field(None, description="default: the stored image's own prompt")
    strength: Real = None
    scene: bool = Field(False, description="one framing or lighting per image (wide shot, close-up...)")


# -- helpers ----------------------------------------------------------------------------------------


def wants_base64(settings: ImageSettings | None, response: str | None) -> bool:
    """Whether images go inline: ``?response=base64`` or the body's ``"return": "base64"``."""
    if response is not None and response not in RETURN_CHOICES:
        raise InvalidRequest(f"response must be url or base64, not {response[:20]!r}")
    return "base64" in (response, settings.return_ if settings is not None else None)


def result_answer(studio, result, *, inline: bool) -> dict[str, Any]:
    """A ``GenerationResult`` as JSON: ``{images: [image_answer], cost, estimated_cost (USD), cached,
    request_id, duration (s), warnings}``; ``warnings`` says what was made other than asked."""
    images = [image_answer(record, data=studio.image_bytes(record) if inline else None) for record in result.images]
    return {"images": images, "cost": round(result.cost, 6), "estimated_cost": round(result.estimated_cost, 6),
            "cached": result.cached, "request_id": result.request_id, "duration": round(result.duration, 3),
            "warnings": list(result.warnings)}


_RESPONSE = Query(None, description="url (default) or base64")


# -- routes -----------------------------------------------------------------------------------------


@router.post("/generate", summary="Generate images from a prompt")
def generate(body: GenerateBody, response: str | None = _RESPONSE, studio=Depends(get_studio),
             caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """The images made: ``{images: [{id, url, thumbnail_url, width, height, format, seed, cost, ...}],
    cost, estimated_cost, cached, request_id, duration, warnings}`` (``base64`` and ``media_type``
    instead of the URLs when asked). With ``"job": true``: 202 and the job's status and links."""
    inline = wants_base64(body, response)
    values = {"prompt": body.prompt, **body.form_values()}
    if body.job:
        from studio.http.v1_jobs import submit_generation

        if inline:
            raise InvalidRequest("a job's images are fetched from its result; return base64 is for direct answers")
        return JSONResponse(submit_generation(app, caller, values), status_code=202)
    return result_answer(studio, app.generate_from_form(caller.owner, values), inline=inline)


@router.post("/estimate", summary="Expected cost of a generate request, and the budget")
def estimate(body: GenerateBody, caller: Caller = Depends(get_caller), studio=Depends(get_studio),
             app=Depends(get_application)):
    """``{estimate, bound, daily_budget, budget_left, currency, text}``: ``estimate`` is the expected
    USD (prompt and input images included), ``bound`` the most it can cost, which today's budget
    holds while it runs; ``daily_budget`` and ``budget_left`` are None without a daily budget."""
    preview = app.estimate(app.form_request(caller.owner, {"prompt": body.prompt, **body.form_values()}))
    return {"estimate": preview.estimate, "bound": preview.bound, "daily_budget": studio.settings.daily_budget,
            "budget_left": None if preview.budget_left is None else round(preview.budget_left, 6),
            "currency": "USD", "text": preview.text()}


def _edit_settings(text: str | None) -> EditSettings:
    """The ``settings`` form part: JSON text of ``EditSettings`` (``{"provider": "openai", "n": 2}``)."""
    if text is None or not text.strip():
        return EditSettings()
    try:
        return EditSettings.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidRequest(f"settings{'.' + where if where else ''}: {first.get('msg', 'invalid')}") from None


def _edit(studio, app, caller: Caller, *, inpaint: bool, prompt: str, image: UploadFile | None,
          image_id: str | None, mask: UploadFile | None, strength: str | None, settings: str | None,
          response: str | None) -> dict[str, Any]:
    """An edit or inpaint from a multipart request. The input is an uploaded file or the id of an
    image the caller may see (never a server path or URL: only an id reaches the core)."""
    parsed = _edit_settings(settings)
    inline = wants_base64(parsed, response)
    if inpaint and mask is None:
        raise InvalidRequest("inpainting needs a mask file part 'mask' (white = repaint)")
    values = {"prompt": prompt, "strength": strength, **parsed.form_values()}
    result = app.edit_from_form(caller.owner, values, image=image.file.read() if image is not None else None,
                                image_id=image_id, mask=mask.file.read() if mask is not None else None)
    return result_answer(studio, result, inline=inline)


_SETTINGS_PART = Form(None, description='the other settings as JSON text, e.g. {"provider": "openai", "n": 2}')
_IMAGE_PART = File(None, description="the input image (PNG, JPEG or WEBP); or give image_id")
_IMAGE_ID_PART = Form(None, description="a stored image (yours or shared) instead of an uploaded one")
_STRENGTH_PART = Form(None, description="0.05-1: how far from the input")


def _edit_route(*, inpaint: bool, mask_help: str):
    """The ``/edit`` and ``/inpaint`` endpoint: the same multipart parts, the mask optional for an
    edit (with one it inpaints) and required for an inpaint."""
    def route(prompt: str = Form(...), image: UploadFile | None = _IMAGE_PART, image_id: str | None = _IMAGE_ID_PART,
              mask: UploadFile | None = File(None, description=mask_help), strength: str | None = _STRENGTH_PART,
              settings: str | None = _SETTINGS_PART, response: str | None = _RESPONSE, studio=Depends(get_studio),
              caller: Caller = Depends(get_caller), app=Depends(get_application)):
        return _edit(studio, app, caller, inpaint=inpaint, prompt=prompt, image=image, image_id=image_id, mask=mask,
                     strength=strength, settings=settings, response=response)
    return route


_EDIT_ANSWER = "Answers as ``/generate``; the images are the input's size (an edit keeps its input's size)."
edit = router.post("/edit", name="edit", description=_EDIT_ANSWER,
                   summary="Image-to-image from an uploaded or stored image (with a mask: inpaint)")(
    _edit_route(inpaint=False, mask_help="optional: white = repaint (then it inpaints)"))
inpaint = router.post("/inpaint", name="inpaint", description=_EDIT_ANSWER,
                      summary="Repaint the masked part (white = repaint) of an uploaded or stored image")(
    _edit_route(inpaint=True, mask_help="required: white = repaint"))


@router.post("/variations", summary="Variations of a stored image or of a prompt")
def variations(body: VariationsBody, response: str | None = _RESPONSE, studio=Depends(get_studio),
               caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """With ``image_id``: image-to-image variations of that image (its prompt, provider and model
    unless given); else new seeds of ``prompt``. ``n`` (default 4); ``scene``: one framing each."""
    inline = wants_base64(body, response)
    if body.seed is not None:
        raise InvalidRequest("variations are made with new seeds; leave seed out (generate with a seed instead)")
    values = {"prompt": body.prompt, "strength": body.strength, **body.form_values()}
    n = values.pop("n")
    result = app.variations_from_form(caller.owner, values, image_id=body.image_id, n=n, scene=body.scene)
    return result_answer(studio, result, inline=inline)


@router.get("/providers", summary="Providers, whether each is ready, and their models")
def list_providers(studio=Depends(get_studio), caller: Caller = Depends(get_caller)):
    """``{providers: [{name, label, state (ready | missing_key | unavailable), ready, reason,
    models: [model ids]}]}``."""
    answer = [{"name": status.name, "label": status.label, "state": status.state, "ready": status.ready,
               "reason": status.reason, "models": [m["id"] for m in status.models]}
              for status in studio.provider_statuses()]
    return {"providers": answer}


@router.get("/models", summary="Models with capabilities, sizes and prices")
def list_models(provider: str | None = Query(None, description="only this provider's models"),
                studio=Depends(get_studio), caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """``{models: [{provider, id, label, modes, sizes, size_range, aspect_ratios, size_choices,
    max_images, steps, guidance, strength, qualities, options, price: {kind, usd, checked_on, ...}}]}``.
    Prices are the catalog's, in USD, with the day they were checked (``checked_on``; None when they
    could not be, and ``unverified`` says why). ``size_choices``: [label, "WxH"] pairs, the sizes every
    front end offers (a ratio model's "16:9 (1360x768)")."""
    import providers as registry

    if provider and provider.strip():
        names = [studio.provider(provider).name]  # an unknown provider is a 400 naming the known ones
    else:  # every provider this server can run (a catalog file alone is no provider)
        names = [name for name in studio.catalog.providers() if name in registry.names()]
    models = []
    for name in names:
        for model in studio.catalog.models(name):
            models.append({"provider": name, **model.to_dict(),
                           "size_choices": [list(pair) for pair in app.sizes_for(name, model.id)]})
    return {"models": models}

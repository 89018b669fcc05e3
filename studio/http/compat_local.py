"""Document 5's local Stable Diffusion API, as that document defines it, plus the landing and health routes.

* ``POST /generate`` ``{prompt, user_id = "default", num_inference_steps 1-150 = 30, guidance_scale
  1.0-20.0 = 7.5, width 256-1024 = 512, height 256-1024 = 512, seed?}`` -> ``{image_base64,
  model_id, generation_time, image_path}`` (plus ``id``, ``seed`` and ``warnings``);
* ``POST /generate/image``: the same request, answered with the PNG itself (``X-Image-Id``,
  ``X-Seed``, ``X-Model-Id``, ``X-Generation-Time`` headers);
* ``GET /health``: status, device, loaded models, the features of documents 3 and 5, and each back
  end (``studio.health.check``); 503 when a back end is down;
* ``GET /``: name, version and links; a browser (``Accept: text/html``) goes to the UI at ``/ui/``
  when it is mounted;
* ``DELETE /cache``: unloads every cached local model; only the operator (the tokenless local user of
  ``STUDIO_VISITORS=local``) may: the cache serves every caller, and reloading costs them all. A
  token's holder gets 403.

``GET /health`` answers without a token (a load balancer asks it): its back-end probes (database,
file store, broker) are reused for ``HEALTH_PROBE_SECONDS``, so a flood of calls probes them once.

``user_id`` picks the local model by the operator's mapping (``Settings.user_models``; else
``Settings.local_model``); it never says who is calling: the images belong to the caller
(the Bearer token's owner). Out-of-range values are 400 with the reason. ``image_path`` is the
image's key in the studio's file store, never a server directory.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, Strict
from starlette.responses import JSONResponse, RedirectResponse, Response

from studio.http.deps import Caller, get_application, get_caller, get_studio
from studio.http.errors import ApiError

if TYPE_CHECKING:
    from studio.application import Application
    from studio.service import GenerationResult, Studio

router = APIRouter(tags=["local model API (document 5)"])
PROVIDER = "local"
HEALTH_PROBE_SECONDS = 3.0  # how long GET /health reuses its back-end probes (per app)
_probe_lock = threading.Lock()  # one probe at a time; callers waiting on it reuse its report
UI_PATH = "/ui"
# What GET /health lists as features: document 5's and document 3's, as this studio serves them.
FEATURES = ("text-to-image", "image-to-image", "inpainting", "local diffusers models (DreamBooth fine-tunes too)",
            "per-user model mapping", "model cache (DELETE /cache)", "reproducible seeds", "base64 or PNG output",
            "generation jobs with status polling (/api/images)", "input image by URL", "webhooks with a shared secret",
            "gemini, openai, replicate and stability providers", "history, mood boards and batch jobs (/api/v1)")


class LocalGeneration(BaseModel):
    prompt: str = Field(description="what to draw; required, not blank")
    user_id: str = Field("default", description="picks the model by the operator's per-user mapping; "
                                                "not an identity: images belong to the token's owner")
    num_inference_steps: Annotated[int, Strict()] = Field(30, ge=1, le=150)
    guidance_scale: float = Field(7.5, ge=1.0, le=20.0)
    width: Annotated[int, Strict()] = Field(512, ge=256, le=1024, description="pixels; the model's multiple (8)")
    height: Annotated[int, Strict()] = Field(512, ge=256, le=1024, description="pixels; the model's multiple (8)")
    seed: Annotated[int, Strict()] | None = Field(None, ge=0, description="the same seed gives the same image")


def _generate(app: "Application", caller: Caller, body: LocalGeneration) -> "GenerationResult":
    """One local image for the caller, on the model ``user_id`` maps to, through the application layer."""
    studio = app.studio
    values = {"prompt": body.prompt, "provider": PROVIDER, "model": studio.settings.model_for_user(body.user_id),
              "steps": body.num_inference_steps, "guidance": body.guidance_scale, "width": body.width,
              "height": body.height, "seed": body.seed, "output_format": "png", "n": 1}
    return app.generate_from_form(caller.owner, values)


def shown_model(studio: "Studio", model_id: str) -> str:
    """A local model's id as it may leave the server (``studio.model_names``: the operator's name for
    it, a Hub id as it is, a file or folder by its name alone)."""
    return studio.provider(PROVIDER).shown(model_id)


@router.post("/generate", summary="Generate one image with a local model (base64 answer)")
def generate(body: LocalGeneration, caller: Caller = Depends(get_caller),
             app=Depends(get_application)) -> dict[str, Any]:
    studio = app.studio
    result = _generate(app, caller, body)
    record = result.images[0]
    return {"image_base64": base64.b64encode(studio.image_bytes(record)).decode("ascii"),
            "model_id": shown_model(studio, record.model), "generation_time": round(result.duration, 3),
            "image_path": record.path, "id": record.id, "seed": record.seed, "warnings": result.warnings}


@router.post("/generate/image", summary="Generate one image with a local model (PNG answer)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
def generate_image(body: LocalGeneration, caller: Caller = Depends(get_caller),
                   app=Depends(get_application)) -> Response:
    studio = app.studio
    result = _generate(app, caller, body)
    record = result.images[0]
    headers = {"X-Image-Id": record.id, "X-Model-Id": shown_model(studio, record.model),
               "X-Generation-Time": f"{result.duration:.3f}"}
    if record.seed is not None:
        headers["X-Seed"] = str(record.seed)
    return Response(studio.image_bytes(record), media_type="image/png", headers=headers)


# -- the service itself ------------------------------------------------------------------------


def _loaded_models(studio: "Studio") -> list[dict[str, str]]:
    from providers.local import CACHE

    return [{"model_id": shown_model(studio, location), "device": device, "dtype": dtype}
            for location, device, dtype in CACHE.keys()]


def _device(studio: "Studio", loaded: list[dict[str, str]]) -> str:
    """Where local models run: the configured device, else that of a loaded model, else the device
    torch detects if torch is already loaded. Importing torch only to answer a health check would
    take seconds, so before that it is "auto"."""
    import sys

    if studio.settings.local_device:
        return studio.settings.local_device
    if loaded:
        return loaded[0]["device"]
    if "torch" in sys.modules:
        from providers.local import detect_device_and_dtype

        return detect_device_and_dtype(None, studio.settings.local_dtype)[0]
    return "auto (detected when the first local model loads)"


@router.get("/health", summary="Status, device, loaded models, features and back ends")
def health(request: Request, studio=Depends(get_studio)) -> JSONResponse:
    from studio.health import healthy

    backends = _recent_probes(request, studio)
    ok = healthy(backends)
    loaded = _loaded_models(studio)
    body = {"status": "healthy" if ok else "degraded", "version": request.app.version,
            "device": _device(studio, loaded), "loaded_models": [m["model_id"] for m in loaded],
            "models": loaded, "features": list(FEATURES), "backends": backends}
    return JSONResponse(body, status_code=200 if ok else 503)


def _recent_probes(request: Request, studio: "Studio") -> dict[str, Any]:
    """``studio.health.check``'s report, probed at most once per ``HEALTH_PROBE_SECONDS`` for this app
    (kept in ``app.state``: a new app, as after a restart, probes afresh)."""
    from studio.health import check

    with _probe_lock:
        probed = getattr(request.app.state, "health_probes", None)
        if probed is None or time.monotonic() - probed[0] >= HEALTH_PROBE_SECONDS:
            probed = (time.monotonic(), check(studio))
            request.app.state.health_probes = probed
    return probed[1]


def _ui_mounted(request: Request) -> bool:
    return any(getattr(route, "path", None) == UI_PATH for route in request.app.routes)


@router.get("/", summary="What this server is, with links (a browser goes to the UI)")
def landing(request: Request) -> Any:
    ui = _ui_mounted(request)
    if ui and "text/html" in request.headers.get("accept", "").lower():
        return RedirectResponse(f"{UI_PATH}/", status_code=307)
    links = {"docs": "/docs", "openapi": "/openapi.json", "health": "/health", "api": "/api/v1",
             "generate": "/generate", "generate_image": "/generate/image", "jobs": "/api/images/generate",
             "providers": "/api/generate/providers"}
    if ui:
        links["ui"] = f"{UI_PATH}/"
    return {"name": "Image Studio", "version": request.app.version, "links": links}


@router.delete("/cache", summary="Unload every cached local model")
def clear_cache(caller: Caller = Depends(get_caller), studio=Depends(get_studio)) -> dict[str, Any]:
    if not caller.local:
        raise ApiError(403, "forbidden", "only the server's operator (the local user, without a token) may clear "
                                         "the model cache: it serves every caller")
    unloaded = [m["model_id"] for m in _loaded_models(studio)]
    studio.provider(PROVIDER)  # the cache is the process's: clear it even if this studio never used it
    studio.clear_model_cache()
    return {"status": "cleared", "unloaded": unloaded}

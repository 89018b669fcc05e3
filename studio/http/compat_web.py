"""Document 1's web API, as that document defines it.

* ``POST /api/generate/image`` ``{prompt, provider?, style? = "realistic", size? = "1024x1024"}`` ->
  ``{url, local_path, prompt, provider, cost}`` (document 1's generated image, plus ``id``,
  ``model`` and ``warnings``). ``url`` is the server route of the file; ``local_path`` its key in the
  studio's file store (``images/...``), never a server directory;
* ``GET /api/generate/providers`` -> ``{providers: [{name, label, status (ready | missing_key |
  unavailable), available, reason, models}]}``.

Document 1 names providers and styles its own way: "dall-e" is OpenAI, "sdxl" Replicate,
"stability-ai" Stability (``PROVIDER_ALIASES``); styles go through the studio's style book, whose
aliases take "realistic" and "Concept Art". Without a provider the server's default provider runs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from studio.http.deps import Caller, get_application, get_caller, get_studio

router = APIRouter(prefix="/api/generate", tags=["web API (document 1)"])
PROVIDER_ALIASES = {"dall-e": "openai", "dalle": "openai", "dall-e-3": "openai", "sdxl": "replicate",
                    "stable-diffusion": "replicate", "stability-ai": "stability", "stabilityai": "stability",
                    "stability ai": "stability"}


class WebGeneration(BaseModel):
    prompt: str = Field(description="what to draw; required, not blank")
    provider: str | None = Field(None, description="openai, replicate, stability (or another the studio has); "
                                                   "default: the server's")
    style: str | None = Field("realistic", description="a style of the studio's style book, e.g. realistic, "
                                                       "Concept Art, cinematic; none for no style")
    size: str | None = Field("1024x1024", description="WxH pixels or W:H for models that take ratios")


def provider_name(name: str | None) -> str | None:
    """The studio's provider for a name document 1 uses (None: the server's default)."""
    if name is None or not name.strip():
        return None
    text = name.strip().lower()
    return PROVIDER_ALIASES.get(text, text)


@router.post("/image", summary="Generate an image and keep it")
def generate_image(body: WebGeneration, caller: Caller = Depends(get_caller),
                   app=Depends(get_application)) -> dict[str, Any]:
    from studio.http.compat_local import shown_model

    studio = app.studio

    values = {"prompt": body.prompt, "provider": provider_name(body.provider), "style": body.style,
              "size": body.size}
    result = app.generate_from_form(caller.owner, values)
    record = result.images[0]
    return {"url": f"/api/v1/images/{record.id}/file", "local_path": record.path, "prompt": record.user_prompt,
            "provider": record.provider, "cost": round(record.cost, 6), "id": record.id,
            "model": shown_model(studio, record.model) if record.provider == "local" else record.model,
            "warnings": result.warnings}


@router.get("/providers", summary="Providers and their status")
def list_providers(caller: Caller = Depends(get_caller), studio=Depends(get_studio)) -> dict[str, Any]:
    from studio.http.compat_local import shown_model

    answer = []
    for status in studio.provider_statuses():
        reason = studio.redact(status.reason)
        models = []
        for model in status.models:
            shown = shown_model(studio, model["id"]) if status.name == "local" else model["id"]
            if shown != model["id"]:  # a server path named in the reason is shown by its name too
                reason = reason.replace(model["id"], shown)
            if shown not in models:  # the default model may also be offered by its name
                models.append(shown)
        answer.append({"name": status.name, "label": status.label, "status": status.state,
                       "available": status.ready, "reason": reason, "models": models})
    return {"providers": answer}

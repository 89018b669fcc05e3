"""Document 3's job API, as that document defines it (the work is ``studio.jobapi``'s).

* ``POST /api/images/generate`` ``{prompt, input_image_url?, num_images 1-4, size, format, style,
  quality}`` -> ``{job_id, status: "PENDING", message}``;
* ``GET /api/images/status/{job_id}`` -> ``{job_id, status, message, progress, created_at, updated_at}``;
* ``GET /api/images/result/{job_id}`` -> ``{job_id, status: "COMPLETED", message, images, metadata}`` or
  ``{job_id, status: "FAILED", message, errors}``; 409 ``{error: "not_finished", detail, job_id,
  status}`` while the job runs.

400 for an empty prompt, ``num_images`` outside 1-4 or a choice the document does not list, with
the reason; 404 for an unknown job and for another caller's job; 503 without a Gemini key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, Strict
from starlette.responses import JSONResponse

from studio import jobapi
from studio.http.deps import Caller, get_caller, get_studio
from studio.http.errors import error_body

router = APIRouter(prefix="/api/images", tags=["job API (document 3)"])


class GenerateImages(BaseModel):
    prompt: str = Field(description="what to draw; required, not blank")
    input_image_url: str | None = Field(None, description="an http(s) image to start from (public addresses only)")
    num_images: Annotated[int, Strict()] = Field(1, ge=1, le=jobapi.MAX_IMAGES, description="images, 1-4")
    size: str = Field("1024x1024", json_schema_extra={"enum": list(jobapi.SIZES)},
                      description="Gemini draws the nearest aspect ratio (1:1 or 16:9); warnings say so")
    format: str = Field("PNG", json_schema_extra={"enum": list(jobapi.FORMATS)})
    style: str | None = Field(None, json_schema_extra={"enum": list(jobapi.STYLES)},
                              description="the studio's style preset of that name; unset: none")
    quality: str = Field("standard", json_schema_extra={"enum": list(jobapi.QUALITY_TIERS)},
                         description="Gemini's image size tier: standard 1K, high 2K, ultra 4K")


@router.post("/generate", summary="Start a generation job")
def generate(body: GenerateImages, caller: Caller = Depends(get_caller), studio=Depends(get_studio)) -> dict[str, Any]:
    job = jobapi.create(studio, caller.owner, jobapi.JobRequest(**body.model_dump()))
    # Just queued: the document's first status, whatever the worker has begun since.
    return {"job_id": job.id, "status": jobapi.PENDING,
            "message": f"job created: poll /api/images/status/{job.id}, then GET /api/images/result/{job.id}"}


@router.get("/status/{job_id}", summary="A job's status and progress")
def job_status(job_id: str, caller: Caller = Depends(get_caller), studio=Depends(get_studio)) -> dict[str, Any]:
    return jobapi.status(jobapi.get(studio, caller.owner, job_id))


@router.get("/result/{job_id}", summary="A finished job's images and metadata, or its errors")
def job_result(job_id: str, caller: Caller = Depends(get_caller), studio=Depends(get_studio)) -> Any:
    job = jobapi.get(studio, caller.owner, job_id)
    try:
        return jobapi.result(studio, job)
    except jobapi.NotFinished as waiting:
        return JSONResponse(error_body(waiting.kind, waiting.message, job_id=waiting.job_id, status=waiting.state),
                            status_code=409)

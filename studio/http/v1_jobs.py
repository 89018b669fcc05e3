"""HTTP routes of the studio's own API for batch jobs (``/api/v1/jobs``): a script becomes a job of
one image request per scene (``studio.jobs.JobManager``).

- ``POST /jobs`` creates a job from a script, as JSON (``{"script": "<text>" | [segments], ...}``)
  or as multipart (a ``script`` file part plus a ``settings`` JSON text part), and starts it
  (``"start": false`` only stores it); ``POST /jobs/preview`` says what it would do, running nothing;
- ``GET /jobs`` lists the caller's jobs; ``GET /jobs/{id}`` is a job's status with per-scene
  progress; ``GET /jobs/{id}/result`` its images (server URLs);
- ``POST /jobs/{id}/pause``, ``/resume``, ``/cancel`` (``?index=`` for one scene), ``/retry``;
- ``GET /jobs/{id}/export`` the zip (``?format=json``: the script with each scene's images);
- ``GET /jobs/{id}/events``: server-sent events (``text/event-stream``) of its progress, ending
  with an ``end`` event once the job is finished (completed, failed or cancelled).

A job is the caller's own: another owner's job id is 404, as an unknown one. Answers never carry
the owner id or a server path; webhooks of callers with a token go to public addresses only.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from studio.errors import InvalidRequest
from studio.http.deps import Caller, get_application, get_caller
from studio.http.v1_generation import Real, Whole
from studio.http.v1_shapes import API_PREFIX, summary_with_urls

router = APIRouter(prefix="/api/v1", tags=["jobs"])

# How often the events stream looks at a running job. The job's store is read, not this process's
# runner: a job may be run by another server process (or resumed by the CLI), and the store is the
# one place that always knows. A quarter second keeps progress live at one small read per look.
EVENTS_POLL_SECONDS = 0.25
# A comment line sent when nothing changed for this long, so proxies keep an idle stream open.
EVENTS_KEEPALIVE_SECONDS = 15.0
_JOB_FIELDS = ("provider", "model", "style", "seed_policy", "base_seed", "concurrency", "total", "error",
               "warnings", "interrupted", "created_at", "updated_at", "started_at", "finished_at")
# Shown only for a hook the caller gave (Job.callers_webhook); an operator's hook is not the caller's.
_WEBHOOK_FIELDS = ("webhook_url", "webhook_delivered", "webhook_error")
_ITEM_FIELDS = ("index", "timestamp", "start", "end", "text", "prompt", "seed", "status", "progress", "attempts",
                "error", "error_kind", "warnings", "cost", "estimated_cost", "image_ids", "started_at",
                "finished_at")


class JobSettings(BaseModel):
    """How every scene of a job is made. Values are checked by the core against the model; a scene
    that cannot be made is a 400 naming its line, and nothing is started."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = None
    model: str | None = None
    style: str | None = None
    negative_prompt: str | None = None
    size: str | None = Field(None, description="WxH pixels, or W:H for a model that takes ratios")
    aspect_ratio: str | None = None
    n: Whole = Field(None, description="images per scene (default 1)")
    steps: Whole = None
    guidance: Real = None
    quality: str | None = None
    format: str | None = Field(None, description="image format: png (default), jpeg or webp")
    compression: Whole = None
    category: str | None = None
    tags: list[str] | None = None
    options: dict[str, Any] | None = Field(None, description="the model's provider options")
    postprocess: dict[str, Any] | None = None
    seed_policy: str | None = Field(None, description="per-scene (default: seed, seed+1, ...) or fixed")
    seed: Whole = Field(None, description="the base seed; random when not given")
    concurrency: Whole = Field(None, description="scenes at once, at most the provider's limit")
    webhook: str | None = Field(None, description="URL told of progress and the end (signed)")
    name: str = Field("", description="the script's file name (its extension picks the format)")
    script_format: str | None = Field(None, description="text, csv, json, srt or vtt; default: from name, then content")
    start: bool = Field(True, description="start at once (false: only store it; POST .../resume starts it)")


class JobBody(JobSettings):
    script: str | list[Any] = Field(..., description="script text, or a list of {timestamp, text} segments")


class RetryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indexes: list[int] | None = Field(None, description="scene indexes (0-based); default: every failed scene")
    include_cancelled: bool = False


# -- answers ----------------------------------------------------------------------------------------


def job_links(job_id: str) -> dict[str, str]:
    base = f"{API_PREFIX}/jobs/{job_id}"
    return {"status": base, "result": f"{base}/result", "events": f"{base}/events", "export": f"{base}/export"}


def job_status(job, *, items: bool = True) -> dict[str, Any]:
    """A job as it may leave the server: ``{job_id, status, progress (0-100), counts, done, cost,
    estimated_cost (USD), provider, model, ..., links, items: [{index, timestamp, text, status,
    progress, error, image_ids, ...}]}``. No owner id, no runner, no job secret, and the webhook
    fields only for a webhook the caller gave (the operator's document 3 hook shows as none)."""
    answer: dict[str, Any] = {"job_id": job.id, "status": job.status.value, "progress": round(job.progress, 1),
                              "counts": dict(job.counts), "done": job.done, "cost": round(job.cost, 6),
                              "estimated_cost": round(job.estimated_cost, 6), "name": job.script_name,
                              "script_format": job.script_format}
    answer.update({name: getattr(job, name) for name in _JOB_FIELDS})
    answer.update({name: getattr(job, name) if job.callers_webhook else None for name in _WEBHOOK_FIELDS})
    answer["links"] = job_links(job.id)
    if items and job.items is not None:
        answer["items"] = [{name: value for name, value in item.to_dict().items() if name in _ITEM_FIELDS}
                           for item in job.items]
    return answer


def _result(manager, job_id: str, caller: Caller) -> dict[str, Any]:
    """The job's result (``JobManager.result`` in its public form), each image with its two URLs."""
    result = manager.result(job_id, caller.owner, public=True)
    for item in result["items"]:
        item["images"] = [summary_with_urls(image) for image in item["images"]]
    result["links"] = job_links(result["job_id"])
    return result


# -- making a job -----------------------------------------------------------------------------------


def batch_values(settings: JobSettings) -> dict[str, Any]:
    """The settings as the application layer's batch form fields (``forms.BATCH_OPTION_NAMES`` and
    ``model``), read there by the one coercion of every front end."""
    return {"model": settings.model, "style": settings.style, "negative_prompt": settings.negative_prompt,
            "size": settings.size, "ratio": settings.aspect_ratio, "n": settings.n, "steps": settings.steps,
            "guidance": settings.guidance, "quality": settings.quality, "output_format": settings.format,
            "compression": settings.compression, "category": settings.category, "tags": settings.tags,
            "extra": settings.options, "postprocess": settings.postprocess, "seed_policy": settings.seed_policy,
            "seed": settings.seed, "concurrency": settings.concurrency, "webhook": settings.webhook}


def _preview(app, caller: Caller, script: Any, settings: JobSettings):
    # A caller with a token may be anyone: its webhooks go to public addresses only (no probing of the
    # server's own network). The tokenless local user is the machine's own.
    return app.preview_batch(caller.owner, script, public_webhooks=not caller.local, name=settings.name,
                             format=settings.script_format, provider=settings.provider, **batch_values(settings))


async def _read_job_request(request: Request) -> tuple[Any, JobSettings]:
    """The script and the settings of a create or preview request: JSON (``JobBody``) or multipart
    (a ``script`` file part and a ``settings`` JSON text part). A bad body is a 400 naming why."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.form()
            upload = form.get("script")
            if upload is None:
                raise InvalidRequest("a multipart job needs its script in a part named 'script' (a file or text)")
            settings_text = form.get("settings") or "{}"
            if not isinstance(settings_text, str):
                raise InvalidRequest("the 'settings' part must be JSON text, not a file")
            settings = JobSettings.model_validate_json(settings_text)
            if isinstance(upload, str):  # the script pasted as a text field
                return upload, settings
            if not settings.name and upload.filename:
                settings.name = upload.filename  # the extension picks the format (.srt, .csv...)
            return await upload.read(), settings
        if content_type not in ("application/json", ""):
            raise InvalidRequest(f"send the job as application/json or a form (multipart/form-data), "
                                 f"not {content_type[:60]}")
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("the body is not valid JSON") from None
        body = JobBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid"))
    return body.script, JobSettings.model_validate(body.model_dump(exclude={"script"}))


_CREATE_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": JobBody.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["script"], "properties": {
        "script": {"type": "string", "format": "binary", "description": "the script file (text, CSV, JSON, SRT, VTT)"},
        "settings": {"type": "string", "description": "JobSettings as JSON text"}}}}}}}


def _create(app, caller: Caller, script: Any, settings: JobSettings) -> dict[str, Any]:
    from studio.webhooks import job_secret

    preview = _preview(app, caller, script, settings)
    job = app.jobs.submit(preview) if settings.start else app.jobs.create(preview)
    answer = job_status(app.jobs.get(job.id, caller.owner))
    secret = job_secret(job)
    if secret:  # a job's own webhook secret is told once, here; no later answer carries it
        answer["webhook_secret"] = secret
    return answer


@router.post("/jobs", summary="Create (and start) a batch job from a script", status_code=201,
             openapi_extra=_CREATE_DOC)
async def create_job(request: Request, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """201 with the job's status (``job_status``) and links. Nothing is stored when a scene is
    invalid (400 naming its line), the provider is not set up (503) or the estimate passes today's
    budget (402). A job with a webhook and no operator secret gets its own, in ``webhook_secret``,
    told only here."""
    script, settings = await _read_job_request(request)
    answer = await run_in_threadpool(_create, app, caller, script, settings)
    return JSONResponse(answer, status_code=201)


@router.post("/jobs/preview", summary="What a job would do: scenes, prompts, seeds, cost, budget",
             openapi_extra=_CREATE_DOC)
async def preview_job(request: Request, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """``{scenes: [{scene, timestamp, text, prompt, seed, estimated_cost}], estimated_total,
    daily_budget, budget_remaining, within_budget, provider_ready, errors, warnings, ...}``;
    nothing runs or is stored."""
    script, settings = await _read_job_request(request)
    preview = await run_in_threadpool(_preview, app, caller, script, settings)
    return preview.to_dict()


def submit_generation(app, caller: Caller, values: dict[str, Any]) -> dict[str, Any]:
    """Run one generate request as a job of one scene (``POST /api/v1/generate`` with ``"job": true``),
    so its progress can be followed (``/events``) and its result read later. ``values`` are the
    generate request's form values (prompt, provider, model and ``forms.OPTION_NAMES``). Answers the
    job's status and links. The prompt is the scene's text (spaces and line breaks fold to one space)."""
    values = dict(values)
    if values.pop("cache", None) is not None:
        raise InvalidRequest("cache is not a job option: a job always makes new images")
    prompt, provider = values.pop("prompt"), values.pop("provider", None)
    job = app.run_batch(caller.owner, [{"text": prompt}], public_webhooks=not caller.local, name="generate",
                        provider=provider, seed_policy="fixed", **values)
    return job_status(app.jobs.get(job.id, caller.owner))


# -- watching and controlling -----------------------------------------------------------------------


@router.get("/jobs", summary="The caller's batch jobs, newest first")
def list_jobs(limit: int = Query(50, ge=1, le=100), caller: Caller = Depends(get_caller),
              app=Depends(get_application)):
    return {"jobs": [job_status(job, items=False) for job in app.jobs.list(caller.owner, limit)]}


@router.get("/jobs/{job_id}", summary="A job's status with per-scene progress")
def get_job(job_id: str, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    return job_status(app.jobs.get(job_id, caller.owner))


@router.get("/jobs/{job_id}/result", summary="A job's scenes with their images (server URLs)")
def job_result(job_id: str, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """``{job_id, status, progress, counts, total, cost, items: [{index, timestamp, text, status,
    images: [{id, file, width, height, seed, cost, url, thumbnail_url}]}]}``."""
    return _result(app.jobs, job_id, caller)


@router.post("/jobs/{job_id}/pause", summary="Pause: scenes in flight finish, no new one starts")
def pause_job(job_id: str, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    return job_status(app.jobs.pause(job_id, caller.owner))


@router.post("/jobs/{job_id}/resume", summary="Resume a paused, stored or interrupted job")
def resume_job(job_id: str, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    return job_status(app.jobs.resume(job_id, caller.owner))


@router.post("/jobs/{job_id}/cancel", summary="Cancel the job, or one scene (?index=)")
def cancel_job(job_id: str, index: int | None = Query(None, description="one scene (0-based)"),
               caller: Caller = Depends(get_caller), app=Depends(get_application)):
    return job_status(app.jobs.cancel(job_id, caller.owner, index))


@router.post("/jobs/{job_id}/retry", summary="Run failed (and optionally cancelled) scenes again")
def retry_job(job_id: str, body: RetryBody | None = None, caller: Caller = Depends(get_caller),
              app=Depends(get_application)):
    body = body or RetryBody()
    return job_status(app.jobs.retry(job_id, caller.owner, body.indexes, body.include_cancelled))


@router.get("/jobs/{job_id}/export", summary="The job's images as a zip (or ?format=json: the enriched script)",
            responses={200: {"content": {"application/zip": {}, "application/json": {}}}})
def export_job(job_id: str, format: str = Query("zip", description="zip or json"),
               caller: Caller = Depends(get_caller), app=Depends(get_application)):
    manager = app.jobs
    if format == "json":  # file names match the zip's; no server paths
        return manager.enriched_script(job_id, caller.owner, with_paths=False)
    if format != "zip":
        raise InvalidRequest(f"format must be zip or json, not {format[:20]!r}")
    data = manager.export_zip(job_id, caller.owner)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'})


# -- server-sent events -----------------------------------------------------------------------------


def sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    """One server-sent event: ``id``, ``event`` and one ``data`` line of JSON."""
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def job_events(manager, job_id: str, owner: str, request: Request, *,
                     poll: float = EVENTS_POLL_SECONDS, keepalive: float = EVENTS_KEEPALIVE_SECONDS
                     ) -> AsyncIterator[bytes]:
    """The events of one job: ``status`` (the job without its items) first and whenever it changes,
    ``item`` for each scene whose status or progress changed, and finally ``end`` (the job with its
    items) once it is finished. A paused or interrupted job keeps the stream open (it can be
    resumed); the client closes it when it no longer wants to wait."""
    sent_status: dict[str, Any] | None = None
    sent_items: dict[int, tuple] = {}
    event_id = 0
    quiet = 0.0
    yield b"retry: 2000\n\n"
    while True:
        job = await run_in_threadpool(manager.get, job_id, owner)
        changed = False
        for item in job.items or []:
            key = (item.status.value, round(item.progress, 1), item.attempts, tuple(item.image_ids))
            if sent_items.get(item.index) != key:
                sent_items[item.index] = key
                event_id += 1
                changed = True
                yield sse("item", {"job_id": job.id, **{k: v for k, v in item.to_dict().items() if k in _ITEM_FIELDS}},
                          event_id)
        status = job_status(job, items=False)
        if status != sent_status:
            sent_status = status
            event_id += 1
            changed = True
            yield sse("status", status, event_id)
        if job.status.finished:
            event_id += 1
            yield sse("end", job_status(job), event_id)
            return
        quiet = 0.0 if changed else quiet + poll
        if quiet >= keepalive:
            quiet = 0.0
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await anyio.sleep(poll)


@router.get("/jobs/{job_id}/events", summary="Server-sent events of a job's progress",
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(job_id: str, request: Request, caller: Caller = Depends(get_caller), app=Depends(get_application)):
    """``text/event-stream``: ``status`` and ``item`` events as the job moves, ``end`` when it is
    finished. An unknown job (or another owner's) is a 404 before the stream starts."""
    manager = app.jobs
    await run_in_threadpool(manager.get, job_id, caller.owner, items=False)
    return StreamingResponse(job_events(manager, job_id, caller.owner, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

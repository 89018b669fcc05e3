"""Document 3's job API over the studio's jobs: one generation you start, then poll.

A job of this API is a studio batch job of one scene per image asked (``studio.jobs``): it runs in
the studio's workers, is kept in the job store, survives a restart and shows in the studio's job
lists like any batch. Gemini answers one image per call, and a scene's images are saved when the
scene ends: one scene per image means each image is saved (file, then row) as it is answered, so a
restart after a crash redoes only the image in flight (they are made one at a time), never one
already paid for. Its status is
that of its scenes together: PENDING -> INITIALIZING -> GENERATING -> SAVING -> COMPLETED or FAILED,
with progress 0-100.

What serves it: Gemini's image models, as the document says (``PROVIDER``; the catalog's default
Gemini model for the mode). Without a Gemini key the job is refused when it is created
(``NotConfigured``: the HTTP API answers 503). The document's fields map onto the studio's request:

* ``size`` "512x512" | "1024x1024" | "1792x1024": width x height. Gemini draws aspect ratios, so the
  nearest one is made (1:1 or 16:9), and the result's ``warnings`` say so;
* ``quality`` standard | high | ultra: Gemini's image size tier 1K | 2K | 4K (``QUALITY_TIERS``);
* ``style``: the studio's style preset of that name; ``format``: the output format;
* ``input_image_url``: image-to-image from that image. It is fetched through the studio's outbound
  guard (``studio.netfetch``: public addresses only) when the job is created, so a bad address or a
  file that is no image is refused at once, and again when the job runs.

Webhooks: when the operator sets ``STUDIO_JOB_API_WEBHOOK_URL`` (``Settings.job_api_webhook_url``),
every job of this API posts document 3's body (``studio.webhooks.job_api_payload``) there when it
completes, fails, or waits (paused, retrying). Each delivery carries the studio's HMAC signature
(keyed by ``STUDIO_WEBHOOK_SECRET``, else by the shared secret) and, when the operator sets
``STUDIO_WEBHOOK_SHARED_SECRET``, that secret in ``X-Webhook-Secret`` as document 3 does. Only the
operator's URL ever gets the shared secret: callers cannot name a webhook URL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.base import MISSING_KEY
from studio.errors import InvalidRequest, NotConfigured
from studio.netfetch import is_url
from studio.types import GenerationRequest, Mode

if TYPE_CHECKING:
    from studio.jobs import Job, JobItem, JobManager
    from studio.service import Studio
    from studio.types import ImageRecord

PROVIDER = "gemini"
SIZES = ("512x512", "1024x1024", "1792x1024")
FORMATS = ("PNG", "JPEG", "WEBP")
STYLES = ("photorealistic", "artistic", "illustration", "3d-render")
QUALITY_TIERS = {"standard": "1K", "high": "2K", "ultra": "4K"}  # quality -> Gemini's image_size
MAX_IMAGES = 4
SCRIPT_NAME = "job-api"  # the job's script name: how the studio's job lists show where it came from
# Job statuses of this API (document 3's names).
PENDING, COMPLETED, FAILED = "PENDING", "COMPLETED", "FAILED"
_STAGE_MESSAGES = {"PENDING": "waiting to start", "INITIALIZING": "preparing the request",
                   "GENERATING": "generating the images", "SAVING": "saving the images"}


@dataclass
class JobRequest:
    """What a caller asks for, as document 3 names it. ``check`` refuses what it does not allow."""

    prompt: str
    input_image_url: str | None = None
    num_images: int = 1
    size: str = "1024x1024"
    format: str = "PNG"
    style: str | None = None  # None: no style preset
    quality: str = "standard"

    def check(self) -> "JobRequest":
        """This request with its choices in their canonical spelling (format upper case, the others
        lower case). Raises InvalidRequest naming the first field that is not allowed."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidRequest("prompt is required: describe the image to generate")
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int) \
                or not 1 <= self.num_images <= MAX_IMAGES:
            raise InvalidRequest(f"num_images must be a whole number from 1 to {MAX_IMAGES}, not {self.num_images!r}")
        size = str(self.size).strip().lower()
        fmt = str(self.format).strip().upper()
        style = None if self.style is None else str(self.style).strip().lower()
        quality = str(self.quality).strip().lower()
        for name, value, allowed in (("size", size, SIZES), ("format", fmt, FORMATS),
                                     ("quality", quality, tuple(QUALITY_TIERS))):
            if value not in allowed:
                raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}, not {_shown(value)}")
        if style is not None and style not in STYLES:
            raise InvalidRequest(f"style must be one of {', '.join(STYLES)}, not {_shown(style)}")
        url = self.input_image_url.strip() if isinstance(self.input_image_url, str) else self.input_image_url
        if url is not None and url != "" and not is_url(url):
            raise InvalidRequest("input_image_url must be an http:// or https:// URL")
        return JobRequest(self.prompt, url or None, self.num_images, size, fmt, style, quality)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- creating ------------------------------------------------------------------------------------


def create(studio: "Studio", owner: str, request: JobRequest, *, provider: str = PROVIDER) -> "Job":
    """Start a job for ``owner`` (the studio's owner key) and return it (``Job.id`` is the job_id).

    Raises InvalidRequest for a request ``JobRequest.check`` refuses or validation refuses (an
    input image URL that the outbound guard refuses, or that is not an image), NotConfigured when
    ``provider`` lacks its key or the operator's webhook has no secret to sign with, and
    BudgetExceeded when today's budget cannot hold it. Nothing is stored or paid when it raises."""
    from studio.jobs import get_manager
    from studio.jobs.runner import INPUT_IMAGE_URL_OPTION
    from studio.scripts import parse_script
    from studio.webhooks import JOB_API_OPTION

    request = request.check()
    manager = get_manager(studio)
    width, height = (int(side) for side in request.size.split("x"))
    mode = Mode.IMAGE_TO_IMAGE if request.input_image_url else Mode.TEXT_TO_IMAGE
    handler = studio.provider(provider)
    ready = handler.status()
    if not ready.ready:  # said before the input image is fetched (the job would be refused anyway)
        raise NotConfigured(f"{handler.name} is not ready: {ready.reason}", provider=handler.name,
                            needs_key=ready.state == MISSING_KEY)
    model = handler.model(None, owner, mode.value)
    extra = {"image_size": QUALITY_TIERS[request.quality]} if "image_size" in model.options else {}
    webhook_url = _webhook_url(studio)
    # One scene of one image per image asked: each is saved as it arrives (see the module's notes).
    fields = dict(provider=provider, model=model.id, style=request.style, width=width, height=height,
                  n=1, output_format=request.format.lower(), extra=extra)
    if request.input_image_url:
        # Fetched now, through the guard, so a refused address or a file that is no image is a 400 before
        # anything is stored; the job fetches it again when it runs (it keeps the URL, not the bytes).
        studio.prepare(GenerationRequest(prompt=request.prompt, mode=mode, init_image=request.input_image_url,
                                         user=owner, **fields))
    # The images are made one after another, as one request's are: a kill then loses one call at most.
    preview = manager.preview(parse_script([request.prompt] * request.num_images, name=SCRIPT_NAME), user=owner,
                              concurrency=1, **fields)
    if not preview.errors and preview.items:
        # A job of this API speaks document 3 in its status, result and webhooks.
        preview.job.options[JOB_API_OPTION] = {"size": request.size, "format": request.format,
                                               "quality": request.quality}
        if request.input_image_url:
            preview.job.options[INPUT_IMAGE_URL_OPTION] = request.input_image_url
        preview.job.webhook_url = webhook_url
    return manager.submit(preview)


def _webhook_url(studio: "Studio") -> str | None:
    """The operator's webhook URL for this API, checked; NotConfigured when it is set but nothing
    can sign its deliveries (there are no unsigned webhooks)."""
    from studio.webhooks import check_url

    url = studio.settings.job_api_webhook_url
    if not url:
        return None
    if not _signing_secret(studio):
        raise NotConfigured("STUDIO_JOB_API_WEBHOOK_URL is set but neither STUDIO_WEBHOOK_SECRET nor "
                            "STUDIO_WEBHOOK_SHARED_SECRET is: the job API's webhooks cannot be signed")
    return check_url(url)  # the operator's own receiver: a private address is allowed, link-local never


def _signing_secret(studio: "Studio") -> str | None:
    settings = studio.settings
    return settings.secret("STUDIO_WEBHOOK_SECRET") or settings.secret("STUDIO_WEBHOOK_SHARED_SECRET")


# -- reading -------------------------------------------------------------------------------------


def get(studio: "Studio", owner: str, job_id: str) -> "Job":
    """``owner``'s job of this API. NotFound for an unknown id, another owner's job, and a studio
    batch job that is not of this API (its status would not fit the document's)."""
    from studio.errors import NotFound
    from studio.jobs import get_manager
    from studio.webhooks import JOB_API_OPTION

    job = get_manager(studio).get(job_id, owner)
    if not job.options.get(JOB_API_OPTION) or not job.items:
        raise NotFound(f"no job with id {job_id!r}")
    return job


def status(job: "Job") -> dict[str, Any]:
    """``{job_id, status, message, progress (0-100), created_at, updated_at}`` (ISO 8601, UTC) and,
    when validation adjusted the request, ``warnings``. The job's scenes (one per image; a job made
    before that has one scene of every image) speak as one: see ``_lead``."""
    from studio.jobs import ItemStatus

    item = _lead(job)
    state = _state(job, item)
    done = [100.0 if scene.status is ItemStatus.COMPLETED else scene.progress for scene in job.items]
    progress = 100.0 if state == COMPLETED else round(sum(done) / len(done), 1)
    answer: dict[str, Any] = {"job_id": job.id, "status": state, "message": _message(job, item, state),
                              "progress": progress, "created_at": job.created_at,
                              "updated_at": max(filter(None, (job.updated_at, *(i.updated_at for i in job.items))))}
    warnings = [warning for scene in job.items for warning in scene.warnings]
    if warnings or job.warnings:
        answer["warnings"] = list(dict.fromkeys([*warnings, *job.warnings]))
    return answer


def _lead(job: "Job") -> "JobItem":
    """The scene whose status is the job's: the first that failed or was cancelled, else the first
    not completed yet, else (all completed) the last."""
    from studio.jobs import ItemStatus

    ended_badly = (ItemStatus.FAILED, ItemStatus.CANCELLED)
    return next((item for item in job.items if item.status in ended_badly),
                next((item for item in job.items if item.status is not ItemStatus.COMPLETED), job.items[-1]))


def _state(job: "Job", item: "JobItem") -> str:
    """The document's status: the lead scene's (``_lead``), with a cancelled job or scene as FAILED
    (the document has no other end). The stages only move forward, as one request's would: once an
    image is done, the next scene's start is still GENERATING, and SAVING waits for the last scene."""
    from studio.jobs import ItemStatus, JobStatus

    if item.status is ItemStatus.COMPLETED:
        return COMPLETED
    if item.status in (ItemStatus.FAILED, ItemStatus.CANCELLED) or job.status in (JobStatus.FAILED,
                                                                                   JobStatus.CANCELLED):
        return FAILED
    state = item.status.value
    remaining = sum(scene.status is not ItemStatus.COMPLETED for scene in job.items)
    if state == "SAVING" and remaining > 1:
        return "GENERATING"
    if state in ("PENDING", "INITIALIZING") and remaining < len(job.items):
        return "GENERATING"
    return state


def _message(job: "Job", item: "JobItem", state: str) -> str:
    from studio.jobs import ItemStatus, JobStatus

    if state == COMPLETED:
        count = sum(len(scene.image_ids) for scene in job.items)
        return f"{count} image{'s' if count != 1 else ''} generated"
    if state == FAILED:
        if item.status is ItemStatus.CANCELLED or job.status is JobStatus.CANCELLED:
            return f"cancelled: {item.error or job.error or 'the job was cancelled'}"
        return item.error or job.error or "the job failed"
    if job.status is JobStatus.PAUSED:
        return f"paused: {job.error or 'resume the job to continue'}"
    if job.interrupted:
        return "interrupted: the server running it stopped; it resumes when the studio starts again"
    if state == PENDING and item.error:  # waiting out a rate limit, or a retry after a failed attempt
        return item.error
    return _STAGE_MESSAGES.get(state, state.lower())


def result(studio: "Studio", job: "Job") -> dict[str, Any]:
    """A finished job: ``{job_id, status: "COMPLETED", message, images: [...], metadata: {...}}``
    or ``{job_id, status: "FAILED", message, errors: [...]}``. Each image is ``{id, file_path
    (its path in the studio's image store, never a server directory), url (a server route),
    description, format, size_bytes, dimensions "WxH"}``. Raises ``NotFinished`` while it runs."""
    from studio.jobs.export import item_records

    answer = status(job)
    state = answer["status"]
    base = {"job_id": job.id, "status": state, "message": answer["message"]}
    if "warnings" in answer:
        base["warnings"] = answer["warnings"]
    if state == FAILED:
        from studio.jobs import ItemStatus

        errors = [item.error for item in job.items if item.status in (ItemStatus.FAILED, ItemStatus.CANCELLED)
                  and item.error]
        return {**base, "errors": list(dict.fromkeys(errors)) or [job.error or "the job failed"]}
    if state != COMPLETED:
        raise NotFinished(job.id, state)
    found = item_records(studio, job.items)
    records = [found[image_id] for item in job.items for image_id in item.image_ids if image_id in found]
    return {**base, "images": [image_answer(record) for record in records],
            "metadata": _metadata(job, records)}


class NotFinished(InvalidRequest):
    """A result was asked for a job that is still running: poll its status until COMPLETED or FAILED."""

    kind = "not_finished"

    def __init__(self, job_id: str, state: str):
        super().__init__(f"job {job_id} is {state}, not finished: poll /api/images/status/{job_id} until it is "
                         f"COMPLETED or FAILED")
        self.job_id = job_id
        self.state = state


def image_answer(record: "ImageRecord") -> dict[str, Any]:
    """One image as document 3 lists it (plus its ``id``)."""
    return {"id": record.id, "file_path": store_path(record), "url": f"/api/v1/images/{record.id}/file",
            "description": str(record.params.get("model_text") or record.user_prompt or record.prompt),
            "format": record.format.upper(), "size_bytes": record.size_bytes,
            "dimensions": f"{record.width}x{record.height}"}


def store_path(record: "ImageRecord") -> str:
    """Where the image lies in the studio's file store, e.g. ``images/uncategorized/2026/11/29/<id>.png``:
    its key, relative to the data directory (or the S3 prefix), never the server's own directories."""
    return record.path


def _metadata(job: "Job", records: list["ImageRecord"]) -> dict[str, Any]:
    first = records[0] if records else None
    usage = (first.params.get("usage") if first is not None else None) or {}
    return {"model_name": job.model,
            "version": str((first.params.get("model_version") if first is not None else None) or job.model),
            "generation_time_seconds": round(max((r.generation_time for r in records), default=0.0), 3),
            "input_tokens": usage.get("prompt_tokens"),
            "output_size_bytes": sum(r.size_bytes for r in records),
            "timestamp": max(filter(None, (item.finished_at for item in job.items)), default=None)
            or job.finished_at or job.updated_at}


# -- webhooks ------------------------------------------------------------------------------------


def notify(manager: "JobManager", job: "Job", event: str, item: "JobItem | None") -> None:
    """Send document 3's webhook for a job event of the studio's runner (``JobManager`` calls this
    for the jobs of this API). Progress is the whole job's (all its scenes, as the store has them);
    the job's end is said by its own event, which follows the last scene's at once."""
    from studio.webhooks import SHARED_SECRET_HEADER, job_api_payload

    studio = manager.studio
    if event == "job.progress" and item is None:
        return
    if event == "job.progress" or not job.items:
        job = manager.store.get(job.id)
        if job is None or not job.items:
            return
    shown = status(job)
    if event == "job.progress" and shown["status"] in (COMPLETED, FAILED):
        return
    settings = studio.settings
    common = {"environment": settings.environment, "timestamp": shown["updated_at"]}
    if shown["status"] == COMPLETED:
        payload = job_api_payload(job.id, COMPLETED, data=result(studio, job), **common)
    elif shown["status"] == FAILED:
        payload = job_api_payload(job.id, FAILED, error_message=shown["message"], **common)
    else:  # waiting (paused, retrying) or running: its stage and progress
        payload = job_api_payload(job.id, shown["status"], progress=shown["progress"], **common)
        payload["message"] = shown["message"]
    shared = settings.secret("STUDIO_WEBHOOK_SHARED_SECRET")
    manager.webhooks.send(job.webhook_url, event, payload, job_id=job.id, secret=_signing_secret(studio),
                          headers={SHARED_SECRET_HEADER: shared} if shared else None)


__all__ = ["JobRequest", "NotFinished", "PROVIDER", "SIZES", "FORMATS", "STYLES", "QUALITY_TIERS", "MAX_IMAGES",
           "create", "get", "status", "result", "image_answer", "store_path", "notify"]

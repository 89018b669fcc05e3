"""Image Studio: generate, edit and keep images from many providers behind one interface.

The library API::

    from studio import generate, edit, variations, history
    result = generate("a lighthouse at dusk", style="cinematic", seed=7)
    print(result.images[0].path)

Importing ``studio`` is light: no torch, diffusers, Streamlit or cloud SDK is imported until a
provider that needs one runs.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

from studio.errors import (BudgetExceeded, Cancelled, ContentBlocked, InvalidRequest, NotConfigured, NotFound,
                           ProviderFailure, ProviderTimeout, QuotaExhausted, RateLimited, StudioError,
                           missing_file)
from studio.types import GenerationRequest, ImageRecord, Mode

__version__ = "0.1.0"

_default: dict[str, Any] = {}
_default_lock = threading.Lock()


def get_studio(home: str | Path | None = None):
    """The shared ``Studio`` for ``home`` (default: $STUDIO_HOME), created on first use."""
    from studio.service import Studio
    from studio.config import default_home

    key = str(Path(home).expanduser() if home else default_home())
    with _default_lock:
        if key not in _default:
            _default[key] = Studio(key)
        return _default[key]


def generate(prompt: str, *, home: str | Path | None = None, progress=None, **options: Any):
    """Generate images from a prompt. Options are ``GenerationRequest`` fields (provider, model,
    style, width, height, n, seed, steps, guidance, negative_prompt, output_format, ...)."""
    return get_studio(home).generate(GenerationRequest(prompt=prompt, **options), progress=progress)


def edit(image, prompt: str, *, mask=None, strength: float | None = None, home: str | Path | None = None,
         progress=None, **options: Any):
    """Image-to-image from ``image`` (a path, bytes, a Pillow image or a stored image id); with
    ``mask`` (white = repaint) it inpaints."""
    return get_studio(home).edit(image, prompt, mask=mask, strength=strength, progress=progress, **options)


def variations(source=None, *, prompt: str | None = None, n: int = 4, home: str | Path | None = None,
               **options: Any):
    """N variations of an image or a prompt; ``scene=True`` varies framing and lighting."""
    return get_studio(home).variations(source, prompt=prompt, n=n, **options)


def history(*, home: str | Path | None = None, **filters: Any):
    """A page of stored images: filters text, provider, model, tag, category, date_from, date_to,
    limit, offset, owner."""
    return get_studio(home).history(**filters)


def providers(*, home: str | Path | None = None):
    return get_studio(home).provider_statuses()


def info(image, *, home: str | Path | None = None) -> dict[str, Any]:
    """The generation metadata embedded in an image file ("PNG info")."""
    return get_studio(home).info(image)


def save_base64(data: str, path: str | Path) -> Path:
    """Decode base64 image data (optionally a ``data:`` URI) into ``path``, written atomically."""
    from studio.imaging import open_checked
    from studio.storage.files import LocalFileStore

    text = data.split(",", 1)[1] if data.strip().startswith("data:") else data
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"not valid base64: {exc}") from None
    open_checked(raw, "decoded image")  # refuse anything that is not an image
    target = Path(path).expanduser().resolve()
    LocalFileStore(target.parent).put(target.name, raw)
    return target


def load_base64(path: str | Path) -> str:
    """The file at ``path`` as base64 text."""
    target = Path(path)
    if not target.is_file():
        raise missing_file(target)
    return base64.b64encode(target.read_bytes()).decode("ascii")


def job_manager(*, home: str | Path | None = None):
    """The batch ``JobManager`` of the shared studio (preview, submit, get, cancel, retry, pause,
    resume, export_zip, enriched_script)."""
    from studio.jobs import get_manager

    return get_manager(get_studio(home))


def _script_source(script):
    if isinstance(script, Path):
        return script, script.name
    if isinstance(script, str) and "\n" not in script and len(script) < 4096:
        try:
            path = Path(script).expanduser()
            if path.is_file():
                return path, path.name
        except OSError:
            pass
    return script, ""


def preview_batch(script, *, home: str | Path | None = None, **options: Any):
    """What ``batch`` would do, without running: scenes, expanded prompts, seeds, estimated cost and
    the budget check (a ``BatchPreview``; ``.to_dict()`` for plain data)."""
    source, name = _script_source(script)
    options.setdefault("name", name)
    return job_manager(home=home).preview(source, **options)


def batch(script, *, home: str | Path | None = None, wait: bool = True, timeout: float | None = None,
          **options: Any) -> dict[str, Any]:
    """Illustrate a script: one image per scene, kept with its timestamp.

    ``script`` is a file path, script text (plain lines, CSV, JSON, SRT, WebVTT) or a list of
    ``{"timestamp", "text"}`` segments. Options: provider, model, style, n, width, height, quality,
    negative_prompt, seed_policy ("per-scene" | "fixed"), seed, concurrency, webhook, user, format.
    Returns ``{"job_id", "status", "items": [{"index", "timestamp", "text", "status", "images"}], ...}``;
    with ``wait=False`` it returns as soon as the job is running (poll ``job(job_id)``). Webhooks are
    always signed: with STUDIO_WEBHOOK_SECRET, or else with a secret made for this job, returned here
    once as ``"webhook_secret"`` (no later answer carries it)."""
    from studio.webhooks import job_secret

    manager = job_manager(home=home)
    source, name = _script_source(script)
    options.setdefault("name", name)
    created = manager.submit(source, **options)
    if wait:
        manager.wait(created.id, created.owner, timeout=timeout)
    result = manager.result(created.id, created.owner)
    if job_secret(created):
        result["webhook_secret"] = job_secret(created)
    return result


def job(job_id: str, *, home: str | Path | None = None, user: str = "local") -> dict[str, Any]:
    """A batch job's status and results (the same shape ``batch`` returns)."""
    return job_manager(home=home).result(job_id, user)


def list_jobs(*, home: str | Path | None = None, user: str = "local", limit: int = 50) -> list[dict[str, Any]]:
    """Batch jobs, newest first, with status, counts, progress and cost. (Not ``jobs``: that name is
    the ``studio.jobs`` package.)"""
    return [j.to_dict(items=False) for j in job_manager(home=home).list(user, limit)]


__all__ = [
    "batch", "preview_batch", "job", "list_jobs", "job_manager",
    "generate", "edit", "variations", "history", "providers", "info", "save_base64", "load_base64", "get_studio",
    "GenerationRequest", "ImageRecord", "Mode", "StudioError", "InvalidRequest", "NotFound", "NotConfigured",
    "ContentBlocked", "RateLimited", "QuotaExhausted", "ProviderTimeout", "ProviderFailure", "BudgetExceeded",
    "Cancelled",
]

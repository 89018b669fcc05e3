"""What each Gradio action does, in plain Python: JSON-able values and file paths in and out.

The UI handlers and the named API endpoints (``/generate``, ``/edit``, ...) both call these, so a
visitor clicking a button and a ``gradio_client`` script get the same validation, the same owner
checks and the same messages. Nothing here builds widgets.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gradio as gr

# BATCH_OPTION_NAMES and ERROR_TITLES are re-exported: the API module and tests read them from here.
from studio.application import (BATCH_OPTION_NAMES, ERROR_TITLES, OPTION_NAMES, Application,  # noqa: F401
                                coerce_fields, error_title)
from studio.copies import copies, copy_name, deleted_ids, remove, remove_folder, write_ids
from studio.errors import InvalidRequest, StudioError
from studio.exports import build_zip
from studio.identity import VisitorIds
from studio.imaging import EXTENSIONS, MAX_INPUT_BYTES
from studio.service import GenerationResult, Studio
from studio.types import ImageRecord, ProgressEvent

log = logging.getLogger("studio.gradio")

# OPTION_NAMES, BATCH_OPTION_NAMES and ERROR_TITLES are the application layer's (studio.application),
# imported above and kept under these names for the API module and callers of this one.
_IMAGE_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


# -- errors ------------------------------------------------------------------------------------


@contextmanager
def visitor_errors(*, api: bool = False) -> Iterator[None]:
    """Turn every failure into a ``gr.Error`` with the studio's message; never a traceback.

    The browser's error toast renders a ``gr.Error`` message as HTML, so for the UI's own events it
    is escaped there. ``api=True`` is for the named API endpoints: their callers get the message as
    JSON text, which is shown as written, so it goes out plain (``-->`` stays ``-->``). Anything that
    is not a ``StudioError`` is a bug: it is logged here with its traceback and the visitor gets a
    short, honest line."""
    try:
        yield
    except gr.Error:
        raise
    except StudioError as error:
        message = error.message if api else html.escape(error.message, quote=False)
        raise gr.Error(message, title=error_title(error), print_exception=False) from None
    except Exception as exc:
        log.exception("unexpected error in a Gradio handler")
        raise gr.Error(f"Something went wrong on the server ({type(exc).__name__}); the details are in its log.",
                       title="Server error", print_exception=False) from None


# -- progress and stopping ---------------------------------------------------------------------


def progress_reporter(progress: Callable[..., Any] | None) -> Callable[[ProgressEvent], None] | None:
    """The studio's progress events drawn on a ``gr.Progress`` bar (per step for local models)."""
    if progress is None:
        return None

    def report(event: ProgressEvent) -> None:
        desc = event.message or event.stage
        if event.step is not None and event.total_steps:
            desc = f"{event.stage}: step {event.step}/{event.total_steps}"
        progress(event.fraction, desc=desc)

    return report


class StopSwitches:
    """One cancel flag per browser session, so the Stop button stops that visitor's run only."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, session: str | None) -> threading.Event:
        event = threading.Event()
        if session:
            with self._lock:
                self._events[session] = event
        return event

    def stop(self, session: str | None) -> bool:
        with self._lock:
            event = self._events.pop(session or "", None)
        if event is None:
            return False
        event.set()
        return True

    def disarm(self, session: str | None, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session or "") is event:
                del self._events[session or ""]

    @contextmanager
    def running(self, session: str | None) -> Iterator[threading.Event]:
        event = self.arm(session)
        try:
            yield event
        finally:
            self.disarm(session, event)


# -- files handed to Gradio --------------------------------------------------------------------


class Exporter:
    """Copies of stored images (and zips) in a temporary folder, for Gradio to hand out.

    Gradio copies what a handler returns into its own cache and serves only that copy (under a
    hash), never this folder or the studio's. The studio's folder is never added to Gradio's
    allowed paths: that would let anyone who guessed a path fetch another visitor's image. Each
    visitor gets a sub-folder named by a hash of their owner id; old files are swept away.

    Deleting an image removes every copy that is still served (``forget``): ours and Gradio's cached
    copies of them. Copies of images deleted elsewhere (the CLI, another server, while this one was
    down) go at start and at each sweep (``purge``). The folder is the same for each data directory
    across restarts, so exports of earlier runs are swept instead of piling up."""

    def __init__(self, studio: Studio, root: Path | None = None, max_age: float = 6 * 3600,
                 cache_dir: Path | None = None):
        self.studio = studio
        self.root = Path(root) if root else default_export_root(studio)
        self.root.mkdir(parents=True, exist_ok=True)
        # Gradio's file cache (GRADIO_TEMP_DIR): where it keeps, and serves, its copy of each file we return.
        self.cache_dir = Path(cache_dir or gr.utils.get_upload_folder())
        self.max_age = max_age
        self._last_sweep = time.monotonic()
        self._sweep_old(time.time() - max_age)  # exports of an earlier run that are past their time
        self.purge()

    def _folder(self, owner: str) -> Path:
        # Keyed: a plain hash of "hf:<name>" or "user:<email>" could be confirmed by anyone guessing it.
        folder = self.root / VisitorIds.for_home(self.studio.home).opaque(owner, "export-folder")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image_file(self, record: ImageRecord, owner: str) -> str:
        self.sweep()
        target = self._folder(owner) / copy_name(record)
        if not target.exists():
            self._write(target, self.studio.image_bytes(record))
        return str(target)

    def thumbnail_file(self, record: ImageRecord, owner: str) -> str:
        target = self._folder(owner) / copy_name(record, thumbnail=True)
        if not target.exists():
            self._write(target, self.studio.storage.read_thumbnail(record))
        return str(target)

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        # Several galleries may export the same image at once: each writes its own partial file and
        # the atomic rename makes the last one win, never a half-written file.
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        partial.write_bytes(data)
        partial.replace(target)

    def zip_file(self, records: list[ImageRecord], owner: str, name: str, **zip_options: Any) -> str:
        """A zip of ``records`` with manifest.csv/json (``studio.exports.build_zip``)."""
        if not records:
            raise InvalidRequest("there are no images to put in a zip")
        return self.bytes_file(build_zip(records, self.studio.image_bytes, **zip_options), owner, f"{name}.zip")

    def bytes_file(self, data: bytes, owner: str, file_name: str, image_ids: Iterable[str] = ()) -> str:
        """``data`` as a file named ``file_name`` in a folder of its own (downloads keep the name).
        ``image_ids``: the stored images it was made from, when neither its name nor a zip manifest
        says so (a collage), so that deleting one of them removes it too."""
        self.sweep()
        target = Path(tempfile.mkdtemp(prefix="f-", dir=self._folder(owner))) / file_name
        if image_ids:
            write_ids(target, image_ids)
        self._write(target, data)
        return str(target)

    def forget(self, image_ids: Iterable[str]) -> None:
        """Remove every served copy of these (just deleted) images: exported files, zips and
        collages holding them, and Gradio's cached copies of each."""
        gone = set(image_ids)
        self._remove_copies(gone.__contains__, gone.__contains__)

    def purge(self) -> None:
        """Remove the served copies of every image this studio no longer has: in our own folder any
        copy of an image that is not stored; in Gradio's cache (which other apps on this machine may
        share) only copies of images this studio deleted (``studio.copies.deleted_ids``)."""
        storage = self.studio.storage
        deleted = deleted_ids(self.studio.home)
        self._remove_copies(lambda image_id: storage.get(image_id) is None, deleted.__contains__)

    def _remove_copies(self, gone_here: Callable[[str], bool], gone_cached: Callable[[str], bool]) -> None:
        for path in list(copies(self.root, gone_here)):
            self._remove_cached_copy(path)
            remove(path, root=self.root)
        for path in list(copies(self.cache_dir, gone_cached)):  # cached copies whose original went earlier
            remove(path, root=self.cache_dir)

    def _remove_cached_copy(self, path: Path) -> None:
        """Gradio's cached copy of our file ``path``: its folder is named by a hash of the content."""
        from gradio.processing_utils import hash_file

        try:
            cached = self.cache_dir / hash_file(path)
        except OSError as exc:
            log.warning("cannot hash the export %s to find its cached copy: %s", path.name, exc)
            return
        if cached.is_dir():
            remove_folder(cached)

    def sweep(self) -> None:
        """Delete exported files older than ``max_age`` and copies of deleted images (at most once a minute)."""
        now = time.monotonic()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        self._sweep_old(time.time() - self.max_age)
        self.purge()

    def _sweep_old(self, cutoff: float) -> None:
        for folder in self.root.iterdir():
            for item in folder.iterdir() if folder.is_dir() else []:
                try:
                    if item.stat().st_mtime < cutoff:
                        shutil.rmtree(item) if item.is_dir() else item.unlink()
                except OSError as exc:  # gone already, or not ours to delete: the next sweep tries again
                    log.warning("could not sweep an old export %s: %s", item.name, exc)


def default_export_root(studio: Studio) -> Path:
    """The export folder of the studio at ``studio.home``: the same on every start, one per data directory."""
    home = hashlib.sha256(str(Path(studio.home).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"image-studio-gradio-{home}"


# -- JSON shapes -------------------------------------------------------------------------------


# The fields of ``ImageRecord.public_dict`` an API answer carries, under their own names.
_PUBLIC_IMAGE_FIELDS = ("id", "width", "height", "format", "provider", "model", "mode", "negative_prompt", "style",
                        "seed", "category", "tags", "parent_id", "created_at", "generation_time", "sha256")


def public_image(record: ImageRecord) -> dict[str, Any]:
    """What a visitor or API client learns about an image: ``ImageRecord.public_dict`` (no owner,
    no server paths), with the file name it is served under and the main parameters at the top."""
    shown = record.public_dict()
    params = shown["params"] or {}
    return {
        **{name: shown[name] for name in _PUBLIC_IMAGE_FIELDS},
        "file": f"{record.id}.{EXTENSIONS.get(record.format, record.format)}",
        "prompt": shown["user_prompt"] or shown["prompt"], "full_prompt": shown["prompt"],
        "steps": params.get("steps"), "guidance": params.get("guidance"), "strength": params.get("strength"),
        "cost": round(shown["cost"], 6),
    }


def result_json(result: GenerationResult) -> dict[str, Any]:
    return {"images": [public_image(r) for r in result.images], "cost": round(result.cost, 6),
            "estimated_cost": round(result.estimated_cost, 6), "cached": result.cached,
            "request_id": result.request_id, "duration": round(result.duration, 3), "warnings": result.warnings}


# -- inputs ------------------------------------------------------------------------------------


def request_fields(options: Any, allowed: tuple[str, ...] = OPTION_NAMES) -> dict[str, Any]:
    """``options`` from an API caller (a JSON object, or None) as request fields (``GenerationRequest``'s,
    or with ``allowed=BATCH_OPTION_NAMES`` a batch's): the application layer's one coercion
    (``studio.application.coerce_fields``). A "W:H" size is given a model by the action that runs it."""
    if isinstance(options, dict) and any(":" in str(options.get(name) or "") for name in ("size", "ratio")):
        return dict(options)  # worked out with the chosen model by studio.application
    return coerce_fields(options, allowed=allowed)


def upload_bytes(path: Any, what: str) -> bytes | None:
    """The bytes of a file Gradio received (a path in its upload cache), size-checked first."""
    if path in (None, ""):
        return None
    file = Path(getattr(path, "path", path))
    if not file.is_file():
        raise InvalidRequest(f"the {what} upload did not arrive; upload it again")
    if file.stat().st_size > MAX_INPUT_BYTES:
        raise InvalidRequest(f"the {what} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    return file.read_bytes()


def checked_image_id(image_id: Any) -> str | None:
    """A stored image id as the caller wrote it, refusing anything shaped like a path."""
    text = str(image_id or "").strip()
    if not text:
        return None
    if not _IMAGE_ID.fullmatch(text):
        raise InvalidRequest(f"{text[:80]!r} is not an image id")
    return text


# -- the actions -------------------------------------------------------------------------------


class Actions:
    """The Gradio app's adapter over ``studio.application.Application``: the same actions, plus the
    files Gradio hands out. Every rule (coercion, visibility, batch watching) is the application's."""

    def __init__(self, studio: Studio, exporter: Exporter | None):
        self.studio = studio
        self.exporter = exporter
        self.app = Application(studio)

    def files(self, records: list[ImageRecord], owner: str) -> list[str]:
        return [self.exporter.image_file(r, owner) for r in records]

    def generate(self, owner: str, prompt: str, provider: str | None = None, model: str | None = None,
                 progress=None, cancel: threading.Event | None = None, **fields: Any) -> GenerationResult:
        values = {"prompt": prompt, "provider": provider, "model": model, **fields}
        return self.app.generate_from_form(owner, values, progress=progress_reporter(progress), cancel=cancel)

    def edit(self, owner: str, prompt: str, *, image: bytes | None = None, image_id: str | None = None,
             mask: Any = None, provider: str | None = None, model: str | None = None, progress=None,
             cancel: threading.Event | None = None, **fields: Any) -> GenerationResult:
        values = {"prompt": prompt, "provider": provider, "model": model, **fields}
        return self.app.edit_from_form(owner, values, image=image, image_id=checked_image_id(image_id), mask=mask,
                                       progress=progress_reporter(progress), cancel=cancel)

    def variations(self, owner: str, *, image: bytes | None = None, image_id: str | None = None,
                   prompt: str | None = None, n: int = 4, scene: bool = False, provider: str | None = None,
                   model: str | None = None, progress=None, cancel: threading.Event | None = None,
                   **fields: Any) -> GenerationResult:
        values = {"prompt": prompt, "provider": provider, "model": model, **fields}
        return self.app.variations_from_form(owner, values, image=image, image_id=checked_image_id(image_id), n=n,
                                             scene=scene, progress=progress_reporter(progress), cancel=cancel)

    def history(self, owner: str, *, search: str = "", provider: str = "", model: str = "", tag: str = "",
                category: str = "", limit: int = 24, offset: int = 0):
        """A page of what ``owner`` may see: their images and shared ones (``Application.history``)."""
        return self.app.history(owner, {"text": search, "provider": provider, "model": model, "tag": tag,
                                        "category": category}, limit=limit, offset=offset)

    # -- batches --------------------------------------------------------------------------------

    @property
    def jobs(self):
        return self.app.jobs

    def preview_batch(self, owner: str, script: str | bytes, *, name: str = "", format: str | None = None,
                      **options: Any):
        """What a batch would do. The script is text (or an upload's bytes), never a path: a visitor
        must not make the server read its own files; only public webhook addresses are called."""
        return self.app.preview_batch(owner, script, public_webhooks=True, name=name, format=format, **options)

    def run_batch(self, owner: str, script: str | bytes, **options: Any):
        """Start a batch job and return it; it runs in the studio's worker threads."""
        return self.app.run_batch(owner, script, public_webhooks=True, **options)

    def watch_batch(self, owner: str, job_id: str, *, progress=None, timeout: float | None = None):
        """``Application.watch_batch``: the job each time it changes, until it stops."""
        return self.app.watch_batch(owner, job_id, progress=progress, timeout=timeout)

    def job_records(self, owner: str, job) -> list[ImageRecord]:
        """The job's images in scene order."""
        return self.app.job_records(owner, job)

    def job_json(self, owner: str, job_id: str) -> dict[str, Any]:
        """The job's status and items with their images (ids, files, seeds; no server paths)."""
        return self.jobs.result(job_id, owner, public=True)

    def providers(self) -> dict[str, Any]:
        return {"default_provider": self.studio.settings.default_provider,
                "providers": [s.to_dict() for s in self.studio.provider_statuses()],
                "styles": [{"name": s.name, "label": s.label} for s in self.studio.styles.all()]}

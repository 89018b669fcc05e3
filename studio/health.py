"""Is each back end of the studio answering? One report for ``GET /health`` and for operators.

    from studio.health import check, healthy
    report = check(studio)   # {"database": {...}, "storage": {...}, "broker": {...}, "workers": {...}}
    healthy(report)          # False when any part says "ok": False

Each part is ``{"kind": <engine>, "ok": True | False | None, ...}``: ``kind`` names the engine
(sqlite, postgresql, local, s3, threads, redis...), never its URL (a database URL holds a password);
``ok`` None means "not checked here". A probe that raises is reported as ``{"ok": False, "error":
<exception class>}`` and logged with its details on the server only.

``CHECKS`` maps each part to its probe: the embedded back ends are probed here; the scale-out back
ends (PostgreSQL, S3, Celery on Redis) replace or extend a probe by name.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from studio.health_backends import extend as extend_for_scale_out
from studio.storage import IMAGES_PREFIX
from studio.storage.files import TMP_MARKER

if TYPE_CHECKING:
    from studio.service import Studio

log = logging.getLogger("studio.health")

Probe = Callable[["Studio"], dict[str, Any]]


def _engine(url: str | None, embedded: str) -> str:
    """The engine a back-end URL names (its scheme without the driver: ``postgresql+psycopg`` is
    ``postgresql``), or ``embedded`` when unset."""
    if not url:
        return embedded
    return urlsplit(url.strip()).scheme.split("+", 1)[0].lower() or "unknown"


def database(studio: "Studio") -> dict[str, Any]:
    """One read from the history index (an image id no image has): proves the database answers."""
    studio.storage.index.get("health-check")
    return {"kind": _engine(studio.settings.database_url, "sqlite"), "ok": True}


def storage(studio: "Studio") -> dict[str, Any]:
    """The local images folder can be written (a small file made and removed in it), or, for another
    file store, one look-up in it (a key no file has) proves it answers."""
    kind = _engine(studio.settings.storage_url, "local")
    root = getattr(studio.storage.files, "root", None)
    if root is None:
        studio.storage.files.exists("health-check")
        return {"kind": kind, "ok": True}
    return {"kind": kind, **_writable(Path(root) / IMAGES_PREFIX)}


def _writable(folder: Path) -> dict[str, Any]:
    """``{"ok": True}`` when a file can be made in ``folder`` (made if missing, as a save would);
    otherwise ``{"ok": False, "detail"}`` without the path. The probe file is created with a name no
    other file has (O_EXCL) and the store's partial-file marker, so a leftover is swept as a partial."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f"health{TMP_MARKER}") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:  # a file where the folder should be, a read-only or full volume
        log.warning("health check storage: the images folder cannot be written: %s: %s", type(exc).__name__, exc)
        return {"ok": False, "error": type(exc).__name__, "detail": "the images folder cannot be written"}
    return {"ok": True}


def broker(studio: "Studio") -> dict[str, Any]:
    """The embedded default has no broker: jobs run on threads in this process."""
    kind = _engine(studio.settings.broker_url, "none")
    if kind == "none":
        return {"kind": kind, "ok": True, "detail": "jobs run on threads in this process"}
    return {"kind": kind, "ok": None, "detail": "not checked here"}


def workers(studio: "Studio") -> dict[str, Any]:
    """Who runs batch jobs: this process's threads (the embedded default)."""
    if studio.settings.broker_url:
        return {"kind": "celery", "ok": None, "detail": "not checked here"}
    return {"kind": "threads", "ok": True}


CHECKS: dict[str, Probe] = {"database": database, "storage": storage, "broker": broker, "workers": workers}
extend_for_scale_out(CHECKS)  # PostgreSQL, S3, Redis and Celery workers when set (studio/health_backends.py)


def check(studio: "Studio") -> dict[str, dict[str, Any]]:
    """Every part of ``CHECKS``, probed now, by name (see the module's docstring for the shape)."""
    report: dict[str, dict[str, Any]] = {}
    for name, probe in CHECKS.items():
        try:
            report[name] = probe(studio)
        except Exception as exc:  # reported as down, and logged: the answer names only the class
            log.warning("health check %s failed: %s", name, studio.redact(f"{type(exc).__name__}: {exc}"))
            report[name] = {"ok": False, "error": type(exc).__name__}
    return report


def healthy(report: dict[str, dict[str, Any]]) -> bool:
    """True unless some part of ``report`` says ``"ok": False`` (parts marked ``"required": False``,
    such as Celery workers, are reported but do not count)."""
    return all(part.get("ok") is not False or part.get("required") is False for part in report.values())


__all__ = ["CHECKS", "Probe", "check", "healthy", "database", "storage", "broker", "workers"]

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
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from studio.health_backends import extend as extend_for_scale_out

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
    """One look-up in the file store (a key no file has): proves the folder or bucket answers."""
    studio.storage.files.exists("health-check")
    return {"kind": _engine(studio.settings.storage_url, "local"), "ok": True}


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

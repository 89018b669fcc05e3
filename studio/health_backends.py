"""Health probes of the scale-out back ends (issue 13): PostgreSQL, S3, Redis and Celery workers.

``extend(CHECKS)`` (called by ``studio.health``) wraps each of its probes: while the part's setting
is unset the embedded probe answers as before; once set, the probe here asks the real engine:

* ``database`` (``STUDIO_DATABASE_URL``): ``SELECT 1`` through the studio's pool;
* ``storage`` (``STUDIO_STORAGE_URL``): a HEAD in the bucket (a key no object has);
* ``broker`` (``STUDIO_BROKER_URL``): a Redis ``PING``;
* ``workers``: Celery's ``inspect ping``, answered by every live worker within
  ``WORKER_PING_SECONDS``; ``"required": False``: a web server with no worker still serves the
  history, so it is reported, not taken out of the load balancer (``studio.health.healthy``).

Each answer is ``{"kind", "ok", "detail", "ms"}``; ``detail`` names where the engine is with any
password replaced by ``***`` and no query string (``redact_url``). Every probe runs with a deadline
(``PROBE_SECONDS``): an engine that does not answer is reported ``TimeoutError`` instead of holding
the health check (and the load balancer's request) for a TCP timeout.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from studio.service import Studio

Probe = Callable[["Studio"], dict[str, Any]]

PROBE_SECONDS = 5.0  # the longest one back end may take to answer
REDIS_SOCKET_SECONDS = 2.0
WORKER_PING_SECONDS = 1.0


def redact_url(url: str | None) -> str:
    """``url`` as it may be shown: the password as ``***``, without query or fragment (they may hold
    credentials too): ``postgresql://studio:pw@db:5432/studio?sslkey=x`` is shown as
    ``postgresql://studio:***@db:5432/studio``."""
    if not url:
        return ""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not even a URL: show only that it is set
        return "(set, not a URL)"
    user = parts.username or ""
    if parts.password is not None:
        user = f"{user}:***"
    netloc = f"{user}@{host}{port}" if user else f"{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def bounded(probe: Probe, seconds: float = PROBE_SECONDS) -> Probe:
    """``probe`` with a deadline: past ``seconds`` it raises ``TimeoutError`` (the probe's thread is
    left to finish on its own; it holds nothing the answer needs)."""

    def run(studio: "Studio") -> dict[str, Any]:
        done: dict[str, Any] = {}
        finished = threading.Event()

        def call() -> None:
            try:
                done["answer"] = probe(studio)
            except BaseException as exc:  # handed to the caller below, which reports it
                done["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=call, name="studio-health-probe", daemon=True).start()
        if not finished.wait(seconds):
            raise TimeoutError(f"no answer within {seconds:g} s")
        if "error" in done:
            raise done["error"]
        return done["answer"]

    return run


def _timed(kind: str, detail: str, action: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    action()
    return {"kind": kind, "ok": True, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}


def database(studio: "Studio") -> dict[str, Any]:
    """Probe the index's database with ``SELECT 1``: ``{kind, ok, detail, ms}`` (kind: the URL's scheme,
    e.g. "postgresql"; detail: the URL with its password masked; ms: milliseconds). A failure raises
    the driver's error, for the caller (``bounded``, the health check) to report."""
    from studio.storage.index import sql

    def ask() -> None:
        with studio.storage.index.read() as conn:
            conn.execute(sql("SELECT 1")).scalar()

    url = studio.settings.database_url
    return _timed(urlsplit(url).scheme.split("+", 1)[0] or "database", redact_url(url), ask)


def storage(studio: "Studio") -> dict[str, Any]:
    """Probe the file store by asking whether a key exists: ``{kind, ok, detail, ms}`` as ``database``
    (detail names the S3 endpoint when one is set)."""
    url = studio.settings.storage_url
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    detail = redact_url(url) + (f" at {redact_url(endpoint)}" if endpoint else "")
    return _timed(urlsplit(url).scheme or "storage", detail,
                  lambda: studio.storage.files.exists("health-check"))


def broker(studio: "Studio") -> dict[str, Any]:
    """PING the Celery broker (Redis), ``REDIS_SOCKET_SECONDS`` at most: ``{kind, ok, detail, ms}`` as
    ``database``."""
    import redis

    url = studio.settings.broker_url

    def ping() -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_SOCKET_SECONDS,
                                      socket_timeout=REDIS_SOCKET_SECONDS)
        try:
            client.ping()
        finally:
            client.close()

    return _timed(urlsplit(url).scheme or "broker", redact_url(url), ping)


_apps: dict[str, Any] = {}
_apps_lock = threading.Lock()


def _celery_app(studio: "Studio"):
    """One Celery app per broker URL in this process (making one per health check would cost a
    connection pool each time)."""
    from studio.jobs.celery_runner import make_app

    with _apps_lock:
        url = studio.settings.broker_url
        if url not in _apps:
            _apps[url] = make_app(studio.settings)
        return _apps[url]


def workers(studio: "Studio") -> dict[str, Any]:
    """Ping the Celery workers (``WORKER_PING_SECONDS`` at most): ``{kind, ok, required, detail, workers,
    ms}``; ok False (not required: jobs wait) when none answers; ``workers``: their names. Errors
    reaching the broker are raised, as ``database``'s."""
    started = time.perf_counter()
    replies = _celery_app(studio).control.inspect(timeout=WORKER_PING_SECONDS).ping() or {}
    names = sorted(replies)
    detail = (f"{len(names)} worker(s) answered a ping" if names
              else f"no worker answered a ping within {WORKER_PING_SECONDS:g} s")
    return {"kind": "celery", "ok": bool(names), "required": False, "detail": detail, "workers": names,
            "ms": round((time.perf_counter() - started) * 1000, 1)}


# part -> (the setting that moves it off the embedded default, its scaled probe)
SCALED: dict[str, tuple[str, Probe]] = {
    "database": ("database_url", database),
    "storage": ("storage_url", storage),
    "broker": ("broker_url", broker),
    "workers": ("broker_url", workers),
}


def extend(checks: dict[str, Probe]) -> None:
    """Replace each probe of ``checks`` named in ``SCALED`` by one that asks the scaled engine
    (with a deadline) when its setting is set, and keeps the embedded probe otherwise."""
    for name, (setting, scaled) in SCALED.items():
        embedded = checks.get(name)
        checks[name] = _either(setting, bounded(scaled), embedded)


def _either(setting: str, scaled: Probe, embedded: Probe | None) -> Probe:
    def probe(studio: "Studio") -> dict[str, Any]:
        if getattr(studio.settings, setting, None) or embedded is None:
            return scaled(studio)
        return embedded(studio)

    probe.__name__ = f"{getattr(embedded, '__name__', 'probe')}_or_{scaled.__name__}"
    return probe


__all__ = ["PROBE_SECONDS", "SCALED", "WORKER_PING_SECONDS", "bounded", "extend", "redact_url"]

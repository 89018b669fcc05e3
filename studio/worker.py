"""The Celery app: batch scenes and single generations on worker processes (issue 13).

Tasks: ``studio.run_scene`` (a batch scene), ``studio.action`` (a front end's generate, edit or
variations, ``studio.jobs.remote_actions``) and ``studio.generate`` (one ``GenerationRequest``,
``celery_runner.generate_on_worker``).

Start workers with the same settings as the web servers (``STUDIO_HOME`` or ``STUDIO_DATABASE_URL``
and ``STUDIO_STORAGE_URL``, the providers' keys, and ``STUDIO_BROKER_URL=redis://host:6379/0``)::

    celery -A studio.worker worker -Q cloud,local     # any machine: cloud scenes and local ones
    celery -A studio.worker worker -Q cloud           # a machine without a GPU: cloud scenes only
    celery -A studio.worker worker -Q local -c 1      # a GPU box: the local model, one at a time
    celery -A studio.worker flower                    # Flower, Celery's monitor: http://localhost:5555

Scenes of the ``local`` provider go to queue ``local``, all others to ``cloud``
(``studio.jobs.celery_runner.queue_for``). How a scene runs, and why a worker killed mid-scene
loses nothing and pays nothing twice: ``studio/jobs/celery_runner.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import threading
from urllib.parse import urlsplit

from celery.signals import worker_init, worker_process_init

from studio.config import Settings
from studio.jobs.celery_runner import GENERATE_TASK, SCENE_TASK, make_app, unreachable
from studio.jobs.remote_actions import ACTION_TASK
from studio.redaction import mask_secrets

app = make_app(Settings.load())
log = logging.getLogger("studio.worker")

# A scene task that cannot reach the database or the image store is tried again after this many
# seconds (doubling from the first, at most the last, with some jitter so a restarted database
# is not met by every task at once) for as long as RETRY_LIMIT tries: well over an hour.
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 1.0, 60.0
RETRY_LIMIT = 100

_studio = None
_studio_lock = threading.Lock()


def worker_studio():
    """This worker process's ``Studio`` (made on first use, after any fork), shared by its threads."""
    global _studio
    with _studio_lock:
        if _studio is None:
            from studio.service import Studio

            _studio = Studio()
        return _studio


@worker_process_init.connect
def _fresh_studio_in_child(**_):
    """A prefork child: never use a Studio (database connections) inherited from its parent."""
    global _studio
    with _studio_lock:
        _studio = None
    worker_studio()


@worker_init.connect
def _check_before_taking_tasks(**_):
    """Open the studio before the worker connects to the broker (it also settles what a killed worker
    left half-written). A worker whose database or image store cannot be used must not take tasks it
    cannot run: it exits with status 1 and one line saying why (the process supervisor shows it)."""
    try:
        worker_studio()
    except Exception as exc:  # any reason it cannot open is fatal here; shown, then the worker exits
        log.debug("the worker's studio did not open", exc_info=True)
        sys.stderr.write(f"error: this worker cannot start: {_one_line(exc)}\n")
        sys.stderr.flush()
        raise SystemExit(1) from exc


def _one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s text (SQLAlchemy adds SQL and links after it), with the passwords
    of the database and broker URLs masked."""
    settings = Settings.load()
    passwords = []
    for url in (settings.database_url, settings.broker_url):
        try:
            passwords.append(urlsplit(url or "").password)
        except ValueError:  # a database URL F13b's checks refuse earlier; nothing to mask from it
            pass
    first = (str(exc).strip().splitlines() or [""])[0]
    return mask_secrets(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, passwords)


def retry_delay(tries: int) -> float:
    """Seconds before try ``tries + 1`` of a task that could not reach the database or storage."""
    delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** min(tries, 16))
    return delay * random.uniform(0.75, 1.0)


def _runner():
    from studio.jobs.manager import get_manager

    return get_manager(worker_studio()).runner  # a CeleryRunner: the studio has a broker URL


@app.task(name=SCENE_TASK, bind=True, max_retries=RETRY_LIMIT)
def run_scene(self, job_id: str, holder: str) -> str:
    """Run the next pending scene of ``job_id`` if it is still RUNNING and held by ``holder``. When
    the database or the image store is out of reach the task is sent again with a backoff
    (``retry_delay``), not spent: its scene stays pending, or, claimed, is recovered by the next try's
    sweep."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    try:
        return _runner().run_scene(job_id, holder, task_id=self.request.id, redelivered=redelivered)
    except Exception as exc:
        if not unreachable(exc):
            raise
        delay = retry_delay(self.request.retries)
        log.warning("batch job %s: the database or image store is out of reach (%s); this scene task is "
                    "tried again in %.0f s", job_id, _one_line(exc), delay)
        raise self.retry(exc=exc, countdown=delay)


@app.task(name=GENERATE_TASK, bind=True)
def generate(self, request: dict, request_id: str) -> dict:
    """One single generation (``celery_runner.generate_on_worker``): the request's fields as JSON,
    and its request id. Returns ``{"image_ids": [...], "cost": USD, "warnings": [...],
    "cached": bool, "recovered": bool}``. Delivered again after its worker was lost, a request
    whose images were saved returns them without running again (``recovered``)."""
    from studio.types import GenerationRequest

    studio = worker_studio()
    if self.request.delivery_info and self.request.delivery_info.get("redelivered"):
        studio.storage.recover_interrupted()
        saved = studio.storage.index.images_for_request(request_id)
        if saved:
            return {"image_ids": [r.id for r in saved], "cost": sum(r.cost for r in saved), "warnings": [],
                    "cached": False, "recovered": True}
        request_id = f"{request_id[:62]}.r"  # its first attempt is booked under its own id: this one is new
    known = {f.name for f in dataclasses.fields(GenerationRequest)}
    result = studio.generate(GenerationRequest(**{k: v for k, v in request.items() if k in known}),
                             request_id=request_id)
    return {"image_ids": [r.id for r in result.images], "cost": result.cost, "warnings": list(result.warnings),
            "cached": result.cached, "recovered": False}


@app.task(name=ACTION_TASK, bind=True)
def action(self, body: dict) -> dict:
    """A front end's generate, edit or variations (``remote_actions.run_on_worker``): ``body`` is only
    ``{"in_redis": true}``; the action itself (what to run, for whom, its uploads) waits in Redis under
    this task's id, so owner ids never appear in task arguments (Flower, Celery's logs). Returns
    ``{"result": {...}}`` or ``{"error": {...}}`` (``remote_actions.run_here``). Progress is published
    as the task's ``PROGRESS`` state."""
    from studio.jobs.remote_actions import run_here

    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return run_here(worker_studio(), body, task_id=self.request.id, redelivered=redelivered,
                    report=lambda fields: self.update_state(state="PROGRESS", meta=fields))

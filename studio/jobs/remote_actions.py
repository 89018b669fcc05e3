"""Single generations on Celery workers (issue 13): the application's generate, edit and variations
run by a worker when ``STUDIO_BROKER_URL`` is set.

``Application.generate_from_form``/``edit_from_form``/``variations_from_form`` call ``run_on_worker``
with the action's name and its arguments; the ``studio.action`` task (``studio/worker.py``) calls
``run_here`` on the worker, which runs the same action of an ``Application`` that stays in that
process. Both ends share the database and the storage, so only ids travel back.

On the wire (JSON, in the Redis key ``studio:action-body:<task id>``, not in the task's arguments,
which Flower shows): the owner and the arguments, with images (bytes, Pillow images, arrays) as base64;
progress as the task's ``PROGRESS`` state (``ProgressEvent``'s fields); a cancel as the Redis key
``studio:action-cancel:<task id>`` that the worker watches. The answer is
``{"result": {image_ids, cost, estimated_cost, cached, request_id, duration, warnings}}`` or
``{"error": {classes, message, provider, retry_after, cost, needs_key, retryable}}``: a
``StudioError`` raised on the worker is raised again here as the same class (``studio.errors``'s
nearest), so the HTTP API answers 402 for a budget, 429 for a rate limit, 502 for a provider...
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
import uuid
from typing import Any

log = logging.getLogger("studio.jobs")

ACTION_TASK = "studio.action"
ACTIONS = ("generate", "edit", "variations")
CANCEL_PREFIX = "studio:action-cancel:"
# The action itself (owner, prompt, images) waits in Redis under this key, not in the task's
# arguments, which Flower and Celery's logs show: an owner id never leaves the servers that way.
BODY_PREFIX = "studio:action-body:"
CANCEL_MEMORY_SECONDS = 24 * 3600
POLL_SECONDS = 0.2  # how often the caller reads the task's progress, and the worker its cancel key
QUEUE_MARGIN_SECONDS = 60.0  # waiting for a free worker, on top of the requests' own timeouts
_IMAGE_ARGUMENTS = ("image", "mask")
_ERROR_FIELDS = ("retry_after", "cost", "needs_key", "retryable")


# -- the caller's side ------------------------------------------------------------------------------

_apps: dict[str, Any] = {}
_apps_lock = threading.Lock()


def _app_for(settings):
    """One Celery app per broker URL in this process: each holds pooled broker and result
    connections, which a new app per request would open again (and leave open) every time."""
    from studio.jobs.celery_runner import make_app

    with _apps_lock:
        app = _apps.get(settings.broker_url)
        if app is None:
            app = _apps[settings.broker_url] = make_app(settings)
        return app


def encode_image(value: Any, name: str) -> Any:
    """An image argument as JSON: None and text (an image id) as they are, bytes as
    ``{"base64": ...}``, a Pillow image or an array as its PNG. Raises InvalidRequest otherwise."""
    from studio.errors import InvalidRequest

    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "__array__") and not hasattr(value, "save"):
        from PIL import Image

        value = Image.fromarray(value)
    if hasattr(value, "save"):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        value = buffer.getvalue()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise InvalidRequest(f"{name}: give an image file's bytes, a picture or an image id, not {type(value).__name__}")


def decode_image(value: Any) -> Any:
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    return value


def error_to_wire(error) -> dict[str, Any]:
    """A ``StudioError`` as JSON: its class names (nearest first), message and typed fields."""
    data = {"classes": [cls.__name__ for cls in type(error).__mro__], "message": error.message,
            "provider": error.provider}
    for name in _ERROR_FIELDS:
        value = getattr(error, name, None)
        if value is not None:
            data[name] = value
    return data


def error_from_wire(data: dict[str, Any]):
    """The ``StudioError`` ``error_to_wire`` described: the nearest of its classes that
    ``studio.errors`` defines (a provider's own subclass comes back as its base), with its fields."""
    from studio import errors

    cls = errors.ProviderFailure
    for name in data.get("classes") or []:
        candidate = getattr(errors, name, None)
        if isinstance(candidate, type) and issubclass(candidate, errors.StudioError):
            cls = candidate
            break
    error = cls.__new__(cls)
    errors.StudioError.__init__(error, str(data.get("message") or "the worker failed"), provider=data.get("provider"))
    for name in _ERROR_FIELDS:
        if name in data:
            setattr(error, name, data[name])
    return error


def run_on_worker(studio, action: str, owner: str, arguments: dict[str, Any], *, queue: str, requests: int = 1,
                  progress=None, cancel: threading.Event | None = None):
    """Run ``action`` (``generate``, ``edit`` or ``variations``: the ``Application`` method
    ``<action>_from_form``) for ``owner`` with ``arguments`` on a worker listening on ``queue``, and
    wait for it: at most ``requests`` times the studio's request timeout plus a minute in the queue.
    ``progress`` gets the worker's ``ProgressEvent``s; setting ``cancel`` cancels it there.
    Returns a ``GenerationResult`` whose images are read from the shared index. Raises the worker's
    ``StudioError`` as its own class; ``ProviderTimeout`` when no answer came in time (the task is
    then cancelled, so a worker that takes it later does not run it); InvalidRequest for arguments
    that cannot travel as JSON."""
    from studio.errors import InvalidRequest, ProviderFailure, ProviderTimeout
    from studio.jobs.celery_runner import redis_client
    from studio.service import GenerationResult
    from studio.types import ProgressEvent

    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    payload = {name: encode_image(value, name) if name in _IMAGE_ARGUMENTS else value
               for name, value in arguments.items()}
    try:
        body = json.dumps({"action": action, "owner": owner, "arguments": payload}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"a request run on a worker must be JSON: {exc}") from None
    settings = studio.settings
    app = _app_for(settings)
    redis = redis_client(settings.broker_url)
    timeout = max(1, requests) * settings.request_timeout + QUEUE_MARGIN_SECONDS
    task_id = uuid.uuid4().hex
    redis.set(BODY_PREFIX + task_id, body, ex=round(timeout) + 1)  # gone once nobody waits for it
    result = app.send_task(ACTION_TASK, args=[{"in_redis": True}], task_id=task_id, queue=queue)
    deadline = time.monotonic() + timeout
    cancelled = False
    seen = None
    try:
        while not result.ready():
            if cancel is not None and cancel.is_set() and not cancelled:
                redis.set(CANCEL_PREFIX + result.id, "1", ex=CANCEL_MEMORY_SECONDS)
                cancelled = True
            if time.monotonic() >= deadline:
                redis.set(CANCEL_PREFIX + result.id, "1", ex=CANCEL_MEMORY_SECONDS)
                raise ProviderTimeout(f"no worker on queue {queue!r} finished the request within {timeout:.0f} s; "
                                      f"it was cancelled (are workers running with -Q {queue}?)")
            info = result.info if result.state == "PROGRESS" else None
            if progress is not None and isinstance(info, dict) and info != seen:
                seen = info
                progress(ProgressEvent(**info))
            time.sleep(POLL_SECONDS)  # the task's state is in Redis: polled, there is nothing to wait on
        answer = result.get(propagate=False)
        if result.failed():
            raise ProviderFailure(f"the worker could not run the request: {studio.redact(str(answer))}")
    finally:
        result.forget()
        redis.close()
    if "error" in answer:
        raise error_from_wire(answer["error"])
    done = answer["result"]
    images = [studio.storage.get(image_id) for image_id in done["image_ids"]]
    missing = [image_id for image_id, record in zip(done["image_ids"], images) if record is None]
    if missing:
        raise ProviderFailure(f"the worker saved images {missing} that this server cannot see: do the workers use "
                              "the same STUDIO_DATABASE_URL?")
    return GenerationResult(images, float(done["cost"]), float(done["estimated_cost"]), bool(done["cached"]),
                            str(done["request_id"]), float(done["duration"]), list(done["warnings"]))


# -- the worker's side ------------------------------------------------------------------------------


def run_here(studio, envelope: dict[str, Any], *, task_id: str, redelivered: bool, report) -> dict[str, Any]:
    """The body of the ``studio.action`` task ``task_id``, whose argument ``envelope`` is
    ``{"in_redis": true}``: read the action from Redis (``BODY_PREFIX``) and run it in
    this process (an ``Application`` that never sends it on) while a thread turns the caller's
    cancel key into the run's cancel. An action whose caller gave up (its key expired) is not run.
    ``report(dict)`` publishes a ``ProgressEvent``'s fields. A task delivered again (its worker was
    lost) is not run again: its caller may have given up, and the lost run may have been billed
    (crash recovery books it); it answers a ``ProviderFailure`` saying so."""
    import dataclasses

    from studio.application import Application
    from studio.errors import ProviderFailure, ProviderTimeout, StudioError
    from studio.jobs.celery_runner import redis_client

    if redelivered:
        error = ProviderFailure("the worker running this request stopped before it finished; it was not run again "
                                "(it may have been billed: see the audit log)")
        return {"error": error_to_wire(error)}
    if envelope != {"in_redis": True}:
        raise ValueError("a studio.action task carries {'in_redis': true}; its action waits in Redis")
    redis = redis_client(studio.settings.broker_url)
    stored = redis.get(BODY_PREFIX + task_id)
    if stored is None:
        redis.close()
        error = ProviderTimeout("the request waited too long for a worker: its caller gave up, so it was not run")
        return {"error": error_to_wire(error)}
    redis.delete(BODY_PREFIX + task_id)
    body = json.loads(stored)
    action, owner = body["action"], body["owner"]
    if action not in ACTIONS:
        redis.close()
        raise ValueError(f"unknown action {action!r}")
    arguments = {name: decode_image(value) if name in _IMAGE_ARGUMENTS else value
                 for name, value in body["arguments"].items()}
    cancel, done = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                if redis.exists(CANCEL_PREFIX + task_id):
                    cancel.set()
                    return
            except Exception:
                log.exception("action %s: reading its cancel key failed this time", task_id)
            done.wait(POLL_SECONDS)

    watcher = threading.Thread(target=watch, name=f"action-{task_id}-cancel", daemon=True)
    watcher.start()
    try:
        if redis.exists(CANCEL_PREFIX + task_id):
            cancel.set()  # given up before a worker took it: the action stops before its provider is called
        run = getattr(Application(studio, on_workers=False), f"{action}_from_form")
        result = run(owner, arguments.pop("values"), progress=lambda event: report(dataclasses.asdict(event)),
                     cancel=cancel, **arguments)
    except StudioError as error:
        return {"error": error_to_wire(error)}
    finally:
        done.set()
        watcher.join()
        redis.close()
    return {"result": {"image_ids": [record.id for record in result.images], "cost": result.cost,
                       "estimated_cost": result.estimated_cost, "cached": result.cached,
                       "request_id": result.request_id, "duration": result.duration,
                       "warnings": list(result.warnings)}}

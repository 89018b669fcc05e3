"""What the HTTP API checks before a route runs or a body is read: who calls, how often, how much.

Both middlewares are plain ASGI (no buffering of the body) and answer a refusal themselves in the
API's JSON error shape, before anything is read into memory or written:

* ``CallerMiddleware``: resolves the caller (studio.http.deps.resolve_caller; 401) and applies the
  per-caller rate limit (``Settings.api_rate_limit`` requests per minute; 429 with Retry-After).
* ``UploadLimitMiddleware``: a body over ``Settings.api_max_upload_bytes`` is 413: at once when its
  Content-Length says so, else as soon as the bytes received pass the bound.

The rate limit is counted in this process: several server processes each allow the figure.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from studio.http.deps import CALLER_KEY, resolve_caller
from studio.http.errors import ApiError, error_body

# Paths that answer without a caller: the API's own documents, the landing and health routes (their
# seed document defines them without authentication), and the Gradio UI (it has its own visitors).
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/ui/",)


def is_open(path: str) -> bool:
    """True for a request path that answers without a caller (``OPEN_PATHS``, the Gradio UI)."""
    return path in OPEN_PATHS or path == "/ui" or path.startswith(OPEN_PREFIXES)


async def _refuse(error: ApiError, scope: dict, receive: Callable, send: Callable) -> None:
    response = JSONResponse(error_body(error.error, error.detail), status_code=error.status, headers=error.headers)
    await response(scope, receive, send)


class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests at once, refilled at ``per_minute`` a
    minute. ``clock`` (seconds, monotonic) is replaceable for tests. Thread-safe."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (requests left, when counted)
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Count one request of ``key``: None when allowed, else the seconds until one will be."""
        if self.per_minute <= 0:
            return None
        rate = self.per_minute / 60.0  # requests regained per second
        with self._lock:
            now = self.clock()
            left, then = self._buckets.get(key, (float(self.per_minute), now))
            left = min(float(self.per_minute), left + (now - then) * rate)
            if left >= 1.0:
                self._buckets[key] = (left - 1.0, now)
                return None
            self._buckets[key] = (left, now)
            return (1.0 - left) * 60.0 / self.per_minute


class CallerMiddleware:
    """Resolves the caller of each request outside ``OPEN_PATHS`` and counts it against the rate limit."""

    def __init__(self, app: Any, *, state: Any, limiter: RateLimiter):
        self.app = app
        self.state = state  # the FastAPI app's state: tokens and visitor_policy
        self.limiter = limiter

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        try:
            if authorization is None:  # nothing to look up: answered here, without a thread hop
                caller = resolve_caller(None, self.state.tokens, self.state.visitor_policy)
            else:  # the token table is read (and its last use written): off the event loop
                caller = await anyio.to_thread.run_sync(resolve_caller, authorization, self.state.tokens,
                                                        self.state.visitor_policy)
            wait = self.limiter.take(caller.limit_key)
            if wait is not None:
                seconds = max(1, math.ceil(round(wait, 6)))  # 30.000000001 s of float noise is 30, not 31
                raise ApiError(429, "rate_limited",
                               f"more than {self.limiter.per_minute} requests a minute; try again in {seconds} s",
                               {"Retry-After": str(seconds)})
        except ApiError as refusal:
            await _refuse(refusal, scope, receive, send)
            return
        scope.setdefault("state", {})[CALLER_KEY] = caller
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with 413 before the route sees it."""

    def __init__(self, app: Any, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self) -> ApiError:
        return ApiError(413, "payload_too_large",
                        f"the request body is larger than this server accepts ({self.max_bytes:,} bytes)")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] == "/ui" or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)  # Gradio bounds its own uploads
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await _refuse(ApiError(400, "invalid_request", "Content-Length is not a number"), scope, receive, send)
                return
            if too_large:
                await _refuse(self._refusal(), scope, receive, send)
                return
        received = 0
        exceeded = False  # the body passed the bound: whatever the app answers, the answer is 413
        replaced = False
        started = False  # the app's own answer began before the bound was passed

        async def counting_receive() -> dict:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a body sent without (or with a false) Content-Length
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            # FastAPI turns an error while reading a body into its own 400: the 413 replaces it.
            nonlocal replaced, started
            if exceeded:
                if not replaced and not started and message["type"] == "http.response.start":
                    replaced = True
                    await _refuse(self._refusal(), scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not replaced and not started:
                replaced = True
                await _refuse(self._refusal(), scope, receive, send)


__all__ = ["CallerMiddleware", "OPEN_PATHS", "RateLimiter", "UploadLimitMiddleware", "is_open"]

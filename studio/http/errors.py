"""Errors of the HTTP API: every failure is a JSON body ``{"error": <short code>, "detail": <text>}``.

* ``ApiError`` is what the HTTP layer itself raises (401 without a token, 413 upload too large...).
* Every ``StudioError`` the core raises maps to a status by its class (:func:`status_for`); its
  ``kind`` is the ``error`` code and its message, redacted, the ``detail``.
* FastAPI's request validation errors are 400 with the reason; Starlette's own (unknown route,
  wrong method) keep their status in the same body shape.
* Anything unexpected is a 500 ``{"error": "internal"}``; the traceback is logged on the server,
  redacted, and never sent (:class:`CatchAllMiddleware`).

The seed-system routes may add fields of their own documents on top of these two; they keep both.
"""

from __future__ import annotations

import logging
import math
import traceback
from typing import Any, Callable

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from studio.errors import (BudgetExceeded, Busy, Cancelled, ContentBlocked, FileGone, InvalidRequest, NotConfigured,
                           NotFound, ProviderFailure, ProviderTimeout, QuotaExhausted, RateLimited, StorageError,
                           StudioError)

log = logging.getLogger("studio.http")


class ApiError(Exception):
    """An answer other than success decided by the HTTP layer: ``status`` (an HTTP status code),
    ``error`` (a short machine-readable code such as ``"unauthorized"``), ``detail`` (a sentence for
    people, never holding a secret, owner id or server path) and extra response ``headers``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


# What a client is told of any StorageError (the image store or the database failed).
STORAGE_UNAVAILABLE_DETAIL = "the studio's storage is unavailable right now; try again later"

# Most specific first: the first class an error is an instance of decides its status.
_STATUS_BY_CLASS: tuple[tuple[type[StudioError], int], ...] = (
    (FileGone, 410),  # the image's record is there, its file or object was deleted
    (NotFound, 404),
    (InvalidRequest, 400),  # SettingsError too: a request named a value the settings refuse
    (ContentBlocked, 400),  # the prompt or image was refused: the caller must change it
    (BudgetExceeded, 402),
    (RateLimited, 429),
    (ProviderTimeout, 504),
    (QuotaExhausted, 502),  # the provider account (the operator's), not the caller's budget
    (ProviderFailure, 502),
    (NotConfigured, 503),  # the server lacks a key, SDK or model: nothing the caller can fix
    (StorageError, 503),  # the studio's image store or database is unavailable: try again later
    (Busy, 409),
    (Cancelled, 409),
)


def status_for(error: StudioError) -> int:
    """The HTTP status of a core error (500 for a ``StudioError`` of a class not listed)."""
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(error, cls):
            return status
    return 500


def error_body(error: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The one body shape: ``{"error": ..., "detail": ..., **extra}``."""
    return {"error": error, "detail": detail, **extra}


def retry_after_seconds(seconds: float | None) -> str | None:
    """A ``Retry-After`` header value: whole seconds, rounded up, at least 1 (None when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return str(max(1, math.ceil(seconds)))


def _redactor(request: Request) -> Callable[[str], str]:
    studio = getattr(request.app.state, "studio", None)
    return studio.redact if studio is not None else (lambda text: text)


def studio_error_response(request: Request, exc: StudioError) -> JSONResponse:
    """The answer for a core error (also used by routes that turn an error into a body themselves)."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        value = retry_after_seconds(exc.retry_after)
        if value:
            headers["Retry-After"] = value
    detail = _redactor(request)(exc.message)
    if isinstance(exc, StorageError):
        # A store's or database's text names buckets, keys and hosts: for the server's log only.
        log.error("%s %s: storage unavailable: %s", request.method, request.url.path, detail)
        detail = STORAGE_UNAVAILABLE_DETAIL
    return JSONResponse(error_body(exc.kind, detail), status_code=status_for(exc), headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.error, exc.detail), status_code=exc.status, headers=exc.headers)


async def _studio_error(request: Request, exc: StudioError) -> JSONResponse:
    return studio_error_response(request, exc)


async def _validation_error(request: Request, exc: Any) -> JSONResponse:
    # One sentence per refused field: "body.n: Input should be less than or equal to 4". The input
    # values are left out (they may be long, binary or a secret pasted in the wrong field).
    reasons = []
    for item in exc.errors():
        if item.get("type") == "json_invalid":  # loc is ("body", <character position>)
            why = (item.get("ctx") or {}).get("error") or "not valid JSON"
            reasons.append(f"the body is not valid JSON: {why} (at character {item['loc'][-1]})")
            continue
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body" or len(item["loc"]) == 1)
        reasons.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
    return JSONResponse(error_body("invalid_request", "; ".join(reasons) or "the request is not valid"),
                        status_code=400)


_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "rate_limited"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "error")
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=dict(exc.headers or {}))


def install_handlers(app: Any) -> None:
    """Register the handlers above on a FastAPI ``app``."""
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StudioError, _studio_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def json_cors_middleware() -> type:
    """Starlette's ``CORSMiddleware`` with a refused preflight (an origin, method or header not
    allowed) answered in the API's one error shape, ``{"error": "cors_refused", "detail": ...}``,
    instead of Starlette's plain text; its headers (Vary, allowed methods...) are kept. Built on
    call so that importing this module does not import the middleware."""
    from starlette.middleware.cors import CORSMiddleware

    class JsonCorsMiddleware(CORSMiddleware):
        def preflight_response(self, request_headers):
            answer = super().preflight_response(request_headers)
            if answer.status_code != 400:
                return answer
            kept = {name: value for name, value in answer.headers.items()
                    if name.lower() not in ("content-length", "content-type")}
            return JSONResponse(error_body("cors_refused", answer.body.decode("utf-8", "replace")),
                                status_code=400, headers=kept)

    return JsonCorsMiddleware


class CatchAllMiddleware:
    """ASGI middleware: an exception no handler took becomes a 500 ``{"error": "internal"}`` answer,
    and its traceback is logged here, redacted (Starlette's own error middleware would log it as it
    is, and an exception's text may echo a key or a server path)."""

    def __init__(self, app: Any, redact: Callable[[str], str]):
        self.app = app
        self.redact = redact

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence; logged below, answered 500
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("unexpected error answering %s %s:\n%s", scope.get("method"), scope.get("path"),
                      self.redact(text))
            if started:  # the answer is half sent: all that is left is to end it (the client sees a cut)
                return
            response = JSONResponse(error_body("internal", "unexpected server error; it has been logged"),
                                    status_code=500)
            await response(scope, receive, send)


__all__ = ["ApiError", "CatchAllMiddleware", "error_body", "install_handlers", "retry_after_seconds",
           "status_for", "studio_error_response"]

"""FastAPI dependencies of the HTTP API: the studio, the caller, the application layer.

Who a caller is (:func:`resolve_caller`):

* ``Authorization: Bearer ist_...`` with a usable token: the token's owner (its images, boards,
  jobs and tokens, under the same visibility rules as the UIs).
* No ``Authorization`` header: only when the operator runs the studio for one person
  (``STUDIO_VISITORS=local``): the ``local`` owner, the CLI's history. Otherwise 401.
* A malformed header, or a token that is unknown or revoked: 401, whatever the visitor mode.

``CallerMiddleware`` (studio.http.limits) resolves the caller of every API request once, before the
body is read, and keeps it on the request; :func:`get_caller` returns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from studio.http.errors import ApiError
from studio.identity import LOCAL, LOCAL_OWNER

if TYPE_CHECKING:
    from studio.application import Application
    from studio.service import Studio
    from studio.tokens import Tokens

CALLER_KEY = "studio_caller"  # where the caller is kept in the request's scope state


@dataclass(frozen=True)
class Caller:
    """Who is calling. ``owner`` is the studio's internal owner key: routes pass it to the core and
    it NEVER appears in an answer. ``token_id`` is the token's public id (None for the tokenless
    local user); ``local`` is True for that tokenless local user."""

    owner: str
    token_id: str | None
    local: bool

    @property
    def limit_key(self) -> str:
        """What the rate limit counts requests by: the token, or the local user."""
        return f"token:{self.token_id}" if self.token_id else "local"


_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="image-studio"'}


def resolve_caller(authorization: str | None, tokens: "Tokens", visitor_policy: str) -> Caller:
    """The caller for an ``Authorization`` header value (None when absent). Raises ``ApiError`` 401
    when there is no usable token and the studio is not in ``local`` visitor mode. Blocking (it
    reads the token table): call it off the event loop."""
    if authorization is None or not authorization.strip():
        if visitor_policy == LOCAL:
            return Caller(owner=LOCAL_OWNER, token_id=None, local=True)
        raise ApiError(401, "unauthorized", "this studio needs an API token: send 'Authorization: Bearer <token>' "
                                            "(make one with 'python -m studio token create NAME' or in the UI)",
                       _WWW_AUTHENTICATE)
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'", _WWW_AUTHENTICATE)
    token = tokens.verify(value.strip())
    if token is None:
        raise ApiError(401, "unauthorized", "the API token is unknown or revoked", _WWW_AUTHENTICATE)
    return Caller(owner=token.owner, token_id=token.id, local=False)


def get_studio(request: Request) -> "Studio":
    """The ``Studio`` this app serves."""
    return request.app.state.studio


def get_tokens(request: Request) -> "Tokens":
    """The studio's API tokens (``studio.tokens.Tokens``)."""
    return request.app.state.tokens


def get_application(request: Request) -> "Application":
    """The application layer over the studio (``studio.application.Application``), one per app."""
    return request.app.state.application


def get_caller(request: Request) -> Caller:
    """The caller ``CallerMiddleware`` resolved for this request. A route outside the paths the
    middleware guards resolves it here (raising 401 as above)."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    caller = state.get(CALLER_KEY)
    if caller is None:
        caller = resolve_caller(request.headers.get("authorization"), request.app.state.tokens,
                                request.app.state.visitor_policy)
        state[CALLER_KEY] = caller
    return caller


__all__ = ["CALLER_KEY", "Caller", "get_application", "get_caller", "get_studio", "get_tokens", "resolve_caller"]

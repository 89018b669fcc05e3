"""Who is asking: the owner whose history and boards a Gradio event may see and change.

The owner is, in order of preference:

1. ``hf:<username>`` for a visitor signed in with Hugging Face (OAuth on a Space with
   ``hf_oauth: true``);
2. the username itself for the app's own password login (``STUDIO_GRADIO_USERS``), so an operator
   who logs in as ``local`` sees the history the CLI writes;
3. ``local`` for everyone when the studio's visitor policy is ``local`` (``STUDIO_VISITORS=local``,
   see ``studio.identity.visitor_policy``: one person on their own machine);
4. otherwise an anonymous ``visitor:<32 hex>``: a keyed hash (``studio.identity.VisitorIds``) of a
   random secret kept in the visitor's localStorage, so a reload keeps their images; an API client
   (no browser storage) gets one per client session, hashed from Gradio's session hash.

The secret is never stored or shown, and the stored owner id is never accepted as a secret, so
nothing a visitor can read (an image's metadata, a download, an error) lets them act as another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from studio.config import SettingsError
from studio.errors import InvalidRequest
from studio.application.frontends import visitor_mode
from studio.identity import (LOCAL, LOCAL_OWNER, VISITOR_PREFIX, VisitorIds, is_anonymous, new_visitor_secret,
                             valid_visitor_secret)

HF_PREFIX = "hf:"
ANON_PREFIX = "anon:"  # owners of anonymous Gradio visitors before keyed hashes; no longer given out
_RESERVED_PREFIXES = (HF_PREFIX, ANON_PREFIX, VISITOR_PREFIX, "visitor-", "user:")

# The browser's secret: the names gradio_app.py uses.
new_token = new_visitor_secret
valid_token = valid_visitor_secret


def owner_for(request: Any, profile: Any = None, token: Any = None, *, single_user: bool = False,
              ids: VisitorIds | None = None) -> str:
    """The owner for one event: ``request`` is the event's ``gr.Request``, ``profile`` its
    ``gr.OAuthProfile`` (None when signed out), ``token`` the browser's secret if any, ``ids`` the
    studio's ``VisitorIds`` (needed for anonymous visitors). Raises ``InvalidRequest`` when nothing
    tells who is asking."""
    username = getattr(profile, "username", None) if profile is not None else None
    if username:
        return HF_PREFIX + str(username)
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return str(username)
    if single_user:
        return LOCAL_OWNER
    if ids is None:
        raise InvalidRequest("cannot tell who is asking: no login, and anonymous visitors are not set up")
    if valid_token(token):
        return ids.owner_for_secret(token)
    session = getattr(request, "session_hash", None) if request is not None else None
    if session:
        return ids.owner_for_session(str(session))
    raise InvalidRequest("cannot tell who is asking: no login and no session")


def parse_users(text: str | None) -> list[tuple[str, str]]:
    """``"alice:secret,bob:hunter2"`` → [("alice", "secret"), ("bob", "hunter2")].

    Passwords may contain ``:`` (the first one separates the name) but not ``,``. A malformed entry
    raises ``SettingsError`` (a ``ValueError``) naming its position, never its text."""
    users: list[tuple[str, str]] = []
    for position, item in enumerate((text or "").split(","), start=1):
        item = item.strip()
        if not item:
            continue
        name, sep, password = item.partition(":")
        name = name.strip()
        if not sep or not name or not password:
            # Never echo the item: it may hold a password.
            raise SettingsError(f"STUDIO_GRADIO_USERS entry {position} is not user:password")
        if name.startswith(_RESERVED_PREFIXES):
            raise SettingsError(f"STUDIO_GRADIO_USERS entry {position}: a username may not start with "
                             + " or ".join(repr(prefix) for prefix in _RESERVED_PREFIXES))
        users.append((name, password))
    return users


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Access:
    """How visitors sign in, read from the environment (Space secrets arrive as environment)."""

    users: list[tuple[str, str]] = field(default_factory=list, repr=False)  # password login for the whole app
    oauth: bool = False  # show "Sign in with Hugging Face"
    require_login: bool = False  # anonymous visitors may browse but not generate
    single_user: bool = False  # everyone not signed in is "local" (a personal machine)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Access":
        env = os.environ if env is None else env
        # A Space with `hf_oauth: true` gets OAUTH_CLIENT_ID; elsewhere Gradio would need a local HF login.
        oauth = _flag(env.get("STUDIO_GRADIO_OAUTH")) or bool(env.get("OAUTH_CLIENT_ID") and env.get("SPACE_ID"))
        single_user = visitor_mode(env) == LOCAL  # the studio's one policy; SettingsError: unknown value
        return cls(users=parse_users(env.get("STUDIO_GRADIO_USERS")), oauth=oauth,
                   require_login=_flag(env.get("STUDIO_REQUIRE_LOGIN")), single_user=single_user)

    def check_may_generate(self, owner: str) -> None:
        if self.require_login and is_anonymous(owner):
            how = "Sign in with Hugging Face" if self.oauth else "Log in"
            raise InvalidRequest(f"{how} to generate images; this studio does not run requests for anonymous "
                                 "visitors")

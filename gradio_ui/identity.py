"""Who is asking: the owner whose history and boards a Gradio event may see and change.

The owner is, in order of preference:

1. ``hf:<username>`` for a visitor signed in with Hugging Face (OAuth on a Space with
   ``hf_oauth: true``);
2. the username itself for the app's own password login (``STUDIO_GRADIO_USERS``), so an operator
   who logs in as ``local`` sees the history the CLI writes;
3. ``local`` for everyone when ``STUDIO_VISITORS=local`` (one person on their own machine: the
   same history as the CLI and the Streamlit app's local mode);
4. ``anon:<id>`` otherwise. In the browser the id is a random token kept in the visitor's
   localStorage, so a reload keeps their images; an API client (no browser storage) gets one per
   client session, derived from Gradio's session hash.

Anonymous ids are random and never shown to anyone else, so two visitors never share one: a public
Space does not show one visitor's images to another.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

from studio.errors import InvalidRequest

HF_PREFIX = "hf:"
LOCAL_OWNER = "local"  # the CLI's and the library's default owner
ANON_PREFIX = "anon:"
_TOKEN = re.compile(r"[0-9a-f]{32}")


def new_token() -> str:
    return secrets.token_hex(16)


def valid_token(token: Any) -> bool:
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def owner_for(request: Any, profile: Any = None, token: Any = None, *, single_user: bool = False) -> str:
    """The owner for one event: ``request`` is the event's ``gr.Request``, ``profile`` its
    ``gr.OAuthProfile`` (None when signed out), ``token`` the browser's anonymous token if any."""
    username = getattr(profile, "username", None) if profile is not None else None
    if username:
        return HF_PREFIX + str(username)
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return str(username)
    if single_user:
        return LOCAL_OWNER
    if valid_token(token):
        return ANON_PREFIX + token
    session = getattr(request, "session_hash", None) if request is not None else None
    if session:
        # The client chooses its session hash; hashing it gives every owner id the same tidy shape.
        return ANON_PREFIX + hashlib.sha256(str(session).encode()).hexdigest()[:32]
    raise InvalidRequest("cannot tell who is asking: no login and no session")


def is_anonymous(owner: str) -> bool:
    return owner.startswith(ANON_PREFIX)


def parse_users(text: str | None) -> list[tuple[str, str]]:
    """``"alice:secret,bob:hunter2"`` → [("alice", "secret"), ("bob", "hunter2")].

    Passwords may contain ``:`` (the first one separates the name) but not ``,``."""
    users: list[tuple[str, str]] = []
    for position, item in enumerate((text or "").split(","), start=1):
        item = item.strip()
        if not item:
            continue
        name, sep, password = item.partition(":")
        name = name.strip()
        if not sep or not name or not password:
            # Never echo the item: it may hold a password.
            raise ValueError(f"STUDIO_GRADIO_USERS entry {position} is not user:password")
        if name.startswith((HF_PREFIX, ANON_PREFIX)):
            raise ValueError(f"STUDIO_GRADIO_USERS entry {position}: a username may not start with "
                             f"{HF_PREFIX!r} or {ANON_PREFIX!r}")
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
        single_user = (env.get("STUDIO_VISITORS") or "").strip().lower() in ("local", "shared", "single")
        return cls(users=parse_users(env.get("STUDIO_GRADIO_USERS")), oauth=oauth,
                   require_login=_flag(env.get("STUDIO_REQUIRE_LOGIN")), single_user=single_user)

    def check_may_generate(self, owner: str) -> None:
        if self.require_login and is_anonymous(owner):
            how = "Sign in with Hugging Face" if self.oauth else "Log in"
            raise InvalidRequest(f"{how} to generate images; this studio does not run requests for anonymous "
                                 "visitors")

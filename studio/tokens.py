"""Per-user API tokens of the HTTP API: made, listed and revoked from the CLI, the web UIs and the API.

A token is ``ist_`` + 43 URL-safe characters (32 random bytes). It is shown once, when made; the
studio keeps only its SHA-256 and the owner it acts for. A token of 256 random bits cannot be
guessed, so a fast hash is the right one: a slow password hash (bcrypt, scrypt) protects low-entropy
secrets from offline guessing and would only cost every API request its time here.

Two layers, as in ``studio.boards``:

* ``TokenStore`` is the SQL on the ``api_tokens`` table (migration 0005) of the studio's database.
* ``Tokens`` is what front ends use: every call names the owner; another owner's token is "not found".

What leaves the server about a token is ``ApiToken.public_dict()``: id, name, dates, revoked. Never
the token itself (after it is made), its hash, or its owner.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from studio.errors import InvalidRequest, NotFound
from studio.storage.index import sql
from studio.validation import clean_text

if TYPE_CHECKING:
    from studio.storage.index import HistoryIndex

TOKEN_PREFIX = "ist_"  # "image studio token": lets secret scanners and people recognise one
MAX_NAME_CHARS = 80
MAX_ACTIVE_TOKENS = 50  # per owner: bounds what one visitor can make
# last_used_at is written at most this often per token: a write on every request would serialise all
# API reads on the database's write lock for a date nobody needs to the second.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiToken:
    """One token's row. ``owner`` is the studio's owner key: it stays on the server."""

    id: str
    owner: str
    name: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def public_dict(self) -> dict[str, Any]:
        """What an owner is shown: ``{id, name, created_at, last_used_at, revoked_at, revoked}``."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "last_used_at": self.last_used_at, "revoked_at": self.revoked_at, "revoked": self.revoked}


def hash_token(token: str) -> str:
    """The stored form of ``token``: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


# -- the SQL -------------------------------------------------------------------------------------


class TokenStore:
    """Token rows in the studio's database (``HistoryIndex``: SQLite or PostgreSQL, one SQL); knows
    nothing of owners' rights."""

    _COLUMNS = "id, owner, name, created_at, last_used_at, revoked_at"

    def __init__(self, index: "HistoryIndex"):
        self.index = index

    def _one(self, where: str, params: dict[str, Any]) -> ApiToken | None:
        with self.index.read() as conn:
            row = conn.execute(sql(f"SELECT {self._COLUMNS} FROM api_tokens WHERE {where}"), params).mappings().first()
        return ApiToken(**row) if row else None

    def insert(self, token: ApiToken, token_hash: str, *, max_active: int) -> bool:
        """Insert ``token`` unless its owner already has ``max_active`` usable tokens (then False).
        The count and the insert are one transaction under a named lock, so two requests at once
        cannot both pass the count."""
        with self.index.write() as conn:
            self.index.db.lock(conn, "api-tokens")
            active = conn.execute(sql("SELECT COUNT(*) FROM api_tokens WHERE owner = :owner AND revoked_at IS NULL"),
                                  {"owner": token.owner}).scalar()
            if active >= max_active:
                return False
            conn.execute(sql("INSERT INTO api_tokens (id, owner, name, token_hash, created_at) "
                             "VALUES (:id, :owner, :name, :token_hash, :created_at)"),
                         {"id": token.id, "owner": token.owner, "name": token.name, "token_hash": token_hash,
                          "created_at": token.created_at})
        return True

    def list(self, owner: str) -> list[ApiToken]:
        with self.index.read() as conn:
            rows = conn.execute(sql(f"SELECT {self._COLUMNS} FROM api_tokens WHERE owner = :owner "
                                    "ORDER BY created_at DESC, id"), {"owner": owner}).mappings().all()
        return [ApiToken(**row) for row in rows]

    def get(self, token_id: str) -> ApiToken | None:
        return self._one("id = :id", {"id": token_id})

    def by_hash(self, token_hash: str) -> ApiToken | None:
        return self._one("token_hash = :hash", {"hash": token_hash})

    def revoke(self, token_id: str, when: str) -> None:
        with self.index.write() as conn:
            conn.execute(sql("UPDATE api_tokens SET revoked_at = :when WHERE id = :id AND revoked_at IS NULL"),
                         {"when": when, "id": token_id})

    def touch(self, token_id: str, when: str) -> None:
        with self.index.write() as conn:
            conn.execute(sql("UPDATE api_tokens SET last_used_at = :when WHERE id = :id"), {"when": when, "id": token_id})


# -- the service ---------------------------------------------------------------------------------


class Tokens:
    """API tokens of one studio, checked per owner."""

    def __init__(self, index: "HistoryIndex", store: TokenStore | None = None):
        self.store = store or TokenStore(index)

    def create(self, owner: str, name: str) -> tuple[ApiToken, str]:
        """A new token for ``owner`` named ``name`` (1-80 characters): ``(row, token)``. The token text
        is returned here only; it cannot be shown again. Raises ``InvalidRequest`` for an empty or long
        name, for a blank ``owner`` (a token must act for someone), or when ``owner`` already has
        ``MAX_ACTIVE_TOKENS`` usable tokens."""
        if not isinstance(owner, str) or not owner.strip():
            raise InvalidRequest("a token needs an owner: name the user it acts for (e.g. --user local)")
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("a token needs a name (what it is for, e.g. 'laptop script')")
        name = clean_text(name, "token name", required=True, max_chars=MAX_NAME_CHARS)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(id=secrets.token_hex(8), owner=owner, name=name, created_at=_stamp(_now()),
                       last_used_at=None, revoked_at=None)
        if not self.store.insert(row, hash_token(token), max_active=MAX_ACTIVE_TOKENS):
            raise InvalidRequest(f"you already have {MAX_ACTIVE_TOKENS} tokens; revoke one you no longer use")
        return row, token

    def list(self, owner: str) -> list[ApiToken]:
        """``owner``'s tokens, newest first, revoked ones included (they say so)."""
        return self.store.list(owner)

    def revoke(self, owner: str, token_id: str) -> ApiToken:
        """Revoke ``owner``'s token ``token_id`` (again is fine); ``NotFound`` for anyone else's or none."""
        token = self.store.get(str(token_id).strip())
        if token is None or token.owner != owner:
            raise NotFound(f"no API token with id {str(token_id)[:40]!r}")
        if not token.revoked:
            self.store.revoke(token.id, _stamp(_now()))
        revoked = self.store.get(token.id)
        assert revoked is not None  # rows are never deleted
        return revoked

    def verify(self, token: str) -> ApiToken | None:
        """The usable token whose text is ``token``, or None (unknown, malformed or revoked). Records
        when it was used (to the minute). The lookup is by hash: a caller cannot steer which stored
        hash it is compared with, so there is no timing to learn from."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        found = self.store.by_hash(hash_token(token))
        if found is None or found.revoked:
            return None
        now = _now()
        if found.last_used_at is None or datetime.fromisoformat(found.last_used_at) + LAST_USED_RESOLUTION <= now:
            self.store.touch(found.id, _stamp(now))
        return found


def tokens_for(studio: Any) -> Tokens:
    """The ``Tokens`` of a ``Studio`` (on its history index)."""
    return Tokens(studio.storage.index)


__all__ = ["ApiToken", "MAX_ACTIVE_TOKENS", "TOKEN_PREFIX", "TokenStore", "Tokens", "hash_token", "tokens_for"]

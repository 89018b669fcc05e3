"""Who a visitor is, and who may see what: one policy for the Streamlit app, the Gradio app and the API.

Three rules live here and nowhere else:

* **The visitor policy** (:func:`visitor_policy`). Visitors who are not signed in are *private* —
  each gets an anonymous history of their own — unless the operator sets ``STUDIO_VISITORS=local``
  (one person on their own machine: everyone shares the CLI's ``local`` history). Nothing else is
  consulted: not the client's address (behind a reverse proxy every visitor looks local), not
  ``SPACE_ID``. A value the studio does not know is an error, never a guess.

* **The owner id of an anonymous visitor** (:class:`VisitorIds`). What proves who a visitor is — the
  random secret kept in their URL (Streamlit) or browser storage (Gradio), or an API client's session
  id — is never stored. The stored owner is ``visitor:<32 hex>``, an HMAC-SHA256 of that secret
  under a server key (``$STUDIO_IDENTITY_KEY``, or ``identity.key`` created once in the data
  directory). Knowing an owner id therefore does not let anyone become that owner: the id is not a
  secret the studio accepts, and the key needed to forge one never leaves the server.

* **Visibility** (:func:`visible_to`): a record is visible to its owner, and to everyone once shared.

Owner ids (anonymous or signed-in, e-mail included) never leave the server: image metadata, zips,
manifests, webhooks and API answers leave them out (see ``ImageRecord.public_dict``).

Data written before this module existed: anonymous rows are owned by ``visitor-<32 hex>``
(Streamlit) or ``anon:<32 hex>`` (Gradio), where the hex *was* the visitor's secret, and that secret
was embedded in every image they made. Those secrets are treated as leaked: the old 32-hex format is
refused as a secret (the browser gets a new one), so those rows are no longer reachable from a
browser. They stay in the index untouched; the operator can still reach them from the command line
(``--user visitor-<hex>``). Signed-in owners (``user:<email>``, ``hf:<name>``, password usernames)
are not secrets and keep their rows.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import zlib
from pathlib import Path
from typing import Any

from studio.config import SettingsError

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"  # the CLI's and the library's default owner; every visitor in local mode
VISITOR_PREFIX = "visitor:"  # + 32 hex: the keyed hash of an anonymous visitor's secret
LEGACY_ANONYMOUS_PREFIXES = ("visitor-", "anon:")  # owners written before keyed hashes; unreachable now

LOCAL, PRIVATE = "local", "private"
VISITORS_SETTING = "STUDIO_VISITORS"
KEY_SETTING = "STUDIO_IDENTITY_KEY"
KEY_FILE_NAME = "identity.key"
MIN_KEY_CHARS = 32

_POLICY_WORDS = {"local": LOCAL, "shared": LOCAL, "single": LOCAL,
                 "private": PRIVATE, "visitor": PRIVATE, "visitors": PRIVATE, "anonymous": PRIVATE}
# 32 random bytes, URL-safe base64 without padding. Deliberately not 32 hex: that was the old format,
# embedded in shared images, so an old secret can never be mistaken for a new one.
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


# -- the policy ------------------------------------------------------------------------------------


def visitor_policy(configured: str | None = None) -> str:
    """``"local"`` or ``"private"`` for visitors who are not signed in.

    ``configured`` is the operator's ``STUDIO_VISITORS`` value (front ends pass what they read from the
    environment or their own secrets store); ``None`` reads the environment. Empty or unset means
    ``"private"``. Raises ``studio.config.SettingsError`` (a ``ValueError``) for a value it does not
    know (naming the value: it is the operator's setting, not a secret), which front ends report as
    a bad setting at start."""
    value = os.environ.get(VISITORS_SETTING, "") if configured is None else configured
    word = (value or "").strip().lower()
    if not word:
        return PRIVATE
    if word not in _POLICY_WORDS:
        raise SettingsError(f"{VISITORS_SETTING}={value!r} is not a visitor policy: use 'private' (the default: "
                         "each visitor sees only their own images) or 'local' (everyone shares one history)")
    return _POLICY_WORDS[word]


# -- anonymous visitors ----------------------------------------------------------------------------


def new_visitor_secret() -> str:
    """A fresh secret for an anonymous visitor (43 URL-safe characters, 256 random bits)."""
    return secrets.token_urlsafe(32)


def valid_visitor_secret(value: Any) -> bool:
    """Whether ``value`` has the shape of a secret from :func:`new_visitor_secret` (old 32-hex ids do not)."""
    return isinstance(value, str) and _SECRET.fullmatch(value) is not None


def is_anonymous(owner: str) -> bool:
    """An anonymous visitor's owner id (current or legacy), as opposed to ``local`` or a signed-in user."""
    return owner.startswith((VISITOR_PREFIX, *LEGACY_ANONYMOUS_PREFIXES))


class VisitorIds:
    """Turns what proves an anonymous visitor's identity into the owner id stored for them.

    One per data directory (:meth:`for_home`); the key is never logged, stored elsewhere or shown."""

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the identity key must be at least {MIN_KEY_CHARS} characters")
        self._key = key

    def __repr__(self) -> str:
        return "VisitorIds(<key hidden>)"

    @classmethod
    def for_home(cls, home: str | Path) -> "VisitorIds":
        """The ids for the studio whose data directory is ``home`` (key loaded or created once per process)."""
        path = Path(home).expanduser().resolve()
        with _KEYS_LOCK:
            ids = _BY_HOME.get(path)
            if ids is None:
                ids = _BY_HOME[path] = cls(_load_key(path))
            return ids

    def _digest(self, purpose: str, value: str) -> str:
        message = purpose.encode("utf-8") + b"\0" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def owner_for_secret(self, secret: str) -> str:
        """``visitor:<32 hex>`` for a secret from :func:`new_visitor_secret`; ``ValueError`` for anything else."""
        if not valid_visitor_secret(secret):
            raise ValueError("not a visitor secret")
        return VISITOR_PREFIX + self._digest("visitor-secret", secret)[:32]

    def owner_for_session(self, session: str) -> str:
        """``visitor:<32 hex>`` for an API client known only by its session id (e.g. Gradio's session hash)."""
        if not session:
            raise ValueError("no session id")
        return VISITOR_PREFIX + self._digest("client-session", str(session))[:32]

    def opaque(self, owner: str, purpose: str, length: int = 20) -> str:
        """A stable name for ``owner`` that reveals nothing about it (e.g. a per-owner folder that shows
        in download URLs): hex, ``length`` characters, different for each ``purpose``."""
        return self._digest("opaque:" + purpose, owner)[:length]


_KEYS_LOCK = threading.Lock()
_BY_HOME: dict[Path, VisitorIds] = {}


def _load_key(home: Path) -> bytes:
    """``$STUDIO_IDENTITY_KEY``, else ``home/identity.key`` (created once, mode 0600, atomically: two
    processes starting together end up with the same key)."""
    configured = os.environ.get(KEY_SETTING, "").strip()
    if configured:
        if len(configured) < MIN_KEY_CHARS:
            raise SettingsError(f"{KEY_SETTING} must be at least {MIN_KEY_CHARS} characters")
        return configured.encode("utf-8")
    path = home / KEY_FILE_NAME
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{KEY_FILE_NAME}.{secrets.token_hex(6)}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)  # fails if another process made the key first: use theirs
                log.info("created a new identity key in the data directory")
            except FileExistsError:
                pass
        finally:
            temporary.unlink(missing_ok=True)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < MIN_KEY_CHARS:
        raise SettingsError(f"{path} is damaged (shorter than {MIN_KEY_CHARS} characters); restore it from a backup "
                         "or delete it (anonymous visitors then start new histories)")
    return key.encode("ascii")


# -- files written before owners left the metadata ------------------------------------------------

# json.dumps(..., ensure_ascii=True) wrote it exactly like this; the value is ASCII, escapes included.
_EMBEDDED_OWNER = re.compile(rb'"owner": "(?:[^"\\\x00-\x1f]|\\.)*"')
_BLANK_OWNER = b'"owner": ""'
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def without_embedded_owner(data: bytes) -> bytes:
    """``data``, an image file the studio wrote, with the owner id that earlier versions embedded in
    its ``studio`` metadata blanked out. Edited in place, byte for byte the same length, so EXIF
    offsets and RIFF sizes hold and pixels are untouched; a PNG text chunk gets its CRC recomputed.
    Only metadata is looked at (PNG text chunks, JPEG APP1, WEBP EXIF). Files without one come back
    as they are (the same object)."""
    if b'"owner": "' not in data:
        return data
    edited = bytearray(data)
    for start, end in _metadata_spans(data):
        changed = False
        for match in _EMBEDDED_OWNER.finditer(data, start, end):
            padding = b" " * (match.end() - match.start() - len(_BLANK_OWNER))  # JSON allows the spaces
            edited[match.start():match.end()] = _BLANK_OWNER + padding
            changed = True
        if changed and data.startswith(_PNG_SIGNATURE):  # the span is a chunk's data: its CRC covers type + data
            crc = zlib.crc32(bytes(edited[start - 4:end]))
            edited[end:end + 4] = crc.to_bytes(4, "big")
    return bytes(edited)


def _metadata_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each region that may hold the studio's JSON: PNG tEXt/iTXt chunk data, JPEG
    APP1 segments, the WEBP EXIF chunk. Stops quietly at anything malformed (nothing is edited there)."""
    spans: list[tuple[int, int]] = []
    if data.startswith(_PNG_SIGNATURE):
        position = len(_PNG_SIGNATURE)
        while position + 12 <= len(data):
            length = int.from_bytes(data[position:position + 4], "big")
            kind = data[position + 4:position + 8]
            start, end = position + 8, position + 8 + length
            if end + 4 > len(data):
                break
            if kind in (b"tEXt", b"iTXt"):
                spans.append((start, end))
            if kind == b"IEND":
                break
            position = end + 4
    elif data[:2] == b"\xff\xd8":
        position = 2
        while position + 4 <= len(data) and data[position] == 0xFF:
            marker = data[position + 1]
            if marker == 0xDA:  # start of scan: entropy-coded data follows, no more metadata
                break
            length = int.from_bytes(data[position + 2:position + 4], "big")
            if marker == 0xE1:
                spans.append((position + 4, min(len(data), position + 2 + length)))
            position += 2 + length
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        position = 12
        while position + 8 <= len(data):
            kind = data[position:position + 4]
            length = int.from_bytes(data[position + 4:position + 8], "little")
            if kind == b"EXIF":
                spans.append((position + 8, min(len(data), position + 8 + length)))
            position += 8 + length + (length & 1)
    return spans


# -- visibility ------------------------------------------------------------------------------------


def owner_label(owner: str, ids: VisitorIds) -> str:
    """How the operator's tools (the CLI's ``--all-users``) name an owner: ``local`` and signed-in
    names as they are (the operator gave or allowed them), an anonymous visitor as
    ``visitor-<8 hex>``, stable per data directory and revealing nothing of the stored id."""
    if is_anonymous(owner):
        return "visitor-" + ids.opaque(owner, "owner-label", 8)
    return owner


def visible_to(record: Any, user: str) -> bool:
    """Whether ``user`` may see ``record`` (anything with ``owner`` and ``shared``): its owner always,
    anyone else only once it is shared."""
    return record.owner == user or bool(record.shared)


def may_change(record: Any, user: str) -> bool:
    """Whether ``user`` may change or delete ``record``: only its owner (sharing lets others see, not edit)."""
    return record.owner == user


__all__ = ["LOCAL", "PRIVATE", "LOCAL_OWNER", "VISITOR_PREFIX", "LEGACY_ANONYMOUS_PREFIXES", "VisitorIds",
           "visitor_policy", "new_visitor_secret", "valid_visitor_secret", "is_anonymous", "visible_to", "may_change",
           "without_embedded_owner", "owner_label"]

"""How much one listing may return: the paging rule every front end applies to what it is asked.

History pages and job lists are read by the CLI, Gradio (its UI and its ``/history`` endpoint) and
Streamlit. A limit outside the range is refused with one message, never quietly changed: asking
``--limit -5`` and getting nothing looks like an empty studio.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from studio.errors import InvalidRequest

MAX_PAGE = 100  # rows one request may read: bounds the work a visitor can ask of a shared server


def page_bounds(limit: Any, offset: Any = 0) -> tuple[int, int]:
    """``(limit, offset)`` as whole numbers, checked: ``limit`` 1-``MAX_PAGE`` and ``offset`` 0 or
    more. Raises ``InvalidRequest`` naming the value for anything else (a fraction, text, ``None``)."""
    return _whole(limit, "limit", 1, MAX_PAGE), _whole(offset, "offset", 0, None)


def _whole(value: Any, what: str, minimum: int, maximum: int | None) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{what} must be a whole number, not {str(value)[:40]!r}") from None
    if not number.is_integer():
        raise InvalidRequest(f"{what} must be a whole number, not {str(value)[:40]!r}")
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"{minimum}-{maximum}" if maximum is not None else f"{minimum} or more"
        raise InvalidRequest(f"{what} must be {bounds}, not {int(number)}")
    return int(number)


def encode_cursor(created_at: str, image_id: str) -> str:
    """Where the next history page starts: after the row ``(created_at, image_id)`` (pages are
    read newest first). Opaque to callers: URL-safe text, no padding."""
    raw = json.dumps([created_at, image_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(created_at, image_id)`` of an ``encode_cursor`` text; ``InvalidRequest`` for anything else
    (a cursor comes from a visitor's request)."""
    try:
        text = str(cursor).strip()
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise InvalidRequest("the page cursor is not one this studio gave out; start from the first page")
    return value[0], value[1]


__all__ = ["MAX_PAGE", "decode_cursor", "encode_cursor", "page_bounds"]

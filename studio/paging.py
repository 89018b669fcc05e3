"""How much one listing may return: the paging rule every front end applies to what it is asked.

History pages and job lists are read by the CLI, Gradio (its UI and its ``/history`` endpoint) and
Streamlit. A limit outside the range is refused with one message, never quietly changed: asking
``--limit -5`` and getting nothing looks like an empty studio.
"""

from __future__ import annotations

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


__all__ = ["MAX_PAGE", "page_bounds"]

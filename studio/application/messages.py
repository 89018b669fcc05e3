"""How every front end names a failure: one short title per error kind, one hint, one message.

Streamlit shows ``title: message`` with the hint below; Gradio raises ``gr.Error(message,
title=title)``; the CLI prints ``error: message``; the HTTP API sends ``{error, detail}``. All read
``error_text``, so one failure reads the same everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from studio.errors import StudioError

ERROR_TITLES = {
    "invalid_request": "Check the request",
    "not_found": "Not found",
    "budget_exceeded": "Daily budget reached",
    "not_configured": "Provider not set up",
    "content_blocked": "Blocked by the provider's safety system",
    "rate_limit_held": "Rate limited",  # the studio held it back, unsent, while the provider's Retry-After ran
    "rate_limited": "Rate limited",
    "quota_exhausted": "Out of credit",
    "timeout": "The provider timed out",
    "provider_failure": "The provider failed",
    "cancelled": "Stopped",
    "busy": "Busy elsewhere",
}
# A content block raised by this studio's own filter (no provider saw the prompt).
STUDIO_FILTER_TITLE = "Blocked by this studio's content filter"
DEFAULT_TITLE = "Something went wrong"
KEY_HINT = "Set the provider's key on the server, or paste one for this session where the app offers it."
# Hints that hold for every error of a kind. "not_configured" has none: only a key problem
# (``error.needs_key``) gets the key hint; other set-up errors carry their own fix in the message.
ERROR_HINTS = {
    "content_blocked": "Rephrase the prompt (or use another image) and try again.",
    "rate_limited": "Wait a little and try again.",
    "rate_limit_held": "Wait a little and try again.",
    "quota_exhausted": "Add credit to the provider account, or pick another provider.",
    "timeout": "Try again, or ask for fewer or smaller images.",
    "budget_exceeded": "Wait until tomorrow (UTC) or raise STUDIO_DAILY_BUDGET.",
}


@dataclass(frozen=True)
class ErrorText:
    """A failure as words: ``title`` (a few words), ``message`` (the error's own, as written: escape
    it for Markdown or HTML where it is shown), ``hint`` (what to do, or ""), ``kind`` (the error's)."""

    kind: str
    title: str
    message: str
    hint: str = ""


def error_title(error: StudioError) -> str:
    """The short title of ``error``'s kind (a content block says whose filter it was)."""
    if error.kind == "content_blocked" and not error.provider:
        return STUDIO_FILTER_TITLE
    return ERROR_TITLES.get(error.kind, DEFAULT_TITLE)


def error_text(error: BaseException, *, key_hint: str = KEY_HINT) -> ErrorText:
    """``error`` as a title, message and hint. A ``StudioError`` keeps its message; anything else is
    a bug, named by its type only (its text may hold paths or internals). ``key_hint``: the front
    end's own words for where a key goes, used when the error says a key is missing."""
    if not isinstance(error, StudioError):
        return ErrorText("error", DEFAULT_TITLE,
                         f"{type(error).__name__} on the server; the details are in its log")
    hint = key_hint if getattr(error, "needs_key", False) else ERROR_HINTS.get(error.kind, "")
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        hint = f"Try again in about {math.ceil(retry_after)} s."
    return ErrorText(error.kind, error_title(error), error.message, hint)


__all__ = ["DEFAULT_TITLE", "ERROR_HINTS", "ERROR_TITLES", "ErrorText", "KEY_HINT", "STUDIO_FILTER_TITLE",
           "error_text", "error_title"]

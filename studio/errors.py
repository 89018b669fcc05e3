"""Typed errors shared by the core, the providers and every front end.

Each error carries a message a person can act on. Front ends map them to what they show:
the CLI exits 2 for ``InvalidRequest`` (bad input) and 1 for the rest, the web UIs show the
message. Secrets never go into a message.
"""

from __future__ import annotations

import os


class StudioError(Exception):
    """Base of every error the studio raises on purpose."""

    kind = "error"
    retryable = False
    # USD the provider billed for a request that failed after it ran (a Replicate run cancelled at its
    # limit or by the user, a failed prediction's GPU seconds), when known; the studio books it.
    cost: float | None = None

    def __init__(self, message: str, *, provider: str | None = None):
        super().__init__(message)
        self.message = message
        self.provider = provider

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "provider": self.provider}


class InvalidRequest(StudioError):
    """The request itself is wrong (empty prompt, size out of range, unreadable image...)."""

    kind = "invalid_request"


class NotFound(InvalidRequest):
    """An id or file the user named does not exist."""

    kind = "not_found"


class FileGone(NotFound, FileNotFoundError):
    """A stored image's record is there but its file or object is not (deleted outside the studio:
    an operator's cleanup, a bucket's lifecycle rule). Still a FileNotFoundError for callers that
    treat a vanished file as such; the HTTP API answers 410. ``studio repair`` reports it."""

    kind = "file_gone"


class Busy(StudioError):
    """What was asked is being done elsewhere right now (a batch job that another live process
    runs): not bad input, and nothing changed here; it can be asked again once that stops."""

    kind = "busy"
    retryable = True


def missing_file(path: object, what: str = "") -> NotFound:
    """The error for a named file that is not a readable file: a folder is called a folder (saying
    "not found" of a folder that plainly exists misleads), anything else "file not found".
    ``what`` names the file's role ("image", "mask", "script"); the path is shown as given."""
    label = f"{what} " if what else ""
    try:
        is_folder = os.path.isdir(os.path.expanduser(str(path)))
    except (OSError, ValueError):  # a name the system cannot even look up is simply not found
        is_folder = False
    if is_folder:
        return NotFound(f"{label}{path} is a folder, not a file")
    return NotFound(f"{label}file not found: {path}")


class BudgetExceeded(StudioError):
    """Running the request would spend more than today's budget allows."""

    kind = "budget_exceeded"


class NotConfigured(StudioError):
    """A provider lacks its key, its SDK or its model files.

    ``needs_key`` is True when the fix is an API key (missing or refused): front ends then add where
    to put one. Other set-up problems (a local model not on the machine, a missing package) say
    their own fix in the message, and no key hint is added: no key is involved."""

    kind = "not_configured"

    def __init__(self, message: str, *, provider: str | None = None, needs_key: bool = False):
        super().__init__(message, provider=provider)
        self.needs_key = needs_key


class ContentBlocked(StudioError):
    """The provider's safety system refused the prompt or the result."""

    kind = "content_blocked"


class RateLimited(StudioError):
    """Too many requests; worth retrying after ``retry_after`` seconds."""

    kind = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, provider: str | None = None, retry_after: float | None = None):
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class RateLimitHeld(RateLimited):
    """The studio itself held the request back, unsent: the provider had asked every request to wait
    (a Retry-After still running) for longer than this request may wait. Recorded apart from the
    provider's own 429s (``kind``), so monitoring does not count the studio's refusals as rate limits."""

    kind = "rate_limit_held"


class QuotaExhausted(StudioError):
    """The account is out of credit or quota; retrying will not help."""

    kind = "quota_exhausted"


class ProviderTimeout(StudioError):
    """The provider did not answer in time."""

    kind = "timeout"
    retryable = True


class ProviderFailure(StudioError):
    """The provider failed (server error, broken response, undecodable image)."""

    kind = "provider_failure"

    def __init__(self, message: str, *, provider: str | None = None, retryable: bool = False):
        super().__init__(message, provider=provider)
        self.retryable = retryable


class UnusableResult(ProviderFailure):
    """The provider answered, and billed the request, but the answer holds no image we can keep
    (no output, an undecodable image, a link that cannot be downloaded...).

    Never retryable: a retry would be paid again and would most likely be just as unusable. Its
    ``kind`` stays "provider_failure", which is how front ends show it.

    ``cost``: the USD the answer's own usage says was billed (tokens, GPU seconds, credits), when the
    provider reported it; None when it did not, and the request is then booked at its reserved bound."""

    def __init__(self, message: str, *, provider: str | None = None, cost: float | None = None):
        super().__init__(message, provider=provider, retryable=False)
        self.cost = cost


class StorageError(StudioError):
    """The studio's own storage (the image store or the database) cannot be used right now:
    unreachable, refusing, or an object that did not arrive intact. Not the provider's fault and not
    the caller's: nothing was saved by the call that raised it, and it may be tried again. Its message
    is safe to show (no SQL, row values or credentials); the full cause goes to the server log."""

    kind = "storage_unavailable"
    retryable = True


class Cancelled(StudioError):
    """The user (or a job) cancelled the work before it finished."""

    kind = "cancelled"

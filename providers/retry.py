"""Retrying a provider call: the server's Retry-After waited in full, else exponential backoff,
bounded in tries and time.

Only errors marked ``retryable`` (rate limits, transient server errors) are retried. Quota, auth,
content and validation errors surface at once: retrying them only burns time or money.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from studio.errors import Cancelled, RateLimited, RateLimitHeld, StudioError

T = TypeVar("T")
log = logging.getLogger("studio.providers.retry")

# The longest one Retry-After may hold every call to a provider (seconds); Settings.rate_limit_max_hold.
DEFAULT_MAX_HOLD_SECONDS = 3600.0


@dataclass
class RetryPolicy:
    """How often and how long to retry. ``max_delay`` caps only our own backoff: a wait the server
    asks for (Retry-After) is kept whole, and when it does not fit in ``max_total_seconds`` the call
    fails at once with "rate limited, retry after N s" instead of retrying early."""

    max_tries: int = 4
    max_total_seconds: float = 90.0
    base_delay: float = 1.0
    max_delay: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 1): the server's
        ``retry_after`` when it gave one, else exponential backoff with jitter."""
        if retry_after is not None and retry_after >= 0:
            return retry_after
        backoff = self.base_delay * (2 ** (attempt - 1))
        return min(backoff, self.max_delay) * random.uniform(0.8, 1.2)


DEFAULT_POLICY = RetryPolicy()


class RetryAfterWindow:
    """Until when a server asked us to hold off (its Retry-After), shared by every call one provider
    makes in this process: one 429 pauses all of them (other users, a batch's other workers), not
    only the call that got it. Rate limits are per account, so one window covers the provider.

    The shared hold lasts at most ``max_hold`` seconds: a longer ask (a Retry-After date years
    ahead, a misconfigured proxy) still fails the request that got it, with the server's figure, but
    must not shut the provider for every visitor of a long-running server until it restarts."""

    def __init__(self, provider: str | None = None, clock: Callable[[], float] = time.monotonic,
                 max_hold: float = DEFAULT_MAX_HOLD_SECONDS):
        self.provider = provider
        self.max_hold = max_hold
        self._clock = clock
        self._until = 0.0
        self._lock = threading.Lock()

    def hold_off(self, seconds: float) -> None:
        """The server asked to wait ``seconds`` from now: hold every call that long, at most
        ``max_hold`` (a later end never moves earlier)."""
        if seconds > self.max_hold:
            log.warning("%s asked to wait %.0f s; every request to it is held %.0f s at most",
                        self.provider or "the provider", seconds, self.max_hold)
        with self._lock:
            self._until = max(self._until, self._clock() + min(seconds, self.max_hold))

    def remaining(self) -> float:
        """Seconds still to wait; 0 when calls may go out."""
        with self._lock:
            return max(0.0, self._until - self._clock())


def call_with_retry(
    call: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    cancel=None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[StudioError, float], None] | None = None,
    window: RetryAfterWindow | None = None,
) -> T:
    """Run ``call``; on a retryable ``StudioError`` wait and try again, within the policy's bounds.

    Raises the last error when tries run out; a ``RateLimited`` whose Retry-After would pass
    ``policy.max_total_seconds`` is raised at once as "rate limited, retry after N s" (carrying
    ``retry_after``), so a batch can wait it out instead of this call sleeping past its deadline.
    With a ``window``, every Retry-After is recorded there (held at most its ``max_hold``), and each
    try first waits out what the window still asks, or, when that would pass the time budget, fails
    at once, unsent, with ``RateLimitHeld`` (the studio's own refusal, recorded apart from a 429).
    """
    started = time.monotonic()
    attempt = 0
    while True:
        held = window.remaining() if window is not None else 0.0
        if held > 0:
            if time.monotonic() - started + held > policy.max_total_seconds:
                raise RateLimitHeld(f"rate limited, retry after {math.ceil(held)} s (the provider asked every "
                                    f"request to wait; this one was not sent)", provider=window.provider,
                                    retry_after=held)
            _pause(held, cancel, sleep)
        attempt += 1
        try:
            return call()
        except StudioError as error:
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            if window is not None and retry_after is not None:
                window.hold_off(retry_after)
            if not error.retryable or attempt >= policy.max_tries:
                raise
            wait = policy.delay(attempt, retry_after)
            if time.monotonic() - started + wait > policy.max_total_seconds:
                if retry_after is not None:
                    raise rate_limited_for(retry_after, provider=error.provider, reason=error.message) from error
                raise
            if on_retry is not None:
                on_retry(error, wait)
            _pause(wait, cancel, sleep, error)


def _pause(seconds: float, cancel, sleep: Callable[[float], None], error: StudioError | None = None) -> None:
    """Wait ``seconds``, on ``cancel`` when there is one (raising ``Cancelled`` if it is set)."""
    if cancel is None:
        sleep(seconds)
    elif cancel.wait(seconds):
        raise Cancelled("cancelled while waiting to retry") from error


def rate_limited_for(retry_after: float, *, provider: str | None, reason: str) -> RateLimited:
    """The error to raise when the wait the server asked for (``retry_after`` seconds) is longer
    than the time we have: "rate limited, retry after N s (reason)", carrying the wait."""
    return RateLimited(f"rate limited, retry after {math.ceil(retry_after)} s ({reason})", provider=provider,
                       retry_after=retry_after)


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None when absent
    or not a finite, non-negative number (a wait of "inf" or "nan" is no instruction we can follow)."""
    if headers is None:
        return None
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(text: str | None) -> float | None:
    """``text`` as a finite number of at least 0, else None."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None

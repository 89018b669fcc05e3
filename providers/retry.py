"""Retrying: one backoff rule, one Retry-After parser, and the retry loop of every provider call.

- ``Backoff``: exponential delays with an optional jitter, capped. Provider calls use it through
  ``RetryPolicy``; webhook deliveries (``studio.webhooks``) and a batch's provider gate use it too.
- ``parse_retry_after``: a server's Retry-After (seconds, milliseconds or an HTTP date) as seconds,
  at most a cap; ``server_wait`` is the same check for a wait already read as a number.
- ``call_with_retry``: the server's Retry-After waited in full (up to the cap), else our backoff,
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
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping, TypeVar

from studio.errors import Cancelled, RateLimited, RateLimitHeld, StudioError

T = TypeVar("T")
log = logging.getLogger("studio.providers.retry")

# The longest any Retry-After is honoured (seconds); Settings.rate_limit_max_hold. A longer ask (a
# date years ahead, a misconfigured proxy) is read as this long: waiting it out is no option anyway.
DEFAULT_MAX_HOLD_SECONDS = 3600.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base`` seconds before the second try, doubling after each failure, at
    most ``cap`` seconds, then multiplied by a random factor within 1 +/- ``jitter`` (so that clients
    that failed together do not all come back together; 0 for none)."""

    base: float = 1.0
    cap: float = 20.0
    jitter: float = 0.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed tries in a row (1 or more)."""
        seconds = min(self.base * 2 ** (max(failures, 1) - 1), self.cap)
        return seconds * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else seconds


@dataclass
class RetryPolicy:
    """How often and how long to retry. ``max_delay`` caps only our own backoff: a wait the server
    asks for (Retry-After) is kept whole (up to the provider's hold cap), and when it does not fit
    in ``max_total_seconds`` the call fails at once with "rate limited, retry after N s" instead of
    retrying early."""

    max_tries: int = 4
    max_total_seconds: float = 90.0
    base_delay: float = 1.0
    max_delay: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 1): the server's
        ``retry_after`` when it gave one, else exponential backoff with 20 % jitter."""
        if retry_after is not None and retry_after >= 0:
            return retry_after
        return Backoff(self.base_delay, self.max_delay, jitter=0.2).delay(attempt)


DEFAULT_POLICY = RetryPolicy()


def server_wait(seconds: float | None, cap: float = DEFAULT_MAX_HOLD_SECONDS) -> float | None:
    """A wait a server asked for, as one we can follow: ``seconds`` at most ``cap`` (logged when it
    asked for more); None when there is none or it is no finite wait of at least 0 (negative,
    "inf", "nan")."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    if seconds > cap:
        log.warning("a server asked to wait %.0f s (Retry-After); waiting %.0f s at most", seconds, cap)
    return min(float(seconds), cap)


def parse_retry_after(headers: Mapping[str, str] | None, *, cap: float = DEFAULT_MAX_HOLD_SECONDS,
                      now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a response's ``retry-after-ms`` or ``retry-after`` header (delta-seconds
    or an HTTP date; a date already past is 0), at most ``cap`` seconds. None when absent or
    unusable (garbage, negative, "inf", "nan"). ``headers`` is a case-insensitive mapping (httpx,
    requests) or a dict with lower-case names; ``now`` gives the Unix time a date is counted from."""
    if headers is None:
        return None
    asked = _number(headers.get("retry-after-ms"))
    if asked is not None:
        asked /= 1000.0
    else:
        value = (headers.get("retry-after") or "").strip()
        asked = _number(value)
        if asked is None and value:
            when = _http_date(value)
            asked = None if when is None else max(0.0, when.timestamp() - now())
    return server_wait(asked, cap)


def _http_date(text: str) -> datetime | None:
    """An HTTP date (``Wed, 21 Oct 2099 07:28:00 GMT``, always GMT) as an aware datetime; None when
    ``text`` is not one."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


class RetryAfterWindow:
    """Until when a server asked us to hold off (its Retry-After), shared by every call one provider
    makes in this process: one 429 pauses all of them (other users, a batch's other workers), not
    only the call that got it. Rate limits are per account, so one window covers the provider.

    The shared hold lasts at most ``max_hold`` seconds: a longer ask (a Retry-After date years
    ahead, a misconfigured proxy) fails the request that got it, saying ``max_hold``, but must not
    shut the provider for every visitor of a long-running server until it restarts."""

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
            # The server's wait, at most what the window (or the default) ever holds: that capped
            # figure is also the one the final "retry after N s" message says.
            cap = window.max_hold if window is not None else DEFAULT_MAX_HOLD_SECONDS
            retry_after = server_wait(error.retry_after, cap) if isinstance(error, RateLimited) else None
            if retry_after is not None:
                error.retry_after = retry_after  # whoever waits on this error waits the capped figure
                if window is not None:
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


def _number(text: str | None) -> float | None:
    """``text`` as a finite number of at least 0, else None."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None

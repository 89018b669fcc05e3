"""Retrying a provider call: exponential backoff that honours Retry-After, bounded in tries and time.

Only errors marked ``retryable`` (rate limits, transient server errors) are retried. Quota, auth,
content and validation errors surface at once: retrying them only burns time or money.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from studio.errors import Cancelled, RateLimited, StudioError

T = TypeVar("T")


@dataclass
class RetryPolicy:
    max_tries: int = 4
    max_total_seconds: float = 90.0
    base_delay: float = 1.0
    max_delay: float = 20.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 1)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_delay)
        backoff = self.base_delay * (2 ** (attempt - 1))
        return min(backoff, self.max_delay) * random.uniform(0.8, 1.2)


DEFAULT_POLICY = RetryPolicy()


def call_with_retry(
    call: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    cancel=None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[StudioError, float], None] | None = None,
) -> T:
    """Run ``call``; on a retryable ``StudioError`` wait and try again, within the policy's bounds."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except StudioError as error:
            if not error.retryable or attempt >= policy.max_tries:
                raise
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            wait = policy.delay(attempt, retry_after)
            if time.monotonic() - started + wait > policy.max_total_seconds:
                raise
            if on_retry is not None:
                on_retry(error, wait)
            if cancel is not None:
                if cancel.wait(wait):
                    raise Cancelled("cancelled while waiting to retry") from error
            else:
                sleep(wait)


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value_ms = headers.get("retry-after-ms")
    if value_ms:
        try:
            return float(value_ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

"""What every cloud provider shares: an API key, cached SDK clients, and around each HTTP call a
deadline, cancellation and bounded retries.

``CloudProvider`` is the base class of the providers behind an HTTP API. Their ``generate`` may make
several calls (``n`` split into batches, retries after a rate limit). ``ctx.timeout`` bounds the
whole request, so each call gets only the time that is left, and retries stop when the deadline
would pass. A blocking SDK call cannot be interrupted from outside, so ``run_interruptibly`` runs it
on a worker thread and stops waiting as soon as the user cancels.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Hashable, TypeVar

from providers.base import Provider
from providers.retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
from studio.errors import Cancelled, NotConfigured, ProviderTimeout, StudioError
from studio.types import RunContext

T = TypeVar("T")

# How often a waiting call looks at the cancel flag: short enough to feel instant to a person.
_POLL_SECONDS = 0.05
# A call is abandoned this long after the deadline if the HTTP client has not given up by itself.
_GRACE_SECONDS = 1.0


class CloudProvider(Provider):
    """A provider behind an HTTP API, reached with an API key through an SDK (or httpx) client."""

    max_concurrency = 4  # requests a batch runs at once against one API
    retry_policy: RetryPolicy = DEFAULT_POLICY  # our retries, in one place (SDK retries are off)

    def __init__(self, settings, catalog):
        super().__init__(settings, catalog)
        # A client holds a connection pool (and some SDKs close it when the client is garbage
        # collected), so clients are kept for the provider's lifetime, one per key and endpoint.
        self._clients: dict[Hashable, Any] = {}
        self._clients_lock = threading.Lock()

    def require_key(self) -> str:
        """The API key, or a ``NotConfigured`` error that says where to put one."""
        key = self.api_key()
        if not key:
            raise NotConfigured(f"{self.label} needs an API key: {self.key_hint()}", provider=self.name)
        return key

    def cached_client(self, cache_key: Hashable, make: Callable[[], T]) -> T:
        """The client kept under ``cache_key``, made by ``make()`` the first time (thread-safe)."""
        with self._clients_lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = self._clients[cache_key] = make()
            return client

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            if callable(getattr(client, "close", None)):  # not every SDK's client has one
                client.close()


class Deadline:
    """The moment a whole generation must be done by."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires


def run_interruptibly(call: Callable[[], T], *, ctx: RunContext, deadline: Deadline, label: str,
                      provider: str) -> T:
    """Run ``call`` on a worker thread; give up when the user cancels or the deadline passes.

    The worker is a daemon thread that finishes on its own (its HTTP timeout is the time left);
    an abandoned answer is dropped.
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread below
            outcome["error"] = exc
        finally:
            done.set()

    ctx.check_cancelled()
    if deadline.expired():
        raise ProviderTimeout(f"{label} did not finish within {deadline.seconds:g} s", provider=provider)
    threading.Thread(target=work, name=f"{provider}-call", daemon=True).start()
    while not done.wait(_POLL_SECONDS):
        if ctx.cancel.is_set():
            raise Cancelled("cancelled by the user", provider=provider)
        if time.monotonic() > deadline.expires + _GRACE_SECONDS:
            raise ProviderTimeout(f"{label} did not answer within {deadline.seconds:g} s", provider=provider)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def call_within(call: Callable[[], T], *, ctx: RunContext, deadline: Deadline, policy: RetryPolicy,
                label: str, provider: str) -> T:
    """``call`` with our bounded retries, each try interruptible, all of it inside ``deadline``."""

    def one_try() -> T:
        return run_interruptibly(call, ctx=ctx, deadline=deadline, label=label, provider=provider)

    return call_with_retry(one_try, policy=policy_within(policy, deadline), cancel=ctx.cancel)


def policy_within(policy: RetryPolicy, deadline: Deadline) -> RetryPolicy:
    """``policy``, cut so that waiting to retry never runs past ``deadline``."""
    return dataclasses.replace(policy, max_total_seconds=min(policy.max_total_seconds, deadline.remaining()))


def keep_partial(images: list, error: StudioError) -> bool:
    """Whether to return the images already made (and paid for) when a later call fails.

    Cancellation always wins: the person asked to stop. Otherwise paid images are kept.
    """
    return bool(images) and not isinstance(error, Cancelled)

"""What every cloud provider shares: an API key, cached SDK clients, and around each HTTP call a
deadline, cancellation and bounded retries.

``CloudProvider`` is the base class of the providers behind an HTTP API. Their ``generate`` may make
several calls (``n`` split into batches, retries after a rate limit). ``ctx.timeout`` bounds the
whole request, so each call gets only the time that is left, and retries stop when the deadline
would pass. A blocking SDK call cannot be interrupted from outside, so ``run_interruptibly`` runs it
on a worker thread and stops waiting as soon as the user cancels.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import logging
import threading
import time
from typing import Any, Callable, Hashable, Mapping, TypeVar
from urllib.parse import urlsplit

from providers.base import Provider
from providers.retry import DEFAULT_POLICY, RetryAfterWindow, RetryPolicy, call_with_retry, parse_retry_after
from studio.errors import Cancelled, NotConfigured, ProviderFailure, ProviderTimeout, StudioError, UnusableResult
from studio.types import RunContext

T = TypeVar("T")
logger = logging.getLogger(__name__)

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
        # A Retry-After from this API holds every call to it in this process until it passes (at
        # most the operator's cap: one absurd header must not shut the provider until a restart).
        self.retry_window = RetryAfterWindow(self.name, max_hold=settings.rate_limit_max_hold)

    def retry_after(self, headers: Mapping[str, str] | None) -> float | None:
        """Seconds a rate-limited answer's ``headers`` ask to wait (``parse_retry_after``: Retry-After
        as seconds or an HTTP date), at most the operator's hold cap; None when they give no usable wait."""
        return parse_retry_after(headers, cap=self.retry_window.max_hold)

    def require_key(self) -> str:
        """The API key, or a ``NotConfigured`` error that says where to put one."""
        key = self.api_key()
        if not key:
            raise NotConfigured(f"{self.label} needs an API key: {self.key_hint()}", provider=self.name,
                                needs_key=True)
        return key

    def cached_client(self, cache_key: Hashable, make: Callable[[], T]) -> T:
        """The client kept under ``cache_key``, made by ``make()`` the first time (thread-safe)."""
        with self._clients_lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = self._clients[cache_key] = make()
            return client

    def download_output(self, url: str, *, ctx: RunContext, deadline: Deadline, max_bytes: int,
                        base_url: str | None = None, timeout: float = 60.0,
                        credentials: Mapping[str, str] | None = None,
                        credential_hosts: tuple[str, ...] = ()) -> bytes:
        """The bytes of an output the provider answered with a link to: an ``https:``/``http:`` URL
        or a base64 ``data:`` URI.

        URLs go through the studio's outbound guard (``studio.netfetch.fetch_url``: public addresses
        only, checked on every redirect, at most ``max_bytes``, within ``timeout`` seconds and the
        deadline). The one exception is the host of ``base_url``, the endpoint the operator pointed
        this provider at (a proxy or test server may sit on a private address).

        ``credentials`` (headers such as ``{"Authorization": "Bearer ..."}``, for a provider whose
        output files need its key) are sent only to the provider's own hosts: the origin of
        ``base_url``, or an ``https:`` URL whose host is in ``credential_hosts`` (an entry starting
        with ``.`` matches that domain's subdomains). Any other host gets no key, and the guard drops
        ``Authorization`` when a redirect leaves the origin.

        The provider has billed the generation by now, so failing to get the bytes is an
        ``UnusableResult``: never retried, since a new generation would be paid again. (Only the
        download itself is retried, where the guard calls its failure retryable.)
        """
        if url.startswith("data:"):
            return _data_uri_bytes(url, self.label, self.name)
        from studio.netfetch import fetch_url

        allowed = _public_or_host_of(base_url)
        headers = credentials if credentials and serves_provider(url, base_url, credential_hosts) else None

        def fetch_once() -> bytes:
            seconds = max(1.0, min(timeout, deadline.remaining()))
            try:
                # Any content type: the bytes are decoded and checked as an image afterwards, and a
                # delivery host that labels a paid image oddly should not cost us the image.
                return fetch_url(url, max_bytes=max_bytes, timeout=seconds, allowed=allowed, headers=headers,
                                 content_types=None)
            except StudioError as error:
                raise ProviderFailure(error.message, provider=self.name, retryable=error.retryable) from None

        try:
            return call_with_retry(fetch_once, policy=policy_within(self.retry_policy, deadline), cancel=ctx.cancel)
        except Cancelled:
            raise
        except StudioError as error:
            raise UnusableResult(f"{self.label} made the image and billed it, but it could not be downloaded: "
                                 f"{error.message}", provider=self.name) from None

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
                label: str, provider: str, window: RetryAfterWindow | None = None) -> T:
    """``call`` with our bounded retries, each try interruptible, all of it inside ``deadline``;
    with ``window`` (the provider's ``retry_window``), Retry-After holds every call to the API."""

    def one_try() -> T:
        return run_interruptibly(call, ctx=ctx, deadline=deadline, label=label, provider=provider)

    return call_with_retry(one_try, policy=policy_within(policy, deadline), cancel=ctx.cancel, window=window)


def policy_within(policy: RetryPolicy, deadline: Deadline) -> RetryPolicy:
    """``policy``, cut so that waiting to retry never runs past ``deadline``."""
    return dataclasses.replace(policy, max_total_seconds=min(policy.max_total_seconds, deadline.remaining()))


def keep_partial(images: list, error: StudioError) -> bool:
    """Whether to return the images already made (and paid for) when a later call fails.

    Cancellation always wins: the person asked to stop. Otherwise paid images are kept.
    """
    return bool(images) and not isinstance(error, Cancelled)


def billed_cost(error: StudioError, cost: float | None) -> StudioError:
    """``error``, carrying ``cost`` (USD, from the usage the provider's answers reported so far) when
    it is an ``UnusableResult`` that does not know its cost yet: an unusable answer is booked at what
    its usage says, as a usable one is, and at the reserved bound only when no usage came with it."""
    if isinstance(error, UnusableResult) and error.cost is None:
        error.cost = cost
    return error


def _data_uri_bytes(uri: str, label: str, provider: str) -> bytes:
    """The bytes of a base64 ``data:`` URI, or ``UnusableResult``."""
    header, _, payload = uri.partition(",")
    if ";base64" not in header:
        raise UnusableResult(f"{label} answered with a data URI that is not base64", provider=provider)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UnusableResult(f"{label} answered with a data URI that is not valid base64",
                             provider=provider) from None


def serves_provider(url: str, base_url: str | None, hosts: tuple[str, ...]) -> bool:
    """Whether ``url`` is served by the provider itself, so that its key may go there: same origin
    (scheme, host, port) as ``base_url``, the endpoint in use, or ``https:`` on a host in ``hosts``
    (exact names; ``.example.com`` also matches any subdomain of example.com, not example.com itself)."""
    try:
        target = urlsplit(url.strip())
        host = (target.hostname or "").lower().rstrip(".")
        if base_url and _origin(target) == _origin(urlsplit(base_url)):
            return True
        if target.scheme != "https" or not host:
            return False
    except ValueError:  # a malformed port: the fetch itself will refuse the URL
        return False
    return any(host.endswith(name) if name.startswith(".") else host == name for name in hosts)


def _origin(parts) -> tuple[str, str, int]:
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower().rstrip("."), parts.port or default_port


def _public_or_host_of(base_url: str | None) -> Callable[[Any], bool]:
    """The guard's public-only address check, widened to the addresses of ``base_url``'s host: an
    endpoint the operator configured is trusted for the outputs it serves, on a private network or
    this machine too (the guard's local policy). Link-local and metadata addresses never pass."""
    from studio.netfetch import is_allowed_locally, is_public_address, system_resolver

    trusted: set[str] = set()
    parts = urlsplit(base_url or "")
    if parts.hostname:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            trusted = {text.split("%")[0] for text in system_resolver(parts.hostname, port)}
        except (StudioError, ValueError) as error:  # an unresolvable endpoint: nothing extra is trusted
            logger.warning("cannot resolve the configured endpoint %s: %s", parts.hostname, error)

    def allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return is_public_address(address) or (str(address) in trusted and is_allowed_locally(address))

    return allowed

"""Webhooks: a signed POST when a job makes progress, completes or fails.

Signing (the scheme receivers check with ``verify_signature``)::

    X-Studio-Timestamp: 1767225600                    (Unix seconds when this attempt was sent)
    X-Studio-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" keyed by the secret>
    X-Studio-Event: job.completed                     (job.progress | job.completed | job.failed | ...)
    X-Studio-Delivery: <unique id, the same on every retry of one delivery>

The timestamp is inside the signed text, so a receiver that refuses timestamps older than a few
minutes (the replay window) cannot be fed an old, captured request again.

There are no unsigned webhooks. The secret is ``STUDIO_WEBHOOK_SECRET`` for the operator's own
jobs; a job without it, and every job of a shared server (whose visitors must neither know nor share
the operator's secret), gets its own (``new_secret``), which the front end shows once
(``job_secret``) and no record of the job carries. A delivery without any secret is not sent.

Every delivery goes through ``studio.netfetch``'s guard: the host is resolved once per attempt,
every address checked (link-local and metadata always refused; shared servers only reach public
addresses), and the connection made to the checked address.

Deliveries run on one background thread: the job never waits for a receiver. A failed delivery
(connection error, timeout, 408, 429, 5xx) is retried after the receiver's Retry-After, else with
exponential backoff (``providers.retry``; either at most ``max_delay``); other 4xx answers are
final. Redirects are not followed. One job's deliveries to one URL arrive in order; a progress
update still waiting is replaced by the newest one, so a slow receiver gets the latest state, not
a backlog.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from providers.retry import Backoff, parse_retry_after
from studio import netfetch
from studio.errors import InvalidRequest

log = logging.getLogger("studio.webhooks")

SIGNATURE_HEADER = "X-Studio-Signature"
TIMESTAMP_HEADER = "X-Studio-Timestamp"
EVENT_HEADER = "X-Studio-Event"
DELIVERY_HEADER = "X-Studio-Delivery"
DEFAULT_TOLERANCE = 300  # seconds: the replay window receivers should use
USER_AGENT = "image-studio-webhooks/0.1"
JOB_SECRET_OPTION = "webhook_secret"  # a job's own signing secret, in its stored options (never in to_dict)
_RETRY_STATUSES = {408, 425, 429}


# -- signing -----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over ``"<timestamp>.<body>"``."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    message = str(timestamp).encode("ascii") + b"." + raw
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str | None, body: bytes, event: str, delivery_id: str,
                   now: float | None = None) -> dict[str, str]:
    """The headers of one delivery attempt. There are no unsigned webhooks: without a secret this
    raises ``InvalidRequest``."""
    if not secret:
        raise InvalidRequest("webhooks are always signed, and this one has no secret: set STUDIO_WEBHOOK_SECRET "
                             "or let the job make its own")
    timestamp = int(now if now is not None else time.time())
    return {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_HEADER: event,
            DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes | str, tolerance: float = DEFAULT_TOLERANCE,
                     now: float | None = None) -> bool:
    """True when ``body`` was signed with ``secret`` less than ``tolerance`` seconds ago (or ahead).

    ``headers`` is any mapping of the request's headers (names in any case). The signature header
    may carry several comma-separated ``sha256=`` values (a sender rotating secrets); one match is
    enough. Compare on the raw body bytes, before parsing the JSON."""
    if not secret:
        return False
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "").strip()
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit() or not signature:
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate.strip()) for candidate in signature.split(","))


# -- where we may send -------------------------------------------------------------------------


def validate_url(url: str) -> str:
    """The webhook URL with surrounding spaces removed, if its form is acceptable (no DNS here):
    http(s), a host, a valid port and no user:password part. Otherwise ``InvalidRequest``."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidRequest(f"a webhook URL must start with http:// or https://, not {text[:40]!r}")
    if not parts.hostname:
        raise InvalidRequest("the webhook URL has no host")
    if parts.username or parts.password:
        raise InvalidRequest("put no user:password in the webhook URL; the studio signs its requests instead")
    try:
        parts.port
    except ValueError:
        raise InvalidRequest("the webhook URL has an invalid port") from None
    return text


def check_url(url: str, *, public_only: bool = False, resolver: netfetch.Resolver = netfetch.system_resolver) -> str:
    """A webhook URL we are willing to POST to (as given, stripped), or ``InvalidRequest``.

    The form is checked (``validate_url``) and the host resolved and checked by the studio's one
    outbound guard (``studio.netfetch``): link-local and cloud metadata addresses are always
    refused, in any spelling; with ``public_only`` (a shared, multi-user deployment) every address
    must be public. Each delivery checks again and connects to the address it checked."""
    text = validate_url(url)
    netfetch.check_address(text, allowed=netfetch.policy(public_only), resolver=resolver,
                           purpose="send webhooks to")
    return text


def new_secret() -> str:
    """A fresh signing secret for one job (``whsec_`` + 32 random bytes, URL-safe base64)."""
    return "whsec_" + secrets.token_urlsafe(32)


def job_secret(job: Any) -> str | None:
    """The job's own webhook signing secret, for the front end to show once, right after the job
    is made; None when the operator's ``STUDIO_WEBHOOK_SECRET`` signs its webhooks (or it has none)."""
    return (getattr(job, "options", None) or {}).get(JOB_SECRET_OPTION)


# What every front end says next to a job's own secret (the secret itself shown as code).
JOB_SECRET_NOTICE = (f"This job signs its webhooks with its own secret, shown only now: keep it. Receivers check "
                     f"{SIGNATURE_HEADER} with it (sha256= the HMAC-SHA256 of the {TIMESTAMP_HEADER} value, a dot, "
                     f"and the raw body).")


# -- delivering --------------------------------------------------------------------------------


@dataclass(order=True)
class _Delivery:
    due: float
    order: int
    id: str = field(compare=False)
    url: str = field(compare=False)
    event: str = field(compare=False)
    body: bytes = field(compare=False)
    job_id: str | None = field(compare=False, default=None)
    attempts: int = field(compare=False, default=0)
    public_only: bool = field(compare=False, default=False)
    secret: str | None = field(compare=False, default=None, repr=False)  # this job's own; else the dispatcher's
    headers: dict[str, str] = field(compare=False, default_factory=dict, repr=False)  # more, e.g. a shared secret

    @property
    def lane(self) -> tuple[str, str]:
        return (self.url, self.job_id or "")


@dataclass
class DeliveryResult:
    id: str
    url: str
    event: str
    job_id: str | None
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    superseded: bool = False  # a progress update dropped because a newer one was waiting


class WebhookDispatcher:
    """Sends webhooks from a background thread with retries; ``send`` returns at once.

    Deliveries for one job to one URL form a lane and arrive in order: a delivery being retried
    holds back the later ones of its lane (so "completed" never overtakes "progress"), never other
    lanes and never the job."""

    def __init__(self, secret: Callable[[], str | None] | str | None = None, *, max_attempts: int = 6,
                 base_delay: float = 1.0, max_delay: float = 60.0, timeout: float = 10.0,
                 on_result: Callable[[DeliveryResult], None] | None = None):
        self._secret = secret if callable(secret) else (lambda: secret)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.on_result = on_result
        self.results: list[DeliveryResult] = []  # the latest outcomes, for status displays and tests
        self._lanes: dict[tuple[str, str], deque[_Delivery]] = {}
        self._heads: list[_Delivery] = []  # the first delivery of each lane, soonest due first
        self._sequence: dict[str, itertools.count] = {}
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._busy = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        self._clients: dict[bool, Any] = {}  # public_only -> a client through the outbound guard

    def send(self, url: str, event: str, payload: dict[str, Any], *, job_id: str | None = None,
             public_only: bool = False, secret: str | None = None, headers: Mapping[str, str] | None = None) -> str:
        """Queue a delivery; the payload gains ``event``, ``delivery_id``, ``sequence`` and ``sent_at``.

        ``secret`` signs this delivery (a job's own secret); without it the dispatcher's secret
        does, and with neither the delivery fails unsent. The address is checked when sent.
        ``headers``: more headers for every attempt (document 3's shared secret, ``SHARED_SECRET_HEADER``);
        the signing headers are always the studio's own."""
        validate_url(url)
        with self._cond:
            sequence = next(self._sequence.setdefault(job_id or "", itertools.count(1)))
            delivery_id = secrets.token_hex(8)
            body = json.dumps({"event": event, "delivery_id": delivery_id, "sequence": sequence,
                               "sent_at": time.time(), **payload}, ensure_ascii=False, default=str).encode("utf-8")
            delivery = _Delivery(time.monotonic(), next(self._order), delivery_id, url, event, body, job_id,
                                 public_only=public_only, secret=secret, headers=dict(headers or {}))
            lane = self._lanes.setdefault(delivery.lane, deque())
            last = lane[-1] if lane else None
            if event == "job.progress" and last is not None and last.event == event and last.attempts == 0:
                last.body, last.id = body, delivery_id  # not sent yet: the newest state takes its place
                return delivery_id
            lane.append(delivery)
            if len(lane) == 1:
                heapq.heappush(self._heads, delivery)
            self._ensure_thread()
            self._cond.notify_all()
            return delivery_id

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery succeeded or gave up; False if some are still pending."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._lanes or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._cond:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # -- the background thread -----------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heads or self._heads[0].due > time.monotonic()):
                    wait = self._heads[0].due - time.monotonic() if self._heads else 1.0
                    self._cond.wait(max(0.01, min(wait, 1.0)))
                if self._closed:
                    return
                delivery = heapq.heappop(self._heads)
                delivery.attempts += 1  # from here on `send` leaves this delivery's body alone
                body = delivery.body
                self._busy += 1
            try:
                result = self._attempt(delivery, body)
            except Exception as exc:  # a bug, not the receiver's answer: log it, give up on this one, go on
                # (the URL is not logged: it may carry a token)
                log.exception("webhook %s (%s): unexpected error", delivery.id, delivery.event)
                result = DeliveryResult(delivery.id, delivery.url, delivery.event, delivery.job_id, False,
                                        delivery.attempts, error=f"unexpected {type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._busy -= 1
            with self._cond:
                lane = self._lanes[delivery.lane]
                if result is None and delivery.event == "job.progress" and any(
                        d.event == "job.progress" for d in list(lane)[1:]):
                    result = DeliveryResult(delivery.id, delivery.url, delivery.event, delivery.job_id, False,
                                            delivery.attempts, error="superseded by a newer update",
                                            superseded=True)
                if result is None:
                    heapq.heappush(self._heads, delivery)  # retry: still the head of its lane
                else:
                    lane.popleft()
                    if lane:
                        lane[0].due = time.monotonic()
                        heapq.heappush(self._heads, lane[0])
                    else:
                        del self._lanes[delivery.lane]
                    self.results = (self.results + [result])[-200:]
                self._cond.notify_all()
            if result is not None and not result.superseded and self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception:  # the delivery is settled; the loop goes on for the others
                    log.exception("webhook %s: the on_result callback failed", delivery.id)

    def _attempt(self, delivery: _Delivery, body: bytes) -> DeliveryResult | None:
        """One try. A result when done (delivered, or failed for good); None to retry later, with
        ``delivery.due`` set to when."""
        import httpx

        status: int | None = None
        retry_after: float | None = None
        try:
            headers = {**delivery.headers,
                       **signed_headers(delivery.secret or self._secret(), body, delivery.event, delivery.id)}
            # The guard resolves the host now, checks every address and connects to the one it
            # checked: a name that pointed somewhere public at submit time may not point inside now.
            response = self._client(delivery.public_only).post(delivery.url, content=body, headers=headers)
            status = response.status_code
            if 200 <= status < 300:
                return DeliveryResult(delivery.id, delivery.url, delivery.event, delivery.job_id, True,
                                      delivery.attempts, status)
            error = f"HTTP {status}"
            retryable = status >= 500 or status in _RETRY_STATUSES
            retry_after = parse_retry_after(response.headers, cap=self.max_delay)
        except httpx.InvalidURL as exc:  # a spelling httpx cannot send (e.g. an octal IPv4 host)
            error, retryable = f"the webhook URL cannot be sent to: {exc}", False
        except netfetch.UnresolvableHost as exc:  # DNS may be back later
            error, retryable = exc.message, True
        except InvalidRequest as exc:  # refused address, no secret: final
            error, retryable = exc.message, False
        except httpx.HTTPError as exc:
            error, retryable = f"{type(exc).__name__}: {exc}", True
        if retryable and delivery.attempts < self.max_attempts:
            backoff = Backoff(self.base_delay, self.max_delay).delay(delivery.attempts)
            delivery.due = time.monotonic() + (backoff if retry_after is None else retry_after)
            return None
        return DeliveryResult(delivery.id, delivery.url, delivery.event, delivery.job_id, False, delivery.attempts,
                              status, error)

    def _client(self, public_only: bool):
        with self._cond:
            client = self._clients.get(public_only)
            if client is None:
                client = self._clients[public_only] = netfetch.guarded_client(
                    allowed=netfetch.policy(public_only), timeout=self.timeout, purpose="send webhooks to")
            return client


# -- document 3's payload (its job API: studio.jobapi) -------------------------------------------

JOB_API_OPTION = "job_api"  # a job's stored option: the job is document 3's, and so are its webhooks' bodies
# The header that carries document 3's shared secret (STUDIO_WEBHOOK_SHARED_SECRET) to the operator's
# receiver, beside the studio's own HMAC signature.
SHARED_SECRET_HEADER = "X-Webhook-Secret"


def job_api_payload(job_id: str, status: str, *, environment: str, timestamp: str | None = None,
                    data: dict[str, Any] | None = None, error_message: str | None = None,
                    progress: float | None = None) -> dict[str, Any]:
    """The webhook body document 3 defines: ``job_id``; ``status`` in lower case (``completed``,
    ``failed``, or the stage of a job still running); ``timestamp`` (ISO 8601, UTC; now when not
    given); ``environment`` (the deployment's name, ``Settings.environment``); then ``data`` (a
    completed job's images and metadata), ``error_message`` (why it failed) and ``progress``
    (0-100), each only when given. ``WebhookDispatcher.send`` adds its own four fields on top."""
    from datetime import datetime, timezone

    body: dict[str, Any] = {"job_id": job_id, "status": status.lower(),
                            "timestamp": timestamp or datetime.now(timezone.utc).isoformat(),
                            "environment": environment}
    if data is not None:
        body["data"] = data
    if error_message is not None:
        body["error_message"] = error_message
    if progress is not None:
        body["progress"] = progress
    return body


__all__ = ["sign", "signed_headers", "verify_signature", "check_url", "validate_url", "new_secret", "job_secret",
           "JOB_SECRET_OPTION", "JOB_SECRET_NOTICE", "WebhookDispatcher", "DeliveryResult", "SIGNATURE_HEADER",
           "TIMESTAMP_HEADER", "EVENT_HEADER", "DELIVERY_HEADER", "DEFAULT_TOLERANCE", "JOB_API_OPTION",
           "SHARED_SECRET_HEADER", "job_api_payload"]

"""The one outbound guard: every request the studio makes on a user's behalf goes through here.

That is image URLs a person gives us, webhook deliveries, and provider outputs we download. A
user-supplied address could point at the cloud metadata service, at localhost, at the operator's
network, or at a host whose DNS answer changes between our check and our connection (rebinding).
So, for every request and every redirect hop:

1. only http(s), with a host;
2. the host is resolved **once** (numeric hosts in any spelling -- ``0x7f000001``, ``2130706433``,
   ``0177.1``, ``127.1``, a trailing dot -- are read as the address they mean, without DNS);
3. every address of the answer is checked: link-local and cloud metadata addresses are always
   refused; under the public-only policy so is anything private, loopback, shared or reserved, also
   when it hides inside an IPv6 form (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo);
4. the connection goes to the checked address (``GuardedTransport``), while the Host header, TLS SNI
   and the certificate check keep the original name; no proxy from the environment is used.

``fetch_url`` downloads a body with this guard (size, time and content-type limits);
``guarded_client`` gives an ``httpx.Client`` for other requests (webhooks).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import httpx

from studio.errors import InvalidRequest, StudioError
from studio.imaging import MAX_INPUT_BYTES

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 20.0
DNS_TIMEOUT = 10.0  # seconds for one name lookup
IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")  # CDNs and S3 defaults

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses as text
AddressCheck = Callable[[IPAddress], bool]  # True: we may connect to this address

# Cloud metadata / host-agent endpoints outside 169.254.0.0/16, refused in every mode:
# AWS IMDS over IPv6, Alibaba Cloud, Oracle Cloud (legacy), Azure WireServer.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192", "168.63.129.16"))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local-use, IPv4 in bits 48-63 and 72-87
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 SIIT ::ffff:0:a.b.c.d
_TEREDO = ipaddress.ip_network("2001::/32")


# -- reading a host ----------------------------------------------------------------------------


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host means, in every spelling the C resolver accepts, or None for a name.

    ``"127.0.0.1"``, ``"127.1"``, ``"0x7f000001"``, ``"2130706433"``, ``"0177.0.0.1"``, ``"127.0.0.1."``
    all mean 127.0.0.1; ``"[::1]"`` and ``"fe80::1%eth0"`` are IPv6 (a zone id is dropped: the
    address alone decides)."""
    text = host.strip().strip("[]").rstrip(".") if host else ""
    if not text:
        return None
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    return _inet_aton(text)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    # inet_aton(3): 1-4 parts, each decimal, 0x-hex or 0-octal; the last part fills the remaining bytes.
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                numbers.append(int(lowered[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part[1:], 8))
            elif part.isdigit():
                numbers.append(int(part, 10))
            else:
                return None
        except ValueError:
            return None
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = 0
    for n in leading:
        value = value << 8 | n
    return ipaddress.IPv4Address(value << (8 * (4 - len(leading))) | last)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped or -translated, IPv4-compatible, 6to4,
    NAT64 well-known and local-use prefixes, Teredo client), or None."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64_WELL_KNOWN or address in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64_LOCAL:
        packed = address.packed
        return ipaddress.IPv4Address(packed[6:8] + packed[9:11])
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


# -- the address policies ----------------------------------------------------------------------


def address_problem(address: IPAddress, *, public_only: bool = True) -> str | None:
    """Why we must not connect to ``address`` (a phrase for an error message), or None if we may.

    Always refused: link-local (169.254/16, fe80::/10 -- where cloud metadata lives), the known
    metadata addresses, multicast, broadcast, unspecified and 0.0.0.0/8, reserved ranges. With
    ``public_only`` also private, loopback, shared (CGNAT), documentation and every other
    non-global range. IPv6 forms that carry an IPv4 address are judged by that address too, and
    under ``public_only`` the tunnel forms with no public meaning (IPv4-compatible, Teredo, local
    NAT64) are refused outright."""
    carried = embedded_ipv4(address)
    for candidate in (address, carried):
        if candidate is None:
            continue
        if candidate in METADATA_ADDRESSES or candidate.is_link_local:
            return "a link-local or cloud metadata address"
        if candidate.is_multicast or candidate.is_unspecified or candidate == _BROADCAST or (
                isinstance(candidate, ipaddress.IPv4Address) and candidate in _THIS_NETWORK):
            return "a multicast, broadcast or unspecified address"
    if carried is not None:
        if public_only and (address in _IPV4_COMPATIBLE or address in _IPV4_TRANSLATED or address in _TEREDO
                            or address in _NAT64_LOCAL):
            return "a private or reserved address (private, loopback or shared network)"
        address = carried  # the IPv6 wrapper sits in a reserved range itself: judge what it carries
    if public_only:
        if not address.is_global or address.is_reserved or address.is_loopback or address.is_private:
            return "a private or reserved address (private, loopback or shared network)"
        return None
    if address.is_loopback:
        return None  # the operator's own machine (::1 sits inside the reserved ::/8, so ask this first)
    if address.is_reserved:
        return "a reserved address"
    return None  # private networks and public addresses: allowed in local mode


def is_public_address(address: IPAddress) -> bool:
    """The public-only policy: a public unicast address, in whatever form it is written."""
    return address_problem(address, public_only=True) is None


def is_allowed_locally(address: IPAddress) -> bool:
    """The local policy (the operator's own machine): loopback and private networks are fine, but
    link-local, metadata, multicast and reserved addresses are not."""
    return address_problem(address, public_only=False) is None


def policy(public_only: bool) -> AddressCheck:
    return is_public_address if public_only else is_allowed_locally


# -- resolving once and checking ---------------------------------------------------------------


class FetchUnavailable(StudioError):
    """The address was allowed but the request did not get through for a reason that may pass: a
    timeout, a connection error, HTTP 408/429/5xx. Not bad input (the CLI exits 1, not 2), and
    ``retryable``: a caller such as a provider-output download may try again. A refusal by the guard
    is an ``InvalidRequest`` and never retryable."""

    kind = "unavailable"
    retryable = True


class UnresolvableHost(InvalidRequest):
    """The host name has no address (most often a mistyped name: bad input), though DNS may answer
    later, so callers that retry (webhooks) may retry."""

    retryable = True


def system_resolver(host: str, port: int, *, timeout: float = DNS_TIMEOUT) -> list[str]:
    """The host's addresses (as text, first answer first) from the system resolver, within
    ``timeout`` seconds: ``getaddrinfo`` itself cannot be interrupted, so it runs on a daemon
    thread that is left behind when it hangs (the webhook thread and the user's request go on)."""
    answer: dict[str, object] = {}

    def lookup() -> None:
        try:
            answer["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # handed to the caller below, not swallowed
            answer["error"] = exc

    worker = threading.Thread(target=lookup, name=f"resolve {host[:40]}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise UnresolvableHost(f"cannot resolve host {host!r}: no answer within {timeout:g} s")
    if "error" in answer:
        exc = answer["error"]
        raise UnresolvableHost(f"cannot resolve host {host!r}: {getattr(exc, 'strerror', None) or exc}")
    return list(dict.fromkeys(info[4][0] for info in answer["infos"]))


@dataclass(frozen=True)
class Target:
    """Where one request goes: the host as written (for Host, SNI, certificate) and the checked
    address we connect to."""

    host: str
    port: int
    address: str


def split_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL, or ``InvalidRequest`` (another scheme, no host,
    a bad port). No DNS."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidRequest(f"only http and https URLs are allowed, not {parts.scheme or 'this'!r}")
    host = parts.hostname
    if not host:
        raise InvalidRequest(f"the URL has no host: {url[:80]!r}")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise InvalidRequest("the URL has an invalid port") from None
    return parts.scheme.lower(), host, port


def check_address(url: str, *, allowed: AddressCheck = is_public_address, resolver: Resolver = system_resolver,
                  purpose: str = "connect to") -> Target:
    """Resolve the URL's host once and check every address; the one to connect to.

    ``InvalidRequest`` for a non-http(s) URL, a URL without a host or with a bad port, a name that
    does not resolve (``UnresolvableHost``), or when any address is refused by ``allowed`` (a
    numeric host is not resolved: it is the address). A check ahead of time, for a clear early
    error: the request itself checks again, through ``GuardedTransport``."""
    _scheme, host, port = split_url(url)
    return _check_host(host, port, allowed, resolver, purpose)


def _check_host(host: str, port: int, allowed: AddressCheck, resolver: Resolver, purpose: str) -> Target:
    numeric = numeric_host(host)
    if numeric is not None:
        addresses = [numeric]
    else:
        answer = resolver(host.rstrip("."), port)
        if not answer:
            raise UnresolvableHost(f"host {host!r} has no address")
        try:
            addresses = [ipaddress.ip_address(text.split("%", 1)[0]) for text in answer]
        except ValueError:
            raise InvalidRequest(f"host {host!r} resolved to something that is not an address") from None
    for address in addresses:
        # Link-local, metadata and the other always-refused addresses stay refused whatever the
        # caller's policy allows (a caller widening it for a trusted endpoint cannot open them).
        problem = address_problem(address, public_only=False)
        if problem is None and not allowed(address):
            problem = address_problem(address, public_only=True) or "an address this server may not reach"
        if problem is not None:
            raise InvalidRequest(f"refusing to {purpose} {host!r}: it points to {problem}")
    return Target(host, port, str(addresses[0]))


# -- connecting to the checked address ----------------------------------------------------------


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport that resolves each request's host once, checks it, and connects to the
    checked address, with Host, SNI and the certificate check on the original name.

    Every request through it is checked, so redirects followed by the client are checked hop by
    hop. Connections are pooled per host name (never shared between names that happen to resolve
    to the same address, which would skip the certificate check for the second name)."""

    MAX_POOLS = 32

    def __init__(self, *, allowed: AddressCheck = is_public_address, resolver: Resolver = system_resolver,
                 purpose: str = "connect to", verify=True):
        self.allowed = allowed
        self.resolver = resolver
        self.purpose = purpose
        self.verify = verify  # True, or an ssl.SSLContext (tests trust their own certificate authority)
        self._pools: OrderedDict[tuple[str, str, int], httpx.HTTPTransport] = OrderedDict()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise InvalidRequest(f"only http and https URLs are allowed, not {url.scheme!r}")
        if not url.host:
            raise InvalidRequest("the URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        target = _check_host(url.host, port, self.allowed, self.resolver, self.purpose)
        # A copy aimed at the checked address, with the caller's headers (Host already names the
        # original host) and SNI on the name; the caller's request keeps its URL, so redirects are
        # resolved against the name, not the address.
        pinned = httpx.Request(request.method, url.copy_with(host=target.address, port=port),
                               headers=request.headers, stream=request.stream,
                               extensions={**request.extensions, "sni_hostname": url.host.rstrip(".")})
        return self._pool(url.scheme, url.host, port).handle_request(pinned)

    def _pool(self, scheme: str, host: str, port: int) -> httpx.HTTPTransport:
        key = (scheme, host, port)
        with self._lock:
            pool = self._pools.pop(key, None)
            if pool is None:
                pool = httpx.HTTPTransport(verify=self.verify, trust_env=False, retries=0)
            self._pools[key] = pool
            while len(self._pools) > self.MAX_POOLS:
                _, oldest = self._pools.popitem(last=False)
                oldest.close()
            return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()


def guarded_client(*, allowed: AddressCheck = is_public_address, resolver: Resolver = system_resolver,
                   timeout: float = DEFAULT_TIMEOUT, purpose: str = "connect to", verify=True,
                   follow_redirects: bool = False) -> httpx.Client:
    """An ``httpx.Client`` whose every request (and redirect hop) goes through ``GuardedTransport``;
    environment proxies are ignored (a proxy would resolve the name again, out of our sight)."""
    transport = GuardedTransport(allowed=allowed, resolver=resolver, purpose=purpose, verify=verify)
    return httpx.Client(transport=transport, timeout=timeout, trust_env=False, follow_redirects=follow_redirects,
                        max_redirects=MAX_REDIRECTS)


def fetch_url(url: str, *, max_bytes: int = MAX_INPUT_BYTES, timeout: float = DEFAULT_TIMEOUT,
              resolver: Resolver = system_resolver, allowed: AddressCheck = is_public_address,
              headers: Mapping[str, str] | None = None,
              content_types: Iterable[str] | None = IMAGE_CONTENT_TYPES, verify=True) -> bytes:
    """The body at ``url``: at most ``max_bytes`` bytes, within ``timeout`` seconds overall (plus up
    to ``DNS_TIMEOUT`` per name lookup),
    following up to five redirects, each checked like the first.

    ``headers`` are added to the request (e.g. a provider's ``Authorization``; httpx drops it when
    a redirect leaves the origin). ``content_types``: accepted ``Content-Type`` prefixes (a missing
    header is accepted; None accepts any). Every failure is an ``InvalidRequest`` that names the URL
    as given (never the address it resolved to), except failures that may pass (timeout,
    connection, HTTP 408/429/5xx): ``FetchUnavailable``, retryable."""
    deadline = time.monotonic() + timeout
    shown = url.strip()[:200]
    request_headers = {"Accept": "image/*", **(dict(headers) if headers else {})}
    _scheme, host, port = split_url(url)  # a clear error for a malformed URL
    if numeric_host(host) is not None:  # no DNS involved: refuse now, in words (httpx rejects some spellings)
        _check_host(host, port, allowed, resolver, "fetch from")
    too_big = f"{shown!r} is larger than {max_bytes / (1024 * 1024):g} MiB"
    try:
        with guarded_client(allowed=allowed, resolver=resolver, timeout=timeout, purpose="fetch from",
                            verify=verify, follow_redirects=True) as client:
            with client.stream("GET", url.strip(), headers=request_headers) as response:
                if response.status_code != 200:
                    transient = response.status_code in (408, 425, 429) or response.status_code >= 500
                    raise (FetchUnavailable if transient else InvalidRequest)(
                        f"fetching {shown!r} failed: HTTP {response.status_code}")
                kind = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if content_types is not None and kind and not kind.startswith(tuple(content_types)):
                    raise InvalidRequest(f"{shown!r} is not an image (it is {kind[:60]})")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise InvalidRequest(too_big)
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise InvalidRequest(too_big)
                    if time.monotonic() > deadline:
                        raise FetchUnavailable(f"fetching {shown!r} took longer than {timeout:g} s")
                return bytes(body)
    except httpx.TimeoutException:
        raise FetchUnavailable(f"fetching {shown!r} took longer than {timeout:g} s") from None
    except httpx.TooManyRedirects:
        raise InvalidRequest(f"{shown!r} redirected more than {MAX_REDIRECTS} times") from None
    except httpx.InvalidURL:
        raise InvalidRequest(f"{shown!r} is not a valid URL (or redirected to one that is not)") from None
    except httpx.UnsupportedProtocol:
        raise InvalidRequest(f"{shown!r} redirected to a URL that is not http or https") from None
    except httpx.HTTPError as exc:
        log.info("fetching %s failed: %r", shown, exc)
        raise FetchUnavailable(f"cannot fetch {shown!r}: {type(exc).__name__}") from None


__all__ = ["fetch_url", "is_url", "guarded_client", "GuardedTransport", "check_address", "split_url", "Target",
           "UnresolvableHost", "FetchUnavailable", "numeric_host", "embedded_ipv4", "address_problem", "is_public_address",
           "is_allowed_locally", "policy", "system_resolver", "METADATA_ADDRESSES", "IMAGE_CONTENT_TYPES",
           "MAX_REDIRECTS", "DEFAULT_TIMEOUT"]

"""Fetching an image from a URL a person gave us, without letting that URL reach inside our network.

A URL from a user could point at the cloud metadata service, at localhost, or at a host whose DNS
answer changes between our check and our connection. So: only http(s); every address the host
resolves to must be public; we connect to the address we checked (not to a second DNS answer);
each redirect is checked the same way; the body is bounded in size and the whole fetch in time.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Callable
from urllib.parse import urljoin, urlsplit

from studio.errors import InvalidRequest
from studio.imaging import MAX_INPUT_BYTES

MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 20.0

Resolver = Callable[[str, int], list[str]]
AddressCheck = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidRequest(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Public unicast only: no private, loopback, link-local (cloud metadata), multicast, reserved,
    unspecified or shared (CGNAT) ranges, including IPv4 addresses dressed up as IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_link_local)


def _checked_address(host: str, port: int, resolver: Resolver, allowed: AddressCheck) -> str:
    addresses = resolver(host, port)
    if not addresses:
        raise InvalidRequest(f"host {host!r} has no address")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if not allowed(address):
            raise InvalidRequest(f"refusing to fetch from {host!r}: it points to a private or reserved address")
    return addresses[0]


def fetch_url(url: str, *, max_bytes: int = MAX_INPUT_BYTES, timeout: float = DEFAULT_TIMEOUT,
              resolver: Resolver = system_resolver, allowed: AddressCheck = is_public_address) -> bytes:
    """The body at ``url`` (at most ``max_bytes``), following up to five checked redirects."""
    import httpx

    deadline = time.monotonic() + timeout
    current = url.strip()
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https"):
            raise InvalidRequest(f"only http and https URLs can be fetched, not {parts.scheme or 'this'!r}")
        if not parts.hostname:
            raise InvalidRequest(f"URL has no host: {current!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, resolver, allowed)
        # Connect to the address we checked; keep the real name for the Host header and TLS (SNI and
        # certificate check), so a second, different DNS answer cannot redirect the connection.
        ip_host = f"[{address}]" if ":" in address else address
        target = parts._replace(netloc=f"{ip_host}:{port}").geturl()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InvalidRequest(f"fetching {url!r} took longer than {timeout:g} s")
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        try:
            with httpx.Client(timeout=remaining, follow_redirects=False, trust_env=False) as client:
                with client.stream("GET", target, headers={"Host": host_header, "Accept": "image/*"},
                                   extensions={"sni_hostname": parts.hostname}) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise InvalidRequest(f"{current!r} redirected without a location")
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(f"fetching {current!r} failed: HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise InvalidRequest(f"{current!r} is larger than {max_bytes // (1024 * 1024)} MiB")
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise InvalidRequest(f"{current!r} is larger than {max_bytes // (1024 * 1024)} MiB")
                        if time.monotonic() > deadline:
                            raise InvalidRequest(f"fetching {url!r} took longer than {timeout:g} s")
                    return bytes(body)
        except httpx.TimeoutException:
            raise InvalidRequest(f"fetching {url!r} took longer than {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise InvalidRequest(f"cannot fetch {current!r}: {type(exc).__name__}") from None
    raise InvalidRequest(f"{url!r} redirected more than {MAX_REDIRECTS} times")

"""Image URLs are fetched safely: http(s) only, public addresses only (after DNS and on every
redirect), connections pinned to the checked address, size and time limits."""

from __future__ import annotations

import ipaddress

import pytest

from studio.errors import InvalidRequest
from studio.netfetch import fetch_url, is_public_address
from tests.fakes.http import FakeServer, Response, image_bytes


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fc00::1",
                                     "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::"])
def test_private_and_special_addresses_are_not_public(address):
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.69", "2606:4700::1111"])
def test_public_addresses_are_public(address):
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("url, message", [
    ("file:///etc/passwd", "only http and https"),
    ("ftp://example.com/a.png", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("http:///nohost", "has no host"),
    ("http://127.0.0.1/a.png", "private or reserved"),
    ("http://[::1]/a.png", "private or reserved"),
    ("http://169.254.169.254/latest/meta-data/", "private or reserved"),
    ("http://localhost:8501/_stcore/health", "private or reserved"),
])
def test_dangerous_urls_are_refused(url, message):
    with pytest.raises(InvalidRequest, match=message):
        fetch_url(url)


def test_dns_answer_with_any_private_address_is_refused():
    def resolver(host, port):
        return ["93.184.216.34", "10.0.0.5"]  # one public, one private: refuse

    with pytest.raises(InvalidRequest, match="private or reserved"):
        fetch_url("http://mixed.example/a.png", resolver=resolver)


class _LoopbackAsPublic:
    """Treat the test server's loopback address as "public" and everything else as the real check."""

    def __init__(self):
        self.seen = []

    def __call__(self, address):
        self.seen.append(str(address))
        return str(address) == "127.0.0.1" or is_public_address(address)


def test_fetch_follows_checked_redirects_and_pins_the_address():
    png = image_bytes(32, 32)

    def handler(request):
        if request.path == "/start":
            return Response(302, headers={"location": "/final.png"})
        if request.path == "/final.png":
            return Response(200, png, {"content-type": "image/png", "x-host": request.headers["host"]})
        return Response(404)

    with FakeServer(handler) as server:
        port = server.url.rsplit(":", 1)[1]
        checker = _LoopbackAsPublic()
        resolved = []

        def resolver(host, p):
            resolved.append(host)
            return ["127.0.0.1"]

        body = fetch_url(f"http://images.example:{port}/start", resolver=resolver, allowed=checker)
        assert body == png
        assert resolved == ["images.example", "images.example"]  # each hop is resolved and checked
        assert server.requests[0].headers["host"] == f"images.example:{port}"


def test_redirect_to_metadata_address_is_refused():
    def handler(request):
        return Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/iam"})

    with FakeServer(handler) as server:
        port = server.url.rsplit(":", 1)[1]
        with pytest.raises(InvalidRequest, match="private or reserved"):
            fetch_url(f"http://cdn.example:{port}/img", resolver=lambda h, p: ["127.0.0.1"] if h == "cdn.example"
                      else ["169.254.169.254"], allowed=_LoopbackAsPublic())


def test_size_and_time_limits():
    def handler(request):
        if request.path == "/big":
            return Response(200, b"x" * 5000, {"content-type": "image/png"})
        return Response(200, b"late", delay=2.0)

    with FakeServer(handler) as server:
        port = server.url.rsplit(":", 1)[1]
        resolver = lambda h, p: ["127.0.0.1"]  # noqa: E731
        with pytest.raises(InvalidRequest, match="larger than"):
            fetch_url(f"http://a.example:{port}/big", max_bytes=1000, resolver=resolver, allowed=_LoopbackAsPublic())
        with pytest.raises(InvalidRequest, match="longer than"):
            fetch_url(f"http://a.example:{port}/slow", timeout=0.3, resolver=resolver, allowed=_LoopbackAsPublic())


def test_studio_refuses_private_init_image_url_and_writes_nothing(studio_home):
    from studio.service import Studio
    from tests.fakes import echo_provider
    from tests.helpers import tree_snapshot

    echo_provider.install(studio_home / "catalog")
    studio = Studio(studio_home)
    before = tree_snapshot(studio_home)
    with pytest.raises(InvalidRequest, match="private or reserved"):
        studio.edit("http://127.0.0.1:9/secret.png", "x", provider="echo")
    assert tree_snapshot(studio_home) == before

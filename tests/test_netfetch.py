"""The one outbound guard (``studio.netfetch``): http(s) only; every address checked in every
spelling (numeric IPv4 forms, IPv6 forms carrying IPv4); the host resolved once and the connection
made to the checked address (a rebinding resolver never reaches a loopback listener); Host, SNI and
the certificate check on the original name; each redirect checked; size, time and type limits."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from studio.errors import InvalidRequest, StudioError
from studio.netfetch import (FetchUnavailable, address_problem, embedded_ipv4, fetch_url, guarded_client,
                             is_allowed_locally, is_public_address, numeric_host)
from tests.fakes.http import FakeServer, Response, image_bytes

# -- every spelling of an address ----------------------------------------------------------------

METADATA = ipaddress.ip_address("169.254.169.254")
from tests.helpers import Rebinding


@pytest.mark.parametrize("host, meant", [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"),
    ("0xa9fea9fe", "169.254.169.254"), ("0XA9FEA9FE", "169.254.169.254"), ("2852039166", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"), ("169.254.43518", "169.254.169.254"), ("0", "0.0.0.0"),
    ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"), ("::ffff:a9fe:a9fe", "::ffff:169.254.169.254")])
def test_numeric_hosts_are_read_as_the_address_they_mean(host, meant):
    assert numeric_host(host) == ipaddress.ip_address(meant)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "08.1.1.1", "0x1g", "256.1.1.1", "1.2.3.0x100",
                                  "4294967296", "", "localhost"])
def test_names_and_impossible_numbers_are_not_addresses(host):
    assert numeric_host(host) is None


@pytest.mark.parametrize("address, carried", [
    ("::ffff:127.0.0.1", "127.0.0.1"), ("::127.0.0.1", "127.0.0.1"), ("::ffff:0:127.0.0.1", "127.0.0.1"),
    ("2002:7f00:1::", "127.0.0.1"), ("64:ff9b::7f00:1", "127.0.0.1"), ("64:ff9b:1:7f00:0:100::", "127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"), ("2002:a9fe:a9fe::", "169.254.169.254")])
def test_ipv6_forms_give_up_the_ipv4_address_they_carry(address, carried):
    assert embedded_ipv4(ipaddress.ip_address(address)) == ipaddress.ip_address(carried)


# Refused in every mode: link-local (cloud metadata), metadata elsewhere, multicast, broadcast, unspecified.
ALWAYS_REFUSED = ["169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
                  "168.63.129.16", "224.0.0.1", "ff02::1", "255.255.255.255", "0.0.0.0", "0.1.2.3", "::",
                  "240.0.0.1", "::ffff:169.254.169.254", "::169.254.169.254", "2002:a9fe:a9fe::",
                  "64:ff9b::a9fe:a9fe", "64:ff9b:1:a9fe:0:a9fe::", "2001:0:4136:e378:8000:63bf:5601:5601"]
# Refused when only public addresses may be reached (shared servers, image URLs).
PRIVATE = ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "192.0.2.1", "::1",
           "fc00::1", "fd12::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "::ffff:0:127.0.0.1",
           "2002:7f00:1::", "2002:c0a8:101::", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1:7f00:0:100::",
           "2001:0:4136:e378:8000:63bf:80ff:fffe", "2001:db8::1"]
PUBLIC = ["8.8.8.8", "151.101.1.69", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
def test_link_local_metadata_and_special_addresses_are_refused_in_every_mode(address):
    parsed = ipaddress.ip_address(address)
    assert not is_public_address(parsed) and not is_allowed_locally(parsed)


@pytest.mark.parametrize("address", PRIVATE)
def test_private_and_loopback_in_any_spelling_are_refused_when_only_public_is_allowed(address):
    parsed = ipaddress.ip_address(address)
    assert not is_public_address(parsed)
    assert "private or reserved" in address_problem(parsed, public_only=True)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "fd12::1", "::ffff:192.168.1.1"])
def test_the_local_policy_allows_the_operators_own_machine_and_network(address):
    assert is_allowed_locally(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address):
    assert is_public_address(ipaddress.ip_address(address))


def _no_dns(host, port):
    raise AssertionError(f"a numeric host must not be resolved: {host!r}")


@pytest.mark.parametrize("url, message", [
    ("file:///etc/passwd", "only http and https"),
    ("ftp://example.com/a.png", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("http:///nohost", "no host"),
    ("http://127.0.0.1/a.png", "private or reserved"),
    ("http://127.1/a.png", "private or reserved"),
    ("http://0x7f000001/a.png", "private or reserved"),
    ("http://2130706433/a.png", "private or reserved"),
    ("http://127.0.0.1./a.png", "private or reserved"),
    ("http://[::1]/a.png", "private or reserved"),
    ("http://[::127.0.0.1]/a.png", "private or reserved"),
    ("http://[64:ff9b::7f00:1]/a.png", "private or reserved"),
    ("http://[2002:7f00:1::]/a.png", "private or reserved"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0xa9fea9fe/latest/meta-data/", "link-local"),
    ("http://0251.0376.0251.0376/latest/meta-data/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
])
def test_dangerous_urls_are_refused_without_a_dns_lookup(url, message):
    with pytest.raises(InvalidRequest, match=message):
        fetch_url(url, resolver=_no_dns)


def test_names_pointing_inside_are_refused():
    with pytest.raises(InvalidRequest, match="private or reserved"):
        fetch_url("http://localhost:8501/_stcore/health")
    with pytest.raises(InvalidRequest, match="link-local"):
        fetch_url("http://metadata.google.internal/", resolver=lambda host, port: ["169.254.169.254"])
    with pytest.raises(InvalidRequest, match="private or reserved"):  # one public, one private: refuse
        fetch_url("http://mixed.example/a.png", resolver=lambda host, port: ["93.184.216.34", "10.0.0.5"])


# -- resolve once, connect to what was checked --------------------------------------------------------------


def test_a_rebinding_name_never_reaches_the_loopback_listener(monkeypatch):
    with FakeServer(lambda request: Response(200, image_bytes(8, 8), {"content-type": "image/png"})) as server:
        port = server.url.rsplit(":", 1)[1]
        rebinding = Rebinding(monkeypatch, "rebind.example")
        with pytest.raises(FetchUnavailable, match="cannot fetch"):
            fetch_url(f"http://rebind.example:{port}/a.png", timeout=5)
        assert server.requests == []
    assert rebinding.lookups == 1 and rebinding.connections == [Rebinding.PUBLIC]


class _LoopbackAsPublic:
    """Treat the test server's loopback address as "public" and everything else as the real check."""

    def __call__(self, address):
        return str(address) == "127.0.0.1" or is_public_address(address)


def test_fetch_follows_checked_redirects_and_keeps_the_name_in_the_host_header():
    png = image_bytes(32, 32)

    def handler(request):
        if request.path == "/start":
            return Response(302, headers={"location": "/final.png"})
        if request.path == "/final.png":
            return Response(200, png, {"content-type": "image/png"})
        return Response(404)

    with FakeServer(handler) as server:
        port = server.url.rsplit(":", 1)[1]
        resolved = []

        def resolver(host, p):
            resolved.append(host)
            return ["127.0.0.1"]

        body = fetch_url(f"http://images.example:{port}/start", resolver=resolver, allowed=_LoopbackAsPublic())
        assert body == png
        assert resolved == ["images.example"] * 2  # each hop resolved once, and connected to what was checked
        assert [r.headers["host"] for r in server.requests] == [f"images.example:{port}"] * 2


def test_redirect_to_metadata_address_in_any_spelling_is_refused():
    targets = iter(["http://169.254.169.254/latest/meta-data/iam", "http://0xa9fea9fe/", "http://[::ffff:a9fe:a9fe]/"])

    with FakeServer(lambda request: Response(302, headers={"location": next(targets)})) as server:
        port = server.url.rsplit(":", 1)[1]
        for _ in range(3):
            with pytest.raises(InvalidRequest, match="link-local"):
                fetch_url(f"http://cdn.example:{port}/img", resolver=lambda h, p: ["127.0.0.1"],
                          allowed=_LoopbackAsPublic())


def test_redirect_to_another_scheme_is_refused():
    with FakeServer(lambda request: Response(302, headers={"location": "file:///etc/passwd"})) as server:
        port = server.url.rsplit(":", 1)[1]
        with pytest.raises(InvalidRequest, match="only http and https"):
            fetch_url(f"http://cdn.example:{port}/img", resolver=lambda h, p: ["127.0.0.1"],
                      allowed=_LoopbackAsPublic())


def test_size_time_and_type_limits():
    def handler(request):
        if request.path == "/big":
            return Response(200, b"x" * 5000, {"content-type": "image/png"})
        if request.path == "/page":
            return Response(200, "<html>login</html>", {"content-type": "text/html; charset=utf-8"})
        return Response(200, b"late", delay=2.0)

    with FakeServer(handler) as server:
        port = server.url.rsplit(":", 1)[1]
        resolver = lambda h, p: ["127.0.0.1"]  # noqa: E731
        with pytest.raises(InvalidRequest, match="larger than") as big:
            fetch_url(f"http://a.example:{port}/big", max_bytes=1000, resolver=resolver, allowed=_LoopbackAsPublic())
        assert not big.value.retryable
        with pytest.raises(FetchUnavailable, match="longer than") as slow:
            fetch_url(f"http://a.example:{port}/slow", timeout=0.3, resolver=resolver, allowed=_LoopbackAsPublic())
        assert slow.value.retryable  # may pass: a provider-output download may try again
        with pytest.raises(InvalidRequest, match="not an image"):
            fetch_url(f"http://a.example:{port}/page", resolver=resolver, allowed=_LoopbackAsPublic())
        assert fetch_url(f"http://a.example:{port}/page", resolver=resolver, allowed=_LoopbackAsPublic(),
                         content_types=None).startswith(b"<html>")


def test_extra_headers_reach_the_origin_but_not_another_host_after_a_redirect():
    def handler(request):
        if request.path == "/out":
            return Response(302, headers={"location": request.headers["x-next"]})
        return Response(200, image_bytes(4, 4), {"content-type": "image/png"})

    with FakeServer(handler) as server:
        port = server.url.rsplit(":", 1)[1]
        options = dict(resolver=lambda h, p: ["127.0.0.1"], allowed=_LoopbackAsPublic())
        fetch_url(f"http://api.example:{port}/out", headers={"Authorization": "Bearer r8_secret",
                                                             "X-Next": f"http://cdn.example:{port}/a.png"}, **options)
        first, second = server.requests
        assert first.headers["authorization"] == "Bearer r8_secret"
        assert second.headers["host"] == f"cdn.example:{port}" and "authorization" not in second.headers


# -- TLS: the connection goes to the checked address, the certificate is checked on the name ---------


def _certificate_authority(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, key, signer, *, ca: bool, names=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = certificate(ca_name, ca_name, ca_key, ca_key, ca=True)
    leaf = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, leaf_key, ca_key,
                       ca=False, names=[name])
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
    return pem(ca), pem(leaf) + key_pem


class _TLSServer:
    """An HTTPS server on 127.0.0.1 with a certificate for one name; records the SNI it was sent."""

    def __init__(self, tmp_path, name: str):
        ca_pem, leaf_pem = _certificate_authority(name)
        (tmp_path / "leaf.pem").write_text(leaf_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "leaf.pem")
        self.server_names: list[str | None] = []
        context.sni_callback = lambda sock, server_name, ctx: self.server_names.append(server_name)
        self.client_context = ssl.create_default_context(cadata=ca_pem)
        body = image_bytes(4, 4)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_tls_sends_the_name_as_sni_and_checks_the_certificate_against_it(tmp_path):
    with _TLSServer(tmp_path, "images.example") as server:
        options = dict(resolver=lambda h, p: ["127.0.0.1"], allowed=_LoopbackAsPublic(), verify=server.client_context)
        assert fetch_url(f"https://images.example:{server.port}/a.png", **options).startswith(b"\x89PNG")
        assert server.server_names == ["images.example"]
        # A name the certificate does not cover fails, although it resolves to the very same address.
        with pytest.raises(FetchUnavailable, match="cannot fetch"):
            fetch_url(f"https://other.example:{server.port}/a.png", **options)


def test_the_guarded_client_checks_every_request_and_ignores_proxy_settings(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy would resolve the name itself
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with FakeServer(lambda request: Response(200, {"ok": True})) as server:
        port = server.url.rsplit(":", 1)[1]
        with guarded_client(allowed=_LoopbackAsPublic(), resolver=lambda h, p: ["127.0.0.1"]) as client:
            assert client.post(f"http://hooks.example:{port}/x", json={}).json() == {"ok": True}
            with pytest.raises(InvalidRequest, match="link-local"):
                client.get("http://0xa9fea9fe/")
        assert server.requests[0].headers["host"] == f"hooks.example:{port}"


def test_studio_refuses_private_init_image_url_and_writes_nothing(studio_home):
    from studio.service import Studio
    from tests.fakes import echo_provider
    from tests.helpers import tree_snapshot

    echo_provider.install(studio_home / "catalog")
    studio = Studio(studio_home)
    before = tree_snapshot(studio_home)
    with pytest.raises(InvalidRequest, match="private or reserved"):
        studio.edit("http://127.0.0.1:9/secret.png", "x", provider="echo")
    with pytest.raises(InvalidRequest, match="link-local"):
        studio.edit("http://0xa9fea9fe/latest/meta-data/", "x", provider="echo")
    assert tree_snapshot(studio_home) == before


def test_a_caller_widening_the_policy_still_cannot_reach_metadata():
    anything_goes = lambda address: True  # noqa: E731 - e.g. a provider trusting its configured endpoint
    for url in ("http://169.254.169.254/", "http://0xa9fea9fe/", "http://[fd00:ec2::254]/", "http://[2002:a9fe:a9fe::]/"):
        with pytest.raises(InvalidRequest, match="link-local"):
            fetch_url(url, allowed=anything_goes, resolver=_no_dns)
    with pytest.raises(InvalidRequest, match="link-local"):
        fetch_url("http://metadata.internal/", allowed=anything_goes, resolver=lambda h, p: ["169.254.169.254"])


def test_a_resolver_that_never_answers_is_given_up_on(monkeypatch):
    from studio.netfetch import UnresolvableHost, system_resolver

    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def hanging(host, *args, **kwargs):
        if host == "tarpit.example":
            release.wait(30)  # a DNS server that never answers (released when the test ends)
            raise socket.gaierror(-3, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        with pytest.raises(UnresolvableHost, match="no answer within 0.2 s"):
            system_resolver("tarpit.example", 80, timeout=0.2)
        with pytest.raises(UnresolvableHost, match="Name or service not known|not known|resolve"):
            system_resolver("nonexistent.invalid", 80)
    finally:
        release.set()


def test_server_errors_may_pass_and_client_errors_and_refusals_do_not():
    statuses = iter([503, 429, 404])
    with FakeServer(lambda request: Response(next(statuses))) as server:
        port = server.url.rsplit(":", 1)[1]
        options = dict(resolver=lambda h, p: ["127.0.0.1"], allowed=_LoopbackAsPublic())
        for expected in (FetchUnavailable, FetchUnavailable, InvalidRequest):
            with pytest.raises(StudioError, match="failed: HTTP") as failure:
                fetch_url(f"http://a.example:{port}/x.png", **options)
            assert type(failure.value) is expected and failure.value.retryable == (expected is FetchUnavailable)
    with pytest.raises(InvalidRequest) as refused:
        fetch_url("http://0xa9fea9fe/")
    assert not refused.value.retryable

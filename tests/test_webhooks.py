"""Webhooks: signatures checked by a real local receiver, retries with backoff, never blocking the
job, final errors recorded, and which URLs are refused."""

from __future__ import annotations

import json
import threading

import pytest

from studio.errors import InvalidRequest
from studio.jobs import JobManager, JobStatus
from studio.service import Studio
from studio.webhooks import (DELIVERY_HEADER, EVENT_HEADER, JOB_SECRET_OPTION, SIGNATURE_HEADER, TIMESTAMP_HEADER,
                             WebhookDispatcher, check_url, sign, verify_signature)
from tests.fakes import echo_provider
from tests.fakes.echo_provider import EchoProvider
from tests.fakes.http import FakeServer, Response

SECRET = "whsec-test-0123456789"
from tests.helpers import Rebinding


@pytest.fixture
def studio(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_WEBHOOK_SECRET", SECRET)
    echo_provider.install(studio_home / "catalog")
    s = Studio(studio_home)
    yield s
    s.close()


def manager_for(studio, **dispatcher_options) -> JobManager:
    dispatcher = WebhookDispatcher(lambda: studio.settings.secret("STUDIO_WEBHOOK_SECRET"),
                                   **{"base_delay": 0.05, **dispatcher_options})
    return JobManager(studio, webhooks=dispatcher)


class Receiver:
    """A webhook receiver as a user would write one: verify the signature on the raw body, then
    parse it. ``plan`` gives the status code of each successive request (then 200)."""

    def __init__(self, plan=(), delay: float = 0.0):
        self.plan = list(plan)
        self.delay = delay
        self.accepted: list[dict] = []
        self.rejected = 0
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            status = self.plan.pop(0) if self.plan else 200
        if not verify_signature(SECRET, request.headers, request.body):
            self.rejected += 1
            return Response(401, {"error": "bad signature"})
        if status == 200:
            body = json.loads(request.body)
            assert request.headers[EVENT_HEADER.lower()] == body["event"]
            assert request.headers[DELIVERY_HEADER.lower()] == body["delivery_id"]
            with self.lock:
                self.accepted.append(body)
        return Response(status, {"ok": status == 200}, delay=self.delay)


# -- signing -----------------------------------------------------------------------------------


def test_signature_roundtrip_tampering_wrong_secret_and_replay_window():
    body = b'{"job_id": "abc", "status": "COMPLETED"}'
    now = 1_767_225_600
    headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(SECRET, now, body)}
    assert headers[SIGNATURE_HEADER].startswith("sha256=") and len(headers[SIGNATURE_HEADER]) == 71
    assert verify_signature(SECRET, headers, body, now=now + 10)
    assert verify_signature(SECRET, {k.lower(): v for k, v in headers.items()}, body.decode(), now=now)
    assert not verify_signature(SECRET, headers, body.replace(b"COMPLETED", b"FAILED"), now=now)
    assert not verify_signature("another-secret", headers, body, now=now)
    assert not verify_signature(SECRET, headers, body, now=now + 301)  # a replayed old request
    assert verify_signature(SECRET, headers, body, tolerance=600, now=now + 301)
    assert not verify_signature(SECRET, headers, body, now=now - 301)  # from the future
    moved = {TIMESTAMP_HEADER: str(now + 5), SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}
    assert not verify_signature(SECRET, moved, body, now=now)  # the timestamp is part of what is signed
    rotated = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: f"sha256=00ff, {headers[SIGNATURE_HEADER]}"}
    assert verify_signature(SECRET, rotated, body, now=now)
    assert not verify_signature(SECRET, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, body, now=now)
    assert not verify_signature("", headers, body, now=now)


def _no_dns(host, port):
    raise AssertionError(f"a numeric host must not be resolved: {host!r}")


def test_only_http_urls_without_credentials_or_link_local_hosts():
    assert check_url(" http://127.0.0.1:9000/hook ") == "http://127.0.0.1:9000/hook"
    assert check_url("https://hooks.example.com/x", public_only=True, resolver=lambda host, port: ["93.184.216.34"])
    for url, message in (("ftp://example.com/x", "http:// or https://"), ("file:///etc/passwd", "http:// or https://"),
                         ("http:///nohost", "no host"), ("https://user:pw@example.com/", "no user:password"),
                         ("http://169.254.169.254/latest/meta-data", "link-local"),
                         ("http://[::ffff:169.254.169.254]/", "link-local"),
                         ("http://example.com:99999/", "invalid port")):
        with pytest.raises(InvalidRequest, match=message):
            check_url(url, resolver=_no_dns)
    with pytest.raises(InvalidRequest, match="private or reserved"):
        check_url("http://127.0.0.1/hook", public_only=True)
    with pytest.raises(InvalidRequest, match="private or reserved"):
        check_url("http://intranet.example/hook", public_only=True, resolver=lambda host, port: ["10.0.0.8"])


@pytest.mark.parametrize("host", ["0xa9fea9fe", "0XA9FEA9FE", "2852039166", "0251.0376.0251.0376", "169.254.43518",
                                  "0xa9.0xfe.0xa9.0xfe", "169.254.169.254.", "[::ffff:a9fe:a9fe]", "[::169.254.169.254]",
                                  "[2002:a9fe:a9fe::]", "[64:ff9b::a9fe:a9fe]", "[fe80::1]", "[fd00:ec2::254]",
                                  "100.100.100.200", "0.0.0.0", "0"])
def test_link_local_and_metadata_in_every_spelling_are_refused_even_locally(host):
    with pytest.raises(InvalidRequest, match="link-local|multicast|unspecified"):
        check_url(f"http://{host}/latest/meta-data/", resolver=_no_dns)


def test_a_name_for_the_metadata_service_is_refused_even_locally():
    with pytest.raises(InvalidRequest, match="link-local"):
        check_url("http://metadata.google.internal/", resolver=lambda host, port: ["169.254.169.254"])


@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "017700000001", "127.0.0.1.", "012.0.0.1",
                                  "[::1]", "[::127.0.0.1]", "[::ffff:127.0.0.1]", "[::ffff:0:127.0.0.1]",
                                  "[2002:7f00:1::]", "[2002:c0a8:101::]", "[64:ff9b::7f00:1]", "[64:ff9b::a00:1]",
                                  "[64:ff9b:1:7f00:0:100::]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "[fd12::1]"])
def test_private_and_loopback_in_every_spelling_are_refused_on_a_shared_server(host):
    with pytest.raises(InvalidRequest, match="private or reserved"):
        check_url(f"http://{host}:8080/hook", public_only=True, resolver=_no_dns)


def test_each_delivery_is_checked_again_and_nothing_reaches_a_refused_address():
    receiver = Receiver()
    dispatcher = WebhookDispatcher(SECRET, base_delay=0.05)
    with FakeServer(receiver) as server:
        port = server.url.rsplit(":", 1)[1]
        dispatcher.send(f"http://[::127.0.0.1]:{port}/hook", "job.completed", {}, job_id="j", public_only=True)
        dispatcher.send(f"http://0x7f000001:{port}/hook", "job.completed", {}, job_id="k", public_only=True)
        assert dispatcher.flush(10)
        assert server.requests == []
    dispatcher.close()
    assert [(r.ok, r.attempts) for r in dispatcher.results] == [(False, 1), (False, 1)]
    assert all("refusing to send webhooks" in r.error for r in dispatcher.results)


def test_a_rebinding_name_never_reaches_the_loopback_listener(monkeypatch):
    receiver = Receiver()
    dispatcher = WebhookDispatcher(SECRET, max_attempts=1, timeout=5)
    with FakeServer(receiver) as server:
        port = server.url.rsplit(":", 1)[1]
        rebinding = Rebinding(monkeypatch, "hooks.example")
        url = check_url(f"http://hooks.example:{port}/hook", public_only=True)  # passes: the first answer is public
        dispatcher.send(url, "job.completed", {"job_id": "j"}, job_id="j", public_only=True)
        assert dispatcher.flush(10)
        assert server.requests == []  # the second answer (127.0.0.1) was checked and refused, never connected
    dispatcher.close()
    [result] = dispatcher.results
    assert not result.ok and "refusing to send webhooks" in result.error
    assert rebinding.lookups == 2 and rebinding.connections == []


def test_a_delivery_connects_to_the_address_it_checked(monkeypatch):
    receiver = Receiver()
    dispatcher = WebhookDispatcher(SECRET, max_attempts=1, timeout=5)
    with FakeServer(receiver) as server:
        port = server.url.rsplit(":", 1)[1]
        rebinding = Rebinding(monkeypatch, "hooks.example")
        dispatcher.send(f"http://hooks.example:{port}/hook", "job.completed", {"job_id": "j"}, job_id="j",
                        public_only=True)  # the delivery's own lookup is the first: public
        assert dispatcher.flush(10)
        assert server.requests == []
    dispatcher.close()
    [result] = dispatcher.results
    assert not result.ok and "ConnectError" in result.error
    assert rebinding.lookups == 1 and rebinding.connections == [Rebinding.PUBLIC]


# -- delivering from jobs ----------------------------------------------------------------------


def test_job_events_arrive_signed_with_images_and_metadata(studio):
    receiver = Receiver()
    manager = manager_for(studio)
    with FakeServer(receiver) as server:
        job = manager.submit("00:00:01 a lighthouse\n00:00:02 waves\n00:00:03 a gull", provider="echo",
                             webhook=f"{server.url}/hooks/studio", concurrency=1)
        manager.wait(job.id, timeout=10)
        assert manager.webhooks.flush(10)
    manager.close()
    assert receiver.rejected == 0
    events = [body["event"] for body in receiver.accepted]
    assert events[-1] == "job.completed" and set(events[:-1]) == {"job.progress"} and len(events) >= 2
    assert all(r.path == "/hooks/studio" and r.method == "POST" for r in server.requests)
    final = receiver.accepted[-1]
    assert (final["job_id"], final["status"], final["progress"], final["cost"]) == (job.id, "COMPLETED", 100.0, 0.03)
    assert final["metadata"]["provider"] == "echo" and final["metadata"]["model"] == "echo-1"
    assert [item["timestamp"] for item in final["items"]] == ["00:00:01", "00:00:02", "00:00:03"]
    assert len(final["images"]) == 3 and {"id", "file", "seed", "cost"} <= set(final["images"][0])
    assert "path" not in final["images"][0]  # no server path leaves the server
    progress = receiver.accepted[0]
    assert progress["item"]["status"] == "COMPLETED" and len(progress["images"]) == 1
    sequences = [body["sequence"] for body in receiver.accepted]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert manager.get(job.id).webhook_delivered == len(receiver.accepted)


def test_failing_receiver_is_retried_with_backoff_and_the_same_delivery_id(studio):
    receiver = Receiver(plan=[500, 503])  # the first two requests fail, then it recovers
    manager = manager_for(studio)
    with FakeServer(receiver) as server:
        job = manager.submit("just one scene", provider="echo", webhook=server.url)
        manager.wait(job.id, timeout=10)
        assert manager.webhooks.flush(10)
        requests = list(server.requests)
    manager.close()
    assert [b["event"] for b in receiver.accepted] == ["job.progress", "job.completed"]
    assert len(requests) == 4  # progress sent three times (two failures), then completion once
    first_three = requests[:3]
    assert len({r.headers[DELIVERY_HEADER.lower()] for r in first_three}) == 1  # one delivery, retried
    stamps = [int(r.headers[TIMESTAMP_HEADER.lower()]) for r in first_three]
    assert stamps == sorted(stamps)  # each attempt is signed afresh
    results = manager.webhooks.results
    assert [(r.event, r.ok, r.attempts) for r in results] == [("job.progress", True, 3), ("job.completed", True, 1)]


def test_a_slow_or_broken_receiver_never_holds_up_the_job(studio):
    """The job finishes while the receiver is still stuck on its first request; then it says 404."""
    release, arrived = threading.Event(), threading.Event()
    receiver = Receiver(plan=[404] * 10)

    def stuck_receiver(request):
        arrived.set()
        # Held until the test lets go (bounded, so a failing test cannot hang the run).
        release.wait(120)
        return receiver(request)

    # The dispatcher's own timeout outlasts the hold: the held request ends with the 404, not a timeout.
    manager = manager_for(studio, max_attempts=3, timeout=180)
    try:
        with FakeServer(stuck_receiver) as server:
            job = manager.submit("\n".join(f"scene {i}" for i in range(4)), provider="echo", webhook=server.url)
            assert arrived.wait(60)  # the first delivery is in the receiver's hands...
            final = manager.wait(job.id, timeout=60)
            assert len(receiver.plan) == 10  # ...and is still unanswered while every scene finished
            assert final.status is JobStatus.COMPLETED and final.counts == {"COMPLETED": 4}
            release.set()
            assert manager.webhooks.flush(30)
    finally:
        release.set()
        manager.close()
    results = manager.webhooks.results
    assert results and all(not r.ok and r.attempts == 1 and r.status == 404 for r in results)  # 4xx: no retries
    assert "HTTP 404" in manager.get(job.id).webhook_error


def test_unreachable_receiver_gives_up_after_the_retries(studio):
    with FakeServer(Receiver()) as server:
        url = server.url  # closed when the block ends: connections are refused from here on
    manager = manager_for(studio, max_attempts=3)
    job = manager.submit("one", provider="echo", webhook=url)
    manager.wait(job.id, timeout=10)
    assert manager.webhooks.flush(10)
    manager.close()
    assert {(r.ok, r.attempts) for r in manager.webhooks.results} == {(False, 3)}
    assert "after 3 attempt(s)" in manager.get(job.id).webhook_error


class JobSecretReceiver(Receiver):
    """Verifies with the job's own secret, learned once the job is made (``know``)."""

    def __init__(self):
        super().__init__()
        self.secret: str | None = None
        self.known = threading.Event()

    def know(self, secret: str) -> None:
        self.secret = secret
        self.known.set()

    def __call__(self, request):
        assert self.known.wait(10)
        if not verify_signature(self.secret, request.headers, request.body):
            self.rejected += 1
            return Response(401, {"error": "bad signature"})
        with self.lock:
            self.accepted.append(json.loads(request.body))
        return Response(200, {})


def test_without_an_operator_secret_a_job_signs_with_its_own_shown_once(studio, monkeypatch):
    monkeypatch.delenv("STUDIO_WEBHOOK_SECRET")
    receiver = JobSecretReceiver()
    manager = manager_for(studio)
    with FakeServer(receiver) as server:
        job = manager.submit("one", provider="echo", webhook=server.url)
        secret = job.options[JOB_SECRET_OPTION]
        assert secret.startswith("whsec_") and len(secret) > 40
        receiver.know(secret)
        manager.wait(job.id, timeout=10)
        assert manager.webhooks.flush(10)
    manager.close()
    assert receiver.rejected == 0 and [b["event"] for b in receiver.accepted] == ["job.progress", "job.completed"]
    assert all(SIGNATURE_HEADER.lower() in r.headers for r in server.requests)
    # Shown once: no record of the job carries it.
    assert secret not in json.dumps(manager.get(job.id).to_dict(), default=str)
    assert secret not in json.dumps(manager.result(job.id), default=str)
    assert secret not in json.dumps([body for body in receiver.accepted])


def test_a_shared_server_job_never_uses_the_operator_secret(studio):
    manager = manager_for(studio)
    preview = manager.preview("one", provider="echo", webhook="https://93.184.216.34/x", webhook_public_only=True)
    assert preview.job.options[JOB_SECRET_OPTION] not in ("", None, SECRET)
    local = manager.preview("one", provider="echo", webhook="http://127.0.0.1:9/x")
    assert JOB_SECRET_OPTION not in local.job.options  # the operator's own job: STUDIO_WEBHOOK_SECRET signs it
    manager.close()


def test_no_secret_at_all_means_nothing_is_sent():
    with FakeServer(Receiver()) as server:
        dispatcher = WebhookDispatcher(None, base_delay=0.05)
        dispatcher.send(server.url, "job.completed", {"job_id": "j"}, job_id="j")
        assert dispatcher.flush(10)
        assert server.requests == []
    dispatcher.close()
    [result] = dispatcher.results
    assert not result.ok and "always signed" in result.error


def test_cancel_and_public_only_webhooks(studio):
    receiver = Receiver()
    manager = manager_for(studio)
    with pytest.raises(InvalidRequest, match="private or reserved"):
        manager.preview("one", provider="echo", webhook="http://127.0.0.1:1/", webhook_public_only=True)
    with FakeServer(receiver) as server:
        EchoProvider.latency = 5.0
        job = manager.submit("a\nb", provider="echo", webhook=server.url)
        manager.cancel(job.id)
        manager.wait(job.id, timeout=5)
        assert manager.webhooks.flush(10)
    manager.close()
    assert receiver.accepted[-1]["event"] == "job.cancelled" and receiver.accepted[-1]["status"] == "CANCELLED"


def test_waiting_progress_updates_collapse_to_the_newest_and_order_is_kept():
    receiver = Receiver(delay=0.2)
    dispatcher = WebhookDispatcher(SECRET, base_delay=0.05)
    with FakeServer(receiver) as server:
        for step in range(10):
            dispatcher.send(server.url, "job.progress", {"step": step}, job_id="j1")
        dispatcher.send(server.url, "job.completed", {"step": "done"}, job_id="j1")
        assert dispatcher.flush(10)
    dispatcher.close()
    steps = [body["step"] for body in receiver.accepted]
    numbers = steps[:-1]
    assert numbers == sorted(numbers) and steps[-2:] == [9, "done"]  # in order, newest state last
    assert len(steps) < 11  # updates waiting behind a slow receiver collapsed into the newest
    assert all(r.ok for r in dispatcher.results)


# -- front ends that accept a webhook URL ---------------------------------------------------------


@pytest.fixture
def echo_cli(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)
    monkeypatch.delenv("STUDIO_WEBHOOK_SECRET", raising=False)
    echo_provider.install(studio_home / "catalog")


def test_cli_batch_prints_the_jobs_own_secret_once_and_its_webhooks_verify_with_it(echo_cli, capsys, tmp_path):
    from studio.cli import main

    script = tmp_path / "script.txt"
    script.write_text("00:00:01 a lighthouse\n")
    with FakeServer(lambda request: Response(200, {})) as server:
        assert main(["batch", str(script), "--provider", "echo", "--webhook", f"{server.url}/hook", "--json"]) == 0
    captured = capsys.readouterr()
    [secret] = [line.split(": ", 1)[1] for line in captured.err.splitlines() if line.startswith("webhook secret: ")]
    assert server.requests and all(verify_signature(secret, r.headers, r.body) for r in server.requests)
    assert secret not in captured.out  # the job's JSON does not carry it
    assert main(["jobs", "--json"]) == 0
    assert secret not in capsys.readouterr().out


@pytest.mark.parametrize("url", ["http://0xa9fea9fe/latest/meta-data/", "http://[2002:a9fe:a9fe::]/", "ftp://x/"])
def test_cli_batch_refuses_a_forbidden_webhook_in_one_line_and_starts_nothing(echo_cli, capsys, tmp_path, url):
    from studio.cli import main

    script = tmp_path / "script.txt"
    script.write_text("one scene\n")
    assert main(["batch", str(script), "--provider", "echo", "--webhook", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert main(["jobs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == []


def test_library_batch_returns_the_jobs_own_secret_once(echo_cli, studio_home):
    import studio as library

    with FakeServer(lambda request: Response(200, {})) as server:
        result = library.batch("one scene", home=studio_home, provider="echo", webhook=f"{server.url}/hook")
        assert library.job_manager(home=studio_home).webhooks.flush(10)
    secret = result["webhook_secret"]
    assert server.requests and all(verify_signature(secret, r.headers, r.body) for r in server.requests)
    assert "webhook_secret" not in library.job(result["job_id"], home=studio_home)
    assert secret not in json.dumps(library.list_jobs(home=studio_home), default=str)

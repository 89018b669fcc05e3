"""Webhooks: signatures checked by a real local receiver, retries with backoff, never blocking the
job, final errors recorded, and which URLs are refused."""

from __future__ import annotations

import json
import threading
import time

import pytest

from studio.errors import InvalidRequest
from studio.jobs import JobManager, JobStatus
from studio.service import Studio
from studio.webhooks import (DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookDispatcher,
                             check_url, sign, verify_signature)
from tests.fakes import echo_provider
from tests.fakes.echo_provider import EchoProvider
from tests.fakes.http import FakeServer, Response

SECRET = "whsec-test-0123456789"


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


def test_only_http_urls_without_credentials_or_link_local_hosts():
    assert check_url(" http://127.0.0.1:9000/hook ") == "http://127.0.0.1:9000/hook"
    assert check_url("https://hooks.example.com/x", public_only=True, resolve=lambda host: ["93.184.216.34"])
    for url, message in (("ftp://example.com/x", "http:// or https://"), ("file:///etc/passwd", "http:// or https://"),
                         ("http:///nohost", "no host"), ("https://user:pw@example.com/", "no user:password"),
                         ("http://169.254.169.254/latest/meta-data", "link-local"),
                         ("http://[::ffff:169.254.169.254]/", "link-local"),
                         ("http://example.com:99999/", "invalid port")):
        with pytest.raises(InvalidRequest, match=message):
            check_url(url)
    with pytest.raises(InvalidRequest, match="private address"):
        check_url("http://127.0.0.1/hook", public_only=True)
    with pytest.raises(InvalidRequest, match="private address"):
        check_url("http://intranet.example/hook", public_only=True, resolve=lambda host: ["10.0.0.8"])


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
    assert len(final["images"]) == 3 and {"id", "path", "seed", "cost"} <= set(final["images"][0])
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
    receiver = Receiver(plan=[404] * 10, delay=0.5)
    manager = manager_for(studio, max_attempts=3)
    with FakeServer(receiver) as server:
        started = time.monotonic()
        job = manager.submit("\n".join(f"scene {i}" for i in range(4)), provider="echo", webhook=server.url)
        final = manager.wait(job.id, timeout=10)
        elapsed = time.monotonic() - started
        assert final.status is JobStatus.COMPLETED and elapsed < 1.0  # four 0.5 s answers would take 2 s+
        assert manager.webhooks.flush(15)
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


def test_without_a_secret_deliveries_carry_no_signature(studio, monkeypatch):
    monkeypatch.delenv("STUDIO_WEBHOOK_SECRET")
    seen = []
    manager = manager_for(studio)
    with FakeServer(lambda request: seen.append(request) or Response(200, {})) as server:
        manager.wait(manager.submit("one", provider="echo", webhook=server.url).id, timeout=10)
        assert manager.webhooks.flush(10)
    manager.close()
    assert seen and all(SIGNATURE_HEADER.lower() not in r.headers for r in seen)
    assert all(TIMESTAMP_HEADER.lower() in r.headers for r in seen)


def test_cancel_and_public_only_webhooks(studio):
    receiver = Receiver()
    manager = manager_for(studio)
    with pytest.raises(InvalidRequest, match="private address"):
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

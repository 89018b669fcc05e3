"""Every front end that takes a webhook URL: the job's own secret is shown once (and verifies the
deliveries), forbidden addresses are refused before anything starts. The CLI's checks live in
tests/test_webhooks.py; the Gradio ones here drive the real app through gradio_client."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.webhooks import JOB_SECRET_NOTICE, verify_signature
from tests.fakes.echo_provider import EchoProvider
from tests.fakes.http import FakeServer, Response

ROOT = Path(__file__).resolve().parent.parent
BATCH = str(ROOT / "pages" / "5_Batch.py")


def open_batch_page(**params) -> AppTest:
    at = AppTest.from_file(BATCH, default_timeout=30)
    at.query_params.update(params)
    return at.run()


class CountingReceiver:
    """A webhook receiver that answers 200 and sets ``done`` once it has had ``expected`` requests."""

    def __init__(self, expected: int):
        self.expected, self.seen = expected, 0
        self.done = threading.Event()

    def __call__(self, request):
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()
        return Response(200, {})


def no_crash(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_streamlit_batch_shows_the_jobs_own_secret_once_and_it_verifies_the_webhooks(app_home, monkeypatch):
    monkeypatch.delenv("STUDIO_WEBHOOK_SECRET", raising=False)
    EchoProvider.latency = 0.0
    receiver = CountingReceiver(expected=2)  # progress, then completed
    with FakeServer(receiver) as server:
        at = open_batch_page()
        at.text_area(key="batch_script").set_value("00:01 a lighthouse").run()
        at.text_input(key="batch_webhook").set_value(f"{server.url}/hook").run()
        no_crash(at)
        next(b for b in at.button if b.label == "Run 1 scene(s)").click().run()
        no_crash(at)
        assert JOB_SECRET_NOTICE in [i.value for i in at.info]
        [secret] = [c.value for c in at.code if c.value.startswith("whsec_")]
        job_id = at.query_params["job"]
        job_id = job_id[0] if isinstance(job_id, list) else job_id
        assert receiver.done.wait(15), "the webhooks never came"
        assert all(verify_signature(secret, r.headers, r.body) for r in server.requests)
    refreshed = open_batch_page(job=job_id)  # the same job in a new session: the secret is not shown again
    no_crash(refreshed)
    assert not any(c.value == secret for c in refreshed.code)
    assert JOB_SECRET_NOTICE not in [i.value for i in refreshed.info]


def test_streamlit_batch_refuses_a_metadata_webhook_in_any_spelling(app_home):
    at = open_batch_page()
    at.text_area(key="batch_script").set_value("one scene").run()
    for url in ("http://0xa9fea9fe/latest/meta-data/", "http://[64:ff9b::a9fe:a9fe]/"):
        at.text_input(key="batch_webhook").set_value(url).run()
        no_crash(at)
        assert any("link-local" in e.value.replace("\\", "") for e in at.error), [e.value for e in at.error]
        assert not any(b.label.startswith("Run ") for b in at.button)


# -- Gradio: the /batch API -------------------------------------------------------------------------


class PretendInternet:
    """Connections to one public address land on a loopback receiver instead (the test machine has
    no internet); everything else connects as usual."""

    ADDRESS = "93.184.216.34"

    def __init__(self, monkeypatch, server: FakeServer):
        real_connect = socket.create_connection
        port = int(server.url.rsplit(":", 1)[1])

        def create_connection(address, *args, **kwargs):
            if address[0] == self.ADDRESS:
                return real_connect(("127.0.0.1", port), *args, **kwargs)
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture
def gradio_app(tmp_path, monkeypatch):
    from tests.test_gradio_app import Access, launch, shut

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("STUDIO_WEBHOOK_SECRET", "the-operators-secret-0123456789")
    EchoProvider.latency = 0.0
    running = launch(tmp_path / "home", None, Access())
    yield running
    shut(running)


def test_gradio_batch_answers_with_the_jobs_own_secret_and_the_webhooks_verify_with_it(gradio_app, monkeypatch):
    counting = CountingReceiver(expected=2)  # progress, then completed
    with FakeServer(counting) as receiver:
        PretendInternet(monkeypatch, receiver)
        files, answer = gradio_app.client().predict(
            "one scene", "", "", "echo", "", {"webhook": f"http://{PretendInternet.ADDRESS}:8080/hook"},
            api_name="/batch")
        secret = answer.pop("webhook_secret")
        assert secret.startswith("whsec_") and secret not in json.dumps(answer)
        assert counting.done.wait(15), "the webhooks never came"
    assert all(verify_signature(secret, r.headers, r.body) for r in receiver.requests)
    assert not any(verify_signature("the-operators-secret-0123456789", r.headers, r.body) for r in receiver.requests)
    assert {r.headers["host"] for r in receiver.requests} == {f"{PretendInternet.ADDRESS}:8080"}


@pytest.mark.parametrize("url", ["http://[::127.0.0.1]:9/hook", "http://[64:ff9b::7f00:1]:9/hook",
                                 "http://[2002:7f00:1::]:9/hook", "http://0x7f000001:9/hook",
                                 "http://0xa9fea9fe/latest/meta-data/"])
def test_gradio_batch_refuses_inside_addresses_in_any_spelling(gradio_app, url):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="private or reserved|link-local"):
        gradio_app.client().predict("one scene", "", "", "echo", "", {"webhook": url}, api_name="/batch")

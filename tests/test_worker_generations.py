"""Single generations on a Celery worker (issue 13): with ``STUDIO_BROKER_URL`` set, the front ends'
generate, edit and variations (``Application``) run on a real ``celery -A studio.worker worker``
process, with progress, cancel and errors of the same kind; the library's ``Studio.generate`` stays
in process.

The worker uses the ``wire`` test provider (tests/fakes/wire_provider.py): its prompt chooses a
failure or a slow run, since nothing in this process can reach into the worker. That the worker ran
a request, not this process, shows in the provider's call counter, which this process never moves.
"""

from __future__ import annotations

import io
import json
import threading

import pytest
from PIL import Image

from studio.errors import Cancelled
from tests.helpers import wait_for
from tests.celery_workers import Worker, worker_env
from tests.fakes import wire_provider
from tests.fakes.echo_provider import EchoProvider

BUDGET = "5"  # USD a day: the pricey model's $10 image does not fit
DEADLINE = 120.0



@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server_url):
    """One worker for the module on its own data directory and Redis (not emptied between tests:
    the worker's queues live there). Yields (home, broker URL, worker)."""
    home = tmp_path_factory.mktemp("worker-generations") / "home"
    settings = {"STUDIO_PROVIDER_PLUGINS": wire_provider.PLUGIN_SPEC, "STUDIO_DAILY_BUDGET": BUDGET,
                "STUDIO_JOB_STALE_SECONDS": "2"}
    with Worker(worker_env(home, redis_server_url, **settings), "generations") as worker:
        worker.wait_ready()
        yield home, redis_server_url, worker, settings


@pytest.fixture
def studio(cluster, monkeypatch):
    """This process's studio: the worker's data directory and broker (as a web server has)."""
    from studio.service import Studio

    home, broker, _worker, settings = cluster
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("STUDIO_BROKER_URL", broker)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    studio = Studio(home)
    calls = EchoProvider.calls
    yield studio
    assert EchoProvider.calls == calls, "this process ran a provider call the worker should have run"
    from studio.jobs import get_manager

    get_manager(studio).close(wait=0)
    studio.close()


@pytest.fixture
def client(studio, monkeypatch):
    from fastapi.testclient import TestClient

    from studio.http import create_app

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    with TestClient(create_app(studio)) as test_client:
        yield test_client


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the HTTP API --------------------------------------------------------------------------------------


def test_http_generate_runs_on_the_worker(client, studio, cluster):
    answer = client.post("/api/v1/generate", json={"prompt": "a quay at dawn", "provider": "wire", "n": 2,
                                                     "size": "64x64"})
    assert answer.status_code == 200, (answer.text, cluster[2].log())
    body = answer.json()
    assert len(body["images"]) == 2 and body["cost"] == pytest.approx(0.02)
    ids = [image["id"] for image in body["images"]]
    assert {record.id for record in studio.storage.index.images_for_request(body["request_id"])} == set(ids)
    assert client.get(body["images"][0]["url"]).status_code == 200  # the worker's file, served here


def test_http_edit_sends_the_uploaded_image_to_the_worker(client, cluster):
    answer = client.post("/api/v1/edit", data={"prompt": "paint it red", "settings": json.dumps({"provider": "wire"})},
                         files={"image": ("in.png", png(96, 64), "image/png")})
    assert answer.status_code == 200, (answer.text, cluster[2].log())
    [image] = answer.json()["images"]
    assert (image["width"], image["height"], image["mode"]) == (96, 64, "image-to-image")


@pytest.mark.parametrize("body, status, kind", [
    ({"prompt": "fail:rate please", "provider": "wire"}, 429, "rate_limited"),
    ({"prompt": "fail:provider please", "provider": "wire"}, 502, "provider_failure"),
    ({"prompt": "a golden quay", "provider": "wire", "model": "wire-pricey"}, 402, "budget_exceeded"),
])
def test_http_errors_keep_their_kind_across_the_wire(client, cluster, body, status, kind):
    answer = client.post("/api/v1/generate", json=body)
    assert answer.status_code == status, (answer.text, cluster[2].log())
    assert answer.json()["error"] == kind
    if status == 429:
        assert answer.headers["Retry-After"] == "7"  # the provider's retry_after survives the trip


# -- the application layer: progress and cancel ----------------------------------------------------------


def test_progress_and_cancel_reach_the_worker(studio, cluster):
    from studio.application import Application

    app = Application(studio)
    assert app.on_workers
    events, cancel, outcome = [], threading.Event(), {}

    def run():
        try:
            app.generate_from_form("local", {"prompt": "slow harbour", "provider": "wire"}, progress=events.append,
                                   cancel=cancel)
        except Exception as exc:  # the test inspects it below
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    try:
        wait_for(lambda: any(event.message == "slowly" for event in events), "the worker's progress")
        cancel.set()
    finally:
        runner.join(DEADLINE)
    assert not runner.is_alive()
    assert isinstance(outcome.get("error"), Cancelled), (outcome, cluster[2].log())


def test_the_library_generates_in_process_even_with_a_broker(studio):
    from studio.types import GenerationRequest

    before = EchoProvider.calls
    result = studio.generate(GenerationRequest(prompt="a library call", provider="wire"))
    assert len(result.images) == 1 and EchoProvider.calls == before + 1
    EchoProvider.calls = before  # the fixture checks that the front ends' calls went to the worker


# -- Gradio ------------------------------------------------------------------------------------------------


def test_gradio_generate_and_variations_run_on_the_worker(studio, cluster, tmp_path, monkeypatch):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import gradio_app
    from gradio_ui.identity import Access

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    demo = gradio_app.build_app(studio, access=Access(), export_dir=tmp_path / "exports")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            max_file_size=gradio_app.MAX_UPLOAD)
    try:
        client = Client(url, verbose=False)
        files, made = client.predict("a red fox in snow", "wire", "", {"n": 1, "size": "64x64"}, api_name="/generate")
        assert len(files) == 1 and made["images"][0]["prompt"] == "a red fox in snow", cluster[2].log()
        parent = made["images"][0]["id"]
        files, varied = client.predict(None, parent, "", 2, False, "", "", {}, api_name="/variations")
        assert len(files) == 2 and {image["parent_id"] for image in varied["images"]} == {parent}
        with pytest.raises(AppError, match="too many requests"):
            client.predict("fail:rate fox", "wire", "", {}, api_name="/generate")
    finally:
        demo.close()


def test_the_task_message_carries_no_owner_or_prompt(studio, cluster):
    """Flower and Celery's logs show a task's arguments: the action's owner, prompt and images wait
    in Redis under the task's id instead (removed when the worker takes them)."""
    from celery.signals import before_task_publish

    from studio.application import Application
    from studio.jobs.remote_actions import BODY_PREFIX

    published = []

    def capture(sender=None, body=None, headers=None, **_):
        if sender == "studio.action":
            published.append((headers["id"], repr(body), repr(headers)))

    before_task_publish.connect(capture)
    try:
        result = Application(studio).generate_from_form("owner-7f3a", {"prompt": "a secret lighthouse",
                                                                       "provider": "wire"})
    finally:
        before_task_publish.disconnect(capture)
    assert len(result.images) == 1 and result.images[0].owner == "owner-7f3a"
    [(task_id, body, headers)] = published
    for private in ("owner-7f3a", "secret lighthouse"):
        assert private not in body and private not in headers
    import redis

    client = redis.Redis.from_url(cluster[1])
    try:
        assert client.get(BODY_PREFIX + task_id) is None  # taken by the worker
    finally:
        client.close()

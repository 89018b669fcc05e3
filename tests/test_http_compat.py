"""The seed systems' routes (issue 12 §2), as their documents define them: document 3's job API
(create, poll, result, webhooks), document 5's local model API (/generate, /generate/image, /health,
/, /cache) and document 1's web API (/api/generate/image, /api/generate/providers)."""

from __future__ import annotations

import base64
import io
import json
import threading

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from studio.config import Settings  # noqa: E402
from studio.http import create_app  # noqa: E402
from studio.jobs import get_manager  # noqa: E402
from studio.service import Studio  # noqa: E402
from studio.tokens import tokens_for  # noqa: E402
from studio.webhooks import SHARED_SECRET_HEADER, verify_signature  # noqa: E402
from tests.fakes import echo_provider  # noqa: E402
from tests.fakes.http import FakeServer, Response, image_bytes  # noqa: E402
from tests.helpers import readme_bash  # noqa: E402

HMAC_SECRET = "whsec-compat-0123456789abcdef"
SHARED_SECRET = "shared-compat-9876543210fedcba"
STAGES = ["PENDING", "INITIALIZING", "GENERATING", "SAVING", "COMPLETED"]


@pytest.fixture
def local(monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "local")


@pytest.fixture
def studio(studio_home, local):
    echo_provider.install(studio_home / "catalog")
    made = Studio(studio_home)
    yield made
    get_manager(made).close()
    made.close()


def api(studio) -> TestClient:
    """A client of the studio's app without the per-caller rate limit: the polling tests ask often."""
    return TestClient(create_app(studio, settings=Settings.load(studio.home, api_rate_limit=0)))


@pytest.fixture
def client(studio):
    return api(studio)


@pytest.fixture
def gemini(cloud_fake):
    return cloud_fake("gemini")


def wait_for_end(client: TestClient, studio, job_id: str, headers: dict | None = None) -> list[dict]:
    """Poll the status route as a document 3 client does, until COMPLETED or FAILED; between two
    polls, wait on the job's runner (it returns as soon as the run ends). Returns every answer."""
    runner = get_manager(studio).runner
    seen = []
    for _ in range(1000):
        answer = client.get(f"/api/images/status/{job_id}", headers=headers)
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
        if seen[-1]["status"] in ("COMPLETED", "FAILED"):
            return seen
        runner.wait(job_id, 0.2)
    raise AssertionError(f"job {job_id} never finished: {seen[-1]}")


# -- document 3: the job API ---------------------------------------------------------------------------


def test_polling_flow_creates_runs_and_returns_images_and_metadata(client, studio, gemini, studio_home):
    created = client.post("/api/images/generate", json={
        "prompt": "a red fox in snow", "num_images": 2, "size": "1792x1024", "format": "WEBP",
        "style": "illustration", "quality": "high"})
    assert created.status_code == 200, created.text
    body = created.json()
    assert set(body) == {"job_id", "status", "message"} and body["status"] == "PENDING"

    seen = wait_for_end(client, studio, body["job_id"])
    states = [answer["status"] for answer in seen]
    assert states[-1] == "COMPLETED"
    assert [STAGES.index(s) for s in states] == sorted(STAGES.index(s) for s in states)  # only forward
    progress = [answer["progress"] for answer in seen]
    assert progress == sorted(progress) and progress[-1] == 100 and all(0 <= p <= 100 for p in progress)
    last = seen[-1]
    assert {"job_id", "status", "message", "progress", "created_at", "updated_at"} <= set(last)
    assert last["created_at"] <= last["updated_at"]
    assert any("16:9" in w for w in last["warnings"])  # 1792x1024 is drawn as Gemini's 16:9

    result = client.get(f"/api/images/result/{body['job_id']}")
    assert result.status_code == 200
    answer = result.json()
    assert answer["status"] == "COMPLETED" and len(answer["images"]) == 2
    for image in answer["images"]:
        assert {"file_path", "url", "description", "format", "size_bytes", "dimensions"} <= set(image)
        assert image["format"] == "WEBP" and image["file_path"].startswith("images/")
        stored = (studio_home / image["file_path"]).read_bytes()
        assert len(stored) == image["size_bytes"]
        with Image.open(io.BytesIO(stored)) as picture:
            assert picture.format == "WEBP" and image["dimensions"] == f"{picture.width}x{picture.height}"
        assert image["url"] == f"/api/v1/images/{image['id']}/file"
        assert client.get(image["url"]).content == stored
    metadata = answer["metadata"]
    assert metadata["model_name"] == "gemini-3.1-flash-image"
    assert metadata["output_size_bytes"] == sum(image["size_bytes"] for image in answer["images"])
    assert isinstance(metadata["input_tokens"], int) and metadata["input_tokens"] > 0
    assert metadata["generation_time_seconds"] >= 0 and metadata["timestamp"] and metadata["version"]
    # What Gemini was asked: the 16:9 ratio, quality "high" as the 2K tier, one call per image.
    configs = [call.config["imageConfig"] for call in gemini.calls]
    assert configs == [{"aspectRatio": "16:9", "imageSize": "2K"}] * 2
    assert str(studio_home) not in result.text


def test_a_failing_generation_ends_failed_with_its_errors(client, studio, gemini):
    gemini.finish_reason = "IMAGE_SAFETY"
    job_id = client.post("/api/images/generate", json={"prompt": "a fox"}).json()["job_id"]
    last = wait_for_end(client, studio, job_id)[-1]
    assert last["status"] == "FAILED" and "safety" in last["message"]
    result = client.get(f"/api/images/result/{job_id}")
    assert result.status_code == 200
    answer = result.json()
    assert answer["status"] == "FAILED" and answer["job_id"] == job_id
    assert len(answer["errors"]) == 1 and "safety" in answer["errors"][0] and "images" not in answer


@pytest.mark.parametrize("payload, reason", [
    ({"prompt": ""}, "prompt is required"),
    ({"prompt": "   "}, "prompt is required"),
    ({}, "prompt"),
    ({"prompt": "x", "num_images": 0}, "num_images"),
    ({"prompt": "x", "num_images": 5}, "num_images"),
    ({"prompt": "x", "num_images": "2"}, "num_images"),
    ({"prompt": "x", "size": "640x480"}, "size must be one of 512x512, 1024x1024, 1792x1024"),
    ({"prompt": "x", "format": "GIF"}, "format must be one of PNG, JPEG, WEBP"),
    ({"prompt": "x", "style": "noir"}, "style must be one of photorealistic, artistic, illustration, 3d-render"),
    ({"prompt": "x", "quality": "max"}, "quality must be one of standard, high, ultra"),
    ({"prompt": "x", "input_image_url": "file:///etc/passwd"}, "input_image_url must be an http"),
    ({"prompt": "x", "input_image_url": "http://127.0.0.1:9/cat.png"}, "private or reserved address"),
    ({"prompt": "x", "input_image_url": "http://169.254.169.254/latest"}, "refusing"),
])
def test_bad_input_is_400_with_the_reason_and_nothing_is_stored_or_called(client, studio, gemini, payload, reason):
    answer = client.post("/api/images/generate", json=payload)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request" and reason in answer.json()["detail"]
    assert get_manager(studio).list("local") == [] and gemini.calls == []


def test_lowercase_choices_are_the_documents_own(client, studio, gemini):
    job_id = client.post("/api/images/generate", json={"prompt": "a fox", "format": "jpeg", "size": "512x512",
                                                       "quality": "ULTRA"}).json()["job_id"]
    assert wait_for_end(client, studio, job_id)[-1]["status"] == "COMPLETED"
    image = client.get(f"/api/images/result/{job_id}").json()["images"][0]
    assert image["format"] == "JPEG" and gemini.calls[0].config["imageConfig"]["imageSize"] == "4K"


def test_without_a_gemini_key_the_job_is_refused_503_and_nothing_is_stored(client, studio):
    answer = client.post("/api/images/generate", json={"prompt": "a fox"})
    assert answer.status_code == 503 and answer.json()["error"] == "not_configured"
    assert "GEMINI_API_KEY" in answer.json()["detail"] and get_manager(studio).list("local") == []


def test_unknown_jobs_other_callers_jobs_and_plain_batches_are_404(studio, gemini, monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    client = api(studio)
    tokens = tokens_for(studio)
    alice = {"Authorization": f"Bearer {tokens.create('alice@example.com', 'a')[1]}"}
    bob = {"Authorization": f"Bearer {tokens.create('bob@example.com', 'b')[1]}"}
    job_id = client.post("/api/images/generate", json={"prompt": "a fox"}, headers=alice).json()["job_id"]
    assert wait_for_end(client, studio, job_id, alice)[-1]["status"] == "COMPLETED"
    batch = get_manager(studio).submit("a lighthouse", provider="echo", user="alice@example.com")
    for path in (f"status/{job_id}", f"result/{job_id}"):
        answer = client.get(f"/api/images/{path}", headers=bob)
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    for path in ("status/nope", "result/nope", f"status/{batch.id}"):
        assert client.get(f"/api/images/{path}", headers=alice).status_code == 404
    result = client.get(f"/api/images/result/{job_id}", headers=alice)
    assert result.status_code == 200 and "alice@example.com" not in result.text
    assert client.get(f"/api/images/status/{job_id}").status_code == 401


def test_result_of_a_running_job_is_409_and_a_cancelled_job_is_failed(client, studio, gemini):
    gemini.delay = 30  # the fake holds its answer; the job is cancelled long before
    job_id = client.post("/api/images/generate", json={"prompt": "a fox"}).json()["job_id"]
    early = client.get(f"/api/images/result/{job_id}")
    assert early.status_code == 409
    assert early.json()["error"] == "not_finished" and early.json()["job_id"] == job_id
    assert early.json()["status"] in STAGES[:4]
    get_manager(studio).cancel(job_id, "local")
    last = wait_for_end(client, studio, job_id)[-1]
    assert last["status"] == "FAILED" and last["message"].startswith("cancelled")
    assert client.get(f"/api/images/result/{job_id}").json()["status"] == "FAILED"


def test_input_image_url_is_fetched_through_the_guard_when_created_and_when_run(client, studio, gemini,
                                                                                  monkeypatch):
    import studio.service as service

    fetched = []

    def fake_fetch(url, **kwargs):  # the guard itself is tested in test_netfetch.py
        fetched.append(url)
        return image_bytes(64, 48)

    monkeypatch.setattr(service, "fetch_url", fake_fetch)
    url = "https://images.example.com/cat.png"
    job_id = client.post("/api/images/generate", json={"prompt": "the cat as a painting",
                                                       "input_image_url": url}).json()["job_id"]
    assert wait_for_end(client, studio, job_id)[-1]["status"] == "COMPLETED"
    assert fetched == [url, url]
    assert len(gemini.calls) == 1 and len(gemini.calls[0].images) == 1  # the fetched image went along
    record = studio.get_image(client.get(f"/api/images/result/{job_id}").json()["images"][0]["id"])
    assert record.mode == "image-to-image"


def test_a_jobs_input_image_is_only_ever_a_url():
    from studio.errors import InvalidRequest
    from studio.jobs import Job, JobItem, JobStatus
    from studio.jobs.runner import INPUT_IMAGE_URL_OPTION, build_request

    job = Job(id="j", owner="o", status=JobStatus.PENDING, provider="gemini", model="m",
              options={INPUT_IMAGE_URL_OPTION: "https://images.example.com/a.png"})
    request = build_request(job, JobItem(job_id="j", index=0, text="x"))
    assert request.mode == "image-to-image" and request.init_image == "https://images.example.com/a.png"
    job.options[INPUT_IMAGE_URL_OPTION] = "/etc/hosts"
    with pytest.raises(InvalidRequest):
        build_request(job, JobItem(job_id="j", index=0, text="x"))


class HookReceiver:
    """Document 3's receiver: checks the shared secret header, and (as the studio's receivers do)
    the HMAC signature on the raw body."""

    def __init__(self, hmac_secret: str):
        self.hmac_secret = hmac_secret
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            self.headers.append(request.headers)
            if not verify_signature(self.hmac_secret, request.headers, request.body):
                return Response(401, {"error": "bad signature"})
            self.bodies.append(json.loads(request.body))
        return Response(200, {"ok": True})


def hook_studio(studio_home, url: str) -> Studio:
    studio = Studio(settings=Settings.load(studio_home, job_api_webhook_url=url, environment="staging"))
    return studio


@pytest.mark.parametrize("hmac_key", ["STUDIO_WEBHOOK_SECRET", "STUDIO_WEBHOOK_SHARED_SECRET"])
def test_webhooks_carry_document_3s_body_the_shared_secret_and_our_signature(studio_home, local, gemini,
                                                                              monkeypatch, hmac_key):
    monkeypatch.setenv("STUDIO_WEBHOOK_SHARED_SECRET", SHARED_SECRET)
    if hmac_key == "STUDIO_WEBHOOK_SECRET":
        monkeypatch.setenv("STUDIO_WEBHOOK_SECRET", HMAC_SECRET)
    receiver = HookReceiver(HMAC_SECRET if hmac_key == "STUDIO_WEBHOOK_SECRET" else SHARED_SECRET)
    with FakeServer(receiver) as server:
        studio = hook_studio(studio_home, f"{server.url}/hooks/images")
        client = api(studio)
        try:
            done = client.post("/api/images/generate", json={"prompt": "a fox"}).json()["job_id"]
            wait_for_end(client, studio, done)
            gemini.finish_reason = "IMAGE_SAFETY"
            failed = client.post("/api/images/generate", json={"prompt": "a fox"}).json()["job_id"]
            wait_for_end(client, studio, failed)
            assert get_manager(studio).webhooks.flush(10)
        finally:
            get_manager(studio).close()
            studio.close()
    assert len(receiver.bodies) == 2 and all(r.path == "/hooks/images" for r in server.requests)
    assert all(headers[SHARED_SECRET_HEADER.lower()] == SHARED_SECRET for headers in receiver.headers)
    completed, failure = receiver.bodies
    assert (completed["job_id"], completed["status"], completed["environment"]) == (done, "completed", "staging")
    assert completed["timestamp"] and completed["data"]["images"][0]["file_path"].startswith("images/")
    assert completed["data"]["metadata"]["model_name"] == "gemini-3.1-flash-image"
    assert (failure["job_id"], failure["status"], failure["environment"]) == (failed, "failed", "staging")
    assert "safety" in failure["error_message"] and "data" not in failure
    assert str(studio_home) not in json.dumps(receiver.bodies) and "local" not in (completed.get("owner"), )


def test_a_webhook_url_without_any_secret_refuses_the_job(studio_home, local, gemini):
    studio = hook_studio(studio_home, "http://127.0.0.1:9/hooks")
    try:
        answer = api(studio).post("/api/images/generate", json={"prompt": "a fox"})
        assert answer.status_code == 503 and "cannot be signed" in answer.json()["detail"]
        assert get_manager(studio).list("local") == [] and gemini.calls == []
    finally:
        studio.close()


# -- document 5: the local model API ----------------------------------------------------------------------


@pytest.fixture
def local_studio(studio_home, local, tiny_model_dir, one_torch_thread):
    """The tiny model as the default local model (a server path), which the operator also offers
    under the name "tiny", the model of user "alice"."""
    settings = Settings.load(studio_home, local_model=str(tiny_model_dir), local_models=f"tiny={tiny_model_dir}",
                             user_models={"alice": "tiny"})
    made = Studio(settings=settings)
    yield made
    made.clear_model_cache()
    made.close()


def test_generate_answers_base64_model_time_and_store_path_and_png_bytes(local_studio, tiny_model_dir, studio_home):
    client = api(local_studio)
    request = {"prompt": "a lighthouse", "num_inference_steps": 2, "width": 256, "height": 320, "seed": 7}
    answer = client.post("/generate", json={**request, "user_id": "alice"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {"image_base64", "model_id", "generation_time", "image_path"} <= set(body)
    data = base64.b64decode(body["image_base64"])
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG" and picture.size == (256, 320)
    assert body["model_id"] == "tiny" and body["generation_time"] > 0 and body["seed"] == 7
    assert body["image_path"].startswith("images/") and (studio_home / body["image_path"]).is_file()
    # user_id picked the model, not the owner: the image is the caller's (the local user's).
    assert local_studio.get_image(body["id"], "local").model == "tiny"

    png = client.post("/generate/image", json=request)  # user_id "default": the default model, by its path
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-model-id"] == "tiny" and png.headers["x-seed"] == "7"  # the operator's name for it
    with Image.open(io.BytesIO(png.content)) as picture:
        assert picture.size == (256, 320)
    assert str(tiny_model_dir) not in png.headers.values() and str(tiny_model_dir) not in answer.text

    health = client.get("/health").json()
    assert health["status"] == "healthy" and health["loaded_models"] == ["tiny"]
    assert health["device"] == "cpu" and str(tiny_model_dir) not in json.dumps(health)
    cleared = client.delete("/cache")
    assert cleared.status_code == 200 and cleared.json()["unloaded"] == ["tiny"]
    assert client.get("/health").json()["loaded_models"] == []


@pytest.mark.parametrize("change, field", [
    ({"width": 255}, "width"), ({"width": 1025}, "width"), ({"height": 128}, "height"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"num_inference_steps": 151}, "num_inference_steps"),
    ({"guidance_scale": 0.5}, "guidance_scale"), ({"guidance_scale": 20.5}, "guidance_scale"),
    ({"seed": -1}, "seed"), ({"width": "512"}, "width"), ({"prompt": None}, "prompt"),
])
def test_generate_out_of_range_is_400_naming_the_field(client, change, field, studio_home):
    for path in ("/generate", "/generate/image"):
        answer = client.post(path, json={"prompt": "a lighthouse", **change})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
        assert answer.json()["detail"].startswith(field)
    assert not (studio_home / "images").exists()


def test_health_lists_features_and_back_ends_and_a_broken_one_is_503(client, monkeypatch):
    from studio import health
    from studio.http import compat_local

    body = client.get("/health").json()
    assert body["status"] == "healthy" and isinstance(body["device"], str)
    assert {"database", "storage", "broker", "workers"} == set(body["backends"])
    assert body["backends"]["database"] == {"kind": "sqlite", "ok": True}
    assert any("webhook" in feature for feature in body["features"])  # document 3's
    assert any("per-user" in feature for feature in body["features"])  # document 5's

    def broken(studio):
        raise OSError(f"disk gone under {studio.home}")

    monkeypatch.setitem(health.CHECKS, "storage", broken)
    monkeypatch.setattr(compat_local, "HEALTH_PROBE_SECONDS", 0.0)  # the probes of the call above are not reused
    answer = client.get("/health")
    assert answer.status_code == 503 and answer.json()["status"] == "degraded"
    assert answer.json()["backends"]["storage"] == {"ok": False, "error": "OSError"}


def test_landing_is_json_and_a_browser_goes_to_the_ui_when_it_is_mounted(studio):
    from starlette.applications import Starlette

    app = create_app(studio)
    client = TestClient(app)
    body = client.get("/").json()
    assert body["name"] == "Image Studio" and body["version"] and body["links"]["docs"] == "/docs"
    assert client.get("/", headers={"Accept": "text/html"}).json() == body  # no UI here: still JSON
    app.mount("/ui", Starlette())
    browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"}, follow_redirects=False)
    assert browser.status_code == 307 and browser.headers["location"] == "/ui/"
    assert client.get("/", headers={"Accept": "application/json"}).json()["links"]["ui"] == "/ui/"


def test_clearing_the_cache_needs_a_caller_on_a_private_server(studio, monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    client = api(studio)
    assert client.delete("/cache").status_code == 401
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200


# -- document 1: the web API --------------------------------------------------------------------------------


def test_generate_image_answers_url_and_local_path(client, studio, studio_home):
    answer = client.post("/api/generate/image", json={"prompt": "a harbour", "provider": "echo",
                                                      "style": "Concept Art", "size": "64x64"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {"url", "local_path", "prompt", "provider", "cost"} <= set(body)
    assert (body["prompt"], body["provider"], body["cost"]) == ("a harbour", "echo", 0.01)
    assert body["local_path"].startswith("images/") and (studio_home / body["local_path"]).is_file()
    assert client.get(body["url"]).content == (studio_home / body["local_path"]).read_bytes()
    assert studio.get_image(body["id"]).style == "Concept Art"


def test_document_1_names_and_bad_input(client):
    no_key = client.post("/api/generate/image", json={"prompt": "a harbour", "provider": "DALL-E"})
    assert no_key.status_code == 503 and "OPENAI_API_KEY" in no_key.json()["detail"]  # dall-e is OpenAI
    unknown = client.post("/api/generate/image", json={"prompt": "a harbour", "provider": "midjourney"})
    assert unknown.status_code == 400 and "unknown provider" in unknown.json()["detail"]
    style = client.post("/api/generate/image", json={"prompt": "a harbour", "provider": "echo", "style": "noir"})
    assert style.status_code == 400 and "unknown style" in style.json()["detail"]
    empty = client.post("/api/generate/image", json={"prompt": " ", "provider": "echo"})
    assert empty.status_code == 400 and "prompt" in empty.json()["detail"]


def test_providers_list_each_with_its_status_and_no_server_path(studio_home, local, tmp_path):
    model_path = tmp_path / "models" / "house-style"
    echo_provider.install(studio_home / "catalog")
    studio = Studio(settings=Settings.load(studio_home, local_model=str(model_path)))
    try:
        answer = api(studio).get("/api/generate/providers")
    finally:
        studio.close()
    assert answer.status_code == 200
    providers = {p["name"]: p for p in answer.json()["providers"]}
    assert {"openai", "replicate", "stability", "gemini", "local", "echo"} <= set(providers)
    assert providers["openai"]["status"] == "missing_key" and providers["openai"]["available"] is False
    assert providers["echo"]["status"] == "ready" and providers["echo"]["available"] is True
    assert "house-style" in providers["local"]["models"] and str(tmp_path) not in answer.text


# -- the README's curl examples, against a real server -------------------------------------------------------

README_SECTION = "### The seed systems' routes (documents 1, 3 and 5)"


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory, tiny_model_dir):
    """``python -m studio serve --no-ui`` on a free port (tests/test_http_server.py's Server), its
    Gemini and OpenAI on loopback fakes and the tiny model as its local model."""
    import os
    import subprocess
    import sys

    from tests.fakes.gemini_fake import GeminiFake
    from tests.fakes.openai_fake import OpenAIFake
    from tests.test_http_server import ROOT, Server, free_port

    class NoUiServer(Server):
        """The same server without the Gradio UI (these routes do not need it; it starts in seconds)."""

        def __init__(self, home, log, env):  # noqa: D107 - Server's, with --no-ui and these settings
            env = {**env, "STUDIO_HOME": str(home), "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC,
                   "STUDIO_VISITORS": "local", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
            self.home, self.log_path = home, log
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.log = log.open("wb")
            self.process = subprocess.Popen([sys.executable, "-m", "studio", "serve", "--no-ui", "--port",
                                             str(self.port)], cwd=ROOT, env=env, stdout=self.log,
                                            stderr=subprocess.STDOUT)

    folder = tmp_path_factory.mktemp("seed-server")
    gemini, openai = GeminiFake(), OpenAIFake()
    with FakeServer(gemini) as gemini_server, FakeServer(openai) as openai_server:
        env = {**os.environ, "GOOGLE_GEMINI_BASE_URL": gemini_server.url, "GEMINI_API_KEY": gemini.key,
               "OPENAI_BASE_URL": f"{openai_server.url}/v1", "OPENAI_API_KEY": openai.api_key,
               "STUDIO_LOCAL_MODEL": str(tiny_model_dir)}
        running = NoUiServer(folder / "studio-home", folder / "server.log", env)
        try:
            running.wait_ready()
            yield running
        finally:
            running.stop()


def test_readme_curl_examples_run_as_written(seed_server, tmp_path, tiny_model_dir):
    """Every curl example of the README's section, in order, in one shell against the real server;
    any failing request (HTTP 4xx/5xx) stops it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from tests.test_http_server import README_BASE, ROOT

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = ("set -euo pipefail\ncurl() { command curl --silent --show-error --fail-with-body -w '\\n' \"$@\"; }\n"
              + readme_bash(README_SECTION).replace(README_BASE, seed_server.url))
    env = {**os.environ, "STUDIO_HOME": str(seed_server.home), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}\n" \
                                 f"server:\n{seed_server.output()}"
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    job = next(a for a in answers if "metadata" in a)
    assert job["status"] == "COMPLETED" and len(job["images"]) == 2
    local = next(a for a in answers if "image_base64" in a)
    assert local["model_id"] == tiny_model_dir.name  # the folder's name, not the server's path
    with Image.open(tmp_path / "lighthouse.png") as picture:
        assert picture.format == "PNG" and picture.size == (512, 512)
    assert any(a.get("status") == "healthy" for a in answers) and any(a.get("status") == "cleared" for a in answers)
    web = next(a for a in answers if "local_path" in a)
    assert web["provider"] == "openai" and web["local_path"].startswith("images/")
    assert any("providers" in a for a in answers) and str(seed_server.home) not in done.stdout

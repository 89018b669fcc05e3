"""The /api/v1 generation and job routes through FastAPI's TestClient, on the echo provider.

What is checked: the answers' shapes (URLs or base64, no owner id or server path), that every value
goes through the application layer's rules (same size and cache key as the library), the error
mapping of each core failure (400, 402, 404, 429 + Retry-After, 502, 504), that a refused request
writes nothing and calls no provider, the job routes' life cycle, and the server-sent events.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import zipfile

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studio.errors import ContentBlocked, ProviderFailure, ProviderTimeout, QuotaExhausted, RateLimited
from tests.fakes import echo_provider
from tests.fakes.echo_provider import EchoProvider
from tests.helpers import db_rows, decoded, png

OWNER_A = "alice@example.org"  # owner ids that must never appear in an answer
OWNER_B = "bob@example.org"


@pytest.fixture
def client(echo_studio, monkeypatch):
    """A client of a single-user studio (STUDIO_VISITORS=local: no token needed)."""
    from studio.http import create_app

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    with TestClient(create_app(echo_studio)) as test_client:
        yield test_client
    from studio.jobs import get_manager

    get_manager(echo_studio).close()


@pytest.fixture
def private(echo_studio, monkeypatch):
    """A shared studio (STUDIO_VISITORS=private) and two callers with tokens: ``(client, headers_a,
    headers_b)``."""
    from studio.http import create_app
    from studio.tokens import tokens_for

    monkeypatch.setenv("STUDIO_VISITORS", "private")
    tokens = tokens_for(echo_studio)
    _, token_a = tokens.create(OWNER_A, "a")
    _, token_b = tokens.create(OWNER_B, "b")
    with TestClient(create_app(echo_studio)) as test_client:
        yield (test_client, {"Authorization": f"Bearer {token_a}"}, {"Authorization": f"Bearer {token_b}"})
    from studio.jobs import get_manager

    get_manager(echo_studio).close()


def events_of(client: TestClient, job_id: str, headers: dict | None = None) -> list[tuple[str, dict]]:
    """Every (event, data) of a job's event stream, read until the server ends it."""
    found, event = [], None
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                found.append((event, json.loads(line[len("data: "):])))
    return found


def written(home) -> tuple[int, int, int]:
    return db_rows(home, "images"), db_rows(home, "generations"), db_rows(home, "jobs")


# -- generate ---------------------------------------------------------------------------------------


def test_generate_answers_urls_and_the_library_size_and_seeds(client, echo_studio):
    answer = client.post("/api/v1/generate", json={"prompt": "a lighthouse", "provider": "echo", "n": 2,
                                                   "seed": 7, "size": "64x72", "format": "jpeg"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(i["width"], i["height"], i["format"], i["seed"]) for i in body["images"]] == [(64, 72, "jpeg", 7),
                                                                                           (64, 72, "jpeg", 8)]
    first = body["images"][0]
    assert first["url"] == f"/api/v1/images/{first['id']}/file"
    assert first["thumbnail_url"] == f"/api/v1/images/{first['id']}/thumbnail"
    assert body["cost"] == pytest.approx(0.02) and body["warnings"] == [] and body["cached"] is False
    assert "base64" not in first and "path" not in first
    record = echo_studio.get_image(first["id"])
    assert (record.width, record.height, record.user_prompt) == (64, 72, "a lighthouse")
    assert str(echo_studio.home) not in answer.text


@pytest.mark.parametrize("how", ["query", "field"])
def test_generate_base64_inline_is_the_stored_file(client, echo_studio, how):
    url = "/api/v1/generate" + ("?response=base64" if how == "query" else "")
    payload = {"prompt": "a quay", "provider": "echo", "seed": 3}
    if how == "field":
        payload["return"] = "base64"
    body = client.post(url, json=payload).json()
    image = body["images"][0]
    assert "url" not in image and image["media_type"] == "image/png"
    data = base64.b64decode(image["base64"])
    assert data == echo_studio.image_bytes(echo_studio.get_image(image["id"]))
    assert decoded(data).size == (64, 64)


def test_ratio_size_and_cache_key_are_the_application_layers(echo_studio, monkeypatch):
    """A "16:9" size is made at the size every front end uses for it, and a seeded repeat is a cache hit."""
    from studio.application import Application
    from studio.catalog import Catalog
    from studio.http import create_app

    ratio_echo = json.loads(json.dumps(echo_provider.ECHO_CATALOG))
    ratio_echo["models"][0].update(aspect_ratios=["1:1", "16:9"], default_size="256x256")
    (echo_studio.home / "catalog" / "echo.json").write_text(json.dumps(ratio_echo))
    echo_studio.catalog = Catalog(echo_studio.home / "catalog")
    echo_studio._providers.clear()
    monkeypatch.setenv("STUDIO_VISITORS", "local")
    client = TestClient(create_app(echo_studio))
    values = {"prompt": "a harbour", "provider": "echo", "size": "16:9", "seed": 11}
    expected = Application(echo_studio).form_request("local", values)
    first = client.post("/api/v1/generate", json=values).json()
    again = client.post("/api/v1/generate", json={**values, "size": None, "aspect_ratio": "16:9"}).json()
    image = first["images"][0]
    assert (image["width"], image["height"]) == (expected.width, expected.height) == (336, 192)
    assert again["cached"] is True and again["images"][0]["id"] == image["id"]
    assert echo_studio.get_image(image["id"]).cache_key == Application(echo_studio).cache_key(expected)


@pytest.mark.parametrize("payload, reason", [
    ({"prompt": "", "provider": "echo"}, "prompt"),
    ({"prompt": "x", "provider": "echo", "n": "two"}, "n must be a whole number"),
    ({"prompt": "x", "provider": "echo", "n": 9}, "number of images"),
    ({"prompt": "x", "provider": "echo", "colour": "red"}, "colour"),
    ({"prompt": "x", "provider": "nope"}, "unknown provider"),
    ({"prompt": "x", "provider": "echo", "size": "64x72", "aspect_ratio": "1:1"}, "size"),
    ({"prompt": "x", "provider": "echo", "format": "gif"}, "format"),
])
def test_bad_input_is_400_naming_it_and_nothing_is_written_or_called(client, studio_home, payload, reason):
    before = written(studio_home)
    answer = client.post("/api/v1/generate", json=payload)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request" and reason in answer.json()["detail"]
    assert written(studio_home) == before and EchoProvider.calls == 0


@pytest.mark.parametrize("failure, status, code", [
    (RateLimited("slow down", provider="echo", retry_after=7.2), 429, "rate_limited"),
    (ProviderFailure("upstream exploded", provider="echo"), 502, "provider_failure"),
    (QuotaExhausted("out of credit", provider="echo"), 502, "quota_exhausted"),
    (ProviderTimeout("no answer in 300 s", provider="echo"), 504, "timeout"),
    (ContentBlocked("refused by the safety system", provider="echo"), 400, "content_blocked"),
])
def test_provider_failures_map_to_their_status(client, failure, status, code):
    EchoProvider.failures = [failure]
    answer = client.post("/api/v1/generate", json={"prompt": "a gull", "provider": "echo"})
    assert answer.status_code == status, answer.text
    assert answer.json() == {"error": code, "detail": failure.message}
    if status == 429:
        assert answer.headers["Retry-After"] == "8"  # whole seconds, rounded up


def test_budget_is_402_before_the_provider_is_called_and_estimate_says_what_is_left(client, echo_studio):
    echo_studio.settings.daily_budget = 0.025
    estimate = client.post("/api/v1/estimate", json={"prompt": "a gull", "provider": "echo", "n": 3}).json()
    assert estimate == {"estimate": 0.03, "bound": 0.03, "daily_budget": 0.025, "budget_left": 0.025,
                        "currency": "USD", "text": estimate["text"]}
    assert "$0.03" in estimate["text"]
    refused = client.post("/api/v1/generate", json={"prompt": "a gull", "provider": "echo", "n": 3})
    assert refused.status_code == 402 and refused.json()["error"] == "budget_exceeded"
    assert EchoProvider.calls == 0
    assert client.post("/api/v1/generate", json={"prompt": "a gull", "provider": "echo", "n": 2}).status_code == 200
    left = client.post("/api/v1/estimate", json={"prompt": "a gull", "provider": "echo"}).json()
    assert left["budget_left"] == pytest.approx(0.005)


# -- edit, inpaint, variations ---------------------------------------------------------------------


def test_edit_upload_keeps_the_input_size_and_inpaint_needs_a_mask(client, echo_studio, studio_home):
    settings = json.dumps({"provider": "echo", "seed": 5})
    edited = client.post("/api/v1/edit", data={"prompt": "make it dusk", "strength": "0.5", "settings": settings},
                         files={"image": ("in.png", png(96, 80), "image/png")})
    assert edited.status_code == 200, edited.text
    image = edited.json()["images"][0]
    assert (image["width"], image["height"], image["mode"]) == (96, 80, "image-to-image")
    assert echo_studio.get_image(image["id"]).params["strength"] == 0.5

    before = written(studio_home)
    no_mask = client.post("/api/v1/inpaint", data={"prompt": "a boat", "image_id": image["id"]})
    assert no_mask.status_code == 400 and "mask" in no_mask.json()["detail"]
    both = client.post("/api/v1/edit", data={"prompt": "a boat", "image_id": image["id"]},
                       files={"image": ("in.png", png(), "image/png")})
    assert both.status_code == 400 and "not both" in both.json()["detail"]
    neither = client.post("/api/v1/edit", data={"prompt": "a boat"})
    assert neither.status_code == 400
    not_image = client.post("/api/v1/edit", data={"prompt": "a boat"},
                            files={"image": ("in.png", b"not an image at all", "image/png")})
    assert not_image.status_code == 400
    assert written(studio_home) == before

    inpainted = client.post("/api/v1/inpaint", data={"prompt": "a boat", "image_id": image["id"], "settings": settings},
                            files={"mask": ("m.png", png(96, 80, (255, 255, 255)), "image/png")})
    assert inpainted.status_code == 200, inpainted.text
    result = inpainted.json()["images"][0]
    assert (result["mode"], result["parent_id"]) == ("inpaint", image["id"])


def test_an_upload_over_the_bound_is_413_and_nothing_is_written(echo_studio, studio_home, monkeypatch):
    from studio.http import create_app

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    echo_studio.settings.api_max_upload_bytes = 64 * 1024
    client = TestClient(create_app(echo_studio))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(buffer, format="PNG")  # ~200 KB
    before = written(studio_home)
    refused = client.post("/api/v1/edit", data={"prompt": "x", "settings": json.dumps({"provider": "echo"})},
                          files={"image": ("big.png", buffer.getvalue(), "image/png")})
    assert refused.status_code == 413 and refused.json()["error"] == "payload_too_large"
    assert written(studio_home) == before and EchoProvider.calls == 0
    small = client.post("/api/v1/edit", data={"prompt": "x", "settings": json.dumps({"provider": "echo"})},
                        files={"image": ("small.png", png(16, 16), "image/png")})
    assert small.status_code == 200, small.text


def test_an_image_id_is_never_a_server_path(client, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(png())
    for source in (str(outside), "../secret.png", "http://127.0.0.1/x.png"):
        answer = client.post("/api/v1/edit", data={"prompt": "steal", "image_id": source,
                                                   "settings": json.dumps({"provider": "echo"})})
        assert answer.status_code in (400, 404), (source, answer.text)
    assert EchoProvider.calls == 0


def test_variations_of_a_stored_image_and_of_a_prompt(client):
    source = client.post("/api/v1/generate", json={"prompt": "a red kite", "provider": "echo"}).json()["images"][0]
    varied = client.post("/api/v1/variations", json={"image_id": source["id"], "n": 2})
    assert varied.status_code == 200, varied.text
    assert [(i["parent_id"], i["provider"]) for i in varied.json()["images"]] == [(source["id"], "echo")] * 2
    of_prompt = client.post("/api/v1/variations", json={"prompt": "a blue kite", "provider": "echo", "n": 3})
    assert len(of_prompt.json()["images"]) == 3
    seeded = client.post("/api/v1/variations", json={"prompt": "a kite", "provider": "echo", "seed": 4})
    assert seeded.status_code == 400 and "seed" in seeded.json()["detail"]
    missing = client.post("/api/v1/variations", json={"image_id": "0123456789abcdef"})
    assert missing.status_code == 404


def test_providers_and_models_come_from_the_catalog_with_the_day_prices_were_checked(client):
    providers = client.get("/api/v1/providers").json()["providers"]
    echo = next(p for p in providers if p["name"] == "echo")
    assert echo["ready"] is True and echo["models"] == ["echo-1"]
    models = client.get("/api/v1/models", params={"provider": "gemini"}).json()["models"]
    assert models and all("checked_on" in m["price"] for m in models)
    assert all(m["provider"] == "gemini" and m["size_choices"] for m in models)
    assert client.get("/api/v1/models", params={"provider": "nope"}).status_code == 400
    every = {m["provider"] for m in client.get("/api/v1/models").json()["models"]}
    assert {"echo", "openai", "gemini"} <= every


def test_tokens_keep_owners_apart_and_no_owner_id_leaves(private):
    client, headers_a, headers_b = private
    assert client.post("/api/v1/generate", json={"prompt": "x", "provider": "echo"}).status_code == 401
    mine = client.post("/api/v1/generate", json={"prompt": "a fox", "provider": "echo"}, headers=headers_a)
    assert mine.status_code == 200 and OWNER_A not in mine.text
    image_id = mine.json()["images"][0]["id"]
    other = client.post("/api/v1/variations", json={"image_id": image_id}, headers=headers_b)
    assert other.status_code == 404
    edit = client.post("/api/v1/edit", data={"prompt": "y", "image_id": image_id}, headers=headers_b)
    assert edit.status_code == 404
    job = client.post("/api/v1/jobs", json={"script": "one\ntwo", "provider": "echo"}, headers=headers_a)
    assert job.status_code == 201 and OWNER_A not in job.text
    job_id = job.json()["job_id"]
    assert client.get(f"/api/v1/jobs/{job_id}", headers=headers_b).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/events", headers=headers_b).status_code == 404
    end = events_of(client, job_id, headers_a)[-1]
    assert end[0] == "end" and OWNER_A not in json.dumps(end[1])
    result = client.get(f"/api/v1/jobs/{job_id}/result", headers=headers_a)
    assert OWNER_A not in result.text and client.get("/api/v1/jobs", headers=headers_b).json()["jobs"] == []


def test_callers_of_a_shared_studio_cannot_make_the_server_open_its_files(private, tmp_path):
    """File names on the server (an image option, a local model path) are the operator's alone, as in
    the Gradio app with private visitors: refused by name, before anything looks at the disk."""
    client, headers_a, _ = private
    on_server = tmp_path / "someone-elses.png"
    on_server.write_bytes(png())
    option = client.post("/api/v1/estimate", headers=headers_a, json={
        "prompt": "x", "provider": "openai", "options": {"reference_images": [str(on_server)]}})
    assert option.status_code == 400 and "not file names on the server" in option.json()["detail"]
    model = client.post("/api/v1/estimate", headers=headers_a,
                        json={"prompt": "x", "provider": "local", "model": str(tmp_path)})
    assert model.status_code == 400 and "listed local models" in model.json()["detail"]
    in_a_script = client.post("/api/v1/jobs/preview", headers=headers_a, json={
        "provider": "openai", "script": [{"text": "x", "options": {"reference_images": [str(on_server)]}}]})
    assert in_a_script.status_code == 200
    assert "not file names on the server" in " ".join(in_a_script.json()["errors"])


# -- jobs -------------------------------------------------------------------------------------------


def test_job_from_json_script_runs_and_streams_until_it_ends(client, echo_studio):
    created = client.post("/api/v1/jobs", json={"script": "a boat\na harbour\na gull", "provider": "echo",
                                                "seed": 3, "size": "64x64"})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["total"] == 3 and job["base_seed"] == 3 and job["links"]["events"].endswith("/events")
    assert [item["text"] for item in job["items"]] == ["a boat", "a harbour", "a gull"]
    events = events_of(client, job["job_id"])
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1 and "status" in kinds and "item" in kinds
    end = events[-1][1]
    assert end["status"] == "COMPLETED" and end["progress"] == 100.0
    assert [item["status"] for item in end["items"]] == ["COMPLETED"] * 3
    finished = [data for kind, data in events if kind == "item" and data["status"] == "COMPLETED"]
    assert sorted(item["index"] for item in finished) == [0, 1, 2]

    result = client.get(f"/api/v1/jobs/{job['job_id']}/result").json()
    images = [image for item in result["items"] for image in item["images"]]
    assert [image["seed"] for image in images] == [3, 4, 5]
    assert all(image["url"] == f"/api/v1/images/{image['id']}/file" for image in images)
    assert "path" not in images[0] and str(echo_studio.home) not in json.dumps(result)

    exported = client.get(f"/api/v1/jobs/{job['job_id']}/export")
    assert exported.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    assert sum(name.endswith(".png") for name in names) == 3
    script = client.get(f"/api/v1/jobs/{job['job_id']}/export", params={"format": "json"}).json()
    assert [len(segment["images"]) for segment in script["segments"]] == [1, 1, 1]
    assert str(echo_studio.home) not in json.dumps(script)
    listed = client.get("/api/v1/jobs").json()["jobs"]
    assert [j["job_id"] for j in listed] == [job["job_id"]] and "items" not in listed[0]


def test_job_from_a_multipart_srt_file_keeps_its_timestamps(client):
    srt = b"1\n00:00:01,000 --> 00:00:02,500\nwaves on rocks\n\n2\n00:00:05,000 --> 00:00:06,000\na lighthouse\n"
    created = client.post("/api/v1/jobs", files={"script": ("scenes.srt", srt, "application/x-subrip")},
                          data={"settings": json.dumps({"provider": "echo", "size": "64x64"})})
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["name"], job["script_format"]) == ("scenes.srt", "srt")
    assert [item["start"] for item in job["items"]] == [1.0, 5.0]
    assert events_of(client, job["job_id"])[-1][1]["status"] == "COMPLETED"
    pasted = client.post("/api/v1/jobs", data={"script": "one line\nanother", "settings": '{"provider": "echo"}'})
    assert pasted.status_code == 201 and pasted.json()["total"] == 2
    no_script = client.post("/api/v1/jobs", data={"settings": '{"provider": "echo"}'},
                            files={"other": ("x.txt", b"x", "text/plain")})
    assert no_script.status_code == 400 and "script" in no_script.json()["detail"]
    events_of(client, pasted.json()["job_id"])


def test_a_bad_script_or_setting_is_400_and_no_job_is_stored(client, studio_home):
    before = written(studio_home)
    for payload, reason in (({"script": "", "provider": "echo"}, "empty"),
                            ({"script": "a\nb", "provider": "echo", "n": 0}, "number of images"),
                            ({"script": "a", "provider": "echo", "seed_policy": "random"}, "seed policy"),
                            ({"script": "a", "provider": "echo", "bogus": 1}, "bogus"),
                            ({"provider": "echo"}, "script")):
        answer = client.post("/api/v1/jobs", json=payload)
        assert answer.status_code == 400 and reason in answer.json()["detail"], (payload, answer.text)
    not_json = client.post("/api/v1/jobs", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    assert written(studio_home) == before and EchoProvider.calls == 0


def test_preview_runs_nothing_and_a_batch_over_budget_is_402(client, echo_studio, studio_home):
    preview = client.post("/api/v1/jobs/preview", json={"script": "a\nb\nc", "provider": "echo", "seed": 9})
    assert preview.status_code == 200
    body = preview.json()
    assert [row["seed"] for row in body["scenes"]] == [9, 10, 11] and body["estimated_total"] == 0.03
    assert written(studio_home)[2] == 0
    echo_studio.settings.daily_budget = 0.02
    refused = client.post("/api/v1/jobs", json={"script": "a\nb\nc", "provider": "echo"})
    assert refused.status_code == 402 and written(studio_home)[2] == 0


def test_webhooks_of_token_callers_go_to_public_addresses_only_and_a_jobs_secret_is_told_once(private, echo_studio,
                                                                                              monkeypatch):
    client, headers_a, _ = private
    hook = {"script": "a\nb", "provider": "echo", "webhook": "http://127.0.0.1:9/hook", "start": False}
    refused = client.post("/api/v1/jobs", json=hook, headers=headers_a)
    assert refused.status_code == 400 and "127.0.0.1" in refused.json()["detail"]
    from studio.http import create_app

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    local = TestClient(create_app(echo_studio))  # the machine's own user may name its own network
    created = local.post("/api/v1/jobs", json=hook)
    assert created.status_code == 201, created.text
    secret = created.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    assert secret not in local.get(f"/api/v1/jobs/{created.json()['job_id']}").text
    assert secret not in local.get("/api/v1/jobs").text


def test_generate_as_a_job_streams_its_progress_and_gives_its_image(client):
    accepted = client.post("/api/v1/generate", json={"prompt": "a comet", "provider": "echo", "seed": 21,
                                                     "size": "64x64", "job": True})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["total"] == 1 and job["base_seed"] == 21
    events = events_of(client, job["job_id"])
    assert events[-1][0] == "end" and events[-1][1]["status"] == "COMPLETED"
    image = client.get(f"/api/v1/jobs/{job['job_id']}/result").json()["items"][0]["images"][0]
    assert (image["seed"], image["width"]) == (21, 64)
    assert client.post("/api/v1/generate", json={"prompt": "a", "provider": "echo", "job": True,
                                                 "cache": True}).status_code == 400


class HeldEcho:
    """The echo provider's requests wait for ``release`` (or their cancellation) once begun."""

    def __init__(self, monkeypatch):
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        original = EchoProvider.generate

        def generate(provider, request, ctx):
            self.started.release()
            while not self.release.wait(0.02):
                ctx.check_cancelled()
            return original(provider, request, ctx)

        monkeypatch.setattr(EchoProvider, "generate", generate)


def test_pause_resume_cancel_and_retry(client, monkeypatch):
    held = HeldEcho(monkeypatch)
    job = client.post("/api/v1/jobs", json={"script": "one\ntwo\nthree", "provider": "echo", "concurrency": 1}).json()
    job_id = job["job_id"]
    assert held.started.acquire(timeout=30)  # scene one is in the provider's hands
    paused = client.post(f"/api/v1/jobs/{job_id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "PAUSED"
    held.release.set()
    from studio.jobs import get_manager

    app_jobs = get_manager(client.app.state.studio)
    app_jobs.wait(job_id, "local", timeout=30)  # the scene in flight finishes; no other starts
    status = client.get(f"/api/v1/jobs/{job_id}").json()
    assert status["status"] == "PAUSED"
    assert [item["status"] for item in status["items"]] == ["COMPLETED", "PENDING", "PENDING"]
    resumed = client.post(f"/api/v1/jobs/{job_id}/resume")
    assert resumed.status_code == 200
    assert events_of(client, job_id)[-1][1]["status"] == "COMPLETED"

    EchoProvider.failures = [ProviderFailure("upstream exploded", provider="echo")]
    failing = client.post("/api/v1/jobs", json={"script": "four", "provider": "echo"}).json()
    end = events_of(client, failing["job_id"])[-1][1]
    assert end["status"] == "FAILED" and end["items"][0]["error"] == "upstream exploded"
    retried = client.post(f"/api/v1/jobs/{failing['job_id']}/retry", json={})
    assert retried.status_code == 200
    assert events_of(client, failing["job_id"])[-1][1]["status"] == "COMPLETED"
    nothing_to_retry = client.post(f"/api/v1/jobs/{failing['job_id']}/retry")
    assert nothing_to_retry.status_code == 400

    stored = client.post("/api/v1/jobs", json={"script": "five\nsix", "provider": "echo", "start": False}).json()
    assert stored["status"] == "PENDING"
    cancelled = client.post(f"/api/v1/jobs/{stored['job_id']}/cancel")
    assert cancelled.json()["status"] == "CANCELLED"
    assert events_of(client, stored["job_id"])[-1][1]["status"] == "CANCELLED"
    assert client.post(f"/api/v1/jobs/{stored['job_id']}/pause").status_code == 400
    assert client.post("/api/v1/jobs/000000000000/resume").status_code == 404

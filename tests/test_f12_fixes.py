"""F12: fixes of the faults A12 found in issue 12's work (tests/test_attack_issue12.py holds the
attacks themselves); these pin the parts of each fix that the attack tests do not reach."""

from __future__ import annotations

import pytest

from studio.jobs.model import Job, JobStatus
from studio.webhooks import JOB_API_OPTION


def a_job(**fields) -> Job:
    return Job(id="j1", owner="alice", status=JobStatus.COMPLETED, provider="echo", model="echo-1", **fields)


# --- fault 5: whose webhook a job view shows -----------------------------------------------------


def test_a_callers_own_webhook_is_shown_to_it_and_the_operators_is_not():
    pytest.importorskip("fastapi")
    from studio.http.v1_jobs import job_status

    own = job_status(a_job(webhook_url="https://hooks.example.com/mine", webhook_error="HTTP 500",
                           webhook_delivered=2))
    assert (own["webhook_url"], own["webhook_error"], own["webhook_delivered"]) == (
        "https://hooks.example.com/mine", "HTTP 500", 2)
    operators = job_status(a_job(webhook_url="https://ops.example.com/T0-SECRET", webhook_error="host ops.example.com",
                                 options={JOB_API_OPTION: {"size": "1024x1024"}}))
    assert operators["webhook_url"] is None and operators["webhook_error"] is None
    assert "ops.example.com" not in repr(operators)


# --- faults 1 and 2: a local model path is shown by its name -------------------------------------


@pytest.mark.parametrize("model_id, named, shown", [
    ("/srv/models/style", {}, "style"), ("/srv/models/style/", {}, "style"), ("~/m/x.safetensors", {}, "x.safetensors"),
    ("C:\\models\\x.ckpt", {}, "x.ckpt"), ("stabilityai/sd-turbo", {}, "stabilityai/sd-turbo"),
    ("/srv/models/x.safetensors", {"pretty": "/srv/models/x.safetensors"}, "pretty"),
    ("pretty", {"pretty": "/srv/models/x.safetensors"}, "pretty")])
def test_the_one_rule_for_a_models_shown_name(model_id, named, shown):
    from studio.model_names import shown_model

    assert shown_model(model_id, named) == shown


@pytest.mark.parametrize("shape", ["missing", "folder without model_index.json", "not a model file"])
def test_an_unusable_model_path_is_named_by_its_name_and_logged_in_full(tmp_path, caplog, shape):
    from providers.local import ModelSource
    from studio.errors import NotConfigured

    secret = tmp_path / "operator-only"
    secret.mkdir()
    target = {"missing": secret / "gone.safetensors", "folder without model_index.json": secret,
              "not a model file": secret / "notes.txt"}[shape]
    if shape == "not a model file":
        target.write_text("hello")
    with caplog.at_level("WARNING", logger="image_studio.local"), pytest.raises(NotConfigured) as caught:
        ModelSource.parse(str(target))
    assert str(tmp_path) not in caught.value.message and target.name in caught.value.message
    assert str(target) in caplog.text  # the operator finds the path in the server log


# --- fault 6: the size made, when it is not the size asked ---------------------------------------


def test_a_size_table_gives_what_gemini_makes_and_another_size_made_is_a_warning_naming_it():
    from types import SimpleNamespace

    from studio.catalog import load_catalog
    from studio.saving import _note_other_size
    from studio.sizes import ratio_size, size_choices

    gemini = load_catalog().model("gemini", "gemini-3.1-flash-image")
    assert ratio_size(gemini, "16:9") == (1376, 768) and ratio_size(gemini, "3:4") == (896, 1200)
    assert ("16:9 (1376x768)", "1376x768") in size_choices(gemini)
    run = SimpleNamespace(prepared=SimpleNamespace(provider="stability", width=1360, height=768), warnings=[])
    _note_other_size(run, (1360, 768))
    assert run.warnings == []
    _note_other_size(run, (1344, 768))
    _note_other_size(run, (1344, 768))  # the second image of the same answer: said once
    assert run.warnings == ["stability made the image at 1344x768, not the 1360x768 asked"]


# --- small: CORS refusals, the model cache, /health's probes --------------------------------------


@pytest.fixture
def f12_studio(echo_studio):
    from studio.jobs import get_manager

    yield echo_studio
    get_manager(echo_studio).close()


def test_a_refused_cors_preflight_is_the_apis_json_error(f12_studio):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from studio.config import Settings
    from studio.http import create_app

    settings = Settings.load(f12_studio.home, api_cors_origins="https://app.example.com", api_rate_limit=0)
    client = TestClient(create_app(f12_studio, settings=settings))
    refused = client.options("/api/v1/boards", headers={"Origin": "https://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
    assert refused.json() == {"error": "cors_refused", "detail": "Disallowed CORS origin"}
    allowed = client.options("/api/v1/boards", headers={"Origin": "https://app.example.com",
                                                        "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 200


def test_only_the_local_operator_clears_the_model_cache_and_health_reuses_its_probes(f12_studio, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import studio.health
    from studio.config import Settings
    from studio.http import create_app
    from studio.tokens import tokens_for

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    client = TestClient(create_app(f12_studio, settings=Settings.load(f12_studio.home, api_rate_limit=0)))
    _, token = tokens_for(f12_studio).create("alice", "script")
    refused = client.delete("/cache", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403 and set(refused.json()) == {"error", "detail"}
    assert client.delete("/cache").status_code == 200  # the operator, without a token

    from studio.http import compat_local

    probes = []
    real = studio.health.check
    monkeypatch.setattr(studio.health, "check", lambda s: probes.append(1) or real(s))
    monkeypatch.setattr(compat_local, "HEALTH_PROBE_SECONDS", 3600.0)  # no clock in the count
    assert all(client.get("/health").status_code == 200 for _ in range(5))
    assert len(probes) == 1  # five calls within HEALTH_PROBE_SECONDS: one probe of the back ends
    monkeypatch.setattr(compat_local, "HEALTH_PROBE_SECONDS", 0.0)
    client.get("/health")
    assert len(probes) == 2  # once the report is older than that, the next call probes again


def test_a_batch_on_a_local_model_path_nobody_configured_runs_from_that_path(studio_home, tiny_model_dir):
    """The CLI's operator may name any model path (local_free_paths); the job shows its name, and its
    scenes still find the model (the name alone would not: it is configured nowhere)."""
    from studio.jobs import get_manager
    from studio.jobs.runner import build_request
    from studio.service import Studio

    studio = Studio(studio_home)
    try:
        preview = get_manager(studio).preview(["a lighthouse"], provider="local", model=str(tiny_model_dir))
        assert not preview.errors, preview.errors
        assert preview.job.model == tiny_model_dir.name
        assert build_request(preview.job, preview.items[0]).model == str(tiny_model_dir)
    finally:
        get_manager(studio).close()
        studio.close()

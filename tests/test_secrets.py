"""No API key ever leaves the process: not in the data directory, the audit log, image metadata,
exports, logs, CLI output, error messages, or the page a visitor sees — even when a hostile proxy
echoes the request headers back in its error body."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.errors import StudioError
from studio.exports import build_zip, records_to_csv
from studio.service import Studio
from studio.types import GenerationRequest
from tests.fakes.gemini_fake import KEY as GEMINI_KEY
from tests.fakes.gemini_fake import GeminiFake
from tests.fakes.http import FakeServer, Request, Response
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.replicate_fake import TOKEN as REPLICATE_TOKEN
from tests.fakes.replicate_fake import ReplicateFake
from tests.fakes.stability_fake import StabilityFake

ROOT = Path(__file__).resolve().parent.parent


def leaky_proxy(request: Request) -> Response:
    """Answers 400 with every request header quoted in each provider's error fields."""
    dump = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
    return Response(400, {"error": {"message": f"bad request, headers were {dump}", "type": "invalid_request_error",
                                    "code": "bad_request", "status": "INVALID_ARGUMENT"},
                          "title": "Bad request", "detail": f"headers were {dump}", "status": 400,
                          "id": "x", "name": "bad_request", "errors": [f"headers were {dump}"]})


@pytest.fixture
def keys(monkeypatch):
    openai, stability, replicate, gemini = OpenAIFake(), StabilityFake(), ReplicateFake(), GeminiFake()
    with FakeServer(openai) as o, FakeServer(stability) as s, FakeServer(replicate) as r, FakeServer(gemini) as g, \
            FakeServer(leaky_proxy) as leak:
        monkeypatch.setenv("OPENAI_API_KEY", openai.api_key)
        monkeypatch.setenv("STABILITY_API_KEY", stability.api_key)
        monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_TOKEN)
        monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
        monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")
        urls = {"openai": (o.url + "/v1", "OPENAI_BASE_URL"), "stability": (s.url, "STABILITY_BASE_URL"),
                "replicate": (r.url, "REPLICATE_BASE_URL"), "gemini": (g.url, "GOOGLE_GEMINI_BASE_URL")}
        for url, name in urls.values():
            monkeypatch.setenv(name, url)
        yield {"values": [openai.api_key, stability.api_key, REPLICATE_TOKEN, GEMINI_KEY], "urls": urls,
               "leak": leak.url}


def assert_clean(blob: bytes | str, secrets: list[str], where: str) -> None:
    data = blob.encode() if isinstance(blob, str) else blob
    for secret in secrets:
        assert secret.encode() not in data, f"a key leaked into {where}"


def test_keys_never_leak_anywhere(keys, studio_home, monkeypatch, caplog, capsys):
    caplog.set_level(logging.INFO)
    secrets = keys["values"]
    studio = Studio(studio_home)
    records = []
    for provider in ("openai", "stability", "replicate", "gemini"):
        result = studio.generate(GenerationRequest(prompt=f"a kite by {provider}", provider=provider))
        records += result.images
    # Every provider's error path, with a proxy that echoes the Authorization / x-goog-api-key headers.
    messages = []
    for provider, (_url, env_name) in keys["urls"].items():
        leak_url = keys["leak"] + ("/v1" if provider == "openai" else "")
        monkeypatch.setenv(env_name, leak_url)
        leaky = Studio(studio_home)
        with pytest.raises(StudioError) as caught:
            leaky.generate(GenerationRequest(prompt="x", provider=provider))
        messages.append(str(caught.value))
        leaky.close()
    assert len(messages) == 4
    assert_clean("\n".join(messages), secrets, "error messages")

    # Exports and everything on disk.
    assert_clean(build_zip(records, studio.storage.read), secrets, "the zip export")
    assert_clean(records_to_csv(records), secrets, "the CSV export")
    for record in records:
        assert_clean(json.dumps(studio.info(record.abs_path), default=str), secrets, "image metadata")
    for path in studio_home.rglob("*"):
        if path.is_file():
            assert_clean(path.read_bytes(), secrets, str(path))
    assert_clean(json.dumps(studio.storage.index.generations()), secrets, "the audit log")
    # Logs and console output.
    assert_clean("\n".join(r.getMessage() for r in caplog.records), secrets, "logs")
    captured = capsys.readouterr()
    assert_clean(captured.out + captured.err, secrets, "stdout/stderr")


def test_cli_output_and_errors_carry_no_key(keys, studio_home):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_HOME": str(studio_home)}
    ok = subprocess.run([sys.executable, "-m", "studio", "generate", "a kite", "--provider", "openai", "--json"],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    providers = subprocess.run([sys.executable, "-m", "studio", "providers", "--json"], capture_output=True,
                               text=True, env=env, cwd=ROOT, timeout=120)
    env["OPENAI_BASE_URL"] = keys["leak"] + "/v1"
    bad = subprocess.run([sys.executable, "-m", "studio", "generate", "a kite", "--provider", "openai"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode in (1, 2) and bad.stderr.startswith("error: ")
    for run in (ok, providers, bad):
        assert_clean(run.stdout + run.stderr, keys["values"], "CLI output")


def test_streamlit_pages_never_show_keys(keys, studio_home):
    from streamlit.testing.v1 import AppTest

    for page in ("app.py", "pages/1_Generate.py", "pages/4_History.py"):
        at = AppTest.from_file(str(ROOT / page), default_timeout=60)
        at.run()
        assert not at.exception
        assert_clean(repr(at._tree), keys["values"], f"the rendered page {page}")

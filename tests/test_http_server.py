"""A real server process: ``python -m studio serve --port <free>`` with the echo provider, driven over
the network with httpx, with ``gradio_client`` on the same port (``/ui/``), with the polling client
flow of the job routes, and with the README's curl examples of the /api/v1 routes run as written.

The server is one subprocess per module (starting Gradio takes seconds); each test makes its own
images and jobs, so none depends on another's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes import echo_provider
from tests.helpers import png, readme_bash

ROOT = Path(__file__).resolve().parent.parent
README_SECTION = "### /api/v1: generation and batch jobs"
README_BASE = "http://127.0.0.1:8000"  # what the README's examples call; the test's server is elsewhere
START_SECONDS = 180  # importing Gradio and building the UI on a loaded 2-core machine
POLL_SECONDS = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The ``serve`` subprocess, its base URL and its log (read on failure)."""

    def __init__(self, home: Path, log: Path):
        self.home, self.log_path = home, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC,
               "STUDIO_DEFAULT_PROVIDER": "echo", "STUDIO_VISITORS": "local", "PYTHONPATH": str(ROOT),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "GRADIO_TEMP_DIR": str(home.parent / "gradio-tmp")}
        self.log = log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "studio", "serve", "--port", str(self.port)],
                                        cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        """Until the API answers (its OpenAPI document), the process exits, or START_SECONDS pass.
        Each wait between looks is a wait on the process itself, so an early exit ends it at once."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                self.process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.output()}")
        raise AssertionError(f"the server did not answer in {START_SECONDS} s:\n{self.output()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("http-server")
    running = Server(folder / "studio-home", folder / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def job_finished(api: httpx.Client, job_id: str, *, timeout: float = 120) -> dict:
    """The polling client flow: GET the job's status until it is finished. The pause between looks
    is the client's own polling interval (what the seed document's clients do), with a deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: only a timed wait between looks
    while True:
        status = api.get(f"/api/v1/jobs/{job_id}")
        assert status.status_code == 200, status.text
        body = status.json()
        if body["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body['status']} after {timeout} s"
        pause.wait(POLL_SECONDS)


def test_generate_over_the_network_and_fetch_its_file(server, api):
    made = api.post("/api/v1/generate", json={"prompt": "a lighthouse at dusk", "n": 2, "seed": 7,
                                              "size": "64x72"})
    assert made.status_code == 200, made.text
    images = made.json()["images"]
    assert [(i["provider"], i["seed"], i["width"], i["height"]) for i in images] == [("echo", 7, 64, 72),
                                                                                   ("echo", 8, 64, 72)]
    assert str(server.home) not in made.text
    inline = api.post("/api/v1/generate?response=base64", json={"prompt": "a lighthouse at dusk", "n": 2, "seed": 7,
                                                                 "size": "64x72"}).json()
    assert inline["cached"] is True and inline["images"][0]["id"] == images[0]["id"]
    served = api.get(images[0]["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    import base64

    assert served.content == base64.b64decode(inline["images"][0]["base64"])
    assert api.get(images[0]["thumbnail_url"]).status_code == 200


def test_errors_over_the_network_are_json_and_write_nothing(server, api):
    refused = api.post("/api/v1/generate", json={"prompt": "   "})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    too_many = api.post("/api/v1/generate", json={"prompt": "x", "n": 99})
    assert too_many.status_code == 400 and "number of images" in too_many.json()["detail"]
    assert api.get("/api/v1/jobs/ffffffffffff").status_code == 404
    bad_token = api.get("/api/v1/jobs", headers={"Authorization": "Bearer ist_nope"})
    assert bad_token.status_code == 401 and bad_token.json()["error"] == "unauthorized"


def test_gradio_client_and_the_api_share_one_port_and_one_studio(server, api):
    from gradio_client import Client

    client = Client(f"{server.url}/ui/", verbose=False)
    files, made = client.predict("a gull over the quay", "echo", "", {"seed": 31, "size": "64x64"},
                                 api_name="/generate")
    image_id = made["images"][0]["id"]
    # The API finds the UI's image (one studio, one data folder) and serves the same file.
    served = api.get(f"/api/v1/images/{image_id}/file")
    assert served.status_code == 200
    assert served.content == Path(files[0]).read_bytes()
    # The same request from the API is the same request: same size and cache key, so a cache hit.
    again = api.post("/api/v1/generate", json={"prompt": "a gull over the quay", "provider": "echo", "seed": 31,
                                               "size": "64x64"}).json()
    assert again["cached"] is True and again["images"][0]["id"] == image_id
    providers = client.predict(api_name="/providers")
    listed = api.get("/api/v1/providers").json()["providers"]
    assert {p["name"] for p in providers["providers"]} == {p["name"] for p in listed}


def test_polling_client_flow_of_a_job(server, api):
    created = api.post("/api/v1/jobs", json={"script": "00:00:01 a boat\n00:00:04 a harbour\n00:00:09 a gull",
                                             "seed": 5, "size": "64x64"})
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    finished = job_finished(api, job_id)
    assert finished["status"] == "COMPLETED" and finished["progress"] == 100.0
    assert [item["timestamp"] for item in finished["items"]] == ["00:00:01", "00:00:04", "00:00:09"]
    result = api.get(f"/api/v1/jobs/{job_id}/result").json()
    images = [image for item in result["items"] for image in item["images"]]
    assert [image["seed"] for image in images] == [5, 6, 7]
    assert all(api.get(image["url"]).status_code == 200 for image in images)
    exported = api.get(f"/api/v1/jobs/{job_id}/export")
    assert exported.status_code == 200 and exported.content[:2] == b"PK"


def test_events_stream_over_the_network_ends_with_the_job(server, api):
    job_id = api.post("/api/v1/generate", json={"prompt": "a comet", "seed": 3, "size": "64x64",
                                                "job": True}).json()["job_id"]
    kinds = []
    with api.stream("GET", f"/api/v1/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line[len("event: "):])
    assert kinds[-1] == "end" and "status" in kinds
    assert api.get(f"/api/v1/jobs/{job_id}").json()["status"] == "COMPLETED"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_run_as_written(server, tmp_path):
    """Every curl example of the section, in order, in one shell; any failing request (HTTP 4xx/5xx)
    stops it. The files the examples name are made here."""
    (tmp_path / "photo.png").write_bytes(png(96, 64))
    (tmp_path / "mask.png").write_bytes(png(96, 64, (255, 255, 255)))
    (tmp_path / "scenes.srt").write_text("1\n00:00:01,000 --> 00:00:03,000\nWaves break on the rocks\n\n"
                                         "2\n00:00:04,000 --> 00:00:06,000\nA lighthouse at dusk\n\n"
                                         "3\n00:00:07,000 --> 00:00:09,000\nGulls over the harbour\n")
    # Each answer ends its line (-w), so the output reads as one answer per line.
    script = ("set -euo pipefail\ncurl() { command curl --silent --show-error --fail-with-body -w '\\n' \"$@\"; }\n"
              + readme_bash(README_SECTION).replace(README_BASE, server.url))
    # "python -m studio token create" in the examples makes a real token in the server's data folder.
    env = {**os.environ, "STUDIO_HOME": str(server.home), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert (tmp_path / "scenes.zip").read_bytes()[:2] == b"PK"
    assert '"status":"COMPLETED"' in done.stdout.replace(" ", "")
    json.loads(done.stdout.strip().splitlines()[-1])  # the last example answers JSON

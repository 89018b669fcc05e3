"""A local model that is not on the machine yet: the quick "can it be downloaded, and how big is it?"
answer, the download with progress, and the one clear line when it cannot be had.

huggingface_hub is pointed at a loopback fake of the Hub (tests/fakes/hub_fake.py, which follows the
Hub's published API) serving the tiny random model of tiny_model.py, so a real download runs
through the real ``hf_hub_download`` into a Hugging Face cache of the test's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from providers import local_models
from providers.base import READY, UNAVAILABLE
from providers.local import LocalProvider, clear_cache
from providers.local_models import describe_bytes, pipeline_files
from studio.catalog import Catalog
from studio.config import Settings
from studio.errors import Cancelled, NotConfigured
from studio.types import Mode, PreparedRequest, RunContext
from tests.fakes.http import FakeServer, Response
from tests.fakes.hub_fake import HubFake, folder_files
from tests.tiny_model import SINGLE_FILE_NAME

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
# What a real repo holds besides the diffusers layout, none of which the pipeline reads.
NOT_NEEDED = {"README.md": b"# tiny", "unet/diffusion_pytorch_model.fp16.safetensors": b"half" * 100,
              "unet/flax_model.msgpack": b"flax" * 100, "text_encoder/model.onnx": b"onnx" * 100}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache of the test's own, downloads allowed (conftest turns them off)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once when huggingface_hub was imported
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    local_models.forget_checks()
    yield cache
    local_models.forget_checks()


def point_hub_at(monkeypatch, url: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hub(hub_cache, tiny_model_dir, monkeypatch):
    """The fake Hub serving the tiny model as "tiny-org/tiny-sd" (plus files the pipeline never reads)."""
    repo = {**folder_files(tiny_model_dir), **NOT_NEEDED}
    fake = HubFake({"tiny-org/tiny-sd": repo})
    clear_cache()  # loaded models are kept per process: each test starts with the model not loaded
    with FakeServer(fake) as server:
        point_hub_at(monkeypatch, server.url)
        fake.server = server
        yield fake
    clear_cache()


def needed_files(tiny_model_dir: Path) -> dict[str, int]:
    return {name: len(data) for name, data in folder_files(tiny_model_dir).items() if name != SINGLE_FILE_NAME}


def provider_for(studio_home, model_id: str) -> LocalProvider:
    return LocalProvider(Settings.load(studio_home, local_model=model_id), Catalog())


def request(provider: LocalProvider) -> PreparedRequest:
    return PreparedRequest(provider="local", model=provider.default_model(), mode=Mode.TEXT_TO_IMAGE,
                           prompt="a lighthouse", negative_prompt="", width=256, height=256, n=1, seed=7, steps=2,
                           guidance=7.5, strength=None, init_image=None, mask=None, output_format="png",
                           quality=None, compression=95, user="local", extra={})


class CountingRefuser:
    """A loopback port that accepts each connection and closes it at once, counting the attempts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


# -- choosing the files ------------------------------------------------------------------------


def test_pipeline_files_are_the_diffusers_layout_without_other_formats(tiny_model_dir):
    siblings = list(needed_files(tiny_model_dir).items()) + [(SINGLE_FILE_NAME, 5_000_000_000)] + [
        (name, len(data)) for name, data in NOT_NEEDED.items()] + [("unet/diffusion_pytorch_model.bin", 10)]
    chosen = dict(pipeline_files(siblings))
    assert chosen == needed_files(tiny_model_dir)
    assert pipeline_files(siblings)[-1][0] == "model_index.json"  # fetched last: its presence means "complete"
    with pytest.raises(ValueError):
        pipeline_files([("unet/config.json", 3)])


def test_sharded_weights_keep_their_plain_shards_and_drop_the_half_precision_ones():
    plain = ["unet/config.json", "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
             "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
             "unet/diffusion_pytorch_model.safetensors.index.json", "model_index.json"]
    half = ["unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            "unet/diffusion_pytorch_model.safetensors.index.fp16.json"]
    chosen = [name for name, _ in pipeline_files([(name, 1) for name in plain + half])]
    assert sorted(chosen) == sorted(plain)
    # A repo that ships only half-precision weights still gets them.
    only_half = [(name, 1) for name in ("model_index.json", "vae/config.json",
                                        "vae/diffusion_pytorch_model.fp16.safetensors")]
    assert len(pipeline_files(only_half)) == 3


# -- status --------------------------------------------------------------------------------------


def test_status_says_downloads_on_first_use_with_the_size(hub, studio_home, tiny_model_dir):
    status = provider_for(studio_home, "tiny-org/tiny-sd").status()
    size = describe_bytes(sum(needed_files(tiny_model_dir).values()))
    assert status.state == READY
    assert status.reason == f"tiny-org/tiny-sd downloads on first use ({size})"
    assert "key" not in status.reason.lower()
    provider_for(studio_home, "tiny-org/tiny-sd").status()
    assert len([r for r in hub.server.requests if r.path.startswith("/api/models/")]) == 1  # remembered


def test_status_for_a_model_the_hub_does_not_have(hub, studio_home):
    status = provider_for(studio_home, "tiny-org/no-such-model").status()
    assert status.state == UNAVAILABLE and status.reason.startswith("not available offline")
    assert "has no model of that name" in status.reason


def test_status_offline_never_asks_the_hub(hub, studio_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = provider_for(studio_home, "tiny-org/tiny-sd").status()
    assert status.state == UNAVAILABLE and status.reason.startswith("not available offline")
    assert "HF_HUB_OFFLINE" in status.reason and "hf download tiny-org/tiny-sd" in status.reason
    assert hub.server.requests == []


def test_an_unreachable_hub_is_asked_once_not_retried(hub_cache, studio_home, monkeypatch):
    refuser = CountingRefuser()
    try:
        point_hub_at(monkeypatch, refuser.url)
        provider = provider_for(studio_home, "tiny-org/tiny-sd")
        status = provider.status()
        assert status.state == UNAVAILABLE and status.reason.startswith("not available offline")
        assert "cannot be reached" in status.reason and "key" not in status.reason.lower()
        with pytest.raises(NotConfigured) as caught:
            provider.generate(request(provider), RunContext())
        assert caught.value.message.startswith("not available offline")
        # No retry storm, and the request reuses the status's recent answer: one connection from the
        # studio (plus, at most, huggingface_hub's own once-per-process agent-registry lookup).
        assert refuser.connections <= 2
    finally:
        refuser.close()


def test_a_hub_error_answer_is_not_retried(hub_cache, studio_home, monkeypatch):
    with FakeServer(lambda request: Response(503, {"error": "overloaded"})) as server:
        point_hub_at(monkeypatch, server.url)
        provider = provider_for(studio_home, "tiny-org/tiny-sd")
        status = provider.status()
        assert status.state == UNAVAILABLE and status.reason.startswith("not available offline")
        with pytest.raises(NotConfigured):
            provider.generate(request(provider), RunContext())
        assert [r.path for r in server.requests if r.path.startswith("/api/models")] == ["/api/models/tiny-org/tiny-sd"]


# -- the download ------------------------------------------------------------------------------


def test_first_use_downloads_the_needed_files_with_progress_then_generates(hub, studio_home, tiny_model_dir):
    provider = provider_for(studio_home, "tiny-org/tiny-sd")
    events = []
    result = provider.generate(request(provider), RunContext(progress=events.append))
    assert len(result.images) == 1

    expected = needed_files(tiny_model_dir)
    assert sorted(hub.downloads) == sorted(f"tiny-org/tiny-sd/{name}" for name in expected)  # nothing else
    downloading = [e for e in events if e.stage == "downloading"]
    total = describe_bytes(sum(expected.values()))
    assert downloading[0].message == (f"downloading tiny-org/tiny-sd from Hugging Face "
                                      f"({total} in {len(expected)} files)")
    fractions = [e.fraction for e in downloading]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(set(fractions)) > len(expected) // 2  # a bar that moves, not one jump at the end
    assert downloading[-1].message == f"downloading tiny-org/tiny-sd: {total} of {total}"
    assert [e.stage for e in events].index("generating") > [e.stage for e in events].index("downloading")

    # Now it is on the machine: status says ready with no download, and nothing is fetched again.
    local_models.forget_checks()
    assert provider.status().state == READY and provider.status().reason == ""
    clear_cache()
    before = len(hub.downloads)
    provider.generate(request(provider), RunContext())
    assert len(hub.downloads) == before


def test_a_failed_download_is_one_clear_error_and_the_next_request_fetches_only_the_rest(hub, studio_home):
    hub.failing = {"unet/diffusion_pytorch_model.safetensors"}
    provider = provider_for(studio_home, "tiny-org/tiny-sd")
    with pytest.raises(NotConfigured) as caught:
        provider.generate(request(provider), RunContext())
    message = caught.value.message
    assert message.startswith("downloading the local model 'tiny-org/tiny-sd'") and "failed" in message
    assert "key" not in message.lower()
    # model_index.json comes last, so a half-done download is not mistaken for a model on disk.
    assert provider.status().reason.startswith("tiny-org/tiny-sd downloads on first use")
    fetched = list(hub.downloads)
    assert "tiny-org/tiny-sd/model_index.json" not in fetched

    hub.failing = set()
    provider.generate(request(provider), RunContext())
    refetched = hub.downloads[len(fetched):]
    assert "tiny-org/tiny-sd/unet/diffusion_pytorch_model.safetensors" in refetched
    assert not set(refetched) & set(fetched)  # finished files were kept


def test_cancel_stops_a_download_between_chunks_and_the_next_request_resumes(hub, studio_home):
    provider = provider_for(studio_home, "tiny-org/tiny-sd")
    ctx = RunContext()

    def cancel_half_way(event) -> None:
        if event.stage == "downloading" and event.fraction >= 0.5:
            ctx.cancel.set()

    ctx.progress = cancel_half_way
    with pytest.raises(Cancelled):
        provider.generate(request(provider), ctx)
    fetched = list(hub.downloads)
    assert len(fetched) > 1 and "tiny-org/tiny-sd/model_index.json" not in fetched  # stopped before the end
    assert provider.status().reason.startswith("tiny-org/tiny-sd downloads on first use")
    provider.generate(request(provider), RunContext())
    # Finished files are kept; only the file cut off by the cancel is fetched again.
    assert len(set(hub.downloads[len(fetched):]) & set(fetched)) == 1


def test_gradio_shows_the_download_on_its_progress_bar(hub, studio_home, tmp_path, tiny_model_dir):
    from gradio_ui.endpoints import Actions, Exporter
    from studio.service import Studio

    studio = Studio(settings=Settings.load(studio_home, local_model="tiny-org/tiny-sd", default_provider="local"))
    seen: list[tuple[float, str]] = []
    try:
        Actions(studio, Exporter(studio, tmp_path)).generate(
            "anon:first-run", "a harbour", "local", "", progress=lambda fraction, desc=None: seen.append((fraction, desc)),
            width=256, height=256, steps=2, seed=1)
    finally:
        studio.close()
    total = describe_bytes(sum(needed_files(tiny_model_dir).values()))
    downloading = [(f, d) for f, d in seen if d and d.startswith("downloading tiny-org/tiny-sd")]
    assert downloading[0][1].endswith(f"({total} in {len(needed_files(tiny_model_dir))} files)")
    assert downloading[-1] == (1.0, f"downloading tiny-org/tiny-sd: {total} of {total}")
    assert any(d == "generating: step 2/2" for _, d in seen)


# -- the CLI on a first run --------------------------------------------------------------------


def cli_env(tmp_path, endpoint: str, *, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE",)}
    env.update(STUDIO_HOME=str(tmp_path / "cli-home"), HF_HOME=str(tmp_path / "cli-hf"), HF_ENDPOINT=endpoint)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.mark.parametrize("offline", [False, True])
def test_cli_first_run_without_the_model_prints_one_error_line(tmp_path, offline):
    refuser = CountingRefuser()
    try:
        done = subprocess.run([sys.executable, "-m", "studio", "generate", "a cat", "--provider", "local"],
                              cwd=ROOT, env=cli_env(tmp_path, refuser.url, offline=offline), capture_output=True,
                              text=True, timeout=120)
    finally:
        refuser.close()
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1
    assert len(lines) == 1, done.stderr  # no library warnings, no retry notices
    assert lines[0].startswith("error: not available offline: the local model 'stabilityai/sd-turbo'")
    assert "hf download stabilityai/sd-turbo" in lines[0] and "API key" not in lines[0]
    assert refuser.connections <= (0 if offline else 2)  # ours, and huggingface_hub's agent-registry lookup
    assert (tmp_path / "cli-home" / "logs" / "libraries.log").is_file() or offline

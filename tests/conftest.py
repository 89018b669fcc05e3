"""Shared fixtures: every test gets its own empty data directory and no real API keys."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEY_NAMES = ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "STABILITY_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
             "OPENAI_BASE_URL", "REPLICATE_BASE_URL", "STABILITY_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
             "STUDIO_DAILY_BUDGET", "STUDIO_LOCAL_MODEL", "STUDIO_WEBHOOK_SECRET")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """A fresh STUDIO_HOME per test, offline Hugging Face, and no keys from the developer's shell."""
    for name in KEY_NAMES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "studio-home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    yield home


@pytest.fixture
def studio_home(isolated_env) -> Path:
    return isolated_env


@pytest.fixture
def echo_studio(studio_home):
    """A Studio on the test's data directory with the echo provider (tests/fakes/echo_provider.py)
    installed: provider "echo", model "echo-1", $0.01 an image, no latency."""
    from studio.service import Studio
    from tests.fakes import echo_provider

    echo_provider.install(studio_home / "catalog")
    studio = Studio(studio_home)
    yield studio
    studio.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion model saved in diffusers format (plus a single-file copy,
    ``tests.tiny_model.SINGLE_FILE_NAME``), built once per test session; nothing is downloaded."""
    from tests.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread. The tiny model gains nothing from more, and with pytest-xdist on two
    cores each worker's extra threads only spin against the other worker (runs get 2x slower)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

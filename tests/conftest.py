"""Shared fixtures: every test gets its own empty data directory and no real API keys."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# S3 through moto's server mode: s3_server, s3_storage_url and the parametrised storage_url.
from tests.s3_server import s3_server, s3_storage_url, storage_url  # noqa: E402,F401
# PostgreSQL: a throwaway server (pg_server, pg_database) and the parametrised database_url.
from tests.pg_server import database_url, pg_database, pg_server  # noqa: E402,F401
# Redis: a throwaway redis-server per test module (redis_server_url) and an emptied one per test (redis_url).
from tests.redis_server import redis_server_url, redis_url  # noqa: E402,F401

KEY_NAMES = ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "STABILITY_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
             "OPENAI_BASE_URL", "REPLICATE_BASE_URL", "STABILITY_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
             "STUDIO_DAILY_BUDGET", "STUDIO_LOCAL_MODEL", "STUDIO_WEBHOOK_SECRET")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """A fresh STUDIO_HOME per test, offline Hugging Face, and no keys from the developer's shell."""
    for name in KEY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STUDIO_DATABASE_URL", raising=False)  # the embedded database unless a test asks
    monkeypatch.delenv("STUDIO_BROKER_URL", raising=False)  # threads in the process unless a test asks
    monkeypatch.delenv("STUDIO_STORAGE_URL", raising=False)  # files in the data directory unless a test asks
    home = tmp_path / "studio-home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    yield home


def pytest_configure(config):
    config.addinivalue_line("markers", "background_errors: this test provokes errors in background threads on "
                                       "purpose (they are logged, and do not fail it)")


class _BackgroundErrors(logging.Handler):
    """Collects what background threads report: an exception no one caught, or an ERROR our own
    code logged (``studio.*``, ``image_studio.*`` loggers) from a thread other than the test's."""

    OUR_LOGGERS = ("studio", "image_studio")

    def __init__(self):
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name.split(".", 1)[0] in self.OUR_LOGGERS
        if ours and record.thread != threading.main_thread().ident:
            self.found.append(f"[{record.threadName}] {record.name}: {record.getMessage()}"
                              + (f" ({record.exc_info[0].__name__}: {record.exc_info[1]})" if record.exc_info else ""))

    def excepthook(self, args) -> None:
        name = args.thread.name if args.thread is not None else "?"
        self.found.append(f"[{name}] uncaught {args.exc_type.__name__}: {args.exc_value}")


@pytest.fixture(autouse=True)
def fail_on_background_errors(request, monkeypatch):
    """No background loop may swallow an exception: it logs it, and here a logged error or an
    uncaught exception in any other thread fails the test (unless marked ``background_errors``)."""
    collector = _BackgroundErrors()
    previous_hook = threading.excepthook

    def hook(args):
        collector.excepthook(args)
        previous_hook(args)

    monkeypatch.setattr(threading, "excepthook", hook)
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
    if collector.found and request.node.get_closest_marker("background_errors") is None:
        pytest.fail("errors in background threads:\n" + "\n".join(collector.found), pytrace=False)


@pytest.fixture(autouse=True)
def keep_main_module():
    """Streamlit's script runner (every AppTest) installs the page it runs as ``sys.modules["__main__"]``
    and never puts the real one back. A later test in the same process that starts a
    multiprocessing "spawn" child then has the child re-run that page as its main module (an
    ``AppTest.from_function`` page dies there with NameError '__args'). Put the real one back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


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


@pytest.fixture(scope="module")
def loopback_servers():
    """``loopback_servers("openai")``: the loopback server for that provider's fake, started on first
    use and kept for the test module (stopping one takes a moment); ``cloud_fake`` serves each test a
    fresh fake on it."""
    from contextlib import ExitStack

    from tests.fakes.http import FakeServer
    from tests.fakes.loopback import WIRING

    servers = {}
    with ExitStack() as stack:
        def server(name: str) -> FakeServer:
            if name not in servers:
                servers[name] = stack.enter_context(FakeServer(WIRING[name].make_fake()))
            return servers[name]

        yield server


@pytest.fixture
def cloud_fake(loopback_servers, monkeypatch):
    """``cloud_fake("openai")``: a fresh fake for that provider on the module's loopback server, with
    the provider's base URL and key set in the environment, so its real SDK talks to the fake."""
    from tests.fakes.loopback import WIRING

    def serve(name: str):
        wiring, server = WIRING[name], loopback_servers(name)
        fake = server.serve(wiring.make_fake())
        monkeypatch.setenv(wiring.base_url_setting, server.url + wiring.url_suffix)
        monkeypatch.setenv(wiring.key_setting, wiring.key_of(fake))
        for setting, value in wiring.settings.items():
            monkeypatch.setenv(setting, value)
        return fake

    return serve


@pytest.fixture
def cloud_provider(studio_home):
    """``cloud_provider(OpenAIProvider)``: that provider on the test's data directory with quick retries
    (``tests.fakes.loopback.FAST_RETRIES``), closed after the test."""
    from studio.catalog import Catalog
    from studio.config import Settings
    from tests.fakes.loopback import FAST_RETRIES

    made = []

    def make(provider_class):
        provider = provider_class(Settings.load(studio_home), Catalog())
        provider.retry_policy = FAST_RETRIES
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


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


@pytest.fixture
def app_home(studio_home, monkeypatch):
    """A studio for Streamlit AppTests: the echo provider as default, one local visitor, and
    Streamlit's process-wide caches cleared around the test."""
    import streamlit as st

    from tests.fakes import echo_provider

    echo_provider.install(studio_home / "catalog")
    monkeypatch.setenv("STUDIO_DEFAULT_PROVIDER", "echo")
    monkeypatch.setenv("STUDIO_VISITORS", "local")
    st.cache_resource.clear()
    yield studio_home
    st.cache_resource.clear()

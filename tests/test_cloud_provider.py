"""CloudProvider (providers/cloud.py): the key check and the client cache every cloud provider shares."""

from __future__ import annotations

import threading
import time

import pytest

from providers.cloud import CloudProvider
from providers.gemini import GeminiProvider
from providers.openai_images import OpenAIProvider
from providers.replicate_models import ReplicateProvider
from providers.stability import StabilityProvider
from studio.catalog import Catalog
from studio.config import Settings
from studio.errors import NotConfigured


class Closable:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


@pytest.fixture
def cloud(studio_home):
    provider = CloudProvider(Settings.load(studio_home), Catalog())
    yield provider
    provider.close()


@pytest.mark.parametrize("cls", [OpenAIProvider, StabilityProvider, ReplicateProvider, GeminiProvider])
def test_a_missing_key_says_which_names_to_set_and_where(cls, studio_home):
    provider = cls(Settings.load(studio_home), Catalog())
    with pytest.raises(NotConfigured) as caught:
        provider.require_key()
    names = " or ".join(cls.key_names)
    assert str(caught.value) == (f"{cls.label} needs an API key: set {names} in the environment or "
                                 f"Streamlit secrets")
    assert caught.value.provider == cls.name
    assert provider.status().reason == f"set {names} in the environment or Streamlit secrets"


def test_the_key_comes_from_the_environment(studio_home, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "g-key-1234")
    provider = GeminiProvider(Settings.load(studio_home), Catalog())
    assert provider.require_key() == "g-key-1234"


def test_one_client_per_cache_key(cloud):
    first = cloud.cached_client(("key-a", None), Closable)
    assert cloud.cached_client(("key-a", None), Closable) is first
    assert cloud.cached_client(("key-b", None), Closable) is not first


def test_threads_asking_at_once_share_one_client(cloud):
    made = []

    def make():
        time.sleep(0.02)  # a slow constructor widens the window a race would need
        made.append(Closable())
        return made[-1]

    got = []
    threads = [threading.Thread(target=lambda: got.append(cloud.cached_client("key", make))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and len(got) == 8 and all(client is made[0] for client in got)


def test_close_closes_the_clients_that_can_be_closed_and_forgets_all(cloud):
    closable, plain = cloud.cached_client("a", Closable), cloud.cached_client("b", object)
    cloud.close()
    assert closable.closed
    assert cloud.cached_client("a", Closable) is not closable  # a fresh client after close
    assert cloud.cached_client("b", object) is not plain

"""What every cloud provider does the same way, checked once for each against its loopback fake.

All four: a missing key stops the request before anything is sent, and importing the provider does
not import its SDK. OpenAI and Stability AI, whose fakes script failures with the same words
(``succeed``, ``rate_limit``, ``server_error``, ``slow``), also share how a wrong key, rate limits,
server errors, slow answers, cancellation and an unreachable server turn out. What differs per
provider (error wording, partial results, each API's own rules) is tested in test_provider_<name>.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from providers.base import MISSING_KEY
from providers.gemini import GeminiProvider
from providers.openai_images import OpenAIProvider
from providers.replicate_models import ReplicateProvider
from providers.stability import StabilityProvider
from studio.errors import Cancelled, NotConfigured, ProviderFailure, ProviderTimeout
from studio.types import RunContext
from tests.fakes.loopback import FAST_RETRIES, WIRING
from tests.fakes.prepared import prepared

CLASSES = {"openai": OpenAIProvider, "stability": StabilityProvider, "replicate": ReplicateProvider,
           "gemini": GeminiProvider}
EVERY_PROVIDER = list(CLASSES)
SCRIPTED_ALIKE = ["openai", "stability"]


@pytest.fixture
def fake(cloud_fake, name):
    return cloud_fake(name)


@pytest.fixture
def provider(cloud_provider, name):
    return cloud_provider(CLASSES[name])


# -- every provider --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EVERY_PROVIDER)
def test_missing_key_fails_before_any_request(name, provider, fake, monkeypatch):
    monkeypatch.delenv(WIRING[name].key_setting)
    assert provider.status().state == MISSING_KEY
    with pytest.raises(NotConfigured, match=" or ".join(provider.key_names)):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=10))
    assert fake.server.requests == []


@pytest.mark.parametrize("name", EVERY_PROVIDER)
def test_importing_the_provider_does_not_import_its_sdk(name):
    cls = CLASSES[name]
    code = (f"import sys, providers, {cls.__module__}; "
            f"assert {cls.sdk_module!r} not in sys.modules, '{cls.sdk_module} imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).parents[1]))


# -- OpenAI and Stability AI -----------------------------------------------------------------------

@pytest.mark.parametrize("name", SCRIPTED_ALIKE)
def test_wrong_key_is_not_configured_not_retried_and_not_shown(name, provider, fake, monkeypatch):
    secret = "sk-wrong-key-abcdefghijklmnop1234"
    monkeypatch.setenv(WIRING[name].key_setting, secret)
    with pytest.raises(NotConfigured, match="invalid API key") as caught:
        provider.generate(prepared(provider.model(None)), RunContext())
    message = str(caught.value)
    assert WIRING[name].key_setting in message  # says which setting to fix
    assert secret not in message and secret[-4:] not in message
    assert len(fake.server.requests) == 1  # auth errors are not retried


@pytest.mark.parametrize("name", SCRIPTED_ALIKE)
def test_rate_limit_is_retried_after_retry_after(name, provider, fake):
    fake.rate_limit(retry_after="0")
    result = provider.generate(prepared(provider.model(None)), RunContext())
    assert len(result.images) == 1
    assert len(fake.server.requests) == 2  # one 429, one success: our retry, not the SDK's


@pytest.mark.parametrize("name", SCRIPTED_ALIKE)
def test_server_errors_are_retried_then_reported(name, provider, fake):
    for _ in range(FAST_RETRIES.max_tries):
        fake.server_error()
    with pytest.raises(ProviderFailure, match="server error 500") as caught:
        provider.generate(prepared(provider.model(None)), RunContext())
    assert caught.value.retryable
    assert len(fake.server.requests) == FAST_RETRIES.max_tries


class HeldAnswers:
    """Wraps a fake: each request is held, unanswered, until ``release`` is set (at most 30 s), and
    ``on_arrival`` runs as a request comes in. ``answered`` tells whether an answer has gone out, so
    a test can see that the provider stopped waiting without measuring time."""

    def __init__(self, fake, on_arrival=lambda: None):
        self.fake, self.on_arrival = fake, on_arrival
        self.release, self.answered = threading.Event(), threading.Event()

    def __call__(self, request):
        self.on_arrival()
        self.release.wait(30)
        self.answered.set()
        return self.fake(request)


@pytest.mark.parametrize("name", SCRIPTED_ALIKE)
def test_timeout_is_reported_and_not_retried(name, provider, fake):
    held = HeldAnswers(fake)
    fake.server.handler = held
    try:
        with pytest.raises(ProviderTimeout, match="within 0.5 s"):
            provider.generate(prepared(provider.model(None)), RunContext(timeout=0.5))
        assert not held.answered.is_set()  # it gave up at the deadline, without the answer
    finally:
        held.release.set()
    assert len(fake.server.requests) == 1


@pytest.mark.parametrize("name", SCRIPTED_ALIKE)
def test_cancel_stops_waiting_for_a_slow_answer(name, provider, fake):
    ctx = RunContext()
    held = HeldAnswers(fake, on_arrival=ctx.cancel.set)  # the user cancels once the request is out
    fake.server.handler = held
    try:
        with pytest.raises(Cancelled):
            provider.generate(prepared(provider.model(None), n=2), ctx)
        assert not held.answered.is_set()  # it stopped waiting at the cancel, without the answer
    finally:
        held.release.set()
    assert len(fake.server.requests) == 1  # nothing more was asked for after the cancel


@pytest.mark.parametrize("name", SCRIPTED_ALIKE)
def test_unreachable_server_is_a_provider_failure(name, provider, monkeypatch):
    wiring = WIRING[name]
    monkeypatch.setenv(wiring.key_setting, "sk-test-unreachable-0000000000")
    # The discard port: nothing listens there.
    monkeypatch.setenv(wiring.base_url_setting, "http://127.0.0.1:9" + wiring.url_suffix)
    with pytest.raises(ProviderFailure, match=f"could not reach {provider.label}"):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=5))

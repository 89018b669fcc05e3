"""Retry-After is honoured: the wait the server asks for is kept whole, and when it would pass the
request's time budget the call fails at once with "rate limited, retry after N s", carrying the wait
so that a batch's provider gate waits it out (in full, too)."""

from __future__ import annotations

import time

import pytest

from providers.gemini import GeminiProvider
from providers.openai_images import OpenAIProvider
from providers.replicate_models import ReplicateProvider
from providers.retry import RetryAfterWindow, RetryPolicy, call_with_retry, parse_retry_after
from providers.stability import StabilityProvider
from studio.errors import RateLimited
from studio.jobs import runner
from studio.types import GenerationRequest, RunContext
from tests.fakes.gemini_fake import rate_limited as gemini_rate_limited
from tests.fakes.prepared import prepared
from tests.fakes.replicate_fake import problem


class Flaky:
    """A call that raises the given errors in order, then returns "done"; counts its calls."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def slow_down(seconds: float) -> RateLimited:
    return RateLimited("slow down", provider="fake", retry_after=seconds)


def test_the_wait_the_server_asks_for_is_kept_whole():
    waits = []
    call = Flaky(slow_down(60))
    # The default policy caps its own backoff at 20 s; the server's 60 s is not shortened.
    assert call_with_retry(call, policy=RetryPolicy(), sleep=waits.append) == "done"
    assert waits == [60] and call.calls == 2


def test_a_wait_past_the_time_budget_fails_at_once_with_the_wait():
    waits = []
    call = Flaky(slow_down(60))
    with pytest.raises(RateLimited) as caught:
        call_with_retry(call, policy=RetryPolicy(max_total_seconds=30), sleep=waits.append)
    assert str(caught.value).startswith("rate limited, retry after 60 s")
    assert caught.value.retry_after == 60 and caught.value.provider == "fake"
    assert waits == [] and call.calls == 1  # no early retry, no sleeping past the deadline


def test_our_own_backoff_stays_capped():
    waits = []
    call = Flaky(RateLimited("slow down"), RateLimited("slow down"))
    policy = RetryPolicy(base_delay=50, max_delay=2, max_total_seconds=30)
    assert call_with_retry(call, policy=policy, sleep=waits.append) == "done"
    assert len(waits) == 2 and all(wait <= 2 * 1.2 for wait in waits)


def test_a_retry_after_holds_every_call_that_shares_the_window():
    window = RetryAfterWindow("fake", clock=lambda: 100.0)  # time stands still between the two calls
    with pytest.raises(RateLimited):
        call_with_retry(Flaky(slow_down(60)), policy=RetryPolicy(max_total_seconds=30), window=window)
    other = Flaky()  # another user's request, or another worker of a batch
    with pytest.raises(RateLimited, match=r"rate limited, retry after 60 s") as caught:
        call_with_retry(other, policy=RetryPolicy(max_total_seconds=30), window=window)
    assert other.calls == 0  # nothing was sent while the server asked us to wait
    assert caught.value.provider == "fake" and caught.value.retry_after == 60


def test_a_call_waits_out_the_window_when_it_has_the_time():
    window = RetryAfterWindow("fake", clock=lambda: 100.0)
    window.hold_off(5)
    waits, call = [], Flaky()
    assert call_with_retry(call, policy=RetryPolicy(max_total_seconds=30), sleep=waits.append,
                           window=window) == "done"
    assert waits == [5] and call.calls == 1


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "60"}, 60.0),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "inf"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "-5"}, None),
    ({"retry-after-ms": "nan"}, None),
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_must_be_a_finite_wait(headers, seconds):
    assert parse_retry_after(headers) == seconds


# -- every cloud provider, against its fake -------------------------------------------------------

def answer_429(name: str, fake) -> None:
    """Make the fake answer the next request with a 429 asking for 60 s, in its API's own shape."""
    if name in ("openai", "stability"):
        fake.rate_limit(retry_after="60")
    elif name == "replicate":
        fake.queue_error("create", problem(429, "Too Many Requests", "Request was throttled.",
                                           {"retry-after": "60"}))
    else:
        fake.queue_error(gemini_rate_limited(retry_delay="60s"))


@pytest.mark.parametrize("name, cls", [("openai", OpenAIProvider), ("stability", StabilityProvider),
                                       ("replicate", ReplicateProvider), ("gemini", GeminiProvider)])
def test_a_provider_asked_to_wait_longer_than_it_may_fails_at_once(cloud_fake, cloud_provider, name, cls):
    fake = cloud_fake(name)
    provider = cloud_provider(cls)  # quick retries: 5 s in all, our backoff capped at 0.5 s
    answer_429(name, fake)
    with pytest.raises(RateLimited) as caught:
        provider.generate(prepared(provider.model(None)), RunContext(timeout=10))
    assert "rate limited, retry after 60 s" in str(caught.value)
    assert caught.value.retry_after == 60
    assert len(fake.server.requests) == 1  # not retried after half a second


@pytest.mark.parametrize("name, cls", [("openai", OpenAIProvider), ("stability", StabilityProvider),
                                       ("replicate", ReplicateProvider), ("gemini", GeminiProvider)])
def test_after_a_retry_after_the_next_request_waits_too(cloud_fake, cloud_provider, name, cls):
    fake = cloud_fake(name)
    provider = cloud_provider(cls)
    answer_429(name, fake)
    with pytest.raises(RateLimited):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=10))
    sent = len(fake.server.requests)
    with pytest.raises(RateLimited, match="rate limited, retry after 60 s"):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=10))
    assert len(fake.server.requests) == sent  # the second request never went out


# -- the batch's provider gate --------------------------------------------------------------------

class Clock:
    """Stands in for the ``time`` module inside the runner, so waits can be read without waiting."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(runner, "time", fake)
    return fake


def test_the_gate_waits_the_servers_retry_after_in_full(clock):
    gate = runner.ProviderGate(4)
    gate.rate_limited(600)  # longer than the gate's own backoff cap
    assert gate.backoff_until == 1600
    assert gate.limit == 2


def test_a_batch_gate_waits_a_retry_after_years_ahead_only_up_to_the_cap(clock):
    gate = runner.ProviderGate(4, max_hold=3600)
    gate.rate_limited(2_300_278_807)  # "Wed, 21 Oct 2099 07:28:00 GMT": the job would wait 73 years
    assert gate.backoff_until == 1000 + 3600


@pytest.mark.parametrize("retry_after", [None, float("inf"), float("nan"), -1])
def test_without_a_usable_retry_after_the_gate_backs_off_by_itself(clock, retry_after):
    gate = runner.ProviderGate(4)
    gate.rate_limited(retry_after)
    assert 1000 < gate.backoff_until <= 1000 + runner.MAX_BACKOFF


def test_a_replicate_poll_asked_to_wait_too_long_fails_at_once(cloud_fake, cloud_provider):
    """The SDK's own transport would sleep the 60 s on a GET, past the deadline and deaf to cancel."""
    fake = cloud_fake("replicate")
    provider = cloud_provider(ReplicateProvider)
    fake.queue_error("get", problem(429, "Too Many Requests", "Request was throttled.", {"retry-after": "60"}))
    with pytest.raises(RateLimited, match="rate limited, retry after 60 s"):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=10))
    polls = [r for r in fake.server.requests if r.method == "GET" and r.path.startswith("/v1/predictions/")]
    assert len(polls) == 1
    assert fake.cancelled == list(fake.predictions)  # the prediction we gave up on is not left running


def test_a_batch_waits_out_the_servers_retry_after(cloud_fake, studio_home):
    """The whole path: the provider fails fast with the wait, the scene goes back to the queue, and
    the batch's gate holds every worker for the full 600 s (not its own 60 s cap)."""
    from studio.jobs import get_manager
    from studio.service import Studio

    fake = cloud_fake("stability")
    fake.rate_limit(retry_after="600")
    studio = Studio(studio_home)
    studio.settings.request_timeout = 5
    manager = get_manager(studio)
    try:
        job = manager.submit("scene 1: a lighthouse at dusk\nscene 2: a harbour at dawn", provider="stability",
                             model="stable-image-core", concurrency=1)
        gate = manager.runner._gates["stability"]

        def held_for_the_servers_wait() -> bool:  # the server's 600 s, not the gate's own 60 s cap
            requeued = any("retry after 600 s" in (item.error or "") for item in manager.get(job.id).items)
            return requeued and gate.backoff_until - time.monotonic() > 500

        give_up = time.monotonic() + 30
        while not held_for_the_servers_wait():
            assert time.monotonic() < give_up, (manager.get(job.id).items, gate.backoff_until - time.monotonic())
            time.sleep(0.02)  # polling the store and the gate for a state, not waiting in its place
        assert len(fake.server.requests) == 1  # nothing sent since the 429
        assert manager.get(job.id).status.value == "RUNNING"  # waiting, not failed
        manager.cancel(job.id)
        manager.wait(job.id, timeout=30)
    finally:
        manager.close()
        studio.close()


# -- a Retry-After far in the future ------------------------------------------------------------------

def test_a_retry_after_past_the_cap_fails_its_request_but_holds_others_only_up_to_the_cap():
    now = [100.0]
    window = RetryAfterWindow("fake", clock=lambda: now[0], max_hold=3600)
    years = 2_300_278_807.0  # "Wed, 21 Oct 2099 07:28:00 GMT", as the tester's fake sent it
    with pytest.raises(RateLimited) as caught:
        call_with_retry(Flaky(slow_down(years)), policy=RetryPolicy(max_total_seconds=30), window=window)
    assert caught.value.retry_after == 3600  # the request that got it is told the capped figure
    assert str(caught.value).startswith("rate limited, retry after 3600 s")
    assert window.remaining() == 3600  # everyone else is held an hour at most
    other = Flaky()
    with pytest.raises(RateLimited) as held:
        call_with_retry(other, policy=RetryPolicy(max_total_seconds=30), window=window)
    assert held.value.kind == "rate_limit_held" and held.value.retry_after == 3600 and other.calls == 0
    now[0] += 3600  # the cap has passed: calls go out again
    assert call_with_retry(other, policy=RetryPolicy(max_total_seconds=30), window=window) == "done"


def test_an_http_date_decades_ahead_does_not_shut_the_provider_and_stats_tell_429s_from_our_refusals(
        studio_home, cloud_fake, monkeypatch):
    from studio.service import Studio

    monkeypatch.setenv("STUDIO_RATE_LIMIT_MAX_HOLD", "2")  # the shared hold's cap, in seconds
    fake = cloud_fake("openai")
    studio = Studio(home=studio_home)
    try:
        fake.rate_limit("Wed, 21 Oct 2099 07:28:00 GMT")
        with pytest.raises(RateLimited) as first:
            studio.generate(GenerationRequest(prompt="a fox", provider="openai", quality="low"), timeout=1)
        assert first.value.kind == "rate_limited" and first.value.retry_after == 2  # the cap, not 73 years
        assert "retry after 2 s" in str(first.value)
        sent = len(fake.server.requests)
        for _ in range(3):  # within the cap, a request that cannot wait it out is refused unsent
            with pytest.raises(RateLimited) as held:
                studio.generate(GenerationRequest(prompt="a fox", provider="openai", quality="low"), timeout=1)
            assert held.value.kind == "rate_limit_held" and held.value.retry_after <= 2
        assert len(fake.server.requests) == sent
        # A request with the time waits the rest of the capped hold and goes out: not blocked for years.
        result = studio.generate(GenerationRequest(prompt="a fox", provider="openai", quality="low"), timeout=30)
        assert len(result.images) == 1 and len(fake.server.requests) == sent + 1
        found = {alert.kind: alert.message for alert in studio.alerts()}
        # One provider 429, three of our own refusals: not "rate-limited 4 times; the quota is near".
        assert "quota" not in found
        assert found["held_back"].startswith("openai: 3 request(s) in the last hour were not sent")
        [figures] = studio.stats()
        assert (figures.failed, figures.held_back) == (1, 3)
    finally:
        studio.close()

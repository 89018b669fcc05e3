"""One Retry-After parser and one backoff rule (issue 12 §1: backoff was written three times and
Retry-After parsed twice): seconds, HTTP dates, garbage, negative and far-future waits, the cap,
and the capped figure in every message that names the wait."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from providers.retry import (DEFAULT_MAX_HOLD_SECONDS, Backoff, RetryAfterWindow, RetryPolicy, call_with_retry,
                             parse_retry_after, server_wait)
from studio.errors import RateLimited
from studio.webhooks import WebhookDispatcher, _Delivery

NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC, the "now" every date below is counted from
YEARS = "Wed, 21 Oct 2099 07:28:00 GMT"  # what a misconfigured proxy sent in the tester's report


def at(seconds_from_now: float) -> str:
    """An HTTP date ``seconds_from_now`` after NOW."""
    return formatdate(NOW + seconds_from_now, usegmt=True)


def retry_after(value: str, **options) -> float | None:
    return parse_retry_after({"retry-after": value}, now=lambda: NOW, **options)


@pytest.mark.parametrize("value, seconds", [
    ("60", 60.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5),  # delta-seconds (a fraction is still a wait)
    (at(90), 90.0), (at(-30), 0.0),  # an HTTP date ahead, and one already past: go now
    ("Wednesday, 01-Jan-26 00:02:00 GMT", 120.0),  # the obsolete RFC 850 form HTTP still accepts
])
def test_seconds_and_http_dates_are_read(value, seconds):
    assert retry_after(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "12s", "Wed, 99 Foo 2099", "-5", "-0.5", "inf", "nan", "1e999",
                                   "Thu, 32 Dec 2026 00:00:00 GMT"])
def test_garbage_and_negative_waits_are_no_wait(value):
    assert retry_after(value) is None


def test_a_date_decades_ahead_is_the_cap():
    assert retry_after(YEARS) == DEFAULT_MAX_HOLD_SECONDS
    assert retry_after(YEARS, cap=2) == 2
    assert retry_after("2300278807") == DEFAULT_MAX_HOLD_SECONDS  # the same as seconds
    assert parse_retry_after({"retry-after-ms": "9" * 15}) == DEFAULT_MAX_HOLD_SECONDS


def test_milliseconds_win_and_names_are_case_insensitive():
    assert parse_retry_after(httpx.Headers({"Retry-After-Ms": "1500", "Retry-After": "9"})) == 1.5
    assert parse_retry_after(httpx.Headers({"Retry-After": at(5)}), now=lambda: NOW) == 5
    assert parse_retry_after(None) is None and parse_retry_after({}) is None


@pytest.mark.parametrize("seconds, wait", [(None, None), (-1, None), (float("inf"), None), (float("nan"), None),
                                           (10, 10), (1e12, 3600)])
def test_a_wait_already_read_as_a_number_follows_the_same_rule(seconds, wait):
    assert server_wait(seconds, 3600) == wait


def test_a_capped_wait_is_the_figure_the_final_message_says():
    """The open item: a Retry-After in 2099 was capped for everyone else, yet the request that got it
    failed with 'retry after 2300278807 s'."""
    asked = retry_after(YEARS, cap=1e12)  # as a provider with a generous cap read it
    with pytest.raises(RateLimited) as caught:
        call_with_retry(_raising(RateLimited("slow down", provider="fake", retry_after=asked)),
                        policy=RetryPolicy(max_total_seconds=30), window=RetryAfterWindow("fake", max_hold=120))
    assert str(caught.value) == "rate limited, retry after 120 s (slow down)"
    assert caught.value.retry_after == 120
    # No window: the default cap. Out of tries: the error itself carries the capped wait.
    with pytest.raises(RateLimited) as caught:
        call_with_retry(_raising(RateLimited("slow down", retry_after=asked)), policy=RetryPolicy(max_tries=1))
    assert caught.value.retry_after == DEFAULT_MAX_HOLD_SECONDS


def _raising(error: Exception):
    def call():
        raise error
    return call


def test_backoff_doubles_up_to_its_cap_and_jitters_within_bounds():
    assert [Backoff(1.0, 5.0).delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Backoff(2.0, 60.0).delay(0) == 2.0  # "no failure yet" is the first delay, never a fraction of it
    jittered = [Backoff(10.0, 10.0, jitter=0.2).delay(3) for _ in range(200)]
    assert all(8.0 <= wait <= 12.0 for wait in jittered) and len(set(jittered)) > 1
    policy = RetryPolicy(base_delay=50, max_delay=2)
    assert all(policy.delay(4, None) <= 2 * 1.2 for _ in range(50))
    assert policy.delay(1, 30.0) == 30.0  # a server's wait is kept whole


class _Answer:
    def __init__(self, status: int, headers: dict[str, str]):
        self.status_code = status
        self.headers = httpx.Headers(headers)


class _StoppedClock:
    """The webhook module's clock with monotonic time standing still, so a delay reads exactly."""

    monotonic = staticmethod(lambda: 1000.0)
    time = staticmethod(time.time)


@pytest.mark.parametrize("header, waited", [
    ("4", 4.0),
    ("in 21 s", 20.0),  # an HTTP date 21 s ahead (whole seconds, so 20-21 s); was ignored: only digits were read
    (YEARS, 30.0),  # at most the dispatcher's max_delay
    ("later", 0.5),  # no usable wait: our backoff (base 0.5 s, first retry)
])
def test_a_webhook_receivers_retry_after_is_read_by_the_same_parser(monkeypatch, header, waited):
    dispatcher = WebhookDispatcher("whsec-test-0123456789", base_delay=0.5, max_delay=30)
    if header == "in 21 s":
        header = formatdate(time.time() + 21, usegmt=True)

    class Client:
        def post(self, url, content, headers):
            return _Answer(503, {"Retry-After": header})

    monkeypatch.setattr(dispatcher, "_client", lambda public_only: Client())
    monkeypatch.setattr("studio.webhooks.time", _StoppedClock)
    delivery = _Delivery(0.0, 0, "d1", "http://hooks.example/h", "job.completed", b"{}", attempts=1)
    assert dispatcher._attempt(delivery, b"{}") is None  # to be retried
    assert waited <= delivery.due - 1000.0 <= waited + 1.0
    dispatcher.close()


# -- every cloud provider reads its 429's wait with the same parser, capped by the operator's setting ------

def answer_429(name: str, fake, seconds: str) -> None:
    """Make the fake answer the next request with a 429 asking for ``seconds``, in its API's own shape."""
    from tests.fakes.gemini_fake import rate_limited
    from tests.fakes.replicate_fake import problem

    if name in ("openai", "stability"):
        fake.rate_limit(retry_after=seconds)
    elif name == "replicate":
        fake.queue_error("create", problem(429, "Too Many Requests", "Request was throttled.",
                                           {"retry-after": seconds}))
    else:
        fake.queue_error(rate_limited(retry_delay=f"{seconds}s"))


@pytest.mark.parametrize("name", ["openai", "stability", "replicate", "gemini"])
@pytest.mark.parametrize("asked, told", [("5000", 5000), ("2300278807", 7200)])
def test_a_providers_wait_is_capped_by_the_setting_not_a_constant(cloud_fake, cloud_provider, monkeypatch, name,
                                                                   asked, told):
    from providers.gemini import GeminiProvider
    from providers.openai_images import OpenAIProvider
    from providers.replicate_models import ReplicateProvider
    from providers.stability import StabilityProvider
    from studio.types import RunContext
    from tests.fakes.prepared import prepared

    classes = {"openai": OpenAIProvider, "stability": StabilityProvider, "replicate": ReplicateProvider,
               "gemini": GeminiProvider}
    monkeypatch.setenv("STUDIO_RATE_LIMIT_MAX_HOLD", "7200")  # above the 3600 s default
    fake = cloud_fake(name)
    provider = cloud_provider(classes[name])
    answer_429(name, fake, asked)
    with pytest.raises(RateLimited) as caught:
        provider.generate(prepared(provider.model(None)), RunContext(timeout=10))
    assert caught.value.retry_after == told
    assert f"rate limited, retry after {told} s" in str(caught.value)

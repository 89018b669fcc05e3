"""Each cloud provider's loopback fake, and how its SDK is pointed there (base URL and key settings).

The ``cloud_fake`` and ``cloud_provider`` fixtures in tests/conftest.py build on this.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from providers.retry import RetryPolicy
from tests.fakes.gemini_fake import GeminiFake
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.replicate_fake import ReplicateFake
from tests.fakes.stability_fake import StabilityFake

# Retries that take milliseconds, but still honour a Retry-After of a few tenths of a second.
FAST_RETRIES = RetryPolicy(max_tries=3, max_total_seconds=5, base_delay=0.01, max_delay=0.5)


class WaitLog(threading.Event):
    """A cancel flag (``RunContext(cancel=WaitLog())``) that records every wait on it, in seconds:
    retries wait on the cancel flag, so a test reads the waits instead of timing them."""

    def __init__(self):
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


@dataclass(frozen=True)
class Wiring:
    make_fake: Callable[[], object]
    key_of: Callable[[object], str]  # the key the fake accepts
    key_setting: str
    base_url_setting: str
    url_suffix: str = ""  # what the SDK expects after the host (OpenAI's includes /v1)
    settings: dict[str, str] = field(default_factory=dict)  # anything else the tests want set


WIRING = {
    "openai": Wiring(OpenAIFake, lambda fake: fake.api_key, "OPENAI_API_KEY", "OPENAI_BASE_URL", "/v1"),
    "stability": Wiring(StabilityFake, lambda fake: fake.api_key, "STABILITY_API_KEY", "STABILITY_BASE_URL"),
    "replicate": Wiring(ReplicateFake, lambda fake: fake.token, "REPLICATE_API_TOKEN", "REPLICATE_BASE_URL",
                        settings={"REPLICATE_POLL_INTERVAL": "0.01"}),  # poll the fake without waiting
    "gemini": Wiring(GeminiFake, lambda fake: fake.key, "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
}

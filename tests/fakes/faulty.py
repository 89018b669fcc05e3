"""Fault injection for a provider fake: a seeded share of requests answer 429 (with Retry-After),
500, hang past the client's timeout, or return truncated / invalid image bytes; the rest reach the
real fake. ``run_fault_batch`` drives a whole batch through it and returns the figures (shared by
tests/test_faults.py, which checks the invariants, and bench/bench_faults.py, which prints them)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.http import FakeServer, Request, Response
from tests.fakes.stability_fake import StabilityFake, error_body


@dataclass
class FaultPlan:
    rate_limited: float = 0.30
    server_error: float = 0.10
    hang: float = 0.05
    truncated: float = 0.03
    invalid: float = 0.02
    hang_seconds: float = 3.0
    seed: int = 7


@dataclass
class FaultyHandler:
    inner: StabilityFake
    plan: FaultPlan
    counts: Counter = field(default_factory=Counter)
    calls_per_scene: Counter = field(default_factory=Counter)  # every request, by prompt
    # HTTP 200 answers delivered in time (each one is a paid generation), by prompt. Hung answers
    # arrive after the client gave up and are counted under counts["hang"].
    billed_per_scene: Counter = field(default_factory=Counter)
    kinds_per_scene: dict = field(default_factory=dict)  # prompt -> the fault kinds its requests met

    def __post_init__(self):
        self._rng = random.Random(self.plan.seed)
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        kind, response = self._answer(request)
        try:
            scene = request.multipart()["prompt"][0].text
        except (ValueError, KeyError, IndexError):
            scene = "(no prompt)"
        with self._lock:
            self.calls_per_scene[scene] += 1
            self.kinds_per_scene.setdefault(scene, []).append(kind)
            if response.status == 200 and kind != "hang":
                self.billed_per_scene[scene] += 1
        return response

    def _answer(self, request: Request) -> tuple[str, Response]:
        with self._lock:
            roll = self._rng.random()
        plan = self.plan
        edges = [("rate_limited", plan.rate_limited), ("server_error", plan.server_error), ("hang", plan.hang),
                 ("truncated", plan.truncated), ("invalid", plan.invalid)]
        kind, edge = "ok", 0.0
        for name, share in edges:
            edge += share
            if roll < edge:
                kind = name
                break
        with self._lock:
            self.counts[kind] += 1
        if kind == "rate_limited":
            return kind, Response(429, error_body("rate_limit_exceeded", "slow down"), {"retry-after": "0"})
        if kind == "server_error":
            return kind, Response(500, error_body("internal_error", "An unexpected server error has occurred"))
        response = self.inner(request)
        if kind == "hang":
            response.delay = plan.hang_seconds
        elif kind == "truncated" and response.status == 200:
            response.body = response.body[: len(response.body) // 3]
        elif kind == "invalid" and response.status == 200:
            response.body = b"<html>upstream proxy error</html>"
        return kind, response


def run_fault_batch(home: Path, monkeypatch_env, *, scenes: int = 100, plan: FaultPlan | None = None,
                    timeout: float = 1.5, concurrency: int = 4) -> dict:
    """Run a ``scenes``-scene batch on the Stability provider behind a faulty fake; return figures."""
    from studio.jobs import get_manager
    from studio.service import Studio

    plan = plan or FaultPlan()
    inner = StabilityFake()
    handler = FaultyHandler(inner, plan)
    with FakeServer(handler) as server:
        monkeypatch_env("STABILITY_API_KEY", inner.api_key)
        monkeypatch_env("STABILITY_BASE_URL", server.url)
        studio = Studio(home)
        studio.settings.request_timeout = timeout
        manager = get_manager(studio)
        script = "\n".join(f"scene {i}: a lighthouse at dusk, view {i}" for i in range(scenes))
        started = time.monotonic()
        job = manager.submit(script, provider="stability", model="stable-image-core", concurrency=concurrency)
        job = manager.wait(job.id, timeout=600)
        elapsed = time.monotonic() - started
        result = manager.result(job.id)
        manager.close()
    return {"studio": studio, "job": job, "result": result, "elapsed": elapsed, "faults": dict(handler.counts),
            "requests": sum(handler.counts.values()), "accepted_calls": len(inner.calls),
            "calls_per_scene": dict(handler.calls_per_scene), "billed_per_scene": dict(handler.billed_per_scene),
            "kinds_per_scene": handler.kinds_per_scene}

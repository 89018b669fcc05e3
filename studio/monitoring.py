"""Monitoring from the audit log: per-model figures (requests, success rate, time, cost per image)
and alerts a person should see (three failures in a row, budget near or reached, a slow API, quota
running out). Everything is computed from the ``generations`` table; nothing else is kept.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from itertools import takewhile
from typing import Any, Callable

from studio.storage import INTERRUPTED  # a request whose process died in flight, booked as possibly billed

CONSECUTIVE_FAILURES = 3
SUCCEEDED = ("completed", "recovered")  # audit-log statuses of a request that made its images
SETUP_ERRORS = ("not_configured",)  # failures that setting the provider up (a key, the model) cures
BUDGET_WARNING_SHARE = 0.8
SLOW_SECONDS = 60.0  # median time per request above this is "slow"
RATE_LIMITS_PER_HOUR = 3  # this many rate limits in an hour suggests the quota is near
# Requests the studio held back itself, unsent, while a provider's Retry-After ran (RateLimitHeld):
# not the provider's answers, so neither its rate limits nor its failures.
HELD_BACK = "rate_limit_held"


@dataclass
class ModelStats:
    provider: str
    model: str
    requests: int
    completed: int
    failed: int
    cached: int
    success_rate: float  # completed / (completed + failed)
    median_seconds: float
    p95_seconds: float
    cost: float
    images: int
    cost_per_image: float
    interrupted: int = 0  # requests whose process died in flight, booked as possibly billed (not in failed)
    held_back: int = 0  # requests the studio refused unsent while the provider asked to wait (not in failed)
    # How far estimates were off, over the requests that ran and were billed (completed or
    # recovered): (actual - estimate) / estimate, so +0.5 means they cost half as much again as estimated.
    estimated_cost: float = 0.0  # the estimates of those requests, summed
    estimate_error: float = 0.0  # over all of them together
    worst_estimate_error: float = 0.0  # the one request furthest above its estimate (or closest below)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Alert:
    level: str  # warning | error
    kind: str  # consecutive_failures | budget | slow | quota | held_back
    provider: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _since(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).date().isoformat()


def _audit_rows(index, days: int, owner: str | None) -> list[dict[str, Any]]:
    """The audit log's rows of the last ``days`` days (of ``owner``, or everyone's): what every figure here reads."""
    return index.generations(day_from=_since(days), owner=owner, limit=100_000)


def model_stats(index, *, days: int = 7, owner: str | None = None) -> list[ModelStats]:
    rows = _audit_rows(index, days, owner)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["provider"], row["model"]), []).append(row)
    result = []
    for (provider, model), items in sorted(groups.items()):
        done = [r for r in items if r["status"] in SUCCEEDED]
        failed = [r for r in items if r["status"] == "failed" and r["error_kind"] != HELD_BACK]
        durations = sorted(r["duration"] for r in done) or [0.0]
        images = sum(r["n"] for r in done)
        cost = sum(r["cost"] for r in items)
        attempted = len(done) + len(failed)
        estimated = sum(r["estimated_cost"] for r in done)
        errors = [(r["cost"] - r["estimated_cost"]) / r["estimated_cost"] for r in done if r["estimated_cost"] > 0]
        result.append(ModelStats(
            provider=provider, model=model, requests=len(items), completed=len(done), failed=len(failed),
            cached=sum(1 for r in items if r["status"] == "cached"),
            success_rate=round(len(done) / attempted, 4) if attempted else 1.0,
            median_seconds=round(statistics.median(durations), 3),
            p95_seconds=round(durations[min(len(durations) - 1, int(0.95 * len(durations)))], 3),
            cost=round(cost, 6), images=images, cost_per_image=round(cost / images, 6) if images else 0.0,
            interrupted=sum(1 for r in items if r["status"] == INTERRUPTED),
            held_back=sum(1 for r in items if r["error_kind"] == HELD_BACK),
            estimated_cost=round(estimated, 6),
            estimate_error=round(sum(r["cost"] for r in done) / estimated - 1, 4) if estimated > 0 else 0.0,
            worst_estimate_error=round(max(errors), 4) if errors else 0.0))
    return result


@dataclass
class DaySpend:
    """One provider's requests on one UTC day: USD booked, requests, failures (as ``ModelStats``
    counts them) and the mean seconds of the requests that made images (None when none did)."""

    day: str
    provider: str
    cost: float
    requests: int
    failed: int
    mean_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        """``{day, provider, cost, requests, failed, mean_seconds}`` (cost in USD, mean in seconds)."""
        return asdict(self)


def spend_by_day(index, *, days: int = 30, owner: str | None = None) -> list[DaySpend]:
    """Spend and timing per day and provider over the rows ``model_stats`` reads for the same
    ``days`` and ``owner``, so a day's costs summed per provider equal its ``cost`` there. Oldest day
    first, providers by name."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in _audit_rows(index, days, owner):
        groups.setdefault((row["day"], row["provider"]), []).append(row)
    result = []
    for (day, provider), items in sorted(groups.items()):
        timed = [r["duration"] for r in items if r["status"] in SUCCEEDED]
        result.append(DaySpend(day, provider, round(sum(r["cost"] for r in items), 6), len(items),
                               sum(1 for r in items if r["status"] == "failed" and r["error_kind"] != HELD_BACK),
                               round(statistics.fmean(timed), 3) if timed else None))
    return result


def alerts(index, *, daily_budget: float | None, today_spent: float, now: datetime | None = None,
           ready: Callable[[str], bool] | None = None) -> list[Alert]:
    """What needs attention now, from the last day of the audit log. An alert describes the current
    state: failures and an exhausted quota count only since the provider's latest success, and
    failures caused by missing setup (``SETUP_ERRORS``: no key, model not available) stop counting
    once ``ready(provider)`` says that provider is set up now. Requests the studio held back unsent
    (``HELD_BACK``) are neither failures nor rate limits of the provider: they get their own alert."""
    now = now or datetime.now(timezone.utc)
    found: list[Alert] = []
    rows = index.generations(day_from=(now - timedelta(days=1)).date().isoformat(), limit=10_000)  # newest first
    by_provider: dict[str, list[dict[str, Any]]] = {}
    held_by_provider: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["error_kind"] == HELD_BACK:
            held_by_provider.setdefault(row["provider"], []).append(row)
        elif row["status"] != "cached":
            by_provider.setdefault(row["provider"], []).append(row)
    hour_ago = (now - timedelta(hours=1)).isoformat()
    for provider, held in sorted(held_by_provider.items()):
        recent_held = sum(1 for r in held if r["created_at"] >= hour_ago)
        if recent_held:
            found.append(Alert("warning", "held_back", provider,
                               f"{provider}: {recent_held} request(s) in the last hour were not sent: the provider "
                               f"had asked every request to wait (Retry-After)"))
    for provider, items in sorted(by_provider.items()):
        since_success = list(takewhile(lambda r: r["status"] not in SUCCEEDED, items))
        if since_success and all(r["error_kind"] in SETUP_ERRORS for r in since_success) and ready is not None \
                and ready(provider):
            since_success = []  # the cause is fixed: a key was set, the model was installed
        latest = since_success[:CONSECUTIVE_FAILURES]
        if len(latest) == CONSECUTIVE_FAILURES and all(r["status"] == "failed" for r in latest):
            found.append(Alert("error", "consecutive_failures", provider,
                               f"{provider}: the last {CONSECUTIVE_FAILURES} requests failed "
                               f"(latest: {latest[0]['error'] or latest[0]['error_kind']})"))
        if any(r["error_kind"] == "quota_exhausted" for r in since_success[:20]):
            found.append(Alert("error", "quota", provider,
                               f"{provider}: the account's quota or credit is exhausted; add credit at the provider"))
        limited = sum(1 for r in items if r["error_kind"] == "rate_limited" and r["created_at"] >= hour_ago)
        if limited >= RATE_LIMITS_PER_HOUR:
            found.append(Alert("warning", "quota", provider,
                               f"{provider}: rate-limited {limited} times in the last hour; the quota is near"))
        recent = [r["duration"] for r in items if r["status"] == "completed"][:10]
        if len(recent) >= 3 and statistics.median(recent) > SLOW_SECONDS:
            found.append(Alert("warning", "slow", provider,
                               f"{provider}: requests take {statistics.median(recent):.0f} s (median of the last "
                               f"{len(recent)}); the API is slow"))
    if daily_budget:
        share = today_spent / daily_budget
        if share >= 1.0:
            found.append(Alert("error", "budget", None, f"today's budget of ${daily_budget:.2f} is spent "
                                                        f"(${today_spent:.2f}); new paid requests are refused"))
        elif share >= BUDGET_WARNING_SHARE - 1e-9:
            found.append(Alert("warning", "budget", None, f"{share:.0%} of today's ${daily_budget:.2f} budget is spent"))
    return found

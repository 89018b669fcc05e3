"""A 100-scene batch while the provider misbehaves: 30% 429 (Retry-After), 10% 500, 5% hangs past the
timeout, some truncated or invalid image bytes. Every scene ends COMPLETED or FAILED with a clear
reason; no duplicate images or charges; the index and the files agree.

Truncated and invalid bytes arrive in an HTTP 200, a generation the provider has billed: such a
scene fails at once (``UnusableResult``) instead of being generated, and paid for, again."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fakes.faulty import run_fault_batch


@pytest.mark.slow
def test_hundred_scene_batch_under_injected_faults(studio_home, monkeypatch):
    figures = run_fault_batch(studio_home, monkeypatch.setenv, scenes=100)
    studio, result = figures["studio"], figures["result"]
    items = result["items"]
    assert len(items) == 100
    statuses = Counter(item["status"] for item in items)
    assert set(statuses) <= {"COMPLETED", "FAILED"}, statuses
    for item in items:
        if item["status"] == "COMPLETED":
            assert len(item["images"]) == 1
        else:
            assert item["error"], item  # a reason a person can read
    faults = figures["faults"]
    assert faults["rate_limited"] >= 20 and faults["server_error"] >= 5 and faults["hang"] >= 2
    assert faults["truncated"] + faults["invalid"] >= 3

    # A billed answer without a usable image ends its scene: no request for that scene follows it.
    kinds = figures["kinds_per_scene"]
    unusable = {scene for scene, met in kinds.items() if {"truncated", "invalid"} & set(met)}
    for scene in unusable:
        met = kinds[scene]
        assert met[-1] in ("truncated", "invalid"), (scene, met)
        assert met.count("truncated") + met.count("invalid") == 1, (scene, met)
    assert statuses["FAILED"] >= len(unusable)
    # Retries absorb nearly all the other (unbilled) faults: 429s, 500s and hangs.
    assert statuses["COMPLETED"] >= len(items) - len(unusable) - 5, statuses

    # No duplicates: one stored image per completed scene, and every stored image belongs to one.
    page = studio.history(limit=1000)
    completed_ids = {image["id"] for item in items for image in item["images"]}
    assert page.total == statuses["COMPLETED"] == len(completed_ids)
    assert {record.id for record in page.items} == completed_ids
    # No duplicate charges: what the audit log booked for completed scenes is exactly what the stored
    # images cost; a billed but unusable answer may be booked too (it was paid), once per scene.
    rows = studio.storage.index.generations()
    booked_completed = sum(row["cost"] for row in rows if row["status"] == "completed")
    assert booked_completed == pytest.approx(sum(record.cost for record in page.items))
    assert booked_completed == pytest.approx(0.03 * statuses["COMPLETED"])  # stable-image-core: 3 credits
    assert sum(row["cost"] for row in rows) <= 0.03 * (statuses["COMPLETED"] + len(unusable)) + 1e-9
    # Index and files agree; nothing half-written is left.
    assert studio.repair().clean
    assert studio.storage.index.pending() == []

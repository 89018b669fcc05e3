"""A 100-scene batch while the provider misbehaves: 30% 429 (Retry-After), 10% 500, 5% hangs past the
timeout, some truncated or invalid image bytes. Every scene ends COMPLETED or FAILED with a clear
reason; no duplicate images or charges; the index and the files agree."""

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
    assert statuses["COMPLETED"] >= 90, statuses  # retries absorb nearly all faults
    for item in items:
        if item["status"] == "COMPLETED":
            assert len(item["images"]) == 1
        else:
            assert item["error"], item  # a reason a person can read
    faults = figures["faults"]
    assert faults["rate_limited"] >= 20 and faults["server_error"] >= 5 and faults["hang"] >= 2

    # No duplicates: one stored image per completed scene, and every stored image belongs to one.
    page = studio.history(limit=1000)
    completed_ids = {image["id"] for item in items for image in item["images"]}
    assert page.total == statuses["COMPLETED"] == len(completed_ids)
    assert {record.id for record in page.items} == completed_ids
    # No duplicate charges: what the audit log booked is exactly what the stored images cost.
    booked = sum(row["cost"] for row in studio.storage.index.generations())
    assert booked == pytest.approx(sum(record.cost for record in page.items))
    assert booked == pytest.approx(0.03 * statuses["COMPLETED"])  # stable-image-core: 3 credits an image
    # Index and files agree; nothing half-written is left.
    assert studio.repair().clean
    assert studio.storage.index.pending() == []

"""Settling the items a dead runner left half done, so nothing is paid twice and nothing is lost.

An item in flight when its process died is in one of three places, told apart by the request id
its attempt passed to ``Studio.generate`` (every image carries it, in the index and inside the
file's own metadata):

1. its images are in the index: the generation finished; only the item's own row was not
   updated. The item completes with those images.
2. its image files exist but have no rows: the process died between writing the files and
   committing their rows. The files are adopted (re-indexed from their embedded metadata, with the
   audit row that records their cost) and the item completes with them.
3. nothing was saved: the item runs again (its budget reservation is released first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.imaging import open_checked, thumbnail_bytes
from studio.jobs.model import ACTIVE, Job
from studio.jobs.store import JobStore
from studio.metadata import read_metadata
from studio.storage import IMAGES_PREFIX, record_from_metadata
from studio.storage.files import TMP_MARKER
from studio.types import ImageRecord

RECOVERED_NOTE = "recovered after an interruption: its images were saved before the process stopped"


@dataclass
class RecoveryReport:
    completed: list[int] = field(default_factory=list)  # items whose saved images were found
    adopted_files: list[str] = field(default_factory=list)  # orphan files re-indexed for them
    requeued: list[int] = field(default_factory=list)  # items that will run again


def reconcile(studio, store: JobStore, job: Job) -> RecoveryReport:
    report = RecoveryReport()
    orphans: dict[str, list[str]] | None = None
    for item in store.items(job.id, ACTIVE):  # active items always carry their attempt's request id
        records = studio.storage.index.images_for_request(item.request_id)
        if not records:
            if orphans is None:
                orphans = _orphans_by_request(studio)
            keys = orphans.get(item.request_id, [])
            if keys and not _generation_logged(studio, item.request_id):
                records = _adopt(studio, job, item.request_id, keys)
                report.adopted_files += keys
        if records:
            store.complete_item(job.id, item.index, item.request_id, [r.id for r in records],
                                sum(r.cost for r in records), RECOVERED_NOTE)
            report.completed.append(item.index)
        else:
            studio.storage.index.release(item.request_id)  # its reservation would hold budget for an hour
            store.requeue_item(job.id, item.index, item.request_id, "interrupted; running it again")
            report.requeued.append(item.index)
    return report


def _orphans_by_request(studio) -> dict[str, list[str]]:
    """Image files that have no index row, grouped by the request id embedded in them."""
    indexed = studio.storage.index.all_paths()
    found: dict[str, list[str]] = {}
    for key in sorted(studio.storage.files.keys(IMAGES_PREFIX)):
        if key in indexed or TMP_MARKER in key:
            continue
        try:
            request_id = (read_metadata(studio.storage.files.get(key)).get("studio") or {}).get("request_id")
        except Exception:  # not ours, or unreadable: `repair` quarantines those
            continue
        if request_id:
            found.setdefault(request_id, []).append(key)
    return found


def _generation_logged(studio, request_id: str) -> bool:
    """A request with an audit row ended (failed midway, say): its stray files are for `repair`."""
    row = studio.storage.index.connection().execute("SELECT 1 FROM generations WHERE id = ?",
                                                    (request_id,)).fetchone()
    return row is not None


def _adopt(studio, job: Job, request_id: str, keys: list[str]) -> list[ImageRecord]:
    records = []
    for key in keys:
        data = studio.storage.files.get(key)
        meta = read_metadata(data)
        record = record_from_metadata(meta.get("studio") or {}, key, data, meta)
        if record is None:
            continue
        studio.storage.files.put(record.thumb_path, thumbnail_bytes(open_checked(data, "recovered image")))
        records.append(record)
    records.sort(key=lambda r: (r.seed is None, r.seed or 0, r.id))
    if records:
        first = records[0]
        generation = {"id": request_id, "owner": first.owner, "created_at": first.created_at,
                      "day": first.created_at[:10], "provider": first.provider, "model": first.model,
                      "mode": first.mode, "prompt": first.user_prompt or first.prompt, "n": len(records),
                      "status": "completed", "error_kind": None, "error": "recovered after an interruption",
                      "cost": sum(r.cost for r in records), "estimated_cost": sum(r.cost for r in records),
                      "duration": first.generation_time, "cached": False}
        studio.storage.index.insert_images(records, generation)
        studio.storage.index.release(request_id)
    return records

"""Settling the items a dead runner left half done, so nothing is paid twice and nothing is lost.

An item in flight when its process died is found by the request id its attempt passed to
``Studio.generate``; every image of that request carries the id, in the index and inside the file.

1. First the storage finishes what the dead process was writing (``recover_interrupted``: files
   it wrote but never indexed get their rows and the audit row with their cost; half-written
   files are dropped). This also runs when a ``Studio`` starts, but the process resuming a job may
   have started before the other one died.
2. An item whose request has images in the index completes with them: the generation finished
   and was paid; only the item's own row was not updated.
3. An item with nothing saved runs again (or, when the job is being cancelled, ``rerun=False``, it
   is cancelled); what its dead attempt may have cost was booked in step 1, as interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from studio.jobs.model import ACTIVE, ItemStatus, Job, JobItem
from studio.jobs.store import JobStore

RECOVERED_NOTE = "recovered after an interruption: its images were saved before the process stopped"
CANCELLED_NOTE = "cancelled while its process was gone; nothing of it had been saved"


@dataclass
class RecoveryReport:
    completed: list[int] = field(default_factory=list)  # items whose saved images were found
    requeued: list[int] = field(default_factory=list)  # items that will run again
    adopted: list[str] = field(default_factory=list)  # image ids the storage re-indexed


def reconcile(studio, store: JobStore, job: Job, *, rerun: bool = True,
              live: Iterable[str] = ()) -> RecoveryReport:
    """Settle the job's active items; call only when no live runner holds the job, or name in
    ``live`` the request ids still running somewhere (a Celery worker's, ``Runner.live_requests``):
    those are left to their workers."""
    skip = set(live)
    return settle_items(studio, store, job, [item for item in store.items(job.id, ACTIVE)
                                             if item.request_id not in skip], rerun=rerun)


def settle_items(studio, store: JobStore, job: Job, interrupted: list[JobItem], *,
                 rerun: bool = True) -> RecoveryReport:
    """Settle ``interrupted``: active items of ``job`` whose attempt's process is known to be gone
    (steps 1-3 above). Each change names the item's request id, so an item that moved on meanwhile
    (another process settled it first) is left as it is and not reported."""
    report = RecoveryReport()
    if not interrupted:
        return report
    report.adopted = studio.storage.recover_interrupted()
    for item in interrupted:
        records = studio.storage.index.images_for_request(item.request_id)
        # A request the dead process had in flight was booked as interrupted (possibly billed) by
        # recover_interrupted; only a hold made by older code, which says nothing of it, is dropped.
        studio.storage.index.release(item.request_id, untracked_only=True)
        if records:
            if store.complete_item(job.id, item.index, item.request_id, [r.id for r in records],
                                   sum(r.cost for r in records), [RECOVERED_NOTE]):
                report.completed.append(item.index)
        elif rerun:
            if store.requeue_item(job.id, item.index, item.request_id, "interrupted; running it again"):
                report.requeued.append(item.index)
        else:
            store.fail_item(job.id, item.index, item.request_id, ItemStatus.CANCELLED, "cancelled", CANCELLED_NOTE)
    return report

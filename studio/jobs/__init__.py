"""Batch jobs: a script becomes a durable job of items, one per scene, run concurrently.

    from studio.jobs import get_manager
    jobs = get_manager(studio)
    preview = jobs.preview(open("script.srt").read(), name="script.srt", provider="openai", style="cinematic")
    job = jobs.submit(preview)            # or jobs.submit(script_text, provider=..., ...)
    jobs.wait(job.id); jobs.result(job.id); jobs.export_zip(job.id)

Pieces: ``model`` (statuses, Job, JobItem), ``store`` (JobStore; DatabaseJobStore on the index's
database, SQLiteJobStore its old name), ``runner`` (Runner + worker threads with per-provider limits),
``recovery`` (settling items a crash interrupted), ``export`` (zip and enriched script), ``manager``
(the service the front ends use).
"""

from __future__ import annotations

from typing import Any

from studio.jobs.manager import BatchOptions, BatchPreview, JobManager, get_manager
from studio.jobs.model import ItemStatus, Job, JobItem, JobStatus
from studio.jobs.runner import ProviderGate, Runner, ThreadRunner, execute_item
from studio.jobs.store import DatabaseJobStore, JobStore, SQLiteJobStore  # SQLiteJobStore: the old name


def preview(studio, script: Any, **options: Any) -> BatchPreview:
    """What a batch would do (scenes, expanded prompts, provider/model, cost, budget check)."""
    return get_manager(studio).preview(script, **options)


__all__ = ["BatchOptions", "BatchPreview", "JobManager", "get_manager", "preview", "ItemStatus", "Job", "JobItem",
           "JobStatus", "JobStore", "DatabaseJobStore", "SQLiteJobStore", "Runner", "ThreadRunner", "ProviderGate",
           "execute_item"]

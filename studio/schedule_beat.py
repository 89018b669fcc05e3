"""Scheduled batches when scaled: Celery beat sends one task a minute, a worker fires what is due.

    celery -A studio.worker beat -s /tmp/celerybeat-schedule     # one beat for the whole deployment

``studio.jobs.celery_runner.make_app`` puts ``BEAT_SCHEDULE`` in the app's configuration and this
module in its ``imports`` (every worker loads it, registering ``run_due_schedules``). Beat only
sends ``BEAT_TASK`` every ``BEAT_SECONDS``; the worker that receives it runs ``Schedules.run_due``
(the same atomic claim as the in-process scheduler: a second beat, or a web server's scheduler
thread, never fires a due time twice), and the jobs it submits go to the workers' queues like any
batch. A tick that no worker took within its period expires instead of piling up.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

BEAT_TASK = "studio.schedules.run_due"
BEAT_SECONDS = 60.0
BEAT_SCHEDULE = {"studio-schedules": {"task": BEAT_TASK, "schedule": BEAT_SECONDS,
                                      "options": {"expires": BEAT_SECONDS}}}


@shared_task(name=BEAT_TASK)
def run_due_schedules() -> list[dict[str, Any]]:
    """Fire the due schedules with this worker's studio; returns their firings (``Firing.to_dict``)."""
    from studio.schedules import Schedules
    from studio.worker import worker_studio

    return [firing.to_dict() for firing in Schedules(worker_studio()).run_due()]


__all__ = ["BEAT_SCHEDULE", "BEAT_SECONDS", "BEAT_TASK", "run_due_schedules"]

"""What every web server starts beside its pages (Streamlit's ``ui.setup``, ``gradio_app.py`` and
``studio serve``), in one place so the three cannot drift apart: the batch jobs a previous process
left unfinished are resumed, and the scheduler thread fires scheduled batches here unless Celery
beat does (``studio.scheduler.wants_thread``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.service import Studio


def start_background_work(studio: "Studio", *, announce: bool = False) -> list[str]:
    """Resume the studio's interrupted batch jobs (``JobManager.recover``: finished scenes are not
    paid twice) and start its scheduler thread (``start_scheduler``: once per studio). With
    ``announce``, print a line naming the resumed jobs (the command-line servers). Returns the
    resumed job ids. Raises what the job store raises when the database cannot be read."""
    from studio.jobs import get_manager
    from studio.scheduler import start_scheduler

    resumed = get_manager(studio).recover()
    if resumed and announce:
        print(f"resumed {len(resumed)} interrupted batch job(s): {', '.join(resumed)}")
    start_scheduler(studio)
    return resumed

"""``studio.background.start_background_work``: the one start-up the three web servers share
(Streamlit's ui.setup, gradio_app.py, ``studio serve``): an interrupted batch job is resumed and
announced, and the scheduler thread starts once per studio."""

from __future__ import annotations

from studio.background import start_background_work
from studio.jobs import JobStatus, get_manager


def test_resumes_an_interrupted_job_and_starts_the_scheduler_once(echo_studio, capsys):
    manager = get_manager(echo_studio)
    job = manager.create("a lighthouse\nwaves on the rocks", provider="echo")
    manager.store.update_job(job.id, status=JobStatus.RUNNING, runner="elsewhere:1:dead")  # its process died
    echo_studio.settings.scheduler = "thread"
    try:
        assert start_background_work(echo_studio, announce=True) == [job.id]
        assert capsys.readouterr().out.strip() == f"resumed 1 interrupted batch job(s): {job.id}"
        scheduler = echo_studio.__dict__["_scheduler"]
        assert manager.wait(job.id, timeout=30).status is JobStatus.COMPLETED
        assert start_background_work(echo_studio, announce=True) == []  # nothing left to resume
        assert capsys.readouterr().out == ""
        assert echo_studio.__dict__["_scheduler"] is scheduler  # one thread per studio
    finally:
        echo_studio.__dict__["_scheduler"].stop()
        manager.close()

"""The Streamlit Batch page under AppTest: preview with cost, run, live grid, results, re-attach after
a refresh, other people's jobs hidden, malformed scripts stopped, cancel, and interrupted jobs
resumed when the studio (re)starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from studio.jobs import JobManager, JobStatus
from studio.service import Studio
from tests.fakes import batch_echo
from tests.fakes.echo_provider import EchoProvider
from tests.helpers import as_read

ROOT = Path(__file__).resolve().parent.parent
BATCH = str(ROOT / "pages" / "5_Batch.py")


def open_page(**params) -> AppTest:
    at = AppTest.from_file(BATCH, default_timeout=30)
    at.query_params.update(params)
    return at.run()


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def markdown(at: AppTest) -> str:
    return "\n".join(as_read(m.value) for m in at.markdown)


def until(at: AppTest, condition, timeout: float = 15.0) -> AppTest:
    deadline = time.monotonic() + timeout
    while not condition(at):
        assert time.monotonic() < deadline, "the page never got there"
        time.sleep(0.1)
        at.run()
    return at


def until_true(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.05)


def no_crash(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_paste_preview_run_watch_and_download(app_home):
    EchoProvider.latency = 0.1
    at = open_page()
    no_crash(at)
    at.text_area(key="batch_script").set_value("00:01 a lighthouse\n00:02 waves --seed 3\n00:03 a gull").run()
    no_crash(at)
    table = at.dataframe[0].value
    assert list(table["text"]) == ["a lighthouse", "waves", "a gull"] and table["seed"][1] == 3
    assert [m.value for m in at.metric][:2] == ["3", "$0.0300"]
    next(b for b in at.button if b.label == "Run 3 scene(s)").click().run()
    no_crash(at)
    job_id = at.query_params["job"]
    job_id = job_id[0] if isinstance(job_id, list) else job_id
    until(at, lambda a: markdown(a).count("completed") >= 3)
    assert "**#1** 00:01 · ✅ completed" in markdown(at)
    downloads = [d.proto.label for d in at.get("download_button")]
    assert "Download zip (images, manifest, script.json)" in downloads and "Push to board" in labels(at)

    refreshed = open_page(job=job_id)  # a new browser session with the same URL
    no_crash(refreshed)
    assert f"Job {job_id}" in [h.value for h in refreshed.subheader][0]
    assert markdown(refreshed).count("✅ completed") == 3


def test_someone_elses_job_id_shows_nothing(app_home):
    studio = Studio(app_home)
    manager = JobManager(studio)
    foreign = manager.create("a secret scene", provider="echo", user="someone-else")
    manager.close()
    studio.close()
    at = open_page(job=foreign.id)
    no_crash(at)
    assert not at.subheader or all(foreign.id not in h.value for h in at.subheader)
    assert "a secret scene" not in markdown(at)


def test_malformed_script_names_the_line_and_cannot_run(app_home):
    at = open_page()
    at.text_area(key="batch_script").set_value("fine scene\nbroken --seed many\n").run()
    no_crash(at)
    assert any("line 2: --seed must be a whole number" in as_read(e.value) for e in at.error)
    assert not any(label.startswith("Run") for label in labels(at))


def test_cancel_from_the_page(app_home):
    EchoProvider.latency = 5.0
    at = open_page()
    at.text_area(key="batch_script").set_value("one\ntwo\nthree").run()
    next(b for b in at.button if b.label.startswith("Run")).click().run()
    until(at, lambda a: "Cancel" in labels(a))
    next(b for b in at.button if b.label == "Cancel").click().run()
    until(at, lambda a: "**cancelled**" in " ".join(p.proto.text for p in a.get("progress")))
    no_crash(at)


def test_jobs_left_running_by_a_dead_process_finish_when_the_page_loads(app_home, tmp_path):
    """A CLI process runs a batch (the real runner, its real heartbeat) and is killed with both
    scenes in flight; the first page load of this server process resumes the job and finishes it."""
    script = tmp_path / "scenes.txt"
    script.write_text("one\ntwo\n", encoding="utf-8")
    calls = tmp_path / "calls.log"
    env = {**os.environ, "STUDIO_HOME": str(app_home), "STUDIO_PROVIDER_PLUGINS": batch_echo.PLUGIN_SPEC,
           "PYTHONPATH": str(ROOT), "ECHO_CALL_LOG": str(calls), "ECHO_HOLD_FROM": "1"}  # every call holds
    cli = subprocess.Popen([sys.executable, "-m", "studio", "batch", str(script), "--provider", "echo",
                            "--concurrency", "2", "--quiet"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until_true(lambda: cli.poll() is not None or
                   (calls.exists() and len(calls.read_text(encoding="utf-8").splitlines()) == 2))
        assert cli.poll() is None, cli.communicate()[1]  # both scenes are in flight in the CLI
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    studio = Studio(app_home)
    watcher = JobManager(studio)  # another process's view: it only reads the store
    try:
        (left,) = watcher.list()
        assert left.status is JobStatus.RUNNING and left.interrupted  # held by a process that is gone
        at = open_page()  # the first page load in this server process resumes it
        no_crash(at)
        final = watcher.wait(left.id, timeout=60)
    finally:
        watcher.close()
        studio.close()
    assert final.status is JobStatus.COMPLETED and [item.attempts for item in final.items] == [2, 2]
    assert [len(item.image_ids) for item in final.items] == [1, 1]

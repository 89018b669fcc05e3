"""Every way to generate offers the same generation options: a batch takes what a single request
takes (post-processing included), on the command line and in the Gradio API."""

from __future__ import annotations

from gradio_ui.endpoints import BATCH_OPTION_NAMES, OPTION_NAMES, Actions, Exporter, request_fields
from studio.jobs import get_manager

# Per-image only: a batch makes new images from text (no strength), and a job's scenes never reuse
# stored images (no cache switch).
SINGLE_IMAGE_ONLY = {"strength", "cache"}


def test_the_gradio_batch_api_takes_every_option_a_single_request_takes():
    assert set(OPTION_NAMES) - SINGLE_IMAGE_ONLY <= set(BATCH_OPTION_NAMES)


def test_a_gradio_batch_post_processes_its_images(echo_studio, tmp_path):
    actions = Actions(echo_studio, Exporter(echo_studio, tmp_path / "exports", cache_dir=tmp_path / "cache"))
    fields = request_fields({"size": "64x64", "steps": 5, "postprocess": {"upscale": 2}}, BATCH_OPTION_NAMES)
    job = actions.run_batch("local", "a harbour at dawn\n", provider="echo", **fields)
    manager = get_manager(echo_studio)
    try:
        finished = manager.wait(job.id, "local", timeout=60)
        while finished.status.value in ("RUNNING", "PENDING"):
            finished = manager.wait(job.id, "local", timeout=60)
        assert finished.status.value == "COMPLETED"
        record = echo_studio.history(owner="local").items[0]
        assert (record.width, record.height, record.params["steps"]) == (128, 128, 5)
    finally:
        manager.close(wait=5)

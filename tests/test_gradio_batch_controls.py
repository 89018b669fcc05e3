"""The Gradio Batch tab's job buttons (Watch, Pause/Resume/Cancel/Retry, Zip), called as Gradio calls
them: each needs a chosen job and says so when there is none, and shows or exports the chosen one.
(They share ``watching`` and ``_picked`` in gradio_ui/batch_tab.py.)"""

from __future__ import annotations

import zipfile

import gradio as gr
import pytest

import gradio_app
from gradio_ui.identity import Access
from studio.jobs import JobStatus, get_manager


def batch_handlers(demo: gr.Blocks) -> dict[str, list]:
    """The Batch tab's job-button events by function name, each as (function, its input components)."""
    found: dict[str, list] = {}
    functions = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    for block_fn in functions:
        qualname = getattr(block_fn.fn, "__qualname__", "")
        if qualname.startswith("build_batch_tab.") and qualname.rsplit(".", 1)[-1] in ("on_watch", "handler", "on_zip"):
            found.setdefault(qualname.rsplit(".", 1)[-1], []).append((block_fn.fn, block_fn.inputs))
    return found


def values_for(inputs, job_id: str | None) -> dict:
    """The event's input values: no browser token (the local visitor), ``job_id`` in the job fields."""
    return {component: (job_id if isinstance(component, (gr.State, gr.Dropdown)) else None) for component in inputs}


@pytest.fixture
def tab(echo_studio, tmp_path):
    demo = gradio_app.build_app(echo_studio, access=Access(single_user=True), export_dir=tmp_path / "exports")
    yield batch_handlers(demo)
    get_manager(echo_studio).close()


def test_job_buttons_need_a_job_then_act_on_it(tab, echo_studio):
    assert len(tab["handler"]) == 4 and len(tab["on_watch"]) == 1 and len(tab["on_zip"]) == 1
    (watch, watch_inputs), (zip_export, zip_inputs) = tab["on_watch"][0], tab["on_zip"][0]
    with pytest.raises(gr.Error, match="pick a job first"):
        list(watch(values_for(watch_inputs, None), None, None))
    with pytest.raises(gr.Error, match="run or show a job first"):
        zip_export(values_for(zip_inputs, None), None, None)
    for control, inputs in tab["handler"]:
        with pytest.raises(gr.Error, match="run or show a job first"):
            list(control(values_for(inputs, None), None, None))

    manager = get_manager(echo_studio)
    job = manager.submit("a lighthouse\nwaves on the rocks", provider="echo", user="local")
    assert manager.wait(job.id, "local", timeout=30).status is JobStatus.COMPLETED
    shown = list(watch(values_for(watch_inputs, job.id), None, None))
    assert shown and shown[-1][0] == job.id and len(shown[-1][2]) == 2  # id, summary, two images, scenes
    exported = zip_export(values_for(zip_inputs, job.id), None, None)
    with zipfile.ZipFile(exported["value"]) as archive:
        assert sum(name.endswith(".png") for name in archive.namelist()) == 2

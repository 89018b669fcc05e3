"""The Streamlit front end on a fresh install whose default local model is not on the machine, and
its share of the local-model rules: private visitors get no free model paths; a first-use download
shows as its own progress bar.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from studio.types import ProgressEvent
from tests.helpers import as_read
from ui.tasks import TaskRegistry

ROOT = Path(__file__).resolve().parent.parent
GENERATE = "pages/1_Generate.py"


def test_generate_without_the_local_model_says_so_without_a_key_hint(app_home, monkeypatch):
    # A fresh install: no keys, the default local model (sd-turbo) not downloaded, and offline
    # (HF_HUB_OFFLINE=1 from conftest).
    monkeypatch.setenv("STUDIO_DEFAULT_PROVIDER", "local")
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / GENERATE), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="gen_provider").value == "local"
    assert any("not available offline" in as_read(w.value) for w in at.warning)
    at.text_area(key="gen_prompt").input("a quiet forest").run()
    [generate] = [b for b in at.button if b.label == "Generate"]
    generate.click().run()
    deadline_runs = 200
    while any(b.label == "Cancel" for b in at.button) and deadline_runs:  # the request runs as a task
        deadline_runs -= 1
        at.run()
    errors = [as_read(e.value) for e in at.error]  # user-facing text is shown Markdown-escaped
    assert len(errors) == 1, errors
    assert "not available offline" in errors[0] and "hf download stabilityai/sd-turbo" in errors[0]
    assert "key" not in errors[0].lower()  # no "Set the key in the environment...": no key is involved


def test_the_key_hint_stays_for_key_problems():
    def script():
        from studio.errors import NotConfigured
        from ui.widgets import show_error

        show_error(NotConfigured("OpenAI needs an API key: set OPENAI_API_KEY", provider="openai", needs_key=True))
        show_error(NotConfigured("the local model is not on this machine", provider="local"))

    at = AppTest.from_function(script).run()
    with_key, without = (e.value for e in at.error)
    assert "API keys" in with_key and "API keys" not in without and "Set the key" not in without


@pytest.mark.parametrize("policy, free", [("local", True), ("private", False), ("", False)])
def test_the_streamlit_studio_allows_free_model_paths_only_for_local_visitors(app_home, monkeypatch, policy, free):
    monkeypatch.setenv("STUDIO_VISITORS", policy)
    st.cache_resource.clear()

    def script():
        import streamlit as st

        from ui.setup import get_studio

        st.text(repr(get_studio().settings.local_free_paths))

    at = AppTest.from_function(script).run()
    assert at.text[0].value == repr(free)


def test_a_download_has_its_own_bar_then_the_request_progress_starts_over():
    registry = TaskRegistry()
    fractions_seen, go, recorded = [], threading.Event(), threading.Event()

    def work(progress, cancel):
        go.wait(30)  # until ``task`` below is assigned
        for fraction in (0.0, 0.5, 1.0):
            progress(ProgressEvent("downloading", fraction, message=f"downloading m: {fraction:.0%}"))
            fractions_seen.append(task.fraction)
        progress(ProgressEvent("initializing", 0.0, message="loading m"))
        fractions_seen.append(task.fraction)
        progress(ProgressEvent("generating", 0.3, step=1, total_steps=2))
        fractions_seen.append(task.fraction)
        recorded.set()
        return "ok"

    task = registry.submit("local", "generate", "a test", work)
    go.set()
    assert recorded.wait(30)
    assert fractions_seen == [0.0, 0.5, 1.0, 0.0, 0.3]

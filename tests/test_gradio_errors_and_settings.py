"""Gradio errors as each reader gets them, and bad settings at start.

API callers get the studio's message as plain JSON text (a cue timing's ``-->`` stays ``-->``); only
the browser's toast, which renders HTML, gets it escaped. A setting the app cannot use stops it with
one ``error:`` line naming it (Streamlit: the page says it), never a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

from gradio_ui.endpoints import visitor_errors
from gradio_ui.identity import Access
from studio.config import SettingsError
from studio.errors import InvalidRequest
from tests.test_gradio_app import ROOT, launch, shut


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-tmp")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        running = launch(tmp_path_factory.mktemp("gradio-home") / "home", None, Access())
        yield running
        shut(running)


def test_api_errors_are_plain_text_and_the_ui_toast_escapes_them(app):
    with pytest.raises(AppError) as raised:  # an SRT script without a cue timing
        app.client().predict("scene", "srt", "", "echo", "", {}, api_name="/batch")
    message = str(raised.value)
    assert "00:00:01,000 --> 00:00:04,000" in message and "&gt;" not in message
    with pytest.raises(gr.Error) as toast:  # the UI's own events: rendered as HTML by the browser
        with visitor_errors():
            raise InvalidRequest("expected a cue timing like 00:00:01,000 --> 00:00:04,000 for '<b>x</b>'")
    assert toast.value.message.endswith("--&gt; 00:00:04,000 for '&lt;b&gt;x&lt;/b&gt;'")


@pytest.mark.parametrize("limit, offset, message", [
    (-5, 0, "limit must be 1-100, not -5"), (101, 0, "limit must be 1-100, not 101"),
    (10, -1, "offset must be 0 or more, not -1"), (0, 0, "limit must be 1-100, not 0"),
])
def test_history_paging_follows_the_one_rule_the_cli_follows(app, limit, offset, message):
    with pytest.raises(AppError, match=message):
        app.client().predict("", "", "", "", "", limit, offset, api_name="/history")


@pytest.mark.parametrize("env", [{"STUDIO_VISITORS": "bogus"}, {"STUDIO_GRADIO_USERS": "carol"}])
def test_a_bad_access_setting_is_a_settings_error(env):
    with pytest.raises(SettingsError):
        Access.from_env(env)


@pytest.mark.parametrize("name, value, says", [
    ("STUDIO_VISITORS", "bogus", "error: STUDIO_VISITORS='bogus' is not a visitor policy"),
    ("STUDIO_GRADIO_USERS", "carol", "error: STUDIO_GRADIO_USERS entry 1 is not user:password"),
    ("STUDIO_IDENTITY_KEY", "carol", "error: STUDIO_IDENTITY_KEY must be at least 32 characters"),
])
def test_gradio_app_with_a_bad_setting_says_so_in_one_line_without_a_traceback(tmp_path, name, value, says):
    with socket.socket() as probe:  # a free port, should the app go on to serve a page
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", name: value}
    process = subprocess.Popen([sys.executable, str(ROOT / "gradio_app.py")], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = []
    try:
        # Read until the verdict: the error line, a traceback, the app serving as if all were well, or
        # the end of the output.
        for line in process.stdout:
            seen.append(line)
            if line.startswith(("error:", "Traceback", "* Running on")):
                break
    finally:
        process.kill()
        seen.append(process.communicate(timeout=60)[0])
    output = "".join(seen)
    assert [line for line in seen if line.startswith(("error:", "Traceback", "* Running on"))][0].startswith(says), \
        output
    assert "Traceback" not in output and "carol" not in output.replace(says, "")


def test_streamlit_says_a_bad_identity_key_on_the_page_instead_of_a_traceback(app_home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STUDIO_IDENTITY_KEY", "carol")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == ["The studio cannot start: STUDIO_IDENTITY_KEY must be at least 32 "
                                           "characters. Fix the setting and restart the app."]


def test_both_web_front_ends_title_the_same_error_kinds():
    from gradio_ui.endpoints import ERROR_TITLES as GRADIO_TITLES
    from ui.widgets import ERROR_TITLES as STREAMLIT_TITLES

    assert set(GRADIO_TITLES) == set(STREAMLIT_TITLES)
    assert {"busy", "invalid_request", "not_found"} <= set(GRADIO_TITLES)  # a job held elsewhere is not bad input

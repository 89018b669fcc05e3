"""Settings from the environment and studio.toml are validated when loaded: a value the studio cannot
use is one clear error naming where it came from, the value and what the setting takes (a number
given as 'abc' used to surface as Python's own ValueError from float()), and every front end says so
at start: the CLI as one 'error:' line with exit 2."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.config import Settings, SettingsError
from studio.errors import InvalidRequest
from studio.usertext import markdown_literal

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("variable, value, takes", [
    ("STUDIO_DAILY_BUDGET", "abc", "US dollars per day"),
    ("STUDIO_DAILY_BUDGET", "-1", "US dollars per day"),
    ("STUDIO_DAILY_BUDGET", "nan", "US dollars per day"),
    ("STUDIO_LOCAL_CACHE_SIZE", "2.5", "whole number"),
    ("STUDIO_LOCAL_CACHE_SIZE", "0", "whole number"),
    ("STUDIO_REQUEST_TIMEOUT", "soon", "seconds, more than 0"),
    ("STUDIO_REQUEST_TIMEOUT", "0", "seconds, more than 0"),
    ("STUDIO_JOB_STALE_SECONDS", "-5", "seconds, more than 0"),
    ("STUDIO_GEMINI_API_VERSION", "beta", "an API version"),
])
def test_a_bad_environment_value_is_one_error_naming_variable_value_and_what_it_takes(
        studio_home, monkeypatch, variable, value, takes):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        Settings.load(studio_home)
    message = str(caught.value)
    assert f"{variable}={value!r}" in message and takes in message
    assert isinstance(caught.value, InvalidRequest) and isinstance(caught.value, ValueError)


def test_every_bad_value_is_named_in_the_one_error(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_DAILY_BUDGET", "abc")
    monkeypatch.setenv("STUDIO_REQUEST_TIMEOUT", "later")
    with pytest.raises(SettingsError, match=r"STUDIO_DAILY_BUDGET='abc'.*STUDIO_REQUEST_TIMEOUT='later'"):
        Settings.load(studio_home)


def test_studio_toml_values_are_checked_and_named_by_their_key(studio_home):
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "studio.toml").write_text('[local]\ncache_size = "many"\n', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"studio.toml \[local\] cache_size='many' is not valid: it takes a whole"):
        Settings.load(studio_home)
    (studio_home / "studio.toml").write_text('daily_budget = [1, 2]\n', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"studio.toml daily_budget=\[1, 2\]"):
        Settings.load(studio_home)
    (studio_home / "studio.toml").write_text('daily_budget = \n', encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid TOML"):
        Settings.load(studio_home)


def test_good_values_from_each_source_keep_their_types_and_precedence(studio_home, monkeypatch):
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "studio.toml").write_text(
        'daily_budget = 4\nrequest_timeout = 60\n[local]\ncache_size = 3\nallowed_models = ["a/b", "c=/m/c.safetensors"]\n'
        'user_models = { alice = "x/y" }\n', encoding="utf-8")
    monkeypatch.setenv("STUDIO_DAILY_BUDGET", "2.5")  # the environment beats the file
    monkeypatch.setenv("STUDIO_REQUEST_TIMEOUT", "")  # empty counts as unset: the file's value
    settings = Settings.load(studio_home, local_cache_size=1)  # an argument beats both
    assert (settings.daily_budget, settings.request_timeout, settings.local_cache_size) == (2.5, 60.0, 1)
    assert settings.local_models == ("a/b", "c=/m/c.safetensors")
    assert settings.model_for_user("alice") == "x/y" and settings.model_for_user("bob") == settings.local_model
    monkeypatch.setenv("STUDIO_LOCAL_MODELS", " a/b , d/e,a/b")
    assert Settings.load(studio_home).local_models == ("a/b", "d/e")
    # What the front ends do with settings keeps working: copies with session keys, and adjustments.
    keyed = dataclasses.replace(settings, session_keys={"OPENAI_API_KEY": "sk-test"})
    assert keyed.secret("OPENAI_API_KEY") == "sk-test" and keyed.daily_budget == 2.5
    keyed.local_free_paths = False
    assert keyed.local_free_paths is False


def test_a_bad_argument_is_named_as_the_argument(studio_home):
    with pytest.raises(SettingsError, match=r"the argument request_timeout='x'"):
        Settings.load(studio_home, request_timeout="x")
    with pytest.raises(TypeError, match="no field"):
        Settings.load(studio_home, no_such_setting=1)


def test_the_cli_prints_one_error_line_and_exits_2(studio_home):
    env = {**os.environ, "STUDIO_HOME": str(studio_home), "STUDIO_DAILY_BUDGET": "abc", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "studio", "providers"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: STUDIO_DAILY_BUDGET='abc' is not valid: it takes US dollars")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_streamlit_shows_the_settings_error_at_start(studio_home, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    monkeypatch.setenv("STUDIO_DAILY_BUDGET", "abc")
    st.cache_resource.clear()
    try:
        for page in ("app.py", "pages/1_Generate.py"):
            at = AppTest.from_file(str(ROOT / page), default_timeout=30).run()
            assert not at.exception, [e.value for e in at.exception]
            assert [e.value for e in at.error] == [
                "The studio cannot start: STUDIO_DAILY_BUDGET='abc' is not valid: it takes US dollars per day, "
                "0 or more (unset: no cap) (Input should be a valid number, unable to parse string as a number). "
                "Fix the setting and restart the app."]
    finally:
        st.cache_resource.clear()


@pytest.mark.parametrize("variable, value", [("STUDIO_REQUEST_TIMEOUT", "soon"),
                                             ("STUDIO_GRADIO_CONCURRENCY", "abc"),
                                             ("STUDIO_GRADIO_MAX_QUEUE", "0")])
def test_gradio_serves_the_settings_error_instead_of_the_studio(studio_home, monkeypatch, capsys, variable, value):
    """Gradio's own queue limits are settings too: a bad one was silently replaced by its default."""
    import gradio as gr

    import gradio_app
    import studio as studio_package

    monkeypatch.setattr(studio_package, "_default", {})  # a fresh shared studio for this environment
    monkeypatch.setenv(variable, value)
    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.append(self))
    gradio_app.main()
    assert len(launched) == 1
    texts = [block.value for block in launched[0].blocks.values() if isinstance(block, gr.Markdown)]
    reason = markdown_literal(f"{variable}={value!r} is not valid: it takes")  # as the page writes it
    assert any(text.startswith(f"**The studio cannot start:** {reason}") for text in texts), texts
    assert capsys.readouterr().err.startswith(f"error: {variable}={value!r} is not valid")

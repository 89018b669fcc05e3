"""Generate's prompt templates and post-processing controls; the Home page's alerts."""

from __future__ import annotations

import pytest

from studio.errors import ProviderFailure
from tests.fakes import echo_provider
from studio.service import Studio
from tests.test_app_pages import GENERATE, HOME, button, no_crash, page, settle, texts


@pytest.fixture
def studio(app_home):
    instance = Studio(app_home)
    yield instance
    instance.close()


def test_template_fills_the_prompt_style_and_category(studio):
    at = page(GENERATE)
    at.selectbox(key="gen_tpl_category").set_value("product").run()
    at.text_input(key="gen_tpl_subject").input("a copper teapot").run()
    button(at, "Use this template").click().run()
    no_crash(at)
    assert at.text_area(key="gen_prompt").value.startswith("product photo of a copper teapot")
    assert at.selectbox(key="gen_style").value == "photorealistic"
    assert at.text_input(key="gen_category").value == "product"


def test_postprocess_controls_reach_the_saved_image(studio):
    at = page(GENERATE)
    at.text_area(key="gen_prompt").input("a red kite").run()
    at.select_slider(key="gen_upscale").set_value(2.0)
    at.checkbox(key="gen_enhance").check().run()
    button(at, "Generate").click().run()
    settle(at)
    no_crash(at)
    (record,) = studio.history().items
    assert (record.width, record.height) == (128, 128)
    assert record.params["postprocess"]["autocontrast"] is True


def test_home_shows_alerts_after_three_failures(studio):
    from studio.types import GenerationRequest

    echo_provider.EchoProvider.failures = [ProviderFailure("upstream exploded", provider="echo")] * 3
    for _ in range(3):
        with pytest.raises(ProviderFailure):
            studio.generate(GenerationRequest(prompt="x", provider="echo"))
    at = page(HOME)
    no_crash(at)
    assert "echo: the last 3 requests failed (latest: upstream exploded)" in texts(at)


def test_home_alert_about_keyless_attempts_clears_once_the_key_is_set(studio, monkeypatch):
    """Three attempts without a key raise the alert; setting the key (no request since) clears it."""
    import streamlit as st

    from studio.errors import NotConfigured
    from studio.types import GenerationRequest

    for _ in range(3):
        with pytest.raises(NotConfigured):
            studio.generate(GenerationRequest(prompt="x", provider="openai"))
    alert = "openai: the last 3 requests failed"
    assert alert in texts(page(HOME))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    st.cache_resource.clear()  # a restarted server reads the new key
    at = page(HOME)
    no_crash(at)
    assert alert not in texts(at)


def test_home_alerts_clear_after_a_later_success(studio):
    from studio.errors import QuotaExhausted
    from studio.types import GenerationRequest

    echo_provider.EchoProvider.failures = [QuotaExhausted("out of credit", provider="echo")] * 3
    for _ in range(3):
        with pytest.raises(QuotaExhausted):
            studio.generate(GenerationRequest(prompt="x", provider="echo"))
    shown = texts(page(HOME))
    assert "echo: the last 3 requests failed" in shown and "quota or credit is exhausted" in shown
    studio.generate(GenerationRequest(prompt="credit added", provider="echo"))
    at = page(HOME)
    no_crash(at)
    assert "echo:" not in texts(at)

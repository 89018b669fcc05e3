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

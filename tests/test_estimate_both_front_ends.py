"""The estimate shown before the click is one figure from the core (``studio.estimates``): the
same inputs give the same line on the Streamlit Generate page and in Gradio's Generate tab, input
text included (a long prompt's tokens cost on OpenAI), and Gradio's Edit tab counts the input image."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio.estimates import cost_preview
from studio.service import Studio
from studio.types import GenerationRequest, Mode
from tests.helpers import as_read
from ui.widgets import control_key

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a lighthouse on a cliff at dawn, " * 60  # long enough that its input tokens show in the figure
MODEL = "gpt-image-1-mini"


def streamlit_line(home: Path) -> str:
    at = AppTest.from_file(str(ROOT / "pages" / "1_Generate.py"), default_timeout=30).run()
    at.selectbox(key="gen_provider").select("openai").run()
    at.selectbox(key="gen_model_openai").select(MODEL).run()
    model = Studio(home).provider("openai").model(MODEL)
    at.selectbox(key=control_key("gen", "quality", model)).select("low").run()
    at.selectbox(key=control_key("gen", "size", model)).select("1024x1024").run()
    at.text_area(key="gen_prompt").input(PROMPT).run()
    assert not at.exception, [e.value for e in at.exception]
    [line] = [as_read(c.value) for c in at.caption if c.value.startswith("Estimated cost")]
    return line


def gradio_estimate(demo, tab_prompt_label: str):
    """The Gradio tab's estimate handler (the one reading the prompt box labelled so) and its inputs."""
    for block_fn in demo.fns.values():
        if getattr(block_fn.fn, "__name__", "") != "on_estimate":
            continue
        labels = {getattr(c, "label", None): c for c in block_fn.inputs}
        if tab_prompt_label in labels:
            return block_fn.fn, labels, block_fn.inputs
    raise AssertionError(f"no estimate handler reads {tab_prompt_label!r}")


def gradio_line(demo, prompt_label: str, **by_label) -> str:
    fn, labels, inputs = gradio_estimate(demo, prompt_label)
    values = {component: getattr(component, "value", None) for component in inputs}
    for label, value in by_label.items():
        values[labels[label]] = value
    visitor = SimpleNamespace(username=None, session_hash="estimate-test")
    return fn(values, visitor, None)


@pytest.fixture
def both(app_home, monkeypatch, tmp_path):
    import gradio_app
    from gradio_ui.identity import Access

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")  # nothing is sent: an estimate calls no one
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    studio = Studio(app_home)
    demo = gradio_app.build_app(studio, access=Access(), export_dir=tmp_path / "exports")
    yield studio, demo
    demo.close()
    studio.close()


def test_both_front_ends_show_the_same_estimate_with_the_prompts_input_cost(both, app_home):
    studio, demo = both
    request = GenerationRequest(prompt=PROMPT, provider="openai", model=MODEL, quality="low", width=1024,
                                height=1024)
    expected = cost_preview(studio, request)
    assert expected.estimate > cost_preview(studio, request.replace(prompt="a")).estimate  # the prompt costs
    line = gradio_line(demo, "Prompt", Prompt=PROMPT, Provider="openai", Model=MODEL, Quality="low",
                       **{"Size (W x H)": "1024x1024"})
    assert line == expected.text() == streamlit_line(app_home)


def test_gradios_edit_estimate_counts_the_input_image(both):
    studio, demo = both
    picture = Image.new("RGB", (1024, 1024), (90, 120, 200))
    request = GenerationRequest(prompt="a red door", mode=Mode.IMAGE_TO_IMAGE, init_image=picture, provider="openai",
                                model=MODEL, quality="low", width=1024, height=1024)
    with_image = cost_preview(studio, request)
    without = cost_preview(studio, GenerationRequest(prompt="a red door", provider="openai", model=MODEL,
                                                    quality="low", width=1024, height=1024))
    assert with_image.estimate > without.estimate  # the input image's tokens are paid for
    editor = {"background": picture, "layers": [], "composite": picture}
    line = gradio_line(demo, "What to make", Provider="openai", Model=MODEL, Quality="low",
                       **{"Size (W x H)": "1024x1024", "What to make": "a red door",
                          "Image: paint over what should change (inpainting), or leave it unpainted to redo the "
                          "whole image": editor})
    assert line == with_image.text()


def test_gradios_scene_variations_estimate_is_one_request_per_framing(both):
    studio, demo = both
    framings = 3
    line = gradio_line(demo, "Prompt (optional for a stored image: its own prompt is used)", Provider="openai",
                       Model=MODEL, Quality="low", Variations=framings,
                       **{"Prompt (optional for a stored image: its own prompt is used)": "a red kite",
                          "Scene variations (framing and lighting)": True, "Size (W x H)": "1024x1024"})
    one = GenerationRequest(prompt="a red kite", mode=Mode.VARIATION, provider="openai", model=MODEL, quality="low",
                            width=1024, height=1024, n=1)
    assert line == cost_preview(studio, one, count=framings).text()
    single = cost_preview(studio, one).estimate
    assert cost_preview(studio, one, count=framings).estimate == pytest.approx(framings * single)

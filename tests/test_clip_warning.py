"""CLIP reads a limited number of tokens (77 for Stable Diffusion; the tiny test model's tokenizer
takes 32): what it cannot read is reported in the result's warnings, which the CLI, Gradio and
Streamlit show, instead of only in diffusers' log."""

from __future__ import annotations

import pytest

from gradio_ui.create_tabs import result_summary
from providers.local import LocalProvider, clip_cut_warnings
from studio.catalog import Catalog
from studio.cli import main
from studio.config import Settings
from studio.service import Studio
from studio.types import GenerationRequest, Mode, PreparedRequest, RunContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The tiny tokenizer is byte-level: one token per character here, 32 places with start and end.
LONG = "a lighthouse on a rock at dusk, waves, gulls, oil painting in warm light"
SHORT = "a lighthouse"


@pytest.fixture
def provider(tiny_model_dir, studio_home) -> LocalProvider:
    return LocalProvider(Settings.load(studio_home, local_model=str(tiny_model_dir)), Catalog())


def prepared(provider: LocalProvider, prompt: str, negative: str = "") -> PreparedRequest:
    return PreparedRequest(provider="local", model=provider.default_model(), mode=Mode.TEXT_TO_IMAGE, prompt=prompt,
                           negative_prompt=negative, width=64, height=64, n=1, seed=3, steps=1, guidance=7.5,
                           strength=None, init_image=None, mask=None, output_format="png", quality=None,
                           compression=95, user="local", extra={})


def test_a_prompt_longer_than_clip_reads_is_a_result_warning_naming_what_was_ignored(provider):
    result = provider.generate(prepared(provider, LONG, negative=SHORT), RunContext(timeout=120))
    tokenizer = provider.load(provider.default_model().id)[0].text_to_image.tokenizer
    readable = tokenizer.model_max_length - 2
    read = tokenizer.decode(tokenizer(LONG).input_ids[1:readable + 1]).replace(" ", "")
    assert len(result.warnings) == 1  # the short negative prompt fits
    [warning] = result.warnings
    assert warning.startswith(f"the prompt is {len(tokenizer(LONG).input_ids) - 2} CLIP tokens long and the model "
                              f"reads only the first {readable}; this end of it was ignored: ")
    ignored = warning.split(": ", 1)[1].strip('"').replace(" ", "")
    assert read + ignored == LONG.replace(" ", "")  # exactly the part CLIP never saw


def test_a_prompt_that_fits_gives_no_warning(provider):
    assert provider.generate(prepared(provider, SHORT), RunContext(timeout=120)).warnings == []


def test_the_negative_prompt_is_checked_too(provider):
    pipe = provider.load(provider.default_model().id)[0].text_to_image
    assert [w.split(" is ")[0] for w in clip_cut_warnings(pipe, SHORT, LONG)] == ["the negative prompt"]


def test_the_warning_reaches_the_studio_result_the_gradio_summary_and_the_cli(studio_home, tiny_model_dir,
                                                                              capsys, monkeypatch):
    studio = Studio(settings=Settings.load(studio_home, local_model=str(tiny_model_dir)))
    try:
        result = studio.generate(GenerationRequest(prompt=LONG, provider="local", width=256, height=256, steps=1,
                                                   seed=5))
    finally:
        studio.close()
    [warning] = [w for w in result.warnings if "CLIP tokens" in w]
    assert "CLIP tokens long" in result_summary(result)  # the Gradio result line (Streamlit: st.warning each)

    monkeypatch.setenv("STUDIO_LOCAL_MODEL", str(tiny_model_dir))
    code = main(["--home", str(studio_home), "generate", LONG, "--provider", "local", "--size", "256x256",
                 "--steps", "1", "--seed", "6"])
    out = capsys.readouterr()
    assert code == 0
    assert any(line.startswith("warning: the prompt is") and "CLIP tokens" in line
               for line in (out.out + out.err).splitlines())


def test_the_streamlit_generate_page_shows_the_warning(app_home, monkeypatch, tiny_model_dir):
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from ui.widgets import control_key

    monkeypatch.setenv("STUDIO_LOCAL_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("STUDIO_DEFAULT_PROVIDER", "local")
    st.cache_resource.clear()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages/1_Generate.py"),
                           default_timeout=60).run()
    studio = Studio(app_home)
    model = studio.provider("local").model(None)
    studio.close()
    at.text_area(key="gen_prompt").input(LONG).run()
    at.slider(key=control_key("gen", "steps", model)).set_value(1)
    at.number_input(key=control_key("gen", "w", model)).set_value(256)
    at.number_input(key=control_key("gen", "h", model)).set_value(256)
    at.run()
    next(b for b in at.button if b.label == "Generate").click().run()
    for _ in range(600):  # rerun until the page's task is done (the Cancel button goes away)
        if not any(b.label == "Cancel" for b in at.button):
            break
        at.run()
    at.run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert any("CLIP tokens long" in w.value for w in at.warning), [w.value for w in at.warning]

"""One rule, one place (issue 12 §1): the size a model makes for an aspect ratio comes from
``studio.sizes`` for Streamlit, Gradio, the library and validation, so the same choice gives the
same size, estimate and cache key everywhere (a cached image is found from either app), and the
ratio the provider is sent is the one the user picked."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from providers.common import nearest_aspect_ratio
from studio import cache_keys
from studio.catalog import load_catalog
from studio.service import Studio
from studio.types import GenerationRequest
from ui.widgets import control_key

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a lighthouse on a cliff at dawn"
# (provider, model, ratio): the two cases the issue names, and a FLUX ratio whose neighbour (4:5) is close.
CASES = [("replicate", "black-forest-labs/flux-1.1-pro", "16:9"), ("gemini", "gemini-3.1-flash-image", "3:4"),
         ("replicate", "black-forest-labs/flux-schnell", "3:4")]
KEYS = {"replicate": "REPLICATE_API_TOKEN", "gemini": "GEMINI_API_KEY"}


def ratio_models():
    catalog = load_catalog()
    return [model for provider in catalog.providers() for model in catalog.models(provider) if model.aspect_ratios]


def streamlit_request(monkeypatch, provider: str, model_id: str, ratio: str) -> GenerationRequest:
    """The request the Streamlit Generate page builds (and estimates) for ``ratio`` picked in its list."""
    seen: list[GenerationRequest] = []
    real_prepare = Studio.prepare

    def watched(self, request):
        seen.append(request)
        return real_prepare(self, request)

    monkeypatch.setattr(Studio, "prepare", watched)
    at = AppTest.from_file(str(ROOT / "pages" / "1_Generate.py"), default_timeout=30).run()
    at.selectbox(key="gen_provider").select(provider).run()
    at.selectbox(key=f"gen_model_{provider}").select(model_id).run()
    model = load_catalog().model(provider, model_id)
    at.selectbox(key=control_key("gen", "ratio", model)).select(ratio).run()
    at.text_area(key="gen_prompt").input(PROMPT).run()
    assert not at.exception, [e.value for e in at.exception]
    monkeypatch.setattr(Studio, "prepare", real_prepare)
    assert seen, "the page estimated nothing"
    return seen[-1]


def gradio_size(demo, provider: str, model_id: str, ratio: str) -> str:
    """The "WxH" value Gradio's Generate tab offers for ``ratio`` (the label reads "3:4 (WxH)"), as the
    model-change handler fills the size list."""
    from gradio_ui.controls import ModelControls

    handler = next(fn.fn for fn in demo.fns.values()
                   if getattr(fn.fn, "__name__", "") == "on_model" and fn.fn.__self__.mode == "text-to-image")
    assert isinstance(handler.__self__, ModelControls)
    updates = dict(zip(ModelControls.SETTINGS, handler(provider, model_id)))
    [value] = [value for label, value in updates["size"]["choices"] if label.split(" ")[0] == ratio]
    return value


@pytest.fixture
def studio_and_gradio(app_home, monkeypatch, tmp_path):
    import gradio_app
    from gradio_ui.identity import Access

    for name in KEYS.values():  # nothing is sent: sizes and estimates call no one
        monkeypatch.setenv(name, "test-key-not-used")
    studio = Studio(app_home)
    demo = gradio_app.build_app(studio, access=Access(), export_dir=tmp_path / "exports")
    yield studio, demo
    demo.close()
    studio.close()


def cache_key(studio: Studio, request: GenerationRequest) -> str:
    prepared = studio.prepare(request).request
    return cache_keys.cache_key(prepared, cache_keys.edit_sources(prepared))


@pytest.mark.parametrize("provider, model_id, ratio", CASES)
def test_streamlit_gradio_and_the_library_give_one_size_estimate_and_cache_key(studio_and_gradio, monkeypatch,
                                                                               provider, model_id, ratio):
    studio, demo = studio_and_gradio
    on_streamlit = streamlit_request(monkeypatch, provider, model_id, ratio)
    width, height = (int(side) for side in gradio_size(demo, provider, model_id, ratio).split("x"))
    on_gradio = GenerationRequest(prompt=PROMPT, provider=provider, model=model_id, width=width, height=height,
                                  user=on_streamlit.user, seed=7)
    on_streamlit = on_streamlit.replace(seed=7)  # the random seed drawn per request is not the rule tested
    assert (on_streamlit.width, on_streamlit.height) == (width, height)
    model = studio.provider(provider).model(model_id)
    assert nearest_aspect_ratio(width, height, model.aspect_ratios) == ratio  # the provider is sent what was picked
    prepared = studio.prepare(on_gradio)
    assert prepared.warnings == []  # a size the front ends offer is made as it is
    assert studio.estimate(on_streamlit) == studio.estimate(on_gradio)
    assert cache_key(studio, on_streamlit) == cache_key(studio, on_gradio)


@pytest.mark.parametrize("model", ratio_models(), ids=lambda m: m.id)
def test_every_offered_ratio_is_sent_as_itself_and_has_its_own_size(model):
    from studio.sizes import size_choices

    choices = size_choices(model)
    assert [label.split(" ")[0] for label, _ in choices] == list(model.aspect_ratios)
    sizes = [value for _, value in choices]
    assert len(set(sizes)) == len(sizes)  # two ratios never share a size
    for (label, value) in choices:
        width, height = (int(side) for side in value.split("x"))
        assert nearest_aspect_ratio(width, height, model.aspect_ratios) == label.split(" ")[0]


def test_a_pixel_size_for_a_ratio_model_is_made_as_its_nearest_ratio_and_said_so(studio_and_gradio):
    """The library or CLI may give pixels to a model that takes ratios: the request is recorded (and
    cached) at the size every front end uses for that ratio, with a warning naming it."""
    studio, _demo = studio_and_gradio
    model_id = "black-forest-labs/flux-1.1-pro"
    asked = GenerationRequest(prompt=PROMPT, provider="replicate", model=model_id, width=1344, height=768, seed=7)
    offered = asked.replace(width=1360, height=768)
    prepared = studio.prepare(asked)
    assert prepared.request.size == "1360x768"  # the size the front ends offer for 16:9
    assert prepared.warnings == [f"{model_id} takes aspect ratios, not pixel sizes: 1344x768 is made as 16:9 "
                                 "(1360x768)"]
    assert cache_key(studio, asked) == cache_key(studio, offered)


# -- silent corrections: the batch concurrency cap is a setting, and going over it is said ---------


def test_more_scenes_at_once_than_the_provider_allows_is_a_warning_not_a_silent_cap(echo_studio):
    from studio.jobs.manager import JobManager

    manager = JobManager(echo_studio)
    try:
        limit = echo_studio.settings.concurrency_limit(echo_studio.provider("echo"))
        preview = manager.preview("a\nb", provider="echo", concurrency=limit + 4)
        assert preview.job.concurrency == limit
        assert preview.warnings == [f"{limit + 4} scenes at once asked; echo runs at most {limit} requests at once, "
                                    f"so {limit} run at a time (STUDIO_PROVIDER_CONCURRENCY=echo=N raises the limit)"]
        assert manager.preview("a\nb", provider="echo", concurrency=limit).warnings == []
    finally:
        manager.close(wait=5)


def test_the_concurrency_cap_is_a_setting_used_by_the_runner_the_preview_and_the_batch_page(studio_home,
                                                                                          monkeypatch):
    from studio.controls import concurrency_bounds
    from studio.jobs.manager import JobManager
    from tests.fakes import echo_provider

    echo_provider.install(studio_home / "catalog")
    monkeypatch.setenv("STUDIO_PROVIDER_CONCURRENCY", "echo=9")
    studio = Studio(studio_home)
    manager = JobManager(studio)
    try:
        echo = studio.provider("echo")
        assert echo.max_concurrency < 9  # the provider's own figure is overridden, not raised by chance
        assert studio.settings.concurrency_limit(echo) == 9
        assert concurrency_bounds(echo, studio.settings).max == 9  # the Batch page's slider
        preview = manager.preview("a\nb", provider="echo", concurrency=9)
        assert preview.job.concurrency == 9 and preview.warnings == []
    finally:
        manager.close(wait=5)
        studio.close()


def test_a_bad_concurrency_setting_is_one_clear_error(studio_home, monkeypatch):
    from studio.config import Settings, SettingsError

    monkeypatch.setenv("STUDIO_PROVIDER_CONCURRENCY", "openai=0")
    with pytest.raises(SettingsError, match="STUDIO_PROVIDER_CONCURRENCY='openai=0'.*provider=number"):
        Settings.load(studio_home)


# -- silent corrections: a size outside OpenAI's pixel budget is rescaled in the open ---------------


def test_a_size_outside_the_pixel_budget_is_rescaled_with_a_warning_and_recorded_as_sent(studio_home, monkeypatch):
    """gpt-image-2 makes 655,360-8,294,400 pixels: 512x512 went out as 816x816 with nothing said, and
    was recorded (and cached) as 512x512."""
    studio = Studio(studio_home)
    try:
        prepared = studio.prepare(GenerationRequest(prompt=PROMPT, provider="openai", model="gpt-image-2", width=512,
                                                    height=512))
        assert prepared.request.size == "816x816"
        assert prepared.warnings == ["gpt-image-2 makes 655,360-8,294,400 pixels: 512x512 is made as 816x816"]
        inside = studio.prepare(GenerationRequest(prompt=PROMPT, provider="openai", model="gpt-image-2", width=1024,
                                                  height=1024))
        assert inside.request.size == "1024x1024" and inside.warnings == []
    finally:
        studio.close()


# -- silent corrections: image-to-image steps raised for a low strength are said --------------------


def test_raised_image_to_image_steps_are_a_warning(tiny_model_dir, studio_home):
    """diffusers runs int(steps x strength) steps on an input image: 1 step at strength 0.3 runs none,
    so the local provider runs 4; that was only in the usage figures."""
    from PIL import Image

    from providers.local import LocalProvider
    from studio.catalog import Catalog
    from studio.config import Settings
    from studio.types import Mode, PreparedRequest, RunContext

    provider = LocalProvider(Settings.load(studio_home, local_model=str(tiny_model_dir)), Catalog())
    fields = dict(provider="local", model=provider.default_model(), mode=Mode.IMAGE_TO_IMAGE,
                  prompt="a lighthouse", negative_prompt="", width=64, height=64, n=1, seed=42, steps=1, guidance=7.5,
                  strength=0.3, init_image=Image.new("RGB", (64, 64), (90, 120, 200)), mask=None, output_format="png",
                  quality=None, compression=95, user="local", extra={})
    raised = provider.generate(PreparedRequest(**fields), RunContext())
    assert raised.usage["steps"] == 4
    assert [w for w in raised.warnings if "step" in w] == [
        "1 step(s) at strength 0.3 would change nothing (diffusers runs steps x strength of them on an input "
        "image); 4 steps were run"]
    kept = provider.generate(PreparedRequest(**{**fields, "steps": 4}), RunContext())
    assert [w for w in kept.warnings if "step" in w] == []


# -- silent corrections: the strength floor is one rule, an error for every way in ------------------


def test_a_strength_below_the_floor_the_sliders_use_is_refused_for_the_library_too(echo_studio):
    """Streamlit and Gradio stop strength at studio.controls.STRENGTH_FLOOR (a remembered lower value
    was moved up silently); the library and CLI took 0.01, which changes (nearly) nothing, paid."""
    from PIL import Image

    from studio.controls import STRENGTH_FLOOR
    from studio.errors import InvalidRequest
    from studio.types import Mode

    picture = Image.new("RGB", (64, 64), (90, 120, 200))
    request = GenerationRequest(prompt=PROMPT, mode=Mode.IMAGE_TO_IMAGE, init_image=picture, provider="echo",
                                strength=0.01)
    with pytest.raises(InvalidRequest, match=f"the least strength is {STRENGTH_FLOOR:g}"):
        echo_studio.prepare(request)
    assert echo_studio.prepare(request.replace(strength=STRENGTH_FLOOR)).request.strength == STRENGTH_FLOOR


# -- redaction: one rule and one minimum for the core and the providers ---------------------------


def test_a_short_key_is_masked_by_the_core_as_by_the_providers(echo_studio, monkeypatch):
    """Studio.redact skipped keys under 6 characters while the providers' scrub masked from 4: a
    5-character key echoed in an error reached records through one and not the other."""
    from providers.common import scrub

    monkeypatch.setenv("OPENAI_API_KEY", "k3y5x")
    text = "upstream said: bad key k3y5x"
    assert scrub(text, "k3y5x") == echo_studio.redact(text) == "upstream said: bad key ***"


def test_every_gemini_ratio_is_drawn_and_priced_at_the_1k_tier_unless_asked():
    """Gemini's 1K sizes hold about a megapixel in every ratio (16:9 is 1376x768), so the tier follows
    the pixel count: the long side of 16:9 (1360) once sent "2K" and was priced as 2K."""
    from studio.catalog import Catalog
    from studio.sizes import image_size_tier, ratio_sizes

    catalog = Catalog()
    models = [m for m in catalog.models("gemini") if "image_size" in m.options]
    assert models
    for model in models:
        for ratio, (width, height) in ratio_sizes(model).items():
            assert image_size_tier(width, height) == "1K", (model.id, ratio)
    assert image_size_tier(2048, 2048) == "2K" and image_size_tier(2752, 1536) == "2K"
    assert image_size_tier(4096, 2304) == "4K"

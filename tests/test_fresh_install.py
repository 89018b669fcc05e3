"""Every page and tab as a new user meets them: no keys, Hugging Face offline, the default local model
not downloaded, no test provider installed. Each page renders and its main action ends in a result
or a clear message; then every catalog model is picked on every page that offers models (plus
models whose settings have a single possible value), and no widget refuses its bounds.

The other page tests run with the echo test provider configured; that hid a Batch page that crashed
for everyone without a cloud key (the local provider runs one scene at a time, and a slider from 1
to 1 is refused by Streamlit)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio.catalog import Catalog
from studio.service import Studio
from tests.helpers import as_read

ROOT = Path(__file__).resolve().parent.parent
HOME, GENERATE, EDIT, VARIATIONS = "app.py", "pages/1_Generate.py", "pages/2_Edit.py", "pages/3_Variations.py"
HISTORY, BATCH, BOARDS = "pages/4_History.py", "pages/5_Batch.py", "pages/6_Mood_boards.py"
PAGES = (HOME, GENERATE, EDIT, VARIATIONS, HISTORY, BATCH, BOARDS)
DEFAULT_LOCAL_MODEL = "stabilityai/sd-turbo"

# Models whose settings allow exactly one value, and one with a single size: the catalog may hold
# such entries (an operator's override, a new provider model); no page may refuse to draw them.
SINGLE_VALUE_MODELS = [
    {"id": "edge/one-value-each", "label": "One value each", "modes": ["text-to-image", "image-to-image",
                                                                       "inpaint", "variation"],
     "max_images": 1, "seed": True, "negative_prompt": True,
     "steps": {"min": 4, "max": 4, "default": 4}, "guidance": {"min": 1.5, "max": 1.5, "default": 1.5},
     "strength": {"min": 0.0, "max": 0.05, "default": 0.0},
     "size_range": {"min": 512, "max": 512, "multiple": 8}, "default_size": "512x512"},
    {"id": "edge/defaults-outside", "label": "Defaults outside the range", "modes": ["text-to-image",
                                                                                   "image-to-image", "variation"],
     "max_images": 2, "steps": {"min": 10, "max": 20, "default": 50},
     "guidance": {"min": 2.0, "max": 3.0, "default": 0.0}, "strength": {"min": 0.3, "max": 0.6, "default": 0.9},
     "size_range": {"min": 256, "max": 768, "multiple": 64}, "default_size": "1024x1024"},
]


@pytest.fixture
def fresh_install(studio_home, monkeypatch):
    """The state a new user starts in: nothing configured at all (conftest already removed keys and
    set HF_HUB_OFFLINE=1). One local visitor; Streamlit's process-wide caches cleared around the test."""
    monkeypatch.delenv("STUDIO_DEFAULT_PROVIDER", raising=False)
    monkeypatch.delenv("STUDIO_PROVIDER_PLUGINS", raising=False)
    monkeypatch.setenv("STUDIO_VISITORS", "local")
    st.cache_resource.clear()
    yield studio_home
    st.cache_resource.clear()


@pytest.fixture
def edge_models(fresh_install):
    """The fresh install plus ``SINGLE_VALUE_MODELS`` added to the local provider's catalog."""
    folder = fresh_install / "catalog"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "local.json").write_text(json.dumps({"models": SINGLE_VALUE_MODELS}), encoding="utf-8")
    yield fresh_install


def open_page(path: str) -> AppTest:
    return AppTest.from_file(str(ROOT / path), default_timeout=30).run()


def no_crash(at: AppTest, where: str = "") -> None:
    assert not at.exception, (where, [e.value for e in at.exception])


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; have {[b.label for b in at.button]}"
    return matches[0]


def messages(at: AppTest, *kinds: str) -> list[str]:
    return [as_read(e.value) for kind in kinds for e in at.get(kind)]  # messages show user text escaped


def png(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def nothing_stored(home: Path) -> bool:
    studio = Studio(home)
    try:
        return studio.history(owner="local").total == 0
    finally:
        studio.close()


# -- every page renders ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_on_a_fresh_install(fresh_install, path):
    at = open_page(path)
    no_crash(at, path)
    assert at.title, f"{path} drew no title"


# -- each page's main action ends in a result or a clear message ----------------------------------


def assert_says_the_local_model_is_missing(at: AppTest) -> None:
    errors = messages(at, "error")
    assert errors, messages(at, "warning", "info")
    assert any(DEFAULT_LOCAL_MODEL in text for text in errors), errors


def test_generate_on_a_fresh_install_says_the_local_model_is_missing(fresh_install):
    at = open_page(GENERATE)
    assert at.selectbox(key="gen_provider").value == "local"
    at.text_area(key="gen_prompt").input("a lighthouse at dusk").run()
    button(at, "Generate").click().run()
    no_crash(at)
    assert_says_the_local_model_is_missing(at)
    assert at.text_area(key="gen_prompt").value == "a lighthouse at dusk"  # the input is kept
    assert nothing_stored(fresh_install)


def test_edit_on_a_fresh_install_asks_for_an_image_then_says_the_model_is_missing(fresh_install):
    at = open_page(EDIT)
    at.text_area(key="edit_prompt").input("make it winter").run()
    button(at, "Apply edit").click().run()
    no_crash(at)
    assert any("input image" in text for text in messages(at, "error")), messages(at, "error")
    at.radio(key="edit_source_kind").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value(("photo.png", png(), "image/png")).run()
    button(at, "Apply edit").click().run()
    no_crash(at)
    assert_says_the_local_model_is_missing(at)
    assert nothing_stored(fresh_install)


def test_variations_on_a_fresh_install_from_a_prompt_and_from_an_upload(fresh_install):
    at = open_page(VARIATIONS)
    at.radio(key="var_origin").set_value("A prompt").run()
    at.text_area(key="var_prompt").input("a red kite").run()
    next(b for b in at.button if b.label.startswith("Make ")).click().run()
    no_crash(at)
    assert_says_the_local_model_is_missing(at)
    at.radio(key="var_origin").set_value("An image").run()
    at.radio(key="var_source_kind").set_value("Upload").run()
    at.file_uploader(key="var_upload").set_value(("photo.png", png(), "image/png")).run()
    next(b for b in at.button if b.label.startswith("Make ")).click().run()
    no_crash(at)
    assert_says_the_local_model_is_missing(at)
    assert nothing_stored(fresh_install)


def test_batch_on_a_fresh_install_previews_and_says_why_it_cannot_run(fresh_install):
    at = open_page(BATCH)
    assert at.selectbox(key="batch_provider").value == "local"
    assert not [s for s in at.slider if s.label == "Scenes at once"]  # one at a time: said, not a slider
    assert any("Scenes at once: **1**" in c.value for c in at.caption)
    at.text_area(key="batch_script").set_value("00:01 a lighthouse\n00:02 waves on the rocks").run()
    no_crash(at)
    assert list(at.dataframe[0].value["text"]) == ["a lighthouse", "waves on the rocks"]
    assert any(DEFAULT_LOCAL_MODEL in text for text in messages(at, "warning")), messages(at, "warning")
    assert button(at, "Run 2 scene(s)").disabled


def test_history_and_boards_on_a_fresh_install(fresh_install):
    at = open_page(HISTORY)
    no_crash(at)
    assert messages(at, "info"), "an empty history says so"
    at = open_page(BOARDS)
    at.text_input(key="mb_new_name").input("Forest mood")  # a form: sent with its submit button
    button(at, "Create").click().run()
    no_crash(at)
    assert at.selectbox(key="mb_board").value is not None


# -- every catalog model on every page ------------------------------------------------------------


def page_models(mode_of_page: tuple[str, ...]) -> list[tuple[str, str]]:
    catalog = Catalog()
    return [(provider, model.id) for provider in catalog.providers() for model in catalog.models(provider)
            if any(model.supports(mode) for mode in mode_of_page)]


# page, its provider/model key prefix, the mode it lists models for, and the settings that pick that mode
MODEL_PAGES = [
    (GENERATE, "gen", ("text-to-image",), {}),
    (EDIT, "edit", ("image-to-image",), {}),
    (EDIT, "edit", ("inpaint",), {"edit_kind": "Inpaint with a mask"}),
    (VARIATIONS, "var", ("image-to-image",), {"var_origin": "An image"}),
    (VARIATIONS, "var", ("text-to-image",), {"var_origin": "A prompt", "var_scene": True}),
    (BATCH, "batch", ("text-to-image",), {}),
]


def pick_every_model(at: AppTest, prefix: str, models: list[tuple[str, str]], where: str) -> list[str]:
    """Select each (provider, model) on the page; return the models it drew."""
    drawn = []
    for provider, model_id in models:
        at.selectbox(key=f"{prefix}_provider").set_value(provider).run()
        no_crash(at, f"{where} {provider}")
        at.selectbox(key=f"{prefix}_model_{provider}").set_value(model_id).run()
        no_crash(at, f"{where} {provider}/{model_id}")
        drawn.append(at.selectbox(key=f"{prefix}_model_{provider}").value)
    return drawn


@pytest.mark.parametrize("path, prefix, modes, settings", MODEL_PAGES,
                         ids=[f"{p.split('/')[-1]}-{m[0]}" for p, _, m, _ in MODEL_PAGES])
def test_every_catalog_model_draws_on_every_page(edge_models, path, prefix, modes, settings):
    at = open_page(path)
    for key, value in settings.items():
        widget = at.checkbox(key=key) if isinstance(value, bool) else at.radio(key=key)
        widget.set_value(value).run()
    models = page_models(modes) + [("local", m["id"]) for m in SINGLE_VALUE_MODELS
                                   if any(mode in m["modes"] for mode in modes)]
    assert pick_every_model(at, prefix, models, path) == [model_id for _, model_id in models]


def test_bounds_are_valid_for_every_catalog_model_and_provider(edge_models):
    """The bounds every front end draws from: min <= default <= max, whatever the catalog says."""
    from studio.controls import concurrency_bounds, setting_bounds, variation_count_bounds

    catalog = Catalog(edge_models / "catalog")
    models = [m for p in catalog.providers() for m in catalog.models(p, include_retired=True)]
    assert {m["id"] for m in SINGLE_VALUE_MODELS} <= {m.id for m in models}
    for model in models:
        for mode in ("text-to-image", *model.modes):
            for name, bounds in setting_bounds(model, mode).items():
                if bounds is not None:
                    assert bounds.min <= bounds.default <= bounds.max, (model.id, mode, name, bounds)
        for scenes in (None, 1, 8):
            count = variation_count_bounds(model, scenes)
            assert 1 <= count.min <= count.default <= count.max, (model.id, count)

    class OneAtATime:
        max_concurrency = 1

    one = concurrency_bounds(OneAtATime())
    assert one.fixed and one.default == 1


# -- only a local model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_with_only_a_local_model_runs_to_the_end(fresh_install, monkeypatch, tiny_model_dir, one_torch_thread):
    """The case that crashed: the local provider (one scene at a time) as the only provider ready."""
    from studio.jobs import JobManager, JobStatus
    from ui.widgets import control_key

    monkeypatch.setenv("STUDIO_LOCAL_MODEL", str(tiny_model_dir))
    st.cache_resource.clear()
    at = open_page(BATCH)
    no_crash(at)
    studio = Studio(fresh_install)
    model = studio.provider("local").model(None)
    at.slider(key=control_key("batch", "steps", model)).set_value(2)
    at.number_input(key=control_key("batch", "w", model)).set_value(256)
    at.number_input(key=control_key("batch", "h", model)).set_value(256)
    at.text_area(key="batch_script").set_value("00:01 tiny noise").run()
    no_crash(at)
    button(at, "Run 1 scene(s)").click().run()
    no_crash(at)
    job_id = at.query_params["job"]
    job_id = job_id[0] if isinstance(job_id, list) else job_id
    watcher = JobManager(studio)  # reads the store; the page's manager runs the job
    try:
        assert watcher.wait(job_id, timeout=240).status is JobStatus.COMPLETED
    finally:
        watcher.close()
    at.run()
    no_crash(at)
    (record,) = studio.history(owner="local").items
    assert (record.provider, record.width, record.height) == ("local", 256, 256)
    studio.close()


# -- the Gradio app: every tab's settings for every model, and each tab's action on a fresh install --


GRADIO_TAB_KINDS = ("text-to-image", "edit", "variation")  # the Generate/Batch, Edit and Variations tabs


def test_every_catalog_model_gives_each_gradio_tab_settings_gradio_accepts(edge_models):
    """What picking a model sends to its tab's sliders (``model_props``) builds real Gradio sliders
    whose default passes Gradio's own range check (it refuses min == max and a value out of range)."""
    import gradio as gr

    from gradio_ui.controls import CREATE_MODES, model_props

    catalog = Catalog(edge_models / "catalog")
    checked = 0
    for provider in catalog.providers():
        for model in catalog.models(provider):
            for kind in GRADIO_TAB_KINDS:
                if not any(model.supports(mode) for mode in CREATE_MODES[kind]):
                    continue
                props = model_props(model, kind)
                for name in ("n", "steps", "guidance", "strength"):
                    if props[name]["visible"]:
                        slider = gr.Slider(label=name, **props[name])
                        assert slider.preprocess(props[name]["value"]) == props[name]["value"], (model.id, name)
                checked += 1
    assert checked > 40


@pytest.fixture
def fresh_gradio(fresh_install, tmp_path, monkeypatch):
    """The Gradio app over a fresh install, launched on loopback, one visitor's client."""
    from gradio_client import Client

    import gradio_app
    from gradio_ui.identity import Access

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    studio = Studio(fresh_install)
    demo = gradio_app.build_app(studio, access=Access(), export_dir=tmp_path / "exports")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield Client(url, verbose=False), studio
    finally:
        demo.close()
        from studio.jobs import get_manager

        get_manager(studio).close(wait=2)
        studio.close()


def test_every_gradio_action_on_a_fresh_install_ends_in_a_clear_message(fresh_gradio, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, studio = fresh_gradio
    listing = client.predict(api_name="/providers")
    local = next(p for p in listing["providers"] if p["name"] == "local")
    assert local["state"] != "ready" and DEFAULT_LOCAL_MODEL in local["reason"]
    photo = tmp_path / "photo.png"
    photo.write_bytes(png())
    calls = {
        "/generate": ("a lighthouse at dusk", "", "", {}),
        "/edit": (handle_file(str(photo)), "make it winter", None, "", "", "", {}),
        "/variations": (None, "", "a red kite", 2, False, "", "", {}),
        "/batch": ("00:01 a lighthouse\n00:02 waves", "", "", "", "", {}),
    }
    for endpoint, args in calls.items():
        with pytest.raises(AppError) as raised:
            client.predict(*args, api_name=endpoint)
        text = str(raised.value)
        assert DEFAULT_LOCAL_MODEL in text and "Traceback" not in text, (endpoint, text)
    _files, history = client.predict(api_name="/history")
    assert history["total"] == 0
    assert studio.history().total == 0  # nothing stored, nothing paid


def test_every_catalog_model_gives_the_gradio_variations_count_a_valid_slider(edge_models):
    import gradio as gr

    from gradio_ui.create_tabs import variation_count_props
    from studio.controls import variation_count_bounds

    catalog = Catalog(edge_models / "catalog")
    for provider in catalog.providers():
        for model in catalog.models(provider):
            for scenes in (None, 8):
                bounds = variation_count_bounds(model, scenes)
                props = variation_count_props(bounds)
                if props["visible"]:
                    slider = gr.Slider(label="Variations", **props)
                    assert slider.preprocess(props["value"]) == props["value"]
                    assert scenes or props["maximum"] <= model.max_images, (model.id, props)
                else:
                    assert bounds.fixed and bounds.default == 1

"""Provider options are typed once, by the model's schema, and keep their types to the provider.

Driven through each way in: the CLI's ``--option``, a batch script's options (text, CSV, JSON), the
library, Gradio's endpoint actions, and checked where they arrive: the JSON body the Replicate fake
receives (its schema is Replicate's published one: booleans, integers and numbers, not texts) and
the images the OpenAI fake receives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import studio as studio_api
from streamlit.testing.v1 import AppTest

from gradio_ui.controls import model_props
from gradio_ui.endpoints import Actions, request_fields
from studio.catalog import Catalog
from studio.cli import main
from studio.errors import InvalidRequest
from studio.jobs.manager import JobManager
from studio.jobs.runner import build_request
from studio.options import coerce_options, option_specs, parse_option_pairs
from studio.service import Studio
from studio.types import GenerationRequest
from tests.test_app_pages import GENERATE, ROOT, button, no_crash, settle
from ui.widgets import control_key

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"
PRO = "black-forest-labs/flux-1.1-pro"


@pytest.fixture
def replicate(cloud_fake):
    return cloud_fake("replicate")


@pytest.fixture
def studio(studio_home, replicate):
    instance = Studio(home=studio_home)
    yield instance
    instance.close()


def sent_inputs(fake) -> list[dict]:
    return [prediction.input for prediction in fake.predictions.values()]


def png(path: Path, color=(200, 40, 40), size=(64, 64)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, options, expected", [
    (SCHNELL, ["go_fast=false", "megapixels=0.25"], {"go_fast": False, "megapixels": "0.25"}),
    (PRO, ["safety_tolerance=2", "prompt_upsampling=true"], {"safety_tolerance": 2, "prompt_upsampling": True}),
    (DEV, ["guidance=3.5"], {"guidance": 3.5}),
])
def test_cli_options_reach_replicate_as_booleans_and_numbers(replicate, capsys, model, options, expected):
    argv = ["generate", "a red kite", "--provider", "replicate", "--model", model, "--json"]
    for option in options:
        argv += ["--option", option]
    assert main(argv) == 0, capsys.readouterr().err
    (sent,) = sent_inputs(replicate)
    assert {name: sent[name] for name in expected} == expected
    # the JSON types themselves, not just equal values (False == 0, 2 == 2.0)
    assert {name: type(sent[name]) for name in expected} == {name: type(v) for name, v in expected.items()}
    record = json.loads(capsys.readouterr().out)["images"][0]
    stored = studio_api.get_studio().get_image(record["id"], "local").params["extra"]
    assert stored == expected


@pytest.mark.parametrize("option, words", [
    ("go_fast=maybe", ["go_fast", "'maybe'", "true or false"]),
    ("megapixels=2", ["megapixels", "'2'", "one of 1, 0.25"]),
    ("colour=red", ["'colour'", "go_fast, megapixels"]),
])
def test_cli_refuses_a_bad_option_in_one_error_line_before_calling(replicate, capsys, option, words):
    assert main(["generate", "a kite", "--provider", "replicate", "--model", SCHNELL, "--option", option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert all(word in err[0] for word in words), err[0]
    assert sent_inputs(replicate) == []


def test_cli_providers_says_what_each_option_takes(capsys):
    assert main(["providers"]) == 0
    out = capsys.readouterr().out
    assert "--option go_fast: true or false; megapixels: one of 1, 0.25" in out
    assert "guidance: a number from 0 to 10" in out


def test_cli_reference_images_are_images_not_characters(cloud_fake, capsys, tmp_path):
    openai = cloud_fake("openai")
    source, first, second = (png(tmp_path / f"{n}.png", color) for n, color in
                             (("in", (10, 10, 10)), ("a", (250, 0, 0)), ("b", (0, 0, 250))))
    argv = ["edit", str(source), "add a hat", "--provider", "openai", "--json",
            "--option", f"reference_images={first}"]
    assert main(argv) == 0, capsys.readouterr().err
    assert len(openai.calls[-1]["images"]) == 2  # the input and one reference (was one per character)
    assert main([*argv, "--option", f"reference_images={second}"]) == 0, capsys.readouterr().err
    assert len(openai.calls[-1]["images"]) == 3


# -- the library -----------------------------------------------------------------------------------


def test_library_options_given_as_text_are_sent_typed(studio, replicate):
    studio.generate(GenerationRequest(prompt="a harbour", provider="replicate", model=DEV,
                                      extra={"guidance": "3.5", "go_fast": "no"}))
    (sent,) = sent_inputs(replicate)
    assert (sent["guidance"], sent["go_fast"]) == (3.5, False)


def test_reference_image_count_in_the_estimate_is_images_not_characters(cloud_fake, studio_home, tmp_path):
    cloud_fake("openai")
    studio = Studio(home=studio_home)
    try:
        source, reference = png(tmp_path / "in.png"), png(tmp_path / "ref.png", (0, 90, 0))
        base = studio.quote(GenerationRequest(prompt="a hat", provider="openai", mode="image-to-image",
                                              init_image=str(source)))
        with_one = studio.quote(GenerationRequest(prompt="a hat", provider="openai", mode="image-to-image",
                                                  init_image=str(source),
                                                  extra={"reference_images": str(reference)}))
        two = [str(reference), str(reference)]
        with_two = studio.quote(GenerationRequest(prompt="a hat", provider="openai", mode="image-to-image",
                                                  init_image=str(source), extra={"reference_images": two}))
        assert with_two.estimate - with_one.estimate == pytest.approx(with_one.estimate - base.estimate)
    finally:
        studio.close()


def test_a_rerun_of_an_edit_with_reference_images_asks_for_them_again(cloud_fake, studio_home, tmp_path):
    openai = cloud_fake("openai")
    studio = Studio(home=studio_home)
    try:
        source, reference = png(tmp_path / "in.png"), png(tmp_path / "ref.png", (0, 90, 0))
        made = studio.edit(source.read_bytes(), "a hat", provider="openai",
                           extra={"reference_images": [reference.read_bytes()]})
        recorded = studio.get_image(made.images[0].id, "local").params["extra"]["reference_images"]
        assert [value.startswith("sha256:") for value in recorded] == [True]  # no bytes, no repr in the record
        request = studio.request_from_image(made.images[0].id)
        calls = len(openai.calls)
        with pytest.raises(InvalidRequest, match="reference_images image 1 is known only by its fingerprint"):
            studio.generate(request)
        assert len(openai.calls) == calls
    finally:
        studio.close()


def test_a_remote_visitor_cannot_name_server_files_as_reference_images(cloud_fake, studio_home, tmp_path):
    openai = cloud_fake("openai")
    studio = Studio(home=studio_home)
    studio.settings.local_free_paths = False  # what the web front ends set for remote visitors
    try:
        source, reference = png(tmp_path / "in.png"), png(tmp_path / "ref.png", (0, 90, 0))
        with pytest.raises(InvalidRequest, match="not file names on the server"):
            studio.edit(source.read_bytes(), "a hat", provider="openai", extra={"reference_images": str(reference)})
        assert openai.calls == []
        studio.edit(source.read_bytes(), "a hat", provider="openai",
                    extra={"reference_images": [reference.read_bytes()]})  # an upload is fine
        assert len(openai.calls[-1]["images"]) == 2
    finally:
        studio.close()


def test_a_single_file_checkpoint_takes_its_config_as_the_local_provider_says(studio):
    # providers/local.py tells people to "pass extra={'config': <diffusers folder>}"; it was refused
    request = GenerationRequest(prompt="a quay", provider="local", model="/models/mine.safetensors",
                                extra={"config": "/models/sd15"})
    assert studio.prepare(request).request.extra == {"config": "/models/sd15"}
    template = studio.catalog.model("local", "/models/mine.safetensors")
    with pytest.raises(InvalidRequest, match="option config names a file on the server"):
        coerce_options(template, {"config": "/models/sd15"}, server_files=False)


# -- batch scripts ---------------------------------------------------------------------------------


SCRIPTS = {
    "scenes.txt": "a lighthouse --option go_fast=false\na harbour --option megapixels=1 --option go_fast=yes\n",
    "scenes.csv": "text,option.go_fast,option.megapixels\na lighthouse,false,\na harbour,yes,1\n",
    "scenes.json": json.dumps([{"text": "a lighthouse", "options": {"go_fast": False}},
                               {"text": "a harbour", "option.go_fast": "yes", "option.megapixels": 1}]),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_options_are_typed_per_scene_over_the_jobs(studio, name):
    preview = JobManager(studio).preview(SCRIPTS[name], name=name, provider="replicate", model=SCHNELL,
                                         extra={"megapixels": "0.25"})
    assert preview.errors == []
    extras = [studio.prepare(build_request(preview.job, item)).request.extra for item in preview.items]
    assert extras == [{"go_fast": False, "megapixels": "0.25"}, {"go_fast": True, "megapixels": "1"}]


def test_a_batch_refuses_options_its_stored_job_could_not_hold(cloud_fake, studio_home, tmp_path):
    cloud_fake("openai")
    studio = Studio(home=studio_home)
    try:
        reference = png(tmp_path / "ref.png").read_bytes()
        with pytest.raises(InvalidRequest, match="stored and resumed"):
            JobManager(studio).preview("a hat\n", name="s.txt", provider="openai",
                                       extra={"reference_images": [reference]})
    finally:
        studio.close()


def test_a_scene_with_a_bad_option_is_refused_with_its_line(studio):
    preview = JobManager(studio).preview("a lighthouse\na harbour --option go_fast=perhaps\n", name="s.txt",
                                         provider="replicate", model=SCHNELL)
    assert len(preview.errors) == 1
    assert preview.errors[0].startswith("line 2: ") and "go_fast='perhaps'" in preview.errors[0]


# -- Gradio ----------------------------------------------------------------------------------------


def test_gradio_options_are_typed_before_they_reach_replicate(studio, replicate):
    fields = request_fields({"extra": {"guidance": "3.5", "megapixels": 1}})
    Actions(studio, exporter=None).generate("visitor-1", "a quay", provider="replicate", model=DEV, **fields)
    (sent,) = sent_inputs(replicate)
    assert (sent["guidance"], sent["megapixels"]) == (3.5, "1")


def test_gradio_shows_an_example_of_the_options_that_the_model_accepts(studio):
    for provider in ("openai", "replicate", "stability", "gemini"):
        for model in studio.catalog.models(provider):
            shown = model_props(model, "text-to-image")["options"]
            if not shown["visible"] or not model.supports("text-to-image"):
                continue
            example = json.loads(shown["placeholder"])
            assert example, model.id
            request = GenerationRequest(prompt="a quay", provider=provider, model=model.id, extra=example)
            assert set(studio.prepare(request).request.extra) == set(example), model.id


# -- Streamlit -------------------------------------------------------------------------------------


def test_streamlit_shows_each_option_by_its_type_and_sends_it_typed(app_home, cloud_fake):
    replicate = cloud_fake("replicate")
    at = AppTest.from_file(str(ROOT / GENERATE), default_timeout=30).run()
    at.text_area(key="gen_prompt").input("a quay at night").run()
    at.selectbox(key="gen_provider").select("replicate").run()
    at.selectbox(key="gen_model_replicate").select(DEV).run()
    no_crash(at)
    model = Catalog(app_home / "catalog").model("replicate", DEV)
    # guidance (a number from 0 to 10) had no control at all: only listed values were shown
    at.number_input(key=control_key("gen", "opt_guidance", model)).set_value(3.5)
    at.selectbox(key=control_key("gen", "opt_go_fast", model)).select(False)
    at.run()
    button(at, "Generate").click().run()
    settle(at)
    no_crash(at)
    (sent,) = sent_inputs(replicate)
    assert (sent["guidance"], sent["go_fast"]) == (3.5, False)


def test_streamlit_reopens_a_records_options_in_their_widgets(app_home, cloud_fake):
    cloud_fake("replicate")
    at = AppTest.from_file(str(ROOT / GENERATE), default_timeout=30)
    # an older record may hold text ("false"); the widget gets the typed value
    at.session_state["gen_prefill"] = GenerationRequest(prompt="a quay", provider="replicate", model=DEV,
                                                        extra={"guidance": 3.5, "go_fast": "false"})
    at.run()
    no_crash(at)
    model = Catalog(app_home / "catalog").model("replicate", DEV)
    assert at.number_input(key=control_key("gen", "opt_guidance", model)).value == 3.5
    assert at.selectbox(key=control_key("gen", "opt_go_fast", model)).value is False


# -- the schema itself -----------------------------------------------------------------------------


def test_every_catalog_option_has_a_type(studio):
    for provider in studio.catalog.providers():
        for model in studio.catalog.models(provider, include_retired=True):
            for spec in option_specs(model).values():
                assert spec.kind != "string" or spec.choices, f"{model.id}: {spec.name} is free text"


def test_a_catalog_override_with_a_malformed_option_is_an_error_naming_it(tmp_path):
    (tmp_path / "replicate.json").write_text(json.dumps(
        {"models": [{"id": DEV, "options": {"guidance": {"type": "float", "min": 0}}}]}))
    with pytest.raises(ValueError, match=f"'guidance' of {DEV}: type 'float'"):
        Catalog(tmp_path).model("replicate", DEV)


def test_parse_option_pairs_collects_repeated_names_and_refuses_malformed_items():
    assert parse_option_pairs(["a=1", "b = x=y", "a=2"]) == {"a": ["1", "2"], "b": "x=y"}
    with pytest.raises(InvalidRequest, match="NAME=VALUE"):
        parse_option_pairs(["go_fast"])


def test_numbers_refuse_booleans_and_non_finite_values(studio):
    model = studio.catalog.model("replicate", DEV)
    for value in (True, "inf", "nan", "11", "-1"):
        with pytest.raises(InvalidRequest, match="from 0 to 10"):
            coerce_options(model, {"guidance": value})
    assert coerce_options(model, {"guidance": 4}) == {"guidance": 4.0}

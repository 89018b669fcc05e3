"""The Gradio app, launched in-process on 127.0.0.1 and driven through its named API with gradio_client.

Providers: the echo test provider (fast, deterministic), the tiny local diffusers model (real
pipelines, per-step progress) and the OpenAI loopback fake (a cloud provider's real wire format).
Identity: two clients never see each other's images; with password login each user owns theirs.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
import yaml
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import gradio_app
from gradio_ui.context import Limits
from gradio_ui.controls import model_props, size_choices
from gradio_ui.create_tabs import mask_from_editor
from gradio_ui.endpoints import Actions, Exporter, StopSwitches, request_fields, visitor_errors
from gradio_ui.identity import HF_PREFIX, Access, new_token, owner_for, parse_users
from studio.identity import VISITOR_PREFIX, VisitorIds
from studio.catalog import Catalog
from studio.config import Settings
from studio.errors import InvalidRequest, QuotaExhausted
from studio.metadata import read_metadata
from studio.service import Studio
from studio.types import ProgressEvent
from tests.fakes import echo_provider
from tests.fakes.http import FakeServer
from tests.fakes.openai_fake import OpenAIFake

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = {"/generate", "/edit", "/variations", "/batch", "/providers", "/history"}


def png_file(folder: Path, name: str, size=(64, 64), color=(200, 30, 30), mode="RGB") -> Path:
    path = folder / name
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Running:
    """A launched app and its studio."""

    def __init__(self, studio: Studio, demo: gr.Blocks, url: str):
        self.studio, self.demo, self.url = studio, demo, url

    def client(self, **kwargs) -> Client:
        return Client(self.url, verbose=False, **kwargs)


def launch(home: Path, tiny_model_dir: Path | None, access: Access, limits: Limits | None = None) -> Running:
    echo_provider.install(home / "catalog")
    settings = Settings.load(home, local_model=str(tiny_model_dir) if tiny_model_dir else "none")
    studio = Studio(settings=settings)
    demo = gradio_app.build_app(studio, access=access, limits=limits, export_dir=home.parent / f"{home.name}-exports")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            auth=access.users or None, max_file_size=gradio_app.MAX_UPLOAD)
    return Running(studio, demo, url)


def shut(app: Running) -> None:
    app.demo.close()
    from studio.jobs import get_manager

    get_manager(app.studio).close(wait=2)
    app.studio.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-tmp")))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        running = launch(tmp_path_factory.mktemp("gradio-home") / "home", tiny_model_dir, Access())
        yield running
        shut(running)


@pytest.fixture
def echo():
    provider = echo_provider.EchoProvider
    provider.latency, provider.failures = 0.0, []
    yield provider
    provider.latency, provider.failures = 0.0, []


# -- the API surface -------------------------------------------------------------------------------


def test_the_api_lists_exactly_the_named_endpoints_with_named_parameters(app):
    info = app.client().view_api(print_info=False, return_format="dict")
    assert set(info["named_endpoints"]) == ENDPOINTS
    assert not info["unnamed_endpoints"]  # the UI's own events are private
    generate = [p["parameter_name"] for p in info["named_endpoints"]["/generate"]["parameters"]]
    assert generate == ["prompt", "provider", "model", "options"]
    edit = [p["parameter_name"] for p in info["named_endpoints"]["/edit"]["parameters"]]
    assert edit == ["image", "prompt", "mask", "image_id", "provider", "model", "options"]


def test_every_child_of_a_tab_bar_is_a_tab(app):
    """Anything else between two tabs (a gr.State made inside gr.Tabs() but outside a tab) makes the
    browser's tab bar lose a tab after a switch ("History, History", Mood boards gone)."""
    bars = [block for block in app.demo.blocks.values() if isinstance(block, gr.Tabs)]
    assert bars
    for bar in bars:
        assert [type(child).__name__ for child in bar.children if not isinstance(child, gr.Tab)] == []
    assert [child.label for child in bars[0].children] == ["Generate", "Edit", "Variations", "Batch from script",
                                                          "History", "Mood boards", "API tokens"]


def test_queue_has_a_size_limit_and_generations_share_one_concurrency_group(app):
    queue = app.demo._queue
    assert queue.max_size == Limits().queue_size
    by_name = {fn.api_name: fn for fn in app.demo.fns.values() if fn.api_name}
    for name in ("generate", "edit", "variations"):
        assert by_name[name].concurrency_id == "generation"
        assert by_name[name].concurrency_limit == Limits().generation
    assert by_name["history"].concurrency_id == "reading"


def test_providers_endpoint_lists_states_models_and_styles(app):
    listing = app.client().predict(api_name="/providers")
    by_name = {p["name"]: p for p in listing["providers"]}
    assert by_name["echo"]["state"] == "ready"
    assert by_name["echo"]["models"][0]["steps"] == {"min": 1, "max": 150, "default": 4}
    assert by_name["openai"]["state"] == "missing_key" and "OPENAI_API_KEY" in by_name["openai"]["reason"]
    assert by_name["local"]["state"] == "ready"
    assert any(style["name"] == "cinematic" for style in listing["styles"])


# -- generating --------------------------------------------------------------------------------------


def test_generate_returns_the_stored_files_and_clean_json(app, echo):
    files, result = app.client().predict("a red fox in snow", "echo", "",
                                         {"n": 2, "seed": 7, "size": "96x64", "style": "cinematic", "tags": "fox"},
                                         api_name="/generate")
    assert len(files) == 2 and len(result["images"]) == 2
    assert [image["seed"] for image in result["images"]] == [7, 8]
    assert result["cost"] == pytest.approx(0.02) and result["estimated_cost"] == pytest.approx(0.02)
    for path, image in zip(files, result["images"]):
        assert Path(path).name == image["file"]
        assert sha256(path) == image["sha256"]  # the exact bytes the studio stored, metadata and all
        assert read_metadata(Path(path).read_bytes())["studio"]["id"] == image["id"]
        assert (image["width"], image["height"], image["tags"]) == (96, 64, ["fox"])
        assert image["prompt"] == "a red fox in snow" and image["full_prompt"].startswith("cinematic")
        assert "path" not in image and str(app.studio.home) not in str(image)  # no server paths


def test_generate_applies_post_processing_from_options(app, echo):
    files, result = app.client().predict("a tiny moth", "echo", "", {"size": "64x64", "postprocess": {"upscale": 2}},
                                         api_name="/generate")
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (128, 128)
    assert Image.open(files[0]).size == (128, 128)


def test_a_submitted_job_reports_status_and_progress_before_its_result(app, echo):
    echo.latency = 0.6
    job = app.client().submit("a slow lighthouse", "echo", "", {"seed": 1}, api_name="/generate")
    descriptions, codes = set(), set()
    while not job.done():
        status = job.status()
        codes.add(status.code.name)
        for unit in status.progress_data or []:
            descriptions.add(unit.desc)
        time.sleep(0.02)
    files, result = job.result()
    assert len(files) == 1 and result["images"][0]["seed"] == 1
    assert "PROCESSING" in codes or "PROGRESS" in codes
    assert "echo / echo-1" in descriptions  # the studio's own progress message reached the client


def test_local_model_progress_is_reported_per_step(app, tmp_path):
    seen: list[tuple[float, str]] = []

    def progress(fraction, desc=None):
        seen.append((fraction, desc))

    actions = Actions(app.studio, Exporter(app.studio, tmp_path))
    result = actions.generate("anon:progress", "a harbour", "local", "", progress=progress, width=256, height=256,
                              steps=3, seed=5)
    steps = [desc for _fraction, desc in seen if desc and desc.startswith("generating: step")]
    assert steps == ["generating: step 1/3", "generating: step 2/3", "generating: step 3/3"]
    fractions = [fraction for fraction, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert result.images[0].seed == 5


def test_local_model_through_the_api_then_inpainting_with_a_mask_file(app, tmp_path):
    client = app.client()
    files, made = client.predict("a harbour at dawn", "local", "", {"size": "256x256", "steps": 2, "seed": 3},
                                 api_name="/generate")
    assert made["images"][0]["provider"] == "local" and made["images"][0]["seed"] == 3
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    mask.save(tmp_path / "mask.png")
    files, edited = client.predict(handle_file(files[0]), "a red boat", handle_file(str(tmp_path / "mask.png")), "",
                                   "local", "", {"steps": 2, "strength": 0.8, "seed": 4}, api_name="/edit")
    image = edited["images"][0]
    assert image["mode"] == "inpaint" and (image["width"], image["height"]) == (256, 256)
    assert Image.open(files[0]).size == (256, 256)


def test_a_private_visitor_cannot_name_a_server_path_as_the_local_model(app, tmp_path):
    # Free model paths are for the person at the machine; a remote visitor picks from the offered
    # models, and the answer is the same whatever the path is (nothing tells what exists).
    client = app.client()
    checkpoint = tmp_path / "uploaded.ckpt"  # e.g. a file that came in through Gradio's upload route
    checkpoint.write_bytes(b"pickle")
    answers = set()
    for model in (str(checkpoint), str(tmp_path), str(tmp_path / "missing.safetensors"), "/etc/passwd"):
        with pytest.raises(AppError) as caught:
            client.predict("a harbour", "local", model, {"size": "256x256", "steps": 2}, api_name="/generate")
        answers.add(str(caught.value))
    assert len(answers) == 1
    (answer,) = answers
    assert "offers only its listed local models" in answer and str(tmp_path) not in answer


def test_edit_and_variations_by_image_id_chain_to_the_parent(app, echo):
    client = app.client()
    _files, made = client.predict("a blue door", "echo", "", {"seed": 2}, api_name="/generate")
    parent = made["images"][0]["id"]
    _files, edited = client.predict(None, "a red door", None, parent, "echo", "", {"strength": 0.4},
                                    api_name="/edit")
    assert edited["images"][0]["parent_id"] == parent and edited["images"][0]["mode"] == "image-to-image"
    files, varied = client.predict(None, parent, "", 3, False, "", "", {}, api_name="/variations")
    assert len(files) == 3 and {i["parent_id"] for i in varied["images"]} == {parent}
    assert varied["images"][0]["prompt"] == "a blue door"  # the stored image's own prompt
    files, scenes = client.predict(None, parent, "", 2, True, "", "", {}, api_name="/variations")
    assert len(files) == 2 and any(tag.startswith("scene:") for tag in scenes["images"][0]["tags"])


def test_batch_illustrates_a_script_keeping_timestamps(app, echo):
    script = "00:00 a lighthouse on a cliff\n00:05 waves on the rocks --seed 9\n00:12 a ship in the fog"
    files, job = app.client().predict(script, "", "", "echo", "", {"style": "cinematic", "seed": 100},
                                      api_name="/batch")
    assert job["status"] == "COMPLETED" and job["total"] == 3 and len(files) == 3
    assert [item["timestamp"] for item in job["items"]] == ["00:00", "00:05", "00:12"]
    seeds = [item["images"][0]["seed"] for item in job["items"]]
    assert seeds == [100, 9, 102]  # per-scene seeds, with the scene's own override
    assert [Path(f).name for f in files] == [item["images"][0]["file"] for item in job["items"]]
    assert all("path" not in image for item in job["items"] for image in item["images"])


def test_batch_webhooks_must_be_public_on_a_shared_server(app, echo):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="private|public|refus"):
        app.client().predict("one scene", "", "", "echo", "", {"webhook": "http://127.0.0.1:9/hook"},
                             api_name="/batch")


# -- who sees what -------------------------------------------------------------------------------------


def test_two_clients_never_see_each_others_images(app, echo):
    first, second = app.client(), app.client()
    _files, made = first.predict("a private sketch", "echo", "", {}, api_name="/generate")
    image_id = made["images"][0]["id"]
    files, page = first.predict("", "", "", "", "", 10, 0, api_name="/history")
    assert image_id in [item["id"] for item in page["items"]] and len(files) == page["total"]
    _files, other = second.predict("", "", "", "", "", 10, 0, api_name="/history")
    assert other["total"] == 0
    _files, searched = second.predict(image_id, "", "", "", "", 10, 0, api_name="/history")
    assert searched["total"] == 0
    with pytest.raises(AppError, match=f"no image with id '{image_id}'"):
        second.predict(None, "steal it", None, image_id, "echo", "", {}, api_name="/edit")
    assert app.studio.storage.get(image_id).owner.startswith(VISITOR_PREFIX)


def test_with_password_login_each_user_owns_their_history(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    running = launch(tmp_path / "home", None, Access(users=parse_users("alice:wonder,bob:builder")))
    try:
        alice = running.client(auth=("alice", "wonder"))
        _files, made = alice.predict("alice's cat", "echo", "", {}, api_name="/generate")
        assert running.studio.get_image(made["images"][0]["id"], "alice").owner == "alice"
        bob = running.client(auth=("bob", "builder"))
        assert bob.predict("", "", "", "", "", 10, 0, api_name="/history")[1]["total"] == 0
        again = running.client(auth=("alice", "wonder"))  # a new session of the same user
        assert again.predict("", "", "", "", "", 10, 0, api_name="/history")[1]["total"] == 1
        with pytest.raises(Exception):
            running.client(auth=("alice", "wrong"))
    finally:
        shut(running)


def test_exported_copies_and_the_data_directory_are_not_served_by_path(app, echo):
    files, made = app.client().predict("a guarded owl", "echo", "", {}, api_name="/generate")
    record = app.studio.get_image(made["images"][0]["id"], app.studio.storage.get(made["images"][0]["id"]).owner)
    exported = app.demo.studio_context.exporter.image_file(record, record.owner)
    for path in (exported, record.abs_path, str(app.studio.home / "index.sqlite3")):
        answer = httpx.get(f"{app.url}gradio_api/file={path}")
        assert answer.status_code == 403, path


# -- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (("", "echo", "", {}), "prompt is empty: describe the image you want"),
    (("a cat", "nope", "", {}), "unknown provider 'nope'"),
    (("a cat", "echo", "", {"size": "12x12"}), "width 12 is outside"),
    (("a cat", "echo", "", {"n": 9}), "number of images must be 1-4 for echo-1"),
    (("a cat", "echo", "", {"wings": 2}), "unknown option(s) 'wings'"),
    (("a cat", "echo", "", {"size": "big"}), "size 'big' is not WIDTHxHEIGHT"),
])
def test_bad_requests_come_back_as_gradio_errors_with_the_studios_message(app, args, message):
    with pytest.raises(AppError) as raised:
        app.client().predict(*args, api_name="/generate")
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value)


def test_a_file_that_is_not_an_image_and_a_path_for_an_id_are_refused(app, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    client = app.client()
    with pytest.raises(AppError, match="input image"):
        client.predict(handle_file(str(text)), "x", None, "", "echo", "", {}, api_name="/edit")
    with pytest.raises(AppError, match="is not an image id"):
        client.predict(None, "x", None, "../../etc/passwd", "echo", "", {}, api_name="/edit")


def test_bomb_truncated_and_mismatched_uploads_are_clear_errors(app, echo, tmp_path):
    from PIL import Image

    from tests.helpers import png

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png(64, 64)[:60])
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(64, 64))
    small_mask = tmp_path / "mask.png"
    small_mask.write_bytes(png(32, 32, mode="L"))
    client = app.client()
    for path, message in ((bomb, "pixel limit|decompression bomb"), (truncated, "truncated or corrupt|readable")):
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), "x", None, "", "echo", "", {}, api_name="/edit")
    with pytest.raises(AppError, match="mask is 32x32 but the image is 64x64"):
        client.predict(handle_file(str(photo)), "x", handle_file(str(small_mask)), "", "echo", "", {},
                       api_name="/edit")


def test_a_provider_failure_is_a_clear_error_and_records_nothing(app, echo):
    echo.failures = [QuotaExhausted("echo: the account is out of credit; add credit", provider="echo")]
    client = app.client()
    with pytest.raises(AppError, match="out of credit; add credit") as raised:
        client.predict("a costly cat", "echo", "", {}, api_name="/generate")
    assert raised.value.title == "Out of credit"
    assert client.predict("", "", "", "", "", 10, 0, api_name="/history")[1]["total"] == 0


@pytest.fixture
def openai_fake(monkeypatch):
    fake = OpenAIFake()
    with FakeServer(fake) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", fake.api_key)
        yield fake


def test_openai_through_the_api_against_its_fake_records_cost_and_hides_the_key(app, openai_fake):
    client = app.client()
    files, made = client.predict("a paper boat", "openai", "", {"quality": "low"}, api_name="/generate")
    assert openai_fake.calls[0]["quality"] == "low" and made["cost"] > 0
    assert Image.open(files[0]).size == (1024, 1024)
    openai_fake.quota_exhausted()
    with pytest.raises(AppError) as raised:
        client.predict("another boat", "openai", "", {"quality": "low"}, api_name="/generate")
    assert "quota" in str(raised.value).lower() and openai_fake.api_key not in str(raised.value)


# -- pieces, without a server --------------------------------------------------------------------------


class _Request:
    def __init__(self, username=None, session_hash=None):
        self.username, self.session_hash = username, session_hash


class _Profile:
    username = "octocat"


def test_the_owner_is_the_hf_account_then_the_login_then_an_anonymous_id(tmp_path):
    ids = VisitorIds.for_home(tmp_path)
    token = new_token()
    assert owner_for(_Request("alice", "s1"), _Profile(), token, ids=ids) == HF_PREFIX + "octocat"
    assert owner_for(_Request("alice", "s1"), None, token, ids=ids) == "alice"
    anonymous = owner_for(_Request(None, "s1"), None, token, ids=ids)
    assert anonymous.startswith(VISITOR_PREFIX) and token not in anonymous  # stored: a keyed hash, not the secret
    assert owner_for(_Request(None, "s2"), None, token, ids=ids) == anonymous  # the browser's secret decides
    assert owner_for(_Request(None, "s1"), None, anonymous, ids=ids) != anonymous  # an owner id is no secret
    by_session = owner_for(_Request(None, "s1"), None, "not-a-token", ids=ids)
    assert by_session.startswith(VISITOR_PREFIX) and by_session != owner_for(_Request(None, "s2"), None, None, ids=ids)
    assert "s1" not in by_session
    with pytest.raises(InvalidRequest):
        owner_for(None, None, None, ids=ids)
    assert owner_for(_Request(None, "s1"), None, token, single_user=True) == "local"
    assert owner_for(_Request("alice", "s1"), None, token, single_user=True) == "alice"


def test_login_settings_come_from_the_environment_without_echoing_passwords():
    access = Access.from_env({"STUDIO_GRADIO_USERS": "alice:a:b, bob:pw", "STUDIO_REQUIRE_LOGIN": "1"})
    assert access.users == [("alice", "a:b"), ("bob", "pw")] and access.require_login and not access.oauth
    assert Access.from_env({"SPACE_ID": "me/studio", "OAUTH_CLIENT_ID": "x"}).oauth
    assert Access.from_env({"STUDIO_VISITORS": "local"}).single_user and not Access.from_env({}).single_user
    assert not Access.from_env({"SPACE_ID": "me/studio"}).single_user
    with pytest.raises(ValueError, match="'lcoal' is not a visitor policy"):
        Access.from_env({"STUDIO_VISITORS": "lcoal"})
    with pytest.raises(ValueError) as raised:
        parse_users("carol")
    assert "carol" not in str(raised.value)
    with pytest.raises(InvalidRequest, match="to generate images"):
        access.check_may_generate(VISITOR_PREFIX + "x")
    access.check_may_generate("alice")


def test_the_mask_is_the_alpha_of_the_painted_layers():
    background = Image.new("RGB", (40, 30), "white")
    layer = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 128), (10, 5, 20, 15))
    mask = mask_from_editor({"background": background, "layers": [layer], "composite": background})
    assert mask.mode == "L" and mask.size == (40, 30)
    assert mask.getpixel((15, 10)) == 255 and mask.getpixel((0, 0)) == 0
    assert mask.getbbox() == (10, 5, 20, 15)
    empty = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert mask_from_editor({"background": background, "layers": [empty], "composite": background}) is None
    assert mask_from_editor(None) is None


def test_controls_show_only_what_the_model_has():
    catalog = Catalog()
    flux = model_props(catalog.model("replicate", "black-forest-labs/flux-schnell"), "text-to-image")
    assert flux["negative"]["visible"] is False and flux["guidance"] == {"visible": False}
    assert flux["steps"]["maximum"] == 4 and flux["quality"]["visible"] is False
    assert flux["size"]["allow_custom_value"] is False
    local = model_props(catalog.model("local", "stabilityai/sd-turbo"), "edit")
    assert local["negative"]["visible"] and local["seed"]["visible"] and local["strength"]["visible"]
    assert local["size"]["allow_custom_value"] and local["size"]["value"] == "512x512"
    assert model_props(catalog.model("local", "stabilityai/sd-turbo"), "text-to-image")["strength"] == {
        "visible": False}
    gpt = catalog.model("openai", "gpt-image-2")
    for _label, size in size_choices(gpt):  # every offered size passes the model's pixel and ratio limits
        width, height = map(int, size.split("x"))
        limits = gpt.size_range
        assert limits["min_pixels"] <= width * height <= limits["max_pixels"]
        assert width % limits["multiple"] == 0 and height % limits["multiple"] == 0
    ratios = [value for _label, value in size_choices(catalog.model("replicate", "black-forest-labs/flux-schnell"))]
    assert len(ratios) == len(set(ratios))  # each aspect ratio its own size


def test_unexpected_errors_reach_the_visitor_as_one_line_without_details():
    with pytest.raises(gr.Error) as raised:
        with visitor_errors():
            raise KeyError("/secret/server/path")
    assert "/secret/server/path" not in raised.value.message and "KeyError" in raised.value.message
    with pytest.raises(gr.Error) as raised:
        with visitor_errors():
            raise InvalidRequest("unknown style '<b>x</b>'")
    assert raised.value.message == "unknown style '&lt;b&gt;x&lt;/b&gt;'" and raised.value.title == "Check the request"
    assert request_fields({"size": "64x32"}) == {"width": 64, "height": 32}


def test_stop_switches_stop_only_that_sessions_run():
    switches = StopSwitches()
    with switches.running("session-a") as first, switches.running("session-b") as second:
        assert switches.stop("session-a") and first.is_set() and not second.is_set()
        assert not switches.stop("session-a")  # already stopped
    assert not switches.stop("session-b")  # finished runs cannot be stopped


def test_progress_events_map_onto_a_progress_bar():
    from gradio_ui.endpoints import progress_reporter

    calls = []
    report = progress_reporter(lambda fraction, desc=None: calls.append((fraction, desc)))
    report(ProgressEvent("generating", 0.5, step=2, total_steps=4))
    report(ProgressEvent("saving", 0.9, message="saving images"))
    assert calls == [(0.5, "generating: step 2/4"), (0.9, "saving images")]


# -- Spaces packaging ----------------------------------------------------------------------------------


def test_readme_starts_with_valid_spaces_front_matter():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with --- front matter ---"
    meta = yaml.safe_load(match.group(1))
    assert meta["sdk"] == "gradio" and meta["app_file"] == "gradio_app.py"
    assert meta["sdk_version"] == gr.__version__
    assert len(meta["short_description"]) <= 60
    assert text[match.end():].lstrip().startswith("# Image Studio")


def test_dockerfile_runs_streamlit_as_uid_1000_with_a_health_check():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--uid 1000" in text and re.search(r"^USER\s+(1000|user)\b", text, re.M)
    assert re.search(r"^EXPOSE\s+8501\b", text, re.M)
    assert re.search(r"^HEALTHCHECK\b.*\n?.*/_stcore/health", text, re.M)
    assert "streamlit" in text and "app.py" in text and "--server.port=8501" in text


# -- the UI in a real browser ------------------------------------------------------------------------


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


ECHO_ABOUT = re.compile(r"^Echo · \$")  # the model line a tab shows once the echo model's settings arrived


def pick(scope, page, label: str, option: str, shows: re.Pattern | None = None) -> None:
    """Choose ``option`` in the dropdown ``label``; with ``shows``, wait until the tab shows that text
    (a provider's choice reaches its model's settings through two server round trips)."""
    scope.get_by_label(label).first.click()
    page.get_by_role("option", name=option).first.click()
    if shows is not None:
        scope.get_by_text(shows).first.wait_for()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does it)")
def test_the_ui_generates_inpaints_batches_and_keeps_each_browsers_images_apart(app, echo):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(app.url)
        page.get_by_text("Anonymous visitor").wait_for()
        generate = page.locator("#generate-gallery").locator("xpath=ancestor::div[contains(@class,'tabitem')]")

        # Only the chosen model's settings: FLUX has no negative prompt, echo has one.
        pick(generate, page, "Provider", "Replicate — needs a key", re.compile(r"^FLUX\.1 \[schnell\]"))
        assert not generate.get_by_label("Negative prompt").is_visible()
        pick(generate, page, "Provider", "Echo (test)", ECHO_ABOUT)
        assert generate.get_by_label("Negative prompt").is_visible()
        generate.get_by_label("Prompt", exact=True).fill("a fox in the snow")
        generate.get_by_role("button", name="Generate", exact=True).click()
        page.locator("#generate-status").get_by_text("image(s) in").wait_for()
        made = app.studio.history(owner=None, text="a fox in the snow").items[0]

        # Pick it in the gallery, send it to Edit, paint a stroke: an inpainting linked to its parent.
        page.locator("#generate-gallery img").first.click()
        page.get_by_role("button", name="Edit selected").first.click()
        page.get_by_text(f"Using your image {made.id}").wait_for()
        # Once the editor has loaded the picture (and zoomed it to fit) it switches from its image tool to
        # the brush; a stroke before that is taken by the image tool and lost (the edit is then an
        # image-to-image). The switch shows as the Brush button's highlight.
        editor = page.locator("#edit-editor")
        # expect() waits 5 s unless told (set_default_timeout is the page's actions only); on a busy machine
        # the editor takes longer to load the picture.
        expect(editor.get_by_role("button", name="Brush", exact=True)).to_have_class(re.compile(r"\bhighlight\b"),
                                                                                       timeout=20_000)
        box = editor.locator("canvas").first.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        # A stroke that lands changes the editor, which then hands its background, layer and composite to
        # the server (ImageEditor.accept_blobs, a POST to /gradio_api/component_server): waiting for that
        # answer proves the stroke was painted. (The Edit click uploads the layers again itself.)
        with page.expect_response(lambda response: "/gradio_api/component_server" in response.url
                                  and response.request.method == "POST", timeout=60_000) as accepted:
            page.mouse.move(x - 60, y)
            page.mouse.down()
            for dx, dy in ((-20, 10), (20, -10), (60, 5)):
                page.mouse.move(x + dx, y + dy, steps=4)
            page.mouse.up()
        assert accepted.value.ok
        edit = page.locator("#edit-editor").locator("xpath=ancestor::div[contains(@class,'tabitem')]")
        pick(edit, page, "Provider", "Echo (test)", ECHO_ABOUT)
        edit.get_by_label("What to make").fill("a red door")
        edit.get_by_role("button", name="Edit", exact=True).click()
        page.locator("#edit-status").get_by_text("image(s) in").wait_for()
        edited = app.studio.history(owner=None, parent_id=made.id).items[0]
        assert edited.mode == "inpaint" and edited.owner == made.owner

        # The session's images go onto a new mood board, which the Mood boards tab then shows.
        board_name = edit.get_by_label("Mood board")
        board_name.fill("coast")
        board_name.press("Enter")
        edit.get_by_role("button", name="Add all").click()
        page.get_by_text("Added 2 image(s) to 'coast'").wait_for()
        page.get_by_role("tab", name="Mood boards").click()
        boards = page.get_by_role("button", name="Make collage").locator(
            "xpath=ancestor::div[contains(@class,'tabitem')]")
        pick(boards, page, "Board", "coast")
        boards.get_by_text("2 image(s) on 'coast'.").wait_for()

        # A batch shows its scenes as they finish.
        page.get_by_role("tab", name="Batch from script").click()
        batch = page.locator("#batch-status").locator("xpath=ancestor::div[contains(@class,'tabitem')]")
        batch.get_by_label("Script").fill("00:00 a harbour at dawn\n00:04 gulls over the pier")
        pick(batch, page, "Provider", "Echo (test)", ECHO_ABOUT)
        batch.get_by_role("button", name="Preview").click()
        batch.get_by_text("2 scene(s)").wait_for()
        batch.get_by_role("button", name="Run batch").click()
        page.locator("#batch-status").get_by_text("completed").wait_for()

        # A reload keeps this browser's history; another browser sees none of it.
        page.reload()
        page.get_by_text("Anonymous visitor").wait_for()
        page.get_by_role("tab", name="History").click()
        page.get_by_role("button", name="Search", exact=True).click()
        page.locator("#history-count").get_by_text("of 4 image(s)").wait_for()
        stranger = browser.new_context().new_page()
        stranger.goto(app.url)
        stranger.get_by_text("Anonymous visitor").wait_for()
        stranger.get_by_role("tab", name="History").click()
        stranger.get_by_role("button", name="Search", exact=True).click()
        stranger.locator("#history-count").get_by_text("of 0 image(s)").wait_for()
        assert errors == []
        browser.close()

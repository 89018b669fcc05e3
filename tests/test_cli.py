"""The command line contract: JSON output, one-line errors, exit codes, no tracebacks."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from studio.cli import main
from tests.fakes import echo_provider
from tests.helpers import png, tree_snapshot

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC, "PYTHONPATH": str(ROOT),
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "studio", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


@pytest.fixture
def echo(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)
    echo_provider.install(studio_home / "catalog")
    yield


def json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_generate_json_then_history_info_variations_delete(echo, capsys, studio_home, tmp_path):
    assert main(["generate", "a lighthouse", "--provider", "echo", "-n", "2", "--seed", "7", "--size", "64x72",
                 "--style", "cinematic", "--tag", "sea", "--format", "jpeg", "--json"]) == 0
    out = json_out(capsys)
    images = out["images"]
    assert len(images) == 2
    assert set(images[0]) >= {"id", "path", "sha256", "width", "height", "format", "provider", "model", "seed", "cost"}
    assert (images[0]["width"], images[0]["height"], images[0]["format"]) == (64, 72, "jpeg")
    assert [i["seed"] for i in images] == [7, 8] and Path(images[0]["path"]).is_file()

    assert main(["history", "--json", "--search", "lighthouse", "--limit", "1"]) == 0
    history = json_out(capsys)
    assert len(history["items"]) == 1 and history["total"] == 2

    assert main(["info", images[0]["path"], "--json"]) == 0
    info = json_out(capsys)
    assert info["parsed"]["pairs"]["Seed"] in ("7", "8") and info["studio"]["provider"] == "echo"

    assert main(["variations", images[0]["id"], "-n", "2", "--json"]) == 0
    variations = json_out(capsys)
    assert {i["parent_id"] for i in variations["images"]} == {images[0]["id"]}

    source = tmp_path / "src.png"
    source.write_bytes(png(64, 64))
    mask = tmp_path / "mask.png"
    mask.write_bytes(png(64, 64, color=(255, 255, 255), mode="L"))
    assert main(["edit", str(source), "add a boat", "--mask", str(mask), "--provider", "echo", "--json"]) == 0
    assert json_out(capsys)["images"][0]["width"] == 64

    assert main(["delete", images[1]["id"], "--json"]) == 0
    assert json_out(capsys) == {"deleted": images[1]["id"]}
    assert main(["repair", "--json"]) == 0
    assert json_out(capsys)["clean"] is True


@pytest.mark.parametrize("args, message", [
    (["generate", ""], "prompt is empty"),
    (["generate", "x", "--provider", "echo", "--steps", "0"], "steps 0 is outside 1-150"),
    (["generate", "x", "--provider", "echo", "--size", "huge"], "is not WIDTHxHEIGHT"),
    (["generate", "x", "--provider", "echo", "-n", "9"], "number of images must be 1-4"),
    (["generate", "x", "--provider", "nope"], "unknown provider"),
    (["generate", "x", "--steps", "abc"], "invalid int value"),
    (["generate", "x", "--provider", "echo", "--size", "100000x3"], "width 100000 is outside 64-4096 pixels"),
    (["edit", "/no/such/file.png", "x", "--provider", "echo"], "file not found: /no/such/file.png"),
    (["info", "/no/such/file.png"], "file not found: /no/such/file.png"),
    (["info", "missing.png"], "file not found: missing.png"),
    (["variations", "~/no/such.webp", "--provider", "echo"], "file not found: ~/no/such.webp"),
    (["delete", "ffffffffffffffff"], "no image with id"),
    (["frobnicate"], "invalid choice"),
    # an unknown model is bad input, said before anything asks the Hub or loads a pipeline
    (["generate", "x", "--provider", "local", "--model", "nope"], "unknown local model 'nope': choose one of"),
    # a folder is called a folder, wherever a file is named
    (["info", str(ROOT / "tests")], f"{ROOT / 'tests'} is a folder, not a file"),
    (["edit", str(ROOT / "tests"), "x", "--provider", "echo"], f"input image {ROOT / 'tests'} is a folder, not a file"),
    (["batch", str(ROOT / "tests"), "--provider", "echo"], f"script {ROOT / 'tests'} is a folder, not a file"),
    # paging limits: one rule (studio.paging), refused rather than quietly changed
    (["history", "--limit", "-5"], "limit must be 1-100, not -5"),
    (["history", "--offset", "-1"], "offset must be 0 or more, not -1"),
    (["jobs", "--limit", "0"], "limit must be 1-100, not 0"),
    (["stats", "--days", "0"], "--days must be 1 or more, not 0"),
])
def test_invalid_input_is_one_error_line_exit_2_and_writes_nothing(echo, capsys, studio_home, args, message):
    assert main(["generate", "existing data", "--provider", "echo", "--json"]) == 0
    capsys.readouterr()
    before = tree_snapshot(studio_home)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert captured.out == ""
    assert tree_snapshot(studio_home) == before


def test_provider_failure_exits_1_without_traceback(echo, capsys):
    from studio.errors import QuotaExhausted

    echo_provider.EchoProvider.failures = [QuotaExhausted("out of credits: add credit at the provider")]
    assert main(["generate", "x", "--provider", "echo"]) == 1
    err = capsys.readouterr().err
    assert err == "error: out of credits: add credit at the provider\n"


def test_providers_json_lists_status_and_models(echo, capsys):
    assert main(["providers", "--json"]) == 0
    providers = {p["name"]: p for p in json_out(capsys)["providers"]}
    assert {"local", "openai", "replicate", "stability", "gemini", "echo"} <= set(providers)
    assert providers["echo"]["state"] == "ready"
    assert providers["openai"]["state"] in ("missing_key", "unavailable")
    assert all("models" in p for p in providers.values())


def test_real_process_errors_have_no_traceback_and_right_codes(studio_home):
    bad = run_cli("generate", "x", "--provider", "echo", "--guidance", "99")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: guidance 99.0 is outside")
    assert "Traceback" not in bad.stderr
    good = run_cli("generate", "a kite", "--provider", "echo", "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["images"][0]["provider"] == "echo"
    garbage = run_cli("generate", "x", "--provider", "echo", "--seed")
    assert garbage.returncode == 2 and "Traceback" not in garbage.stderr


def test_import_studio_and_cli_stay_light():
    code = ("import sys, studio, studio.cli, studio.service, providers; "
            "studio.get_studio().provider_statuses(); "
            "heavy = [m for m in ('torch', 'diffusers', 'openai', 'replicate', 'google.genai', 'streamlit', 'gradio') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_base64_helpers_round_trip(tmp_path):
    from studio import InvalidRequest, load_base64, save_base64

    data = png(16, 16)
    encoded = base64.b64encode(data).decode()
    target = save_base64(encoded, tmp_path / "out" / "img.png")
    assert target.read_bytes() == data
    assert load_base64(target) == encoded
    assert save_base64("data:image/png;base64," + encoded, tmp_path / "uri.png").read_bytes() == data
    with pytest.raises(InvalidRequest):
        save_base64("@@@not base64@@@", tmp_path / "bad.png")
    with pytest.raises(InvalidRequest):
        save_base64(base64.b64encode(b"plain text").decode(), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_library_generate_uses_studio_home(echo, studio_home):
    import studio

    studio._default.clear()
    result = studio.generate("a bridge", provider="echo", seed=3)
    assert result.images[0].abs_path.startswith(str(studio_home))
    assert studio.history(owner="local").total == 1


def test_variations_of_a_file_the_studio_made_reuse_its_prompt_and_settings(echo, capsys, tmp_path):
    assert main(["generate", "a red lighthouse", "--provider", "echo", "--negative", "fog", "--json"]) == 0
    made = json_out(capsys)["images"][0]
    shared = tmp_path / "shared.png"  # a copy, as someone would pass the file around: not a stored id
    shared.write_bytes(Path(made["path"]).read_bytes())

    assert main(["variations", str(shared), "-n", "2", "--json"]) == 0  # no --prompt, no --provider
    variations = json_out(capsys)["images"]
    assert len(variations) == 2
    for image in variations:
        assert main(["info", image["path"], "--json"]) == 0
        embedded = json_out(capsys)["studio"]
        assert (embedded["prompt"], embedded["negative_prompt"]) == ("a red lighthouse", "fog")
        assert (embedded["provider"], embedded["model"], embedded["mode"]) == ("echo", "echo-1", "variation")


@pytest.mark.parametrize("studio_text", [None, '{"provider": "echo"}', '{"prompt": "x", "params": "oops"}',
                                         '{"prompt": "x", "tags": 5}'])
def test_variations_of_a_file_without_usable_parameters_ask_for_a_prompt(echo, capsys, studio_home, tmp_path,
                                                                         studio_text):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if studio_text is not None:
        info.add_text("studio", studio_text)  # what a hand-edited or foreign file may carry
    source = tmp_path / "foreign.png"
    Image.new("RGB", (64, 64), (40, 80, 120)).save(source, pnginfo=info)
    assert main(["history", "--json"]) == 0  # the data directory exists before the snapshot
    capsys.readouterr()
    before = tree_snapshot(studio_home)
    assert main(["variations", str(source), "--provider", "echo"]) == 2
    assert capsys.readouterr().err.startswith("error: a variation needs a prompt")
    assert tree_snapshot(studio_home) == before
    assert main(["variations", str(source), "--provider", "echo", "--prompt", "a boat", "-n", "1", "--json"]) == 0
    assert json_out(capsys)["images"][0]["provider"] == "echo"


@pytest.mark.parametrize("extra, model", [
    ([], "black-forest-labs/flux-dev"),
    (["--mask", "MASK"], "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"),
])
def test_edit_without_model_takes_the_providers_default_for_that_mode(cloud_fake, capsys, tmp_path, extra, model):
    cloud_fake("replicate")  # its text-to-image default, flux-schnell, takes no input image
    source = tmp_path / "src.png"
    source.write_bytes(png(512, 512))
    mask = tmp_path / "mask.png"
    mask.write_bytes(png(512, 512, color=(255, 255, 255), mode="L"))
    args = [str(mask) if a == "MASK" else a for a in extra]
    code = main(["edit", str(source), "the same street at dusk", "--provider", "replicate", *args, "--json"])
    assert code == 0, capsys.readouterr().err
    assert json_out(capsys)["images"][0]["model"] == model


def test_every_generating_command_offers_every_generation_option():
    from studio.cli import build_parser

    def destinations(command: str) -> set[str]:
        sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
        return {a.dest for a in sub._actions}

    generate = destinations("generate") - {"prompt", "help"}
    for command in ("edit", "variations", "batch"):
        assert generate <= destinations(command), (command, generate - destinations(command))


def test_batch_size_out_of_range_is_called_out_of_range(echo, capsys, tmp_path):
    script = tmp_path / "scenes.txt"
    script.write_text("a harbour at dawn\n")
    assert main(["batch", str(script), "--provider", "echo", "--size", "64x100000"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "height 100000 is outside 64-4096 pixels" in lines[0]


def test_batch_applies_steps_guidance_options_and_postprocessing(echo, capsys, studio_home, tmp_path):
    from studio.service import Studio

    script = tmp_path / "scenes.txt"
    script.write_text("a harbour at dawn\na market at noon\n")
    assert main(["batch", str(script), "--provider", "echo", "--steps", "9", "--guidance", "3.5",
                 "--size", "64x64", "--upscale", "2", "--json"]) == 0, capsys.readouterr().err
    assert json_out(capsys)["status"] == "COMPLETED"
    records = Studio(studio_home).history(owner="local").items
    assert len(records) == 2
    for record in records:
        assert (record.params["steps"], record.params["guidance"]) == (9, 3.5)
        assert (record.width, record.height) == (128, 128)  # 64x64 made, then upscaled x2


def test_readme_says_which_torch_build_each_machine_gets_and_how_to_choose():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, test = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)[:2]
    for command in (start, test):  # the two commands still install torch first, on their own
        assert re.search(r"pip install (-q )?torch==2\.13\.0 &&", command), command
    section = readme[readme.index("**Which torch you get.**"):readme.index("## Layout")]
    assert "--index-url https://download.pytorch.org/whl/cpu" in section
    assert "CUDA 13 build" in section and "CPU only" in section and "NVIDIA GPU" in section
    assert "takes the CPU wheel" not in readme  # the old claim: true only where a CPU wheel is local
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert "--index-url https://download.pytorch.org/whl/cpu" in requirements


def test_the_operator_sees_and_controls_every_owners_jobs_and_images_with_all_users(echo, capsys, studio_home):
    """A web visitor's batch job and images, seen from the server's command line: hidden from the
    local user, listed and controlled with --all-users, the visitor named only by a short label."""
    from studio.jobs import JobManager
    from studio.service import Studio

    visitor = "visitor:" + "ab" * 16
    studio = Studio(studio_home)
    try:
        job = JobManager(studio).create("first scene\nsecond scene", provider="echo", user=visitor)
        from studio.types import GenerationRequest

        image = studio.generate(GenerationRequest(prompt="a visitor's kite", provider="echo", user=visitor)).images[0]
    finally:
        studio.close()

    assert main(["jobs"]) == 0 and capsys.readouterr().out.strip() == "(no jobs)"  # the local user's view
    assert main(["job", job.id, "--pause"]) == 2 and "no job with id" in capsys.readouterr().err

    assert main(["jobs", "--all-users", "--json"]) == 0
    out = capsys.readouterr().out
    (listed,) = json.loads(out)["jobs"]
    assert listed["id"] == job.id and re.fullmatch(r"visitor-[0-9a-f]{8}", listed["owner"])
    assert main(["jobs", "--all-users"]) == 0
    text = capsys.readouterr().out
    assert job.id in text and listed["owner"] in text
    assert main(["history", "--all-users", "--json"]) == 0
    history = capsys.readouterr().out
    assert json.loads(history)["items"][0]["owner"] == listed["owner"]  # the same label for the same visitor
    for shown in (out, text, history):
        assert "ab" * 16 not in shown and visitor not in shown  # never the visitor's owner id

    assert main(["job", job.id, "--all-users", "--pause", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "PAUSED"
    assert main(["delete", image.id, "--all-users"]) == 0 and capsys.readouterr().out == f"deleted {image.id}\n"
    assert main(["history", "--all-users", "--json"]) == 0 and json.loads(capsys.readouterr().out)["total"] == 0

"""Reading generation metadata ("PNG info") from files the studio and other tools write, and
re-running an image from it (issue 11, section 2).

Each foreign file is made here, in the tool's documented format: AUTOMATIC1111's ``parameters``
text, ComfyUI's ``prompt``/``workflow`` graphs, InvokeAI's ``invokeai_metadata`` (and 2.x's
``sd-metadata``), NovelAI's ``Comment`` JSON, Fooocus' JSON scheme, SwarmUI's ``sui_image_params``
(PNG text chunk and JPEG EXIF UserComment) and Draw Things' XMP ``exif:UserComment``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studio.cli import main
from studio.errors import InvalidRequest
from studio.metadata import read_metadata
from studio.types import GenerationRequest, Mode
from tests.helpers import png, tree_snapshot

# -- files in each tool's format ------------------------------------------------------------------

COMFY_PROMPT = {  # ComfyUI's API-format graph: node id -> class_type and inputs; links are [node, output]
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 156680208700286, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at night, stars", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, text", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}
COMFY_WORKFLOW = {"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler",
                                                                   "widgets_values": [1, "fixed", 20]}],
                  "links": [], "version": 0.4}

NOVELAI_COMMENT = {"prompt": "a fox in a library, warm light", "steps": 28, "height": 832, "width": 1216,
                   "scale": 5.0, "uncond_scale": 1.0, "cfg_rescale": 0.0, "seed": 2795219000, "n_samples": 1,
                   "noise_schedule": "native", "sampler": "k_euler_ancestral", "uc": "lowres, bad anatomy"}

FOOOCUS = {"prompt": "a red bicycle", "negative_prompt": "rust", "styles": "['Fooocus V2']",
           "performance": "Speed", "steps": 30, "resolution": "(1152, 896)", "guidance_scale": 4.0,
           "sharpness": 2.0, "base_model": "juggernautXL_v8Rundiffusion.safetensors", "base_model_hash": "aeb7e9e689",
           "sampler": "dpmpp_2m_sde_gpu",
           "scheduler": "karras", "seed": "1234567", "version": "Fooocus v2.5.5"}

SWARM = {"sui_image_params": {"prompt": "a snowy cabin", "negativeprompt": "people", "model": "sd_xl_base_1.0",
                              "seed": 2042464333, "steps": 25, "cfgscale": 6.5, "aspectratio": "Custom",
                              "width": 1024, "height": 768, "sampler": "euler", "scheduler": "normal",
                              "swarm_version": "0.9.1.1"},
         "sui_extra_data": {"date": "2024-08-07"}}

INVOKE = {"generation_mode": "txt2img", "positive_prompt": "an owl on a branch", "negative_prompt": "cartoon",
          "width": 768, "height": 512, "seed": 3960398543, "rand_device": "cpu", "cfg_scale": 7.5, "steps": 30,
          "scheduler": "euler_a", "model": {"key": "4a7c", "hash": "blake3:00", "name": "stable-diffusion-v1-5",
                                            "base": "sd-1", "type": "main"}, "app_version": "4.2.4"}

INVOKE2 = {"model": "stable diffusion", "model_weights": "stable-diffusion-1.5", "app_id": "invoke-ai/InvokeAI",
           "app_version": "2.3.5", "image": {"prompt": [{"prompt": "a castle [fog, people]", "weight": 1.0}],
                                             "steps": 40, "cfg_scale": 7.5, "seed": 42, "width": 512,
                                             "height": 512, "sampler": "k_lms", "type": "txt2img"}}

DRAW_THINGS = {"c": "a koi pond, ink painting", "uc": "photo", "seed": 3003, "steps": 24, "scale": 4.5,
               "sampler": "DPM++ 2M Karras", "model": "sd_v1.5_f16.ckpt", "size": "640x512", "strength": 1}


def draw_things_xmp(data: dict) -> str:
    """An XMP packet as Draw Things writes it: its JSON in exif:UserComment, the prompt as dc:description."""
    escaped = json.dumps(data).replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
            f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{data["c"]}</rdf:li></rdf:Alt></dc:description>'
            f'<exif:UserComment><rdf:Alt><rdf:li xml:lang="x-default">{escaped}</rdf:li></rdf:Alt></exif:UserComment>'
            '<xmp:CreatorTool>Draw Things</xmp:CreatorTool></rdf:Description></rdf:RDF></x:xmpmeta>')


def png_with(chunks: dict[str, str], *, itxt: tuple[str, ...] = ()) -> bytes:
    info = PngImagePlugin.PngInfo()
    for name, text in chunks.items():
        if name in itxt:
            info.add_itxt(name, text)
        else:
            info.add_text(name, text)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 60, 90)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg_with_user_comment(text: str) -> bytes:
    """A JPEG whose EXIF UserComment holds ``text`` (UNICODE character code, as SwarmUI and A1111 write it)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 60, 90)).save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


A1111_TEXT = ("a stone bridge, autumn\nNegative prompt: cars\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, "
              "Seed: 965400086, Size: 512x640, Model: sd15")

FILES = {  # name -> (bytes, the normalised generation expected)
    "automatic1111": (lambda: png_with({"parameters": A1111_TEXT}), dict(
        source="automatic1111", prompt="a stone bridge, autumn", negative_prompt="cars", seed=965400086, steps=30,
        guidance=7.0, width=512, height=640, model="sd15", sampler="DPM++ 2M")),
    "comfyui": (lambda: png_with({"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)}), dict(
        source="comfyui", prompt="a lighthouse at night, stars", negative_prompt="blurry, text",
        seed=156680208700286, steps=20, guidance=8.0, width=512, height=768,
        model="v1-5-pruned-emaonly.safetensors", sampler="euler normal")),
    "invokeai": (lambda: png_with({"invokeai_metadata": json.dumps(INVOKE)}), dict(
        source="invokeai", prompt="an owl on a branch", negative_prompt="cartoon", seed=3960398543, steps=30,
        guidance=7.5, width=768, height=512, model="stable-diffusion-v1-5", sampler="euler_a")),
    "invokeai-3": (lambda: png_with({"invokeai_metadata": json.dumps({
        **{k: v for k, v in INVOKE.items() if k != "model"}, "app_version": "3.6.2",
        "model": {"model_name": "stable-diffusion-v1-5", "base_model": "sd-1", "model_type": "main"}})}), dict(
        source="invokeai", prompt="an owl on a branch", negative_prompt="cartoon", seed=3960398543, steps=30,
        guidance=7.5, width=768, height=512, model="stable-diffusion-v1-5", sampler="euler_a")),
    "invokeai-2": (lambda: png_with({"sd-metadata": json.dumps(INVOKE2), "Dream": '"a castle [fog, people]" -s 40'}),
                   dict(source="invokeai", prompt="a castle", negative_prompt="fog, people", seed=42, steps=40,
                        guidance=7.5, width=512, height=512, model="stable-diffusion-1.5", sampler="k_lms")),
    "novelai": (lambda: png_with({"Title": "NovelAI generated image", "Description": NOVELAI_COMMENT["prompt"],
                                  "Software": "NovelAI", "Source": "Stable Diffusion XL C1E1DE52",
                                  "Comment": json.dumps(NOVELAI_COMMENT)}), dict(
        source="novelai", prompt="a fox in a library, warm light", negative_prompt="lowres, bad anatomy",
        seed=2795219000, steps=28, guidance=5.0, width=1216, height=832, model="Stable Diffusion XL C1E1DE52",
        sampler="k_euler_ancestral")),
    "fooocus": (lambda: png_with({"parameters": json.dumps(FOOOCUS), "fooocus_scheme": "fooocus"}), dict(
        source="fooocus", prompt="a red bicycle", negative_prompt="rust", seed=1234567, steps=30, guidance=4.0,
        width=1152, height=896, model="juggernautXL_v8Rundiffusion.safetensors", sampler="dpmpp_2m_sde_gpu karras")),
    "swarmui": (lambda: png_with({"parameters": json.dumps(SWARM, indent=2)}, itxt=("parameters",)), dict(
        source="swarmui", prompt="a snowy cabin", negative_prompt="people", seed=2042464333, steps=25,
        guidance=6.5, width=1024, height=768, model="sd_xl_base_1.0", sampler="euler normal")),
    "swarmui-jpeg": (lambda: jpeg_with_user_comment(json.dumps(SWARM)), dict(
        source="swarmui", prompt="a snowy cabin", negative_prompt="people", seed=2042464333, steps=25,
        guidance=6.5, width=1024, height=768, model="sd_xl_base_1.0", sampler="euler normal")),
    "draw-things": (lambda: png_with({"XML:com.adobe.xmp": draw_things_xmp(DRAW_THINGS)}, itxt=("XML:com.adobe.xmp",)),
                    dict(source="draw-things", prompt="a koi pond, ink painting", negative_prompt="photo", seed=3003,
                         steps=24, guidance=4.5, width=640, height=512, model="sd_v1.5_f16.ckpt",
                         sampler="DPM++ 2M Karras")),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_tools_metadata_reads_into_one_shape(name):
    make, expected = FILES[name]
    meta = read_metadata(make())
    assert meta["generation"] == expected
    assert meta["note"] is None


@pytest.mark.parametrize("name", ["fooocus", "swarmui", "swarmui-jpeg"])
def test_json_in_parameters_is_never_taken_as_the_prompt(echo_studio, tmp_path, name):
    make, expected = FILES[name]
    path = tmp_path / f"{name}.img"
    path.write_bytes(make())
    request = echo_studio.request_from_image(str(path))
    assert request.prompt == expected["prompt"] and "{" not in request.prompt
    assert request.negative_prompt == expected["negative_prompt"]
    assert (request.seed, request.steps, request.width, request.height) == (
        expected["seed"], expected["steps"], expected["width"], expected["height"])


def test_novelai_shaped_json_in_parameters_reads_as_novelai():
    meta = read_metadata(png_with({"parameters": json.dumps(NOVELAI_COMMENT)}))
    assert meta["generation"]["source"] == "novelai"
    assert meta["generation"]["prompt"] == NOVELAI_COMMENT["prompt"] and meta["parsed"] is None


def test_a_comfyui_file_with_only_the_editor_graph_is_recognised_without_inventing_values():
    meta = read_metadata(png_with({"workflow": json.dumps(COMFY_WORKFLOW)}))
    assert meta["generation"]["source"] == "comfyui" and meta["generation"]["prompt"] == ""


def test_no_metadata_and_unrecognised_metadata_are_told_apart(capsys, tmp_path):
    plain = tmp_path / "plain.png"
    plain.write_bytes(png())
    odd = tmp_path / "odd.png"
    odd.write_bytes(png_with({"parameters": json.dumps({"something": "else"})}))
    assert main(["info", str(plain)]) == 0
    assert capsys.readouterr().out.strip() == "(no generation metadata)"  # printed "null" before
    assert read_metadata(plain.read_bytes())["note"] == "no generation metadata"
    assert read_metadata(odd.read_bytes())["note"] == "unrecognised format"
    assert main(["info", str(odd)]) == 0
    assert capsys.readouterr().out.strip() == "(unrecognised format)"
    assert main(["info", str(odd), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["note"] == "unrecognised format"


def test_rerun_of_a_file_without_metadata_is_refused_clearly(echo_studio, tmp_path):
    plain = tmp_path / "plain.png"
    plain.write_bytes(png())
    with pytest.raises(InvalidRequest, match="no generation metadata"):
        echo_studio.request_from_image(str(plain))
    odd = tmp_path / "odd.png"
    odd.write_bytes(png_with({"parameters": json.dumps({"something": "else"})}))
    with pytest.raises(InvalidRequest, match="unrecognised format"):
        echo_studio.request_from_image(str(odd))


def test_info_text_shows_a_foreign_tools_parameters_and_its_seed_mapping(capsys, tmp_path):
    path = tmp_path / "comfy.png"
    path.write_bytes(FILES["comfyui"][0]())
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Source: comfyui" in out and "Prompt: a lighthouse at night, stars" in out
    assert "Negative prompt: blurry, text" in out and "Size: 512x768" in out
    assert f"a re-run uses {156680208700286 % 2**32}" in out


def test_a_64_bit_comfyui_seed_is_mapped_into_the_studios_range(echo_studio, tmp_path):
    path = tmp_path / "comfy.png"
    path.write_bytes(FILES["comfyui"][0]())
    request = echo_studio.request_from_image(str(path))
    assert request.seed == 156680208700286 % 2**32
    result = echo_studio.generate(request.replace(provider="echo", width=64, height=64))
    assert result.images[0].seed == request.seed


# -- the studio's own files -----------------------------------------------------------------------


def test_a_prompt_with_a_negative_prompt_line_reads_back_whole_from_our_json(echo_studio):
    prompt = "a shop sign that reads\nNegative prompt: none today"
    record = echo_studio.generate(GenerationRequest(prompt=prompt, provider="echo", negative_prompt="rain",
                                                    seed=5)).images[0]
    meta = echo_studio.info(record.id)
    assert meta["generation"]["source"] == "image-studio"
    assert (meta["generation"]["prompt"], meta["generation"]["negative_prompt"]) == (prompt, "rain")
    again = echo_studio.request_from_image(record.abs_path)
    assert (again.prompt, again.negative_prompt) == (prompt, "rain")


def test_rerun_of_a_styled_image_keeps_the_users_own_negative_prompt(echo_studio):
    made = echo_studio.generate(GenerationRequest(prompt="a harbour", provider="echo", style="cinematic",
                                                  negative_prompt="people", seed=9)).images[0]
    assert made.negative_prompt.startswith("people, ")  # the style added its own part
    again = echo_studio.request_from_image(made.id)
    assert (again.style, again.negative_prompt) == ("cinematic", "people")  # was "": the user's part was lost
    rerun = echo_studio.generate(again.replace(cache=False)).images[0]
    assert (rerun.prompt, rerun.negative_prompt) == (made.prompt, made.negative_prompt)
    # A variation of the stored image inherits the same.
    variation = echo_studio.variations(made.id, n=1).images[0]
    assert variation.negative_prompt == made.negative_prompt


def mask_png(width: int = 64, height: int = 64) -> bytes:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("with_mask", [False, True])
def test_rerun_of_an_edit_keeps_its_mode_input_mask_and_strength(echo_studio, tmp_path, with_mask):
    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, color=(200, 10, 10)))
    mask = tmp_path / "mask.png"
    mask.write_bytes(mask_png())
    made = echo_studio.edit(str(source), "the same at dusk", provider="echo", strength=0.35, seed=4,
                            mask=str(mask) if with_mask else None).images[0]

    again = echo_studio.request_from_image(made.id)
    assert Mode.parse(again.mode) is (Mode.INPAINT if with_mask else Mode.IMAGE_TO_IMAGE)  # was text-to-image
    assert again.strength == 0.35 and again.seed == 4
    with Image.open(io.BytesIO(again.init_image)) as kept, Image.open(source) as original:
        assert np.array_equal(np.asarray(kept.convert("RGB")), np.asarray(original.convert("RGB")))
    if with_mask:
        with Image.open(io.BytesIO(again.mask)) as kept, Image.open(mask) as original:
            assert np.array_equal(np.asarray(kept.convert("L")), np.asarray(original.convert("L")))
    else:
        assert again.mask is None
    rerun = echo_studio.generate(again.replace(cache=False)).images[0]
    assert rerun.mode == made.mode and rerun.params["strength"] == 0.35
    assert rerun.params["run_mode"] == made.params["run_mode"]


def test_rerun_of_an_edit_whose_input_is_gone_is_refused_and_nothing_is_paid(echo_studio, studio_home, tmp_path):
    from tests.fakes.echo_provider import EchoProvider

    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, color=(20, 200, 10)))
    made = echo_studio.edit(str(source), "the same in snow", provider="echo", seed=4).images[0]
    echo_studio.storage.files.delete(made.params["source_image"])
    calls = EchoProvider.calls
    before = tree_snapshot(studio_home)
    with pytest.raises(InvalidRequest, match="input image of this image to image is gone"):
        echo_studio.request_from_image(made.id)
    assert EchoProvider.calls == calls and tree_snapshot(studio_home) == before


def test_a_copied_edit_file_does_not_read_another_users_input(echo_studio, tmp_path):
    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, color=(20, 20, 200)))
    made = echo_studio.edit(str(source), "private edit", provider="echo", seed=4, user="alice").images[0]
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(made.abs_path).read_bytes())
    with pytest.raises(InvalidRequest, match="does not hold for you"):
        echo_studio.request_from_image(str(copy), "bob")
    assert Mode.parse(echo_studio.request_from_image(str(copy), "alice").mode) is Mode.IMAGE_TO_IMAGE
    echo_studio.update_image(made.id, "alice", shared=True)  # others see the result, not what went in
    with pytest.raises(InvalidRequest, match="does not hold for you"):
        echo_studio.request_from_image(made.id, "bob")
    assert echo_studio.request_from_image(made.id, "bob", inputs=False).prompt == "private edit"


# -- seeds ------------------------------------------------------------------------------------------


def test_image_seeds_wrap_in_the_providers_range_and_each_reruns(echo_studio, monkeypatch):
    """A provider that reports no per-image seed: the studio numbers them seed, seed+1... wrapped."""
    from tests.fakes.echo_provider import EchoProvider

    real = EchoProvider.generate

    def without_seeds(self, request, ctx):
        result = real(self, request, ctx)
        for image in result.images:
            image.seed = None
        return result

    monkeypatch.setattr(EchoProvider, "generate", without_seeds)
    made = echo_studio.generate(GenerationRequest(prompt="two lamps", provider="echo", seed=2**32 - 1, n=2)).images
    assert [r.seed for r in made] == [2**32 - 1, 0]  # the second was 4294967296
    again = echo_studio.request_from_image(made[1].id)
    assert again.seed == 0
    echo_studio.generate(again.replace(cache=False))


def test_cli_seed_at_the_top_of_the_range_with_two_images(echo_studio, capsys):
    assert main(["generate", "two lamps", "--provider", "echo", "--seed", "4294967295", "-n", "2", "--json"]) == 0
    seeds = [image["seed"] for image in json.loads(capsys.readouterr().out)["images"]]
    assert seeds == [4294967295, 0]
    assert main(["generate", "x", "--provider", "echo", "--seed", "4294967296"]) == 2
    assert capsys.readouterr().err.startswith("error: seed must be 0-4294967295")


def test_a_seed_outside_a_providers_smaller_range_is_refused_before_any_call(studio_home):
    from studio.service import Studio
    from studio.validation import nth_seed
    from providers.gemini import GeminiProvider
    from providers.stability import StabilityProvider

    assert (GeminiProvider.seed_space, StabilityProvider.seed_space) == (2**31, 4294967295)
    assert nth_seed(2**31 - 1, 1, GeminiProvider.seed_space) == 0
    assert nth_seed(4294967294, 1, StabilityProvider.seed_space) == 0
    studio = Studio(studio_home)
    try:
        with pytest.raises(InvalidRequest, match="seed must be 0-2147483647 for gemini"):
            studio.prepare(GenerationRequest(prompt="x", provider="gemini", seed=2**31))
        with pytest.raises(InvalidRequest, match="seed must be 0-4294967294 for stability"):
            studio.prepare(GenerationRequest(prompt="x", provider="stability", seed=4294967295))
    finally:
        studio.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_local_seeds_wrap_and_the_second_image_reruns_alone(studio_home, tiny_model_dir):
    from studio.config import Settings
    from studio.service import Studio

    studio = Studio(settings=Settings.load(studio_home, local_model=str(tiny_model_dir)))
    try:
        made = studio.generate(GenerationRequest(prompt="a harbour", provider="local", width=256, height=256,
                                                 steps=2, seed=2**32 - 1, n=2)).images
        assert [r.seed for r in made] == [2**32 - 1, 0]
        again = studio.request_from_image(made[1].id)  # refused before: seed 4294967296
        alone = studio.generate(again.replace(cache=False)).images[0]

        def pixels(record):
            with Image.open(io.BytesIO(studio.image_bytes(record))) as image:
                return np.asarray(image.convert("RGB"))

        def gap(a, b) -> int:
            return int(np.abs(pixels(a).astype(int) - pixels(b).astype(int)).max())

        # The same starting noise: equal up to batched-versus-single arithmetic (a level), unlike image 1.
        assert gap(alone, made[1]) <= 1 < gap(alone, made[0])
    finally:
        studio.close()


def test_a_copied_edit_file_reruns_for_its_owner_with_the_parent_and_without_it_for_others(echo_studio, tmp_path):
    first = echo_studio.generate(GenerationRequest(prompt="a field", provider="echo", seed=1, user="alice")).images[0]
    edited = echo_studio.variations(first.id, n=1, user="alice").images[0]
    assert edited.parent_id == first.id
    copy = tmp_path / "variation.png"
    copy.write_bytes(Path(edited.abs_path).read_bytes())
    assert echo_studio.request_from_image(str(copy), "alice").parent_id == first.id
    with pytest.raises(InvalidRequest, match="does not hold for you"):  # its input is alice's
        echo_studio.request_from_image(str(copy), "bob")
    child = echo_studio.generate(GenerationRequest(prompt="a field again", provider="echo", parent_id=first.id,
                                                   user="alice")).images[0]
    child_copy = tmp_path / "child.png"
    child_copy.write_bytes(Path(child.abs_path).read_bytes())
    again = echo_studio.request_from_image(str(child_copy), "bob")
    assert again.parent_id is None and Mode.parse(again.mode) is Mode.TEXT_TO_IMAGE
    assert echo_studio.generate(again).images[0].owner == "bob"  # not "no image with id ..." for alice's parent


def test_batch_scene_seeds_wrap_in_the_providers_range(echo_studio):
    from studio.jobs import JobManager

    manager = JobManager(echo_studio)
    try:
        preview = manager.preview("a\nb\nc", provider="gemini", seed=2**31 - 1)
        assert [row["seed"] for row in preview.rows()] == [2**31 - 1, 0, 1] and not preview.errors
        assert all(0 <= manager.preview("a\nb", provider="gemini").job.base_seed < 2**31 for _ in range(20))
        with pytest.raises(InvalidRequest, match="seed must be 0-2147483647 for gemini"):
            manager.preview("a", provider="gemini", seed=2**31)
    finally:
        manager.close(wait=5)


def test_an_edits_kept_input_goes_with_the_last_image_made_from_it(echo_studio, studio_home, tmp_path):
    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, color=(5, 50, 150)))
    first = echo_studio.edit(str(source), "at dawn", provider="echo", seed=1).images[0]
    second = echo_studio.edit(str(source), "at dusk", provider="echo", seed=2).images[0]
    key = first.params["source_image"]
    assert second.params["source_image"] == key  # the same input is kept once
    assert list((studio_home / "sources").iterdir()) == [studio_home / key]

    echo_studio.delete_image(first.id)
    assert Mode.parse(echo_studio.request_from_image(second.id).mode) is Mode.IMAGE_TO_IMAGE  # still there
    echo_studio.delete_image(second.id)
    assert list((studio_home / "sources").iterdir()) == []  # deleted means gone, inputs included


def test_variations_of_a_copied_edit_file_reuse_its_prompt_for_anyone(echo_studio, tmp_path):
    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, color=(90, 90, 10)))
    made = echo_studio.edit(str(source), "a quiet street", provider="echo", seed=3, user="alice").images[0]
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(made.abs_path).read_bytes())
    varied = echo_studio.variations(str(copy), n=1, user="bob").images[0]  # no prompt given
    assert (varied.user_prompt, varied.provider, varied.owner) == ("a quiet street", "echo", "bob")
    settings = echo_studio.request_from_image(str(copy), "bob", inputs=False)  # e.g. "Open in Generate"
    assert (settings.prompt, Mode.parse(settings.mode), settings.init_image) == ("a quiet street",
                                                                                 Mode.TEXT_TO_IMAGE, None)


def test_cli_rerun_makes_an_edit_again_and_refuses_a_file_without_metadata(echo_studio, capsys, studio_home, tmp_path):
    source = tmp_path / "source.png"
    source.write_bytes(png(64, 64, color=(1, 100, 50)))
    made = echo_studio.edit(str(source), "the pier at noon", provider="echo", seed=8, strength=0.4).images[0]
    assert main(["rerun", made.id, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["cached"]  # the same request with its fixed seed: the stored image, at no cost
    assert again["images"][0]["id"] == made.id

    plain = tmp_path / "plain.png"
    plain.write_bytes(png())
    before = tree_snapshot(studio_home)
    assert main(["rerun", str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this image carries no generation parameters") and err.count("\n") == 1
    assert tree_snapshot(studio_home) == before


def test_comfyui_webp_graphs_in_exif_text_tags_are_read():
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(COMFY_PROMPT)  # Model, as ComfyUI's WEBP saver writes it
    exif[0x010F] = "workflow:" + json.dumps(COMFY_WORKFLOW)  # Make
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="WEBP", exif=exif.tobytes())
    assert read_metadata(buffer.getvalue())["generation"] == FILES["comfyui"][1]

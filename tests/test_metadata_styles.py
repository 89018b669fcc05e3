"""A1111 parameters text, embedded metadata in PNG/JPEG/WEBP, styles and templates as data."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.metadata import encode_image, format_parameters, parse_parameters, read_metadata
from studio.styles import StyleBook

NAMED_STYLES = ["photorealistic", "realistic", "concept art", "cinematic", "documentary", "cartoon", "minimalist",
                "artistic", "illustration", "3d-render"]


def test_parameters_text_round_trips_with_quoting():
    text = format_parameters("a cat, sitting\non a mat", "blurry", {
        "Steps": 20, "Sampler": "Euler a", "CFG scale": 7.5, "Seed": 42, "Size": "512x512",
        "Model": "owner/name:v1", "Empty": None})
    lines = text.split("\n")
    assert lines[-1] == 'Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: "owner/name:v1"'
    assert lines[-2] == "Negative prompt: blurry"
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "a cat, sitting\non a mat"
    assert parsed["negative_prompt"] == "blurry"
    assert parsed["pairs"]["Model"] == "owner/name:v1" and parsed["pairs"]["Seed"] == "42"


def test_parameters_without_negative_prompt_omit_the_line():
    text = format_parameters("a dog", "", {"Steps": 1, "Seed": 2, "Size": "64x64"})
    assert "Negative prompt" not in text and text.startswith("a dog\nSteps: 1")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_metadata_embedded_in_each_format(fmt):
    image = Image.new("RGBA" if fmt == "png" else "RGB", (40, 30), (1, 2, 3, 255) if fmt == "png" else (1, 2, 3))
    params = format_parameters("snow — ünïcode ✓", "rain", {"Steps": 3, "Sampler": "x", "Seed": 9, "Size": "40x30"})
    data = encode_image(image, fmt, parameters=params, studio_json={"id": "abc", "cost": 0.5, "tags": ["é"]})
    meta = read_metadata(data)
    assert meta["format"] == fmt and (meta["width"], meta["height"]) == (40, 30)
    assert meta["parameters"] == params
    assert meta["studio"] == {"id": "abc", "cost": 0.5, "tags": ["é"]}


def test_reads_a1111_style_png_written_by_another_tool(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "castle\nNegative prompt: fog\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, "
                                "Seed: 1234, Size: 64x64, Model: sd15")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    meta = read_metadata(path.read_bytes())
    assert meta["studio"] is None
    assert meta["parsed"]["pairs"]["Sampler"] == "DPM++ 2M" and meta["parsed"]["negative_prompt"] == "fog"


def test_every_named_style_expands_with_prompt_and_negative(studio_home):
    book = StyleBook(studio_home)
    for name in NAMED_STYLES:
        prompt, negative = book.expand(name, "a harbour", "people")
        assert "a harbour" in prompt and prompt != "a harbour"
        assert negative.startswith("people, ") and len(negative) > len("people, ")
    assert book.expand(None, " plain ", "") == ("plain", "")


def test_user_styles_file_adds_and_overrides(studio_home):
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "styles.json").write_text(json.dumps({
        "noir": {"label": "Film noir", "prompt": "film noir still of {prompt}, high contrast",
                 "negative_prompt": "color"},
        "cinematic": {"prompt": "my cinematic {prompt}"},
    }))
    book = StyleBook(studio_home)
    assert book.expand("noir", "a detective") == ("film noir still of a detective, high contrast", "color")
    assert book.expand("cinematic", "x")[0] == "my cinematic x"
    (studio_home / "styles.json").write_text(json.dumps({"broken": {"prompt": "no placeholder"}}))
    with pytest.raises(InvalidRequest, match="no \\{prompt\\} placeholder"):
        StyleBook(studio_home)


def test_prompt_templates_by_category(studio_home):
    book = StyleBook(studio_home)
    assert {"portrait", "landscape", "product", "video-script"} <= set(book.categories())
    template = book.templates("product")[0]
    assert template.fill("a teapot").startswith("product photo of a teapot")
    assert template.params["width"] == 512

"""Every bad input gets a clear error and leaves the data directory exactly as it was."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from studio.errors import InvalidRequest, NotFound
from studio.service import Studio
from studio.types import GenerationRequest
from tests.fakes import echo_provider
from tests.helpers import png, tree_snapshot


@pytest.fixture
def studio(echo_studio):
    echo_studio.generate(GenerationRequest(prompt="seed image", provider="echo"))  # some existing data to protect
    return echo_studio


def bomb_png() -> bytes:
    # A 1-bit PNG that claims 20000x20000 pixels: tiny on disk, 400 M pixels when decoded.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_REQUESTS = [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   \n\t "}, "prompt is empty"),
    ({"prompt": "x" * 5000}, "limit is 4,000"),
    ({"prompt": "bad \udcff bytes"}, "not valid UTF-8"),
    ({"width": 64}, "both width and height"),
    ({"width": 12, "height": 64}, "width 12 is outside"),
    ({"width": 100000, "height": 64}, "outside"),
    ({"width": 70, "height": 64}, "multiple of 8"),
    ({"steps": 0}, "steps 0 is outside 1-150"),
    ({"steps": 151}, "steps 151 is outside 1-150"),
    ({"steps": "many"}, "steps must be a whole number"),
    ({"guidance": 0.5}, "guidance 0.5 is outside 1-20"),
    ({"guidance": 21}, "guidance 21.0 is outside 1-20"),
    ({"guidance": float("nan")}, "guidance must be a number"),
    ({"n": 0}, "number of images must be 1-4"),
    ({"n": 5}, "number of images must be 1-4"),
    ({"seed": -1}, "seed must be 0-"),
    ({"seed": 2**40}, "seed must be 0-"),
    ({"style": "vaporwave-deluxe"}, "unknown style"),
    ({"output_format": "gif"}, "unsupported output format"),
    ({"compression": 0}, "compression must be 1-100"),
    ({"mode": "telepathy"}, "unknown mode"),
    ({"mode": "image-to-image"}, "needs an input image"),
    ({"mode": "inpaint", "init_image": png()}, "needs a mask"),
    ({"mode": "image-to-image", "init_image": png(), "strength": 1.5}, "strength 1.5 is outside 0-1"),
    ({"mode": "image-to-image", "init_image": png(), "strength": -0.1}, "strength -0.1 is outside 0-1"),
    ({"mode": "image-to-image", "init_image": b"not an image at all"}, "not a readable image"),
    ({"mode": "image-to-image", "init_image": png()[:40]}, "truncated or corrupt|not a readable image"),
    ({"mode": "image-to-image", "init_image": b""}, "is empty"),
    ({"mode": "image-to-image", "init_image": bomb_png()}, "pixel limit|decompression bomb"),
    ({"mode": "inpaint", "init_image": png(64, 64), "mask": png(48, 64, mode="L")}, "mask is 48x64"),
    ({"mode": "inpaint", "init_image": png(64, 64), "mask": b"junk"}, "mask is not a readable image"),
    ({"init_image": png()}, "text-to-image takes no input image"),
    ({"extra": {"warp_speed": 9}}, "has no option 'warp_speed'"),
    ({"user": ""}, "user is empty"),
    ({"tags": ["x"] * 1 + [f"t{i}" for i in range(40)]}, "at most 32 tags"),
]


@pytest.mark.parametrize("changes, message", BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_bad_request_is_refused_and_writes_nothing(studio, studio_home, changes, message):
    before = tree_snapshot(studio_home)
    calls = echo_provider.EchoProvider.calls
    fields = {"prompt": "a valid prompt", "provider": "echo", **changes}
    with pytest.raises(InvalidRequest, match=message):
        studio.generate(GenerationRequest(**fields))
    assert tree_snapshot(studio_home) == before
    assert echo_provider.EchoProvider.calls == calls


def test_missing_init_file_is_not_found(studio, studio_home, tmp_path):
    before = tree_snapshot(studio_home)
    with pytest.raises(NotFound, match="input image file not found"):
        studio.generate(GenerationRequest(prompt="x", provider="echo", mode="image-to-image",
                                          init_image=str(tmp_path / "missing.png")))
    with pytest.raises(NotFound, match="no image with id"):
        studio.edit("0123456789abcdef", "x", provider="echo")
    assert tree_snapshot(studio_home) == before


def test_control_characters_are_cleaned_not_fatal(studio):
    result = studio.generate(GenerationRequest(prompt="a\x00 cat\x07 on\x1b a mat", provider="echo"))
    assert result.images[0].prompt == "a  cat  on  a mat"


def test_unusual_but_valid_images_are_accepted(studio, tmp_path):
    # CMYK JPEG, 16-bit greyscale PNG, palette with transparency, animated GIF: all become RGB(A).
    cmyk = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 128, 255, 0)).save(cmyk, format="JPEG")
    grey16 = io.BytesIO()
    Image.new("I;16", (64, 64), 40000).save(grey16, format="PNG")
    animated = io.BytesIO()
    frames = [Image.new("P", (64, 64), i) for i in range(3)]
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:])
    for data in (cmyk.getvalue(), grey16.getvalue(), animated.getvalue(), png(64, 64, mode="RGBA")):
        result = studio.generate(GenerationRequest(prompt="x", provider="echo", mode="image-to-image",
                                                   init_image=data))
        assert result.images[0].width == 64


def test_unsupported_options_are_dropped_with_a_warning(studio_home):
    import json

    echo_provider.install(studio_home / "catalog")
    catalog = json.loads((studio_home / "catalog" / "echo.json").read_text())
    model = catalog["models"][0]
    model.update({"id": "plain", "default": False, "seed": False, "negative_prompt": False, "steps": None})
    catalog["models"].append(model)
    (studio_home / "catalog" / "echo.json").write_text(json.dumps(catalog))
    studio = Studio(studio_home)
    result = studio.generate(GenerationRequest(prompt="x", provider="echo", model="plain", seed=4, steps=10,
                                               negative_prompt="blur"))
    joined = " ".join(result.warnings)
    assert "does not take a seed" in joined and "no steps setting" in joined and "no negative prompt" in joined
    assert result.images[0].seed is None and result.images[0].negative_prompt == ""


@pytest.mark.parametrize("text, message", [
    ("9" * 5000 + "x512", "width 999999999999… is outside 64-4096 pixels"),  # not a ValueError from int()
    ("512x0000100000", "height 0000100000 is outside 64-4096 pixels"),
    ("12by4", "size '12by4' is not WIDTHxHEIGHT, e.g. 512x512"),
    ("-512x512", "is not WIDTHxHEIGHT"),
])
def test_size_text_says_whether_it_is_malformed_or_out_of_range(text, message):
    from studio.validation import parse_size

    with pytest.raises(InvalidRequest) as raised:
        parse_size(text)
    assert message in raised.value.message


@pytest.mark.parametrize("size, message", [("100000x64", "width 100000 is outside 64-4096 pixels"),
                                           ("64x100000", "height 100000 is outside 64-4096 pixels"),
                                           ("12x512", "width 12 is outside 64-4096 pixels")])
def test_a_well_formed_size_out_of_range_is_called_out_of_range(studio, studio_home, size, message):
    from studio.validation import parse_size

    before = tree_snapshot(studio_home)
    with pytest.raises(InvalidRequest, match=message):  # as the CLI and the front ends do it
        width, height = parse_size(size)
        studio.generate(GenerationRequest(prompt="x", provider="echo", width=width, height=height))
    assert tree_snapshot(studio_home) == before


def test_size_text_accepts_the_usual_spellings():
    from studio.validation import parse_size

    assert [parse_size(t) for t in ("512x768", " 64 X 4096 ", "1024×576", "0512x0512")] == [
        (512, 768), (64, 4096), (1024, 576), (512, 512)]

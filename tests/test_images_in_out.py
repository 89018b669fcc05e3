"""Images in, images out (issue 11 §3): the one image loader, the one mask reading, and edits that
keep their input's size and, when inpainting, every unmasked pixel of it exactly.

Every mask form below means the same thing ("repaint the left quarter") and is sent through every
front end: the library, the CLI, Streamlit's upload, Gradio's /edit API, and (for painted layers) the
Streamlit canvas and Gradio's ImageEditor."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.imaging import load_image
from studio.service import Studio
from tests.fakes import echo_provider

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 64, 48
REGION = (0, 0, WIDTH // 4, HEIGHT)  # left, top, right, bottom: the area every mask below repaints


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def source_image(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """A gradient (a picture, not one flat colour: OpenAI's erased-copy masks are recognised by it)."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


def region_array(fill, keep, mode: str = "L", size=(WIDTH, HEIGHT)) -> Image.Image:
    image = Image.new(mode, size, keep)
    image.paste(fill, REGION)
    return image


def mask_forms() -> dict[str, bytes]:
    """Files in every form a mask arrives in, each meaning "repaint REGION" for ``source_image()``."""
    source = source_image()
    palette = Image.new("P", (WIDTH, HEIGHT), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.paste(1, REGION)
    palette_layer = palette.copy()  # index 0 transparent, index 1 (white paint) where to repaint
    sixteen = Image.fromarray(np.where(np.asarray(region_array(255, 0)) > 0, 65535, 0).astype(np.uint16))
    erased = source.convert("RGBA")
    erased.paste((0, 0, 0, 0), REGION)
    return {
        "L white on black": encoded(region_array(255, 0)),
        "1 bilevel": encoded(region_array(1, 0, "1")),
        "RGB white on black": encoded(region_array((255, 255, 255), (0, 0, 0), "RGB")),
        "RGBA opaque white on black": encoded(region_array((255, 255, 255, 255), (0, 0, 0, 255), "RGBA")),
        "white strokes on a transparent layer": encoded(region_array((255, 255, 255, 255), (0, 0, 0, 0), "RGBA")),
        "red strokes on a transparent layer": encoded(region_array((230, 20, 20, 255), (0, 0, 0, 0), "RGBA")),
        "LA white on transparent": encoded(region_array((255, 255), (0, 0), "LA")),
        "16-bit greyscale": encoded(sixteen),
        "palette": encoded(palette),
        "palette with a transparent colour": encoded(palette_layer, transparency=0),
        "OpenAI form: the image with the area erased": encoded(erased),
        "greyscale WEBP": encoded(region_array((255, 255, 255), (0, 0, 0), "RGB"), "WEBP", lossless=True),
    }


FORMS = list(mask_forms())


def assert_repainted_only_the_region(result: Image.Image, source: Image.Image = None) -> None:
    """``result`` has the source's size, every pixel outside REGION is the source's own, and REGION
    was repainted (the echo provider's picture, not the gradient)."""
    source = source or source_image()
    assert result.size == source.size
    changed = np.any(np.asarray(result.convert("RGB")) != np.asarray(source), axis=-1)
    inside = np.zeros(changed.shape, dtype=bool)
    inside[REGION[1]:REGION[3], REGION[0]:REGION[2]] = True
    assert not changed[~inside].any(), f"{changed[~inside].mean():.0%} of the unmasked pixels changed"
    assert changed[inside].mean() > 0.9, f"only {changed[inside].mean():.0%} of the masked area changed"


def stored(studio: Studio, record) -> Image.Image:
    image = Image.open(io.BytesIO(studio.image_bytes(record)))
    image.load()
    return image


@pytest.fixture
def echo(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)
    echo_provider.install(studio_home / "catalog")


@pytest.fixture
def studio(echo, studio_home):
    s = Studio(studio_home)
    yield s
    s.close()


# -- the mask: one reading, every front end ----------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_every_mask_form_reads_as_the_same_mask(studio, form):
    """What the provider is given: white over REGION, black elsewhere, whatever the file's form."""
    from studio.types import GenerationRequest, Mode

    prepared = studio.prepare(GenerationRequest(prompt="x", provider="echo", mode=Mode.INPAINT,
                                                init_image=encoded(source_image()), mask=mask_forms()[form]))
    mask = prepared.request.mask
    assert mask.mode == "L" and mask.size == (WIDTH, HEIGHT)
    assert mask.tobytes() == region_array(255, 0).tobytes()


@pytest.mark.parametrize("form", FORMS)
def test_every_mask_form_through_the_library(studio, form):
    mask = mask_forms()[form]
    result = studio.edit(encoded(source_image()), "a red door", mask=mask, provider="echo", seed=5)
    assert_repainted_only_the_region(stored(studio, result.images[0]))


@pytest.mark.parametrize("form", FORMS)
def test_every_mask_form_through_the_cli(studio, studio_home, tmp_path, capsys, form):
    from studio.cli import main

    (tmp_path / "photo.png").write_bytes(encoded(source_image()))
    (tmp_path / "mask.png").write_bytes(mask_forms()[form])
    assert main(["edit", str(tmp_path / "photo.png"), "a red door", "--mask", str(tmp_path / "mask.png"),
                 "--provider", "echo", "--seed", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with Image.open(out["images"][0]["path"]) as result:
        result.load()
        assert_repainted_only_the_region(result)


@pytest.mark.parametrize("form", FORMS)
def test_every_mask_form_through_streamlit_upload(app_home, form):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages/2_Edit.py"), default_timeout=30).run()
    at.radio(key="edit_source_kind").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value(("photo.png", encoded(source_image()), "image/png")).run()
    at.radio(key="edit_kind").set_value("Inpaint with a mask").run()
    at.radio(key="edit_mask_how").set_value("Upload a mask").run()
    at.file_uploader(key="edit_mask_upload").set_value(("mask.png", mask_forms()[form], "image/png")).run()
    at.text_area(key="edit_prompt").input("a red door").run()
    [apply] = [b for b in at.button if b.label == "Apply edit"]
    apply.click().run()
    for _ in range(400):  # rerun until the page's task is done (its Cancel button is gone)
        if not any(b.label == "Cancel" for b in at.button):
            break
        at.run()
    at.run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    studio = Studio(app_home)
    try:
        [record] = studio.history(owner="local").items
        assert record.mode == "inpaint"
        assert_repainted_only_the_region(stored(studio, record))
    finally:
        studio.close()


@pytest.fixture(scope="module")
def gradio_app(tmp_path_factory):
    import gradio_app as app_module
    from gradio_ui.identity import Access
    from studio.config import Settings

    home = tmp_path_factory.mktemp("gradio-home")
    echo_provider.install(home / "catalog")
    studio = Studio(settings=Settings.load(home, local_model="none"))
    demo = app_module.build_app(studio, access=Access(), export_dir=home.parent / f"{home.name}-exports")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                            max_file_size=app_module.MAX_UPLOAD)
    yield url
    demo.close()
    studio.close()


@pytest.mark.parametrize("form", FORMS)
def test_every_mask_form_through_the_gradio_api(gradio_app, tmp_path, form):
    from gradio_client import Client, handle_file

    (tmp_path / "photo.png").write_bytes(encoded(source_image()))
    (tmp_path / "mask.png").write_bytes(mask_forms()[form])
    client = Client(gradio_app, verbose=False)
    files, _made = client.predict(handle_file(str(tmp_path / "photo.png")), "a red door",
                                  handle_file(str(tmp_path / "mask.png")), "", "echo", "", {"seed": 5},
                                  api_name="/edit")
    with Image.open(files[0]) as result:
        result.load()
        assert_repainted_only_the_region(result)


def painted_layers() -> dict[str, list[Image.Image]]:
    """Editor layers (the Gradio ImageEditor's, the Streamlit canvas's strokes) painting REGION."""
    soft = region_array((255, 43, 214, 255), (0, 0, 0, 0), "RGBA")  # Gradio's brush colour
    soft.paste((255, 43, 214, 40), (REGION[2] - 1, 0, REGION[2], HEIGHT))  # the brush's faint rim counts
    half = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    half.paste((0, 0, 0, 255), (0, 0, REGION[2], HEIGHT // 2))  # a black brush: paint is paint
    rest = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    rest.paste((255, 255, 255, 230), (0, HEIGHT // 2, REGION[2], HEIGHT))
    canvas = Image.new("RGBA", (WIDTH * 2, HEIGHT * 2), (0, 0, 0, 0))
    canvas.paste((255, 255, 255, 230), (0, 0, REGION[2] * 2, HEIGHT * 2))  # drawn on a canvas twice the size
    return {"one layer": [soft], "two layers, one black": [half, rest], "a larger canvas": [canvas]}


@pytest.mark.parametrize("layers", list(painted_layers()))
def test_painted_layers_through_gradio_editor_and_streamlit_canvas(studio, layers):
    from gradio_ui.create_tabs import mask_from_editor
    from ui.masks import mask_from_strokes

    painted = painted_layers()[layers]
    source = source_image()
    gradio_mask = mask_from_editor({"background": source, "layers": painted, "composite": source})
    streamlit_mask = mask_from_strokes(painted[0], source.size) if len(painted) == 1 else None
    if streamlit_mask is not None:
        assert streamlit_mask.tobytes() == gradio_mask.tobytes()  # the same reading in both
    for mask in filter(None, (gradio_mask, streamlit_mask)):
        result = studio.edit(encoded(source), "a red door", mask=mask, provider="echo", seed=5)
        assert_repainted_only_the_region(stored(studio, result.images[0]))


def test_the_same_layer_reads_the_same_uploaded_and_painted():
    """The issue's case: white strokes on a transparent layer were read inverted when uploaded
    (94 % of the image repainted) while Gradio's editor read the same layer as painted."""
    from studio.masks import load_mask, mask_from_layers

    layer = region_array((255, 255, 255, 255), (0, 0, 0, 0), "RGBA")
    source = source_image()
    uploaded = load_mask(encoded(layer), source)
    painted = mask_from_layers([layer], source.size)
    assert uploaded.tobytes() == painted.tobytes() == region_array(255, 0).tobytes()


def test_masks_that_repaint_nothing_or_do_not_fit_are_refused_and_nothing_is_paid(studio, studio_home):
    source = encoded(source_image())
    with pytest.raises(InvalidRequest, match="marks nothing to repaint"):
        studio.edit(source, "x", mask=encoded(Image.new("L", (WIDTH, HEIGHT), 0)), provider="echo")
    with pytest.raises(InvalidRequest, match="marks nothing to repaint"):
        studio.edit(source, "x", mask=encoded(Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))), provider="echo")
    with pytest.raises(InvalidRequest, match=f"mask is 32x32 but the image is {WIDTH}x{HEIGHT}"):
        studio.edit(source, "x", mask=encoded(Image.new("L", (32, 32), 255)), provider="echo")
    assert echo_provider.EchoProvider.calls == 0
    assert studio.history(owner="local").total == 0


def test_soft_mask_edges_blend_and_black_is_kept_exactly():
    from studio.masks import fit_to_input

    source = source_image()
    result = Image.new("RGB", source.size, (255, 0, 0))
    mask = Image.new("L", source.size, 0)
    mask.paste(128, (0, 0, 8, HEIGHT))
    mask.paste(255, (8, 0, 16, HEIGHT))
    fitted = np.asarray(fit_to_input(result, source, mask, source.size)).astype(int)
    original = np.asarray(source).astype(int)
    assert np.array_equal(fitted[:, 16:], original[:, 16:])
    assert np.array_equal(fitted[:, 8:16], np.broadcast_to([255, 0, 0], fitted[:, 8:16].shape))
    assert np.all(np.abs(fitted[:, :8, 0] - (255 + original[:, :8, 0]) / 2) <= 1)


# -- output size: the input's, for every provider ---------------------------------------------------


def test_inpainting_an_odd_size_with_the_local_model_keeps_size_and_unmasked_pixels(studio_home,
                                                                                      tiny_model_dir,
                                                                                      one_torch_thread):
    """The issue's numbers: a 427x320 image came back 424x320 with its unmasked pixels 24 levels off."""
    from studio.config import Settings

    source = source_image(427, 320)
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (100, 80, 300, 240))
    studio = Studio(settings=Settings.load(studio_home, local_model=str(tiny_model_dir)))
    try:
        record = studio.edit(encoded(source), "a red door", mask=encoded(mask), provider="local", steps=2,
                             seed=3, strength=1.0).images[0]
        result = np.asarray(stored(studio, record).convert("RGB")).astype(int)
    finally:
        studio.close()
    assert result.shape[:2] == (320, 427) and (record.width, record.height) == (427, 320)
    keep = np.asarray(mask) == 0
    assert np.array_equal(result[keep], np.asarray(source).astype(int)[keep])
    assert np.abs(result[~keep] - np.asarray(source).astype(int)[~keep]).mean() > 10


def test_image_to_image_keeps_the_input_size_unless_a_size_is_asked(studio):
    source = encoded(source_image(427, 321))
    kept = studio.edit(source, "in winter", provider="echo", seed=1).images[0]
    assert (kept.width, kept.height) == (427, 321)
    assert stored(studio, kept).size == (427, 321)
    asked = studio.edit(source, "in winter", provider="echo", seed=1, width=128, height=96).images[0]
    assert stored(studio, asked).size == (128, 96)


class SquareEcho(echo_provider.EchoProvider):
    """Answers every edit at 256x256, whatever it was sent (as OpenAI's fixed sizes do)."""

    def generate(self, request, ctx):
        from studio.types import ProviderImage, ProviderResult

        return ProviderResult(images=[ProviderImage(echo_provider.draw(request.prompt, request.seed, 256, 256),
                                                    seed=request.seed)])


def test_a_provider_answering_another_shape_is_resized_to_the_input_and_said_so(studio, monkeypatch):
    import providers

    providers.register("echo", SquareEcho)
    source = source_image(160, 96)
    mask = region_array(255, 0, size=source.size)
    result = studio.edit(encoded(source), "a red door", mask=encoded(mask), provider="echo", seed=2)
    assert stored(studio, result.images[0]).size == (160, 96)
    assert any("answered at 256x256" in w and "160x96" in w for w in result.warnings), result.warnings
    fitted = np.asarray(stored(studio, result.images[0]).convert("RGB"))
    assert np.array_equal(fitted[:, REGION[2]:], np.asarray(source)[:, REGION[2]:])


# -- the one image loader ---------------------------------------------------------------------------


def test_float_tiff_scaled_0_to_1_is_not_black():
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32)[None, :].repeat(8, 0)
    image = load_image(encoded(Image.fromarray(values, mode="F"), "TIFF"))
    grey = np.asarray(image.convert("L")).astype(int)
    assert image.mode == "RGB" and grey[0, 0] == 0 and grey[0, -1] == 255 and abs(grey[0, 32] - 130) <= 2


def test_hdr_float_above_1_is_scaled_so_its_brightest_is_white_and_nan_is_black():
    values = np.full((4, 4), 2.0, dtype=np.float32)
    values[0, 0], values[0, 1], values[0, 2] = 4.0, np.nan, -1.0
    grey = np.asarray(load_image(encoded(Image.fromarray(values, mode="F"), "TIFF")).convert("L")).astype(int)
    assert grey[0, 0] == 255 and grey[1, 1] == 128 and grey[0, 1] == 0 and grey[0, 2] == 0


def test_16_bit_greyscale_png_and_tiff_keep_their_brightness():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    for fmt in ("PNG", "TIFF"):
        image = load_image(encoded(Image.fromarray(values), fmt))
        assert np.asarray(image.convert("L")).tolist() == [[0, 100, 255]], fmt


def test_32_bit_integer_greyscale_by_its_range():
    eight_bit = Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I")
    assert np.asarray(load_image(eight_bit).convert("L")).tolist() == [[0, 200]]
    sixteen = Image.fromarray(np.array([[0, 257 * 50, 65535]], dtype=np.int32), mode="I")
    assert np.asarray(load_image(sixteen).convert("L")).tolist() == [[0, 50, 255]]


def test_cmyk_jpeg_palette_with_transparency_exif_orientation_and_animations():
    red = load_image(encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert red.mode == "RGB" and red.getpixel((4, 4))[0] > 240 and max(red.getpixel((4, 4))[1:]) < 15

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 0)
    loaded = load_image(encoded(palette, transparency=0))
    assert loaded.mode == "RGBA" and loaded.getpixel((0, 0))[3] == 0 and loaded.getpixel((2, 2)) == (200, 10, 10, 255)

    tall = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    upright = load_image(encoded(tall, "JPEG", exif=exif.tobytes()))
    assert upright.size == (20, 40)

    frames = [Image.new("RGB", (8, 8), colour) for colour in ((250, 0, 0), (0, 250, 0))]
    for fmt in ("GIF", "WEBP", "PNG"):
        first = load_image(encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100))
        assert first.getpixel((4, 4))[0] > 200 and first.getpixel((4, 4))[1] < 30, fmt


def test_an_edit_of_a_float_tiff_input_is_not_black(studio):
    values = np.full((HEIGHT, WIDTH), 0.8, dtype=np.float32)
    record = studio.edit(encoded(Image.fromarray(values, mode="F"), "TIFF"), "x", provider="echo",
                         mask=encoded(region_array(255, 0)), seed=1).images[0]
    kept = np.asarray(stored(studio, record).convert("L"))
    assert abs(int(kept[0, -1]) - 204) <= 1  # an unmasked pixel: 0.8 of white, not black


# -- every provider that inpaints, through its real SDK against its fake ------------------------------


INPAINTERS = {"openai": None, "stability": "stable-image-inpaint",
              "replicate": "stability-ai/sdxl:{version}", "gemini": None}


@pytest.mark.parametrize("provider", list(INPAINTERS))
def test_every_inpainting_provider_keeps_the_input_size_and_its_unmasked_pixels(cloud_fake, studio_home,
                                                                                 provider):
    from tests.fakes.replicate_fake import SDXL_VERSION

    cloud_fake(provider)
    model = INPAINTERS[provider]
    source = source_image(427, 320)
    mask = Image.new("L", source.size, 0)
    mask.paste(255, (100, 80, 300, 240))
    studio = Studio(studio_home)
    try:
        result = studio.edit(encoded(source), "a round window", mask=encoded(mask), provider=provider,
                             model=model.format(version=SDXL_VERSION) if model else None)
        record = result.images[0]
        kept = np.asarray(stored(studio, record).convert("RGB")).astype(int)
    finally:
        studio.close()
    assert (record.width, record.height) == (427, 320) and kept.shape[:2] == (320, 427)
    keep = np.asarray(mask) == 0
    assert np.array_equal(kept[keep], np.asarray(source).astype(int)[keep])
    assert np.abs(kept[~keep] - np.asarray(source).astype(int)[~keep]).mean() > 10


def test_a_cmyk_file_whose_icc_profile_cannot_be_used_is_converted_without_it_and_logged(caplog):
    data = encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", icc_profile=b"not a profile")
    with caplog.at_level("WARNING", logger="studio.imaging"):
        red = load_image(data)
    assert red.mode == "RGB" and red.getpixel((4, 4))[0] > 240
    assert any("ICC profile could not be used" in r.getMessage() for r in caplog.records)


def test_cli_refuses_a_mask_that_repaints_nothing_in_one_line_and_writes_nothing(studio, studio_home, tmp_path,
                                                                                 capsys):
    from studio.cli import main
    from tests.helpers import tree_snapshot

    (tmp_path / "photo.png").write_bytes(encoded(source_image()))
    (tmp_path / "mask.png").write_bytes(encoded(Image.new("RGBA", (WIDTH, HEIGHT), (255, 255, 255, 0))))
    before = tree_snapshot(studio_home)
    code = main(["edit", str(tmp_path / "photo.png"), "x", "--mask", str(tmp_path / "mask.png"), "--provider", "echo"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: the mask marks nothing to repaint")
    assert echo_provider.EchoProvider.calls == 0
    assert tree_snapshot(studio_home) == before


def test_upscaling_limits_apply_to_the_input_size_an_edit_is_stored_at(studio):
    """The provider works at <= 1024 pixels a side, but the result is brought back to the input's size
    and upscaled from there: the limits are checked on that, before anything is paid for."""
    wide = encoded(Image.new("RGB", (4100, 600), (40, 90, 140)))
    with pytest.raises(InvalidRequest, match="WEBP"):  # 16400 pixels wide: more than a WEBP holds
        studio.edit(wide, "x", provider="echo", output_format="webp", postprocess={"upscale": 4})
    big = encoded(Image.new("RGB", (4000, 3000), (40, 90, 140)))
    with pytest.raises(InvalidRequest, match="upscaling 4000x3000 by 2 exceeds"):
        studio.edit(big, "x", provider="echo", postprocess={"upscale": 2})
    assert echo_provider.EchoProvider.calls == 0
    small = studio.edit(encoded(source_image()), "x", provider="echo", postprocess={"upscale": 2}).images[0]
    assert (small.width, small.height) == (WIDTH * 2, HEIGHT * 2)


def test_an_inpaint_of_a_transparent_image_keeps_its_unmasked_transparency(studio):
    rgba = source_image().convert("RGBA")
    rgba.paste((0, 0, 0, 0), (WIDTH // 2, 0, WIDTH, HEIGHT))  # the right half is transparent
    record = studio.edit(encoded(rgba), "x", provider="echo", mask=encoded(region_array(255, 0)), seed=3).images[0]
    kept = stored(studio, record)
    assert kept.mode == "RGBA"
    assert_repainted_only_the_region(kept.convert("RGB"), rgba.convert("RGB"))
    assert np.array_equal(np.asarray(kept)[:, REGION[2]:], np.asarray(rgba)[:, REGION[2]:])
    assert studio.edit(encoded(rgba), "x", provider="echo", mask=encoded(region_array(255, 0)),
                       output_format="jpeg").images[0].format == "jpeg"

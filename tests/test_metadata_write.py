"""Metadata we write (issue 11, section 1), checked against the formats' own definitions and an
independent reader (exiftool), on images the studio saves through its real save path.

The TIFF walk below follows the TIFF 6.0 / Exif 2.32 layout (8-byte header, 12-byte IFD entries:
tag, type, count, value or offset); type 7 is UNDEFINED, 1 is BYTE.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import unicodedata
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageDraw

import providers
from studio.errors import InvalidRequest
from studio.metadata import format_parameters, read_metadata
from studio.metadata_write import (CUT_MARK, EXIF_TIFF_MAX, XMP_PACKET_MAX, _cut_parameters, encode_image,
                                   insert_metadata, plan, user_comment, xmp_fields)
from studio.types import GenerationRequest, PreparedRequest, ProviderImage, ProviderResult, RunContext
from tests.fakes import echo_provider

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed (CI installs "
                                    "libimage-exiftool-perl; apt-get install -y libimage-exiftool-perl)")

# -- a provider that answers with bytes the test made -------------------------------------------------


class FixedAnswer(echo_provider.EchoProvider):
    """The echo provider answering with ``FixedAnswer.data`` (an encoded image), as a provider that
    returns JPEG or WEBP does."""

    data: bytes = b""

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        FixedAnswer.calls += 1
        return ProviderResult(images=[ProviderImage(FixedAnswer.data, seed=request.seed, info={"sampler": "echo"})])


@pytest.fixture
def studio(studio_home):
    from studio.service import Studio

    echo_provider.install(studio_home / "catalog")
    providers.register("echo", FixedAnswer)
    FixedAnswer.calls = 0
    instance = Studio(studio_home)
    yield instance
    instance.close()


def photo(fmt: str, size=(96, 64), *, icc: bool = False, mode: str = "RGB", **save) -> bytes:
    """A small photo-like image (gradient, shapes, noise) encoded as ``fmt``."""
    image = Image.linear_gradient("L").resize(size).convert(mode)
    draw = ImageDraw.Draw(image)
    draw.ellipse([5, 5, size[0] // 2, size[1] - 5], fill=(200, 40, 90, 255) if mode == "RGBA" else (200, 40, 90))
    noise = Image.effect_noise(size, 40).convert(mode)
    image = Image.blend(image, noise, 0.3)
    if icc:
        save["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format={"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt], **save)
    return buffer.getvalue()


def saved(studio, fmt: str, answer: bytes, **request) -> bytes:
    FixedAnswer.data = answer
    result = studio.generate(GenerationRequest(request.pop("prompt", "a cat"), provider="echo", model="echo-1",
                                               output_format=fmt, width=96, height=64, seed=7, **request))
    return Path(result.images[0].abs_path).read_bytes()


# -- independent views of the bytes --------------------------------------------------------------------


def tiff_of(data: bytes) -> bytes:
    """The Exif TIFF structure of a JPEG (APP1 ``Exif\\0\\0``) or WEBP (``EXIF`` chunk)."""
    if data[:2] == b"\xff\xd8":
        for marker, payload in jpeg_segments(data):
            if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
                return payload[6:]
    else:
        for fourcc, body in webp_chunks(data):
            if fourcc == b"EXIF":
                assert not body.startswith(b"Exif"), "a WEBP EXIF chunk holds the TIFF header directly"
                return body
    raise AssertionError("no Exif found")


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    segments, position = [], 2
    while data[position + 1] not in (0xDA, 0xD9):
        marker, length = data[position + 1], struct.unpack(">H", data[position + 2:position + 4])[0]
        segments.append((marker, data[position + 4:position + 2 + length]))
        position += 2 + length
    return segments


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 12
    while position < len(data):
        length = struct.unpack("<I", data[position + 4:position + 8])[0]
        chunks.append((data[position:position + 4], data[position + 8:position + 8 + length]))
        position += 8 + length + length % 2
    return chunks


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, position = [], 8
    while position < len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        chunks.append((data[position + 4:position + 8], data[position + 8:position + 8 + length]))
        position += 12 + length
    return chunks


def tiff_entries(tiff: bytes) -> dict[int, tuple[int, bytes]]:
    """{tag: (type, raw value)} of IFD0 and the Exif IFD."""
    order = {b"MM": ">", b"II": "<"}[tiff[:2]]
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1}
    found = {}

    def walk(offset: int) -> None:
        count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
        for i in range(count):
            entry = tiff[offset + 2 + 12 * i:offset + 14 + 12 * i]
            tag, kind, number = struct.unpack(order + "HHI", entry[:8])
            length = sizes[kind] * number
            value = entry[8:8 + length] if length <= 4 else tiff[
                struct.unpack(order + "I", entry[8:])[0]:][:length]
            found[tag] = (kind, value)
            if tag == 0x8769:
                walk(struct.unpack(order + "I", value)[0])

    walk(struct.unpack(order + "I", tiff[4:8])[0])
    return found


def exiftool(path: Path, *tags: str) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-charset", "exif=utf8", *tags, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[0]


# -- 1. UserComment is UNDEFINED with its character-code header -------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_user_comment_is_undefined_with_unicode_header(studio, fmt):
    data = saved(studio, fmt, photo("png"), prompt="a red fox, snow")
    kind, value = tiff_entries(tiff_of(data))[0x9286]
    assert kind == 7, "EXIF UserComment must be UNDEFINED (7), not BYTE (1)"
    assert value[:8] == b"UNICODE\x00"
    assert value[8:].decode("utf-16-be").startswith("a red fox, snow\n")


@needs_exiftool
@pytest.mark.parametrize("answered", ["png", "same"])  # re-encoded from PNG / written into the answer
@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_exiftool_reads_our_types_and_texts(studio, fmt, answered, tmp_path):
    prompt = "一只猫 on a mat, ünïcode ✓ 🦊"
    data = saved(studio, fmt, photo(fmt if answered == "same" else "png"), prompt=prompt, negative_prompt="blurry")
    path = tmp_path / f"image.{fmt}"
    path.write_bytes(data)
    meta = read_metadata(data)
    if fmt == "png":
        tags = exiftool(path, "-PNG:all")
        assert tags["PNG:Parameters"] == meta["parameters"]
        assert json.loads(tags["PNG:Studio"])["prompt"] == prompt
        return
    verbose = subprocess.run([EXIFTOOL, "-v3", str(path)], check=True, capture_output=True, text=True).stdout
    comment_line = next(line for line in verbose.splitlines() if "Tag 0x9286" in line)
    assert "undef[" in comment_line and "int8u" not in comment_line, comment_line
    tags = exiftool(path, "-UserComment", "-ImageDescription")
    assert tags["ExifIFD:UserComment"] == meta["parameters"] and meta["parameters"].startswith(prompt + "\n")
    description = tags["IFD0:ImageDescription"]
    assert description.startswith("image-studio:") and json.loads(description[13:])["prompt"] == prompt


# -- 2. byte order -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
@pytest.mark.parametrize("prompt", ["一只猫坐在垫子上", "一", "一 cat"])
def test_prompt_starting_with_4e00_reads_back(studio, fmt, prompt):
    meta = read_metadata(saved(studio, fmt, photo("png"), prompt=prompt))
    assert meta["parsed"]["prompt"] == prompt
    assert meta["parameters"].startswith(prompt + "\n")


def test_little_endian_user_comment_of_other_writers_still_reads():
    # Some writers (Microsoft Photo, exiftool in little-endian Exif) store UCS-2 little-endian.
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + "一只猫\nSteps: 20, Seed: 1, Size: 8x8".encode("utf-16-le")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif.tobytes())
    assert read_metadata(buffer.getvalue())["parameters"] == "一只猫\nSteps: 20, Seed: 1, Size: 8x8"


# -- 3. long non-ASCII prompts: checked before paying, kept in full ---------------------------------


@pytest.mark.parametrize("prompt,negative", [("猫" * 3000, "狗" * 3000), ("🦊" * 2500, "")])
def test_long_non_ascii_prompt_as_jpeg_is_kept_in_full(studio, prompt, negative, tmp_path):
    data = saved(studio, "jpeg", photo("jpeg"), prompt=prompt, negative_prompt=negative)
    assert FixedAnswer.calls == 1
    meta = read_metadata(data)
    assert meta["studio"]["prompt"] == prompt and meta["studio"]["negative_prompt"] == negative
    assert meta["parsed"]["prompt"] == prompt and meta["parsed"]["negative_prompt"] == negative
    if EXIFTOOL:
        path = tmp_path / "long.jpg"
        path.write_bytes(data)
        tags = exiftool(path, "-XMP-imagestudio:all", "-UserComment")
        assert json.loads(tags["XMP-imagestudio:Studio"])["prompt"] == prompt
        assert tags["ExifIFD:UserComment"].startswith(prompt)


def test_prompt_that_cannot_fit_a_jpeg_is_refused_before_the_provider_is_called(studio, monkeypatch):
    # Validated prompts nearly always fit; a larger allowance for what providers add to the record
    # makes these (4,000 emoji each, 16 KB of UTF-8 per copy of each) not fit.
    monkeypatch.setattr("studio.saving.METADATA_HEADROOM_BYTES", 30_000)
    with pytest.raises(InvalidRequest, match="too long to keep in full in a JPEG"):
        saved(studio, "jpeg", photo("jpeg"), prompt="🦊" * 4000, negative_prompt="🐺" * 4000)
    assert FixedAnswer.calls == 0
    # The same texts fit a PNG and a WEBP, whose metadata has no 64 KiB segments.
    for fmt in ("png", "webp"):
        meta = read_metadata(saved(studio, fmt, photo("png"), prompt="🦊" * 4000, negative_prompt="🐺" * 4000))
        assert meta["studio"]["prompt"] == "🦊" * 4000


def test_size_a_format_cannot_hold_is_refused_before_the_provider_is_called(studio_home):
    # Same kind as the long text: a format limit (WEBP sides stop at 16,383 pixels) met after paying.
    from studio.service import Studio

    echo_provider.install(studio_home / "catalog")
    catalog = dict(echo_provider.ECHO_CATALOG, models=[dict(echo_provider.ECHO_CATALOG["models"][0],
                                                            size_range={"min": 64, "max": 8192, "multiple": 8})])
    (studio_home / "catalog" / "echo.json").write_text(json.dumps(catalog))
    providers.register("echo", FixedAnswer)
    FixedAnswer.calls, FixedAnswer.data = 0, photo("png")
    studio = Studio(studio_home)
    try:
        wide = GenerationRequest("a long pier", provider="echo", model="echo-1", width=4096, height=512,
                                 postprocess={"upscale": 4})
        with pytest.raises(InvalidRequest, match="cannot be saved as WEBP"):
            studio.generate(wide.replace(output_format="webp"))
        assert FixedAnswer.calls == 0
        studio.generate(wide.replace(output_format="png", postprocess={"upscale": 1.1}))
        assert FixedAnswer.calls == 1
    finally:
        studio.close()


def test_exif_copy_too_long_is_cut_cleanly_and_marked_and_full_text_is_in_xmp():
    # Astral characters (surrogate pairs), combining accents and ASCII: 80 KB in UTF-16, 55 KB in UTF-8.
    prompt = "🦊e\u0301 abc" * 5000
    parameters = format_parameters(prompt, "", {"Steps": 20, "Sampler": "x", "Seed": 3, "Size": "8x8"})
    embedding = plan("jpeg", parameters, {"id": "abc"})
    assert embedding.cut and embedding.complete and len(embedding.exif) <= EXIF_TIFF_MAX
    comment = tiff_entries(embedding.exif)[0x9286][1][8:].decode("utf-16-be")  # strict: no broken pair
    head, pairs = comment.rsplit("\n", 1)
    assert pairs == "Steps: 20, Sampler: x, Seed: 3, Size: 8x8"
    assert head.endswith(CUT_MARK) and prompt.startswith(head[:-len(CUT_MARK)])
    kept = head[:-len(CUT_MARK)]
    assert not unicodedata.combining(prompt[len(kept)])  # never an accent torn from its letter
    assert xmp_fields(embedding.xmp)["parameters"] == parameters
    data = encode_image(Image.new("RGB", (8, 8)), "jpeg", parameters=parameters, studio_json={"id": "abc"})
    assert read_metadata(data)["parameters"] == parameters


def test_cut_never_separates_a_letter_from_its_accent_or_splits_a_surrogate_pair():
    text = "e\u0301🦊" * 10 + "\nSteps: 1, Seed: 1, Size: 8x8"
    for budget in range(len(user_comment("x" + CUT_MARK + "\nSteps: 1, Seed: 1, Size: 8x8")), 200):
        cut = _cut_parameters(text, budget)
        assert len(user_comment(cut)) <= budget
        kept = cut.split(CUT_MARK)[0]
        assert text.startswith(kept) and not unicodedata.combining(text[len(kept)])
        assert cut.endswith(CUT_MARK + "\nSteps: 1, Seed: 1, Size: 8x8")


def test_encoding_never_fails_for_size_after_the_call():
    # Texts too long even for XMP (which the pre-call check refuses) still make a valid JPEG.
    parameters = format_parameters("🦊" * 20000, "", {"Steps": 1, "Seed": 1, "Size": "8x8"})
    studio_json = {"prompt": "🦊" * 20000}
    assert not plan("jpeg", parameters, studio_json).complete
    data = encode_image(Image.new("RGB", (8, 8)), "jpeg", parameters=parameters, studio_json=studio_json)
    assert Image.open(io.BytesIO(data)).size == (8, 8)
    assert all(len(payload) + 2 <= 65535 for _marker, payload in jpeg_segments(data))
    assert len(plan("jpeg", parameters, {"id": "x"}).xmp) <= XMP_PACKET_MAX


# -- 4. the provider's own bytes, metadata inserted -----------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_provider_image_in_the_asked_format_is_stored_without_re_encoding(studio, fmt):
    # Encoder settings of the provider's own (quality 70; PNG at zlib level 1), not ours.
    answer = photo(fmt, icc=fmt != "png", **({"quality": 70} if fmt != "png" else {"compress_level": 1}))
    data = saved(studio, fmt, answer, prompt="a heron")
    # The compressed image data is the provider's, byte for byte; so are the decoded pixels.
    if fmt == "jpeg":
        scan = answer.index(b"\xff\xda")
        assert data.endswith(answer[scan:])
    elif fmt == "webp":
        assert dict(webp_chunks(data))[b"VP8 "] == dict(webp_chunks(answer))[b"VP8 "]
    else:
        assert [c for c in png_chunks(data) if c[0] == b"IDAT"] == [c for c in png_chunks(answer) if c[0] == b"IDAT"]
    original, stored = Image.open(io.BytesIO(answer)), Image.open(io.BytesIO(data))
    assert stored.tobytes() == original.tobytes()
    assert stored.info.get("icc_profile") == original.info.get("icc_profile")
    meta = read_metadata(data)
    assert meta["parsed"]["prompt"] == "a heron" and meta["studio"]["prompt"] == "a heron"


def test_format_change_or_post_processing_re_encodes_with_metadata(studio):
    answer = photo("png")
    as_jpeg = saved(studio, "jpeg", answer, prompt="a heron")
    assert as_jpeg[:2] == b"\xff\xd8" and read_metadata(as_jpeg)["studio"]["prompt"] == "a heron"
    sharpened = saved(studio, "png", answer, prompt="a stork", postprocess={"sharpen": 1.0})
    assert Image.open(io.BytesIO(sharpened)).tobytes() != Image.open(io.BytesIO(answer)).tobytes()
    assert read_metadata(sharpened)["studio"]["prompt"] == "a stork"


def test_insert_replaces_earlier_metadata_instead_of_duplicating():
    params = format_parameters("first", "", {"Steps": 1, "Seed": 1, "Size": "8x8"})
    again = format_parameters("second", "", {"Steps": 1, "Seed": 1, "Size": "8x8"})
    for fmt in ("png", "jpeg", "webp"):
        once = encode_image(Image.new("RGB", (8, 8)), fmt, parameters=params, studio_json={"n": 1})
        twice = insert_metadata(once, fmt, parameters=again, studio_json={"n": 2}, size=(8, 8))
        meta = read_metadata(twice)
        assert meta["parsed"]["prompt"] == "second" and meta["studio"] == {"n": 2}
        assert twice.count(b"image-studio:") == (0 if fmt == "png" else 1)
        assert twice.count(b"studio\x00") == (1 if fmt == "png" else 0)


def test_simple_lossless_webp_with_alpha_becomes_extended_and_keeps_alpha():
    image = Image.new("RGBA", (96, 64), (30, 140, 90, 255))
    image.putalpha(Image.linear_gradient("L").resize((96, 64)))
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", lossless=True)
    answer = buffer.getvalue()
    assert webp_chunks(answer)[0][0] == b"VP8L"
    params = format_parameters("glass", "", {"Steps": 1, "Seed": 1, "Size": "96x64"})
    data = insert_metadata(answer, "webp", parameters=params, studio_json={"id": "g"}, size=(96, 64))
    chunks = webp_chunks(data)
    assert [c[0] for c in chunks] == [b"VP8X", b"VP8L", b"EXIF"]
    assert chunks[0][1][0] & 0x10 and chunks[0][1][0] & 0x08  # alpha and EXIF flags
    assert Image.open(io.BytesIO(data)).tobytes() == Image.open(io.BytesIO(answer)).tobytes()
    assert read_metadata(data)["parsed"]["prompt"] == "glass"


def test_provider_jpeg_exif_is_replaced_and_jfif_stays_first(studio):
    exif = Image.Exif()
    exif[0x010F] = "SomeCamera"
    answer = photo("jpeg", exif=exif.tobytes())
    data = saved(studio, "jpeg", answer, prompt="a gull")
    segments = jpeg_segments(data)
    assert segments[0][0] == 0xE0 and segments[0][1].startswith(b"JFIF\x00")
    assert segments[1][0] == 0xE1 and segments[1][1].startswith(b"Exif\x00\x00")
    assert sum(1 for m, p in segments if m == 0xE1 and p.startswith(b"Exif")) == 1
    assert b"SomeCamera" not in data and read_metadata(data)["parsed"]["prompt"] == "a gull"


def test_embedded_record_carries_no_owner(studio):
    data = saved(studio, "jpeg", photo("jpeg"), prompt="a crane", user="visitor-5f1e")
    assert b"visitor-5f1e" not in data and "owner" not in read_metadata(data)["studio"]


def _encoded(image: Image.Image, pil_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


_BASE = Image.linear_gradient("L").resize((40, 24))
ANSWER_VARIANTS = {
    "jpeg progressive": ("jpeg", lambda: _encoded(_BASE.convert("RGB"), "JPEG", progressive=True)),
    "jpeg with comment": ("jpeg", lambda: _encoded(_BASE.convert("RGB"), "JPEG", comment=b"made by a provider")),
    "jpeg CMYK (Adobe APP14)": ("jpeg", lambda: _encoded(_BASE.convert("CMYK"), "JPEG")),
    "jpeg greyscale": ("jpeg", lambda: _encoded(_BASE, "JPEG")),
    "png greyscale 16-bit": ("png", lambda: _encoded(_BASE.convert("I;16"), "PNG")),
    "png palette with tRNS": ("png", lambda: _encoded(_BASE.convert("P"), "PNG", transparency=0)),
    "webp animated": ("webp", lambda: _encoded(_BASE.convert("RGB"), "WEBP", save_all=True,
                                               append_images=[_BASE.convert("RGB").rotate(180)], duration=100)),
}


@pytest.mark.parametrize("variant", sorted(ANSWER_VARIANTS))
def test_metadata_is_written_into_every_kind_of_answer_without_touching_its_pixels(variant):
    fmt, make = ANSWER_VARIANTS[variant]
    answer = make()
    params = format_parameters("a quay", "", {"Steps": 1, "Seed": 1, "Size": "40x24"})
    data = insert_metadata(answer, fmt, parameters=params, studio_json={"id": variant}, size=(40, 24))
    before, after = Image.open(io.BytesIO(answer)), Image.open(io.BytesIO(data))
    assert (after.mode, after.size, getattr(after, "n_frames", 1)) == (before.mode, before.size,
                                                                        getattr(before, "n_frames", 1))
    assert after.tobytes() == before.tobytes()
    meta = read_metadata(data)
    assert meta["parsed"]["prompt"] == "a quay" and meta["studio"] == {"id": variant}


def test_answer_whose_structure_cannot_be_written_into_is_re_encoded_not_lost(studio, caplog):
    # Stray bytes between segments: Pillow decodes the image, the segment walk refuses it.
    answer = photo("jpeg")
    tables = answer.index(b"\xff\xdb")
    odd = answer[:tables] + b"\xff\x00" + answer[tables:]
    with caplog.at_level("WARNING", logger="studio.service"):
        data = saved(studio, "jpeg", odd, prompt="a tern")
    assert "cannot be written in place" in caplog.text
    assert b"\xff\x00\xff\xdb" not in data[:200] and Image.open(io.BytesIO(data)).size == (96, 64)
    assert read_metadata(data)["parsed"]["prompt"] == "a tern"

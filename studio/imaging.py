"""Reading and writing image bytes safely.

Every image that enters the studio (an upload, an init image, a mask, a provider's answer) goes
through ``load_image`` or ``decode_result``: size limits are checked from the header before any
pixel is decoded, so a decompression bomb costs nothing, and broken bytes become a clear error.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from studio.errors import InvalidRequest, UnusableResult, missing_file
from studio.types import ImageInput

log = logging.getLogger(__name__)

MAX_INPUT_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000  # about 6300 x 6300: above any provider's input limit
THUMBNAIL_SIDE = 256

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def sniff_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"`` or ``"webp"`` from a file's signature; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def normalize_format(fmt: str | None) -> str:
    text = (fmt or "png").strip().lower().lstrip(".")
    text = {"jpg": "jpeg"}.get(text, text)
    if text not in PIL_FORMATS:
        raise InvalidRequest(f"unsupported output format {fmt!r}; choose png, jpeg or webp")
    return text


def _read_source(source: ImageInput, what: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise missing_file(path, what)
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise InvalidRequest(f"{what} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    else:
        raise InvalidRequest(f"{what} must be image bytes or a file path")
    if not data:
        raise InvalidRequest(f"{what} is empty")
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidRequest(f"{what} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    return data


def open_checked(data: bytes, what: str, error=InvalidRequest) -> Image.Image:
    """Open ``data`` as an image, refusing oversized pixel counts before decoding any pixel."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise error(f"{what} is {width}x{height} pixels, more than the {MAX_PIXELS:,}-pixel limit")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise error(f"{what} is too large to decode safely (decompression bomb?)") from exc
    except UnidentifiedImageError as exc:
        raise error(f"{what} is not a readable image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise error(f"{what} is truncated or corrupt: {exc}") from exc
    return image


def load_image(source: ImageInput, what: str = "image") -> Image.Image:
    """A decoded, upright image in RGB or RGBA, 8 bits per channel: the one loader of every image that
    enters the studio (uploads, init images, masks).

    The first frame of an animation (GIF, WEBP, APNG) is used; EXIF orientation is applied. Other forms
    are brought to 8-bit RGB(A) by their meaning, not by truncation (see ``to_rgb_or_rgba``): 16-bit and
    32-bit integer greyscale, float images (0..1, and HDR ranges above 1), palette images with a
    transparent colour (RGBA), CMYK (through its ICC profile when it has one). Errors: ``NotFound`` for a
    missing file, ``InvalidRequest`` for anything unreadable, too large or of an unknown pixel mode."""
    if isinstance(source, Image.Image):
        image = source
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InvalidRequest(f"{what} is {width}x{height} pixels, more than the {MAX_PIXELS:,}-pixel limit")
    else:
        image = open_checked(_read_source(source, what), what)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    return to_rgb_or_rgba(image, what)


def to_rgb_or_rgba(image: Image.Image, what: str = "image", error=InvalidRequest) -> Image.Image:
    """``image`` as 8-bit RGB, or RGBA when it has transparency (a copy; the original is untouched).

    Integer greyscale: 16-bit (``I;16*``) is scaled 65535 -> 255; 32-bit ``I`` is read as 8-bit when its
    values stay within 0..255, as 16-bit within 0..65535, else scaled so its brightest pixel is white.
    Float (``F``): 0..1 is the nominal range (0 -> black, 1 -> white); when the brightest value is above 1
    (HDR, or floats holding 0..255) everything is scaled down so that it is white; negative values and
    NaN are black. Converting any of these with Pillow alone clips (a 0..1 float image came out black)."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image.copy()
    if mode.startswith("I;16"):
        image = _grey_to_8_bits(image, 65535.0)
    elif mode in ("I", "F"):
        image = _grey_to_8_bits(image, None)
    elif mode == "CMYK":
        return _cmyk_to_rgb(image)
    has_alpha = mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info)
    try:
        return image.convert("RGBA" if has_alpha else "RGB")
    except (ValueError, OSError) as exc:
        raise error(f"{what} has pixel mode {mode}, which cannot be read as RGB: {exc}") from exc


def _grey_to_8_bits(image: Image.Image, full_scale: float | None) -> Image.Image:
    """A one-channel integer or float image as 8-bit greyscale ("L"), scaled by its range (see
    ``to_rgb_or_rgba``); ``full_scale`` is the value that becomes white, None to decide from the data."""
    import numpy as np

    values = np.asarray(image, dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=np.finfo(np.float64).max, neginf=0.0)
    if full_scale is None:
        brightest = float(values.max()) if values.size else 0.0
        if image.mode == "F":
            full_scale = max(1.0, brightest)  # 0..1 nominal; HDR brighter than 1 is scaled down to fit
        elif brightest <= 255:
            full_scale = 255.0
        elif brightest <= 65535:
            full_scale = 65535.0
        else:
            full_scale = brightest
    scaled = np.clip(values * (255.0 / full_scale), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK as sRGB through the image's own ICC profile when it has one (Pillow's plain conversion
    ignores the profile and gives washed-out, shifted colours); the plain conversion otherwise."""
    profile = image.info.get("icc_profile")
    if profile:
        from PIL import ImageCms

        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                                  renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("a CMYK image's ICC profile could not be used (%s); converting without it", exc)
    return image.convert("RGB")


def flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency composed over white."""
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def decode_result(data: bytes, provider: str) -> Image.Image:
    """Decode a provider's answer; broken bytes are the provider's failure, not the user's.

    The provider answered, so it billed: empty or undecodable bytes are an ``UnusableResult``, which
    is never retried (a retry would be paid again)."""
    if not data:
        raise UnusableResult("the provider answered with an empty image", provider=provider)
    image = open_checked(data, "the provider's image", error=_unusable_result(provider))
    return to_rgb_or_rgba(image, "the provider's image", error=_unusable_result(provider))


def _unusable_result(provider: str):
    def make(message: str) -> UnusableResult:
        return UnusableResult(message, provider=provider)

    return make


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_bytes(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((side, side))
    if thumb.mode not in ("RGB", "RGBA"):
        thumb = thumb.convert("RGB")
    buffer = io.BytesIO()
    thumb.save(buffer, format="WEBP", quality=80, method=4)
    return buffer.getvalue()

"""Reading and writing image bytes safely.

Every image that enters the studio (an upload, an init image, a mask, a provider's answer) goes
through ``load_image`` or ``decode_result``: size limits are checked from the header before any
pixel is decoded, so a decompression bomb costs nothing, and broken bytes become a clear error.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from studio.errors import InvalidRequest, NotFound, UnusableResult
from studio.types import ImageInput

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
            raise NotFound(f"{what} file not found: {path}")
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
    """A decoded, upright image in RGB or RGBA (first frame of an animation, CMYK/16-bit converted)."""
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
    return _to_rgb_or_rgba(image)


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "RGBA"):
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping everything to white.
        image = image.point(lambda v: v / 256).convert("L")
    has_alpha = image.mode in ("LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")


def load_mask(source: ImageInput, size: tuple[int, int]) -> Image.Image:
    """A greyscale mask where white means "repaint". A mask with transparency uses its alpha:
    transparent pixels are the ones to edit (the OpenAI convention)."""
    image = load_image(source, "mask")
    if image.size != size:
        raise InvalidRequest(
            f"mask is {image.size[0]}x{image.size[1]} but the image is {size[0]}x{size[1]}; they must match"
        )
    if image.mode == "RGBA" and image.getextrema()[3][0] < 255:
        alpha = image.getchannel("A")
        return ImageOps.invert(alpha)
    return image.convert("L")


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
    return _to_rgb_or_rgba(image)


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

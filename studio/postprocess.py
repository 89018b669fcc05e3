"""Post-processing applied to every image a provider returns, before it is saved: upscale, sharpen,
auto-contrast ("enhance"). Compression is the output format's encoder quality (``compression``).

Options are plain data (``{"upscale": 2, "sharpen": 1.0, "autocontrast": true}``) so they travel in
requests, batch scripts and the recorded parameters of every image.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter, ImageOps

from studio.errors import InvalidRequest
from studio.imaging import MAX_PIXELS

OPTIONS = ("upscale", "sharpen", "autocontrast")
ENHANCE = {"sharpen": 0.6, "autocontrast": True}  # what the "enhance" shortcut means


def clean_options(options: Any, width: int, height: int) -> dict[str, Any]:
    """Validated post-processing options (``"enhance"`` expands to a mild sharpen + auto-contrast)."""
    if not options:
        return {}
    if isinstance(options, str):
        options = {name.strip(): True for name in options.split(",") if name.strip()}
    if not isinstance(options, dict):
        raise InvalidRequest("post-processing options must be a mapping such as {\"upscale\": 2}")
    options = dict(options)
    if options.pop("enhance", False):
        options = {**ENHANCE, **options}
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise InvalidRequest(f"unknown post-processing {', '.join(sorted(unknown))}; use upscale, sharpen, "
                             "autocontrast or enhance")
    cleaned: dict[str, Any] = {}
    if options.get("upscale") not in (None, False, 1, 1.0):
        factor = _number_in(options, "upscale", 1.0, 4.0)
        if width * height * factor * factor > MAX_PIXELS:
            raise InvalidRequest(f"upscaling {width}x{height} by {factor:g} exceeds the {MAX_PIXELS:,}-pixel limit")
        cleaned["upscale"] = factor
    if options.get("sharpen") not in (None, False, 0):
        cleaned["sharpen"] = _number_in(options, "sharpen", 0.0, 3.0)
    if options.get("autocontrast"):
        cleaned["autocontrast"] = True
    return cleaned


def _number_in(options: dict[str, Any], name: str, low: float, high: float) -> float:
    try:
        value = float(options[name])
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a number, not {options[name]!r}") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} {value:g} is outside {low:g}-{high:g}")
    return value


def apply(image: Image.Image, options: dict[str, Any]) -> Image.Image:
    """``image`` with the (already validated) options applied, in a fixed order: scale, contrast, sharpen."""
    if not options:
        return image
    if "upscale" in options:
        factor = options["upscale"]
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
    if options.get("autocontrast"):
        alpha = image.getchannel("A") if image.mode == "RGBA" else None
        image = ImageOps.autocontrast(image.convert("RGB"), cutoff=0.5)
        if alpha is not None:
            image.putalpha(alpha)
    if "sharpen" in options:
        image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=int(100 * options["sharpen"]), threshold=2))
    return image

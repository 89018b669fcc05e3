"""Image sizes a model offers, worked out once for every front end and for validation.

A model that takes an aspect ratio instead of pixels (Gemini, FLUX on Replicate, Stability's SD3 and
Ultra) still gets a ``width`` x ``height`` in the request: the size of about the model's default
pixel count in that ratio. The provider sends the ratio nearest that size
(``nearest_aspect_ratio``), and the size goes into the record and the cache key,
so every front end must compute the same one or a cached image misses in the other app:

    ratio_size(model, "16:9")   # (1360, 768) for a 1024x1024-default model; Gemini's table: (1376, 768)
    size_choices(model)         # [("16:9 (1360x768)", "1360x768"), ...] for a size picker
    ratio_for_size(model, 1344, 768)  # "16:9": the ratio that size is made as (None if it is one)

Sides are multiples of ``RATIO_MULTIPLE`` (16): multiples of 64 made 3:4 and 4:5 both 896x1152,
which the provider then sent as 4:5.
"""

from __future__ import annotations

import math
from typing import Iterable

from studio.catalog import ModelInfo
from studio.errors import InvalidRequest

RATIO_MULTIPLE = 16  # pixels; coarser rounding makes neighbouring ratios (3:4, 4:5) the same size
MAX_SIZE_CHOICES = 14  # free-size models: how many common shapes a picker lists
_FREE_BASES = (512, 768, 1024, 1536, 2048)  # short sides of the common shapes offered for free sizes
_FREE_RATIOS = ((1, 1), (3, 2), (2, 3), (4, 3), (3, 4), (16, 9), (9, 16))  # (width, height) shares


def _rounded(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def _ratio_parts(ratio: str) -> tuple[float, float]:
    try:
        width, height = (float(part) for part in ratio.split(":"))
    except ValueError:
        raise InvalidRequest(f"aspect ratio {ratio!r} is not W:H (e.g. 16:9)") from None
    if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
        raise InvalidRequest(f"aspect ratio {ratio!r} is not W:H with positive numbers")
    return width, height


def ratio_size(model: ModelInfo, ratio: str) -> tuple[int, int]:
    """(width, height) in pixels that ``model`` is asked for when the user picks ``ratio`` ("W:H"):
    the size the provider makes for it where the catalog has its published table
    (``ModelInfo.ratio_sizes``: Gemini's 16:9 is 1376x768), else about the model's default pixel
    count, sides multiples of ``RATIO_MULTIPLE`` (or of the model's own size multiple when larger).
    Raises InvalidRequest for a ratio the model does not offer."""
    if ratio not in model.aspect_ratios:
        offered = ", ".join(model.aspect_ratios) or "none (it takes pixel sizes)"
        raise InvalidRequest(f"{model.id} does not offer aspect ratio {ratio}; it offers {offered}")
    if ratio in model.ratio_sizes:
        width, height = (int(side) for side in model.ratio_sizes[ratio].split("x"))
        return width, height
    share_w, share_h = _ratio_parts(ratio)
    area = model.default_width * model.default_height
    multiple = max(RATIO_MULTIPLE, int((model.size_range or {}).get("multiple", 1)))
    width = _rounded(math.sqrt(area * share_w / share_h), multiple)
    return width, _rounded(math.sqrt(area * share_h / share_w), multiple)


def ratio_sizes(model: ModelInfo) -> dict[str, tuple[int, int]]:
    """``{ratio: (width, height)}`` for every aspect ratio ``model`` offers (empty when it takes pixels)."""
    return {ratio: ratio_size(model, ratio) for ratio in model.aspect_ratios}


def nearest_aspect_ratio(width: int, height: int, ratios: Iterable[str]) -> str:
    """The ratio of ``ratios`` ("W:H" strings) closest in shape to ``width`` x ``height`` (compared
    on a log scale, so 2:1 and 1:2 are as far from 1:1): the ratio a provider is sent. Raises
    ValueError when ``ratios`` is empty."""
    choices = list(ratios)
    if not choices:
        raise ValueError("no aspect ratios to choose from")
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        share_w, share_h = _ratio_parts(ratio)
        return abs(math.log(share_w / share_h) - wanted)

    return min(choices, key=distance)


def ratio_for_size(model: ModelInfo, width: int, height: int) -> str | None:
    """For a model that takes aspect ratios: None when ``width`` x ``height`` is the size of one of
    its ratios (``ratio_size``), else the ratio it will be made as (the nearest). None too for a model
    that takes pixel sizes."""
    if not model.aspect_ratios:
        return None
    if (width, height) in ratio_sizes(model).values():
        return None
    return nearest_aspect_ratio(width, height, model.aspect_ratios)


def fits(model: ModelInfo, width: int, height: int) -> bool:
    """Whether a model with a free size range (``ModelInfo.size_range``) makes ``width`` x ``height``:
    sides, multiple, pixel count and shape within its limits."""
    limits = model.size_range or {}
    if not limits.get("min", 64) <= min(width, height) or max(width, height) > limits.get("max", 4096):
        return False
    if width % limits.get("multiple", 1) or height % limits.get("multiple", 1):
        return False
    pixels = width * height
    if pixels < limits.get("min_pixels", 0) or pixels > limits.get("max_pixels", math.inf):
        return False
    return max(width, height) / min(width, height) <= limits.get("max_ratio", math.inf)


def fit_pixel_budget(model: ModelInfo, width: int, height: int) -> tuple[int, int]:
    """``width`` x ``height`` for a model whose free sizes have a pixel budget (``size_range`` with
    ``min_pixels``/``max_pixels``, as OpenAI's GPT image models): unchanged inside the budget, else
    scaled, keeping its shape, to the nearest size inside it (sides multiples of the model's multiple).
    Raises InvalidRequest for a shape beyond the model's ``max_ratio``. Other models: unchanged."""
    limits = model.size_range or {}
    if model.sizes or not limits.get("min_pixels"):
        return width, height
    if limits.get("max_ratio") and max(width, height) > limits["max_ratio"] * min(width, height):
        raise InvalidRequest(f"{model.id} needs an aspect ratio within {limits['max_ratio']}:1; "
                             f"{width}x{height} is wider")
    pixels, step = width * height, int(limits.get("multiple", 16))
    if pixels < limits["min_pixels"]:
        scale = math.sqrt(limits["min_pixels"] / pixels)
        return math.ceil(width * scale / step) * step, math.ceil(height * scale / step) * step
    if pixels > limits.get("max_pixels", math.inf):
        scale = math.sqrt(limits["max_pixels"] / pixels)
        return math.floor(width * scale / step) * step, math.floor(height * scale / step) * step
    return width, height


def size_choices(model: ModelInfo) -> list[tuple[str, str]]:
    """(label, "WxH") pairs for a size picker: the model's own sizes, its aspect ratios
    (``ratio_size``, labelled "16:9 (1360x768)"), or up to ``MAX_SIZE_CHOICES`` common shapes that fit
    its free size range, the default first, then nearest the default pixel count."""
    if model.sizes:
        return [(size, size) for size in model.sizes]
    if model.aspect_ratios:
        return [(f"{ratio} ({width}x{height})", f"{width}x{height}")
                for ratio, (width, height) in ratio_sizes(model).items()]
    multiple = (model.size_range or {}).get("multiple", 8)
    candidates = set()
    for base in _FREE_BASES:
        for share_w, share_h in _FREE_RATIOS:
            width = base if share_w <= share_h else _rounded(base * share_w / share_h, multiple)
            height = base if share_h <= share_w else _rounded(base * share_h / share_w, multiple)
            if fits(model, width, height):
                candidates.add((width, height))
    area = model.default_width * model.default_height
    ordered = sorted(candidates, key=lambda wh: (abs(math.log(wh[0] * wh[1] / area)), wh[0] < wh[1], -wh[0]))
    sizes = [model.default_size] + [f"{w}x{h}" for w, h in ordered if f"{w}x{h}" != model.default_size]
    return [(size, size) for size in sizes[:MAX_SIZE_CHOICES]]


__all__ = ["MAX_SIZE_CHOICES", "RATIO_MULTIPLE", "fit_pixel_budget", "fits", "nearest_aspect_ratio", "ratio_for_size",
           "ratio_size", "ratio_sizes", "size_choices"]


# Gemini draws at three image sizes; each holds about side² pixels in any aspect ratio (16:9 at 1K is
# 1376x768, 21:9 is 1584x672), so the tier follows the pixel count, not the long side.
IMAGE_SIZE_TIERS = {"1K": 1024, "2K": 2048, "4K": 4096}
_TIER_SLACK = 1.25  # the published 1K sizes reach 1.06 MP (21:9); 1.25 keeps every ratio in its tier


def image_size_tier(width: int, height: int) -> str:
    """The smallest Gemini image size ("1K", "2K" or "4K") that holds ``width`` × ``height`` pixels."""
    for name, side in IMAGE_SIZE_TIERS.items():
        if width * height <= side * side * _TIER_SLACK:
            return name
    return "4K"

"""The numeric settings a front end offers for a model, with bounds every widget library accepts.

Streamlit refuses a slider whose minimum equals its maximum (``StreamlitInvalidMinMaxError``) and
both Streamlit and Gradio refuse a default outside the range, so the bounds are worked out once here
from the model's catalog entry (``ModelInfo``) and the provider, never in a page:

    bounds = setting_bounds(model, "image-to-image")   # {"n": Bounds, "steps": Bounds | None, ...}
    scenes = concurrency_bounds(studio.provider(name), studio.settings)  # batch scenes at once

A setting the model does not have is ``None`` (no widget). A setting with one possible value is a
``Bounds`` whose ``fixed`` is true: show its value as text, not as a slider.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.catalog import ModelInfo, Range

MAX_IMAGES_SHOWN = 10  # the images-per-request slider stops here even if a model allows more
STRENGTH_FLOOR = 0.05  # strength 0 would return the input image unchanged (and still be paid for)
EDIT_MODES = ("image-to-image", "inpaint", "variation")
DEFAULT_SIZE_RANGE = {"min": 64, "max": 2048, "multiple": 8}  # a model whose catalog entry says nothing


@dataclass(frozen=True)
class Bounds:
    """A numeric widget's range: ``min <= default <= max``, moved in steps of ``step``."""

    min: float
    max: float
    default: float
    step: float
    integer: bool = False

    @property
    def fixed(self) -> bool:
        """Only one value is possible: a slider cannot be drawn (its min would equal its max)."""
        return self.max <= self.min

    def clamp(self, value: float) -> float:
        """``value`` moved into the range (a remembered value that a newly picked model no longer allows)."""
        value = min(self.max, max(self.min, value))
        return int(round(value)) if self.integer else value


def _bounds(low: float, high: float, default: float, step: float, integer: bool = False) -> Bounds:
    if integer:
        low, high, default = int(round(low)), int(round(high)), int(round(default))
    high = max(low, high)  # a catalog entry with max < min offers just its minimum
    default = min(high, max(low, default))
    return Bounds(low, high, default, step, integer)


def _from_range(value_range: Range | None, step: float, integer: bool = False, floor: float | None = None
                ) -> Bounds | None:
    if value_range is None:
        return None
    low = value_range.min if floor is None else max(floor, value_range.min)
    return _bounds(low, value_range.max, value_range.default, step, integer)


def image_count_bounds(model: ModelInfo) -> Bounds:
    """Images per request: 1 up to what the model allows (at most ``MAX_IMAGES_SHOWN``)."""
    return _bounds(1, min(max(1, model.max_images), MAX_IMAGES_SHOWN), 1, 1, integer=True)


def variation_count_bounds(model: ModelInfo, scene_variations: int | None = None) -> Bounds:
    """How many variations to make at once: as many images as ``model`` makes per request, or, for
    scene variations (one request per framing), up to ``scene_variations`` framings. Default 4."""
    limit = scene_variations if scene_variations is not None else image_count_bounds(model).max
    return _bounds(1, max(1, limit), 4, 1, integer=True)


def free_size_bounds(model: ModelInfo) -> tuple[Bounds, Bounds] | None:
    """Width and height inputs (pixels) for a model that takes any size in a range; ``None`` for a
    model with a fixed list of sizes or aspect ratios."""
    if model.sizes or model.aspect_ratios:
        return None
    limits = model.size_range or DEFAULT_SIZE_RANGE
    low, high, step = int(limits["min"]), int(limits["max"]), int(limits.get("multiple", 8))
    return (_bounds(low, high, model.default_width, step, integer=True),
            _bounds(low, high, model.default_height, step, integer=True))


def setting_bounds(model: ModelInfo, mode: str = "text-to-image") -> dict[str, Bounds | None]:
    """``{"n", "steps", "guidance", "strength"}`` -> ``Bounds``, or ``None`` where ``model`` has no
    such setting in ``mode`` (strength exists only when an input image is changed)."""
    return {
        "n": image_count_bounds(model),
        "steps": _from_range(model.steps, 1, integer=True),
        "guidance": _from_range(model.guidance, 0.5),
        "strength": _from_range(model.strength, 0.05, floor=STRENGTH_FLOOR) if mode in EDIT_MODES else None,
    }


def default_format(model: ModelInfo) -> str:
    """The output format a front end selects first for ``model``: PNG (the library's default, so a
    request from any front end with untouched settings is the same, cache key included) when the
    model offers it, else the first format it offers."""
    formats = list(model.output_formats) or ["png"]
    return "png" if "png" in formats else formats[0]


def concurrency_bounds(provider, settings=None) -> Bounds:
    """Batch scenes run at once against ``provider``: 1 up to its limit, ``settings.concurrency_limit``
    (``studio.config.Settings``; without settings the provider's own ``max_concurrency``; a local
    model runs one at a time, so its bounds are fixed at 1). Default: as many as allowed."""
    limit = settings.concurrency_limit(provider) if settings is not None else max(
        1, int(getattr(provider, "max_concurrency", 1) or 1))
    return _bounds(1, limit, limit, 1, integer=True)


__all__ = ["Bounds", "MAX_IMAGES_SHOWN", "STRENGTH_FLOOR", "concurrency_bounds", "default_format", "free_size_bounds",
           "image_count_bounds", "setting_bounds", "variation_count_bounds"]

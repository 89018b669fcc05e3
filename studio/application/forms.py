"""One coercion of what a front end holds (widget values, form fields, JSON, CLI text) into request fields.

Every front end collects values in its own shape: Streamlit widgets give numbers and lists, Gradio's
JSON endpoint and the HTTP API give whatever a client wrote (``"2"``, ``"64x64"``, ``"16:9"``), the
CLI and scripts give text. ``coerce_fields`` turns any of those into ``GenerationRequest`` (or batch)
keyword arguments once, by one set of rules:

* a value given as ``None`` or blank text is "not given" (the model's default applies);
* whole numbers (``n``, ``seed``, ``steps``, ``width``, ``height``, ``compression``, ``concurrency``)
  accept ``2``, ``2.0`` and ``"2"``; ``2.5`` or ``"two"`` is an error naming the field;
* ``guidance`` and ``strength`` accept numbers and numeric text;
* ``size`` is ``"WxH"`` pixels, or ``"W:H"``, an aspect ratio, made at the size ``studio.sizes``
  gives that ratio for the model (the size every front end offers for it); ``ratio`` is the same;
* ``tags`` is a list or comma-separated text; ``style`` ``"none"`` means no style;
* ``extra`` (provider options) is a mapping, JSON object text, or ``NAME=VALUE`` texts; the model's
  schema types the values later (``studio.options.coerce_options``, in validation);
* ``postprocess`` is a mapping or JSON object text; ``cache`` a boolean or true/false text.

Nothing is changed quietly: a value that cannot be read is an ``InvalidRequest`` naming it, and
nothing is clamped (validation refuses what a model cannot do, or says in the result's warnings what
it made instead).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from studio.catalog import ModelInfo
from studio.errors import InvalidRequest
from studio.options import parse_option_pairs
from studio.sizes import ratio_size
from studio.validation import parse_json, parse_size

# Optional request fields a caller may give beside prompt, provider and model (Gradio's and the HTTP
# API's ``options`` object, a form's fields). ``ratio`` is "W:H" for a model that takes aspect ratios.
OPTION_NAMES = ("negative_prompt", "style", "size", "ratio", "width", "height", "n", "seed", "steps", "guidance",
                "strength", "quality", "output_format", "compression", "category", "tags", "extra", "postprocess",
                "cache")
# What a batch caller may set (studio.jobs.BatchOptions, less what the front end decides itself).
BATCH_OPTION_NAMES = ("style", "negative_prompt", "size", "ratio", "width", "height", "n", "steps", "guidance",
                      "quality", "output_format", "compression", "category", "tags", "extra", "postprocess",
                      "seed_policy", "seed", "concurrency", "webhook")
WHOLE_FIELDS = ("n", "seed", "steps", "width", "height", "compression", "concurrency")
NUMBER_FIELDS = ("guidance", "strength")
NO_STYLE = "none"  # what the style pickers of both web front ends show for "no style"
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_DIGITS = re.compile(r"[+-]?[0-9]{1,30}")  # whole-number text read exactly (longer is refused as out of range later)


def _excerpt(value: Any, limit: int = 40) -> str:
    """``value`` quoted for an error message, cut (with "…") to ``limit`` characters: a script line
    or a JSON field can be megabytes long."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def is_blank(value: Any) -> bool:
    """Not given: None, or text that is empty after trimming."""
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any, what: str, noun: str) -> float:
    if isinstance(value, bool):  # True is not 1 here: a checkbox's value given for a number is a mistake
        raise InvalidRequest(f"{what} must be {noun}, not {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequest(f"{what} must be {noun}, not {_excerpt(value)}") from None
    if not math.isfinite(number):
        raise InvalidRequest(f"{what} must be {noun}, not {_excerpt(value)}")
    return number


def whole_number(value: Any, what: str) -> int:
    """``value`` (a number or numeric text: ``2``, ``2.0``, ``"2"``) as an int; InvalidRequest naming
    ``what`` for a fraction, a boolean, or anything that is not a finite number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact, however large (a float would round past 2**53)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    number = _number(value, what, "a whole number")
    if not number.is_integer():
        raise InvalidRequest(f"{what} must be a whole number, not {_excerpt(value)}")
    return int(number)


def real_number(value: Any, what: str) -> float:
    """``value`` (a number or numeric text) as a float; InvalidRequest naming ``what`` for a boolean
    or anything that is not a finite number."""
    return _number(value, what, "a number")


def _json_object(value: Any, what: str, example: str) -> dict[str, Any]:
    """A mapping, or JSON object text, as a dict; InvalidRequest naming ``what`` otherwise."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        value = parse_json(value, what)
        if isinstance(value, dict):
            return value
    raise InvalidRequest(f"{what} must be a JSON object, e.g. {example}")


def provider_options(value: Any) -> dict[str, Any]:
    """Provider options (``extra``) from a mapping, JSON object text (Gradio's box) or ``NAME=VALUE``
    texts (the CLI's ``--option``); values stay as given for the model's schema to type."""
    if isinstance(value, (list, tuple)):
        return parse_option_pairs(value)
    return _json_object(value, "provider options", '{"background": "transparent"}')


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidRequest(f"{what} must be true or false, not {_excerpt(value)}")


def _tags(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _size(text: Any, model: ModelInfo | None) -> tuple[int, int]:
    text = str(text).strip()
    if ":" not in text:
        return parse_size(text)
    if model is None:
        raise InvalidRequest(f"an aspect ratio ({text}) needs a model to give it a size")
    return ratio_size(model, text)


def coerce_fields(values: Mapping[str, Any] | None, *, allowed: tuple[str, ...] = OPTION_NAMES,
                  model: ModelInfo | None = None) -> dict[str, Any]:
    """``values`` (field name -> what the front end holds) as typed request fields, by the rules of
    this module's docstring. ``allowed``: the field names a caller may give (``OPTION_NAMES`` for one
    request, ``BATCH_OPTION_NAMES`` for a batch); ``model``: the catalog model a ``"W:H"`` size is
    worked out for. Raises InvalidRequest (naming the field) for an unknown field, a value that
    cannot be read, or ``size`` given together with ``width``/``height``; nothing is adjusted."""
    if values is None or (isinstance(values, str) and not values.strip()):
        return {}
    if not isinstance(values, Mapping):
        raise InvalidRequest('options must be a JSON object, e.g. {"n": 2, "seed": 7}')
    unknown = sorted(str(name) for name in values if name not in allowed)
    if unknown:
        raise InvalidRequest(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    given = {name: value.strip() if isinstance(value, str) and name not in ("negative_prompt",) else value
             for name, value in values.items() if not is_blank(value)}
    fields: dict[str, Any] = {}
    sized = [name for name in ("size", "ratio") if name in given]
    if len(sized) > 1 or (sized and ("width" in given or "height" in given)):
        raise InvalidRequest("give one of size, ratio, or width and height")
    for name, value in given.items():
        if name in ("size", "ratio"):
            fields["width"], fields["height"] = _size(value, model)
        elif name in WHOLE_FIELDS:
            fields[name] = whole_number(value, name)
        elif name in NUMBER_FIELDS:
            fields[name] = real_number(value, name)
        elif name == "tags":
            fields[name] = _tags(value)
        elif name == "extra":
            fields[name] = provider_options(value)
        elif name == "postprocess":
            fields[name] = _json_object(value, "post-processing options", '{"upscale": 2}')
        elif name == "cache":
            fields[name] = _flag(value, name)
        elif name == "style":
            fields[name] = None if str(value).lower() == NO_STYLE else str(value)
        elif name == "output_format":
            fields[name] = str(value).lower()
        else:
            fields[name] = value
    return fields


__all__ = ["BATCH_OPTION_NAMES", "NO_STYLE", "NUMBER_FIELDS", "OPTION_NAMES", "WHOLE_FIELDS", "coerce_fields",
           "is_blank", "provider_options", "real_number", "whole_number"]

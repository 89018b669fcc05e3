"""Per-model provider options: one typed schema per catalog model, one coercion for every front end.

A model's provider-specific options (``go_fast``, ``safety_tolerance``, ``reference_images``, ...)
are catalog data (``ModelInfo.options``). Each entry is one of:

- a list of allowed values, e.g. ``[1, 2, 3]`` or ``["auto", "low"]``: the option's type is the
  values' type (all booleans: true/false; all whole numbers: integer; any other number: number;
  else text), and only those values are allowed;
- an object ``{"type": "boolean" | "integer" | "number" | "string" | "images" | "path", "min": ..,
  "max": .., "choices": [..], "max_items": .., "help": ".."}`` (every key but ``type`` optional); a
  ``path`` is text naming a file, folder or Hub id the server opens (refused for remote visitors);
- a bare string (older override files): a description; the option takes any text.

``coerce_options`` turns what a person typed or sent (CLI ``--option`` text, a script's column, a
Gradio JSON value, a Streamlit widget, a library call) into the real types, once: ``"false"`` becomes
False, ``"2"`` the integer 2, ``"3.5"`` the number 3.5, one image path a list of one image. The
prepared request carries those values to the provider unchanged, so a request body holds numbers as
numbers and booleans as booleans. The schema itself is a pydantic model per catalog model
(``schema_for``), so its coercion rules are pydantic's lax mode, documented and tested upstream.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from studio.catalog import ModelInfo
from studio.errors import InvalidRequest

KINDS = ("boolean", "integer", "number", "string", "images", "path")
MAX_IMAGES_PER_OPTION = 16
_EXCERPT = 60
_RECORDED_IMAGE = re.compile(r"sha256:[0-9a-f]{64}")  # how ``recordable`` writes an image


@dataclass(frozen=True)
class OptionSpec:
    """One option of one model: its type (one of ``KINDS``), the values it allows and a help text."""

    name: str
    kind: str
    choices: tuple[Any, ...] = ()  # empty: any value of the kind (within min/max)
    min: float | None = None
    max: float | None = None
    max_items: int | None = None  # images: how many at most
    help: str = ""

    def allowed(self) -> str:
        """What the option allows, in words ("true or false", "one of 1, 2, 3", "a number from 0 to 10")."""
        if self.choices:
            return "one of " + ", ".join(show_value(choice) for choice in self.choices)
        if self.kind == "boolean":
            return "true or false"
        if self.kind == "images":
            return f"1-{self.max_items or MAX_IMAGES_PER_OPTION} images (file paths or image bytes)"
        if self.kind == "string":
            return "text"
        if self.kind == "path":
            return "a file, folder or Hub id on the server"
        noun = "a whole number" if self.kind == "integer" else "a number"
        if self.min is not None and self.max is not None:
            return f"{noun} from {self.min:g} to {self.max:g}"
        if self.min is not None:
            return f"{noun} of at least {self.min:g}"
        if self.max is not None:
            return f"{noun} of at most {self.max:g}"
        return noun


def show_value(value: Any) -> str:
    """``value`` as a person types it: true/false for booleans, text without quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _excerpt(value: Any) -> str:
    text = repr(value) if not isinstance(value, (bytes, bytearray)) else f"<{len(value):,} bytes>"
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def _kind_of_values(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "boolean"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "number"
    return "string"


def spec_from_entry(name: str, entry: Any, model_id: str = "") -> OptionSpec:
    """The ``OptionSpec`` of catalog entry ``entry`` (a list, an object or a description; see the
    module docstring). Raises ValueError for an entry of another shape (a broken catalog file)."""
    where = f"catalog option {name!r}" + (f" of {model_id}" if model_id else "")
    if isinstance(entry, str):
        return OptionSpec(name, "string", help=entry)
    if isinstance(entry, list):
        kind = _kind_of_values(entry)
        # true/false is the whole boolean range: no list to check against
        choices = () if kind == "boolean" else tuple(entry)
        return OptionSpec(name, kind, choices=choices)
    if isinstance(entry, dict):
        kind = entry.get("type", "string")
        if kind not in KINDS:
            raise ValueError(f"{where}: type {kind!r} is not one of {', '.join(KINDS)}")
        unknown = set(entry) - {"type", "choices", "min", "max", "max_items", "help"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        return OptionSpec(name, kind, choices=tuple(entry.get("choices") or ()), min=entry.get("min"),
                          max=entry.get("max"), max_items=entry.get("max_items"), help=str(entry.get("help", "")))
    raise ValueError(f"{where}: expected a list of values, an object or a description, not {type(entry).__name__}")


def option_specs(model: ModelInfo) -> dict[str, OptionSpec]:
    """The model's options by name, in catalog order. Raises ValueError for a malformed catalog entry."""
    return {name: spec_from_entry(name, entry, model.id) for name, entry in model.options.items()}


# -- the pydantic schema -------------------------------------------------------------------------


def _field_type(spec: OptionSpec) -> Any:
    if spec.kind == "boolean":
        return bool
    if spec.kind == "integer":
        return int
    if spec.kind == "number":
        return float
    if spec.kind == "images":
        return list[Any]
    return str


@lru_cache(maxsize=256)
def _schema(model_id: str, specs: tuple[OptionSpec, ...]) -> type[BaseModel]:
    fields = {spec.name: (_field_type(spec) | None, None) for spec in specs}
    config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, str_strip_whitespace=True,
                        allow_inf_nan=False)
    return create_model(f"Options[{model_id}]", __config__=config, **fields)


def schema_for(model: ModelInfo) -> type[BaseModel]:
    """The pydantic model of ``model``'s options (every field optional; unknown fields refused)."""
    return _schema(model.id, tuple(option_specs(model).values()))


# -- coercion ------------------------------------------------------------------------------------


def coerce_options(model: ModelInfo, values: Mapping[str, Any] | None, *,
                   server_files: bool = True) -> dict[str, Any]:
    """``values`` (option name -> what a person gave: text, a number, a boolean, a list) as the
    model's typed options, ready for the provider: booleans, ints, floats, texts from the allowed
    list, and image options as lists of decoded ``PIL.Image`` objects. Options given as None or ""
    are left out. ``server_files=False`` (web front ends with remote visitors) refuses image options
    given as file names and every ``path`` option: a visitor must not make the server open files of
    its choosing; image bytes and images are taken. Raises InvalidRequest naming the option, the value and what is allowed, or, for an
    option the model does not have, the model's known options; nothing is changed."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidRequest("provider options must be NAME=VALUE pairs (a mapping), "
                             f"not {type(values).__name__}")
    specs = option_specs(model)
    given = {str(name).strip(): value for name, value in values.items()
             if value is not None and not (isinstance(value, str) and not value.strip())}
    unknown = [name for name in given if name not in specs]
    if unknown:
        known = f"; its options are {', '.join(specs)}" if specs else "; it takes no provider options"
        raise InvalidRequest(f"{model.id} has no option {_excerpt(unknown[0])}{known}")
    if not server_files:
        named = next((name for name in given if specs[name].kind == "path"), None)
        if named:
            raise InvalidRequest(f"option {named} names a file on the server, which only its operator may do")
    images = {name: given.pop(name) for name in list(given) if specs[name].kind == "images"}
    try:
        typed = schema_for(model).model_validate(
            {name: _prepare_raw(specs[name], value) for name, value in given.items()}
        ).model_dump(exclude_none=True)
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])
        raise _refused(model, specs[name], given[name]) from None
    result = {}
    for name in specs:  # catalog order, so equal requests give equal records
        if name in typed:
            result[name] = _checked(model, specs[name], typed[name], given[name])
        elif name in images:
            result[name] = _images(model, specs[name], images[name], server_files)
    return result


def _prepare_raw(spec: OptionSpec, value: Any) -> Any:
    """What pydantic gets: a boolean is never taken for a number (pydantic would read True as 1),
    and a boolean given for a text option is the text a person would type (``true``)."""
    if spec.kind in ("integer", "number") and isinstance(value, bool):
        return object()  # refused below as not a number
    if spec.kind == "string" and isinstance(value, bool):
        return show_value(value)
    return value


def _checked(model: ModelInfo, spec: OptionSpec, value: Any, given: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise _refused(model, spec, given)
    if spec.choices:
        if value in spec.choices:
            return value
        if isinstance(value, str):  # "Photographic" for "photographic": the one choice of that spelling
            folded = [c for c in spec.choices if isinstance(c, str) and c.casefold() == value.casefold()]
            if len(folded) == 1:
                return folded[0]
        raise _refused(model, spec, given)
    if spec.kind in ("integer", "number"):
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            raise _refused(model, spec, given)
    return value


def _images(model: ModelInfo, spec: OptionSpec, value: Any, server_files: bool) -> list[Image.Image]:
    from studio.imaging import load_image

    items = list(value) if isinstance(value, (list, tuple)) else [value]
    limit = spec.max_items or MAX_IMAGES_PER_OPTION
    if not 1 <= len(items) <= limit:
        raise InvalidRequest(f"option {spec.name} of {model.id} takes {spec.allowed()}, not {len(items)}")
    loaded = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, (str, Path, bytes, bytearray, Image.Image)):
            raise _refused(model, spec, item)
        if isinstance(item, str) and _RECORDED_IMAGE.fullmatch(item):
            raise InvalidRequest(f"{spec.name} image {number} is known only by its fingerprint (records keep "
                                 "no copy of option images); give the image again")
        if isinstance(item, (str, Path)) and not server_files:
            raise InvalidRequest(f"option {spec.name} takes uploaded images here, not file names on the server")
        loaded.append(load_image(item, f"{spec.name} image {number}"))
    return loaded


def _refused(model: ModelInfo, spec: OptionSpec, value: Any) -> InvalidRequest:
    return InvalidRequest(f"option {spec.name}={_excerpt(value)} is not allowed for {model.id}: "
                          f"it takes {spec.allowed()}")


# -- reading options from text -------------------------------------------------------------------


def parse_option_pairs(items: Iterable[str], *, what: str = "--option") -> dict[str, Any]:
    """``NAME=VALUE`` texts (CLI ``--option``, a script line's ``--option``) as a mapping for
    ``coerce_options``; values stay text (the model's schema types them). A name given more than once
    collects its values in a list (``reference_images=a.png`` twice is two images). Raises
    InvalidRequest for an item without ``=`` or without a name."""
    pairs: dict[str, Any] = {}
    for item in items:
        name, has_value, value = str(item).partition("=")
        name = name.strip()
        if not has_value or not name:
            raise InvalidRequest(f"{what} {_excerpt(item)} is not NAME=VALUE, e.g. background=transparent")
        value = value.strip()
        if name in pairs:
            previous = pairs[name]
            pairs[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            pairs[name] = value
    return pairs


def merge_options(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options of later layers over earlier ones, option by option (a scene's ``go_fast`` does not
    drop the job's ``megapixels``)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer or {})
    return merged


def example(model: ModelInfo) -> dict[str, Any]:
    """A JSON-able example of ``model``'s options for a form's placeholder (first choice, true, the
    lowest number); image options are left out (they take uploads, not text)."""
    sample: dict[str, Any] = {}
    for name, spec in option_specs(model).items():
        if spec.choices:
            sample[name] = spec.choices[0]
        elif spec.kind == "boolean":
            sample[name] = True
        elif spec.kind in ("integer", "number"):
            sample[name] = spec.min if spec.min is not None else 1
        elif spec.kind == "string":
            sample[name] = ""
    return sample


def describe(model: ModelInfo) -> str:
    """One line per option, ``name: what it takes; its help``, for a form's help text. Image options
    are left out, as in ``example``."""
    return "\n".join(f"{name}: {spec.allowed()}" + (f"; {spec.help}" if spec.help else "")
                     for name, spec in option_specs(model).items() if spec.kind != "images")


def recordable(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` in a JSON-safe form for records and cache keys: an image becomes
    ``"sha256:<hex of its pixels and size>"`` (its content, so a changed file is a different request)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Image.Image):
            digest = hashlib.sha256(f"{value.mode}{value.size}".encode() + value.tobytes()).hexdigest()
            return f"sha256:{digest}"
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, (bytes, bytearray)):
            return f"sha256:{hashlib.sha256(value).hexdigest()}"
        return value
    return {name: plain(value) for name, value in extra.items()}


__all__ = ["OptionSpec", "KINDS", "spec_from_entry", "option_specs", "schema_for", "coerce_options",
           "parse_option_pairs", "merge_options", "recordable", "example", "describe", "show_value"]

"""The model catalog: what each provider's models can do and what they cost, kept as data.

One JSON file per provider lives in ``studio/data/catalog/``. A file of the same name under
``$STUDIO_HOME/catalog/`` adds models or overrides fields, so a retired or new model is a data
change. A model id that is in no file is still accepted: it gets the provider's ``"*"`` template.

A model the provider has shut down carries ``"retired": true`` or ``"retires_on": "YYYY-MM-DD"`` (retired
from that day on), and ``"replacement"``: the model to use instead. A request for a retired model is
refused before anything is sent (``check_not_retired``), for every provider.

Each file names the provider's default model per mode under ``"defaults"`` (``{"text-to-image": id,
"image-to-image": id, "inpaint": id, "variation": id}``): a request that names no model gets the one
for its mode, so ``edit`` on a provider whose text-to-image default cannot edit still works. A model
entry with ``"default": true`` (older override files) becomes the default for every mode it can do.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).parent / "data" / "catalog"
MODES = ("text-to-image", "image-to-image", "inpaint", "variation")


@dataclass(frozen=True)
class Range:
    min: float
    max: float
    default: float

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max


@dataclass(frozen=True)
class ModelInfo:
    """Capabilities and price of one model. The UI shows only the controls a model supports."""

    id: str
    provider: str
    label: str = ""
    modes: tuple[str, ...] = ("text-to-image",)
    sizes: tuple[str, ...] = ()  # a fixed list of "WxH", or empty
    size_range: dict[str, int] | None = None  # {"min", "max", "multiple"} for free sizes
    aspect_ratios: tuple[str, ...] = ()  # the provider takes a ratio, not pixels
    # ratio -> "WxH": the pixels the provider makes for it at ``default_size``'s tier, where it publishes
    # them (Gemini's image generation guide); without it the studio works a size out (studio.sizes).
    ratio_sizes: dict[str, str] = field(default_factory=dict)
    default_size: str = "1024x1024"
    max_images: int = 1
    negative_prompt: bool = False
    seed: bool = False
    steps: Range | None = None
    guidance: Range | None = None
    strength: Range | None = None
    mask: bool = False
    qualities: tuple[str, ...] = ()
    default_quality: str | None = None
    quality_aliases: dict[str, str] = field(default_factory=dict)
    output_formats: tuple[str, ...] = ("png", "jpeg", "webp")
    # provider-specific option -> allowed values, or {"type", "min", "max", ...} (studio.options)
    options: dict[str, Any] = field(default_factory=dict)
    price: dict[str, Any] = field(default_factory=lambda: {"kind": "free"})
    default: bool = False
    retired: bool = False  # set from ``retires_on`` once that day has come (UTC)
    retires_on: str | None = None  # ISO date the provider shuts the model down
    replacement: str | None = None  # the model id to use instead once it is retired
    known: bool = True  # False for an id that is not in the catalog
    notes: str = ""
    # Where a local model given as a path is loaded from; ``id`` is then its shown name
    # (studio.model_names). Empty: the id itself. Never in ``to_dict``: it stays on the server.
    location: str = ""

    @property
    def default_width(self) -> int:
        return int(self.default_size.split("x")[0])

    @property
    def default_height(self) -> int:
        return int(self.default_size.split("x")[1])

    def supports(self, mode: str) -> bool:
        return mode in self.modes

    def to_dict(self) -> dict[str, Any]:
        data = {
            "id": self.id,
            "label": self.label or self.id,
            "modes": list(self.modes),
            "sizes": list(self.sizes),
            "size_range": self.size_range,
            "aspect_ratios": list(self.aspect_ratios),
            "default_size": self.default_size,
            "max_images": self.max_images,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": _range_dict(self.steps),
            "guidance": _range_dict(self.guidance),
            "strength": _range_dict(self.strength),
            "mask": self.mask,
            "qualities": list(self.qualities),
            "default_quality": self.default_quality,
            "output_formats": list(self.output_formats),
            "options": self.options,
            "price": self.price,
            "default": self.default,
            "retired": self.retired,
            "retires_on": self.retires_on,
            "replacement": self.replacement,
            "known": self.known,
        }
        if self.notes:
            data["notes"] = self.notes
        return data


def _range_dict(value: Range | None) -> dict[str, float] | None:
    return None if value is None else {"min": value.min, "max": value.max, "default": value.default}


def _model_from_entry(provider: str, entry: dict[str, Any], *, known: bool = True) -> ModelInfo:
    data = dict(entry)
    for name in ("steps", "guidance", "strength"):
        if data.get(name) is not None:
            data[name] = Range(**data[name])
    for name in ("modes", "sizes", "aspect_ratios", "qualities", "output_formats"):
        if name in data:
            data[name] = tuple(data[name])
    allowed = set(ModelInfo.__dataclass_fields__)
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"catalog entry for {provider}/{entry.get('id')} has unknown fields: {sorted(unknown)}")
    if data.get("retires_on"):
        try:
            shut_down = date.fromisoformat(str(data["retires_on"]))
        except ValueError:
            raise ValueError(f"catalog entry for {provider}/{entry.get('id')}: retires_on must be a date "
                             f"YYYY-MM-DD, not {data['retires_on']!r}") from None
        # Decided each time an entry is read, so a long-running server stops calling it on the day.
        data["retired"] = bool(data.get("retired")) or shut_down <= datetime.now(timezone.utc).date()
    model = ModelInfo(provider=provider, known=known, **data)
    from studio.options import option_specs  # imported here: studio.options builds on ModelInfo

    option_specs(model)  # a malformed option entry is a catalog error naming it, as an unknown field is
    return model


class Catalog:
    """All models of all providers, read from the built-in files plus the user's overrides."""

    def __init__(self, user_dir: Path | None = None):
        self.user_dir = user_dir
        self._providers: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        for path in sorted(BUILTIN_DIR.glob("*.json")):
            self._providers[path.stem] = {"models": []}
            self._merge(path.stem, json.loads(path.read_text(encoding="utf-8")))
        if self.user_dir and self.user_dir.is_dir():
            for path in sorted(self.user_dir.glob("*.json")):
                try:
                    overlay = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError) as exc:
                    raise ValueError(f"cannot read catalog override {path}: {exc}") from exc
                self._merge(path.stem, overlay)

    def _merge(self, provider: str, overlay: dict[str, Any]) -> None:
        base = self._providers.setdefault(provider, {"models": []})
        for name, value in overlay.items():
            if name not in ("models", "*", "defaults"):
                base[name] = value
        defaults = base.setdefault("defaults", {})
        defaults.update(overlay.get("defaults", {}))
        by_id = {m["id"]: m for m in base.get("models", [])}
        for entry in overlay.get("models", []):
            entry = dict(entry)
            if entry.pop("default", False):  # the older per-model flag: default for what it can do
                defaults.update({mode: entry["id"] for mode in entry.get("modes", ("text-to-image",))})
            if entry["id"] in by_id:
                by_id[entry["id"]].update(entry)
            else:
                base.setdefault("models", []).append(entry)
        if "*" in overlay:
            base["*"] = {**base.get("*", {}), **overlay["*"]}

    def providers(self) -> list[str]:
        return list(self._providers)

    def models(self, provider: str, *, include_retired: bool = False) -> list[ModelInfo]:
        """The provider's models; ``default`` is set on its text-to-image default."""
        entries = self._providers.get(provider, {}).get("models", [])
        models = [self._model(provider, e) for e in entries]
        return [m for m in models if include_retired or not m.retired]

    def default_model(self, provider: str, mode: str = "text-to-image") -> ModelInfo | None:
        """The model a ``mode`` request gets when it names none: the provider's ``defaults[mode]``
        when that model is listed, not retired and can do ``mode``; else the first listed model
        that can; None when none can (or the provider is unknown). ``mode`` is one of ``MODES``."""
        capable = [m for m in self.models(provider) if m.supports(mode)]
        named = self._providers.get(provider, {}).get("defaults", {}).get(mode)
        return next((m for m in capable if m.id == named), capable[0] if capable else None)

    def model(self, provider: str, model_id: str) -> ModelInfo:
        """The catalog entry for ``model_id``, or the provider's template for an unknown id."""
        for entry in self._providers.get(provider, {}).get("models", []):
            if entry["id"] == model_id:
                return self._model(provider, entry)
        template = copy.deepcopy(self._providers.get(provider, {}).get("*", {}))
        template["id"] = model_id
        template.setdefault("label", model_id)
        return _model_from_entry(provider, template, known=False)

    def _model(self, provider: str, entry: dict[str, Any]) -> ModelInfo:
        text_default = self._providers.get(provider, {}).get("defaults", {}).get("text-to-image")
        return _model_from_entry(provider, {**entry, "default": entry["id"] == text_default})


def check_not_retired(model: ModelInfo) -> None:
    """Raise ``InvalidRequest`` when ``model`` is retired, naming the date and the replacement:
    the provider would refuse it (after the request, or worse, after a charge), so nothing is sent."""
    if not model.retired:
        return
    from studio.errors import InvalidRequest

    when = f" on {model.retires_on}" if model.retires_on else ""
    instead = f"; use {model.replacement} instead" if model.replacement else ""
    raise InvalidRequest(f"the {model.provider} model {model.id} was retired{when}{instead}", provider=model.provider)


@lru_cache(maxsize=8)
def load_catalog(user_dir: str | None = None) -> Catalog:
    return Catalog(Path(user_dir) if user_dir else None)

"""The provider/model pickers and the settings a model offers, shown only when the model has them.

``ModelControls.build`` makes the widgets inside the current Blocks context and wires them: picking
a provider refills the model list, picking a model shows, hides and re-ranges the settings from its
catalog entry (``ModelInfo``). ``model_updates`` is the pure part, testable without a browser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from studio import costs
from studio.catalog import ModelInfo
from studio.controls import Bounds, default_format, setting_bounds
from studio.application import coerce_fields
from studio.errors import StudioError
from studio.estimates import cost_preview
from studio.options import describe as describe_options
from studio.options import example as example_options
from studio.service import Studio
from studio.sizes import size_choices  # the one rule for the sizes a model offers (Streamlit's too)
from studio.types import GenerationRequest
from studio.usertext import markdown_literal

CREATE_MODES = {
    "text-to-image": ("text-to-image",),
    "edit": ("image-to-image", "inpaint"),
    "variation": ("variation", "image-to-image"),
}


def describe_model(model: ModelInfo, status: str = "") -> str:
    # An unknown model's label is the id as the visitor typed it.
    parts = [f"**{markdown_literal(model.label or model.id)}** · {costs.describe_price(model)} · "
             f"{', '.join(model.modes)}"]
    if not model.known:
        parts.append("Not in the catalog: the provider's defaults apply.")
    if model.notes:
        parts.append(model.notes)
    if status:
        parts.append(f"⚠️ {status}")
    return "  \n".join(parts)


def model_props(model: ModelInfo, mode: str, status: str = "") -> dict[str, dict[str, Any]]:
    """Visibility, ranges and defaults of every setting for ``model``, as widget keyword arguments
    keyed by the control's name. Used both to build the widgets and to update them."""

    bounds = setting_bounds(model, run_mode(mode))

    def ranged(setting: Bounds | None) -> dict[str, Any]:
        # Gradio refuses a slider whose minimum equals its maximum: a setting with one possible value
        # is hidden, and request_fields sends that value.
        if setting is None or setting.fixed:
            return {"visible": False}
        return {"visible": True, "minimum": setting.min, "maximum": setting.max, "value": setting.default,
                "step": setting.step}

    formats = list(model.output_formats) or ["png"]
    choices = size_choices(model)
    values = [value for _, value in choices]
    return {
        "about": {"value": describe_model(model, status)},
        "negative": {"visible": model.negative_prompt},
        "size": {"choices": choices, "value": model.default_size if model.default_size in values else values[0],
                 "allow_custom_value": bool(model.size_range)},
        "n": ranged(bounds["n"]),
        "seed": {"visible": model.seed},
        "steps": ranged(bounds["steps"]),
        "guidance": ranged(bounds["guidance"]),
        "strength": ranged(bounds["strength"]),
        "quality": {"visible": bool(model.qualities), "choices": list(model.qualities),
                    "value": model.default_quality or (model.qualities[0] if model.qualities else None)},
        "output_format": {"choices": formats, "value": default_format(model)},
        "options": {"visible": bool(model.options), "value": "",
                    "placeholder": json.dumps(example_options(model)), "info": describe_options(model)},
    }


def model_updates(model: ModelInfo, mode: str, status: str = "") -> dict[str, Any]:
    return {name: gr.update(**props) for name, props in model_props(model, mode, status).items()}


@dataclass
class ModelControls:
    """The widgets of one tab's provider/model picker and settings."""

    studio: Studio
    mode: str
    provider: gr.Dropdown
    model: gr.Dropdown
    about: gr.Markdown
    negative: gr.Textbox
    size: gr.Dropdown
    n: gr.Slider
    seed: gr.Number
    steps: gr.Slider
    guidance: gr.Slider
    strength: gr.Slider
    quality: gr.Dropdown
    output_format: gr.Radio
    options: gr.Textbox
    estimate: gr.Markdown

    SETTINGS = ("about", "negative", "size", "n", "seed", "steps", "guidance", "strength", "quality", "output_format",
                "options")

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, studio: Studio, mode: str) -> "ModelControls":
        provider_choices, reasons = provider_choices_for(studio)
        names = [value for _, value in provider_choices]
        provider = studio.settings.default_provider if studio.settings.default_provider in names else (
            names[0] if names else None)
        models = models_for(studio, provider, mode)
        model = models[0] if models else studio.catalog.model(provider or "local", "unknown")
        props = model_props(model, mode, reasons.get(provider, ""))
        with gr.Row():
            provider_box = gr.Dropdown(provider_choices, value=provider, label="Provider", scale=1)
            model_box = gr.Dropdown([(m.label or m.id, m.id) for m in models], value=models[0].id if models else None,
                                    label="Model", allow_custom_value=True, scale=2,
                                    info="A model id that is not listed is accepted too")
        about = gr.Markdown(**props["about"])
        negative = gr.Textbox(label="Negative prompt", lines=1, placeholder="what the image should not contain",
                              **props["negative"])
        with gr.Row():
            size = gr.Dropdown(label="Size (W x H)", scale=2, **props["size"])
            n = gr.Slider(label="Images", scale=1, **props["n"])
            quality = gr.Dropdown(label="Quality", scale=1, **props["quality"])
            output_format = gr.Radio(label="Format", scale=1, **props["output_format"])
        strength = gr.Slider(label="Strength (how much to change)", **props["strength"])
        with gr.Accordion("Advanced", open=False):
            with gr.Row():
                seed = gr.Number(value=None, precision=0, label="Seed (blank = random)", minimum=0, **props["seed"])
                steps = gr.Slider(label="Steps", **props["steps"])
                guidance = gr.Slider(label="Guidance", **props["guidance"])
            options = gr.Textbox(label="Provider options (JSON object)", lines=1, **props["options"])
        estimate = gr.Markdown()  # filled by wire_estimate once there is a prompt
        controls = cls(studio, mode, provider_box, model_box, about, negative, size, n, seed, steps, guidance,
                       strength, quality, output_format, options, estimate)
        controls._wire()
        return controls

    def _settings(self) -> list[gr.components.Component]:
        return [getattr(self, name) for name in self.SETTINGS]

    def _wire(self) -> None:
        self.provider.change(self.on_provider, [self.provider], [self.model], api_visibility="private",
                             queue=False)
        # The estimate (``wire_estimate``) follows this settings update (.then): run side by side, it
        # would read the old size against the new model's list of sizes.
        self._model_changed = self.model.change(self.on_model, [self.provider, self.model], self._settings(),
                                                api_visibility="private", queue=False)

    def wire_estimate(self, inputs: set, request_for: Callable[..., Any], *,
                      reads: set = frozenset()) -> None:
        """Keep the estimate line showing ``studio.estimates.cost_preview`` of the request the tab
        would run, as the Streamlit pages show it: ``request_for(values, request, profile)`` builds
        that request (prompt, style, input images included; None while there is nothing to run; or
        ``(request, count)`` for ``count`` such requests, as scene variations make) from the values
        of ``inputs``, ``reads`` (read, not watched: the visitor's token) and these controls.
        Recomputed after a model change and whenever one of ``inputs`` or the settings changes."""
        watched = self.inputs() | set(inputs) | set(reads)

        def on_estimate(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            try:
                wanted = request_for(values, request, profile)
            except (StudioError, LookupError, ValueError, TypeError, OSError):  # being typed: no line yet
                return ""
            wanted, count = wanted if isinstance(wanted, tuple) else (wanted, 1)
            return estimate_text(self.studio, wanted, count=count)

        self._model_changed.then(on_estimate, watched, [self.estimate], api_visibility="private", queue=False)
        own = [self.size.input, self.n.input, self.quality.input, self.negative.input, self.options.input]
        gr.on(own + [component.change for component in inputs], on_estimate, watched, [self.estimate],
              api_visibility="private", queue=False, trigger_mode="always_last")

    # -- events -----------------------------------------------------------------------------

    def on_provider(self, provider: str):
        models = models_for(self.studio, provider, self.mode)
        return gr.update(choices=[(m.label or m.id, m.id) for m in models], value=models[0].id if models else None)

    def on_model(self, provider: str, model_id: str):
        try:
            handler = self.studio.provider(provider)
            model = handler.model(model_id or None, mode=run_mode(self.mode))
            status = handler.status()
        except (StudioError, LookupError, ImportError):
            return [gr.update() for _ in self.SETTINGS]
        # A ready provider's reason is worth seeing too ("... downloads on first use (2.6 GB)").
        updates = model_updates(model, self.mode, status.reason)
        return [updates[name] for name in self.SETTINGS]

    # -- reading the values -----------------------------------------------------------------

    def inputs(self) -> set:
        return {self.provider, self.model, self.negative, self.size, self.n, self.seed, self.steps, self.guidance,
                self.strength, self.quality, self.output_format, self.options}

    def request_fields(self, values: dict) -> dict[str, Any]:
        """GenerationRequest fields from the widgets' values, keeping only what the model offers; the
        values are read by the application layer's one coercion (``studio.application.coerce_fields``)."""
        provider = values[self.provider]
        model = self.studio.provider(provider).model(values[self.model] or None, mode=run_mode(self.mode))
        raw: dict[str, Any] = {"size": values[self.size], "output_format": values[self.output_format] or "png"}
        if model.negative_prompt:
            raw["negative_prompt"] = values[self.negative] or ""
        if model.seed:
            raw["seed"] = values[self.seed]
        for name, bounds in setting_bounds(model, run_mode(self.mode)).items():
            if bounds is None or (name == "n" and bounds.fixed):  # one image per request: nothing to say
                continue
            # A hidden slider (one possible value) sends that value; an emptied one its default.
            value = values[getattr(self, name)]
            raw[name] = bounds.default if bounds.fixed or value in (None, "") else value
        if model.qualities:
            raw["quality"] = values[self.quality]
        if model.options:
            raw["extra"] = values[self.options]
        fields = coerce_fields(raw, model=model)
        return {"provider": provider, "model": values[self.model] or None, **fields}


def estimate_text(studio: Studio, request: GenerationRequest | None, *, count: int = 1) -> str:
    """``studio.estimates.cost_preview``'s line for the request a tab would run (input text and images
    included: the same line Streamlit shows); empty while there is none or it does not prepare yet."""
    if request is None:
        return ""
    try:
        return cost_preview(studio, request, count=count).text()
    except (StudioError, LookupError, ValueError, KeyError, TypeError):
        return ""


def provider_choices_for(studio: Studio) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Dropdown choices naming each provider's state, and {name: reason it is not ready}."""
    choices, reasons = [], {}
    for status in studio.provider_statuses():
        label = status.label or status.name
        if not status.ready:
            label += " — " + ("needs a key" if status.state == "missing_key" else "unavailable")
        choices.append((label, status.name))
        reasons[status.name] = status.reason
    return choices, reasons


def run_mode(mode: str) -> str:
    """The catalog mode whose default model a tab of kind ``mode`` starts with."""
    return CREATE_MODES.get(mode, (mode,))[0]


def models_for(studio: Studio, provider: str | None, mode: str) -> list[ModelInfo]:
    """The provider's models that can do ``mode`` (the tab's kind of work), default model first."""
    if not provider:
        return []
    try:
        handler = studio.provider(provider)
        models = handler.models()
        default = handler.default_model(mode=run_mode(mode))
    except (StudioError, LookupError, ImportError):
        return []
    wanted = CREATE_MODES.get(mode, (mode,))
    usable = [m for m in models if any(m.supports(w) for w in wanted)]
    usable.sort(key=lambda m: m.id != default.id)
    return usable

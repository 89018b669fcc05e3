"""The three tabs that make images: Generate, Edit (image-to-image and inpainting) and Variations.

Each tab is a form on the left (prompt, provider/model, only the settings the model has) and the
session gallery on the right. Runs report progress on a ``gr.Progress`` bar and can be stopped.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr
from PIL import Image

from gradio_ui.context import AppContext
from gradio_ui.controls import ModelControls
from gradio_ui.endpoints import upload_bytes, visitor_errors
from gradio_ui.session_gallery import GalleryPanel, with_results
from studio.application import whole_number
from studio.controls import Bounds
from studio.errors import InvalidRequest, StudioError
from studio.masks import mask_from_layers
from studio.service import GenerationResult
from studio.types import GenerationRequest, Mode
from studio.usertext import markdown_literal

PRIVATE = {"api_visibility": "private"}


def result_summary(result: GenerationResult) -> str:
    parts = [f"**{len(result.images)} image(s)** in {result.duration:.1f} s"]
    parts.append("from the cache, no cost" if result.cached
                 else f"cost ${result.cost:.4f} (estimated ${result.estimated_cost:.4f})")
    seeds = [str(r.seed) for r in result.images if r.seed is not None]
    if seeds:
        parts.append("seed " + ", ".join(seeds))
    text = " · ".join(parts)
    if result.warnings:
        text += "  \n" + "  \n".join(f"⚠️ {markdown_literal(warning)}" for warning in result.warnings)
    return text


def mask_from_editor(value: dict | None) -> Image.Image | None:
    """The inpainting mask from a ``gr.ImageEditor`` value: wherever any layer has paint (alpha > 0)
    is white (repaint), the rest black, at the background's size (``studio.masks.mask_from_layers``, the
    same reading as the Streamlit canvas). None when nothing was painted."""
    if not value or value.get("background") is None:  # no image, nothing to mask
        return None
    return mask_from_layers(value.get("layers") or [], value["background"].size)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def picked_or_uploaded(ctx: AppContext, owner: str, image_id: str | None, shown: Image.Image) -> dict[str, Any]:
    """The source for an edit or variation: the stored image picked from a gallery (so the result is
    linked to it as its parent) while the widget still shows that picture, else the picture shown.

    Compared by pixels because the widget reports no reliable event when a visitor replaces the
    picture that was loaded into it."""
    if image_id:
        record = ctx.studio.get_image(image_id, owner)
        with Image.open(io.BytesIO(ctx.studio.image_bytes(record))) as stored:
            if stored.size == shown.size and stored.convert("RGB").tobytes() == shown.convert("RGB").tobytes():
                return {"image_id": image_id}
    return {"image": png_bytes(shown)}


def style_picker(ctx: AppContext) -> gr.Dropdown:
    choices = [("None", "none")] + [(s.label, s.name) for s in ctx.studio.styles.all()]
    return gr.Dropdown(choices, value="none", label="Style")


def organise_fields() -> tuple[gr.Textbox, gr.Textbox]:
    with gr.Accordion("Category and tags", open=False):
        with gr.Row():
            category = gr.Textbox(label="Category", placeholder="e.g. concept-art")
            tags = gr.Textbox(label="Tags", placeholder="comma, separated")
    return category, tags


UPSCALE_CHOICES = [("off", 1.0), ("1.5×", 1.5), ("2×", 2.0), ("3×", 3.0), ("4×", 4.0)]


@dataclass
class Finishing:
    """Post-processing the core applies before saving (``studio.postprocess``)."""

    upscale: gr.Dropdown
    enhance: gr.Checkbox

    @classmethod
    def build(cls) -> "Finishing":
        with gr.Accordion("Post-process", open=False):
            with gr.Row():
                upscale = gr.Dropdown(UPSCALE_CHOICES, value=1.0, label="Upscale")
                enhance = gr.Checkbox(label="Enhance (auto-contrast and a mild sharpen)", value=False)
        return cls(upscale, enhance)

    def inputs(self) -> set:
        return {self.upscale, self.enhance}

    def fields(self, values: dict) -> dict[str, Any]:
        options = {}
        if values[self.upscale] and float(values[self.upscale]) > 1.0:
            options["upscale"] = float(values[self.upscale])
        if values[self.enhance]:
            options["enhance"] = True
        return {"postprocess": options} if options else {}


def template_picker(ctx: AppContext, prompt: gr.Textbox, style: gr.Dropdown, negative: gr.Textbox,
                    category: gr.Textbox) -> None:
    """"Start from a prompt template": a template per category, filled with the visitor's subject."""
    templates = {f"{t.category}/{t.name}": t for t in ctx.studio.styles.templates()}
    with gr.Accordion("Start from a prompt template", open=False):
        with gr.Row():
            chosen = gr.Dropdown([(f"{t.category}: {t.label}", key) for key, t in templates.items()],
                                 value=next(iter(templates), None), label="Template", scale=2)
            subject = gr.Textbox(label="Subject", placeholder="a copper teapot", scale=2)
            use = gr.Button("Use this template", size="sm", scale=1)

    def on_use(key: str, subject_text: str):
        template = templates.get(key)
        if template is None or not (subject_text or "").strip():
            raise gr.Error("Pick a template and write its subject first.", title="Check the request")
        return (template.fill(subject_text), template.style or "none", template.negative_prompt,
                template.category)

    use.click(on_use, [chosen, subject], [prompt, style, negative, category], **PRIVATE, queue=False)


def run_buttons(label: str) -> tuple[gr.Button, gr.Button]:
    with gr.Row():
        go = gr.Button(label, variant="primary", scale=3)
        stop = gr.Button("Stop", variant="stop", scale=1)
    return go, stop


@dataclass
class TabFrame:
    """What every making tab has around its own inputs: run and stop buttons and a status line under
    the form, and the session gallery beside it (filled in by ``creating_tab``)."""

    go: gr.Button | None = None
    stop: gr.Button | None = None
    status: gr.Markdown | None = None
    panel: GalleryPanel | None = None


@contextmanager
def creating_tab(ctx: AppContext, title: str, name: str, button: str) -> Iterator[TabFrame]:
    """A making tab's layout: the ``with`` body builds the form's own inputs in the left column; then
    come the ``button``/Stop row and the status line (``elem_id`` ``{name}-status``) under them, and
    the gallery panel on the right. The yielded ``TabFrame`` holds those once the block ends."""
    frame = TabFrame()
    with gr.Tab(title, id=name):
        with gr.Row():
            with gr.Column(scale=5):
                yield frame
                frame.go, frame.stop = run_buttons(button)
                frame.status = gr.Markdown(elem_id=f"{name}-status")
            with gr.Column(scale=6):
                frame.panel = GalleryPanel.build(ctx, name)


@dataclass
class CreateTab:
    panel: GalleryPanel
    status: gr.Markdown
    source_id: gr.State | None = None  # Edit / Variations: a stored image picked from a gallery
    source_note: gr.Markdown | None = None
    source_input: Any = None  # the editor or image widget holding the source


def wire_run(ctx: AppContext, frame: TabFrame, submit: gr.Textbox, inputs: set, work) -> None:
    """Run ``work(values, owner, progress, cancel) -> GenerationResult`` from the frame's button (and
    Enter in ``submit``, the prompt); put the images in the session gallery and the summary in the
    frame's status line; let its Stop button cancel it."""
    go, stop, status = frame.go, frame.stop, frame.status

    def run(values: dict, request: gr.Request, profile: gr.OAuthProfile | None, progress=gr.Progress()):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            ctx.access.check_may_generate(owner)
            with ctx.stops.running(request.session_hash) as cancel:
                result = work(values, owner, progress, cancel)
        return with_results(values[ctx.session], [r.id for r in result.images]), result_summary(result)

    def on_stop(request: gr.Request):
        stopped = ctx.stops.stop(request.session_hash)
        return "Stopping..." if stopped else gr.update()

    all_inputs = inputs | {ctx.session, ctx.token}
    events = [go.click(run, all_inputs, [ctx.session, status], **PRIVATE, **ctx.limits.generating()),
              submit.submit(run, all_inputs, [ctx.session, status], **PRIVATE, **ctx.limits.generating())]
    stop.click(on_stop, None, [status], cancels=events, **PRIVATE, queue=False)


def build_generate_tab(ctx: AppContext) -> CreateTab:
    with creating_tab(ctx, "Generate", "generate", "Generate") as frame:
        prompt = gr.Textbox(label="Prompt", lines=3, placeholder="a lighthouse at dusk, volumetric light")
        style = style_picker(ctx)
        controls = ModelControls.build(ctx.studio, "text-to-image")
        category, tags = organise_fields()
        finishing = Finishing.build()
        template_picker(ctx, prompt, style, controls.negative, category)

    def work(values: dict, owner: str, progress, cancel) -> GenerationResult:
        fields = controls.request_fields(values)
        return ctx.actions.generate(owner, values[prompt], style=values[style], category=values[category] or "",
                                    tags=values[tags] or "", progress=progress, cancel=cancel, **fields,
                                    **finishing.fields(values))

    def estimated(values: dict, request: gr.Request, profile: gr.OAuthProfile | None) -> GenerationRequest | None:
        if not (values[prompt] or "").strip():
            return None
        return ctx.app.form_request(ctx.owner(values, request, profile),
                                    {"prompt": values[prompt], "style": values[style],
                                     **controls.request_fields(values), **finishing.fields(values)})

    controls.wire_estimate({prompt, style} | finishing.inputs(), estimated, reads={ctx.token})
    wire_run(ctx, frame, prompt, controls.inputs() | finishing.inputs() | {prompt, style, category, tags}, work)
    return CreateTab(frame.panel, frame.status)


def build_edit_tab(ctx: AppContext) -> CreateTab:
    with creating_tab(ctx, "Edit", "edit", "Edit") as frame:
        editor = gr.ImageEditor(
            label="Image: paint over what should change (inpainting), or leave it unpainted to redo "
                  "the whole image", type="pil", sources=["upload", "clipboard"], transforms=(),
            layers=False, height=460, brush=gr.Brush(colors=["#ff2bd6"], color_mode="fixed"),
            elem_id="edit-editor")
        source_note = gr.Markdown()
        source_id = gr.State(None)
        prompt = gr.Textbox(label="What to make", lines=2, placeholder="a red door")
        controls = ModelControls.build(ctx.studio, "edit")
        finishing = Finishing.build()

    def work(values: dict, owner: str, progress, cancel) -> GenerationResult:
        value = values[editor] or {}
        if value.get("background") is None:
            raise InvalidRequest("upload an image to edit (or pick one in a gallery and press \"Edit selected\")")
        source = picked_or_uploaded(ctx, owner, values[source_id], value["background"])
        return ctx.actions.edit(owner, values[prompt], mask=mask_from_editor(value), progress=progress,
                                cancel=cancel, **source, **controls.request_fields(values), **finishing.fields(values))

    def estimated(values: dict, request: gr.Request, profile: gr.OAuthProfile | None) -> GenerationRequest | None:
        value = values[editor] or {}
        if value.get("background") is None or not (values[prompt] or "").strip():
            return None
        mask = mask_from_editor(value)
        return ctx.app.form_request(ctx.owner(values, request, profile),
                                    {"prompt": values[prompt], **controls.request_fields(values),
                                     **finishing.fields(values)},
                                    mode=Mode.INPAINT if mask is not None else Mode.IMAGE_TO_IMAGE,
                                    init_image=value["background"], mask=mask)

    controls.wire_estimate({editor, prompt} | finishing.inputs(), estimated, reads={ctx.token})
    wire_run(ctx, frame, prompt, controls.inputs() | finishing.inputs() | {editor, source_id, prompt}, work)
    return CreateTab(frame.panel, frame.status, source_id, source_note, editor)


def variation_count(ctx: AppContext, provider: str, model_id: str | None, scene: bool) -> Bounds:
    """How many variations the tab may ask the model for (``Application.variation_count``)."""
    return ctx.app.variation_count(provider, model_id or None, scene=bool(scene))


def variation_count_props(bounds: Bounds) -> dict[str, Any]:
    """The count slider's settings; hidden when only one value is possible (Gradio refuses a slider
    whose minimum equals its maximum)."""
    if bounds.fixed:
        return {"visible": False}
    return {"visible": True, "minimum": bounds.min, "maximum": bounds.max, "value": bounds.default, "step": 1}


def build_variations_tab(ctx: AppContext) -> CreateTab:
    with creating_tab(ctx, "Variations", "variations", "Make variations") as frame:
        source = gr.Image(label="Source image (optional: without one, the prompt is varied)",
                          type="filepath", sources=["upload", "clipboard"], height=320)
        source_note = gr.Markdown()
        source_id = gr.State(None)
        prompt = gr.Textbox(label="Prompt (optional for a stored image: its own prompt is used)", lines=2)
        with gr.Row():
            count = gr.Slider(1, 8, value=4, step=1, label="Variations")
            scene = gr.Checkbox(label="Scene variations (framing and lighting)", value=False)
        controls = ModelControls.build(ctx.studio, "variation")
        finishing = Finishing.build()

    def on_count_limits(provider: str, model_id: str | None, scene_chosen: bool):
        try:
            return gr.update(**variation_count_props(variation_count(ctx, provider, model_id, scene_chosen)))
        except (StudioError, LookupError):  # the model box holds an id being typed: keep the slider
            return gr.update()

    gr.on([controls.model.change, scene.change], on_count_limits, [controls.provider, controls.model, scene], [count],
          api_visibility="private", queue=False)

    def fields_and_count(values: dict) -> tuple[dict[str, Any], Any]:
        """The controls' request fields without ``n`` (the count of variations is its own control),
        and that count: a hidden slider (one value possible) sends the only value; any other is
        checked by the core, not clamped."""
        fields = controls.request_fields(values)
        fields.pop("n", None)
        limits = variation_count(ctx, values[controls.provider], values[controls.model], values[scene])
        return fields, limits.default if limits.fixed else values[count]

    def work(values: dict, owner: str, progress, cancel) -> GenerationResult:
        fields, how_many = fields_and_count(values)
        picked = {}
        if values[source]:
            with Image.open(io.BytesIO(upload_bytes(values[source], "source image"))) as shown:
                picked = picked_or_uploaded(ctx, owner, values[source_id], shown)
        return ctx.actions.variations(owner, prompt=values[prompt], n=how_many, scene=values[scene],
                                      progress=progress, cancel=cancel, **picked, **fields, **finishing.fields(values))

    def estimated(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        """As the Streamlit Variations page: the source's own prompt when none is written, one request
        of ``count`` images, or ``count`` requests of one for scene variations."""
        owner = ctx.owner(values, request, profile)
        text = (values[prompt] or "").strip()
        if not text and values[source_id]:
            record = ctx.studio.get_image(values[source_id], owner)
            text = record.user_prompt or record.prompt
        if not text:
            return None
        fields, chosen = fields_and_count(values)
        how_many = whole_number(chosen, "variations")
        init = Image.open(io.BytesIO(upload_bytes(values[source], "source image"))) if values[source] else None
        wanted = ctx.app.form_request(owner, {"prompt": text, "n": 1 if values[scene] else how_many, **fields,
                                              **finishing.fields(values)}, mode=Mode.VARIATION, init_image=init)
        return wanted, how_many if values[scene] else 1

    controls.wire_estimate({source, prompt, count, scene} | finishing.inputs(), estimated, reads={ctx.token, source_id})
    wire_run(ctx, frame, prompt, controls.inputs() | finishing.inputs() | {source, source_id, prompt, count, scene},
             work)
    return CreateTab(frame.panel, frame.status, source_id, source_note, source)

"""Widgets the pages share: provider and model pickers, the controls a model supports, the cost
estimate, error messages, image cards with their actions, and picking a source image.

Controls come from the model's ``ModelInfo`` (the catalog): a model without seeds shows no seed
box, one with fixed sizes shows a size list, one that takes aspect ratios shows ratios.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from studio import costs
from studio.application import ERROR_TITLES, error_text  # noqa: F401  (ERROR_TITLES: one table for every front end)
from studio.catalog import ModelInfo
from studio.controls import DEFAULT_SIZE_RANGE, Bounds, default_format, free_size_bounds, setting_bounds
from studio.errors import NotConfigured, StudioError
from studio.estimates import cost_preview
from studio.identity import may_change
from studio.imaging import EXTENSIONS, MIME_TYPES, load_image
from studio.options import OptionSpec, coerce_options, option_specs, show_value
from studio.sizes import nearest_aspect_ratio
from studio.types import GenerationRequest, ImageRecord
from studio.usertext import markdown_literal
from studio.validation import MAX_SEED

log = logging.getLogger("studio.streamlit")
STATE_ICONS = {"ready": "✅", "missing_key": "🔑", "unavailable": "⛔"}
STATE_WORDS = {"ready": "ready", "missing_key": "needs a key", "unavailable": "unavailable"}
SAVED_TAG = "saved"
DEFAULT_CHOICE = "(default)"  # a provider option left to the model
PERSIST = "session"  # inputs survive page switches: nothing typed is lost by looking at History

# Where a key goes in this app: the hint shown with an error that says a provider's key is missing.
KEY_HINT = ("Set the key in the environment or Streamlit secrets, or paste one for this session under "
            "**API keys** in the sidebar.")


# -- messages ------------------------------------------------------------------------------------


def show_error(error: BaseException) -> None:
    """A failure as a message a person can act on (never a traceback): the application layer's title,
    message and hint (``studio.application.error_text``), the same words Gradio and the API use."""
    if not isinstance(error, StudioError):  # a bug: its details go to the server's log, not the page
        log.error("unexpected error shown on a page", exc_info=error)
    text = error_text(error, key_hint=KEY_HINT)
    line = f"**{text.title}:** {markdown_literal(text.message)}"  # messages echo input
    if text.kind == "cancelled":
        st.info(line)
        return
    st.error(line + (f"\n\n{text.hint}" if text.hint else ""))


def show_warning(message: str) -> None:
    """What was made or set differently from what was asked (a result's warnings, an adjusted
    control): the one way pages show it. ``message`` is shown literally (it quotes input)."""
    st.warning(markdown_literal(message))


# -- providers and models ------------------------------------------------------------------------


def provider_statuses(ctx) -> dict[str, Any]:
    """name -> ProviderStatus, computed once per script run."""
    cached = getattr(ctx, "_statuses", None)
    if cached is None:
        cached = {s.name: s for s in ctx.studio.provider_statuses()}
        ctx._statuses = cached
    return cached


def provider_picker(ctx, prefix: str, modes: tuple[str, ...] = ("text-to-image",)) -> tuple[str, ModelInfo]:
    """Provider and model select boxes (only models that can do one of ``modes``)."""
    statuses = provider_statuses(ctx)
    default = ctx.studio.settings.default_provider
    names = [n for n in statuses if _models_for(ctx, n, modes)]
    names.sort(key=lambda n: (n != default, statuses[n].state != "ready"))
    if not names:
        st.error("No provider offers this kind of request.")
        st.stop()
    key = f"{prefix}_provider"
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
    provider = st.selectbox(
        "Provider", names, key=key, persist_state=PERSIST,
        format_func=lambda n: f"{statuses[n].label} — {STATE_ICONS.get(statuses[n].state, '')} "
                              f"{STATE_WORDS.get(statuses[n].state, statuses[n].state)}")
    status = statuses[provider]
    if not status.ready:
        st.warning(f"{status.label}: {status.reason}" + (
            " — or paste a key for this session under **API keys** in the sidebar."
            if status.state == "missing_key" else ""))
    elif status.reason:  # ready, with something to know first (e.g. "... downloads on first use (2.6 GB)")
        st.caption(f"{status.label}: {status.reason}")
    models = _models_for(ctx, provider, modes)
    by_id = {m.id: m for m in models}
    model_key = f"{prefix}_model_{provider}"
    if st.session_state.get(model_key) not in by_id:
        st.session_state.pop(model_key, None)
    default_id = _default_model_id(ctx, provider, modes, list(by_id))
    model_id = st.selectbox("Model", list(by_id), index=list(by_id).index(default_id), key=model_key,
                            persist_state=PERSIST,
                            format_func=lambda i: f"{by_id[i].label or i} · {costs.describe_price(by_id[i])}")
    model = by_id[model_id]
    if model.notes:
        st.caption(model.notes)
    return provider, model


def check_can_run(ctx, provider: str, request: GenerationRequest) -> None:
    """Before a page starts work in the background: ``provider`` is set up (NotConfigured naming
    what is missing otherwise) and ``request`` passes validation, so a bad one is reported now, not
    from the background. Raises those StudioErrors; nothing is run or paid."""
    status = provider_statuses(ctx)[provider]
    if not status.ready:
        raise NotConfigured(status.reason, provider=provider, needs_key=status.state == "missing_key")
    ctx.studio.prepare(request)


def _default_model_id(ctx, provider: str, modes: tuple[str, ...], listed: list[str]) -> str:
    """The provider's default model for the page's first mode (from the catalog), when listed."""
    try:
        wanted = ctx.studio.provider(provider).default_model(ctx.user, modes[0]).id
    except (StudioError, LookupError):
        wanted = None
    return wanted if wanted in listed else listed[0]


def _models_for(ctx, provider: str, modes: tuple[str, ...]) -> list[ModelInfo]:
    try:
        models = ctx.studio.provider(provider).models()
    except StudioError:
        return []
    return [m for m in models if any(m.supports(mode) for mode in modes)]


def control_key(prefix: str, name: str, model: ModelInfo) -> str:
    """Widget keys include the model, so switching models brings that model's own defaults."""
    return f"{prefix}_{name}_{model.provider}_{model.id}"


def model_controls(model: ModelInfo, prefix: str, *, mode: str = "text-to-image", size: bool = True,
                   count: bool = True) -> dict[str, Any]:
    """Draw the controls ``model`` supports; return their values as form fields for the application
    layer (``ctx.app.form_request`` and friends), e.g. ``{"ratio": "16:9", "n": 2, "extra": {...}}``:
    the sizes of a ratio are worked out there, once for every front end."""
    key = lambda name: control_key(prefix, name, model)  # noqa: E731
    values: dict[str, Any] = {}
    if model.negative_prompt:
        values["negative_prompt"] = st.text_area("Negative prompt", key=key("negative"), height=68,
                                                 persist_state=PERSIST,
                                                 placeholder="what the image should not show")
    bounds = setting_bounds(model, mode)
    columns = st.columns(3)
    with columns[0]:
        if size:
            values.update(_size_control(model, key))
        if count and not bounds["n"].fixed:  # one image per request needs no control
            values["n"] = bounded_slider("Images", bounds["n"], key("n"))
    with columns[1]:
        if bounds["steps"] is not None:
            values["steps"] = bounded_slider("Steps", bounds["steps"], key("steps"))
        if bounds["guidance"] is not None:
            values["guidance"] = bounded_slider("Guidance", bounds["guidance"], key("guidance"))
        if bounds["strength"] is not None:
            values["strength"] = bounded_slider(
                "Strength", bounds["strength"], key("strength"),
                help="How much the result may differ from the input image (1 = ignore it).")
    with columns[2]:
        if model.seed:
            values["seed"] = st.number_input("Seed", min_value=0, max_value=MAX_SEED, value=None, step=1,
                                             key=key("seed"), persist_state=PERSIST, placeholder="random",
                                             help="The same seed and settings give the same image.")
        if model.qualities:
            default_quality = model.default_quality if model.default_quality in model.qualities else None
            values["quality"] = st.selectbox(
                "Quality", list(model.qualities), key=key("quality"), persist_state=PERSIST,
                index=list(model.qualities).index(default_quality) if default_quality else 0)
        formats = list(model.output_formats)
        values["output_format"] = st.selectbox("Format", formats, key=key("format"), persist_state=PERSIST,
                                               index=formats.index(default_format(model)) if formats else 0)
    # Image options (reference images) take uploads, which this form has no place for.
    specs = [spec for spec in option_specs(model).values() if spec.kind != "images"]
    if specs:
        with st.expander("Provider options"):
            extra = {}
            for spec in specs:
                value = option_input(spec, key(f"opt_{spec.name}"))
                if value is not None:
                    extra[spec.name] = value
            values["extra"] = extra
    return values


def option_input(spec: OptionSpec, key: str) -> Any:
    """The widget for one provider option (``studio.options.OptionSpec``): a list for choices and
    true/false, a number box within its range, a text box. None means "the model's default"; the
    value is coerced by the core (``studio.options.coerce_options``) like any other front end's."""
    label, help_text = spec.name.replace("_", " "), spec.help or None
    if spec.choices or spec.kind == "boolean":
        choices = list(spec.choices) if spec.choices else [True, False]
        choice = st.selectbox(label, [DEFAULT_CHOICE, *choices], key=key, persist_state=PERSIST, help=help_text,
                              format_func=lambda v: v if v == DEFAULT_CHOICE else show_value(v))
        return None if choice == DEFAULT_CHOICE else choice
    if spec.kind in ("integer", "number"):
        kind = int if spec.kind == "integer" else float
        bounds = {name: kind(value) for name, value in (("min_value", spec.min), ("max_value", spec.max))
                  if value is not None}
        return st.number_input(label, value=None, step=kind(1) if kind is int else 0.1, key=key,
                               persist_state=PERSIST, placeholder="model default", help=help_text, **bounds)
    return st.text_input(label, key=key, persist_state=PERSIST, placeholder="model default", help=help_text) or None


def bounded_slider(label: str, bounds: Bounds, key: str, *, help: str | None = None) -> float:
    """A slider over ``bounds`` (from ``studio.controls``), or, when only one value is possible, that
    value as a caption: Streamlit refuses a slider whose minimum equals its maximum."""
    if bounds.fixed:
        st.caption(f"{label}: **{bounds.default:g}** (the only value allowed here)", help=help)
        return bounds.default
    remembered = st.session_state.get(key)
    if isinstance(remembered, (int, float)) and bounds.clamp(remembered) != remembered:
        # A value remembered from earlier that these bounds no longer allow: the slider cannot show it,
        # so it moves to the nearest allowed value, and the user is told (never a silent change).
        moved = bounds.clamp(remembered)
        st.session_state[key] = moved
        show_warning(f"{label}: {remembered:g} is outside {bounds.min:g}-{bounds.max:g} here; set to {moved:g}.")
    kind = int if bounds.integer else float
    return st.slider(label, kind(bounds.min), kind(bounds.max), kind(bounds.default), step=kind(bounds.step),
                     key=key, persist_state=PERSIST, help=help)


def _size_control(model: ModelInfo, key) -> dict[str, Any]:
    if model.sizes:
        sizes = list(model.sizes)
        index = sizes.index(model.default_size) if model.default_size in sizes else 0
        return {"size": st.selectbox("Size", sizes, index=index, key=key("size"), persist_state=PERSIST)}
    if model.aspect_ratios:
        ratios = list(model.aspect_ratios)
        # The application layer gives the ratio its size (studio.sizes), as for Gradio and the API.
        return {"ratio": st.selectbox("Aspect ratio", ratios, key=key("ratio"), persist_state=PERSIST)}
    width_bounds, height_bounds = free_size_bounds(model)
    width, height = (st.number_input(label, bounds.min, bounds.max, bounds.default, step=bounds.step, key=key(name),
                                     persist_state=PERSIST)
                     for label, name, bounds in (("Width", "w", width_bounds), ("Height", "h", height_bounds)))
    return {"width": int(width), "height": int(height)}


def style_picker(ctx, key: str) -> str | None:
    styles = ctx.studio.styles.all()
    labels = {s.name: s.label for s in styles}
    choice = st.selectbox("Style", ["none", *labels], key=key, persist_state=PERSIST,
                          format_func=lambda n: labels.get(n, "No style"))
    return None if choice == "none" else choice


def show_estimate(ctx, request: GenerationRequest, *, count: int = 1) -> float | None:
    """The estimated cost, shown before the click. ``count`` multiplies it (e.g. scene variations)."""
    try:
        preview = cost_preview(ctx.studio, request, count=count)  # input (prompt, images) included
    except StudioError as error:
        show_warning(error.message)
        return None
    st.caption(preview.text())  # the same line as Gradio's, from the core
    return preview.estimate


# -- images and their actions --------------------------------------------------------------------


def file_name(record: ImageRecord) -> str:
    return f"{record.id}.{EXTENSIONS.get(record.format, record.format)}"


def image_bytes_or_none(ctx, record: ImageRecord, *, thumbnail: bool = False) -> bytes | None:
    try:
        if thumbnail:
            return ctx.studio.storage.read_thumbnail(record)
        return ctx.studio.image_bytes(record)
    except OSError:  # the file vanished under us; History's repair tool explains it
        return None


def describe(record: ImageRecord) -> str:
    """The record's facts as Markdown (for captions); the model id may be free text, so it is literal."""
    parts = [markdown_literal(f"{record.provider}/{record.model}"), f"{record.width}×{record.height}"]
    if record.seed is not None:
        parts.append(f"seed {record.seed}")
    parts.append(f"${record.cost:.4f}")
    parts.append(f"{record.generation_time:.1f}s")
    return " · ".join(parts)


def image_card(ctx, record: ImageRecord, key: str, *, thumbnail: bool = False, actions: bool = True) -> None:
    """The image with its facts, a download button, Save and Add to mood board."""
    data = image_bytes_or_none(ctx, record, thumbnail=thumbnail)
    if data is None:
        st.warning(f"image file missing for {record.id}")
    else:
        st.image(data, width="stretch")
    st.caption(describe(record))
    if not actions:
        return
    with st.container(horizontal=True, wrap=True, gap="small"):  # buttons wrap instead of truncating
        st.download_button("Download", data=lambda r=record: ctx.studio.image_bytes(r), file_name=file_name(record),
                           mime=MIME_TYPES.get(record.format, "application/octet-stream"), key=f"{key}_dl",
                           on_click="ignore", icon=":material/download:")
        saved = SAVED_TAG in record.tags
        if st.button("Saved" if saved else "Save", key=f"{key}_save",
                     disabled=saved or not may_change(record, ctx.user), icon=":material/star:",
                     help="Keep it: tags the image 'saved' in History"):
            save_image(ctx, record)
        with st.popover("Add to mood board", icon=":material/dashboard:"):
            board_adder(ctx, [record.id], key=f"{key}_board")


def save_image(ctx, record: ImageRecord) -> None:
    try:
        updated = ctx.studio.update_image(record.id, ctx.user, tags=[*record.tags, SAVED_TAG])
    except StudioError as error:
        show_error(error)
        return
    record.tags = updated.tags
    st.toast("Saved — find it in History under the tag 'saved'")


def image_grid(ctx, records: list[ImageRecord], key: str, *, columns: int = 3, thumbnail: bool = False,
               actions: bool = True) -> None:
    for start in range(0, len(records), columns):
        row = st.columns(columns)
        for column, record in zip(row, records[start:start + columns]):
            with column:
                image_card(ctx, record, f"{key}_{record.id}", thumbnail=thumbnail, actions=actions)


# -- mood boards ---------------------------------------------------------------------------------

NEW_BOARD = "+ New board"


def board_adder(ctx, image_ids: list[str], key: str, *, label: str = "Add to board") -> bool:
    """Pick (or name) a board and add ``image_ids`` to it. Returns True when something was added."""
    boards = ctx.boards()
    existing = boards.list(ctx.user)
    names = {b.id: b.name for b in existing}
    options = [*names, NEW_BOARD]
    remembered = st.session_state.get("_last_board")
    index = options.index(remembered) if remembered in options else 0
    choice = st.selectbox("Mood board", options, index=index, key=f"{key}_pick",
                          format_func=lambda i: names.get(i, i))
    new_name = ""
    if choice == NEW_BOARD:
        new_name = st.text_input("New board name", key=f"{key}_name", placeholder="e.g. Forest mood")
    if st.button(label, key=f"{key}_add", disabled=not image_ids, type="primary"):
        try:
            board = boards.get_or_create(ctx.user, new_name) if choice == NEW_BOARD else boards.get(ctx.user, choice)
            added = boards.add(ctx.user, board.id, image_ids)
        except StudioError as error:
            show_error(error)
            return False
        st.session_state["_last_board"] = board.id
        name = markdown_literal(board.name)
        st.toast(f"Added {added} image(s) to “{name}”" if added else f"Already on “{name}”")
        return True
    return False


# -- choosing an input image ---------------------------------------------------------------------


def record_label(record: ImageRecord) -> str:
    prompt = record.user_prompt or record.prompt
    return f"{prompt[:50]}{'…' if len(prompt) > 50 else ''} · {record.id}"


def image_source(ctx, prefix: str) -> tuple[Any, bytes | None, ImageRecord | None]:
    """Upload an image or pick one from the gallery or history.

    Returns (what to hand the studio: an image id or bytes, bytes to preview, the record if stored)."""
    sources = ["Session gallery", "History", "Upload"]
    default = st.session_state.pop(f"{prefix}_prefill_source", None)
    if default:
        st.session_state[f"{prefix}_source_kind"] = "History"
        st.session_state[f"{prefix}_history_id"] = default
    kind = st.radio("Image from", sources, horizontal=True, key=f"{prefix}_source_kind")
    if kind == "Upload":
        upload = st.file_uploader("Image", type=["png", "jpg", "jpeg", "webp"], key=f"{prefix}_upload")
        if upload is None:
            return None, None, None
        data = upload.getvalue()
        try:  # checked before anything (preview, mask canvas) decodes it: bombs and junk stop here
            load_image(data, "uploaded image")
        except StudioError as error:
            show_error(error)
            return None, None, None
        return data, data, None
    if kind == "Session gallery":
        records = ctx.gallery.records(ctx.studio, ctx.user)
        if not records:
            st.info("The session gallery is empty: generate something, or pick from History or upload.")
            return None, None, None
        by_id = {r.id: r for r in records}
        chosen = st.selectbox("Gallery image", list(by_id), key=f"{prefix}_gallery_id",
                              format_func=lambda i: record_label(by_id[i]))
        record = by_id[chosen]
    else:
        page = ctx.app.history(ctx.user, limit=100)  # the user's images and shared ones (one rule)
        typed = st.text_input("Image id (or pick a recent one below)", key=f"{prefix}_history_id").strip()
        record = None
        if typed:
            try:
                record = ctx.studio.get_image(typed, ctx.user)
            except StudioError as error:
                show_error(error)
                return None, None, None
        elif page.items:
            by_id = {r.id: r for r in page.items}
            chosen = st.selectbox("Recent images", list(by_id), key=f"{prefix}_recent_id",
                                  format_func=lambda i: record_label(by_id[i]))
            record = by_id[chosen]
        else:
            st.info("No images in your history yet.")
            return None, None, None
    data = image_bytes_or_none(ctx, record)
    if data is None:
        st.warning("That image's file is missing.")
        return None, None, None
    return record.id, data, record


# -- task results and prefilled forms ------------------------------------------------------------


def show_outcome(ctx, task, key: str, *, columns: int = 3) -> None:
    """A task's progress while it runs; then its images (with actions) or its error."""
    from ui import tasks

    if task.running:
        tasks.show_progress(task)
        return
    if task.error is not None:
        show_error(task.error)
        return
    result = task.result
    images = tasks.result_images(result)
    cost = getattr(result, "cost", 0.0) or 0.0
    summary = f"{len(images)} image(s) · ${cost:.4f} · {task.elapsed:.1f}s"
    if getattr(result, "cached", False):
        summary += " · the same request was made before: these are the stored images, nothing was paid"
    st.success(summary)
    for warning in getattr(result, "warnings", []) or []:
        show_warning(warning)  # warnings name model ids and options as typed
    image_grid(ctx, images, key, columns=columns)


def apply_prefill(ctx, prefix: str, request: GenerationRequest) -> None:
    """Put ``request``'s values into this page's widgets before they are drawn (History's
    "Open in Generate"). Values a widget could not show are left at the model's defaults."""
    state = st.session_state
    state[f"{prefix}_prompt"] = request.prompt
    provider_name = request.provider or ctx.studio.settings.default_provider
    try:
        model = ctx.studio.provider(provider_name).model(request.model)
    except (StudioError, LookupError):
        return
    state[f"{prefix}_provider"] = provider_name
    state[f"{prefix}_model_{provider_name}"] = model.id
    state[f"{prefix}_style"] = request.style or "none"
    state[f"{prefix}_category"] = request.category or ""
    state[f"{prefix}_tags"] = ", ".join(request.tags)
    key = lambda name: control_key(prefix, name, model)  # noqa: E731
    if model.negative_prompt:
        state[key("negative")] = request.negative_prompt or ""
    if model.seed and request.seed is not None and 0 <= int(request.seed) <= MAX_SEED:
        state[key("seed")] = int(request.seed)
    if model.steps is not None and request.steps is not None and model.steps.contains(request.steps):
        state[key("steps")] = int(request.steps)
    if model.guidance is not None and request.guidance is not None and model.guidance.contains(request.guidance):
        state[key("guidance")] = float(request.guidance)
    if request.quality in model.qualities:
        state[key("quality")] = request.quality
    if request.output_format in model.output_formats:
        state[key("format")] = request.output_format
    if 1 <= request.n <= min(model.max_images, 10) and model.max_images > 1:
        state[key("n")] = request.n
    if request.width and request.height:
        size = f"{request.width}x{request.height}"
        if model.sizes and size in model.sizes:
            state[key("size")] = size
        elif model.aspect_ratios:  # the ratio the record's size was made as
            state[key("ratio")] = nearest_aspect_ratio(int(request.width), int(request.height), model.aspect_ratios)
        elif not model.sizes and not model.aspect_ratios:
            limits = model.size_range or DEFAULT_SIZE_RANGE
            if all(limits["min"] <= side <= limits["max"] for side in (request.width, request.height)):
                state[key("w")], state[key("h")] = int(request.width), int(request.height)
    for name, spec in option_specs(model).items():
        if spec.kind == "images" or name not in (request.extra or {}):
            continue
        try:  # the value as its widget holds it (an older record may hold text such as "false")
            state[key(f"opt_{name}")] = coerce_options(model, {name: request.extra[name]})[name]
        except StudioError:
            continue  # a value this model no longer takes: the widget keeps the model's default

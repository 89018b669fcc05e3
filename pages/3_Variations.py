"""Variations: several takes on an image or a prompt — new seeds, a strength, or scene framings —
side by side to compare and keep."""

from __future__ import annotations

import streamlit as st

from studio.errors import InvalidRequest, StudioError
from studio.types import Mode
from ui import tasks
from ui.setup import setup
from ui.widgets import (PERSIST, bounded_slider, check_can_run, image_source, model_controls, provider_picker,
                        show_error, show_estimate, show_outcome, style_picker)

PAGE = "variations"
ctx = setup("Variations", "🎲")
st.title("🎲 Variations")

origin = st.radio("Start from", ["An image", "A prompt"], key="var_origin", horizontal=True, persist_state=PERSIST)
from_image = origin == "An image"
source = data = record = None
left, right = st.columns([1, 1])
with left:
    if from_image:
        source, data, record = image_source(ctx, "var")
        if data is not None:
            st.image(data, caption="Source" + (f" · {record.id}" if record else ""), width="stretch")
with right:
    hint = "leave empty to reuse the source image's prompt" if from_image else "what to make variations of"
    prompt = st.text_area("Prompt", key="var_prompt", height=90, persist_state=PERSIST, placeholder=hint)
    mode = Mode.IMAGE_TO_IMAGE if from_image else Mode.TEXT_TO_IMAGE
    provider, model = provider_picker(ctx, "var", modes=(mode.value,))
    style = style_picker(ctx, "var_style")
    scene = st.checkbox("Vary the framing and light (wide shot, close-up, low angle, golden hour…)",
                        key="var_scene", persist_state=PERSIST)
    how_many = ctx.app.variation_count(provider, model.id, scene=scene)
    count = int(bounded_slider("How many", how_many, f"var_n_{scene}_{how_many.max:g}"))
controls = model_controls(model, "var", mode="variation" if from_image else "text-to-image", size=not from_image,
                          count=False)
controls.pop("seed", None)  # every variation gets its own new seed

effective_prompt = prompt.strip() or (record.user_prompt or record.prompt if record else "")
strength = controls.pop("strength", None)
task = tasks.current(ctx, PAGE)
busy = task is not None and task.running
values = {"provider": provider, "model": model.id, "style": style, "strength": strength, **controls}
estimate_request = ctx.app.form_request(ctx.user, {"prompt": effective_prompt or "x", "n": 1 if scene else count,
                                                   **values}, mode=Mode.VARIATION, init_image=data)
if effective_prompt and (data is not None or not from_image):
    show_estimate(ctx, estimate_request, count=count if scene else 1)

if st.button(f"Make {count} variations", type="primary", disabled=busy, icon=":material/casino:"):
    try:
        if from_image and source is None:
            raise InvalidRequest("choose a source image first (gallery, history or upload)")
        if not effective_prompt:
            raise InvalidRequest("write a prompt (an uploaded image carries none)")
        check_can_run(ctx, provider, estimate_request)
        app = ctx.app
        picked = ({"image_id": record.id} if record is not None else {"image": data}) if from_image else {}
        label = f"{count} variations: {effective_prompt[:40]}"
        task = tasks.start(ctx, PAGE, label, lambda progress, cancel: app.variations_from_form(
            ctx.user, {"prompt": effective_prompt, **values}, n=count, scene=scene, progress=progress,
            cancel=cancel, **picked))
    except StudioError as error:
        show_error(error)

if task is not None:
    st.divider()
    st.caption("Side by side: **Save** the ones to keep (they are tagged 'saved' in History), or push them to a "
               "mood board.")
    show_outcome(ctx, task, "var_result", columns=min(4, max(1, len(tasks.result_images(task.result)))))

"""Edit: image-to-image with a strength, or inpainting with a mask drawn here or uploaded.

The result is linked to its parent when the source is a stored image (gallery or history)."""

from __future__ import annotations

import streamlit as st

from studio.errors import InvalidRequest, StudioError
from studio.types import Mode
from ui import tasks
from ui.masks import mask_editor
from ui.setup import setup
from ui.widgets import (PERSIST, check_can_run, image_source, model_controls, provider_picker, show_error,
                        show_estimate, show_outcome, style_picker)

PAGE = "edit"
ctx = setup("Edit", "🖌️")
st.title("🖌️ Edit / image-to-image")

source_column, settings_column = st.columns([1, 1])
with source_column:
    source, data, record = image_source(ctx, "edit")
    kind = st.radio("Edit", ["Image-to-image", "Inpaint with a mask"], key="edit_kind", horizontal=True,
                    persist_state=PERSIST)
    mode = Mode.INPAINT if kind.startswith("Inpaint") else Mode.IMAGE_TO_IMAGE
    mask = None
    if data is not None:
        if mode is Mode.INPAINT:
            mask = mask_editor(data, "edit")
        else:
            st.image(data, caption="Input" + (f" · {record.id}" if record else ""), width="stretch")

with settings_column:
    prompt = st.text_area("What should change", key="edit_prompt", height=90, persist_state=PERSIST,
                          placeholder="make it winter, snow on the roofs")
    provider, model = provider_picker(ctx, "edit", modes=(mode.value,))
    style = style_picker(ctx, "edit_style")
controls = model_controls(model, "edit", mode=mode.value, size=False)

values = {"prompt": prompt, "provider": provider, "model": model.id, "style": style, **controls}
request = ctx.app.form_request(ctx.user, values, mode=mode, init_image=data, mask=mask)
task = tasks.current(ctx, PAGE)
busy = task is not None and task.running

if data is not None and prompt.strip() and (mode is Mode.IMAGE_TO_IMAGE or mask is not None):
    show_estimate(ctx, request)
if st.button("Apply edit", type="primary", disabled=busy, icon=":material/brush:"):
    try:
        if data is None:
            raise InvalidRequest("choose an input image first (gallery, history or upload)")
        if mode is Mode.INPAINT and mask is None:
            raise InvalidRequest("paint the area to change on the image (or upload a mask) first")
        check_can_run(ctx, provider, request)
        app = ctx.app
        picked = {"image_id": record.id} if record is not None else {"image": data}  # a stored one becomes the parent
        label = f"{mode.value}: {prompt.strip()[:40]}"
        task = tasks.start(ctx, PAGE, label, lambda progress, cancel: app.edit_from_form(
            ctx.user, values, mask=mask, progress=progress, cancel=cancel, **picked))
    except StudioError as error:
        show_error(error)

if task is not None:
    st.divider()
    show_outcome(ctx, task, "edit_result")
    images = tasks.result_images(task.result)
    if images and images[0].parent_id:
        st.caption(f"Linked to parent image {images[0].parent_id}")

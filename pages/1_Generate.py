"""Generate: text to image with any provider, only the controls the chosen model supports."""

from __future__ import annotations

import streamlit as st

from studio.errors import NotConfigured, StudioError
from studio.types import GenerationRequest
from ui import tasks
from ui.setup import setup
from ui.widgets import (PERSIST, apply_prefill, model_controls, provider_picker, provider_statuses, show_error,
                        show_estimate, show_outcome, style_picker)

PAGE = "generate"
ctx = setup("Generate", "✨")
st.title("✨ Generate")

prefill = st.session_state.pop("gen_prefill", None)
if isinstance(prefill, GenerationRequest):
    apply_prefill(ctx, "gen", prefill)

prompt = st.text_area("Prompt", key="gen_prompt", height=110, persist_state=PERSIST,
                      placeholder="a lighthouse on a cliff at dusk, waves crashing")
settings, more = st.columns([1, 1])
with settings:
    provider, model = provider_picker(ctx, "gen")
with more:
    style = style_picker(ctx, "gen_style")
    with st.expander("Organise (category and tags)"):
        category = st.text_input("Category", key="gen_category", persist_state=PERSIST)
        tags = st.text_input("Tags (comma-separated)", key="gen_tags", persist_state=PERSIST)
controls = model_controls(model, "gen")

request = GenerationRequest(prompt=prompt, provider=provider, model=model.id, style=style, user=ctx.user,
                            category=category, tags=[t for t in tags.split(",") if t.strip()], **controls)
task = tasks.current(ctx, PAGE)
busy = task is not None and task.running

if prompt.strip():
    show_estimate(ctx, request)
clicked = st.button("Generate", type="primary", disabled=busy, icon=":material/auto_awesome:")
if clicked:
    status = provider_statuses(ctx)[provider]
    try:
        if not status.ready:
            raise NotConfigured(status.reason, provider=provider)
        ctx.studio.prepare(request)  # a bad request is reported now, not from the background
        studio = ctx.studio
        label = f"{model.label or model.id}: {prompt.strip()[:40]}"
        task = tasks.start(ctx, PAGE, label,
                           lambda progress, cancel: studio.generate(request, progress=progress, cancel=cancel))
    except StudioError as error:
        show_error(error)

if task is not None:
    st.divider()
    show_outcome(ctx, task, "gen_result")

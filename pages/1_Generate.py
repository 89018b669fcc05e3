"""Generate: text to image with any provider, only the controls the chosen model supports."""

from __future__ import annotations

import streamlit as st

from studio.errors import StudioError
from studio.types import GenerationRequest
from ui import tasks
from ui.setup import setup
from ui.widgets import (PERSIST, apply_prefill, check_can_run, model_controls, provider_picker, show_error,
                        show_estimate, show_outcome, style_picker)

PAGE = "generate"
ctx = setup("Generate", "✨")
st.title("✨ Generate")

prefill = st.session_state.pop("gen_prefill", None)
if isinstance(prefill, GenerationRequest):
    apply_prefill(ctx, "gen", prefill)

with st.expander("Start from a prompt template"):
    styles = ctx.studio.styles
    template_category = st.selectbox("Category", styles.categories(), key="gen_tpl_category")
    template = st.selectbox("Template", styles.templates(template_category), key="gen_tpl",
                            format_func=lambda t: f"{t.label} — {t.prompt}")
    subject = st.text_input("Subject", key="gen_tpl_subject", placeholder="a copper teapot")
    if st.button("Use this template", disabled=not subject.strip() or template is None):
        params = template.params
        st.session_state["gen_prefill"] = GenerationRequest(
            prompt=template.fill(subject), provider=st.session_state.get("gen_provider"), style=template.style,
            negative_prompt=template.negative_prompt, steps=params.get("steps"), guidance=params.get("guidance"),
            category=template_category, user=ctx.user)
        st.rerun()

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
with st.expander("Post-process"):
    upscale = st.select_slider("Upscale", options=[1.0, 1.5, 2.0, 3.0, 4.0], value=1.0, key="gen_upscale",
                               format_func=lambda f: "off" if f == 1.0 else f"{f:g}×")
    enhance = st.checkbox("Enhance (auto-contrast and a mild sharpen)", key="gen_enhance")
postprocessing = {**({"upscale": upscale} if upscale > 1.0 else {}), **({"enhance": True} if enhance else {})}

values = {"prompt": prompt, "provider": provider, "model": model.id, "style": style, "category": category,
          "tags": tags, "postprocess": postprocessing, **controls}
try:
    request = ctx.app.form_request(ctx.user, values)  # the one coercion every front end uses
except StudioError as error:
    request = None
    show_error(error)
task = tasks.current(ctx, PAGE)
busy = task is not None and task.running

if prompt.strip() and request is not None:
    show_estimate(ctx, request)
clicked = st.button("Generate", type="primary", disabled=busy or request is None, icon=":material/auto_awesome:")
if clicked:
    try:
        check_can_run(ctx, provider, request)
        studio = ctx.studio
        label = f"{model.label or model.id}: {prompt.strip()[:40]}"
        task = tasks.start(ctx, PAGE, label,
                           lambda progress, cancel: studio.generate(request, progress=progress, cancel=cancel))
    except StudioError as error:
        show_error(error)

if task is not None:
    st.divider()
    show_outcome(ctx, task, "gen_result")

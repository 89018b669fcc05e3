"""Batch from script: paste or upload a script (lines, CSV, JSON, SRT, WebVTT), check the preview and
its cost, run it as a durable job, watch each scene finish, then download the zip or push the
images to a mood board.

The job runs in the studio's worker threads, not in this page: a refresh (or another browser)
finds it again through ``?job=`` in the URL, and a studio restart resumes it."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from studio.errors import NotFound, StudioError
from studio.jobs import ItemStatus, JobStatus
from studio.jobs.export import item_records
from studio.scripts import FORMATS, MAX_SCENES
from studio.usertext import markdown_literal
from studio.webhooks import JOB_SECRET_NOTICE, job_secret
from ui.setup import setup
from ui.widgets import PERSIST, board_adder, bounded_slider, image_bytes_or_none, model_controls, provider_picker, \
    show_error, show_warning, style_picker

JOB_PARAM = "job"
JOB_STATE = "batch_job"
RANDOM_SEED_STATE = "batch_random_seed"  # + "_<provider>": this session's random base seed
WEBHOOK_SECRET_STATE = "batch_webhook_secret"  # (job id, the job's own webhook secret) for this session
POLL_SECONDS = 1.0
GRID_PAGE = 24
STATUS_ICONS = {"PENDING": "⏳", "INITIALIZING": "⚙️", "GENERATING": "🎨", "SAVING": "💾", "COMPLETED": "✅",
                "FAILED": "❌", "CANCELLED": "⛔"}

ctx = setup("Batch", "🎬")
st.title("🎬 Batch from script")


jobs = ctx.app.jobs  # the studio's one job manager


# -- which job this page shows (kept in the URL, so a refresh re-attaches) -------------------------


def current_job_id() -> str | None:
    for candidate in (st.query_params.get(JOB_PARAM), st.session_state.get(JOB_STATE)):
        if candidate:
            try:
                jobs.get(candidate, ctx.user, items=False)  # someone else's id shows nothing
            except NotFound:
                continue
            return candidate
    return None


def show_job(job_id: str | None) -> None:
    if job_id:
        st.session_state[JOB_STATE] = job_id
        st.query_params[JOB_PARAM] = job_id
    else:
        st.session_state.pop(JOB_STATE, None)
        st.query_params.pop(JOB_PARAM, None)


# -- the script and the settings -------------------------------------------------------------------

job_id = current_job_id()
job_area = st.container()  # the job being watched goes on top, drawn at the end of this script
new_batch = st.expander("New batch", expanded=job_id is None, icon=":material/add:")

with new_batch:
    paste, upload = st.columns([3, 2])
    with paste:
        pasted = st.text_area(
            "Script", key="batch_script", height=180, persist_state=PERSIST,
            placeholder="00:00:05 A lighthouse at dusk --seed 5\n00:00:12 Waves crash on the rocks --style cinematic\n"
                        "…or paragraphs, CSV/JSON with timestamp and text, SRT or WebVTT subtitles")
    with upload:
        uploaded = st.file_uploader("…or upload a script file", type=["txt", "md", "csv", "tsv", "json", "srt", "vtt"],
                                    key="batch_upload")
        script_format = st.selectbox("Format", ["auto", "lines", "paragraphs", *[f for f in FORMATS if f != "text"]],
                                     key="batch_format", persist_state=PERSIST,
                                     help="auto: from the file name, then the content")
        st.caption(f"One image per scene, up to {MAX_SCENES:,} scenes. Per-line options: `--seed N`, `--style S`, "
                   "`--negative \"…\"`, `--steps N`, `--guidance X`, `--n N`, `--size WxH`, `--quality Q`, "
                   "and the model's own `--option NAME=VALUE`.")
    source, name = (uploaded.getvalue(), uploaded.name) if uploaded is not None else (pasted, "")

    left, right = st.columns(2)
    with left:
        provider, model = provider_picker(ctx, "batch")
        style = style_picker(ctx, "batch_style")
    with right:
        seed_policy = st.radio("Seeds", ["per-scene", "fixed"], key="batch_seed_policy", horizontal=True,
                               persist_state=PERSIST,
                               help="per-scene: seed, seed+1, … (each scene its own); fixed: the same seed for "
                                    "every scene (a consistent look). The seed box below sets the first one.")
        scenes_at_once = ctx.app.batch_concurrency(provider)  # Settings.concurrency_limit, as the runner's
        concurrency = int(bounded_slider("Scenes at once", scenes_at_once, f"batch_concurrency_{provider}",
                                         help=f"{provider} allows up to {scenes_at_once.max:g} request(s) at once"))
        webhook = st.text_input("Webhook URL (optional)", key="batch_webhook", persist_state=PERSIST,
                                placeholder="https://example.com/hooks/studio",
                                help="POSTs progress and results, signed (X-Studio-Signature over timestamp and "
                                     "body) with STUDIO_WEBHOOK_SECRET or a secret made for the job and shown once")
    controls = model_controls(model, "batch")
    base_seed = controls.pop("seed", None)
    if base_seed is None and model.seed:
        # One random base per session and provider (its own seed range), so the preview does not change
        # under the user's eyes; drawn by the application layer's one rule.
        seed_key = f"{RANDOM_SEED_STATE}_{provider}"
        if seed_key not in st.session_state:
            st.session_state[seed_key] = ctx.app.base_seed(provider)
        base_seed = st.session_state[seed_key]

    preview = None
    if (isinstance(source, str) and source.strip()) or (isinstance(source, bytes) and source):
        options = dict(name=name, format=None if script_format == "auto" else script_format, provider=provider,
                       model=model.id, style=style, seed_policy=seed_policy, seed=base_seed, concurrency=concurrency,
                       webhook=webhook.strip() or None, public_webhooks=ctx.login != "local", **controls)
        # A long script takes a moment to prepare: prepare it again only when something changed.
        fingerprint = hashlib.sha256(repr((source, sorted(options.items(), key=str))).encode()).hexdigest()
        cached = st.session_state.get("_batch_preview")
        try:
            if cached and cached[0] == fingerprint:
                preview = cached[1]
            else:
                preview = ctx.app.preview_batch(ctx.user, source, **options)
                st.session_state["_batch_preview"] = (fingerprint, preview)
        except StudioError as error:
            show_error(error)
    else:
        st.info("Paste a script or upload a file to see its scenes, prompts and cost.")

    if preview is not None:
        metrics = st.columns(4)
        metrics[0].metric("Scenes", len(preview.items))
        metrics[1].metric("Estimated cost", f"${preview.estimated_total:.4f}")
        metrics[2].metric("Model", markdown_literal(f"{preview.job.provider}/{preview.job.model}"))  # id as typed
        if preview.daily_budget is None:
            metrics[3].metric("Daily budget", "none")
        else:
            metrics[3].metric("Budget left today", f"${preview.budget_remaining:.2f}",
                              delta=None if preview.within_budget else "not enough", delta_color="inverse")
        for error in preview.errors[:10]:  # errors and warnings quote the script's lines
            st.error(markdown_literal(error))
        for warning in preview.warnings:
            show_warning(warning)
        if not preview.provider_ready:
            st.warning(f"{preview.job.provider} is not ready: {markdown_literal(preview.provider_reason)}")
        st.dataframe(pd.DataFrame(preview.rows()), hide_index=True, width="stretch",
                     column_config={"estimated_cost": st.column_config.NumberColumn("cost", format="$%.4f")})
        blocked = bool(preview.errors) or not preview.provider_ready or not preview.within_budget
        if st.button(f"Run {len(preview.items)} scene(s)", type="primary", disabled=blocked,
                     icon=":material/movie:"):
            try:
                started = jobs.submit(preview)
            except StudioError as error:
                show_error(error)
            else:
                if job_secret(started):  # shown in this session only; no record of the job keeps it
                    st.session_state[WEBHOOK_SECRET_STATE] = (started.id, job_secret(started))
                show_job(started.id)
                for seed_key in [k for k in st.session_state if str(k).startswith(RANDOM_SEED_STATE)]:
                    del st.session_state[seed_key]  # the next batch gets new seeds
                st.session_state.pop("_batch_preview", None)  # and a new preview (a new job id)
                st.rerun()


# -- a job: live progress grid, controls, results -------------------------------------------------


def act(action, *args) -> None:
    try:
        action(*args)
    except StudioError as error:
        st.session_state["_batch_error"] = error
    st.rerun()


def scene_grid(job, page: int) -> None:
    items = (job.items or [])[page * GRID_PAGE:(page + 1) * GRID_PAGE]
    records = item_records(ctx.studio, [i for i in items if i.status is ItemStatus.COMPLETED])
    columns = st.columns(4)
    for position, item in enumerate(items):
        with columns[position % 4].container(border=True):
            icon = STATUS_ICONS.get(item.status.value, "")
            header = (f"**#{item.index + 1}** {markdown_literal(item.timestamp or '')} · {icon} "
                      f"{item.status.value.lower()}")
            st.markdown(header)
            record = next((records[i] for i in item.image_ids if i in records), None)
            thumb = image_bytes_or_none(ctx, record, thumbnail=True) if record is not None else None
            if thumb:
                st.image(thumb, width="stretch")
            elif item.status.active:
                st.progress(min(1.0, item.progress / 100), text=f"{item.progress:.0f}%")
            st.caption(markdown_literal(item.text[:120]))
            if item.error and item.status is not ItemStatus.COMPLETED:
                st.caption(f":red[{markdown_literal(item.error[:200])}]")


def job_view(job_id: str, watching: bool) -> None:
    job = jobs.get(job_id, ctx.user)
    running = job.status in (JobStatus.RUNNING, JobStatus.PENDING) and not job.interrupted
    if watching and not running:
        st.rerun()  # finished: redraw the whole page once, without the timer
    counts = " · ".join(f"{STATUS_ICONS.get(s, '')} {n} {s.lower()}" for s, n in sorted(job.counts.items()))
    st.progress(min(1.0, job.progress / 100),
                text=f"**{job.status.value.lower()}** — {job.done}/{job.total} scene(s) · ${job.cost:.4f} "
                     f"(estimated ${job.estimated_cost:.4f}) · {counts}")
    if job.interrupted:
        st.warning("This job's process stopped before it finished. Resume it to finish the remaining scenes; "
                   "scenes already saved are not generated or paid again.")
    if job.error:
        st.warning(markdown_literal(job.error))
    shown_secret = st.session_state.get(WEBHOOK_SECRET_STATE)
    if shown_secret and shown_secret[0] == job.id:
        st.info(JOB_SECRET_NOTICE, icon=":material/key:")
        st.code(shown_secret[1], language=None)
    if job.callers_webhook and job.webhook_error:
        st.caption(f"Webhook: {markdown_literal(job.webhook_error)}")
    buttons = st.columns(5)
    if running:
        if buttons[0].button("Pause", key="batch_pause", icon=":material/pause:"):
            act(jobs.pause, job.id, ctx.user)
        if buttons[1].button("Cancel", key="batch_cancel", icon=":material/cancel:"):
            act(jobs.cancel, job.id, ctx.user)
    else:
        if (job.status is JobStatus.PAUSED or job.interrupted) and buttons[0].button(
                "Resume", key="batch_resume", type="primary", icon=":material/play_arrow:"):
            act(jobs.resume, job.id, ctx.user)
        if job.counts.get("FAILED") and buttons[1].button(
                f"Retry {job.counts['FAILED']} failed", key="batch_retry", icon=":material/replay:"):
            act(jobs.retry, job.id, ctx.user)
        if job.status is JobStatus.PAUSED and buttons[2].button("Cancel", key="batch_cancel_paused"):
            act(jobs.cancel, job.id, ctx.user)
    pages = max(1, -(-job.total // GRID_PAGE))
    page = 0
    if pages > 1:
        page = st.number_input("Page", 1, pages, 1, key="batch_grid_page") - 1
    scene_grid(job, page)


with st.expander("Your batch jobs", icon=":material/list:"):
    recent = jobs.list(ctx.user, limit=20)
    if not recent:
        st.caption("No batch jobs yet.")
    for old in recent:
        label = (f"{old.created_at[:16].replace('T', ' ')} · {markdown_literal(old.script_name or 'pasted script')} · "
                 f"{old.status.value.lower()}{' (interrupted)' if old.interrupted else ''} · "
                 f"{old.done}/{old.total} · ${old.cost:.4f}")
        if st.button(label, key=f"batch_open_{old.id}", type="tertiary"):
            show_job(old.id)
            st.rerun()

with job_area:
    error = st.session_state.pop("_batch_error", None)
    if error is not None:
        show_error(error)
    if job_id is not None:
        job = jobs.get(job_id, ctx.user, items=False)
        top = st.columns([3, 1])
        top[0].subheader(f"Job {job.id} · {markdown_literal(f'{job.provider}/{job.model}')}")
        if top[1].button("Close", key="batch_close", icon=":material/close:"):
            show_job(None)
            st.rerun()
        watching = job.status in (JobStatus.RUNNING, JobStatus.PENDING) and not job.interrupted
        st.fragment(run_every=POLL_SECONDS if watching else None)(job_view)(job.id, watching)

        done = jobs.get(job.id, ctx.user)
        image_ids = [image_id for item in done.items or [] for image_id in item.image_ids]
        if image_ids:
            downloads = st.columns(2)
            downloads[0].download_button(
                "Download zip (images, manifest, script.json)", key="batch_zip", icon=":material/download:",
                data=lambda: jobs.export_zip(job.id, ctx.user), file_name=f"batch-{job.id}.zip",
                mime="application/zip")
            downloads[1].download_button(
                "Download the script with its images (JSON)", key="batch_script_json",
                data=lambda: json.dumps(jobs.enriched_script(job.id, ctx.user), indent=2, ensure_ascii=False),
                file_name=f"batch-{job.id}-script.json", mime="application/json")
            with st.expander(f"Push {len(image_ids)} image(s) to a mood board"):
                board_adder(ctx, list(dict.fromkeys(image_ids)), key="batch_board", label="Push to board")

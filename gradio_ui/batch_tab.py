"""Batch from script: a pasted or uploaded script (lines, CSV, JSON, SRT, WebVTT) becomes one image
per scene, each keeping its timestamp.

Preview shows every scene's prompt, seed and cost before anything is paid; Run starts a durable job
(``studio.jobs``) and shows its images as scenes finish, not only at the end. The job runs in the
studio's worker threads, so closing the page does not stop it: reopen it from "Your jobs".
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from gradio_ui.context import AppContext
from gradio_ui.controls import ModelControls
from gradio_ui.create_tabs import organise_fields, style_picker
from gradio_ui.endpoints import upload_bytes, visitor_errors
from gradio_ui.layout import action_buttons
from gradio_ui.session_gallery import caption
from studio.errors import InvalidRequest
from studio.usertext import markdown_literal

PRIVATE = {"api_visibility": "private"}
FORMAT_CHOICES = [("Detect", ""), ("Text: one scene per line", "lines"), ("Text: one per paragraph", "paragraphs"),
                  ("CSV", "csv"), ("JSON", "json"), ("SRT subtitles", "srt"), ("WebVTT subtitles", "vtt")]
PREVIEW_COLUMNS = ["scene", "timestamp", "text", "prompt", "seed", "estimated_cost"]
STATUS_COLUMNS = ["scene", "timestamp", "text", "status", "images", "error"]


def job_rows(job) -> list[list]:
    return [[item.index + 1, item.timestamp or "", item.text, item.status.value.lower(), len(item.image_ids),
             item.error or ""] for item in job.items or []]


def job_summary(job) -> str:
    counts = ", ".join(f"{count} {status.lower()}" for status, count in sorted(job.counts.items()) if count)
    text = (f"Job `{job.id}` · **{job.status.value.lower()}** · {job.done}/{job.total} scene(s) · "
            f"cost ${job.cost:.4f} (estimated ${job.estimated_cost:.4f})")
    if counts:
        text += f" · {counts}"
    if job.interrupted:
        text += "  \n⚠️ Its runner stopped (a restart?): press Resume to continue."
    if job.error:
        text += f"  \n⚠️ {markdown_literal(job.error)}"
    return text


def build_batch_tab(ctx: AppContext) -> None:
    with gr.Tab("Batch from script", id="batch"):
        with gr.Row():
            with gr.Column(scale=5):
                script = gr.Textbox(label="Script", lines=8,
                                    placeholder="00:00 A lighthouse on a cliff at dawn\n00:05 Waves crash on the "
                                                "rocks --seed 7\n00:12 A ship's lantern in the fog")
                with gr.Row():
                    upload = gr.File(label="…or upload a script (.txt .csv .json .srt .vtt)", type="filepath",
                                     file_types=[".txt", ".csv", ".json", ".srt", ".vtt"], scale=3)
                    script_format = gr.Dropdown(FORMAT_CHOICES, value="", label="Format", scale=2)
                style = style_picker(ctx)
                controls = ModelControls.build(ctx.studio, "text-to-image")
                seed_policy = gr.Radio([("seed, seed+1, … per scene", "per-scene"), ("one seed for all", "fixed")],
                                       value="per-scene", label="Seeds")
                category, tags = organise_fields()
                with gr.Row():
                    preview_button = gr.Button("Preview", scale=1)
                    run_button = gr.Button("Run batch", variant="primary", scale=2)
                summary = gr.Markdown()
                table = gr.Dataframe(headers=PREVIEW_COLUMNS, interactive=False, wrap=True, max_height=320)
            with gr.Column(scale=6):
                with gr.Row():
                    jobs = gr.Dropdown([], label="Your jobs", scale=3)
                    watch = gr.Button("Show", size="sm", scale=1)
                pause, resume, cancel, retry, zip_button = action_buttons(
                    "Pause", "Resume", "Cancel", "Retry failed", "Download zip", stop={"Cancel"})
                status = gr.Markdown(elem_id="batch-status")
                gallery = gr.Gallery(label="Images, scene by scene", columns=4, height=420, object_fit="contain",
                                     buttons=["download", "fullscreen"], interactive=False)
                items = gr.Dataframe(headers=STATUS_COLUMNS, interactive=False, wrap=True, max_height=320)
                zip_file = gr.File(label="Zip", visible=False, interactive=False)
        # Inside the tab: a component between two tabs of a gr.Tabs breaks the tab bar in the browser.
        job_id = gr.State(None)
    who = {ctx.token}

    def options(values: dict) -> dict:
        fields = controls.request_fields(values)
        fields.pop("seed", None)  # the seed box is the batch's base seed (read by the application's coercion)
        text = values[script] or ""
        name = ""
        if not text.strip() and values[upload]:
            text = upload_bytes(values[upload], "script")
            name = Path(values[upload]).name
        return dict(script=text, name=name, format=values[script_format] or None, style=values[style],
                    seed_policy=values[seed_policy], seed=values[controls.seed],
                    category=values[category] or "", tags=values[tags] or "", **fields)

    form = controls.inputs() | {script, upload, script_format, style, seed_policy, category, tags} | who

    def on_preview(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            fields = options(values)
            preview = ctx.actions.preview_batch(owner, fields.pop("script"), **fields)
            data = preview.to_dict()
            lines = [f"**{len(preview.items)} scene(s)** ({data['format']}) with "
                     f"{markdown_literal(data['provider'] + ' / ' + data['model'])} · "
                     f"estimated **${preview.estimated_total:.4f}**"]
            if preview.budget_remaining is not None:
                lines.append(f"Today's budget left: ${preview.budget_remaining:.4f}"
                             + ("" if preview.within_budget else " — **not enough for this batch**"))
            if not preview.provider_ready:
                lines.append(f"⚠️ {markdown_literal(preview.provider_reason)}")
            # errors and warnings quote the script's lines
            lines += ([f"❌ {markdown_literal(error)}" for error in preview.errors]
                      + [f"⚠️ {markdown_literal(w)}" for w in preview.warnings])
            rows = [[row[c] for c in PREVIEW_COLUMNS] for row in preview.rows()]
            return "  \n".join(lines), rows

    def show_job(owner: str, job):
        records = ctx.actions.job_records(owner, job)
        images = [(ctx.exporter.image_file(r, owner), caption(r)) for r in records]
        return job.id, job_summary(job), images, job_rows(job)

    def on_run(values: dict, request: gr.Request, profile: gr.OAuthProfile | None, progress=gr.Progress()):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            ctx.access.check_may_generate(owner)
            fields = options(values)
            job = ctx.actions.run_batch(owner, fields.pop("script"), **fields)
            yield (*show_job(owner, job), _job_choices(ctx, owner, job.id))
            for job in ctx.actions.watch_batch(owner, job.id, progress=progress):
                yield (*show_job(owner, job), gr.update())

    watch_outputs = [job_id, status, gallery, items]
    preview_button.click(on_preview, form, [summary, table], **PRIVATE, **ctx.limits.reading())
    run_button.click(on_run, form, watch_outputs + [jobs], **PRIVATE, concurrency_limit=ctx.limits.light,
                     concurrency_id="batch")

    def watching(owner: str, chosen: str, progress):
        """The job's summary, images and scenes after each change until it stops."""
        for job in ctx.actions.watch_batch(owner, chosen, progress=progress):
            yield show_job(owner, job)

    def on_watch(values: dict, request: gr.Request, profile: gr.OAuthProfile | None, progress=gr.Progress()):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            yield from watching(owner, _picked(values[jobs], "pick a job first"), progress)

    watch.click(on_watch, who | {jobs}, watch_outputs, **PRIVATE, concurrency_limit=ctx.limits.light,
                concurrency_id="batch")

    def control(action):
        def handler(values: dict, request: gr.Request, profile: gr.OAuthProfile | None, progress=gr.Progress()):
            with visitor_errors():
                owner = ctx.owner(values, request, profile)
                job = action(owner, _picked(values[job_id], _NO_JOB))
                yield from watching(owner, job.id, progress)
        return handler

    def job_method(name: str):
        return lambda owner, job: getattr(ctx.actions.jobs, name)(job, owner)

    for button, name in ((pause, "pause"), (resume, "resume"), (cancel, "cancel"), (retry, "retry")):
        button.click(control(job_method(name)), who | {job_id}, watch_outputs, **PRIVATE,
                     concurrency_limit=ctx.limits.light, concurrency_id="batch")

    def on_zip(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            chosen = _picked(values[job_id], _NO_JOB)
            data = ctx.actions.jobs.export_zip(chosen, owner)
            return gr.update(value=ctx.exporter.bytes_file(data, owner, f"batch-{chosen}.zip"), visible=True)

    zip_button.click(on_zip, who | {job_id}, [zip_file], **PRIVATE, **ctx.limits.reading())

    def on_jobs(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            return _job_choices(ctx, ctx.owner(values, request, profile), None)

    jobs.focus(on_jobs, who, [jobs], **PRIVATE, queue=False)


_NO_JOB = "run or show a job first"


def _picked(value: str | None, missing: str) -> str:
    """The job id a button acts on; InvalidRequest(``missing``) when none is chosen yet."""
    if not value:
        raise InvalidRequest(missing)
    return value


def _job_choices(ctx: AppContext, owner: str, selected: str | None):
    listed = ctx.actions.jobs.list(owner, limit=30)
    choices = [(f"{job.created_at[:16].replace('T', ' ')} · {job.script_name or 'script'} · "
                f"{job.status.value.lower()} · {job.total} scene(s)", job.id) for job in listed]
    return gr.update(choices=choices, value=selected if selected else gr.skip())

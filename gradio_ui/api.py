"""The named API endpoints, for ``gradio_client`` and plain HTTP: clean JSON and files in and out.

Each endpoint returns ``(files, result)``: the saved images (exactly as stored, metadata included)
and a JSON object describing them (ids, seeds, cost, warnings). Errors arrive as Gradio errors
carrying the studio's message. Submitting returns a job whose status carries queue position and
progress (``Client.submit(...).status()``).

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    files, result = client.predict("a lighthouse at dusk", "local", "", {"n": 2, "seed": 7},
                                   api_name="/generate")

The endpoints are wired to invisible components: the UI uses its own (private) events, so the API
documentation lists these endpoints and nothing else.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from gradio_ui.context import AppContext
from gradio_ui.endpoints import (BATCH_OPTION_NAMES, public_image, request_fields, result_json, upload_bytes,
                                 visitor_errors)
from studio.application.forms import is_blank, whole_number
from studio.errors import InvalidRequest
from studio.service import GenerationResult
from studio.webhooks import job_secret


def _files_and_json(ctx: AppContext, owner: str, result: GenerationResult) -> tuple[list[str], dict[str, Any]]:
    return ctx.actions.files(result.images, owner), result_json(result)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _count(value: Any, what: str, default: int) -> int:
    """A count a client sent (``n``, ``limit``, ``offset``): ``default`` when blank, else read by the
    application layer's one rule for whole numbers."""
    return default if is_blank(value) else whole_number(value, what)


def build_api(ctx: AppContext) -> None:
    """Add the endpoints to the Blocks being built (inside ``with gr.Blocks()``)."""
    with gr.Column(visible=False):
        prompt = gr.Textbox(label="prompt")
        provider = gr.Textbox(label="provider", value="")
        model = gr.Textbox(label="model", value="")
        options = gr.JSON(label="options", value={})
        image = gr.File(label="image", type="filepath", file_types=["image"])
        mask = gr.File(label="mask", type="filepath", file_types=["image"])
        image_id = gr.Textbox(label="image_id", value="")
        count = gr.Number(label="n", value=4, precision=0)
        scene = gr.Checkbox(label="scene", value=False)
        script = gr.Textbox(label="script")
        script_format = gr.Textbox(label="format", value="")
        script_name = gr.Textbox(label="name", value="")
        search = gr.Textbox(label="search", value="")
        tag = gr.Textbox(label="tag", value="")
        category = gr.Textbox(label="category", value="")
        limit = gr.Number(label="limit", value=24, precision=0)
        offset = gr.Number(label="offset", value=0, precision=0)
        files = gr.File(label="images", file_count="multiple")
        result = gr.JSON(label="result")
        trigger = gr.Button("api")

    def generate(prompt: str, provider: str = "", model: str = "", options: dict | None = None,
                 request: gr.Request = None, profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
        """Text to image. `options` is a JSON object of optional fields: negative_prompt, style, size
        ("WxH") or width and height, n, seed, steps, guidance, quality, output_format, compression,
        category, tags, extra (provider options), postprocess ({"upscale": 2, "enhance": true}), cache."""
        with visitor_errors(api=True):
            owner = ctx.owner({}, request, profile)
            ctx.access.check_may_generate(owner)
            made = ctx.actions.generate(owner, prompt or "", _text(provider), _text(model), progress=progress,
                                        **request_fields(options))
            return _files_and_json(ctx, owner, made)

    def edit(image: str | None, prompt: str, mask: str | None = None, image_id: str = "", provider: str = "",
             model: str = "", options: dict | None = None, request: gr.Request = None,
             profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
        """Image to image; with a mask (white = repaint, or paint on a transparent layer) it inpaints.
        Give an uploaded image or the id of one of your images."""
        with visitor_errors(api=True):
            owner = ctx.owner({}, request, profile)
            ctx.access.check_may_generate(owner)
            made = ctx.actions.edit(owner, prompt or "", image=upload_bytes(image, "image"), image_id=_text(image_id),
                                    mask=upload_bytes(mask, "mask"), provider=_text(provider), model=_text(model),
                                    progress=progress, **request_fields(options))
            return _files_and_json(ctx, owner, made)

    def variations(image: str | None = None, image_id: str = "", prompt: str = "", n: float = 4,
                   scene: bool = False, provider: str = "", model: str = "", options: dict | None = None,
                   request: gr.Request = None, profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
        """N variations of an uploaded image, of one of your images (by id), or of a prompt.
        `scene` varies framing and lighting instead of only the seed."""
        with visitor_errors(api=True):
            owner = ctx.owner({}, request, profile)
            ctx.access.check_may_generate(owner)
            fields = request_fields(options)
            if "n" in fields:
                raise InvalidRequest("give the number of variations as n, not in options")
            made = ctx.actions.variations(owner, image=upload_bytes(image, "image"), image_id=_text(image_id),
                                          prompt=_text(prompt), n=_count(n, "n", 4), scene=bool(scene),
                                          provider=_text(provider), model=_text(model), progress=progress, **fields)
            return _files_and_json(ctx, owner, made)

    def batch(script: str, format: str = "", name: str = "", provider: str = "", model: str = "",
              options: dict | None = None, request: gr.Request = None, profile: gr.OAuthProfile | None = None,
              progress=gr.Progress()):
        """Illustrate a script: one image per scene, each keeping its timestamp. `script` is the text
        of a script (lines with optional timestamps and --options, CSV, JSON segments, SRT, WebVTT);
        `format` forces one (text, lines, paragraphs, csv, json, srt, vtt); `name` is a file name to
        detect it from. `options`: style, negative_prompt, size, n, steps, guidance, quality,
        output_format, category, tags, extra, seed_policy (per-scene | fixed), seed, concurrency,
        webhook (a public http(s) URL called on progress, completion and failure; each request is
        signed with a secret made for this job, returned once as `webhook_secret` in the answer:
        X-Studio-Signature is sha256=HMAC-SHA256 of "<X-Studio-Timestamp>.<raw body>").
        Returns when the job stops; progress is reported per scene."""
        with visitor_errors(api=True):
            owner = ctx.owner({}, request, profile)
            ctx.access.check_may_generate(owner)
            job = ctx.actions.run_batch(owner, script or "", name=_text(name), format=_text(format) or None,
                                        provider=_text(provider) or None, model=_text(model) or None,
                                        **request_fields(options, BATCH_OPTION_NAMES))
            secret = job_secret(job)  # the job's own webhook secret: in this answer, nowhere else
            for job in ctx.actions.watch_batch(owner, job.id, progress=progress):
                pass  # follow the job until it stops; `job` ends as its last state
            answer = ctx.actions.job_json(owner, job.id)
            if secret:
                answer["webhook_secret"] = secret
            return ctx.actions.files(ctx.actions.job_records(owner, job), owner), answer

    def providers_list():
        """Every provider with its state (ready / missing_key / unavailable), its models and their
        capabilities and prices, plus the style presets."""
        with visitor_errors(api=True):
            return ctx.actions.providers()

    def history(search: str = "", provider: str = "", model: str = "", tag: str = "", category: str = "",
                limit: float = 24, offset: float = 0, request: gr.Request = None,
                profile: gr.OAuthProfile | None = None):
        """A page of your images and the images others shared, newest first: the files and their records."""
        with visitor_errors(api=True):
            owner = ctx.owner({}, request, profile)
            page = ctx.actions.history(owner, search=_text(search), provider=_text(provider), model=_text(model),
                                       tag=_text(tag), category=_text(category), limit=_count(limit, "limit", 24),
                                       offset=_count(offset, "offset", 0))
            return (ctx.actions.files(page.items, owner),
                    {"items": [public_image(r) for r in page.items], "total": page.total, "limit": page.limit,
                     "offset": page.offset})

    generating = {"api_visibility": "public", **ctx.limits.generating()}
    reading = {"api_visibility": "public", **ctx.limits.reading()}
    trigger.click(generate, [prompt, provider, model, options], [files, result], api_name="generate", **generating)
    trigger.click(edit, [image, prompt, mask, image_id, provider, model, options], [files, result], api_name="edit",
                  **generating)
    trigger.click(variations, [image, image_id, prompt, count, scene, provider, model, options], [files, result],
                  api_name="variations", **generating)
    trigger.click(batch, [script, script_format, script_name, provider, model, options], [files, result],
                  api_name="batch", api_visibility="public", concurrency_limit=ctx.limits.light,
                  concurrency_id="batch")
    trigger.click(providers_list, None, [result], api_name="providers", **reading)
    trigger.click(history, [search, provider, model, tag, category, limit, offset], [files, result],
                  api_name="history", **reading)

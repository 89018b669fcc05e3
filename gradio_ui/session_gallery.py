"""The session gallery panel: this visit's images, newest first, with a zip download and board actions.

The gallery itself is a ``studio.gallery.Gallery`` kept in ``gr.State`` (one per browser session, so
visitors never share one). Each create tab shows the same gallery through its own panel; a change
to the state redraws every panel.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gradio as gr

from gradio_ui.context import AppContext
from gradio_ui.endpoints import visitor_errors
from gradio_ui.layout import action_buttons
from studio.errors import InvalidRequest
from studio.gallery import Gallery
from studio.schedules import schedule_of
from studio.types import ImageRecord
from studio.usertext import html_literal, markdown_literal


def caption(record: ImageRecord) -> str:
    prompt = record.user_prompt or record.prompt
    short = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    seed = f" · seed {record.seed}" if record.seed is not None else ""
    return f"{short} — {record.provider}/{record.model}{seed}"


def describe(record: ImageRecord) -> str:
    """The record's details as Markdown; its user text (prompt, negative, model id, style) is literal."""
    lines = [f"**{record.id}** · {record.width}x{record.height} {record.format} · "
             f"{markdown_literal(f'{record.provider} / {record.model}')}",
             f"Prompt: {markdown_literal(record.user_prompt or record.prompt)}"]
    if record.negative_prompt:
        lines.append(f"Negative: {markdown_literal(record.negative_prompt)}")
    details = [f"seed {record.seed}" if record.seed is not None else "",
               f"style {markdown_literal(record.style)}" if record.style else "", f"${record.cost:.4f}",
               f"{record.generation_time:.1f} s", f"from {record.parent_id}" if record.parent_id else "",
               f"schedule {markdown_literal(schedule_of(record.tags))}" if schedule_of(record.tags) else ""]
    lines.append(" · ".join(d for d in details if d))
    return "  \n".join(lines)


def gallery_items(ctx: AppContext, records: list[ImageRecord], owner: str) -> list[tuple[str, str]]:
    return [(ctx.exporter.image_file(r, owner), caption(r)) for r in records]


@dataclass
class GalleryPanel:
    gallery: gr.Gallery
    info: gr.Markdown
    selected: gr.State  # the id of the image last clicked in this panel
    zip_button: gr.Button
    zip_file: gr.File
    board: gr.Dropdown
    add_selected: gr.Button
    add_all: gr.Button
    edit_button: gr.Button
    vary_button: gr.Button
    clear_button: gr.Button

    @classmethod
    def build(cls, ctx: AppContext, name: str) -> "GalleryPanel":
        gallery = gr.Gallery(label="This session's images (click one to select it)", columns=3, height=520,
                             object_fit="contain", buttons=["download", "fullscreen"], interactive=False,
                             elem_id=f"{name}-gallery")
        info = gr.Markdown("No images yet in this session.")
        selected = gr.State(None)
        edit_button, vary_button, zip_button, clear_button = action_buttons(
            "Edit selected", "Variations of selected", "Download all as zip", "Clear gallery")
        with gr.Row():
            board = gr.Dropdown([], label="Mood board", allow_custom_value=True, scale=2,
                                info="Pick a board or type a new name")
            add_selected = gr.Button("Add selected", size="sm", scale=1)
            add_all = gr.Button("Add all", size="sm", scale=1)
        zip_file = gr.File(label="Zip", visible=False, interactive=False)
        panel = cls(gallery, info, selected, zip_button, zip_file, board, add_selected, add_all, edit_button,
                    vary_button, clear_button)
        ctx.board_pickers.append(board)
        panel._wire(ctx)
        return panel

    def _wire(self, ctx: AppContext) -> None:
        private = {"api_visibility": "private"}
        session_inputs = {ctx.session, ctx.token}

        def on_select(values: dict, evt: gr.SelectData, request: gr.Request, profile: gr.OAuthProfile | None):
            with visitor_errors():
                records = values[ctx.session].records(ctx.studio, ctx.owner(values, request, profile))
                if evt.index is None or not 0 <= evt.index < len(records):
                    return None, gr.update()
                record = records[evt.index]
                return record.id, describe(record)

        def on_zip(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            with visitor_errors():
                owner = ctx.owner(values, request, profile)
                records = values[ctx.session].records(ctx.studio, owner)
                if not records:
                    raise InvalidRequest("the gallery is empty: generate something first")
                return gr.update(value=ctx.exporter.zip_file(records, owner, "image-studio-session"), visible=True)

        def on_clear(values: dict):
            return Gallery(), None, "No images yet in this session.", gr.update(value=None, visible=False)

        def add_to_board(values: dict, request: gr.Request | None, profile: Any, everything: bool) -> int:
            with visitor_errors():
                owner = ctx.owner(values, request, profile)
                name = (values[self.board] or "").strip()
                if not name:
                    raise InvalidRequest("pick a mood board or type a name for a new one")
                if everything:
                    ids = [r.id for r in values[ctx.session].records(ctx.studio, owner)]
                else:
                    ids = [values[self.selected]] if values[self.selected] else []
                if not ids:
                    raise InvalidRequest("select an image first (click it in the gallery)" if not everything
                                         else "the gallery is empty")
                board = ctx.boards.find(owner, name) or ctx.boards.create(owner, name)
                added = ctx.boards.add(owner, board.id, ids)
                # gr.Info renders HTML: the board name is the visitor's text
                gr.Info(f"Added {added} image(s) to '{html_literal(board.name)}'"
                        + (" (the rest were already on it)" if added < len(ids) else ""))
                return values[ctx.boards_changed] + 1

        def on_add_selected(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            return add_to_board(values, request, profile, everything=False)

        def on_add_all(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            return add_to_board(values, request, profile, everything=True)

        inputs_add = session_inputs | {self.board, self.selected, ctx.boards_changed}
        self.gallery.select(on_select, session_inputs, [self.selected, self.info], **private, queue=False)
        self.zip_button.click(on_zip, session_inputs, [self.zip_file], **private, **ctx.limits.reading())
        self.clear_button.click(on_clear, {ctx.session}, [ctx.session, self.selected, self.info, self.zip_file],
                                **private, queue=False)
        self.add_selected.click(on_add_selected, inputs_add, [ctx.boards_changed], **private, **ctx.limits.reading())
        self.add_all.click(on_add_all, inputs_add, [ctx.boards_changed], **private, **ctx.limits.reading())

        def redraw(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            with visitor_errors():
                owner = ctx.owner(values, request, profile)
                records = values[ctx.session].records(ctx.studio, owner)
                count = f"{len(records)} image(s) in this session." if records else "No images yet in this session."
                return gallery_items(ctx, records, owner), count

        ctx.session.change(redraw, session_inputs, [self.gallery, self.info], **private, queue=False)


def with_results(gallery: Gallery, image_ids: list[str]) -> Gallery:
    """A copy of the session gallery with new images in front (a copy, so Gradio sees the change)."""
    updated = copy.deepcopy(gallery)
    updated.add(image_ids)
    return updated

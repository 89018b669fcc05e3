"""The tabs that look back: History (search, page, details, delete, zip) and Mood boards.

History shows the visitor's own images and every shared one (``studio.application``'s one visibility rule);
Mood boards only the visitor's own boards (the owner comes from ``AppContext.owner``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import gradio as gr

import providers
from gradio_ui.context import AppContext
from gradio_ui.endpoints import visitor_errors
from gradio_ui.layout import action_buttons
from gradio_ui.session_gallery import caption, describe
from studio.errors import InvalidRequest
from studio.storage import slug
from studio.usertext import markdown_literal

PRIVATE = {"api_visibility": "private"}
PAGE_SIZES = [12, 24, 48, 96]


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    selected: gr.State
    edit_button: gr.Button
    vary_button: gr.Button
    refresh: gr.Button


def build_history_tab(ctx: AppContext) -> HistoryTab:
    with gr.Tab("History", id="history"):
        with gr.Row():
            search = gr.Textbox(label="Search prompts (or an image id)", scale=3)
            provider = gr.Dropdown([("Any", "")] + [(name, name) for name in providers.names()], value="",
                                   label="Provider", scale=1)
            tag = gr.Textbox(label="Tag", scale=1)
            category = gr.Textbox(label="Category", scale=1)
            page_size = gr.Dropdown(PAGE_SIZES, value=24, label="Per page", scale=1)
        with gr.Row():
            refresh = gr.Button("Search", variant="primary", size="sm")
            previous = gr.Button("◀ Newer", size="sm")
            following = gr.Button("Older ▶", size="sm")
            zip_button = gr.Button("Download this page as zip", size="sm")
        page_info = gr.Markdown(elem_id="history-count")
        page = gr.State({"ids": [], "offset": 0, "total": 0})
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Your images and shared ones", columns=6, height=560, object_fit="cover",
                                     allow_preview=False, interactive=False, elem_id="history-gallery")
            with gr.Column(scale=2):
                details = gr.Image(label="Selected", type="filepath", interactive=False, height=320,
                                   buttons=["download", "fullscreen"])
                info = gr.Markdown("Click an image to see its details.")
                selected = gr.State(None)
                to_session, edit_button, vary_button, delete = action_buttons(
                    "Add to session gallery", "Edit", "Variations", "Delete", stop={"Delete"})
                zip_file = gr.File(label="Zip", visible=False, interactive=False)

    filters = {search, provider, tag, category, page_size}

    def load(values: dict, request: gr.Request, profile: gr.OAuthProfile | None, offset: int):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            result = ctx.actions.history(owner, search=values[search] or "", provider=values[provider] or "",
                                         tag=values[tag] or "", category=values[category] or "",
                                         limit=int(values[page_size]), offset=max(0, offset))
            items = [(ctx.exporter.thumbnail_file(r, owner), caption(r)) for r in result.items]
            shown = f"{result.offset + 1}-{result.offset + len(result.items)}" if result.items else "none"
            state = {"ids": [r.id for r in result.items], "offset": result.offset, "total": result.total}
            return items, state, f"Showing {shown} of {result.total} image(s)."

    def first_page(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        return load(values, request, profile, 0)

    def newer_page(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        return load(values, request, profile, values[page]["offset"] - int(values[page_size]))

    def older_page(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        current = values[page]
        step = int(values[page_size])
        offset = current["offset"] + step if current["offset"] + step < current["total"] else current["offset"]
        return load(values, request, profile, offset)

    common = filters | {page, ctx.token}
    outputs = [gallery, page, page_info]
    for trigger, handler in ((refresh.click, first_page), (search.submit, first_page), (previous.click, newer_page),
                             (following.click, older_page)):
        trigger(handler, common, outputs, **PRIVATE, **ctx.limits.reading())

    def on_select(values: dict, evt: gr.SelectData, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            ids = values[page]["ids"]
            if evt.index is None or not 0 <= evt.index < len(ids):
                return None, None, gr.update()
            owner = ctx.owner(values, request, profile)
            record = ctx.studio.get_image(ids[evt.index], owner)
            return record.id, ctx.exporter.image_file(record, owner), describe(record)

    gallery.select(on_select, {page, ctx.token}, [selected, details, info], **PRIVATE, **ctx.limits.reading())

    def on_to_session(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            if not values[selected]:
                raise InvalidRequest("click an image first")
            ctx.studio.get_image(values[selected], ctx.owner(values, request, profile))
            gallery_copy = copy.deepcopy(values[ctx.session])
            gallery_copy.add([values[selected]])
            return gallery_copy

    to_session.click(on_to_session, {selected, ctx.session, ctx.token}, [ctx.session], **PRIVATE, queue=False)

    def on_delete(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            if not values[selected]:
                raise InvalidRequest("click an image first")
            ctx.studio.delete_image(values[selected], ctx.owner(values, request, profile))
            ctx.exporter.forget([values[selected]])  # no copy of it stays downloadable
            gr.Info("Image deleted")
        items, state, text = load(values, request, profile, values[page]["offset"])
        return items, state, text, None, None, "Deleted."

    delete.click(on_delete, common | {selected}, outputs + [selected, details, info], **PRIVATE,
                 **ctx.limits.reading())

    def on_zip(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            records = [ctx.studio.get_image(i, owner) for i in values[page]["ids"]]
            return gr.update(value=ctx.exporter.zip_file(records, owner, "image-studio-history"), visible=True)

    zip_button.click(on_zip, {page, ctx.token}, [zip_file], **PRIVATE, **ctx.limits.reading())
    return HistoryTab(gallery, selected, edit_button, vary_button, refresh)


@dataclass
class BoardsTab:
    board: gr.Dropdown
    refresh: gr.Button


def build_boards_tab(ctx: AppContext) -> BoardsTab:
    with gr.Tab("Mood boards", id="boards"):
        with gr.Row():
            board = gr.Dropdown([], label="Board", scale=3)
            refresh = gr.Button("Reload", size="sm", scale=1)
        with gr.Row():
            new_name = gr.Textbox(label="New board (or new name for this one)", scale=3)
            create = gr.Button("Create", size="sm", scale=1)
            rename = gr.Button("Rename", size="sm", scale=1)
            delete = gr.Button("Delete board", variant="stop", size="sm", scale=1)
        notes = gr.Textbox(label="Board notes", lines=2)
        save_notes = gr.Button("Save notes", size="sm")
        with gr.Row():
            with gr.Column(scale=3):
                items = gr.Gallery(label="Images on the board, in order", columns=5, height=480,
                                   object_fit="contain", allow_preview=False, interactive=False)
            with gr.Column(scale=2):
                item_info = gr.Markdown("Click an image to arrange it.")
                item_id = gr.State(None)
                item_note = gr.Textbox(label="Note for this image", lines=1)
                with gr.Row():
                    earlier = gr.Button("◀ Earlier", size="sm")
                    later = gr.Button("Later ▶", size="sm")
                    save_note = gr.Button("Save note", size="sm")
                    remove = gr.Button("Remove", variant="stop", size="sm")
        with gr.Row():
            collage_button = gr.Button("Make collage", size="sm")
            zip_button = gr.Button("Download board (zip with collage and manifest)", size="sm")
        collage = gr.Image(label="Collage", type="filepath", interactive=False, visible=False)
        zip_file = gr.File(label="Zip", visible=False, interactive=False)
        order = gr.State([])
    ctx.board_selector = board
    who = {ctx.token}

    def show(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        """The chosen board's notes and images."""
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            if not values[board]:
                return "", [], [], None, "Pick or create a board."
            chosen = ctx.boards.get(owner, values[board])
            pairs = ctx.boards.images(owner, chosen.id)
            gallery = [(ctx.exporter.thumbnail_file(r, owner), item.note or caption(r)) for item, r in pairs]
            return (chosen.notes, gallery, [r.id for _, r in pairs], None,
                    f"{len(pairs)} image(s) on '{markdown_literal(chosen.name)}'.")

    show_outputs = [notes, items, order, item_id, item_info]
    board.change(show, who | {board}, show_outputs, **PRIVATE, **ctx.limits.reading())
    refresh.click(show, who | {board}, show_outputs, **PRIVATE, **ctx.limits.reading())

    def board_action(action):
        """A handler that runs ``action(owner, values) -> board id to show`` and then refreshes the pickers."""
        def handler(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            with visitor_errors():
                owner = ctx.owner(values, request, profile)
                chosen = action(owner, values)
                return values[ctx.boards_changed] + 1, gr.update(choices=ctx.board_choices(owner), value=chosen)
        return handler

    def do_create(owner: str, values: dict) -> str:
        return ctx.boards.create(owner, values[new_name] or "").id

    def do_rename(owner: str, values: dict) -> str:
        return ctx.boards.rename(owner, _needs_board(values[board]), values[new_name] or "").id

    def do_delete(owner: str, values: dict) -> None:
        ctx.boards.delete(owner, _needs_board(values[board]))
        return None

    def do_save_notes(owner: str, values: dict) -> str:
        ctx.boards.set_notes(owner, _needs_board(values[board]), values[notes] or "")
        gr.Info("Notes saved")
        return values[board]

    base = who | {board, new_name, notes, ctx.boards_changed}
    for button, action in ((create, do_create), (rename, do_rename), (delete, do_delete), (save_notes, do_save_notes)):
        button.click(board_action(action), base, [ctx.boards_changed, board], **PRIVATE,
                     **ctx.limits.reading()).then(show, who | {board}, show_outputs, **PRIVATE)

    def on_item(values: dict, evt: gr.SelectData, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            ids = values[order]
            if evt.index is None or not 0 <= evt.index < len(ids):
                return None, gr.update(), ""
            owner = ctx.owner(values, request, profile)
            record = ctx.studio.get_image(ids[evt.index], owner)
            note = next((i.note for i in ctx.boards.items(owner, values[board]) if i.image_id == record.id), "")
            return record.id, describe(record), note

    items.select(on_item, who | {order, board}, [item_id, item_info, item_note], **PRIVATE, **ctx.limits.reading())

    def item_action(action):
        def handler(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            with visitor_errors():
                if not values[item_id]:
                    raise InvalidRequest("click an image on the board first")
                action(ctx.owner(values, request, profile), _needs_board(values[board]), values[item_id], values)
            return show(values, request, profile)
        return handler

    item_inputs = who | {board, item_id, item_note}
    for button, action in (
            (earlier, lambda owner, b, i, v: ctx.boards.move(owner, b, i, -1)),
            (later, lambda owner, b, i, v: ctx.boards.move(owner, b, i, 1)),
            (save_note, lambda owner, b, i, v: ctx.boards.set_item_note(owner, b, i, v[item_note] or "")),
            (remove, lambda owner, b, i, v: ctx.boards.remove(owner, b, i))):
        button.click(item_action(action), item_inputs, show_outputs, **PRIVATE, **ctx.limits.reading())

    def on_collage(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            board_id = _needs_board(values[board])
            data = ctx.boards.collage(owner, board_id)
            shown = [record.id for _item, record in ctx.boards.images(owner, board_id)]
            path = ctx.exporter.bytes_file(data, owner, f"collage-{board_id}.png", image_ids=shown)
            return gr.update(value=path, visible=True)

    def on_zip(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = ctx.owner(values, request, profile)
            board_id = _needs_board(values[board])
            name = ctx.boards.get(owner, board_id).name
            path = ctx.exporter.bytes_file(ctx.boards.export_zip(owner, board_id), owner,
                                           f"board-{_file_safe(name)}.zip")
            return gr.update(value=path, visible=True)

    collage_button.click(on_collage, who | {board}, [collage], **PRIVATE, **ctx.limits.reading())
    zip_button.click(on_zip, who | {board}, [zip_file], **PRIVATE, **ctx.limits.reading())
    return BoardsTab(board, refresh)


def _needs_board(board_id: str | None) -> str:
    if not board_id:
        raise InvalidRequest("pick a board first (or create one)")
    return board_id


def _file_safe(name: str) -> str:
    return slug(name, default="board")

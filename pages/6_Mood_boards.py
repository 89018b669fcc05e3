"""Mood boards: named boards of images with notes; add from the gallery or history, reorder, remove,
and export a board as one collage image or as a zip."""

from __future__ import annotations

import streamlit as st

from studio.errors import StudioError
from studio.usertext import markdown_literal
from ui.setup import setup
from ui.widgets import describe, image_bytes_or_none, record_label, show_error

ctx = setup("Mood boards", "📌")
st.title("📌 Mood boards")
boards = ctx.boards()


def run(action, *args) -> None:
    """Call a board action from a button callback; a studio error becomes a message on the next run."""
    try:
        action(ctx.user, *args)
    except StudioError as error:
        st.session_state["_board_error"] = error


def create_board() -> None:
    name = st.session_state.get("mb_new_name", "")
    try:
        board = boards.create(ctx.user, name, st.session_state.get("mb_new_notes", ""))
    except StudioError as error:
        st.session_state["_board_error"] = error
        return
    st.session_state["mb_board"] = board.id
    st.session_state["_last_board"] = board.id


existing = boards.list(ctx.user)
pick, create = st.columns([2, 1])
with create.popover("New board", icon=":material/add:", width="stretch"):
    with st.form("mb_new", clear_on_submit=True, border=False):
        st.text_input("Name", key="mb_new_name", placeholder="e.g. Forest mood")
        st.text_area("Notes", key="mb_new_notes", height=80)
        st.form_submit_button("Create", on_click=create_board, type="primary")

error = st.session_state.pop("_board_error", None)
if error is not None:
    show_error(error)

if not existing:
    st.info("No boards yet. Create one, or use **Push selection to board** under the session gallery.")
    st.stop()

names = {b.id: b for b in existing}
if st.session_state.get("mb_board") not in names:
    st.session_state["mb_board"] = st.session_state.get("_last_board") if st.session_state.get(
        "_last_board") in names else existing[0].id
board_id = pick.selectbox("Board", list(names), key="mb_board",
                          format_func=lambda i: f"{names[i].name} ({names[i].item_count})")
board = names[board_id]
st.session_state["_last_board"] = board.id
pairs = boards.images(ctx.user, board.id)

notes_column, manage_column = st.columns([2, 1])
with notes_column:
    notes = st.text_area("Notes", value=board.notes, key=f"mb_notes_{board.id}", height=100)
    if notes != board.notes and st.button("Save notes", key="mb_save_notes"):
        run(boards.set_notes, board.id, notes)
        st.rerun()
with manage_column:
    with st.popover("Rename", icon=":material/edit:"):
        st.text_input("New name", value=board.name, key=f"mb_rename_{board.id}")
        st.button("Rename", key="mb_rename", on_click=lambda: run(
            boards.rename, board.id, st.session_state.get(f"mb_rename_{board.id}", "")))
    with st.popover("Delete board", icon=":material/delete:"):
        st.write(f"Delete the board “{markdown_literal(board.name)}”? The images stay in your history.")
        st.button("Yes, delete the board", key="mb_delete", type="primary", on_click=run,
                  args=(boards.delete, board.id))
    if pairs:
        st.download_button("Collage (.png)", key="mb_collage", on_click="ignore", mime="image/png",
                           data=lambda: boards.collage(ctx.user, board.id), file_name=f"{board.name}-collage.png",
                           icon=":material/grid_view:")
        st.download_button("Board (.zip)", key="mb_zip", on_click="ignore", mime="application/zip",
                           data=lambda: boards.export_zip(ctx.user, board.id), file_name=f"{board.name}.zip",
                           icon=":material/folder_zip:")

with st.expander("Add images", expanded=not pairs):
    on_board = {record.id for _item, record in pairs}
    candidates = [r for r in ctx.gallery.records(ctx.studio, ctx.user) if r.id not in on_board]
    by_id = {r.id: r for r in candidates}
    chosen = st.multiselect("From the session gallery", list(by_id), key=f"mb_from_gallery_{board.id}",
                            format_func=lambda i: record_label(by_id[i]))
    typed = st.text_input("From history: image ids (comma-separated)", key=f"mb_from_history_{board.id}")
    if st.button("Add to board", key="mb_add", type="primary"):
        ids = chosen + [i.strip() for i in typed.split(",") if i.strip()]
        try:
            added = boards.add(ctx.user, board.id, ids)
        except StudioError as failure:
            show_error(failure)
        else:
            st.toast(f"Added {added} image(s)")
            st.rerun()

if not pairs:
    st.stop()

if st.toggle("Show the collage", key="mb_show_collage"):
    try:
        st.image(boards.collage(ctx.user, board.id, cell=192), width="stretch")
    except StudioError as failure:
        show_error(failure)

columns = 4
for start in range(0, len(pairs), columns):
    row = st.columns(columns)
    for index, column, (item, record) in zip(range(start, len(pairs)), row, pairs[start:start + columns]):
        with column, st.container(border=True):
            thumb = image_bytes_or_none(ctx, record, thumbnail=True)
            if thumb is not None:
                st.image(thumb, width="stretch")
            st.caption(f"#{index + 1} · {markdown_literal((record.user_prompt or record.prompt)[:60])}")
            st.caption(describe(record))
            note = st.text_input("Note", value=item.note, key=f"mb_note_{board.id}_{record.id}",
                                 label_visibility="collapsed", placeholder="note")
            if note != item.note:
                run(boards.set_item_note, board.id, record.id, note)
            back, forward, remove = st.columns(3)
            back.button("◀", key=f"mb_left_{record.id}", help="Move earlier", disabled=index == 0,
                        on_click=run, args=(boards.move, board.id, record.id, -1), width="stretch")
            forward.button("▶", key=f"mb_right_{record.id}", help="Move later",
                           disabled=index == len(pairs) - 1, on_click=run,
                           args=(boards.move, board.id, record.id, 1), width="stretch")
            remove.button("✕", key=f"mb_remove_{record.id}", help="Remove from the board", on_click=run,
                          args=(boards.remove, board.id, record.id), width="stretch")

"""The sidebar every page shows: who you are, provider status, today's spend, keys for this session,
running work, and the session gallery (select, download as zip, push to a mood board)."""

from __future__ import annotations

import streamlit as st

from studio.errors import StudioError
from studio.estimates import budget_today
from studio.usertext import markdown_literal
from ui import tasks
from ui.setup import forget_session_keys, session_keys, set_session_key
from ui.widgets import STATE_ICONS, board_adder, image_bytes_or_none, provider_statuses, show_error

GALLERY_SHOWN = 12  # thumbnails in the sidebar; the Home page shows the whole gallery


def render_sidebar(ctx) -> None:
    with st.sidebar:
        _who(ctx)
        _providers(ctx)
        _keys(ctx)
        _running(ctx)
        gallery_panel(ctx, shown=GALLERY_SHOWN, key="side")


def _who(ctx) -> None:
    if ctx.login in ("oidc", "proxy"):
        st.caption(f"Signed in as **{markdown_literal(ctx.user_label)}**")
        if ctx.login == "oidc":
            st.button("Log out", on_click=st.logout, key="logout")
    elif ctx.login == "visitor":
        st.caption(f"🔒 {markdown_literal(ctx.user_label)}: your history and boards are visible only through this link.")
    else:
        st.caption("Local studio")
    today = budget_today(ctx.studio)  # the one rule the Home page and the estimates use too
    if today.budget is not None:
        st.progress(today.used, text=f"Spent today: ${today.spent:.2f} of ${today.budget:.2f}")
    else:
        st.caption(f"Spent today: ${today.spent:.2f} (no daily budget set)")


def _providers(ctx) -> None:
    statuses = provider_statuses(ctx)
    ready = sum(1 for s in statuses.values() if s.ready)
    with st.expander(f"Providers: {ready} of {len(statuses)} ready"):
        for status in statuses.values():
            line = f"{STATE_ICONS.get(status.state, '')} **{status.label}**"
            if status.reason:
                line += f" — {status.reason}"
            st.markdown(line)


def _key_names(ctx) -> list[str]:
    names: list[str] = []
    for name in provider_statuses(ctx):
        try:
            for key_name in ctx.studio.provider(name).key_names:
                if key_name not in names:
                    names.append(key_name)
        except StudioError:
            continue
    return names


def _use_pasted_key() -> None:
    name = st.session_state.get("session_key_name")
    value = st.session_state.get("session_key_value") or ""
    st.session_state["session_key_value"] = ""  # the widget forgets it: it is never sent back to the browser
    if name and value.strip():
        set_session_key(name, value)
        st.session_state["_key_notice"] = name


def _keys(ctx) -> None:
    names = _key_names(ctx)
    if not names:
        return
    pasted = session_keys()
    with st.expander("API keys for this session" + (f" ({len(pasted)})" if pasted else "")):
        st.caption("A key pasted here is used by this browser session only: kept in memory, never saved, "
                   "never shown again. Keys from the environment or secrets need nothing here.")
        with st.form("session_keys_form", clear_on_submit=True, border=False):
            st.selectbox("Key", names, key="session_key_name")
            st.text_input("Value", type="password", key="session_key_value", autocomplete="off")
            st.form_submit_button("Use for this session", on_click=_use_pasted_key)
        notice = st.session_state.pop("_key_notice", None)
        if notice:
            st.success(f"{notice} set for this session.")
        if pasted:
            st.caption("Set for this session: " + ", ".join(sorted(pasted)))
            st.button("Forget session keys", on_click=forget_session_keys, key="forget_keys")


def _running(ctx) -> None:
    running = tasks.registry().for_owner(ctx.user, running_only=True)
    for task in running:
        st.caption(f"⏳ {task.page}: {markdown_literal(task.label)} — {task.fraction:.0%}")  # labels quote prompts


# -- the session gallery -------------------------------------------------------------------------


def _checkbox_key(key: str, image_id: str) -> str:
    return f"gal_{key}_{image_id}"


def _toggle(ctx, key: str, image_id: str) -> None:
    ctx.gallery.select(image_id, bool(st.session_state.get(_checkbox_key(key, image_id))))


def _select_all(ctx, on: bool) -> None:
    if on:
        ctx.gallery.select_all()
    else:
        ctx.gallery.select_none()


def gallery_panel(ctx, *, shown: int | None = None, key: str = "side", columns: int = 3) -> None:
    """The session gallery: thumbnails with a checkbox each, select all / none, the selection as a
    zip (images + manifest), and pushing the selection to a mood board."""
    records = ctx.gallery.records(ctx.studio, ctx.user)
    title = f"Session gallery ({len(records)})"
    container = st.expander(title, expanded=True) if key == "side" else st.container()
    with container:
        if not records:
            st.caption("Images you make in this session appear here.")
            return
        visible = records if shown is None else records[:shown]
        for start in range(0, len(visible), columns):
            row = st.columns(columns)
            for column, record in zip(row, visible[start:start + columns]):
                with column:
                    thumb = image_bytes_or_none(ctx, record, thumbnail=True)
                    if thumb:
                        st.image(thumb, width="stretch")
                    box = _checkbox_key(key, record.id)
                    # The gallery is the truth; widget state does not survive page switches.
                    st.session_state[box] = ctx.gallery.is_selected(record.id)
                    st.checkbox(f"Select {record.id[:6]}", key=box, on_change=_toggle, args=(ctx, key, record.id),
                                label_visibility="collapsed", help=markdown_literal(record.user_prompt or record.prompt))
        if shown is not None and len(records) > shown:
            st.caption(f"{len(records) - shown} more on the Home page.")
        left, right = st.columns(2)
        left.button("Select all", key=f"{key}_all", on_click=_select_all, args=(ctx, True), width="stretch")
        right.button("Select none", key=f"{key}_none", on_click=_select_all, args=(ctx, False), width="stretch")
        selection = ctx.gallery.selection()
        st.caption(f"{len(selection)} selected")
        st.download_button(
            "Download selection (.zip)", data=lambda: _zip(ctx), file_name="image-studio-selection.zip",
            mime="application/zip", key=f"{key}_zip", disabled=not selection, on_click="ignore",
            icon=":material/folder_zip:", width="stretch")
        board_adder(ctx, selection, key=f"{key}_gal_board", label="Push selection to board")


def _zip(ctx) -> bytes:
    try:
        return ctx.gallery.zip_selection(ctx.studio, ctx.user)
    except StudioError as error:  # the selection emptied between drawing and clicking
        show_error(error)
        return b""

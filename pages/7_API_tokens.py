"""API tokens: the signed-in visitor makes (shown once), lists and revokes the tokens their scripts
send to the studio's HTTP API (``Authorization: Bearer <token>``). Anonymous visitors are asked to
sign in: a token would outlive the link that proves who they are."""

from __future__ import annotations

import streamlit as st

from studio.errors import StudioError
from studio.tokens import tokens_for
from studio.usertext import markdown_literal
from ui.setup import setup
from ui.widgets import show_error

ctx = setup("API tokens", "🔑")
st.title("🔑 API tokens")
st.write("Scripts call this studio's HTTP API as you with `Authorization: Bearer <token>` "
         "(see the README's *HTTP API* section). A new token is shown once: copy it then.")

if ctx.login == "visitor":
    st.info("Sign in to make API tokens: an anonymous visitor has none.")
    st.stop()

tokens = tokens_for(ctx.studio)


def create_token() -> None:
    try:
        row, secret = tokens.create(ctx.user, st.session_state.get("tok_new_name", ""))
    except StudioError as error:
        st.session_state["_token_error"] = error
        return
    # Shown on the next run only, then gone: popped below as it is drawn.
    st.session_state["_token_made"] = (row.name, secret)


def revoke_token(token_id: str) -> None:
    try:
        tokens.revoke(ctx.user, token_id)
    except StudioError as error:
        st.session_state["_token_error"] = error


with st.form("tok_new", clear_on_submit=True):
    st.text_input("Name", key="tok_new_name", placeholder="what it is for, e.g. laptop script")
    st.form_submit_button("Create token", on_click=create_token, type="primary")

error = st.session_state.pop("_token_error", None)
if error is not None:
    show_error(error)
made = st.session_state.pop("_token_made", None)
if made is not None:
    st.success(f"Token **{markdown_literal(made[0])}** made. Copy it now: it is not shown again.")
    st.code(made[1], language=None)

rows = tokens.list(ctx.user)
if not rows:
    st.info("No tokens yet.")
for row in rows:
    info, action = st.columns([5, 1])
    status = f"revoked {row.revoked_at}" if row.revoked else f"last used {row.last_used_at or 'never'}"
    info.markdown(f"**{markdown_literal(row.name)}** · `{row.id}` · made {row.created_at} · {status}")
    if not row.revoked:
        action.button("Revoke", key=f"tok_revoke_{row.id}", on_click=revoke_token, args=(row.id,))

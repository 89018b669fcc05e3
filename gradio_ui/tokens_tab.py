"""The "API tokens" tab: the signed-in visitor makes (shown once), lists and revokes their HTTP API
tokens (studio.tokens). Anonymous visitors are told to sign in: a token would outlive the browser
that proves who they are. In a single-user studio the tokens are the ``local`` owner's."""

from __future__ import annotations

from typing import Any

import gradio as gr

from gradio_ui.context import AppContext
from gradio_ui.endpoints import visitor_errors
from studio.errors import InvalidRequest
from studio.identity import is_anonymous
from studio.tokens import tokens_for

PRIVATE = {"api_visibility": "private"}  # not a named API endpoint: the UI's own events
COLUMNS = ["id", "name", "created", "last used", "status"]


def token_rows(tokens: list) -> list[list[Any]]:
    """The table of ``ApiToken`` rows: id, name, created, last used, active/revoked (never the token)."""
    return [[t.id, t.name, t.created_at, t.last_used_at or "never", f"revoked {t.revoked_at}" if t.revoked else "active"]
            for t in tokens]


def build_tokens_tab(ctx: AppContext) -> None:
    tokens = tokens_for(ctx.studio)
    with gr.Tab("API tokens", id="tokens"):
        gr.Markdown("Tokens let scripts call this studio's HTTP API as you: send `Authorization: Bearer <token>`. "
                    "A new token is shown once; copy it then.")
        with gr.Row():
            name = gr.Textbox(label="New token's name (what it is for)", scale=3)
            create = gr.Button("Create token", variant="primary", scale=1)
        shown = gr.Textbox(label="Your new token (shown once: copy it now)", visible=False, interactive=False,
                           buttons=["copy"])
        table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, label="Your tokens")
        with gr.Row():
            token_id = gr.Textbox(label="Token id to revoke", scale=3)
            revoke = gr.Button("Revoke", variant="stop", scale=1)
            reload = gr.Button("Reload", size="sm", scale=1)

    def owner_of(values: dict, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        owner = ctx.owner(values, request, profile)
        if is_anonymous(owner):
            raise InvalidRequest("sign in to make and see API tokens; an anonymous visitor has none")
        return owner

    def listing(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            return token_rows(tokens.list(owner_of(values, request, profile)))

    def do_create(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = owner_of(values, request, profile)
            _row, secret = tokens.create(owner, values[name] or "")
            return gr.update(value=secret, visible=True), "", token_rows(tokens.list(owner))

    def do_revoke(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            owner = owner_of(values, request, profile)
            tokens.revoke(owner, (values[token_id] or "").strip())
            return "", gr.update(value="", visible=False), token_rows(tokens.list(owner))

    who = {ctx.token}
    create.click(do_create, who | {name}, [shown, name, table], **PRIVATE, queue=False)
    revoke.click(do_revoke, who | {token_id}, [token_id, shown, table], **PRIVATE, queue=False)
    reload.click(listing, who, [table], **PRIVATE, queue=False)


__all__ = ["build_tokens_tab", "token_rows"]

"""Image Studio in Gradio: the front end for Hugging Face Spaces, and an HTTP API with job status.

    python gradio_app.py                     # http://127.0.0.1:7860 (on a Space: 0.0.0.0:7860)

Tabs Generate, Edit, Variations, Batch from script, History and Mood boards over the same ``studio``
core as the Streamlit app and the CLI. Named endpoints (/generate, /edit, /variations, /batch,
/providers, /history) serve ``gradio_client``; see gradio_ui/api.py.

Environment (on a Space, set these as Space secrets / variables):
  STUDIO_HOME                    data directory (default ~/.image-studio; /data/image-studio on a Space
                                 with a storage volume)
  STUDIO_GRADIO_USERS            "user:password,..." puts the whole app behind a login
  STUDIO_GRADIO_OAUTH=1          show "Sign in with Hugging Face" (automatic on a Space with `hf_oauth: true`;
                                 elsewhere Gradio signs you in as your local `huggingface-cli login`)
  STUDIO_REQUIRE_LOGIN=1         anonymous visitors may look around but not generate
  STUDIO_VISITORS=local          a personal machine: everyone not logged in is "local" (the CLI's history);
                                 otherwise each browser gets its own private anonymous id
  STUDIO_GRADIO_CONCURRENCY      generations run at once, across all tabs and endpoints (default 2)
  STUDIO_GRADIO_MAX_QUEUE        requests waiting at most before new ones are refused (default 64)
  OPENAI_API_KEY, REPLICATE_API_TOKEN, STABILITY_API_KEY, GEMINI_API_KEY: provider keys
"""

from __future__ import annotations

import sys
from pathlib import Path

import gradio as gr

from gradio_ui.api import build_api
from gradio_ui.batch_tab import build_batch_tab
from gradio_ui.context import AppContext, Limits
from gradio_ui.create_tabs import CreateTab, build_edit_tab, build_generate_tab, build_variations_tab
from gradio_ui.endpoints import visitor_errors
from gradio_ui.identity import HF_PREFIX, LOCAL_OWNER, Access, is_anonymous, new_token, valid_token
from gradio_ui.library_tabs import build_boards_tab, build_history_tab
from gradio_ui.tokens_tab import build_tokens_tab
from studio import get_studio
from studio.config import SettingsError
from studio.errors import InvalidRequest
from studio.identity import VisitorIds
from studio.migrations import SchemaTooNew
from studio.service import Studio
from studio.usertext import markdown_literal

PRIVATE = {"api_visibility": "private"}
MAX_UPLOAD = "50mb"  # the core refuses larger images anyway (studio.imaging.MAX_INPUT_BYTES)


def build_app(studio: Studio | None = None, *, access: Access | None = None, limits: Limits | None = None,
              export_dir: str | Path | None = None) -> gr.Blocks:
    """The Gradio app over ``studio`` (default: the shared studio of $STUDIO_HOME), queue included."""
    studio = studio or get_studio()
    access = access or Access.from_env()
    limits = limits or Limits()
    # Private visitors choose local models only from the catalog and the operator's allowlist; free
    # model paths (any file on this server) only when every visitor is the machine's own user.
    studio.settings.local_free_paths = access.single_user
    ctx = AppContext.create(studio, access, limits, export_dir)
    with gr.Blocks(title="Image Studio", delete_cache=(3600, 24 * 3600)) as demo:
        ctx.make_session_state()
        with gr.Row():
            gr.Markdown("# Image Studio")
            who = gr.Markdown()
            if access.oauth:
                gr.LoginButton()
        with gr.Tabs() as tabs:
            generate = build_generate_tab(ctx)
            edit = build_edit_tab(ctx)
            variations = build_variations_tab(ctx)
            build_batch_tab(ctx)
            history = build_history_tab(ctx)
            build_boards_tab(ctx)
            build_tokens_tab(ctx)
        build_api(ctx)
        _wire_sending(ctx, tabs, edit, variations,
                      [(panel.selected, panel.edit_button, panel.vary_button)
                       for panel in (generate.panel, edit.panel, variations.panel)]
                      + [(history.selected, history.edit_button, history.vary_button)])
        _wire_loading(ctx, demo, who)
    demo.queue(default_concurrency_limit=limits.generation, max_size=limits.queue_size)
    demo.studio_context = ctx  # for tests and embedding
    return demo


def _wire_loading(ctx: AppContext, demo: gr.Blocks, who: gr.Markdown) -> None:
    """On page load: give an anonymous browser its token, say who the visitor is, list their boards."""
    pickers = list(ctx.board_pickers)

    def on_load(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        token = values[ctx.token] if valid_token(values[ctx.token]) else new_token()
        owner = ctx.owner({ctx.token: token}, request, profile)
        if owner.startswith(HF_PREFIX):
            text = f"Signed in as **{markdown_literal(owner[len(HF_PREFIX):])}**"
        elif owner == LOCAL_OWNER:
            text = "Single-user studio: the same history as the command line."
        elif is_anonymous(owner):
            text = "Anonymous visitor: your images are private to this browser."
            if ctx.access.require_login:
                text += " Sign in to generate."
        else:
            text = f"Logged in as **{markdown_literal(owner)}**"
        return [token, text] + _board_updates(ctx, owner, pickers)

    def on_boards_changed(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
        with visitor_errors():
            return _board_updates(ctx, ctx.owner(values, request, profile), pickers, keep_value=True)

    demo.load(on_load, {ctx.token}, [ctx.token, who] + pickers + [ctx.board_selector], **PRIVATE, queue=False)
    ctx.boards_changed.change(on_boards_changed, {ctx.token}, pickers + [ctx.board_selector], **PRIVATE,
                              queue=False)


def _board_updates(ctx: AppContext, owner: str, pickers: list, keep_value: bool = False) -> list:
    choices = ctx.board_choices(owner)
    names = [name for name, _ in choices]
    by_name = [gr.update(choices=names) if keep_value else gr.update(choices=names, value=names[0] if names else None)
               for _ in pickers]
    return by_name + [gr.update(choices=choices)]


def _wire_sending(ctx: AppContext, tabs: gr.Tabs, edit: CreateTab, variations: CreateTab, sources: list) -> None:
    """"Edit selected" and "Variations of selected" buttons: load the picked image into that tab."""

    def sender(selected: gr.State, target: CreateTab, tab_id: str):
        def send(values: dict, request: gr.Request, profile: gr.OAuthProfile | None):
            with visitor_errors():
                image_id = values[selected]
                if not image_id:
                    raise InvalidRequest("select an image first (click it)")
                owner = ctx.owner(values, request, profile)
                path = ctx.exporter.image_file(ctx.studio.get_image(image_id, owner), owner)
                value = {"background": path, "layers": [], "composite": path} if tab_id == "edit" else path
                return value, image_id, f"Using your image `{image_id}`", gr.Tabs(selected=tab_id)
        return send

    for selected, edit_button, vary_button in sources:
        for button, target, tab_id in ((edit_button, edit, "edit"), (vary_button, variations, "variations")):
            button.click(sender(selected, target, tab_id), {selected, ctx.token},
                         [target.source_input, target.source_id, target.source_note, tabs], **PRIVATE,
                         **ctx.limits.reading())


def settings_error_app(error: Exception) -> gr.Blocks:
    """The page served instead of the studio when a setting cannot be used: the reason, nothing else
    (on a Space the process log is out of the operator's sight)."""
    with gr.Blocks(title="Image Studio") as demo:
        gr.Markdown("# Image Studio")
        # A newer studio's database: its message already says what to do.
        advice = "" if isinstance(error, SchemaTooNew) else ". Fix the setting and restart the app."
        gr.Markdown(f"**The studio cannot start:** {markdown_literal(str(error))}{advice}")
    return demo


def main() -> None:
    try:
        access = Access.from_env()
        studio = get_studio()
        limits = Limits()
        VisitorIds.for_home(studio.home)  # a bad identity key stops the app here, not at the first visitor
    except (SettingsError, SchemaTooNew) as exc:
        print(f"error: {exc}", file=sys.stderr)
        settings_error_app(exc).launch()
        return
    from studio.background import start_background_work

    start_background_work(studio, announce=True)  # interrupted batch jobs continue; schedules fire
    demo = build_app(studio, access=access, limits=limits)
    demo.launch(auth=access.users or None, auth_message="Image Studio: log in to continue.",
                max_file_size=MAX_UPLOAD, theme=gr.themes.Soft())


if __name__ == "__main__":
    main()

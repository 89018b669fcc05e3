"""User text is shown as text: prompts, negatives, model ids, board names, notes and messages that
echo input never render as Markdown or HTML (no remote image is loaded, nothing turns bold) on the
Streamlit pages and in the Gradio app.

Markdown bodies are checked by rendering them with a CommonMark renderer (markdown-it-py): the text
a viewer reads must contain the user's text verbatim, and the HTML must hold no image, link or
emphasis that came from it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from studio.boards import Boards
from studio.service import Studio
from studio.types import GenerationRequest
from studio.usertext import html_literal, markdown_literal

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "![x](http://127.0.0.1:9/x.png) **bold**"
MARKER = "127.0.0.1:9"  # in every hostile string below, to find where it is shown
HOSTILE_TEXTS = [
    HOSTILE,
    "<img src=http://127.0.0.1:9/y.png onerror=alert(1)> [link](http://127.0.0.1:9/) `code`",
    "# heading 127.0.0.1:9\n    indented\n1. list\n> quote\n---",
    ":red[colour] $x^2$ :material/home: 127.0.0.1:9 ~~strike~~ a|b \\",
    "see http://127.0.0.1:9/x.png or www.example.com, mail me@example.com HTTPS://A.B",
]
COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# GitHub-flavoured Markdown's extended autolinks (GFM spec 0.29, section 6.9), which Streamlit's
# renderer (remark-gfm) applies to the text after escapes are read: www., http(s):// and e-mail
# addresses become links. markdown-it's CommonMark mode has no such step, so it is looked for here.
GFM_AUTOLINK = re.compile(r"(?i)(?:\bwww\.|\bhttps?://|[\w.+-]@[\w-]+(?:\.[\w-]+)+)")
WORD_JOINER = "\u2060"


def rendered(markdown: str) -> tuple[str, str]:
    """(the HTML, the text a reader sees) of a Markdown body; the text keeps invisible characters."""
    out = COMMONMARK.render(markdown)
    text = html.unescape(re.sub(r"<[^>]+>", "", out.replace("<br />\n", "\n")))
    return out, text.replace("\u00a0", " ")


def assert_not_linked(out: str, text: str) -> None:
    """No image, link or emphasis in the HTML, and no bare address that GFM would turn into a link."""
    assert "<img" not in out and "<a " not in out and "<strong>bold</strong>" not in out, out
    assert not GFM_AUTOLINK.search(text), ("a bare address a GFM renderer links", text)


def assert_shown_as_text(markdown: str, user_text: str) -> None:
    out, text = rendered(markdown)
    assert_not_linked(out, text)
    text = text.replace(WORD_JOINER, "")
    for line in user_text.split("\n"):  # markup taken as markup would lose its marks in the text read
        assert line.strip() in text, (line, text)


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_markdown_literal_renders_as_exactly_the_text(text):
    assert_shown_as_text(markdown_literal(text), text)
    assert_shown_as_text(f"**Title:** {markdown_literal(text)}", text)  # inside the app's own markup too


def test_html_literal_shows_tags_as_written():
    assert html_literal('<img src=x onerror="a()"> & b') == "&lt;img src=x onerror=&quot;a()&quot;&gt; &amp; b"
    assert html_literal(None) == markdown_literal(None) == ""  # a missing reason or note shows as nothing


# -- Streamlit ------------------------------------------------------------------------------------

MARKDOWN_ELEMENTS = ("markdown", "caption", "info", "success", "warning", "error", "toast", "subheader", "title")


def shown_strings(at: AppTest) -> list[tuple[str, str]]:
    """(kind, Markdown source) of everything on the page that Streamlit renders as Markdown: bodies,
    widget labels and tooltips."""
    shown = []
    for kind in MARKDOWN_ELEMENTS:
        shown += [(kind, str(e.value)) for e in at.get(kind)]
    for kind in ("button", "checkbox", "expander", "text_input", "selectbox", "download_button", "toggle"):
        for element in at.get(kind):
            for name in ("label", "help"):
                value = getattr(element, name, None)
                if isinstance(value, str):
                    shown.append((f"{kind}.{name}", value))
    return shown


def assert_page_shows_user_text_as_text(at: AppTest, user_text: str, *, expect_plain: bool = False) -> None:
    """Every Markdown string on the page that carries the user's text renders it as text; the text
    is on the page (in a Markdown string, possibly shortened, or in a plain ``st.text``)."""
    assert not at.exception, [e.value for e in at.exception]
    seen = []
    for kind, source in shown_strings(at):
        out, text = rendered(source)
        if MARKER in source or MARKER in text:
            assert_not_linked(out, text)
            seen.append(text.replace(WORD_JOINER, ""))
    plain = [str(e.value) for e in at.get("text")]
    if expect_plain:
        assert user_text in plain, plain
    assert any(user_text[:40] in shown for shown in seen + plain), (user_text, seen, plain)


@pytest.fixture
def studio(app_home):
    made = Studio(app_home)
    yield made
    made.close()


def stored(studio: Studio, prompt: str, **extra):
    return studio.generate(GenerationRequest(prompt=prompt, provider="echo", width=64, height=64,
                                             user="local", **extra)).images[0]


def test_history_details_show_the_prompt_as_written(studio):
    record = stored(studio, HOSTILE, negative_prompt="**not** 127.0.0.1:9")
    at = AppTest.from_file(str(ROOT / "pages" / "4_History.py"), default_timeout=30).run()
    assert_page_shows_user_text_as_text(at, HOSTILE)  # the grid's captions
    at.button(key=f"hist_pick_{record.id}").click().run()
    assert_page_shows_user_text_as_text(at, HOSTILE, expect_plain=True)  # the details panel


@pytest.mark.parametrize("text", HOSTILE_TEXTS[1:])
def test_history_and_home_show_any_markup_as_written(studio, text):
    stored(studio, text)
    for page in ("app.py", "pages/4_History.py"):
        at = AppTest.from_file(str(ROOT / page), default_timeout=30).run()
        assert_page_shows_user_text_as_text(at, text)


def test_mood_board_names_and_prompts_show_as_written(studio):
    record = stored(studio, HOSTILE)
    boards = Boards(studio)
    board = boards.create("local", "[board](http://127.0.0.1:9/b) **bold**")
    boards.add("local", board.id, [record.id])
    at = AppTest.from_file(str(ROOT / "pages" / "6_Mood_boards.py"), default_timeout=30).run()
    assert_page_shows_user_text_as_text(at, HOSTILE)
    delete_prompt = [e.value for e in at.get("markdown") if "Delete the board" in str(e.value)]
    assert delete_prompt, "the delete confirmation is on the page (in its popover)"
    assert_shown_as_text(delete_prompt[0], board.name)


def test_a_model_id_typed_by_the_user_is_literal_in_captions_and_warnings(studio):
    record = stored(studio, "a kite", model="**echo** ![m](http://127.0.0.1:9/m.png)")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert_page_shows_user_text_as_text(at, record.model)


# -- Gradio ---------------------------------------------------------------------------------------


def test_gradio_detail_panels_and_summaries_show_user_text_as_written(studio):
    from gradio_ui.batch_tab import job_summary
    from gradio_ui.create_tabs import result_summary
    from gradio_ui.controls import describe_model
    from gradio_ui.session_gallery import describe
    from studio.jobs import get_manager

    record = stored(studio, HOSTILE, negative_prompt="[neg](http://127.0.0.1:9/n)")
    assert_shown_as_text(describe(record), HOSTILE)
    assert_shown_as_text(describe(record), record.negative_prompt)

    result = studio.generate(GenerationRequest(prompt="a kite", provider="echo", width=64, height=64,
                                               steps=3, model="![m](http://127.0.0.1:9/m.png)"))
    warning = next(w for w in result.warnings if MARKER in w)  # "<model> has no steps setting; ..."
    assert_shown_as_text(result_summary(result), warning)
    unknown = studio.provider("echo").model("**echo** ![m](http://127.0.0.1:9/m.png)")
    assert_shown_as_text(describe_model(unknown), unknown.id)

    manager = get_manager(studio)
    job = manager.create("a harbour", provider="echo", width=64, height=64)
    job.error = "scene 1: " + HOSTILE  # what a failed scene's message can quote
    assert_shown_as_text(job_summary(job), HOSTILE)


def test_gradio_board_toast_and_panel_show_the_board_name_as_written(studio, monkeypatch):
    import gradio as gr

    import gradio_app
    from studio.gallery import Gallery

    record = stored(studio, HOSTILE)
    demo = gradio_app.build_app(studio)
    ctx = demo.studio_context
    shown: list[str] = []
    monkeypatch.setattr(gr, "Info", lambda message, *args, **kwargs: shown.append(message))
    handler = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_add_selected")
    name = '<img src="http://127.0.0.1:9/t.png"> **bold**'
    values = {}
    for component in handler.inputs:
        if component is ctx.token:
            values[component] = None
        elif component is ctx.session:
            gallery = Gallery()
            gallery.add([record.id])
            values[component] = gallery
        elif component is ctx.boards_changed:
            values[component] = 0
        elif isinstance(component, gr.Dropdown):
            values[component] = name
        else:
            values[component] = record.id  # the panel's selected image
    handler.fn(values, None, None)
    assert shown and "<img" not in shown[0] and html.unescape(shown[0]).count(name) == 1

    show = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "show")
    board = Boards(studio).find("local", name)
    outputs = show.fn({c: (board.id if isinstance(c, gr.Dropdown) else None) for c in show.inputs}, None, None)
    assert_shown_as_text(outputs[-1], name)


def test_batch_preview_errors_quote_the_script_as_written(studio):
    at = AppTest.from_file(str(ROOT / "pages" / "5_Batch.py"), default_timeout=30).run()
    at.text_area(key="batch_script").set_value(f"fine scene\nbroken --seed {HOSTILE}\n").run()
    errors = [str(e.value) for e in at.error]
    assert errors, "the malformed line is reported"
    assert_page_shows_user_text_as_text(at, "line 2: --seed")
    assert any(MARKER in rendered(e)[1] for e in errors), errors

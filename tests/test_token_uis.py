"""API tokens from the web UIs (issue 12 §2): the Streamlit page and the Gradio tab make a token
(shown once), list and revoke it, for the signed-in (or single-user) visitor only."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from streamlit.testing.v1 import AppTest

from studio.service import Studio
from studio.tokens import tokens_for

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages" / "7_API_tokens.py")


# -- Streamlit ------------------------------------------------------------------------------------


def test_streamlit_page_makes_shows_once_lists_and_revokes(app_home):
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert any("No tokens yet" in info.value for info in at.info)
    at.text_input(key="tok_new_name").input("laptop *script*")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    shown = [code.value for code in at.code]
    assert len(shown) == 1 and shown[0].startswith("ist_")
    studio = Studio(app_home)
    try:
        tokens = tokens_for(studio)
        (row,) = tokens.list("local")
        assert tokens.verify(shown[0]).id == row.id
        assert row.name == "laptop *script*"
        assert any(r"laptop \*script\*" in md.value for md in at.markdown)  # the name is escaped
        at.run()
        assert not at.code  # shown once: gone on the next run
        at.button(key=f"tok_revoke_{row.id}").click().run()
        assert tokens.list("local")[0].revoked
        assert tokens.verify(shown[0]) is None
        assert any("revoked" in md.value for md in at.markdown)
    finally:
        studio.close()


def test_streamlit_page_refuses_anonymous_visitors(app_home, monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert any("Sign in" in info.value for info in at.info)
    assert "tok_new_name" not in [widget.key for widget in at.text_input]


def test_streamlit_page_shows_a_bad_name(app_home):
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    at.text_input(key="tok_new_name").input("   ")
    at.button[0].click().run()
    assert any("needs a name" in error.value for error in at.error)
    assert not at.code


# -- Gradio ---------------------------------------------------------------------------------------


def _demo(studio, monkeypatch, tmp_path, visitors: str):
    import gradio_app

    monkeypatch.setenv("STUDIO_VISITORS", visitors)  # read when the app is built
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    return gradio_app.build_app(studio, export_dir=tmp_path / "exports")


def _handler(demo, name: str, request: gr.Request):
    block_fn = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)

    def call(**by_label):
        values = {component: by_label.get(getattr(component, "label", None) or "") for component in block_fn.inputs}
        return block_fn.fn(values, request, None)
    return call


@pytest.mark.parametrize("visitors, request_kwargs, owner", [
    ("local", {"session_hash": "s1"}, "local"),  # a single-user studio: the local owner's tokens
    ("private", {"username": "alice", "session_hash": "s1"}, "alice")])  # logged in (STUDIO_GRADIO_USERS)
def test_gradio_tab_makes_lists_and_revokes(echo_studio, monkeypatch, tmp_path, visitors, request_kwargs, owner):
    demo = _demo(echo_studio, monkeypatch, tmp_path, visitors)
    request = gr.Request(**request_kwargs)
    shown, name, rows = _handler(demo, "do_create", request)(**{"New token's name (what it is for)": "ci"})
    assert shown["visible"] is True and shown["value"].startswith("ist_") and name == ""
    tokens = tokens_for(echo_studio)
    (row,) = tokens.list(owner)
    assert rows == [[row.id, "ci", row.created_at, "never", "active"]]
    assert shown["value"] not in repr(rows)
    assert _handler(demo, "listing", request)() == rows
    cleared, hidden, rows = _handler(demo, "do_revoke", request)(**{"Token id to revoke": row.id})
    assert hidden["visible"] is False and rows[0][4].startswith("revoked")
    assert tokens.verify(shown["value"]) is None


def test_gradio_tab_refuses_anonymous_visitors(echo_studio, monkeypatch, tmp_path):
    demo = _demo(echo_studio, monkeypatch, tmp_path, "private")
    with pytest.raises(gr.Error, match="sign in"):
        _handler(demo, "do_create", gr.Request(session_hash="s1"))(**{"New token's name (what it is for)": "x"})
    assert echo_studio.storage.index.connection().execute("SELECT COUNT(*) FROM api_tokens").fetchone()[0] == 0

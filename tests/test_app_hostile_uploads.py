"""Hostile uploads through the Streamlit Edit page: each is a clear message, never a traceback, and
nothing is written."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers import as_read, png, tree_snapshot
from tests.test_app_pages import EDIT, button, page

BOMB = io.BytesIO()
Image.new("1", (20000, 20000)).save(BOMB, format="PNG")

UPLOADS = [
    ("corrupt.png", b"\x89PNG\r\n\x1a\nnot really", "not a readable image|truncated or corrupt"),
    ("truncated.png", png(64, 64)[:60], "truncated or corrupt|not a readable image"),
    ("notes.png", b"just text, renamed", "not a readable image"),
    ("bomb.png", BOMB.getvalue(), "pixel limit|decompression bomb"),
]


@pytest.mark.parametrize("name, data, message", UPLOADS, ids=[u[0] for u in UPLOADS])
def test_bad_upload_is_a_message_and_writes_nothing(app_home, name, data, message):
    import re

    at = page(EDIT)
    at.radio(key="edit_source_kind").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value((name, data, "image/png")).run()
    before = tree_snapshot(app_home)
    at.text_area(key="edit_prompt").input("make it snow").run()
    if any(b.label == "Apply edit" for b in at.button):
        button(at, "Apply edit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(as_read(e.value) for e in [*at.error, *at.warning])
    assert re.search(message, shown), shown
    assert tree_snapshot(app_home) == before


def test_mask_of_the_wrong_size_is_a_message(app_home):
    at = page(EDIT)
    at.radio(key="edit_source_kind").set_value("Upload").run()
    at.file_uploader(key="edit_upload").set_value(("photo.png", png(64, 64), "image/png")).run()
    at.radio(key="edit_kind").set_value("Inpaint with a mask").run()
    at.radio(key="edit_mask_how").set_value("Upload a mask").run()
    at.file_uploader(key="edit_mask_upload").set_value(("mask.png", png(32, 48, mode="L"), "image/png")).run()
    at.text_area(key="edit_prompt").input("a red door").run()
    before = tree_snapshot(app_home)
    button(at, "Apply edit").click().run()
    assert not at.exception
    shown = " ".join(as_read(e.value) for e in [*at.error, *at.warning])
    assert "32x48" in shown and "64x64" in shown, shown
    assert tree_snapshot(app_home) == before

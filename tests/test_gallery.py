"""The session gallery model (studio/gallery.py): order, selection, self-healing, zip with manifest."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from studio.errors import InvalidRequest
from studio.gallery import Gallery
from studio.types import GenerationRequest


def test_order_dedup_limit_and_selection():
    gallery = Gallery(limit=3)
    gallery.add(["a", "b"])
    gallery.add(["c"])
    assert gallery.ids == ["c", "a", "b"]
    gallery.add(["b"])  # seen again: moves to the front, not duplicated
    assert gallery.ids == ["b", "c", "a"]
    gallery.select("a")
    gallery.select("b")
    gallery.select("zzz")  # not in the gallery: ignored
    assert gallery.selection() == ["b", "a"]  # gallery order, not click order
    gallery.add(["d"])  # over the limit: the oldest ("a") leaves, and its selection with it
    assert gallery.ids == ["d", "b", "c"]
    assert gallery.selection() == ["b"]
    gallery.select_all()
    assert gallery.selection() == ["d", "b", "c"]
    gallery.select("c", False)
    gallery.remove("d")
    assert gallery.selection() == ["b"] and len(gallery) == 2 and "d" not in gallery
    gallery.select_none()
    assert gallery.selection() == []
    gallery.clear()
    assert gallery.ids == []


def test_records_hide_other_users_and_drop_deleted(echo_studio):
    mine = echo_studio.generate(GenerationRequest(prompt="mine", provider="echo", n=2, user="alice")).images
    theirs = echo_studio.generate(GenerationRequest(prompt="theirs", provider="echo", user="bob")).images
    gallery = Gallery()
    gallery.add([r.id for r in mine] + [theirs[0].id])
    assert {r.id for r in gallery.records(echo_studio, "alice")} == {r.id for r in mine}
    echo_studio.delete_image(mine[0].id, "alice")
    assert [r.id for r in gallery.records(echo_studio, "alice")] == [mine[1].id]
    assert mine[0].id not in gallery  # healed


def test_zip_selection_has_selected_images_and_manifest(echo_studio):
    records = echo_studio.generate(GenerationRequest(prompt="zip me", provider="echo", n=3, user="alice",
                                                     seed=5)).images
    gallery = Gallery()
    gallery.add([r.id for r in records])
    with pytest.raises(InvalidRequest, match="select"):
        gallery.zip_selection(echo_studio, "alice")
    gallery.select(records[0].id)
    gallery.select(records[2].id)
    archive = zipfile.ZipFile(io.BytesIO(gallery.zip_selection(echo_studio, "alice")))
    manifest = json.loads(archive.read("manifest.json"))["images"]
    assert sorted(row["id"] for row in manifest) == sorted([records[0].id, records[2].id])
    for row in manifest:
        original = echo_studio.image_bytes(echo_studio.get_image(row["id"], "alice"))
        assert archive.read(row["file"]) == original  # byte-identical, metadata kept
        assert row["seed"] in (5, 6, 7) and row["provider"] == "echo"
    assert "manifest.csv" in archive.namelist()
    # Another user selecting ids they cannot see gets nothing.
    with pytest.raises(InvalidRequest):
        gallery.zip_selection(echo_studio, "mallory")

"""Mood boards: CRUD per owner, ordering, notes, collage and zip export (studio/boards.py)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from studio.boards import Boards, render_collage
from studio.errors import InvalidRequest, NotFound
from studio.types import GenerationRequest

# Every test here runs once per database back end (tests/pg_server.py): embedded SQLite, PostgreSQL.
pytestmark = pytest.mark.usefixtures("database_url")


def make_images(studio, n=3, user="alice", prompt="a red kite"):
    result = studio.generate(GenerationRequest(prompt=prompt, provider="echo", n=n, user=user, width=64, height=64))
    return [r.id for r in result.images]


def test_create_list_rename_notes_delete_per_owner(echo_studio):
    boards = Boards(echo_studio)
    first = boards.create("alice", "Forest mood", notes="greens\nfog")
    boards.create("alice", "Cities")
    boards.create("bob", "Forest mood")  # same name, other owner: allowed
    assert sorted(b.name for b in boards.list("alice")) == ["Cities", "Forest mood"]
    assert [b.name for b in boards.list("bob")] == ["Forest mood"]
    assert boards.get("alice", first.id).notes == "greens\nfog"

    with pytest.raises(InvalidRequest, match="already have a board"):
        boards.create("alice", "Cities")
    with pytest.raises(InvalidRequest, match="already have a board"):
        boards.rename("alice", first.id, "Cities")
    with pytest.raises(InvalidRequest, match="empty"):
        boards.create("alice", "   ")

    renamed = boards.rename("alice", first.id, "Forest")
    assert renamed.name == "Forest"
    assert boards.set_notes("alice", first.id, "moss").notes == "moss"

    # Someone else's board does not exist for you: no reading, changing or deleting it.
    for call in (lambda: boards.get("bob", first.id), lambda: boards.rename("bob", first.id, "x"),
                 lambda: boards.delete("bob", first.id), lambda: boards.add("bob", first.id, [])):
        with pytest.raises(NotFound):
            call()
    boards.delete("alice", first.id)
    assert [b.name for b in boards.list("alice")] == ["Cities"]


def test_items_add_reorder_move_remove_and_notes(echo_studio):
    boards = Boards(echo_studio)
    ids = make_images(echo_studio, 3)
    board = boards.create("alice", "Kites")
    assert boards.add("alice", board.id, ids) == 3
    assert boards.add("alice", board.id, ids[:1]) == 0  # already there: not duplicated
    assert [i.image_id for i in boards.items("alice", board.id)] == ids
    assert boards.get("alice", board.id).item_count == 3

    boards.move("alice", board.id, ids[2], -1)
    assert [i.image_id for i in boards.items("alice", board.id)] == [ids[0], ids[2], ids[1]]
    boards.move("alice", board.id, ids[0], +10)  # clamped at the end
    assert [i.image_id for i in boards.items("alice", board.id)] == [ids[2], ids[1], ids[0]]
    boards.reorder("alice", board.id, [ids[1]])
    assert [i.image_id for i in boards.items("alice", board.id)] == [ids[1], ids[2], ids[0]]

    boards.set_item_note("alice", board.id, ids[2], "use this palette")
    boards.remove("alice", board.id, ids[1])
    items = boards.items("alice", board.id)
    assert [(i.image_id, i.position) for i in items] == [(ids[2], 0), (ids[0], 1)]
    assert items[0].note == "use this palette"

    # Deleting the image from history removes it from the board too.
    echo_studio.delete_image(ids[0], "alice")
    assert [i.image_id for i in boards.items("alice", board.id)] == [ids[2]]


def test_only_visible_images_can_be_added(echo_studio):
    boards = Boards(echo_studio)
    bobs = make_images(echo_studio, 1, user="bob")
    board = boards.create("alice", "Mine")
    with pytest.raises(NotFound):
        boards.add("alice", board.id, bobs)
    assert boards.items("alice", board.id) == []
    echo_studio.update_image(bobs[0], "bob", shared=True)
    assert boards.add("alice", board.id, bobs) == 1


def test_collage_is_one_image_in_board_order(echo_studio):
    boards = Boards(echo_studio)
    ids = make_images(echo_studio, 3, prompt="collage")
    board = boards.create("alice", "Collage")
    boards.add("alice", board.id, ids)
    with pytest.raises(InvalidRequest, match="no images"):
        boards.collage("alice", boards.create("alice", "Empty").id)

    data = boards.collage("alice", board.id, cell=64, columns=3)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    gap, title = 8, 48
    assert image.size == (3 * 64 + 4 * gap, title + 64 + 2 * gap)
    # Each cell shows its image: the echo image's top-left colour is the prompt's hash colour.
    for column, image_id in enumerate(ids):
        data = echo_studio.image_bytes(echo_studio.get_image(image_id, "alice"))
        source = Image.open(io.BytesIO(data)).convert("RGB")
        expected = source.getpixel((source.width - 1, source.height - 1))
        x = gap + column * (64 + gap) + 60
        y = title + gap + 60
        got = image.convert("RGB").getpixel((x, y))
        assert max(abs(a - b) for a, b in zip(got, expected)) < 40, (column, got, expected)


def test_render_collage_layout_and_limits():
    pictures = [Image.new("RGB", (100, 50), (255, 0, 0)), Image.new("RGB", (50, 100), (0, 0, 255))]
    canvas = render_collage(pictures, cell=100, columns=1)
    assert canvas.size == (100 + 16, 2 * 100 + 3 * 8)
    assert canvas.getpixel((8 + 50, 8 + 50)) == (255, 0, 0)  # first picture, letterboxed in its cell
    assert canvas.getpixel((8 + 50, 8 + 100 + 8 + 50)) == (0, 0, 255)
    with pytest.raises(InvalidRequest):
        render_collage([])
    with pytest.raises(InvalidRequest):
        render_collage(pictures, cell=4)


def test_export_zip_has_images_manifest_board_and_collage(echo_studio):
    boards = Boards(echo_studio)
    ids = make_images(echo_studio, 2, prompt="=HYPERLINK(\"x\")")  # a formula-looking prompt
    board = boards.create("alice", "Export me", notes="for the pitch")
    boards.add("alice", board.id, ids)
    boards.move("alice", board.id, ids[1], -1)
    boards.set_item_note("alice", board.id, ids[1], "hero shot")

    archive = zipfile.ZipFile(io.BytesIO(boards.export_zip("alice", board.id)))
    names = archive.namelist()
    images = [n for n in names if n.endswith(".png") and n != "collage.png"]
    assert len(images) == 2 and {"manifest.csv", "manifest.json", "board.json", "collage.png"} <= set(names)
    manifest = json.loads(archive.read("manifest.json"))["images"]
    assert [row["id"] for row in manifest] == [ids[1], ids[0]]  # board order
    assert [row["position"] for row in manifest] == [1, 2]
    assert manifest[0]["note"] == "hero shot"
    assert ids[1] in manifest[0]["file"]
    csv_text = archive.read("manifest.csv").decode()
    assert "'=HYPERLINK" in csv_text  # neutralised for spreadsheets
    described = json.loads(archive.read("board.json"))
    assert described["board"]["notes"] == "for the pitch"
    for name in images:
        Image.open(io.BytesIO(archive.read(name))).verify()
    Image.open(io.BytesIO(archive.read("collage.png"))).verify()

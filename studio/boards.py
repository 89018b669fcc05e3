"""Mood boards: named, ordered collections of images with notes, per owner.

Two layers:

* ``BoardStore`` is the SQL, on the ``boards`` / ``board_items`` tables of the studio's database
  (SQLite or PostgreSQL). It knows nothing about owners' rights.
* ``Boards`` is what front ends use: every call names the owner, a board of someone else is
  "not found", only images the owner may see can be added, and it renders a board as one collage
  image or exports it as a zip (images + manifest + board.json + the collage).

Deleting an image removes it from every board (the foreign key cascades).
"""

from __future__ import annotations

import io
import json
import math
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from PIL import Image, ImageDraw, ImageFont, ImageOps

from studio.errors import InvalidRequest, NotFound
from studio.exports import build_zip
from studio.identity import visible_to
from studio.imaging import THUMBNAIL_SIDE, open_checked
from studio.storage.index import sql
from studio.types import ImageRecord
from studio.validation import clean_text

if TYPE_CHECKING:
    from studio.service import Studio
    from studio.storage.index import HistoryIndex

MAX_NAME_CHARS = 80
MAX_NOTES_CHARS = 4000
MAX_ITEMS = 500  # a collage of more is unreadable anyway; keeps exports bounded
COLLAGE_BACKGROUND = (24, 24, 27)
COLLAGE_TEXT = (235, 235, 240)


@dataclass
class Board:
    id: str
    owner: str
    name: str
    notes: str
    created_at: str
    updated_at: str
    item_count: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BoardItem:
    image_id: str
    position: int
    note: str
    added_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# -- the SQL -------------------------------------------------------------------------------------


class BoardStore:
    """Board rows in the studio's database (``HistoryIndex.db``: SQLite or PostgreSQL, one SQL).
    Positions are 0..n-1 in display order; changes to one board's items run with its row locked, so
    two processes adding to a board at once never give two images one position."""

    def __init__(self, index: "HistoryIndex"):
        self.index = index

    @staticmethod
    def _board(row) -> Board:
        return Board(**dict(row))

    _SELECT = ("SELECT b.id, b.owner, b.name, b.notes, b.created_at, b.updated_at, "
               "(SELECT COUNT(*) FROM board_items i WHERE i.board_id = b.id) AS item_count FROM boards b")

    def _rows(self, statement: str, params: dict) -> list:
        with self.index.read() as conn:
            return conn.execute(sql(statement), params).mappings().all()

    def _lock_board(self, conn, board_id: str) -> None:
        conn.execute(sql("SELECT id FROM boards WHERE id = :id" + self.index.db.for_update()), {"id": board_id})

    def create(self, board: Board) -> None:
        """Insert ``board``; raises ``ValueError`` when the owner already has a board of that name."""
        from sqlalchemy.exc import IntegrityError

        try:
            with self.index.write() as conn:
                conn.execute(sql("INSERT INTO boards (id, owner, name, notes, created_at, updated_at) "
                                 "VALUES (:id, :owner, :name, :notes, :created_at, :updated_at)"),
                             {"id": board.id, "owner": board.owner, "name": board.name, "notes": board.notes,
                              "created_at": board.created_at, "updated_at": board.updated_at})
        except IntegrityError as exc:
            raise ValueError("duplicate board name") from exc

    def list(self, owner: str) -> list[Board]:
        """``owner``'s boards, most recently changed first (then by name)."""
        rows = self._rows(f"{self._SELECT} WHERE b.owner = :owner ORDER BY b.updated_at DESC, b.name",
                          {"owner": owner})
        return [self._board(row) for row in rows]

    def get(self, board_id: str) -> Board | None:
        """The board with this id, whoever owns it (``Boards`` checks the owner); None when there is none."""
        rows = self._rows(f"{self._SELECT} WHERE b.id = :id", {"id": board_id})
        return self._board(rows[0]) if rows else None

    def find(self, owner: str, name: str) -> Board | None:
        """``owner``'s board named exactly ``name``; None when there is none."""
        rows = self._rows(f"{self._SELECT} WHERE b.owner = :owner AND b.name = :name", {"owner": owner, "name": name})
        return self._board(rows[0]) if rows else None

    def update(self, board_id: str, *, name: str | None = None, notes: str | None = None) -> None:
        """Rename and/or change notes; raises ``ValueError`` on a duplicate name."""
        from sqlalchemy.exc import IntegrityError

        fields = {k: v for k, v in (("name", name), ("notes", notes)) if v is not None}
        fields["updated_at"] = _now()
        assignments = ", ".join(f"{k} = :{k}" for k in fields)
        try:
            with self.index.write() as conn:
                conn.execute(sql(f"UPDATE boards SET {assignments} WHERE id = :board_id"),
                             {**fields, "board_id": board_id})
        except IntegrityError as exc:
            raise ValueError("duplicate board name") from exc

    def delete(self, board_id: str) -> None:
        """Delete the board and its items (the images stay); nothing happens for an unknown id."""
        with self.index.write() as conn:
            conn.execute(sql("DELETE FROM boards WHERE id = :id"), {"id": board_id})

    def items(self, board_id: str) -> list[BoardItem]:
        """The board's items in board order (position, then when added); empty for an unknown id."""
        rows = self._rows("SELECT image_id, position, note, added_at FROM board_items WHERE board_id = :board_id "
                          "ORDER BY position, added_at", {"board_id": board_id})
        return [BoardItem(**dict(row)) for row in rows]

    def add_items(self, board_id: str, image_ids: list[str]) -> int:
        """Append images not already on the board; returns how many were added."""
        added = 0
        now = _now()
        with self.index.write() as conn:
            self._lock_board(conn, board_id)
            present = {row[0] for row in conn.execute(
                sql("SELECT image_id FROM board_items WHERE board_id = :board_id"), {"board_id": board_id})}
            position = conn.execute(sql("SELECT COALESCE(MAX(position) + 1, 0) FROM board_items "
                                        "WHERE board_id = :board_id"), {"board_id": board_id}).scalar()
            for image_id in image_ids:
                if image_id in present:
                    continue
                conn.execute(sql("INSERT INTO board_items (board_id, image_id, position, note, added_at) "
                                 "VALUES (:board_id, :image_id, :position, '', :added_at)"),
                             {"board_id": board_id, "image_id": image_id, "position": position, "added_at": now})
                present.add(image_id)
                position += 1
                added += 1
            self._touch(conn, board_id, now)
        return added

    def remove_item(self, board_id: str, image_id: str) -> None:
        """Take the image off the board (the others close up); nothing happens when it is not on it."""
        with self.index.write() as conn:
            self._lock_board(conn, board_id)
            conn.execute(sql("DELETE FROM board_items WHERE board_id = :board_id AND image_id = :image_id"),
                         {"board_id": board_id, "image_id": image_id})
            self._renumber(conn, board_id)
            self._touch(conn, board_id, _now())

    def reorder(self, board_id: str, image_ids: list[str]) -> None:
        """Put the board's items in the order of ``image_ids`` (items not named keep their order, after)."""
        with self.index.write() as conn:
            self._lock_board(conn, board_id)
            current = self._ordered_ids(conn, board_id)
            wanted = [i for i in dict.fromkeys(image_ids) if i in current]
            self._set_positions(conn, board_id, wanted + [i for i in current if i not in wanted])
            self._touch(conn, board_id, _now())

    def set_item_note(self, board_id: str, image_id: str, note: str) -> None:
        """Set the note of the image on the board; nothing happens when it is not on it."""
        with self.index.write() as conn:
            conn.execute(sql("UPDATE board_items SET note = :note WHERE board_id = :board_id AND image_id = :image_id"),
                         {"note": note, "board_id": board_id, "image_id": image_id})

    @staticmethod
    def _touch(conn, board_id: str, now: str) -> None:
        conn.execute(sql("UPDATE boards SET updated_at = :now WHERE id = :id"), {"now": now, "id": board_id})

    @staticmethod
    def _ordered_ids(conn, board_id: str) -> list[str]:
        return [row[0] for row in conn.execute(
            sql("SELECT image_id FROM board_items WHERE board_id = :board_id ORDER BY position, added_at"),
            {"board_id": board_id})]

    @staticmethod
    def _set_positions(conn, board_id: str, order: list[str]) -> None:
        if order:
            conn.execute(sql("UPDATE board_items SET position = :position WHERE board_id = :board_id "
                             "AND image_id = :image_id"),
                         [{"position": pos, "board_id": board_id, "image_id": image_id}
                          for pos, image_id in enumerate(order)])

    @classmethod
    def _renumber(cls, conn, board_id: str) -> None:
        cls._set_positions(conn, board_id, cls._ordered_ids(conn, board_id))


# The name this store had while it was SQLite only.
SQLiteBoardStore = BoardStore


# -- the service ---------------------------------------------------------------------------------


class Boards:
    """Mood boards of one studio, checked per owner."""

    def __init__(self, studio: "Studio", store: BoardStore | None = None):
        self.studio = studio
        self.store = store or BoardStore(studio.storage.index)

    # -- boards -------------------------------------------------------------------------------

    def list(self, owner: str) -> list[Board]:
        return self.store.list(owner)

    def get(self, owner: str, board_id: str) -> Board:
        board = self.store.get(board_id)
        if board is None or board.owner != owner:
            raise NotFound(f"no mood board with id {board_id!r}")
        return board

    def find(self, owner: str, name: str) -> Board | None:
        return self.store.find(owner, clean_text(name, "board name", required=True, max_chars=MAX_NAME_CHARS))

    def create(self, owner: str, name: str, notes: str = "") -> Board:
        name = clean_text(name, "board name", required=True, max_chars=MAX_NAME_CHARS)
        notes = _clean_notes(notes)
        now = _now()
        board = Board(id=secrets.token_hex(8), owner=owner, name=name, notes=notes, created_at=now, updated_at=now)
        try:
            self.store.create(board)
        except ValueError:
            raise InvalidRequest(f"you already have a board named {name!r}") from None
        return board

    def get_or_create(self, owner: str, name: str) -> Board:
        return self.find(owner, name) or self.create(owner, name)

    def rename(self, owner: str, board_id: str, name: str) -> Board:
        self.get(owner, board_id)
        name = clean_text(name, "board name", required=True, max_chars=MAX_NAME_CHARS)
        try:
            self.store.update(board_id, name=name)
        except ValueError:
            raise InvalidRequest(f"you already have a board named {name!r}") from None
        return self.get(owner, board_id)

    def set_notes(self, owner: str, board_id: str, notes: str) -> Board:
        self.get(owner, board_id)
        self.store.update(board_id, notes=_clean_notes(notes))
        return self.get(owner, board_id)

    def delete(self, owner: str, board_id: str) -> None:
        self.get(owner, board_id)
        self.store.delete(board_id)

    # -- items --------------------------------------------------------------------------------

    def add(self, owner: str, board_id: str, image_ids: Iterable[str]) -> int:
        """Add images (ones the owner may see) at the end; returns how many were new on the board."""
        board = self.get(owner, board_id)
        ids = [str(i).strip() for i in image_ids if str(i).strip()]
        for image_id in ids:
            self.studio.get_image(image_id, owner)  # NotFound for someone else's private image
        if board.item_count + len(ids) > MAX_ITEMS:
            raise InvalidRequest(f"a board holds at most {MAX_ITEMS} images; this one has {board.item_count}")
        return self.store.add_items(board_id, ids)

    def remove(self, owner: str, board_id: str, image_id: str) -> None:
        self.get(owner, board_id)
        self.store.remove_item(board_id, image_id)

    def reorder(self, owner: str, board_id: str, image_ids: list[str]) -> None:
        self.get(owner, board_id)
        self.store.reorder(board_id, image_ids)

    def move(self, owner: str, board_id: str, image_id: str, offset: int) -> None:
        """Move one image ``offset`` places (negative = towards the start), clamped to the ends."""
        order = [item.image_id for item in self.items(owner, board_id)]
        if image_id not in order:
            raise NotFound(f"image {image_id!r} is not on this board")
        index = order.index(image_id)
        target = max(0, min(len(order) - 1, index + offset))
        order.insert(target, order.pop(index))
        self.store.reorder(board_id, order)

    def set_item_note(self, owner: str, board_id: str, image_id: str, note: str) -> None:
        self.get(owner, board_id)
        self.store.set_item_note(board_id, image_id, clean_text(note, "note", required=False, max_chars=500))

    def items(self, owner: str, board_id: str) -> list[BoardItem]:
        self.get(owner, board_id)
        return self.store.items(board_id)

    def images(self, owner: str, board_id: str) -> list[tuple[BoardItem, ImageRecord]]:
        """The board's items with their records, in board order (images made private since are skipped)."""
        items = self.items(owner, board_id)
        records = {r.id: r for r in self.studio.storage.index.get_many([i.image_id for i in items])}
        pairs = []
        for item in items:
            record = records.get(item.image_id)
            if record is not None and visible_to(record, owner):
                pairs.append((item, self.studio.storage.with_path(record)))
        return pairs

    # -- exports ------------------------------------------------------------------------------

    def collage(self, owner: str, board_id: str, *, cell: int = 256, columns: int | None = None,
                output_format: str = "png") -> bytes:
        """The whole board as one image: a title bar, then the images in a grid, in board order."""
        board = self.get(owner, board_id)
        pairs = self.images(owner, board_id)
        if not pairs:
            raise InvalidRequest(f"the board {board.name!r} has no images yet")
        read = self.studio.storage.read_thumbnail if cell <= THUMBNAIL_SIDE else self.studio.image_bytes
        pictures = [open_checked(read(record), "board image") for _item, record in pairs]
        canvas = render_collage(pictures, title=board.name, cell=cell, columns=columns)
        buffer = io.BytesIO()
        if output_format == "jpeg":
            canvas.save(buffer, format="JPEG", quality=90)
        else:
            canvas.save(buffer, format="PNG", optimize=False)
        return buffer.getvalue()

    def export_zip(self, owner: str, board_id: str) -> bytes:
        """The board's images in order with manifest.csv/json (position and note columns), board.json,
        and collage.png."""
        board = self.get(owner, board_id)
        pairs = self.images(owner, board_id)
        if not pairs:
            raise InvalidRequest(f"the board {board.name!r} has no images yet")
        notes = {record.id: item.note for item, record in pairs}
        description = {"board": {"name": board.name, "notes": board.notes, "created_at": board.created_at,
                                 "updated_at": board.updated_at},
                       "images": [{"position": item.position, "id": record.id, "note": item.note}
                                  for item, record in pairs]}
        return build_zip(
            [record for _item, record in pairs], self.studio.image_bytes,
            extra_columns=lambda index, record: {"position": index + 1, "note": notes.get(record.id, "")},
            extra_files={"board.json": json.dumps(description, indent=2, ensure_ascii=False),
                         "collage.png": self.collage(owner, board_id)})


def _clean_notes(notes: str | None) -> str:
    # Notes are free text with line breaks; only control characters other than newlines are dropped.
    text = (notes or "").replace("\r\n", "\n")
    if len(text) > MAX_NOTES_CHARS:
        raise InvalidRequest(f"notes are {len(text):,} characters; the limit is {MAX_NOTES_CHARS:,}")
    return "\n".join(clean_text(line, "notes", required=False) for line in text.split("\n")).strip()


def render_collage(pictures: list[Image.Image], *, title: str = "", cell: int = 256, gap: int = 8,
                   columns: int | None = None) -> Image.Image:
    """Pictures in a grid of ``cell``-sized squares (each fitted inside, aspect kept, centred)."""
    if not pictures:
        raise InvalidRequest("a collage needs at least one image")
    if not 32 <= cell <= 1024:
        raise InvalidRequest("collage cell size must be 32-1024 pixels")
    count = len(pictures)
    columns = max(1, min(count, columns or math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    title_height = 48 if title else 0
    width = columns * cell + (columns + 1) * gap
    height = title_height + rows * cell + (rows + 1) * gap
    canvas = Image.new("RGB", (width, height), COLLAGE_BACKGROUND)
    if title:
        draw = ImageDraw.Draw(canvas)
        draw.text((gap * 2, title_height // 2), title, fill=COLLAGE_TEXT, font=_font(22), anchor="lm")
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        fitted = ImageOps.contain(picture.convert("RGBA"), (cell, cell), Image.Resampling.LANCZOS)
        x = gap + column * (cell + gap) + (cell - fitted.width) // 2
        y = title_height + gap + row * (cell + gap) + (cell - fitted.height) // 2
        canvas.paste(fitted, (x, y), fitted)
    return canvas


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the bitmap font has one size
        return ImageFont.load_default()


__all__ = ["Board", "BoardItem", "BoardStore", "Boards", "SQLiteBoardStore", "render_collage"]

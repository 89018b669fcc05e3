"""The history index: one SQLite database (WAL) holding every image's record, the audit log of
generations, budget reservations and mood boards.

Each thread gets its own connection; writers take the lock up front (``BEGIN IMMEDIATE``) and wait
up to ``busy_timeout`` for one another, so several workers and the UI never see "database is
locked". A later backend (PostgreSQL) implements the same methods.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from studio import migrations
from studio.types import ImageRecord

IMAGE_COLUMNS = (
    "id", "owner", "path", "thumb_path", "sha256", "width", "height", "format", "size_bytes", "provider",
    "model", "mode", "prompt", "user_prompt", "negative_prompt", "style", "params", "seed", "category",
    "tags", "cost", "generation_time", "created_at", "day", "status", "parent_id", "request_id", "cache_key",
    "shared",
)
RESERVATION_TTL_SECONDS = 3600  # a reservation left by a crashed process stops counting after this


@dataclass
class HistoryQuery:
    owner: str | None = "local"  # None: every owner (admin tools only)
    text: str | None = None
    provider: str | None = None
    model: str | None = None
    tag: str | None = None
    category: str | None = None
    mode: str | None = None
    date_from: str | None = None  # YYYY-MM-DD, inclusive
    date_to: str | None = None  # YYYY-MM-DD, inclusive
    parent_id: str | None = None
    include_shared: bool = False
    limit: int = 50
    offset: int = 0


@dataclass
class Page:
    items: list[ImageRecord]
    total: int
    limit: int
    offset: int
    extra: dict[str, Any] = field(default_factory=dict)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def record_from_row(row: sqlite3.Row) -> ImageRecord:
    data = dict(row)
    data.pop("day", None)
    data["params"] = json.loads(data["params"] or "{}")
    data["tags"] = json.loads(data["tags"] or "[]")
    data["shared"] = bool(data["shared"])
    return ImageRecord(**data)


class SQLiteIndex:
    def __init__(self, path: Path, busy_timeout_ms: int = 30000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The tables are the migrations' (studio/migrations/versions): a new file gets the newest
        # schema, an older one is upgraded in place, a newer one is refused (SchemaTooNew).
        migrations.ensure_current(self.connection(), self.path, self.busy_timeout_ms)

    # -- connections and transactions ---------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the write lock from the start."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- images -------------------------------------------------------------------------------

    def insert_images(self, records: list[ImageRecord], generation: dict[str, Any] | None = None) -> None:
        """Insert records (and the audit row of the request that made them) in one transaction."""
        with self.write() as conn:
            for record in records:
                self._insert_image(conn, record)
            if generation is not None:
                self._insert_generation(conn, generation)

    def _insert_image(self, conn: sqlite3.Connection, record: ImageRecord) -> None:
        values = {
            **{name: getattr(record, name, None) for name in IMAGE_COLUMNS if name != "day"},
            "day": record.created_at[:10],
            "params": json.dumps(record.params, sort_keys=True, default=str),
            "tags": json.dumps(record.tags),
            "shared": int(record.shared),
        }
        placeholders = ", ".join(f":{name}" for name in IMAGE_COLUMNS)
        conn.execute(f"INSERT INTO images ({', '.join(IMAGE_COLUMNS)}) VALUES ({placeholders})", values)
        conn.executemany("INSERT OR IGNORE INTO image_tags (image_id, tag) VALUES (?, ?)",
                         [(record.id, tag) for tag in record.tags])

    def get(self, image_id: str) -> ImageRecord | None:
        row = self.connection().execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return record_from_row(row) if row else None

    def get_many(self, image_ids: list[str]) -> list[ImageRecord]:
        if not image_ids:
            return []
        marks = ", ".join("?" for _ in image_ids)
        rows = self.connection().execute(f"SELECT * FROM images WHERE id IN ({marks})", image_ids).fetchall()
        by_id = {row["id"]: record_from_row(row) for row in rows}
        return [by_id[i] for i in image_ids if i in by_id]

    def images_for_request(self, request_id: str) -> list[ImageRecord]:
        """The images a request saved (in the order it saved them); empty when it saved none."""
        rows = self.connection().execute(
            "SELECT * FROM images WHERE request_id = ? ORDER BY rowid", (request_id,)).fetchall()
        return [record_from_row(row) for row in rows]

    def by_cache_key(self, owner: str, cache_key: str) -> list[ImageRecord]:
        rows = self.connection().execute(
            "SELECT * FROM images WHERE owner = ? AND cache_key = ? AND status = 'completed' "
            "ORDER BY created_at, seed, id", (owner, cache_key)).fetchall()
        records = [record_from_row(row) for row in rows]
        if not records:
            return []
        # Several identical requests may have run before the cache existed: use the first one's images.
        first_request = records[0].request_id
        return [r for r in records if r.request_id == first_request]

    def query(self, q: HistoryQuery) -> Page:
        where: list[str] = []
        args: list[Any] = []
        if q.owner is not None:
            if q.include_shared:
                where.append("(owner = ? OR shared = 1)")
            else:
                where.append("owner = ?")
            args.append(q.owner)
        if q.text:
            pattern = f"%{_escape_like(q.text.strip())}%"
            where.append("(prompt LIKE ? ESCAPE '\\' OR user_prompt LIKE ? ESCAPE '\\' OR id = ?)")
            args += [pattern, pattern, q.text.strip()]
        for column in ("provider", "model", "category", "mode", "parent_id"):
            value = getattr(q, column)
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if q.tag:
            where.append("id IN (SELECT image_id FROM image_tags WHERE tag = ?)")
            args.append(q.tag)
        if q.date_from:
            where.append("day >= ?")
            args.append(q.date_from)
        if q.date_to:
            where.append("day <= ?")
            args.append(q.date_to)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        conn = self.connection()
        total = conn.execute(f"SELECT COUNT(*) FROM images {clause}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT * FROM images {clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            [*args, int(q.limit), int(q.offset)]).fetchall()
        return Page([record_from_row(row) for row in rows], total, q.limit, q.offset)

    def delete_image(self, image_id: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def update_image(self, image_id: str, **fields: Any) -> None:
        allowed = {"category", "tags", "shared", "status"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        with self.write() as conn:
            if "tags" in fields:
                tags = list(dict.fromkeys(fields["tags"]))
                conn.execute("DELETE FROM image_tags WHERE image_id = ?", (image_id,))
                conn.executemany("INSERT INTO image_tags (image_id, tag) VALUES (?, ?)",
                                 [(image_id, t) for t in tags])
                fields["tags"] = json.dumps(tags)
            if "shared" in fields:
                fields["shared"] = int(bool(fields["shared"]))
            assignments = ", ".join(f"{name} = ?" for name in fields)
            conn.execute(f"UPDATE images SET {assignments} WHERE id = ?", [*fields.values(), image_id])

    def count_params_naming(self, text: str) -> int:
        """How many images hold ``text`` as a string value in their params (e.g. the file store key of
        an edit's kept input image, which several edits may share)."""
        pattern = f"%{_escape_like(json.dumps(text))}%"
        row = self.connection().execute("SELECT COUNT(*) FROM images WHERE params LIKE ? ESCAPE '\\'",
                                        (pattern,)).fetchone()
        return int(row[0])

    def all_paths(self) -> dict[str, str]:
        """path -> id for every image (repair compares this with the file store)."""
        rows = self.connection().execute("SELECT path, id FROM images").fetchall()
        return {row["path"]: row["id"] for row in rows}

    def has_path(self, path: str) -> bool:
        return self.connection().execute("SELECT 1 FROM images WHERE path = ?", (path,)).fetchone() is not None

    def all_thumbs(self) -> dict[str, str]:
        rows = self.connection().execute("SELECT id, thumb_path FROM images").fetchall()
        return {row["id"]: row["thumb_path"] for row in rows}

    # -- the audit log and spend ---------------------------------------------------------------

    def _insert_generation(self, conn: sqlite3.Connection, generation: dict[str, Any]) -> None:
        columns = ("id", "owner", "created_at", "day", "provider", "model", "mode", "prompt", "n", "status",
                   "error_kind", "error", "cost", "estimated_cost", "duration", "cached")
        values = {name: generation.get(name) for name in columns}
        values["day"] = values["day"] or values["created_at"][:10]
        values["cached"] = int(bool(values.get("cached")))
        for name, default in (("cost", 0.0), ("estimated_cost", 0.0), ("duration", 0.0)):
            values[name] = values[name] or default
        conn.execute(f"INSERT INTO generations ({', '.join(columns)}) VALUES "
                     f"({', '.join(':' + c for c in columns)})", values)

    def log_generation(self, generation: dict[str, Any]) -> None:
        with self.write() as conn:
            self._insert_generation(conn, generation)

    def generations(self, *, day_from: str | None = None, owner: str | None = None,
                    limit: int = 10000) -> list[dict[str, Any]]:
        where, args = [], []
        if day_from:
            where.append("day >= ?")
            args.append(day_from)
        if owner:
            where.append("owner = ?")
            args.append(owner)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.connection().execute(
            f"SELECT * FROM generations {clause} ORDER BY created_at DESC LIMIT ?", [*args, limit]).fetchall()
        return [dict(row) for row in rows]

    def spent_on(self, day: str, owner: str | None = None) -> float:
        sql = "SELECT COALESCE(SUM(cost), 0) FROM generations WHERE day = ?"
        args: list[Any] = [day]
        if owner:
            sql += " AND owner = ?"
            args.append(owner)
        return float(self.connection().execute(sql, args).fetchone()[0])

    def reserve(self, reservation_id: str, day: str, amount: float, limit: float | None, *,
                hold_seconds: float = RESERVATION_TTL_SECONDS, started_by: dict[str, Any] | None = None,
                request: dict[str, Any] | None = None) -> tuple[bool, float]:
        """Atomically set ``amount`` (USD) aside if ``day``'s spend + open reservations + amount stays
        within ``limit`` (``None``: no budget, always accepted). The reservation counts until
        ``finish_generation``/``release``/``book_interrupted`` removes it.

        ``started_by`` (``{"pid", "host", "process_started"}``) and ``request`` (the audit row's
        fields: owner, provider, model, mode, prompt, n, estimate) record a request in flight: if its
        process dies, ``Storage.book_interrupted`` books it at ``amount`` ("interrupted, possibly
        billed"); it never expires by itself. A reservation without them (made by older code) stops
        counting ``hold_seconds`` after it was made: give at least the longest the request can run.

        Every open reservation counts, whatever day it was made: one made before midnight is booked
        on the day its request finishes. Returns (accepted, committed) where committed is spend plus
        open reservations before this one."""
        started_by = started_by or {}
        with self.write() as conn:
            now = time.time()
            conn.execute("DELETE FROM reservations WHERE request IS NULL AND COALESCE(expires_at, created_at + ?) < ?",
                         (RESERVATION_TTL_SECONDS, now))
            spent = conn.execute("SELECT COALESCE(SUM(cost), 0) FROM generations WHERE day = ?",
                                 (day,)).fetchone()[0]
            held = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM reservations").fetchone()[0]
            committed = float(spent) + float(held)
            if limit is not None and committed + amount > limit + 1e-9:
                return False, committed
            conn.execute(
                "INSERT INTO reservations (id, day, amount, created_at, expires_at, pid, host, process_started, "
                "request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (reservation_id, day, amount, now, now + max(hold_seconds, 0.0), started_by.get("pid"),
                 started_by.get("host"), started_by.get("process_started"),
                 json.dumps(request, default=str) if request is not None else None))
            return True, committed

    def open_requests(self) -> list[dict[str, Any]]:
        """Every open reservation (requests in flight, by this process or any other), oldest first."""
        rows = self.connection().execute("SELECT * FROM reservations ORDER BY created_at").fetchall()
        return [dict(row) for row in rows]

    def book_interrupted(self, reservation_id: str, generation: dict[str, Any]) -> bool:
        """Replace an open reservation by its audit row ``generation`` (an interrupted request booked
        at what it held), atomically; False, and nothing written, when the reservation is gone (its
        request finished, or another process booked it first)."""
        with self.write() as conn:
            if conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,)).rowcount != 1:
                return False
            if conn.execute("SELECT 1 FROM generations WHERE id = ?", (generation["id"],)).fetchone() is None:
                self._insert_generation(conn, generation)
            return True

    def release(self, reservation_id: str, *, untracked_only: bool = False) -> None:
        """Drop a reservation. ``untracked_only``: only one made without a record of its process and
        request (older code); a tracked one is left for ``Storage.book_interrupted``."""
        with self.write() as conn:
            conn.execute("DELETE FROM reservations WHERE id = ?" + (" AND request IS NULL" if untracked_only else ""),
                         (reservation_id,))

    def finish_generation(self, reservation_id: str | None, records: list[ImageRecord],
                          generation: dict[str, Any]) -> None:
        """Record a finished request: images, audit row, the reservation released and its pending
        writes cleared, atomically."""
        with self.write() as conn:
            for record in records:
                self._insert_image(conn, record)
            self._insert_generation(conn, generation)
            if reservation_id:
                conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            conn.execute("DELETE FROM pending_writes WHERE request_id = ?", (generation["id"],))

    # -- write intents: files about to be written, so a crash can be finished cheaply on restart --

    def add_pending(self, request_id: str, keys: list[str], owner: str | None = None) -> None:
        """Record that ``keys`` are about to be written for ``owner`` (kept here because the files
        themselves do not name their owner)."""
        import os
        import socket

        with self.write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO pending_writes (key, request_id, pid, host, created_at, owner) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(key, request_id, os.getpid(), socket.gethostname(), time.time(), owner) for key in keys])

    def pending(self) -> list[dict[str, Any]]:
        rows = self.connection().execute("SELECT * FROM pending_writes ORDER BY created_at").fetchall()
        return [dict(row) for row in rows]

    def clear_pending(self, keys: list[str]) -> None:
        with self.write() as conn:
            conn.executemany("DELETE FROM pending_writes WHERE key = ?", [(k,) for k in keys])

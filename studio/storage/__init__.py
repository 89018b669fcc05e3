"""Storage: the file store plus the index, kept in agreement.

The order of writes is what keeps nothing lost: image files (and thumbnails) are written atomically
first, then their rows are committed in one transaction. A crash in between leaves a file without a
row, which ``repair`` finds and re-indexes from the metadata embedded in the file. Deleting moves the
file to ``trash/`` first, removes the row, then purges the file, so a crash never leaves a row without
its file.

Files live under the data directory (``LocalFileStore``) or, with ``STUDIO_STORAGE_URL=s3://bucket/prefix``,
in S3-compatible object storage (``studio.storage.s3.S3FileStore``); ``file_store_for`` chooses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import FileGone
from studio.imaging import EXTENSIONS, open_checked, thumbnail_bytes
from studio.storage.files import TMP_MARKER, FileStore, LocalFileStore, StorageError
from studio.storage.index import INTERRUPTED_STATUS, HistoryQuery, Page, SQLiteIndex
from studio.storage.liveness import (DEFAULT_STALE_SECONDS, Liveness, ProcessBeat, process_alive,
                                     process_started, this_process)
from studio.types import ImageRecord

log = logging.getLogger(__name__)

IMAGES_PREFIX = "images"
THUMBS_PREFIX = "thumbs"
TRASH_PREFIX = "trash"
ORPHANS_PREFIX = "orphans"
INTERRUPTED = INTERRUPTED_STATUS  # audit-log status (and error kind) of a request whose process died in flight
INTERRUPTED_NOTE = ("interrupted, possibly billed: its process stopped while the provider had the request; "
                    "booked at the most it can have cost")


def slug(text: str, default: str = "uncategorized") -> str:
    """A safe single path segment: no separators, no dots at the start, bounded length."""
    value = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:48]
    return value or default


@dataclass
class RepairReport:
    orphan_files: list[str] = field(default_factory=list)  # files with no row
    reindexed: list[str] = field(default_factory=list)  # orphans restored from their metadata
    quarantined: list[str] = field(default_factory=list)  # orphans without metadata, moved to orphans/
    missing_files: list[str] = field(default_factory=list)  # rows whose file is gone (ids)
    removed_rows: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    restored_from_trash: list[str] = field(default_factory=list)
    purged_trash: list[str] = field(default_factory=list)
    thumbnails_rebuilt: list[str] = field(default_factory=list)
    # Requests whose process died while the provider had them (request ids): booked, with ``fixed``
    # (or at this process's start), as "interrupted, possibly billed" at the most they can have cost.
    interrupted: list[str] = field(default_factory=list)
    fixed: bool = False

    @property
    def clean(self) -> bool:
        return not (self.orphan_files or self.missing_files or self.temp_files or self.restored_from_trash
                    or self.purged_trash or self.thumbnails_rebuilt or self.interrupted)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {"clean": self.clean}


def file_store_for(settings) -> FileStore:
    """The file store ``settings`` (a ``Settings``) ask for: S3 for ``storage_url`` s3://bucket/prefix
    (its bucket checked now, so a wrong setting stops the start instead of failing a paid request at
    its save), else files under ``settings.home``. Raises ``SettingsError`` for a malformed URL and
    ``StorageError`` for a bucket that is missing or cannot be reached."""
    url = (settings.storage_url or "").strip()
    if not url:
        return LocalFileStore(settings.home)
    from studio.config import SettingsError
    from studio.storage.s3 import S3FileStore, parse_s3_url

    try:
        location = parse_s3_url(url)
    except ValueError as exc:
        raise SettingsError(f"the storage URL (STUDIO_STORAGE_URL) {url[:80]!r} is not valid: {exc}") from None
    store = S3FileStore(location)
    store.check()
    return store


class Storage:
    """``stale_after`` (seconds, ``STUDIO_JOB_STALE_SECONDS``): how long a process on another machine
    that stopped refreshing its heartbeat is still trusted to be running its requests in flight."""

    def __init__(self, home: Path, files: FileStore | None = None, index: SQLiteIndex | None = None, *,
                 stale_after: float = DEFAULT_STALE_SECONDS):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.files = files or LocalFileStore(self.home)
        self.index = index or SQLiteIndex.for_home(self.home)
        self.liveness = Liveness(self.index, stale_after)
        self.beat = ProcessBeat(self.liveness)
        # Requests booked as interrupted when this process started (``recover_interrupted``), until
        # the next ``repair`` reports them.
        self.interrupted_at_start: list[str] = []

    def close(self) -> None:
        """Stop this process's heartbeat here; close the index and the file store's connections (S3's
        pooled HTTP connections)."""
        self.beat.close()
        self.index.close()
        close_files = getattr(self.files, "close", None)
        if close_files is not None:
            close_files()

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def image_key(record: ImageRecord) -> str:
        year, month, day = record.created_at[:4], record.created_at[5:7], record.created_at[8:10]
        ext = EXTENSIONS[record.format]
        return f"{IMAGES_PREFIX}/{slug(record.category)}/{year}/{month}/{day}/{record.id}.{ext}"

    @staticmethod
    def thumb_key(record: ImageRecord) -> str:
        return f"{THUMBS_PREFIX}/{record.created_at[:4]}/{record.created_at[5:7]}/{record.id}.webp"

    def abs_path(self, record: ImageRecord) -> str | None:
        """The image's file on this machine; None when the store has no local files (S3)."""
        path = self.files.local_path(record.path)
        return str(path) if path else None

    def location(self, record: ImageRecord) -> str:
        """Where the image is, for the CLI and logs: its file, or ``s3://bucket/prefix/key``."""
        return self.files.location_of(record.path)

    def image_url(self, record: ImageRecord, expires: int = 300, *, thumbnail: bool = False) -> str | None:
        """A link a browser may fetch the image (or its thumbnail) from for ``expires`` seconds: a
        presigned GET on S3; None for local files, which the server streams itself."""
        key = record.thumb_path if thumbnail and record.thumb_path else record.path
        return self.files.url(key, expires)

    def with_path(self, record: ImageRecord) -> ImageRecord:
        record.abs_path = self.abs_path(record)
        return record

    # -- writing ------------------------------------------------------------------------------

    def write_image_files(self, record: ImageRecord, data: bytes, thumbnail: bytes) -> None:
        """Write the thumbnail and the image (atomically each) and fill in the record's file facts."""
        record.sha256 = hashlib.sha256(data).hexdigest()
        record.size_bytes = len(data)
        record.path = self.image_key(record)
        record.thumb_path = self.thumb_key(record)
        self.files.put(record.thumb_path, thumbnail)
        self.files.put(record.path, data)
        self.with_path(record)

    def read(self, record: ImageRecord) -> bytes:
        """The image file's bytes. Raises ``FileGone`` (a FileNotFoundError) when its file or object
        was deleted behind the studio's back, ``StorageError`` when the store cannot be reached."""
        try:
            return self.files.get(record.path)
        except FileNotFoundError:
            raise FileGone(f"the file of image {record.id} is gone from the image store (deleted outside the "
                           f"studio); `studio repair` lists such images") from None

    def read_thumbnail(self, record: ImageRecord) -> bytes:
        # One read, not a check and a read: on S3 each is a request.
        if record.thumb_path:
            try:
                return self.files.get(record.thumb_path)
            except FileNotFoundError:
                pass  # a thumbnail repair rebuilds; the image itself serves meanwhile
        return self.read(record)

    # -- reading ------------------------------------------------------------------------------

    def get(self, image_id: str) -> ImageRecord | None:
        record = self.index.get(image_id)
        return self.with_path(record) if record else None

    def query(self, q: HistoryQuery) -> Page:
        page = self.index.query(q)
        for record in page.items:
            self.with_path(record)
        return page

    # -- deleting -----------------------------------------------------------------------------

    def delete(self, record: ImageRecord) -> None:
        trash_key = f"{TRASH_PREFIX}/{record.path}"
        moved = self.files.exists(record.path)
        if moved:
            self.files.move(record.path, trash_key)
        try:
            self.index.delete_image(record.id)
        except BaseException:
            if moved:
                self.files.move(trash_key, record.path)
            raise
        self.files.delete(trash_key)
        if record.thumb_path:
            self.files.delete(record.thumb_path)

    # -- repair -------------------------------------------------------------------------------

    def repair(self, fix: bool = False) -> RepairReport:
        """Compare the index with the files. With ``fix``: re-index orphans that carry our metadata
        and whose owner is known (from the write intent; older files also name it inside), quarantine
        the rest, drop rows whose file is gone, restore or purge the trash, rebuild
        missing thumbnails, and delete temp files from interrupted writes."""
        from studio.metadata import read_metadata

        report = RepairReport(fixed=fix)
        by_path = self.index.all_paths()
        intended_owner = {intent["key"]: intent.get("owner") for intent in self.index.pending()}
        for key in list(self.files.keys(TRASH_PREFIX)):
            original = key[len(TRASH_PREFIX) + 1:]
            if original in by_path:  # crash between moving to trash and deleting the row
                report.restored_from_trash.append(original)
                if fix:
                    self.files.move(key, original)
            else:
                report.purged_trash.append(key)
                if fix:
                    self.files.delete(key)
        # Each prefix is listed once and rows are checked against the listing: on S3 a check per
        # row would be one request per image.
        stored: dict[str, set[str]] = {}
        for prefix in (IMAGES_PREFIX, THUMBS_PREFIX):
            stored[prefix] = set()
            for key in list(self.files.keys(prefix)):
                if TMP_MARKER in key:
                    report.temp_files.append(key)
                    if fix:
                        self.files.delete(key)
                    continue
                stored[prefix].add(key)
                if prefix == IMAGES_PREFIX and key not in by_path:
                    report.orphan_files.append(key)
                    if fix:
                        self._adopt_orphan(key, read_metadata, report, owner=intended_owner.get(key))
        thumbs = self.index.all_thumbs()
        for path, image_id in by_path.items():
            # (a row written since the listing began has its file: files are written first)
            if path not in stored[IMAGES_PREFIX] and not self.files.exists(path):
                report.missing_files.append(image_id)
                if fix:
                    record = self.index.get(image_id)
                    self.index.delete_image(image_id)
                    if record and record.thumb_path:
                        self.files.delete(record.thumb_path)
                    report.removed_rows.append(image_id)
                continue
            thumb = thumbs.get(image_id)
            if thumb and thumb not in stored[THUMBS_PREFIX] and not self.files.exists(thumb):
                report.thumbnails_rebuilt.append(image_id)
                if fix:
                    image = open_checked(self.files.get(path), "stored image")
                    self.files.put(thumb, thumbnail_bytes(image))
        found = self.book_interrupted() if fix else [row["id"] for row in self.interrupted_requests()]
        report.interrupted, self.interrupted_at_start = [*self.interrupted_at_start, *found], []
        return report

    def interrupted_requests(self) -> list[dict]:
        """Open reservations (``SQLiteIndex.open_requests``) of requests whose process is gone
        (``studio.storage.liveness``): on this machine, its pid is not running or runs another
        program (its start time differs); on another machine, its heartbeat is older than
        ``stale_after`` (a row with no heartbeat, made by older code: once its hold has passed). A
        live request is never among them. Cheap when nothing is open: one query of the open rows;
        this process's own rows are not looked up in ``/proc``, and heartbeats are read only when
        another machine has rows open."""
        import time

        rows = [row for row in self.index.open_requests() if row.get("request") is not None]  # older code's expire
        if not rows:
            return []
        now = time.time()
        beats = self.liveness.heartbeats() if any(not self.liveness.is_local(r["host"]) for r in rows) else {}
        gone = []
        for row in rows:
            alive = self.liveness.alive(row["host"], row["pid"], row["process_started"], now=now, beats=beats)
            if alive is None:
                alive = (row["expires_at"] or 0.0) >= now
            if not alive:
                gone.append(row)
        return gone

    def start_request(self, request_id: str) -> dict:
        """Called as this process is about to record request ``request_id`` in flight: books what
        dead processes left in flight (``book_interrupted``), keeps this process's heartbeat fresh
        until ``end_request`` (so other machines know it runs), and returns who it is
        (``liveness.this_process``) for ``SQLiteIndex.reserve``'s ``started_by``."""
        self.book_interrupted()
        self.beat.begin(request_id)
        return this_process()

    def end_request(self, request_id: str) -> None:
        """The request ``start_request`` began has ended (finished, failed, or refused before it was
        recorded): with none left in flight, the heartbeat stops."""
        self.beat.end(request_id)

    def book_interrupted(self) -> list[str]:
        """Book every request whose process died in flight (``interrupted_requests``) in the audit log
        as status "interrupted" at the amount it held (its bound: the provider may have billed it), so
        it shows in stats and counts against the budget from then on. Returns their request ids."""
        from datetime import datetime, timezone

        booked = []
        for row in self.interrupted_requests():
            try:
                request = json.loads(row["request"])
            except ValueError:
                log.exception("request %s: its in-flight record is unreadable; booking it without details", row["id"])
                request = {}
            now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
            generation = {
                "id": row["id"], "owner": request.get("owner") or "unknown", "created_at": now, "day": row["day"],
                "provider": request.get("provider") or "unknown", "model": request.get("model") or "unknown",
                "mode": request.get("mode") or "unknown", "prompt": request.get("prompt") or "",
                "n": request.get("n") or 0, "status": INTERRUPTED, "error_kind": INTERRUPTED,
                "error": INTERRUPTED_NOTE, "cost": float(row["amount"] or 0.0),
                "estimated_cost": float(request.get("estimate") or 0.0), "duration": 0.0}
            if self.index.book_interrupted(row["id"], generation):
                log.warning("request %s (%s/%s) was interrupted in flight: booked $%.6f as possibly billed",
                            row["id"], generation["provider"], generation["model"], generation["cost"])
                booked.append(row["id"])
        return booked

    def recover_interrupted(self) -> list[str]:
        """Finish writes that a dead process started: each file it finished is indexed from its
        embedded metadata (with an audit row carrying its cost); a file it never finished is
        forgotten. Then every request a dead process had in flight and did not save is booked as
        interrupted (``book_interrupted``). Cheap: only the recorded intents and open reservations
        are looked at, not the whole file store."""
        import time

        from studio.metadata import read_metadata

        adopted: list[str] = []
        done_keys: list[str] = []
        recovered_requests: dict[str, list[ImageRecord]] = {}
        dead_requests: set[str] = set()
        intents = self.index.pending()
        now = time.time()
        beats = self.liveness.heartbeats() if any(not self.liveness.is_local(i["host"]) for i in intents) else {}
        # Intents record no start time; their request's reservation does (a pid alone may be reused).
        started = {row["id"]: row["process_started"] for row in self.index.open_requests()} if intents else {}
        for intent in intents:
            if self._writer_alive(intent, started.get(intent["request_id"]), now, beats):
                continue  # still being written by a live process, here or on another machine
            key = intent["key"]
            done_keys.append(key)
            dead_requests.add(intent["request_id"])
            self.files.discard_partial(key)
            if not key.startswith(IMAGES_PREFIX + "/") or self.index.has_path(key):
                continue
            if not self.files.exists(key):
                continue
            report = RepairReport(fixed=True)
            self._adopt_orphan(key, read_metadata, report, owner=intent.get("owner"))
            adopted += report.reindexed
            if report.reindexed:
                record = self.index.get(report.reindexed[0])
                recovered_requests.setdefault(intent["request_id"], []).append(record)
        indexed_thumbs = set(self.index.all_thumbs().values()) if done_keys else set()
        for key in done_keys:
            if key.startswith(THUMBS_PREFIX + "/") and key not in indexed_thumbs:
                self.files.delete(key)  # its image never landed
        for request_id, records in recovered_requests.items():
            first = records[0]
            self.index.log_generation({
                "id": request_id, "owner": first.owner, "created_at": first.created_at, "day": first.created_at[:10],
                "provider": first.provider, "model": first.model, "mode": first.mode, "prompt": first.user_prompt,
                "n": len(records), "status": "recovered", "cost": sum(r.cost for r in records),
                "estimated_cost": sum(r.cost for r in records), "duration": first.generation_time})
        for request_id in dead_requests:
            if request_id in recovered_requests:
                self.index.release(request_id)  # what it spent is booked above
            else:  # paid, its images lost: booked as interrupted below (older code's untracked hold: dropped)
                self.index.release(request_id, untracked_only=True)
        if done_keys:
            self.index.clear_pending(done_keys)
        self.interrupted_at_start += self.book_interrupted()
        return adopted

    def _writer_alive(self, intent: dict, started: str | None, now: float, beats: dict) -> bool:
        """Is the process that recorded the write intent ``intent`` still running? On this machine
        by its pid and ``started`` (its request's reservation's start time; None: unknown, the pid
        alone); on another by its heartbeat; with no heartbeat (older code) for ``stale_after``
        seconds after the intent was recorded."""
        if self.liveness.is_local(intent["host"]):
            return process_alive(int(intent["pid"]), started)
        alive = self.liveness.alive(intent["host"], intent["pid"], started, now=now, beats=beats)
        if alive is None:
            alive = float(intent["created_at"] or 0.0) >= now - self.liveness.stale_after
        return alive

    def _adopt_orphan(self, key: str, read_metadata, report: RepairReport, owner: str | None = None) -> None:
        """Index a stored file nobody indexed, or move it to the orphans folder. ``owner`` comes from
        the write intent; without one only files written before owners left the metadata are adopted."""
        data = self.files.get(key)
        try:
            meta = read_metadata(data)
        except Exception:
            meta = None
        studio_json = (meta or {}).get("studio") or {}
        try:
            record = record_from_metadata(studio_json, key, data, meta, owner=owner)
        except (KeyError, TypeError, ValueError):
            record = None
        if record is None or self.index.get(record.id) is not None:
            target = f"{ORPHANS_PREFIX}/{key}"
            self.files.move(key, target)
            report.quarantined.append(target)
            return
        image = open_checked(data, "orphan image")
        self.files.put(record.thumb_path, thumbnail_bytes(image))
        self.index.insert_images([record])
        report.reindexed.append(record.id)


def record_from_metadata(studio_json: dict, key: str, data: bytes, meta: dict | None,
                         owner: str | None = None) -> ImageRecord | None:
    """Rebuild an index row from the JSON embedded in an image file; None when it is not ours.

    ``owner`` is who the write intent says the file belongs to; files no longer carry it (only
    files written by older versions do). Without either the owner is unknown and nothing is
    guessed: None (the caller quarantines the file rather than give it to the wrong person)."""
    owner = owner or studio_json.get("owner")
    if not studio_json.get("id") or not studio_json.get("created_at") or not owner:
        return None
    fields = {name: studio_json[name] for name in ImageRecord.__dataclass_fields__
              if name in studio_json
              and name not in ("owner", "path", "abs_path", "sha256", "size_bytes", "thumb_path", "width", "height")}
    record = ImageRecord(
        **{"status": "completed", **fields},
        owner=owner,
        path=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=int(meta["width"]) if meta else int(studio_json["width"]),
        height=int(meta["height"]) if meta else int(studio_json["height"]),
    )
    record.thumb_path = Storage.thumb_key(record)
    if not isinstance(record.params, dict):
        record.params = json.loads(record.params)
    return record


__all__ = ["Storage", "process_alive", "process_started", "this_process", "HistoryQuery", "Page", "RepairReport", "SQLiteIndex", "LocalFileStore", "StorageError",
           "file_store_for", "slug"]

"""Storage keeps index and files in agreement: atomic writes, crash windows, repair.

The tests that use ``echo_studio`` run once per file store (``storage_url``: files in the data
directory, and S3 on moto's server); they reach the stored bytes through ``studio.storage.files``."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from studio.storage.files import LocalFileStore
from studio.types import GenerationRequest
from tests.pg_server import query_studio_db

from tests.s3_server import s3_server, s3_storage_url, storage_url  # noqa: E402,F401

# Every test here runs once per database back end (tests/pg_server.py): embedded SQLite, PostgreSQL.
pytestmark = pytest.mark.usefixtures("database_url")


@pytest.fixture
def echo_studio(storage_url, echo_studio):
    """The conftest's echo studio, built after ``storage_url`` chose its file store."""
    return echo_studio


def gen(studio, **kw):
    return studio.generate(GenerationRequest(prompt=kw.pop("prompt", "a tower"), provider="echo", **kw))


def test_atomic_put_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    store = LocalFileStore(tmp_path)
    store.put("a/b.bin", b"first")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("studio.storage.files.os.replace", broken_replace)
    with pytest.raises(OSError):
        store.put("a/b.bin", b"second")
    assert store.get("a/b.bin") == b"first"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin"]  # temp file cleaned up


def test_keys_cannot_escape_the_data_directory(tmp_path):
    store = LocalFileStore(tmp_path / "home")
    with pytest.raises(ValueError):
        store.put("../outside.png", b"x")
    assert not (tmp_path / "outside.png").exists()


def test_crash_between_file_and_row_is_repaired_from_embedded_metadata(echo_studio, studio_home, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")  # not a StudioError: simulates the process dying

    monkeypatch.setattr(echo_studio.storage.index, "finish_generation", crash)
    with pytest.raises(BaseException):
        gen(echo_studio, n=2, seed=3, tags=["kept"])
    monkeypatch.undo()
    assert query_studio_db(studio_home, "SELECT COUNT(*) FROM images") == [(0,)]
    report = echo_studio.repair()
    assert len(report.orphan_files) == 2 and not report.clean
    fixed = echo_studio.repair(fix=True)
    assert len(fixed.reindexed) == 2
    assert echo_studio.repair().clean
    page = echo_studio.history()
    assert page.total == 2
    record = page.items[0]
    assert record.tags == ["kept"] and record.seed in (3, 4) and record.provider == "echo"
    assert echo_studio.storage.files.exists(record.thumb_path)
    assert record.sha256 == __import__("hashlib").sha256(echo_studio.storage.files.get(record.path)).hexdigest()


def test_repair_quarantines_foreign_files_and_drops_rows_without_files(echo_studio, studio_home):
    files = echo_studio.storage.files
    kept = gen(echo_studio).images[0]
    lost = gen(echo_studio).images[0]
    files.delete(lost.path)
    files.put("images/uncategorized/2026/01/01/stray.png", b"not ours")
    temp = "images/uncategorized/x.png.tmp-1234"  # (only the local store makes these; S3 writes whole)
    files.put(temp, b"half")
    files.delete(kept.thumb_path)
    report = echo_studio.repair(fix=True)
    assert report.missing_files == [lost.id] and report.removed_rows == [lost.id]
    assert len(report.quarantined) == 1 and report.quarantined[0].startswith("orphans/")
    assert files.get(report.quarantined[0]) == b"not ours"
    assert not files.exists("images/uncategorized/2026/01/01/stray.png")
    assert report.temp_files and not files.exists(temp)
    assert report.thumbnails_rebuilt == [kept.id] and files.exists(kept.thumb_path)
    assert echo_studio.repair().clean
    assert echo_studio.history().total == 1


def test_crash_during_delete_restores_the_file(echo_studio, studio_home, monkeypatch):
    record = gen(echo_studio).images[0]

    def crash(image_id):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(echo_studio.storage.index, "delete_image", crash)
    with pytest.raises(KeyboardInterrupt):
        echo_studio.delete_image(record.id)
    monkeypatch.undo()
    assert echo_studio.storage.files.exists(record.path)  # rolled back by the delete itself
    assert not list(echo_studio.storage.files.keys("trash"))
    assert echo_studio.repair().clean


def test_concurrent_writers_never_hit_database_locked(echo_studio, studio_home):
    errors = []

    def worker(i):
        try:
            for j in range(8):
                gen(echo_studio, prompt=f"w{i} {j}")
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert query_studio_db(studio_home, "SELECT COUNT(*) FROM images") == [(48,)]
    if echo_studio.storage.index.path is not None:  # the embedded database: SQLite in WAL mode
        with sqlite3.connect(studio_home / "index.sqlite3") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

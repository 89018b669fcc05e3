"""Storage keeps index and files in agreement: atomic writes, crash windows, repair."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from studio.storage.files import LocalFileStore
from studio.types import GenerationRequest
from tests.helpers import db_rows


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
    assert db_rows(studio_home) == 0
    report = echo_studio.repair()
    assert len(report.orphan_files) == 2 and not report.clean
    fixed = echo_studio.repair(fix=True)
    assert len(fixed.reindexed) == 2
    assert echo_studio.repair().clean
    page = echo_studio.history()
    assert page.total == 2
    record = page.items[0]
    assert record.tags == ["kept"] and record.seed in (3, 4) and record.provider == "echo"
    assert (studio_home / record.thumb_path).is_file()
    assert record.sha256 == __import__("hashlib").sha256((studio_home / record.path).read_bytes()).hexdigest()


def test_repair_quarantines_foreign_files_and_drops_rows_without_files(echo_studio, studio_home):
    kept = gen(echo_studio).images[0]
    lost = gen(echo_studio).images[0]
    (studio_home / lost.path).unlink()
    stray = studio_home / "images" / "uncategorized" / "2026" / "01" / "01" / "stray.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not ours")
    temp = studio_home / "images" / "uncategorized" / "x.png.tmp-1234"
    temp.write_bytes(b"half")
    (studio_home / kept.thumb_path).unlink()
    report = echo_studio.repair(fix=True)
    assert report.missing_files == [lost.id] and report.removed_rows == [lost.id]
    assert len(report.quarantined) == 1 and report.quarantined[0].startswith("orphans/")
    assert report.temp_files and not temp.exists()
    assert report.thumbnails_rebuilt == [kept.id] and (studio_home / kept.thumb_path).is_file()
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
    assert (studio_home / record.path).is_file()  # rolled back by the delete itself
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
    assert db_rows(studio_home) == 48
    with sqlite3.connect(studio_home / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

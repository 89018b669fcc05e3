"""Versioned schema migrations (studio/migrations): a data directory of the last release (048d061)
upgrades at start with its data, a new one gets the newest revision, a newer one is refused, two
processes starting at once migrate once, and the same revisions render for PostgreSQL."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studio import migrations
from studio.boards import SQLiteBoardStore
from studio.jobs.store import SQLiteJobStore
from studio.storage.index import HistoryQuery, SQLiteIndex
from tests.schema_048d061 import INDEX_SCHEMA, JOBS_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-20T10:00:00.000+00:00"


def _old_database(path: Path, *, with_jobs: bool = True, later_columns: bool = False) -> None:
    """A database as the 048d061 code made it, with one row in every table. ``with_jobs=False``: that
    code made the jobs tables only once a batch job was used. ``later_columns``: as the unreleased
    code after it left it (columns added by hand at start, no version recorded)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(INDEX_SCHEMA + (JOBS_SCHEMA if with_jobs else ""))
    if later_columns:
        conn.execute("ALTER TABLE pending_writes ADD COLUMN owner TEXT")
        conn.execute("ALTER TABLE reservations ADD COLUMN expires_at REAL")
    conn.execute(
        "INSERT INTO images (id, owner, path, thumb_path, sha256, width, height, format, size_bytes, provider, "
        "model, mode, prompt, user_prompt, params, seed, category, tags, cost, created_at, day, request_id, "
        "cache_key) VALUES ('img1', 'alice', 'images/2026/11/20/img1.png', NULL, 'ab12', 640, 480, 'PNG', 1234, "
        "'openai', 'gpt-image-1', 'generate', 'a lighthouse at dusk', 'lighthouse', '{\"quality\": \"high\"}', 7, "
        "'coast', '[\"sunset\"]', 0.04, ?, '2026-11-20', 'req1', 'key1')", (NOW,))
    conn.execute("INSERT INTO image_tags (image_id, tag) VALUES ('img1', 'sunset')")
    conn.execute("INSERT INTO generations (id, owner, created_at, day, provider, model, mode, prompt, n, status, "
                 "cost) VALUES ('req1', 'alice', ?, '2026-11-20', 'openai', 'gpt-image-1', 'generate', "
                 "'a lighthouse at dusk', 1, 'completed', 0.04)", (NOW,))
    # A request still running when the old version stopped: its reservation must keep counting.
    conn.execute("INSERT INTO reservations (id, day, amount, created_at) VALUES ('res1', '2026-11-20', 0.5, ?)",
                 (time.time(),))
    conn.execute("INSERT INTO pending_writes (key, request_id, pid, host, created_at) "
                 "VALUES ('images/2026/11/20/img2.png', 'req2', 4242, 'old-host', 1.5)")
    conn.execute("INSERT INTO boards (id, owner, name, notes, created_at, updated_at) "
                 "VALUES ('b1', 'alice', 'Coasts', 'grey skies', ?, ?)", (NOW, NOW))
    conn.execute("INSERT INTO board_items (board_id, image_id, position, note, added_at) "
                 "VALUES ('b1', 'img1', 0, 'hero shot', ?)", (NOW,))
    if with_jobs:
        conn.execute("INSERT INTO jobs (id, owner, status, provider, model, seed_policy, concurrency, total, "
                     "created_at, updated_at) VALUES ('job1', 'alice', 'PAUSED', 'openai', 'gpt-image-1', "
                     "'per-scene', 2, 1, ?, ?)", (NOW, NOW))
        conn.execute("INSERT INTO job_items (job_id, idx, text, prompt, timestamp, status, created_at) "
                     "VALUES ('job1', 0, 'Scene one', 'a harbour', '00:01', 'PENDING', ?)", (NOW,))
    conn.close()


def _schema(path: Path) -> dict:
    """Every table's columns, indexes and references, as SQLite reports them (not the DDL text)."""
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    schema = {}
    for table in tables:
        # name, type, notnull, default, pk
        columns = [tuple(r[1:]) for r in conn.execute(f"PRAGMA table_info({table})")]
        indexes = sorted(
            (r[1], r[2], r[3], tuple(tuple(c[1:]) for c in conn.execute(f"PRAGMA index_xinfo({r[1]})") if c[5]))
            for r in conn.execute(f"PRAGMA index_list({table})"))
        references = sorted(tuple(r[2:]) for r in conn.execute(f"PRAGMA foreign_key_list({table})"))
        schema[table] = {"columns": columns, "indexes": indexes, "references": references}
    conn.close()
    return schema


def _version(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        return migrations.current_sqlite_revision(conn)
    finally:
        conn.close()


def test_data_directory_of_048d061_upgrades_at_start_with_its_data(tmp_path):
    path = tmp_path / "index.sqlite3"
    _old_database(path)

    index = SQLiteIndex(path)  # the start
    assert _version(path) == migrations.head_revision()

    record = index.get("img1")
    assert (record.owner, record.prompt, record.params, record.tags, record.width) == (
        "alice", "a lighthouse at dusk", {"quality": "high"}, ["sunset"], 640)
    assert [r.id for r in index.query(HistoryQuery(owner="alice", tag="sunset")).items] == ["img1"]
    # The old pending write has no owner; a new one records it (the column 0002 adds).
    index.add_pending("req3", ["images/2026/11/20/img3.png"], owner="bob")
    owners = {row["key"]: row["owner"] for row in index.pending()}
    assert owners == {"images/2026/11/20/img2.png": None, "images/2026/11/20/img3.png": "bob"}
    # The old reservation (no expires_at) still counts: 0.04 spent + 0.5 held leaves no room for 0.5 in 1.0.
    accepted, committed = index.reserve("res2", "2026-11-20", 0.5, 1.0)
    assert not accepted and committed == pytest.approx(0.54)
    assert index.reserve("res3", "2026-11-20", 0.4, 1.0)[0]

    boards = SQLiteBoardStore(index)
    assert [(b.name, b.item_count) for b in boards.list("alice")] == [("Coasts", 1)]
    assert [(i.image_id, i.note) for i in boards.items("b1")] == [("img1", "hero shot")]

    job = SQLiteJobStore(index).get("job1")
    assert (job.status.value, job.total, [(i.text, i.prompt, i.timestamp) for i in job.items]) == (
        "PAUSED", 1, [("Scene one", "a harbour", "00:01")])

    # Deleting the image still cascades to its tags and board entry (references kept by the upgrade).
    index.delete_image("img1")
    assert boards.items("b1") == [] and index.query(HistoryQuery(owner="alice", tag="sunset")).total == 0


def test_upgraded_data_directory_has_the_same_schema_as_a_new_one(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    _old_database(tmp_path / "old" / "index.sqlite3")
    SQLiteIndex(tmp_path / "old" / "index.sqlite3")
    SQLiteIndex(tmp_path / "new" / "index.sqlite3")
    upgraded, new = _schema(tmp_path / "old" / "index.sqlite3"), _schema(tmp_path / "new" / "index.sqlite3")
    assert upgraded == new
    assert {"images", "jobs", "job_items", "boards", "alembic_version"} <= set(new)
    assert ("owner", "TEXT", 0, None, 0) in new["pending_writes"]["columns"]
    assert ("expires_at", "REAL", 0, None, 0) in new["reservations"]["columns"]


@pytest.mark.parametrize("with_jobs, later_columns", [(False, False), (True, True)],
                         ids=["jobs-never-used", "columns-added-by-hand-before-migrations"])
def test_other_unversioned_data_directories_upgrade_too(tmp_path, with_jobs, later_columns):
    path = tmp_path / "index.sqlite3"
    _old_database(path, with_jobs=with_jobs, later_columns=later_columns)
    index = SQLiteIndex(path)
    assert _version(path) == migrations.head_revision()
    assert index.get("img1").prompt == "a lighthouse at dusk"
    assert [job.id for job in SQLiteJobStore(index).list("alice", limit=5)] == (["job1"] if with_jobs else [])
    (tmp_path / "new").mkdir()
    SQLiteIndex(tmp_path / "new" / "index.sqlite3")
    assert _schema(path) == _schema(tmp_path / "new" / "index.sqlite3")


def test_new_data_directory_gets_the_newest_revision_and_the_chain_is_linear(tmp_path):
    from alembic.script import ScriptDirectory

    SQLiteIndex(tmp_path / "index.sqlite3")
    assert _version(tmp_path / "index.sqlite3") == migrations.head_revision()
    # head_revision reads file names; Alembic reads the scripts: they must agree, one revision per number.
    script = ScriptDirectory(str(migrations.MIGRATIONS_DIR))
    chain = [(r.revision, r.down_revision) for r in reversed(list(script.walk_revisions()))]
    numbers = sorted(p.name[:4] for p in migrations.VERSIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert [revision for revision, _ in chain] == numbers
    assert [down for _, down in chain] == [None, *numbers[:-1]]
    assert script.get_current_head() == migrations.head_revision()
    # A second start does nothing (and does not load Alembic to find that out).
    conn = sqlite3.connect(tmp_path / "index.sqlite3")
    assert migrations.ensure_current(conn, tmp_path / "index.sqlite3") == []
    conn.close()


def _newer_data_directory(home: Path) -> None:
    """What a later version of the studio leaves: a revision this code has no script for."""
    SQLiteIndex(home / "index.sqlite3").close()
    conn = sqlite3.connect(home / "index.sqlite3")
    conn.execute("UPDATE alembic_version SET version_num = '0042'")
    conn.commit()
    conn.close()


def test_a_database_newer_than_the_code_refuses_to_start(tmp_path, capsys, monkeypatch):
    path = tmp_path / "index.sqlite3"
    _newer_data_directory(tmp_path)
    before = _schema(path)

    newest = migrations.head_revision()
    with pytest.raises(migrations.SchemaTooNew, match=rf"revision 0042, which this version of Image Studio "
                                                       rf"does not know \(its newest is {newest}\)"):
        SQLiteIndex(path)
    assert _version(path) == "0042" and _schema(path) == before

    from studio.cli import main

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    assert main(["history", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the studio's database is at schema revision 0042")
    assert "newer version upgraded it" in err[0] and str(tmp_path) not in err[0]


def test_web_front_ends_say_why_they_cannot_start_on_a_newer_database(studio_home, monkeypatch, capsys):
    import gradio as gr
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import gradio_app
    import studio as studio_package
    from studio.usertext import markdown_literal

    _newer_data_directory(studio_home)
    reason = ("the studio's database is at schema revision 0042, which this version of Image Studio does not "
              f"know (its newest is {migrations.head_revision()}): a newer version upgraded it.")
    monkeypatch.setenv("STUDIO_VISITORS", "local")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.error) == 1 and at.error[0].value.startswith(f"The studio cannot start: {reason}")
        assert str(studio_home) not in at.error[0].value
    finally:
        st.cache_resource.clear()

    capsys.readouterr()
    monkeypatch.setattr(studio_package, "_default", {})  # a fresh shared studio for this environment
    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.append(self))
    gradio_app.main()
    texts = [block.value for block in launched[0].blocks.values() if isinstance(block, gr.Markdown)]
    assert any(text.startswith(f"**The studio cannot start:** {markdown_literal(reason)}") for text in texts)
    assert not any(str(studio_home) in text for text in texts)
    assert capsys.readouterr().err.startswith("error: the studio's database is at schema revision 0042")


_START = """
import logging, sys
from pathlib import Path
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(message)s")
from studio.storage.index import SQLiteIndex
SQLiteIndex(Path(sys.argv[1]))
print("started", flush=True)
"""


def test_two_processes_starting_at_once_migrate_once(tmp_path):
    path = tmp_path / "index.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("BEGIN IMMEDIATE")  # a writer is busy: both starts must queue behind it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    starts = [subprocess.Popen([sys.executable, "-c", _START, str(path)], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    readers = [threading.Thread(target=lambda n=n, p=p: [lines.put((n, line)) for line in p.stderr], daemon=True)
               for n, p in enumerate(starts)]
    for reader in readers:
        reader.start()
    logs: list[tuple[int, str]] = []
    try:
        waiting: set[int] = set()
        while waiting != {0, 1}:  # both have reached the lock and are queued on it
            n, line = lines.get(timeout=60)  # a guard against a hang, not a synchronisation
            logs.append((n, line))
            if "waiting for another process to finish with the database" in line:
                waiting.add(n)
        holder.execute("COMMIT")
        # communicate() reads stderr too: whatever it takes before the reader threads see it is logged here
        answers = [p.communicate(timeout=120) for p in starts]
        outputs = [out for out, _err in answers]
        logs += [(n, line) for n, (_out, err) in enumerate(answers) for line in (err or "").splitlines(True)]
    finally:
        holder.close()
        for p in starts:
            if p.poll() is None:
                p.kill()
    for reader in readers:
        reader.join(timeout=30)
    while not lines.empty():
        logs.append(lines.get())
    assert [p.returncode for p in starts] == [0, 0], logs
    assert outputs == ["started\n", "started\n"]
    upgraded = f"upgraded from schema revision none to {migrations.head_revision()}"
    upgrades = [(n, line) for n, line in logs if upgraded in line]
    assert len(upgrades) == 1, logs
    assert _version(path) == migrations.head_revision()


def test_the_same_revisions_render_for_postgresql():
    sql = migrations.render_sql("postgresql://")
    for statement in ("CREATE TABLE IF NOT EXISTS images (", "CREATE TABLE IF NOT EXISTS job_items (",
                      "CREATE INDEX IF NOT EXISTS idx_images_owner_created ON images (owner, created_at DESC)",
                      "FOREIGN KEY(image_id) REFERENCES images (id) ON DELETE CASCADE",
                      "ALTER TABLE pending_writes ADD COLUMN owner TEXT",
                      "ALTER TABLE reservations ADD COLUMN expires_at REAL",
                      f"UPDATE alembic_version SET version_num='{migrations.head_revision()}'"):
        assert statement in sql
    assert "PRAGMA" not in sql and "AUTOINCREMENT" not in sql


def test_a_failed_upgrade_leaves_the_previous_schema_and_data_whole(tmp_path):
    path = tmp_path / "index.sqlite3"
    _old_database(path)
    # A column that revision 0004 adds, already there by someone's hand: 0004 fails after 0001-0003 ran.
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE job_items ADD COLUMN warnings TEXT")
    conn.commit()
    conn.close()
    before = _schema(path)

    with pytest.raises(Exception, match="duplicate column name: warnings"):
        SQLiteIndex(path)
    # One transaction: no version recorded, 0002's and 0003's columns rolled back with it, rows kept.
    assert _version(path) is None and _schema(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT prompt FROM images").fetchall() == [("a lighthouse at dusk",)]
    conn.close()


# -- the same revisions on a real PostgreSQL server (skipped where none is installed) ------------


@pytest.fixture
def postgres(pg_server):
    """``postgres(name)``: the SQLAlchemy URL of a new, empty database (no schema) on the session's
    throwaway server (tests/pg_server.py), dropped after the test."""
    made: list[str] = []

    def new_database(name: str) -> str:
        made.append(name)
        return pg_server.create(name)

    yield new_database
    for name in made:
        pg_server.drop(name)


def _pg(url: str):
    import psycopg

    name, host = url.split("@/", 1)[1].split("?host=")
    return psycopg.connect(host=host, user="studio", dbname=name, autocommit=True)


def test_postgresql_new_database_and_one_of_048d061_with_data_upgrade(postgres):
    new = postgres("fresh")
    assert migrations.upgrade_url(new) == [f"{n:04d}" for n in range(1, int(migrations.head_revision()) + 1)]
    assert migrations.upgrade_url(new) == []

    old = postgres("released")
    with _pg(old) as conn:
        conn.execute(INDEX_SCHEMA + JOBS_SCHEMA)  # the 048d061 DDL runs on PostgreSQL as it is
        conn.execute("INSERT INTO images (id, owner, path, sha256, width, height, format, size_bytes, provider, "
                     "model, mode, prompt, created_at, day) VALUES ('img1', 'alice', 'a.png', 'ab', 64, 48, 'PNG', "
                     "10, 'openai', 'gpt-image-1', 'generate', 'a lighthouse', %s, '2026-11-20')", (NOW,))
        conn.execute("INSERT INTO pending_writes (key, request_id, pid, host, created_at) "
                     "VALUES ('b.png', 'req2', 1, 'h', 1.5)")
    migrations.upgrade_url(old)

    def columns(url: str) -> dict:
        with _pg(url) as conn:
            rows = conn.execute("SELECT table_name, column_name, data_type, is_nullable, column_default "
                                "FROM information_schema.columns WHERE table_schema = 'public'").fetchall()
        return {(r[0], r[1]): r[2:] for r in rows}

    assert columns(old) == columns(new)
    # 0006: PostgreSQL's 4-byte real and 31-bit integer widened where the studio needs 8 bytes.
    types = {key: value[0] for key, value in columns(new).items()}
    assert types[("reservations", "amount")] == types[("jobs", "heartbeat_at")] == "double precision"
    assert not [key for key, kind in types.items() if kind == "real"]
    assert types[("images", "seed")] == types[("job_items", "seed")] == types[("jobs", "base_seed")] == "bigint"
    with _pg(old) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrations.head_revision(),)]
        assert conn.execute("SELECT prompt, tags, shared FROM images").fetchall() == [("a lighthouse", "[]", 0)]
        assert conn.execute("SELECT key, owner FROM pending_writes").fetchall() == [("b.png", None)]


def test_postgresql_refuses_a_newer_database_and_migrates_once_under_the_advisory_lock(postgres, caplog):
    newer = postgres("newer")
    migrations.upgrade_url(newer)
    with _pg(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0042'")
    with pytest.raises(migrations.SchemaTooNew, match="revision 0042"):
        migrations.upgrade_url(newer)

    url = postgres("together")
    caplog.set_level(logging.INFO, logger="studio.migrations")
    waiting = threading.Semaphore(0)

    class Waiting(logging.Handler):
        def emit(self, record):
            if "waiting for another process" in record.getMessage():
                waiting.release()

    handler = Waiting()
    logging.getLogger("studio.migrations").addHandler(handler)
    results: list[list[str]] = []
    with _pg(url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrations.POSTGRES_LOCK_KEY,))
        starts = [threading.Thread(target=lambda: results.append(migrations.upgrade_url(url))) for _ in range(2)]
        for start in starts:
            start.start()
        try:
            for _ in starts:  # both are queued on the lock
                assert waiting.acquire(timeout=60)  # a guard against a hang, not a synchronisation
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.POSTGRES_LOCK_KEY,))
            logging.getLogger("studio.migrations").removeHandler(handler)
        for start in starts:
            start.join(timeout=120)
    assert sorted(results, key=len) == [[], [f"{n:04d}" for n in range(1, int(migrations.head_revision()) + 1)]]

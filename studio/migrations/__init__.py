"""Versioned schema migrations of the studio's database (Alembic over SQLAlchemy Core).

The revisions in ``versions/`` are the schema, for SQLite and PostgreSQL alike: ``0001`` is the last
release before migrations (commit 048d061); each later change is one more file. They are applied at
start (``studio.db.Database`` calls ``ensure_current`` for SQLite, ``upgrade_engine`` for PostgreSQL),
under a lock, in one transaction, so two processes starting at once migrate once and a failed upgrade
leaves the previous schema whole. A database whose revision this code does not know (a newer studio
upgraded it) is refused with ``SchemaTooNew``.

Adding a change: a file ``versions/NNNN_what_it_is.py`` (the next number) with ``revision = "NNNN"``,
``down_revision`` the previous number, and ``upgrade()`` written with ``alembic.op`` and SQLAlchemy
types only (no SQL of one engine; a step only one engine needs, such as 0006's widening of
PostgreSQL's 4-byte ``real``, is guarded by the dialect's name). ``tests/test_migrations.py`` checks
the chain and upgrades a data directory of every earlier schema, on SQLite and PostgreSQL.

Alembic is imported only when a database is not at the newest revision, so a start with nothing to
do costs one query.
"""

from __future__ import annotations

import io
import logging
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import StudioError

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")
# PostgreSQL advisory lock key that every studio process takes while it migrates (any fixed 64-bit number).
POSTGRES_LOCK_KEY = 0x1A6E57D10


class SchemaTooNew(StudioError):
    """The database was upgraded by a newer version of the studio: this code does not know its schema."""

    kind = "schema_too_new"


def head_revision() -> str:
    """The newest revision ("NNNN"), read from the file names alone (no Alembic import).

    Holds because every revision's id is its file's number and each one revises the one before;
    ``tests/test_migrations.py`` checks that against Alembic's own reading of the scripts."""
    numbers = [m.group(1) for p in VERSIONS_DIR.iterdir() if (m := _REVISION_FILE.match(p.name))]
    return max(numbers)


def current_sqlite_revision(conn: sqlite3.Connection) -> str | None:
    """The revision recorded in an open SQLite database; None before any migration ran there
    (a brand-new file, or a data directory from before migrations)."""
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None
    return row[0] if row else None


def ensure_current(conn: sqlite3.Connection, path: Path, busy_timeout_ms: int = 30000) -> list[str]:
    """Bring the SQLite database at ``path`` (``conn`` is an open connection to it) to the newest
    revision. Returns the revisions applied, oldest first ([] when it already was current, or another
    process upgraded it while this one waited). Raises ``SchemaTooNew`` for a newer database."""
    if current_sqlite_revision(conn) == head_revision():
        return []
    return upgrade_sqlite(path, busy_timeout_ms)


def upgrade_sqlite(path: Path, busy_timeout_ms: int = 30000) -> list[str]:
    """Upgrade the SQLite database at ``path`` to the newest revision (see ``upgrade``)."""
    import sqlalchemy as sa

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # Off while migrating (it cannot change inside a transaction): SQLite alters a table by copying
        # it, and dropping the old copy would cascade-delete every row that references it. The
        # references are checked once the revisions have run.
        conn.execute("PRAGMA foreign_keys = OFF")
        return conn

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return upgrade(connection, where=str(path), busy_timeout_ms=busy_timeout_ms)
    finally:
        engine.dispose()


def upgrade_url(url: str) -> list[str]:
    """Upgrade the database at a SQLAlchemy ``url`` (e.g. ``postgresql+psycopg://…``; see ``upgrade``)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return upgrade(connection, where=engine.url.render_as_string(hide_password=True))
    finally:
        engine.dispose()


def upgrade_engine(engine: "sa.Engine", *, where: str) -> list[str]:
    """Bring the database of a server ``engine`` (PostgreSQL) to the newest revision: one query
    when it already is, else ``upgrade`` on a fresh connection. ``where`` names it in the log
    (never with its password)."""
    import sqlalchemy as sa

    with engine.connect() as connection:
        current = None
        if sa.inspect(connection).has_table("alembic_version"):
            current = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    if current == head_revision():
        return []
    with engine.connect() as connection:
        return upgrade(connection, where=where)


def upgrade(connection: "sa.Connection", *, where: str, busy_timeout_ms: int = 30000) -> list[str]:
    """Take the schema lock, then apply every revision the database lacks and commit, all in one
    transaction on ``connection`` (a fresh SQLAlchemy connection, not in a transaction). ``where``
    names the database in the server's log.

    Returns the revisions applied, oldest first: [] when another process got there first.
    Raises ``SchemaTooNew`` (nothing changed) when the recorded revision is not one of ours."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with connection.begin():
        _take_schema_lock(connection, where, busy_timeout_ms)
        config = _config()
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        current = MigrationContext.configure(connection).get_current_revision()
        if current is not None and current not in {r.revision for r in script.walk_revisions()}:
            # The message reaches web pages: it names no server path (the log does, for the operator;
            # a warning, as the error itself is raised to whoever started the studio).
            log.warning("the database %s is at schema revision %s, newer than this code's %s", where, current, head)
            raise SchemaTooNew(
                f"the studio's database is at schema revision {current}, which this version of Image Studio "
                f"does not know (its newest is {head}): a newer version upgraded it. Run that version, or "
                f"restore a backup of the data directory made before the upgrade.")
        if current == head:
            return []
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        applied = list(config.attributes.get("applied", []))
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"upgrading {where} left rows pointing at missing rows: {broken[:5]}")
    log.info("database %s upgraded from schema revision %s to %s (%s)", where, current or "none", head,
             ", ".join(applied))
    return applied


def render_sql(url: str) -> str:
    """The SQL that upgrading an empty database at ``url`` (only its dialect is used, e.g.
    ``postgresql://``) would run, for review; nothing is connected to."""
    from alembic import command

    buffer = io.StringIO()
    config = _config(output_buffer=buffer)
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head", sql=True)
    return buffer.getvalue()


def add_column_unless_present(table: str, column: "sa.Column[Any]") -> None:
    """For revisions of columns that unreleased code had already added by hand (``ALTER TABLE`` at
    start, before migrations existed): a data directory made by that code has the column. New
    revisions use ``op.add_column``."""
    import sqlalchemy as sa
    from alembic import context, op

    if not context.is_offline_mode():
        existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
        if column.name in existing:
            return
    op.add_column(table, column)


def _config(**kwargs: Any):
    from alembic.config import Config

    config = Config(**kwargs)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _take_schema_lock(connection: "sa.Connection", where: str, busy_timeout_ms: int) -> None:
    """Hold the database's migration lock until the transaction ends; log once when another process
    holds it (it is migrating: this one then finds the work done)."""
    if connection.dialect.name == "sqlite":
        raw = connection.connection.driver_connection
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            raw.execute("BEGIN IMMEDIATE")  # SQLite's write lock: one writer per database file
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname != "SQLITE_BUSY":
                raise
            log.info("waiting for another process to finish with the database %s", where)
        finally:
            raw.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        raw.execute("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        import sqlalchemy as sa

        if not connection.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"),
                                  {"key": POSTGRES_LOCK_KEY}).scalar():
            log.info("waiting for another process to finish migrating %s", where)
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
    else:
        raise ValueError(f"no schema lock for the {connection.dialect.name} database {where}")

"""The studio's database: one SQLAlchemy Core engine, SQLite (embedded default) or PostgreSQL.

    db = Database.for_home(home)            # STUDIO_DATABASE_URL, else home/index.sqlite3
    with db.read() as conn:                 # a Connection; statements are ``sqlalchemy.text``
        conn.execute(text("SELECT ..."), {...})
    with db.write() as conn:                # one transaction, committed on exit, rolled back on error
        db.lock(conn, "budget")             # serialise a read-check-write across processes/machines

Every store (history index, jobs, boards, tokens) writes the same portable SQL for both engines; the
few places where the engines differ are here: how a write transaction starts (SQLite takes its one
write lock up front with ``BEGIN IMMEDIATE``, so concurrent writers wait ``busy_timeout`` instead of
failing with "database is locked"; PostgreSQL runs ordinary transactions), named locks (nothing to do
on SQLite, whose write transaction already excludes every other writer; a transaction-scoped
advisory lock on PostgreSQL) and row locks (``FOR UPDATE [SKIP LOCKED]`` on PostgreSQL only).

The schema is the migrations' (``studio.migrations``), applied when a ``Database`` is opened.

A PostgreSQL URL may carry a password: it is only ever shown as ``display_url`` (password masked).
sqlalchemy is imported when a database is opened, not when this module is.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from studio.config import SettingsError
from studio.errors import StorageError

if TYPE_CHECKING:
    import sqlalchemy as sa

SQLITE_FILE_NAME = "index.sqlite3"  # the embedded database's file in the data directory
DEFAULT_BUSY_TIMEOUT_MS = 30000
# Connections kept open per process. SQLite connections are cheap and the pool may grow past this
# (no caller ever waits for one); a PostgreSQL server counts them, so its pool is bounded.
SQLITE_POOL_SIZE = 16
POSTGRES_POOL_SIZE = 10
POSTGRES_MAX_OVERFLOW = 20


# Every open Database of this process, so a forked child (a Celery prefork worker, multiprocessing)
# drops the connections it inherited instead of sharing their sockets and locks with its parent.
_OPEN: "weakref.WeakSet[Database]" = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for database in list(_OPEN):
        # close=False: the parent still uses those connections; the child only lets go of them and
        # opens its own on first use.
        database.engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)


class DatabaseUrlError(SettingsError):
    """STUDIO_DATABASE_URL is not a URL the studio can use (the message masks any password). A bad
    setting: the CLI exits 2, the HTTP API answers 400."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or used right now (refused, down, a broken connection). The
    message names the database with its password masked and the driver's first line; no SQL."""


# The URL schemes STUDIO_DATABASE_URL may use: PostgreSQL through psycopg (3), the driver the studio
# installs, or a SQLite file.
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg")
_TAKES = "postgresql://user:password@host[:port]/database or sqlite:///path"
# Text that begins like a URL ("word:"); a Windows drive letter ("C:") is a path, not a scheme.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")


def masked_url(text: str) -> str:
    """``text`` (a database URL, well formed or not) with the password between the user name and
    the last '@' replaced by ``***``: safe to show even when the URL does not parse."""
    userinfo, at, host = text.rpartition("@")
    if not at:
        return text
    if "://" in userinfo:
        scheme, colon, rest = userinfo.partition("://")
    elif userinfo.count(":") >= 2:  # "scheme:user:password", a slash or two short
        scheme, colon, rest = userinfo.partition(":")
    else:  # "user:password" or "scheme:user": masking too much beats showing a password
        scheme, colon, rest = "", "", userinfo
    user, sep, _password = rest.partition(":")
    return f"{scheme}{colon}{user}{sep}{'***' if sep else ''}@{host}"


def _refused(url: str, why: str) -> DatabaseUrlError:
    return DatabaseUrlError(f"STUDIO_DATABASE_URL={masked_url(url)!r} is not valid: it takes {_TAKES} ({why})")


def engine_url(url: str) -> "sa.URL":
    """The SQLAlchemy URL for a setting: ``postgresql://`` and ``postgres://`` (optionally
    ``+psycopg``) use psycopg (3); ``sqlite:///path`` is a SQLite file. Anything else, a malformed
    URL or a port that is not a number raises ``DatabaseUrlError`` (a ``SettingsError``)."""
    import sqlalchemy as sa

    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        # e.g. "postgresql:/u:pw@host/db": SQLAlchemy would read it as a SQLite file named after it.
        raise _refused(url, "no '://' after the scheme")
    if scheme not in (*_POSTGRES_SCHEMES, "sqlite"):
        raise _refused(url, f"{scheme!r} is not PostgreSQL or SQLite")
    if scheme == "sqlite" and not rest.startswith("/"):
        raise _refused(url, "a SQLite URL is sqlite:/// followed by the file's path")
    try:
        parsed = sa.engine.make_url(url)
        parsed.port  # noqa: B018 - parsed on reading: a port that is not a number fails here, not at connect
    except (sa.exc.ArgumentError, ValueError):
        # The text itself may hold a password: say only what is wrong with it.
        raise _refused(url, "not a URL, or its port is not a number") from None
    if scheme == "sqlite":
        if not parsed.database:
            raise _refused(url, "no file path after sqlite:///")
        return parsed.set(drivername="sqlite")
    return parsed.set(drivername="postgresql+psycopg")


def unavailable(exc: BaseException, display_url: str) -> DatabaseUnavailable:
    """The error to raise for SQLAlchemy's ``exc`` (a connection that failed or broke): one line,
    ``cannot reach the database at <display_url>: <the driver's first line>``, no SQL, no parameters."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    return DatabaseUnavailable(f"cannot reach the database at {display_url}: {reason}")


def connection_failure(exc: BaseException) -> DatabaseUnavailable | None:
    """For a front end's last resort: ``exc`` as ``DatabaseUnavailable`` when it is SQLAlchemy's
    error for a connection that failed or broke (naming this process's database when it has one
    open), else None."""
    import sys

    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None or not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return None
    shown = {database.display_url for database in list(_OPEN)}
    return unavailable(exc, shown.pop() if len(shown) == 1 else "the studio's database")


class Database:
    """An open database. ``target``: a SQLite file path, or a URL (``postgresql://…``,
    ``sqlite:///path``). Safe to share between threads; each ``read``/``write`` borrows a pooled
    connection. Raises ``DatabaseUrlError`` for an unsupported URL, ``SchemaTooNew`` for a
    database a newer studio upgraded, and ``DatabaseUnavailable`` (a ``StorageError``) when it cannot connect."""

    def __init__(self, target: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS):
        import sqlalchemy as sa

        from studio import migrations

        self.busy_timeout_ms = int(busy_timeout_ms)
        if isinstance(target, Path) or not _SCHEME.match(str(target)):
            url = sa.engine.URL.create("sqlite", database=str(target))
        else:
            url = engine_url(str(target))
        self.dialect = url.get_backend_name()  # "sqlite" or "postgresql"
        self.display_url = url.render_as_string(hide_password=True)
        self.path: Path | None = None
        if self.dialect == "sqlite":
            self.path = Path(url.database)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine("sqlite://", creator=self._connect_sqlite, poolclass=sa.pool.QueuePool,
                                           pool_size=SQLITE_POOL_SIZE, max_overflow=-1)
        else:
            self.engine = sa.create_engine(url, pool_size=POSTGRES_POOL_SIZE, max_overflow=POSTGRES_MAX_OVERFLOW,
                                           pool_pre_ping=True)
        try:
            if self.path is not None:
                # One query when the file is current; Alembic only for a new or older file.
                with self.engine.connect() as conn:
                    migrations.ensure_current(conn.connection.driver_connection, self.path, self.busy_timeout_ms)
            else:
                migrations.upgrade_engine(self.engine, where=self.display_url)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            self.engine.dispose()  # a database that cannot be used keeps no connection open
            raise unavailable(exc, self.display_url) from exc
        except BaseException:
            self.engine.dispose()
            raise
        _OPEN.add(self)

    @classmethod
    def for_home(cls, home: str | Path, url: str | None = None) -> "Database":
        """The studio's database: ``url`` (``STUDIO_DATABASE_URL``), else ``home/index.sqlite3``."""
        return cls(url if url else Path(home) / SQLITE_FILE_NAME)

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    def _connect_sqlite(self) -> sqlite3.Connection:
        # Autocommit at the driver (isolation_level=None): ``write`` issues BEGIN IMMEDIATE itself, and
        # reads outside it see each statement's latest committed state, as before SQLAlchemy.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator["sa.Connection"]:
        """A connection for reads (nothing it writes is kept unless the caller commits)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator["sa.Connection"]:
        """One write transaction: committed when the block ends, rolled back if it raises. On SQLite
        it holds the database's write lock from the start (waiting up to ``busy_timeout_ms``)."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def lock(self, conn: "sa.Connection", name: str) -> None:
        """Hold the lock ``name`` until ``conn``'s write transaction ends, excluding every other
        process on any machine that takes it. SQLite: nothing more to do (a write transaction already
        excludes all other writers). PostgreSQL: a transaction-scoped advisory lock keyed by ``name``."""
        if self.dialect == "postgresql":
            from sqlalchemy import text

            key = int.from_bytes(hashlib.sha256(f"studio:{name}".encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def for_update(self, *, skip_locked: bool = False, share: bool = False) -> str:
        """The row-lock clause to end a SELECT with inside ``write`` (``FOR UPDATE [SKIP LOCKED]`` or
        ``FOR SHARE`` on PostgreSQL; empty on SQLite, whose write transaction already excludes others)."""
        if self.dialect != "postgresql":
            return ""
        return (" FOR SHARE" if share else " FOR UPDATE") + (" SKIP LOCKED" if skip_locked else "")

    @property
    def like_any_case(self) -> str:
        """The operator of a ``LIKE`` that ignores case: SQLite's own ``LIKE`` (it ignores ASCII case),
        PostgreSQL's ``ILIKE`` (its ``LIKE`` does not ignore case; ``ILIKE`` ignores it for every
        letter, and a trigram index can serve it)."""
        return "ILIKE" if self.dialect == "postgresql" else "LIKE"

    def close(self) -> None:
        """Close every pooled connection (connections still borrowed close when returned)."""
        self.engine.dispose()


__all__ = ["Database", "DatabaseUnavailable", "DatabaseUrlError", "SQLITE_FILE_NAME", "connection_failure", "engine_url",
           "masked_url", "unavailable"]

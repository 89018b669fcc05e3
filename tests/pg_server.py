"""A throwaway PostgreSQL server for tests, and the ``database_url`` fixture that runs a test once
per database back end (embedded SQLite, and PostgreSQL: STUDIO_DATABASE_URL).

The server is Debian's ``postgresql`` (``initdb``/``pg_ctl`` from /usr/lib/postgresql/*/bin),
started once per test process in a temporary folder, listening only on a unix socket there (no TCP
port to collide with anything), trust authentication, durability off (fsync, synchronous_commit:
nothing here must survive a crash of the test machine). As root it runs as the ``postgres`` user,
because PostgreSQL refuses to run as root. Each test gets a database of its own, copied from a
template that already has the studio's schema, and dropped after it.

Tests that need PostgreSQL skip only when no server is installed (CI installs one).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

TEMPLATE = "studio_template"
USER = "studio"


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are (the newest version installed), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A running throwaway server. ``url(name)``: the SQLAlchemy URL of its database ``name``;
    ``create(name, template=None)`` / ``drop(name)`` make and remove databases."""

    def __init__(self, home: Path):
        self.home = home

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://{USER}@/{name}?host={self.home}"

    def admin(self):
        import psycopg

        return psycopg.connect(host=str(self.home), user=USER, dbname="postgres", autocommit=True)

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop(self, name: str) -> None:
        # FORCE: a studio a test left open (or a killed child process) still holds connections.
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_postgres_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def start_server() -> Iterator[PostgresServer]:
    """Start a server (a generator: yields it, stops and removes it when resumed). Skips the test
    when no PostgreSQL server or psycopg is installed."""
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (initdb not found)")
    home = Path(tempfile.mkdtemp(prefix="studio-pg-", dir="/tmp"))
    home.chmod(0o777)  # the postgres user writes its socket and data here
    data = home / "data"
    as_user = _as_postgres_user()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER],
                   check=True, capture_output=True, timeout=120)
    options = (f"-k {home} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=300")
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w", "start",
                    "-o", options], check=True, capture_output=True, timeout=120)
    try:
        yield PostgresServer(home)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the test process, with a template database at the
    studio's newest schema (so each test's copy starts without running the migrations)."""
    from studio import migrations

    for server in start_server():
        migrations.upgrade_url(server.create(TEMPLATE))
        yield server


_numbers = itertools.count()


@pytest.fixture
def pg_database(pg_server) -> Iterator[Callable[[], str]]:
    """``pg_database()``: the URL of a new database at the newest schema, dropped after the test."""
    made: list[str] = []

    def new() -> str:
        name = f"t{os.getpid()}_{next(_numbers)}"
        made.append(name)
        return pg_server.create(name, template=TEMPLATE)

    yield new
    for name in made:
        pg_server.drop(name)


@pytest.fixture(params=["embedded", "postgresql"])
def database_url(request) -> Iterator[str | None]:
    """Run the test once per database back end: ``embedded`` (SQLite in the data directory, the
    setting unset) and ``postgresql`` (STUDIO_DATABASE_URL set to a new database on the throwaway
    server). Its value: the URL, or None for the embedded one. Use it before building the studio.
    The variable is set on a monkeypatch of its own, so a test's ``monkeypatch.undo()`` keeps it."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "embedded":
            patch.delenv("STUDIO_DATABASE_URL", raising=False)
            yield None
        else:
            url = request.getfixturevalue("pg_database")()
            patch.setenv("STUDIO_DATABASE_URL", url)
            yield url


def query_studio_db(home: Path, statement: str, *args) -> list[tuple]:
    """Rows of ``statement`` (``?`` placeholders) run on the studio's database: STUDIO_DATABASE_URL
    when a test set it (``database_url``), else ``home/index.sqlite3``. Read with the drivers
    themselves, not the studio's code. Floats come back rounded to 6 places (sums of costs differ
    in their last bits between engines)."""
    url = os.environ.get("STUDIO_DATABASE_URL")
    if url:
        import psycopg
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        with psycopg.connect(host=parsed.query["host"], user=parsed.username, dbname=parsed.database) as conn:
            rows = conn.execute(statement.replace("?", "%s"), args).fetchall()
    else:
        import sqlite3

        with sqlite3.connect(home / "index.sqlite3") as conn:
            rows = conn.execute(statement, args).fetchall()
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]

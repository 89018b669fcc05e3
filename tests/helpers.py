"""Small helpers shared by the core tests."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
from pathlib import Path

from PIL import Image


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content. A SQLite database is hashed by its
    logical content (a dump of every row), since a WAL checkpoint rewrites the file's bytes without
    changing any data; its -wal/-shm companions are left out for the same reason."""
    if not root.exists():
        return {}
    snapshot = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.endswith(("-wal", "-shm")):
            continue
        if path.suffix == ".sqlite3":
            import sqlite3

            # Process heartbeats are this process's liveness, not data: the heartbeat thread deletes its row
            # a moment after the last request ended, whenever that thread next wakes.
            with sqlite3.connect(path) as conn:
                content = "\n".join(line for line in conn.iterdump()
                                     if not line.startswith('INSERT INTO "process_heartbeats"')).encode()
        else:
            content = path.read_bytes()
        snapshot[path.relative_to(root).as_posix()] = hashlib.sha256(content).hexdigest()
    return snapshot


def png(width: int = 64, height: int = 64, color=(10, 120, 200), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    fill = color if mode in ("RGB",) else ((*color, 255) if mode == "RGBA" else color[0])
    Image.new(mode, (width, height), fill).save(buffer, format=fmt)
    return buffer.getvalue()


def db_rows(home: Path, table: str = "images") -> int:
    import sqlite3

    db = home / "index.sqlite3"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def decoded(data: bytes) -> Image.Image:
    """The image in ``data``, fully read (so its format, size and pixels can be checked)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_no_key_under(home: Path, *keys: str) -> None:
    """No file under ``home`` (images, thumbnails, the index, logs) contains any of ``keys``."""
    for path in home.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for key in keys:
                assert key.encode() not in content, f"API key found in {path}"


def as_read(markdown: str) -> str:
    """A Markdown body as a reader sees its characters: backslash escapes (``studio.usertext.
    markdown_literal`` escapes user text that way) undone, non-breaking spaces as spaces."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", str(markdown)).replace("\u00a0", " ")


class HoldImageRequests:
    """Wraps a provider fake: an image request is announced on ``received`` and held until
    ``release`` is set, so a test can kill the client while the provider has its request."""

    def __init__(self, fake):
        self.fake = fake
        self.received = threading.Event()
        self.release = threading.Event()

    def __call__(self, request):
        if request.method == "POST" and "/images/" in request.path:
            self.received.set()
            self.release.wait(120)
        return self.fake(request)


class Rebinding:
    """``socket.getaddrinfo`` for one name whose first answer is public and every later one is the
    loopback listener, and ``socket.create_connection`` recording where connections really go (the
    public address answers "refused": the test machine has no internet)."""

    PUBLIC = "93.184.216.34"

    def __init__(self, monkeypatch, name: str):
        self.name, self.lookups, self.connections = name, 0, []
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

        def getaddrinfo(host, port, *args, **kwargs):
            if host != name:
                return real_getaddrinfo(host, port, *args, **kwargs)
            self.lookups += 1
            address = self.PUBLIC if self.lookups == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

        def create_connection(address, *args, **kwargs):
            self.connections.append(address[0])
            if address[0] == self.PUBLIC:
                raise ConnectionRefusedError(111, "refused (no internet here)")
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)



def readme_bash(section: str) -> str:
    """The ``bash`` code blocks of one README section, its subsections included, in order, as one
    script. ``section`` is the heading line as written (``### ...``); the section ends at the next
    heading of its level or above outside a code block (``#`` lines in a block are comments)."""
    lines = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8").splitlines()
    level = len(section) - len(section.lstrip("#"))
    script: list[str] = []
    fence = None  # the language of the code block we are in, if any
    for line in lines[lines.index(section) + 1:]:
        heading = re.match(r"(#{1,6}) ", line)
        if fence is None and heading and len(heading.group(1)) <= level:
            break
        if line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
        elif fence == "bash":
            script.append(line)
    assert script, f"the README's section {section!r} has no bash examples"
    return "\n".join(script)


def wait_for(condition, what: str, timeout: float = 120.0, interval: float = 0.05):
    """Poll ``condition`` (its state lives in another thread or process: Redis, the database, a
    worker) until it returns something true, and return that; AssertionError naming ``what`` after
    ``timeout`` seconds (generous: a loaded 2-core machine). A wait on real state, never a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(interval)

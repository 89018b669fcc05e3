"""A real Redis for tests: Debian's ``redis-server`` on a free loopback port, in a temporary directory.

Fixtures (imported by tests/conftest.py): ``redis_server_url`` starts one server per test module and
yields its URL (``redis://127.0.0.1:PORT/0``); ``redis_url`` is that URL with the database emptied
(``FLUSHALL``) for the test. Nothing is persisted (``--save "" --appendonly no``) and the server is
stopped when the module ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REDIS_SERVER = "redis-server"
START_TIMEOUT = 20.0  # seconds for the server to answer PING (a loaded CI machine)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run ``redis-server`` in ``directory`` until the block ends; yields its URL. Raises
    RuntimeError (with the server's own output) when it does not come up."""
    import redis

    binary = shutil.which(REDIS_SERVER)
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server; see the README)")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "redis.log"
    for _try in range(3):  # a port taken between free_port() and the bind: pick another
        port = free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
             "--appendonly", "no", "--logfile", str(log_path), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        up = False
        while process.poll() is None and time.monotonic() < deadline:
            try:
                up = client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)  # polling a starting server: there is nothing to wait on instead
        client.close()
        if up:
            break
        if process.poll() is None:
            process.kill()
        process.wait(10)
    else:
        log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else "(no log)"
        raise RuntimeError(f"redis-server did not start: {log}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def redis_server_url(tmp_path_factory):
    """A real ``redis-server`` for the test module: its URL."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url):
    """The module's Redis, emptied for this test: its URL."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server_url

"""The one database code path (studio.db, issue 13) on both back ends: keyset paging, search, types
that PostgreSQL keeps narrower than SQLite unless told (costs, epoch seconds, 32-bit seeds), claims
that never hand one item to two workers, and a database URL whose password is never shown."""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta, timezone

import pytest

from studio.db import Database, DatabaseUrlError
from studio.errors import InvalidRequest
from studio.jobs.model import ItemStatus, Job, JobItem, JobStatus
from studio.jobs.store import DatabaseJobStore
from studio.storage.index import HistoryIndex, HistoryQuery
from studio.types import ImageRecord

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def index(database_url, studio_home):
    """The index on the test's back end: each test using it runs on embedded SQLite and on PostgreSQL."""
    index = HistoryIndex.for_home(studio_home)
    assert (index.path is None) == (database_url is not None)  # the back end the test asked for
    yield index
    index.close()


def record(i: int, *, created: datetime, request_id: str | None = None, seed: int | None = None,
           prompt: str | None = None, cost: float = 0.01) -> ImageRecord:
    return ImageRecord(
        id=f"{i:05d}{secrets.token_hex(4)}", owner="alice", path=f"images/{i}-{secrets.token_hex(4)}.png",
        sha256="0" * 64, width=64, height=64, format="png", size_bytes=10, provider="echo", model="echo-1",
        mode="text-to-image", prompt=prompt or f"a kite number {i}", seed=seed, cost=cost,
        created_at=created.isoformat(timespec="microseconds"), request_id=request_id)


def test_cursor_pages_walk_the_history_as_offset_pages_do_with_ties_in_time(index):
    # 24 images in requests of 1-3 images: the images of one request share their created_at.
    records, i = [], 0
    for request in range(12):
        created = START + timedelta(minutes=request)
        for _ in range(1 + request % 3):
            records.append(record(i, created=created, request_id=f"r{request}"))
            i += 1
    index.insert_images(records)
    by_offset = [r.id for r in index.query(HistoryQuery(owner="alice", limit=100)).items]
    assert len(by_offset) == len(records) == 24

    walked, cursor, pages = [], None, 0
    while True:
        page = index.query(HistoryQuery(owner="alice", limit=5, after=cursor))
        assert page.total == 24
        walked += [r.id for r in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert walked == by_offset and pages == 5  # 5+5+5+5+4: the last page says there is no next one
    assert index.query(HistoryQuery(owner="alice", limit=24)).next_cursor is None
    with pytest.raises(InvalidRequest, match="cursor"):
        index.query(HistoryQuery(owner="alice", after="not-a-cursor"))


def test_search_ignores_ascii_case_on_both_engines(index):
    index.insert_images([record(1, created=START, prompt="A LightHouse at dusk"),
                         record(2, created=START, prompt="50% off_sale"),
                         record(3, created=START, prompt="a forest")])
    assert [r.prompt for r in index.query(HistoryQuery(owner="alice", text="lighthouse")).items] == \
        ["A LightHouse at dusk"]
    # LIKE's wildcards in the text are literal characters.
    assert [r.prompt for r in index.query(HistoryQuery(owner="alice", text="0% OFF_")).items] == ["50% off_sale"]
    assert index.query(HistoryQuery(owner="alice", text="%")).total == 1
    if index.db.dialect == "postgresql":  # pg_trgm is installed with the test server: the search is indexed
        from sqlalchemy import text

        with index.read() as conn:
            names = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'images'")).scalars())
        assert {"idx_images_prompt_trgm", "idx_images_user_prompt_trgm"} <= names


def test_costs_times_and_32_bit_seeds_come_back_exactly(index):
    """PostgreSQL's real is 4 bytes and its integer 31 bits: migration 0006 widens them there."""
    index.insert_images([record(1, created=START, seed=2**32 - 1, cost=0.0051)])
    (saved,) = index.query(HistoryQuery(owner="alice")).items
    assert saved.seed == 2**32 - 1 and saved.cost == 0.0051
    assert index.reserve("r1", "2026-01-01", 0.0051, None, started_by={"pid": 1}, request={})[0]
    (held,) = index.open_requests()
    assert held["amount"] == 0.0051
    store = DatabaseJobStore(index)
    store.create(Job(id="job1", owner="alice", status=JobStatus.RUNNING, provider="echo", model="echo-1",
                     base_seed=2**32 - 2), [JobItem(job_id="job1", index=0, text="a", seed=2**32 - 1)])
    heartbeat = 1_764_400_000.123
    assert store.take("job1", "host:1:x", now=heartbeat, stale_after=15)
    job = store.get("job1")
    assert job.heartbeat_at == heartbeat and job.base_seed == 2**32 - 2 and job.items[0].seed == 2**32 - 1


def test_a_requests_images_come_back_in_the_order_it_saved_them(index):
    # Same time, random ids, seeds out of order: only the saved position gives the order back.
    records = [record(i, created=START, request_id="req", seed=seed) for i, seed in enumerate((9, 3, 7))]
    records[0].id, records[1].id, records[2].id = "ccc", "aaa", "bbb"
    index.insert_images(records)
    assert [r.id for r in index.images_for_request("req")] == ["ccc", "aaa", "bbb"]


def test_workers_claiming_at_once_get_every_item_exactly_once(index):
    store = DatabaseJobStore(index)
    store.create(Job(id="job1", owner="alice", status=JobStatus.RUNNING, provider="echo", model="echo-1"),
                 [JobItem(job_id="job1", index=n, text=f"scene {n}") for n in range(40)])
    assert store.take("job1", "runner", now=1.0, stale_after=15)
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker():
        try:
            while (item := store.claim("job1", "runner")) is not None:
                with lock:
                    claimed.append(item.index)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(claimed) == list(range(40))
    assert {item.status for item in store.items("job1")} == {ItemStatus.INITIALIZING}
    assert store.claim("job1", "runner") is None


# -- the URL and its password ----------------------------------------------------------------------


def test_a_database_password_is_never_shown(pg_server, caplog, studio_home):
    from studio.config import Settings

    secret = "s3cr3t-pa55word"
    url = pg_server.url("nowhere").replace("studio@", f"studio:{secret}@")
    assert secret not in repr(Settings.load(studio_home, database_url=url))
    with pytest.raises(Exception) as failed:  # no such database: the server refuses the connection
        Database(url)
    assert secret not in str(failed.value) and secret not in repr(failed.value)
    assert secret not in caplog.text
    with pytest.raises(DatabaseUrlError) as refused:
        Database(f"mysql://studio:{secret}@db.example.com/studio")
    assert secret not in str(refused.value) and "***" in str(refused.value)
    database = Database(pg_server.create("shown").replace("studio@", f"studio:{secret}@"))
    try:
        assert secret not in database.display_url and secret not in repr(database)
    finally:
        database.close()


def test_a_forked_child_opens_its_own_connections(index):
    """A child process (a Celery prefork worker) never talks through the connections it inherited."""
    import os

    from sqlalchemy import text

    probe = "SELECT pg_backend_pid()" if index.db.dialect == "postgresql" else "SELECT 1"
    with index.read() as conn:  # a pooled connection, left in the pool for the child to inherit
        parent_conn = conn.connection.driver_connection
        conn.execute(text(probe))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got the parent's connection, then leave at once
        try:
            with index.read() as conn:
                conn.execute(text(probe))
                os.write(write, b"shared" if conn.connection.driver_connection is parent_conn else b"own")
        finally:
            os._exit(0)
    os.close(write)
    said = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert said == b"own"
    with index.read() as conn:  # and the parent's connection still works
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_the_index_follows_the_settings_it_is_given(database_url, studio_home):
    from studio.config import Settings

    settings = Settings.load(studio_home, database_url=database_url)
    index = HistoryIndex.for_settings(settings)
    try:
        assert index.db.dialect == ("postgresql" if database_url else "sqlite")
        assert index.path == (None if database_url else studio_home / "index.sqlite3")
    finally:
        index.close()

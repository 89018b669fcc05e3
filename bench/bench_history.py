"""History at scale: N images (20,000 by default; issue 13 asks for 100,000) on each database back end,
paged index queries vs loading everything, keyset (cursor) vs offset paging deep in the history,
thumbnails vs full images, and a 200-image zip export (stored vs deflated).

    python bench/bench_history.py [--images 100000] [--backends sqlite,postgresql]

``postgresql`` runs on a throwaway server started for the run (tests/pg_server.py: Debian's
postgresql, unix socket, durability off, as the test suite runs it), or on ``--postgres-url``.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import statistics
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from studio.exports import build_zip  # noqa: E402
from studio.imaging import thumbnail_bytes  # noqa: E402
from studio.service import Studio  # noqa: E402
from studio.types import ImageRecord  # noqa: E402

PROVIDERS = ["local", "openai", "replicate", "stability", "gemini"]
WORDS = "castle harbour forest neon city portrait dragon lighthouse desert robot garden winter".split()


def timed(fn, repeat: int = 5) -> float:
    """Median milliseconds of ``repeat`` runs."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def populate(studio: Studio, count: int, with_files: int) -> list[ImageRecord]:
    """``count`` records inserted in batches of 1,000; the first ``with_files`` get real 512x512 PNG
    files and thumbnails (queries never touch files; thumbnails and zips read them)."""
    noise = Image.effect_noise((512, 512), 64).convert("RGB")
    full = io.BytesIO()
    noise.save(full, format="PNG")
    full_bytes = full.getvalue()
    thumb = thumbnail_bytes(noise)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    batch: list[ImageRecord] = []
    records = []
    for i in range(count):
        created = start + timedelta(minutes=7 * i)
        record = ImageRecord(
            id=secrets.token_hex(8), owner="local", path="", sha256="", width=512, height=512, format="png",
            size_bytes=0, provider=PROVIDERS[i % 5], model=f"model-{i % 7}", mode="text-to-image",
            prompt=f"a {WORDS[i % 12]} with {WORDS[(i * 7) % 12]}, number {i}", params={"steps": 20},
            seed=i, category=["art", "product", ""][i % 3], tags=[WORDS[i % 12]] if i % 4 == 0 else [],
            cost=0.01 * (i % 5), generation_time=1.5, created_at=created.isoformat(timespec="microseconds"))
        if i < with_files:
            studio.storage.write_image_files(record, full_bytes, thumb)
        else:
            record.path, record.thumb_path = studio.storage.image_key(record), studio.storage.thumb_key(record)
            record.sha256, record.size_bytes = "0" * 64, len(full_bytes)
        batch.append(record)
        if len(batch) == 1000:
            studio.storage.index.insert_images(batch)
            records += batch
            batch = []
    if batch:
        studio.storage.index.insert_images(batch)
        records += batch
    return records


def bench_history(studio: Studio, args, backend: str) -> None:
    """The figures of one back end, on ``studio`` (its database is ``backend``)."""
    from studio.storage.index import HistoryQuery

    started = time.perf_counter()
    records = populate(studio, args.images, args.with_files)
    print(f"\n== {backend}: populated {len(records):,} rows ({args.with_files} with files) in "
          f"{time.perf_counter() - started:.1f} s")

    index = studio.storage.index
    if index.db.dialect == "postgresql":
        # What autovacuum does soon after a bulk load: statistics for the planner, and the visibility
        # map that lets COUNT(*) read the index alone.
        from sqlalchemy import text

        with index.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE images"))
            conn.execute(text("VACUUM ANALYZE image_tags"))
    last_offset = args.images - 50
    first_page = timed(lambda: studio.history(limit=50))
    deep_page = timed(lambda: studio.history(limit=50, offset=last_offset))
    # The same rows by keyset: the cursor of the row just before them (what "next page" hands on).
    cursor = index.query(HistoryQuery(limit=1, offset=last_offset - 1)).next_cursor
    keyset_last = timed(lambda: index.query(HistoryQuery(limit=50, after=cursor)))
    assert [r.id for r in index.query(HistoryQuery(limit=50, after=cursor)).items] == \
        [r.id for r in index.query(HistoryQuery(limit=50, offset=last_offset)).items]
    search = timed(lambda: studio.history(text="lighthouse", limit=50))
    search_rare = timed(lambda: studio.history(text="number 12345,", limit=50))
    by_tag = timed(lambda: studio.history(tag="dragon", limit=50))
    by_provider = timed(lambda: studio.history(provider="gemini", limit=50))

    def load_everything():  # what a history page without paging does
        import pandas as pd
        from sqlalchemy import text

        with index.read() as conn:
            rows = conn.execute(text("SELECT * FROM images")).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows])
        return frame[frame["prompt"].str.contains("lighthouse")].head(50)

    everything = timed(load_everything, repeat=3)
    page = records[:50]
    thumbs_ms = timed(lambda: [studio.storage.read_thumbnail(r) for r in page])
    full_ms = timed(lambda: [studio.storage.read(r) for r in page])
    thumb_bytes = sum(len(studio.storage.read_thumbnail(r)) for r in page)
    full_bytes = sum(len(studio.storage.read(r)) for r in page)

    print(f"History at {args.images:,} images on {backend} (median ms; each page also counts its total)")
    print(f"  first page of 50 (paged index query)         {first_page:8.1f}")
    print(f"  last page of 50 (offset {last_offset:,})          {deep_page:8.1f}")
    print(f"  last page of 50 (keyset cursor)              {keyset_last:8.1f}")
    print(f"  text search 'lighthouse', page of 50         {search:8.1f}")
    print(f"  text search, one match, page of 50           {search_rare:8.1f}")
    print(f"  tag filter, page of 50                       {by_tag:8.1f}")
    print(f"  provider filter, page of 50                  {by_provider:8.1f}")
    print(f"  alternative: load all rows into pandas       {everything:8.1f}  "
          f"({everything / search:.0f}x the paged search)")
    print(f"  50 thumbnails: {thumbs_ms:.1f} ms, {thumb_bytes / 1024:.0f} KiB  vs  50 full images: "
          f"{full_ms:.1f} ms, {full_bytes / 1024:.0f} KiB ({full_bytes / thumb_bytes:.0f}x the bytes to the browser)")
    if args.zip:
        bench_zip(studio, records)


def bench_zip(studio: Studio, records: list[ImageRecord]) -> None:
    selection = records[:200]
    stored_ms = timed(lambda: build_zip(selection, studio.storage.read), repeat=3)
    stored_size = len(build_zip(selection, studio.storage.read))

    def deflated():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for i, r in enumerate(selection):
                archive.writestr(f"{i:03d}.png", studio.storage.read(r))
        return buffer.getvalue()

    deflated_ms = timed(deflated, repeat=3)
    deflated_size = len(deflated())
    print("\nZip export of 200 images (512x512 PNG)")
    print(f"  studio (stored + manifest)  {stored_ms:8.1f} ms  {stored_size / 1e6:6.1f} MB")
    print(f"  alternative: deflate all    {deflated_ms:8.1f} ms  {deflated_size / 1e6:6.1f} MB  "
          f"({deflated_ms / stored_ms:.1f}x slower, {100 * (1 - deflated_size / stored_size):.1f}% smaller)")


def run_on(backend: str, args) -> None:
    """Run the figures with the studio's database on ``backend`` ("sqlite" or "postgresql")."""
    with tempfile.TemporaryDirectory() as home:
        def measure(label: str) -> None:  # on the database STUDIO_DATABASE_URL names now
            studio = Studio(home)
            try:
                bench_history(studio, args, label)
            finally:
                studio.close()

        if backend == "sqlite":
            os.environ.pop("STUDIO_DATABASE_URL", None)
            measure("SQLite (embedded)")
            return
        if args.postgres_url:
            os.environ["STUDIO_DATABASE_URL"] = args.postgres_url
            measure("PostgreSQL")
            return
        from tests.pg_server import start_server

        for server in start_server():
            os.environ["STUDIO_DATABASE_URL"] = server.create("bench")
            try:
                measure("PostgreSQL (throwaway server, fsync off)")
            finally:
                os.environ.pop("STUDIO_DATABASE_URL", None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--with-files", type=int, default=500, help="records that get real files")
    parser.add_argument("--backends", default="sqlite", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", default=None, help="an existing (empty) database instead of a throwaway one")
    parser.add_argument("--no-zip", dest="zip", action="store_false", help="skip the zip export figures")
    args = parser.parse_args()
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend not in ("sqlite", "postgresql"):
            parser.error(f"unknown back end {backend!r}: sqlite or postgresql")
        run_on(backend, args)


if __name__ == "__main__":
    main()

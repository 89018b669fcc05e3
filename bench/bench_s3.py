"""Uploading images: the S3 store (moto's S3 server, real HTTP) against the local file store.

    python bench/bench_s3.py [--images 200] [--side 512] [--threads 1,4]

Each "save" is what the studio does per image: the thumbnail, then the image (``Storage.write_image_files``
order), each ``FileStore.put``. For S3 that is a PUT carrying Content-MD5 and SHA-256 plus the HEAD that
verifies it; the row "S3 without verify" is a bare put_object of the same bytes, to show what the check
costs. moto runs as its own process (``moto_server``) on a free loopback port, so client and server
do not share an interpreter; it keeps objects in memory, so S3 figures here are protocol and client
costs, not a real network's or disk's. Local files are written with fsync, as the studio does.
Figures are wall seconds for all images and images per second.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.bench_save import photo_like  # noqa: E402
from studio.imaging import thumbnail_bytes  # noqa: E402
from studio.storage.files import LocalFileStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # a benchmark's start-up wait, not a test: poll until it answers
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            return server, url
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit("moto_server did not start")
            time.sleep(0.1)


def images(count: int, side: int) -> list[tuple[bytes, bytes]]:
    base = photo_like(side)
    made = []
    for index in range(count):
        image = base.rotate(index % 360)  # different bytes per image, same kind of content
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        made.append((buffer.getvalue(), thumbnail_bytes(image)))
    return made


def run(save, payloads, threads: int) -> float:
    def one(index: int) -> None:
        data, thumb = payloads[index]
        save(f"thumbs/2026/11/{index}.webp", thumb)
        save(f"images/bench/2026/11/29/{index}.png", data)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(payloads))))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--threads", default="1,4")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    payloads = images(args.images, args.side)
    megabytes = sum(len(d) + len(t) for d, t in payloads) / 1e6
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server, url = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = url
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        from studio.storage.s3 import S3FileStore

        print(f"{args.images} images of {args.side}x{args.side} PNG + WEBP thumbnail, {megabytes:.1f} MB in all")
        print(f"{'store':<22} {'threads':>7} {'seconds':>8} {'images/s':>9} {'MB/s':>6}")
        for threads in thread_counts:
            local = LocalFileStore(work / f"local-{threads}")
            bucket = f"bench-{threads}"
            store = S3FileStore(f"s3://{bucket}/studio")
            store.client.create_bucket(Bucket=bucket)

            def bare(key: str, data: bytes, client=store.client, bucket=bucket) -> None:
                client.put_object(Bucket=bucket, Key=f"bare/{key}", Body=data)

            for name, save in (("local files (fsync)", local.put), ("S3, verified put", store.put),
                               ("S3 without verify", bare)):
                seconds = run(save, payloads, threads)
                print(f"{name:<22} {threads:>7} {seconds:>8.2f} {args.images / seconds:>9.1f} "
                      f"{megabytes / seconds:>6.1f}")
            assert len(list(store.keys("images"))) == args.images
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

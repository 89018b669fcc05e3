"""S3 for tests: moto's server mode on a free loopback port, speaking the real S3 HTTP protocol to boto3.

``S3TestServer`` wraps moto's WSGI application in a thin layer that adds two things moto leaves out:

- presigned URLs expire: a GET signed with ``X-Amz-Date`` + ``X-Amz-Expires`` in the past is refused
  with 403 AccessDenied "Request has expired", as AWS documents it. The server's clock can be moved
  forward (``advance_clock``) so a test sees a URL expire without waiting.
- a faulty network or gateway: ``corrupt_next_puts(n)`` flips one byte in the body of the next ``n``
  object PUTs, after the client computed its checksums, so the store must notice on its own.

Fixtures (registered in tests/conftest.py): ``s3_server`` (one per test session and xdist worker),
``s3_storage_url`` (a fresh bucket and the AWS_* variables for this test, STUDIO_STORAGE_URL set), and
``storage_url`` (parametrised: "embedded" files in the data directory, or "s3").
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from calendar import timegm
from urllib.parse import parse_qs

import pytest

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}
# Variables from the developer's shell that would point boto3 elsewhere.
UNSET = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_CONFIG_FILE",
         "AWS_SHARED_CREDENTIALS_FILE")
EXPIRED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Request has expired</Message></Error>")


class S3TestServer:
    def __init__(self):
        self.clock_offset = 0.0  # seconds the server's clock runs ahead of the real one
        self._corrupt = 0
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.url = ""

    # -- control ------------------------------------------------------------------------------

    def advance_clock(self, seconds: float) -> None:
        self.clock_offset += seconds

    def corrupt_next_puts(self, count: int = 1) -> None:
        with self._lock:
            self._corrupt = count

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
                            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    # -- serving ------------------------------------------------------------------------------

    def start(self) -> "S3TestServer":
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        moto_app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._wrap(moto_app), threaded=True,
                                   request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def _wrap(self, app):
        def middleware(environ, start_response):
            query = parse_qs(environ.get("QUERY_STRING", ""))
            if "X-Amz-Expires" in query and self._expired(query):
                start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(EXPIRED_BODY)))])
                return [EXPIRED_BODY]
            if environ["REQUEST_METHOD"] == "PUT" and environ.get("PATH_INFO", "").strip("/").count("/") >= 1:
                self._maybe_corrupt(environ)
            return app(environ, start_response)

        return middleware

    def _expired(self, query: dict) -> bool:
        signed_at = timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
        return time.time() + self.clock_offset > signed_at + int(query["X-Amz-Expires"][0])

    def _maybe_corrupt(self, environ) -> None:
        with self._lock:
            if self._corrupt <= 0 or "HTTP_X_AMZ_COPY_SOURCE" in environ:
                return
            self._corrupt -= 1
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = bytearray(environ["wsgi.input"].read(length))
        if body:
            body[len(body) // 2] ^= 0xFF  # same length, other bytes
        environ["wsgi.input"] = io.BytesIO(bytes(body))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server for this test session (each xdist worker has its own)."""
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one line per request otherwise
    server = S3TestServer().start()
    try:
        yield server
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture
def s3_storage_url(s3_server, monkeypatch):
    """A fresh bucket for this test, boto3 pointed at the test server with fake credentials, and
    STUDIO_STORAGE_URL=s3://<bucket>/studio: the URL. The bucket is emptied afterwards."""
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    bucket = f"studio-test-{secrets.token_hex(6)}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/studio"
    monkeypatch.setenv("STUDIO_STORAGE_URL", url)
    try:
        yield url
    finally:
        s3_server.clock_offset = 0.0
        s3_server.corrupt_next_puts(0)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["embedded", "s3"])
def storage_url(request, monkeypatch):
    """Where the studio built after this fixture keeps its images: "embedded" (files in the data
    directory, STUDIO_STORAGE_URL unset: None) or "s3" (a bucket on the test S3 server: its URL).
    Request it before the studio fixture (``def test_x(storage_url, echo_studio)``)."""
    if request.param == "embedded":
        monkeypatch.delenv("STUDIO_STORAGE_URL", raising=False)
        return None
    return request.getfixturevalue("s3_storage_url")

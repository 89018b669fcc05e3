"""A loopback HTTP server for provider fakes: each fake is a routing function over real requests.

The fake sees exactly what the SDK sent (method, path, query, headers, body) and answers with real
status codes, headers and bodies. Every request is recorded so tests can check what was sent.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from PIL import Image


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def multipart(self) -> dict[str, list["Part"]]:
        """Form fields and files of a multipart/form-data body, by field name."""
        if not self.content_type.startswith("multipart/form-data"):
            raise ValueError(f"not multipart: {self.content_type!r}")
        raw = b"Content-Type: " + self.content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + self.body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        fields: dict[str, list[Part]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            filename = part.get_param("filename", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            fields.setdefault(name, []).append(Part(name, filename, part.get_content_type(), payload))
        return fields


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass
class Response:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeouts)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        body = self.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("content-type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        return body, headers


Handler = Callable[[Request], Response]


class FakeServer:
    """``with FakeServer(handler) as server:`` serves on ``server.url`` until the block ends."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Request] = []
        self._stop = threading.Event()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _serve(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query),
                                  {k.lower(): v for k, v in self.headers.items()}, body)
                fake.requests.append(request)
                try:
                    response = fake.handler(request)
                except Exception as exc:  # a bug in the fake should show, not hang the SDK
                    response = Response(599, {"fake_error": repr(exc)})
                if response.delay:
                    fake._stop.wait(response.delay)
                payload, headers = response.encoded()
                try:
                    self.send_response(response.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":  # HEAD: the headers a GET would have, no body
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, handler):
        """Answer with ``handler`` from now on, with an empty request log, and tell the handler its
        server (``handler.server``). Returns the handler."""
        self.handler, self.requests = handler, []
        handler.server = self
        return handler

    def __enter__(self) -> "FakeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def image_bytes(width: int, height: int, fmt: str = "PNG", color=(200, 80, 40)) -> bytes:
    """A real image of the requested size, as a fake provider would return it."""
    buffer = io.BytesIO()
    mode = "RGBA" if fmt.upper() == "PNG" else "RGB"
    Image.new(mode, (width, height), color if mode == "RGB" else (*color, 255)).save(buffer, format=fmt.upper())
    return buffer.getvalue()

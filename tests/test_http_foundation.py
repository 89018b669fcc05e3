"""The HTTP API's foundation (issue 12 §2): error bodies and status codes, who may call (tokens,
visitor mode), the per-caller rate limit, the upload bound, CORS, and that answers leak nothing."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("fastapi")

from fastapi import UploadFile  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from studio.config import Settings  # noqa: E402
from studio.errors import (BudgetExceeded, Busy, ContentBlocked, InvalidRequest, NotConfigured, NotFound,  # noqa: E402
                           ProviderFailure, ProviderTimeout, QuotaExhausted, RateLimited, StudioError,
                           UnusableResult)
from studio.http import create_app  # noqa: E402
from studio.http.errors import status_for  # noqa: E402
from studio.tokens import hash_token, tokens_for  # noqa: E402

SECRET = "sk-test-abcdefghijklmnop1234"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _client(studio, **settings) -> TestClient:
    app = create_app(studio, settings=Settings.load(studio.home, **settings))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def private(monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "private")


@pytest.fixture
def local(monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "local")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- error bodies and status codes ------------------------------------------------------------------


@pytest.mark.parametrize("error, status", [
    (InvalidRequest("bad"), 400), (NotFound("gone"), 404), (ContentBlocked("no"), 400),
    (BudgetExceeded("over"), 402), (RateLimited("slow down", retry_after=3), 429), (ProviderTimeout("late"), 504),
    (ProviderFailure("broke"), 502), (UnusableResult("empty"), 502), (QuotaExhausted("out"), 502),
    (NotConfigured("no key"), 503), (Busy("elsewhere"), 409), (StudioError("other"), 500)])
def test_each_core_error_has_its_status(error, status):
    assert status_for(error) == status


def test_core_errors_answer_json_with_their_kind_and_retry_after(echo_studio, local):
    client = _client(echo_studio)

    def raising(error):
        def route():
            raise error
        return route

    client.app.add_api_route("/api/v1/test/limited", raising(RateLimited("provider said wait", retry_after=2.2)))
    client.app.add_api_route("/api/v1/test/budget", raising(BudgetExceeded("today's budget is spent")))
    answer = client.get("/api/v1/test/limited")
    assert answer.status_code == 429
    assert answer.json() == {"error": "rate_limited", "detail": "provider said wait"}
    assert answer.headers["Retry-After"] == "3"
    answer = client.get("/api/v1/test/budget")
    assert (answer.status_code, answer.json()["error"]) == (402, "budget_exceeded")


def test_unknown_route_and_validation_errors_are_json(echo_studio, local):
    client = _client(echo_studio)
    answer = client.get("/api/v1/no-such-thing")
    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "detail": "no route GET /api/v1/no-such-thing"}
    answer = client.post("/api/v1/boards", json={"notes": "no name"})
    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == {"error", "detail"} and body["error"] == "invalid_request"
    assert "name" in body["detail"] and "Field required" in body["detail"]
    answer = client.post("/api/v1/boards", json={"name": "x", "colour": "red"})  # misspelt fields are refused
    assert answer.status_code == 400 and "colour" in answer.json()["detail"]
    answer = client.post("/api/v1/boards", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert answer.json()["detail"].startswith("the body is not valid JSON: ")


@pytest.mark.background_errors  # the error is logged on purpose, from the app's thread
def test_unexpected_error_is_500_internal_and_logged_redacted(echo_studio, local, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    client = _client(echo_studio)
    home = str(echo_studio.home)

    def broken():
        raise RuntimeError(f"failed with key {SECRET} reading {home}/index.db")

    client.app.add_api_route("/api/v1/test/broken", broken)
    with caplog.at_level(logging.ERROR, logger="studio.http"):
        answer = client.get("/api/v1/test/broken")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal", "detail": "unexpected server error; it has been logged"}
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "studio.http")
    assert "RuntimeError" in logged and "Traceback" in logged
    assert SECRET not in logged and home not in logged


# -- who may call ---------------------------------------------------------------------------------


def test_without_a_token_only_local_mode_answers(echo_studio, monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    answer = _client(echo_studio).get("/api/v1/boards")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized" and "Bearer" in answer.json()["detail"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    monkeypatch.delenv("STUDIO_VISITORS")  # unset is private too
    assert _client(echo_studio).get("/api/v1/boards").status_code == 401
    monkeypatch.setenv("STUDIO_VISITORS", "local")
    assert _client(echo_studio).get("/api/v1/boards").status_code == 200


def test_docs_answer_without_a_token(echo_studio, private):
    client = _client(echo_studio)
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "ist_nothing", "Bearer ist_unknown",
                                    "Bearer not-even-a-token"])
def test_malformed_or_unknown_tokens_are_401_even_in_local_mode(echo_studio, local, header):
    answer = _client(echo_studio).get("/api/v1/boards", headers={"Authorization": header})
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


def test_a_token_acts_for_its_owner_until_revoked(echo_studio, private):
    tokens = tokens_for(echo_studio)
    _row, token = tokens.create("user:alice@example.com", "script")
    client = _client(echo_studio)
    made = client.post("/api/v1/boards", json={"name": "alice's"}, headers=_bearer(token))
    assert made.status_code == 201
    assert [b.name for b in __import__("studio.boards").boards.Boards(echo_studio).list("user:alice@example.com")] \
        == ["alice's"]
    listed = client.get("/api/v1/tokens", headers=_bearer(token)).json()["tokens"]
    assert [t["name"] for t in listed] == ["script"] and listed[0]["last_used_at"]
    revoked = client.delete(f"/api/v1/tokens/{listed[0]['id']}", headers=_bearer(token))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    answer = client.get("/api/v1/boards", headers=_bearer(token))
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]


def test_tokens_are_stored_as_hashes_only(echo_studio, private):
    client = _client(echo_studio)
    _row, first = tokens_for(echo_studio).create("user:bob", "first")
    # A token cannot make tokens (F12: A12's fault 1); the CLI and the UIs make them.
    assert client.post("/api/v1/tokens", json={"name": "second"}, headers=_bearer(first)).status_code == 403
    _row, second = tokens_for(echo_studio).create("user:bob", "second")
    assert second.startswith("ist_") and len(second) == 4 + 43
    assert client.get("/api/v1/boards", headers=_bearer(second)).status_code == 200
    rows = echo_studio.storage.index.connection().execute("SELECT * FROM api_tokens").fetchall()
    stored = json.dumps([dict(row) for row in rows])
    assert first not in stored and second not in stored
    assert hash_token(second) in stored
    # the list never shows a token again
    assert second not in client.get("/api/v1/tokens", headers=_bearer(second)).text


def test_another_owners_token_cannot_be_revoked(echo_studio, private):
    tokens = tokens_for(echo_studio)
    alice, alice_token = tokens.create("user:alice", "a")
    _bob, bob_token = tokens.create("user:bob", "b")
    client = _client(echo_studio)
    answer = client.delete(f"/api/v1/tokens/{alice.id}", headers=_bearer(bob_token))
    assert answer.status_code == 404
    assert client.get("/api/v1/boards", headers=_bearer(alice_token)).status_code == 200


# -- rate limit -------------------------------------------------------------------------------------


def test_rate_limit_is_per_caller_with_retry_after(echo_studio, private):
    client = _client(echo_studio, api_rate_limit=2)
    clock = FakeClock()
    client.app.state.rate_limiter.clock = clock
    tokens = tokens_for(echo_studio)
    _a, first = tokens.create("user:a", "a")
    _b, second = tokens.create("user:b", "b")
    assert [client.get("/api/v1/boards", headers=_bearer(first)).status_code for _ in range(2)] == [200, 200]
    refused = client.get("/api/v1/boards", headers=_bearer(first))
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert refused.headers["Retry-After"] == "30"  # 2 a minute: one more in 30 s
    assert client.get("/api/v1/boards", headers=_bearer(second)).status_code == 200  # its own bucket
    clock.now += 29
    assert client.get("/api/v1/boards", headers=_bearer(first)).headers["Retry-After"] == "1"
    clock.now += 1
    assert client.get("/api/v1/boards", headers=_bearer(first)).status_code == 200


def test_rate_limit_zero_means_none(echo_studio, local):
    client = _client(echo_studio, api_rate_limit=0)
    assert {client.get("/api/v1/boards").status_code for _ in range(70)} == {200}


# -- upload bound -----------------------------------------------------------------------------------


def test_a_body_over_the_bound_is_413_and_nothing_is_written(echo_studio, local):
    client = _client(echo_studio, api_max_upload_bytes=1024)
    body = json.dumps({"name": "big", "notes": "x" * 2000}).encode()
    answer = client.post("/api/v1/boards", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large" and "1,024 bytes" in answer.json()["detail"]
    assert client.get("/api/v1/boards").json()["boards"] == []


def test_a_streamed_body_without_length_is_counted(echo_studio, local):
    client = _client(echo_studio, api_max_upload_bytes=1024)
    body = json.dumps({"name": "big", "notes": "x" * 3000}).encode()

    def chunks():  # no Content-Length: sent chunked
        for start in range(0, len(body), 256):
            yield body[start:start + 256]

    answer = client.post("/api/v1/boards", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in answer.request.headers}
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    assert client.get("/api/v1/boards").json()["boards"] == []
    small = json.dumps({"name": "small"}).encode()
    answer = client.post("/api/v1/boards", content=iter([small]), headers={"Content-Type": "application/json"})
    assert answer.status_code == 201


def test_a_false_content_length_is_refused(echo_studio, local):
    client = _client(echo_studio)
    answer = client.post("/api/v1/boards", content=b"{}", headers={"Content-Length": "lots",
                                                                    "Content-Type": "application/json"})
    assert answer.status_code == 400


# -- CORS -------------------------------------------------------------------------------------------


def test_cors_preflight_for_configured_origins_only(echo_studio, local):
    client = _client(echo_studio, api_cors_origins="https://app.example.com")
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = client.options("/api/v1/boards", headers={"Origin": "https://app.example.com", **ask})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = client.options("/api/v1/boards", headers={"Origin": "https://evil.example", **ask})
    assert "access-control-allow-origin" not in other.headers
    # answers, refusals included, carry the header for an allowed origin (a browser shows the error)
    answer = client.get("/api/v1/nope", headers={"Origin": "https://app.example.com"})
    assert answer.headers["access-control-allow-origin"] == "https://app.example.com"


def test_no_cors_headers_without_configured_origins(echo_studio, local):
    answer = _client(echo_studio).get("/api/v1/boards", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in answer.headers


def test_an_unknown_visitor_policy_stops_the_app(echo_studio, monkeypatch):
    from studio.config import SettingsError

    monkeypatch.setenv("STUDIO_VISITORS", "everyone")
    with pytest.raises(SettingsError, match="STUDIO_VISITORS"):
        create_app(echo_studio)


# -- serving ----------------------------------------------------------------------------------------


def test_gradio_is_mounted_at_ui_without_the_api_guard(echo_studio, private, monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    client = TestClient(create_app(echo_studio, gradio=True))
    page = client.get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/ui/config").json()["title"] == "Image Studio"
    assert client.get("/api/v1/boards").status_code == 401  # the API still needs a token


def test_serve_command_runs_uvicorn_with_the_app(echo_studio, monkeypatch):
    import uvicorn

    from studio.cli import main

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    assert main(["--home", str(echo_studio.home), "serve", "--port", "8123", "--host", "0.0.0.0", "--no-ui"]) == 0
    assert (served["host"], served["port"]) == ("0.0.0.0", 8123)
    client = TestClient(served["app"])
    assert client.get("/api/v1/boards").json() == {"boards": []}
    assert client.get("/ui/").status_code == 404  # --no-ui
    assert main(["--home", str(echo_studio.home), "serve"]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 8000)
    assert any(getattr(route, "path", "") == "/ui" for route in served["app"].routes)


def test_serve_refuses_a_bad_setting_before_listening(echo_studio, monkeypatch, capsys):
    import uvicorn

    from studio.cli import main

    monkeypatch.setenv("STUDIO_VISITORS", "everyone")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("it listened"))
    assert main(["--home", str(echo_studio.home), "serve", "--no-ui"]) == 2
    assert "STUDIO_VISITORS" in capsys.readouterr().err
    assert main(["--home", str(echo_studio.home), "serve", "--port", "70000"]) == 2


def test_token_commands(echo_studio, capsys):
    from studio.cli import main

    home = ["--home", str(echo_studio.home)]
    assert main([*home, "token", "create", "laptop", "--user", "user:alice@example.com"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("ist_") and "not shown again" in err
    assert main([*home, "token", "list", "--user", "user:alice@example.com", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["tokens"]
    assert row["name"] == "laptop" and "token" not in row and "owner" not in row
    assert main([*home, "token", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no tokens"  # local has none
    assert main([*home, "token", "revoke", row["id"]]) == 2  # not local's
    assert main([*home, "token", "revoke", row["id"], "--user", "user:alice@example.com"]) == 0
    assert tokens_for(echo_studio).verify(token) is None
    assert main([*home, "token", "create", " "]) == 2


def test_a_streamed_multipart_upload_over_the_bound_is_413_not_a_parse_error(echo_studio, local):
    # FastAPI answers an error while reading a form with its own 400: the bound's 413 must win.
    client = _client(echo_studio, api_max_upload_bytes=1024)
    seen = []

    def upload(image: UploadFile):
        seen.append(image.filename)
        return {"ok": True}

    client.app.add_api_route("/api/v1/test/upload", upload, methods=["POST"])
    boundary = "studio-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * 4096 + f"\r\n--{boundary}--\r\n".encode()
    answer = client.post("/api/v1/test/upload", content=iter([body[i:i + 512] for i in range(0, len(body), 512)]),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large", answer.text
    assert seen == []

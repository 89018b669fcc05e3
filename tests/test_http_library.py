"""The /api/v1 library routes (issue 12 §2): history with filters and cursor paging, images (file,
thumbnail, metadata, tags, delete), mood boards, tokens; another visitor's things are 404; no answer
holds an owner id, e-mail, token or server path."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from studio.http import create_app  # noqa: E402
from studio.tokens import tokens_for  # noqa: E402
from studio.types import GenerationRequest  # noqa: E402
from tests.helpers import readme_bash  # noqa: E402

ALICE = "user:alice@example.com"  # signed-in owners are e-mail addresses: they must never show
BOB = "user:bob@example.org"


class Recording:
    """A TestClient whose every JSON answer is kept, to scan them all for leaks at the end."""

    def __init__(self, client: TestClient, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.answers: list[str] = []

    def __getattr__(self, method: str):
        def call(url: str, **kwargs):
            answer = getattr(self.client, method)(url, headers=self.headers, **kwargs)
            if answer.headers.get("content-type", "").startswith("application/json"):
                self.answers.append(answer.text)
            return answer
        return call


@pytest.fixture
def api(echo_studio, monkeypatch):
    """``(alice, bob, images)``: two token holders on one private studio; alice owns three images
    (tags red/blue/red), bob one, and bob's second image is shared."""
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    tokens = tokens_for(echo_studio)
    client = TestClient(create_app(echo_studio), raise_server_exceptions=False)
    alice = Recording(client, tokens.create(ALICE, "alice")[1])
    bob = Recording(client, tokens.create(BOB, "bob")[1])
    images = {}
    for name, owner, tags in (("cat", ALICE, ["red"]), ("dog", ALICE, ["blue"]), ("owl", ALICE, ["red"]),
                              ("fox", BOB, []), ("sea", BOB, [])):
        result = echo_studio.generate(GenerationRequest(prompt=f"a {name}", provider="echo", user=owner, tags=tags))
        images[name] = result.images[0].id
    echo_studio.update_image(images["sea"], BOB, shared=True)
    yield alice, bob, images
    for caller in (alice, bob):
        for text in caller.answers:
            for secret in (ALICE, BOB, "alice@example.com", "bob@example.org", str(echo_studio.home), "/tmp/",
                           caller.headers["Authorization"][7:]):
                assert secret not in text, f"{secret!r} leaked in {text[:300]}"
            assert '"owner"' not in text and '"path"' not in text and '"thumb_path"' not in text


def test_history_pages_with_a_cursor_and_shows_shared_images(api):
    alice, _bob, images = api
    first = alice.get("/api/v1/history", params={"limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert body["total"] == 4  # her three and bob's shared one
    assert [item["prompt"] for item in body["items"]] == ["a sea", "a owl"]
    assert body["items"][0]["editable"] is False and body["items"][1]["editable"] is True
    assert body["items"][1]["url"] == f"/api/v1/images/{images['owl']}/file"
    second = alice.get("/api/v1/history", params={"limit": 2, "cursor": body["next_cursor"]}).json()
    assert [item["prompt"] for item in second["items"]] == ["a dog", "a cat"]
    assert second["next_cursor"] is None
    assert "a fox" not in json.dumps([body, second])  # bob's private image


def test_history_filters_and_bad_values(api):
    alice, _bob, _images = api
    red = alice.get("/api/v1/history", params={"tag": "RED"}).json()
    assert sorted(item["prompt"] for item in red["items"]) == ["a cat", "a owl"]
    assert alice.get("/api/v1/history", params={"text": "dog"}).json()["total"] == 1
    assert alice.get("/api/v1/history", params={"provider": "nobody"}).json()["total"] == 0
    assert alice.get("/api/v1/history", params={"date_from": "2000-01-01", "date_to": "2999-12-31"}).json()["total"] == 4
    assert alice.get("/api/v1/history", params={"date_to": "2000-01-01"}).json()["total"] == 0
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "banana"}, {"limit": "many"}, {"date_from": "yesterday"},
                   {"date_to": "2026-13-01"}):
        answer = alice.get("/api/v1/history", params=params)
        assert answer.status_code == 400, params
        assert answer.json()["error"] == "invalid_request"


def test_history_csv_export(api):
    alice, _bob, _images = api
    answer = alice.get("/api/v1/history/export.csv", params={"tag": "red"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert sorted(row["prompt"] for row in rows) == ["a cat", "a owl"]
    assert ALICE not in answer.text and "owner" not in rows[0]


def test_image_record_file_thumbnail_and_metadata(api, echo_studio):
    alice, _bob, images = api
    image_id = images["cat"]
    record = alice.get(f"/api/v1/images/{image_id}").json()
    assert record["prompt"] == "a cat" and record["tags"] == ["red"] and record["editable"] is True
    file = alice.get(f"/api/v1/images/{image_id}/file")
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert file.headers["cache-control"] == "private"
    assert file.content == echo_studio.image_bytes(echo_studio.get_image(image_id, ALICE))
    assert Image.open(io.BytesIO(file.content)).size == (record["width"], record["height"])
    thumbnail = alice.get(f"/api/v1/images/{image_id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"].startswith("image/")
    Image.open(io.BytesIO(thumbnail.content)).verify()
    metadata = alice.get(f"/api/v1/images/{image_id}/metadata").json()
    assert metadata["generation"]["prompt"] == "a cat"


def test_tags_put_and_patch(api):
    alice, _bob, images = api
    url = f"/api/v1/images/{images['dog']}/tags"
    assert alice.put(url, json={"tags": ["Pets", "good boy"]}).json()["tags"] == ["pets", "good boy"]
    assert alice.patch(url, json={"add": ["park"], "remove": ["PETS"]}).json()["tags"] == ["good boy", "park"]
    assert alice.get("/api/v1/history", params={"tag": "park"}).json()["total"] == 1
    assert alice.put(url, json={"tags": "not a list"}).status_code == 400
    shared = alice.patch(f"/api/v1/images/{images['dog']}", json={"shared": True, "category": "animals"}).json()
    assert shared["shared"] is True and shared["category"] == "animals"
    assert alice.patch(f"/api/v1/images/{images['dog']}", json={}).status_code == 400


def test_another_visitors_image_is_404_and_unchanged(api, echo_studio):
    alice, bob, images = api
    private = images["cat"]
    for method, url, kwargs in (
            ("get", f"/api/v1/images/{private}", {}), ("get", f"/api/v1/images/{private}/file", {}),
            ("get", f"/api/v1/images/{private}/thumbnail", {}), ("get", f"/api/v1/images/{private}/metadata", {}),
            ("put", f"/api/v1/images/{private}/tags", {"json": {"tags": ["mine"]}}),
            ("patch", f"/api/v1/images/{private}/tags", {"json": {"add": ["mine"]}}),
            ("patch", f"/api/v1/images/{private}", {"json": {"shared": True}}),
            ("delete", f"/api/v1/images/{private}", {})):
        answer = getattr(bob, method)(url, **kwargs)
        assert answer.status_code == 404, (method, url)
        assert answer.json() == {"error": "not_found", "detail": f"no image with id {private!r}"}
    # a shared image can be seen, not changed or deleted
    shared = images["sea"]
    assert alice.get(f"/api/v1/images/{shared}").status_code == 200
    assert alice.get(f"/api/v1/images/{shared}/file").status_code == 200
    assert alice.put(f"/api/v1/images/{shared}/tags", json={"tags": ["x"]}).status_code == 404
    assert alice.delete(f"/api/v1/images/{shared}").status_code == 404
    record = echo_studio.get_image(private, ALICE)
    assert record.tags == ["red"] and not record.shared
    assert echo_studio.get_image(shared, BOB).tags == []


def test_delete_image(api, echo_studio):
    alice, _bob, images = api
    answer = alice.delete(f"/api/v1/images/{images['owl']}")
    assert answer.status_code == 200 and answer.json() == {"deleted": images["owl"]}
    assert alice.get(f"/api/v1/images/{images['owl']}").status_code == 404
    assert echo_studio.storage.get(images["owl"]) is None


def test_mood_board_flow(api):
    alice, bob, images = api
    made = alice.post("/api/v1/boards", json={"name": "Animals", "notes": "for the poster"})
    assert made.status_code == 201
    board_id = made.json()["id"]
    assert alice.post("/api/v1/boards", json={"name": "Animals"}).status_code == 400  # same name
    added = alice.post(f"/api/v1/boards/{board_id}/images",
                       json={"image_ids": [images["cat"], images["dog"], images["sea"]]}).json()
    assert added["added"] == 3 and added["board"]["item_count"] == 3
    # bob's private image cannot be added; nothing is added then
    answer = alice.post(f"/api/v1/boards/{board_id}/images", json={"image_ids": [images["owl"], images["fox"]]})
    assert answer.status_code == 404
    assert alice.get(f"/api/v1/boards/{board_id}").json()["item_count"] == 3
    reordered = alice.put(f"/api/v1/boards/{board_id}/order", json={"image_ids": [images["sea"], images["cat"]]})
    assert [item["id"] for item in reordered.json()["items"]] == [images["sea"], images["cat"], images["dog"]]
    renamed = alice.patch(f"/api/v1/boards/{board_id}", json={"name": "Beasts"}).json()
    assert renamed["name"] == "Beasts" and renamed["notes"] == "for the poster"
    removed = alice.delete(f"/api/v1/boards/{board_id}/images/{images['cat']}")
    assert removed.status_code == 200 and removed.json()["item_count"] == 2
    assert alice.delete(f"/api/v1/boards/{board_id}/images/{images['cat']}").status_code == 404
    collage = alice.get(f"/api/v1/boards/{board_id}/collage", params={"cell": 64})
    assert collage.status_code == 200 and collage.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(collage.content)).width == 2 * 64 + 3 * 8
    jpeg = alice.get(f"/api/v1/boards/{board_id}/collage", params={"format": "jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert alice.get(f"/api/v1/boards/{board_id}/collage", params={"format": "gif"}).status_code == 400
    exported = alice.get(f"/api/v1/boards/{board_id}/export.zip")
    assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(exported.content)) as archive:
        names = archive.namelist()
        assert "board.json" in names and "collage.png" in names
        text = b"".join(archive.read(name) for name in names if name.endswith((".json", ".csv"))).decode()
        assert ALICE not in text and BOB not in text
    # bob sees none of it
    assert bob.get("/api/v1/boards").json() == {"boards": []}
    for method, url in (("get", f"/api/v1/boards/{board_id}"), ("patch", f"/api/v1/boards/{board_id}"),
                        ("delete", f"/api/v1/boards/{board_id}"), ("get", f"/api/v1/boards/{board_id}/collage"),
                        ("get", f"/api/v1/boards/{board_id}/export.zip")):
        kwargs = {"json": {"name": "mine"}} if method == "patch" else {}
        assert getattr(bob, method)(url, **kwargs).status_code == 404, url
    assert [b["name"] for b in alice.get("/api/v1/boards").json()["boards"]] == ["Beasts"]
    assert alice.delete(f"/api/v1/boards/{board_id}").json() == {"deleted": board_id}
    assert alice.get("/api/v1/boards").json() == {"boards": []}


def test_token_routes_for_the_caller_only(api, echo_studio):
    alice, bob, _images = api
    assert alice.post("/api/v1/tokens", json={"name": "ci"}).status_code == 403  # tokens make no tokens
    made, secret = tokens_for(echo_studio).create(ALICE, "ci")  # the CLI's and the UIs' way
    listed = alice.get("/api/v1/tokens").json()["tokens"]
    assert sorted(t["name"] for t in listed) == ["alice", "ci"]
    assert secret not in json.dumps(listed)
    assert [t["name"] for t in bob.get("/api/v1/tokens").json()["tokens"]] == ["bob"]
    assert bob.delete(f"/api/v1/tokens/{made.id}").status_code == 404  # another owner's: as if none
    assert alice.delete(f"/api/v1/tokens/{made.id}").status_code == 403  # not the token alice is using


def test_metadata_is_the_stored_images_even_if_a_file_has_its_name(api, monkeypatch, tmp_path):
    # Studio.info reads a string naming an existing file as that file: the route must never hand it the id.
    alice, _bob, images = api
    monkeypatch.chdir(tmp_path)
    (tmp_path / images["cat"]).write_bytes(b"not an image of the studio")
    metadata = alice.get(f"/api/v1/images/{images['cat']}/metadata")
    assert metadata.status_code == 200 and metadata.json()["generation"]["prompt"] == "a cat"


# -- the README's examples ------------------------------------------------------------------------

README_SECTION = "### /api/v1: history, images, mood boards, tokens"


@pytest.fixture
def live_server(echo_studio, monkeypatch):
    """The API over ``echo_studio`` served by uvicorn on a free port in this process (private
    visitors: a token is needed); yields its base URL."""
    import uvicorn

    monkeypatch.setenv("STUDIO_VISITORS", "private")
    echo_studio.settings.default_provider = "echo"  # the examples name no provider
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(echo_studio), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    ready = threading.Event()  # never set: a timed wait between looks at uvicorn's own flag
    for _ in range(600):
        if server.started or not thread.is_alive():
            break
        ready.wait(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_library_examples_run_as_written(live_server, echo_studio, tmp_path):
    """Every curl example of the section, in order, in one shell; a failing request (4xx/5xx) stops it."""
    _row, token = tokens_for(echo_studio).create(ALICE, "readme")
    prelude = (f"set -euo pipefail\ncurl() {{ command curl --silent --show-error --fail-with-body -w '\\n' \"$@\"; }}\n"
               f"API={live_server}/api/v1\nAUTH='Authorization: Bearer {token}'\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", prelude + readme_bash(README_SECTION)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, env=env)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert (tmp_path / "image.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "board.zip").read_bytes()[:2] == b"PK"
    assert (tmp_path / "history.csv").read_text().startswith("file,id,")
    assert [t.name for t in tokens_for(echo_studio).list(ALICE) if t.revoked] == ["readme"]  # it revoked itself
    assert ALICE not in done.stdout and token not in done.stdout

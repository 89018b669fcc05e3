"""Owner ids never leave the server, and one visitor policy decides for both front ends.

The leak tests act as visitor A on each front end, collect every kind of output A can take away
(the stored image files and thumbnails, ``info``, the gallery, board and batch zips with their
manifests and CSV, the enriched script, webhook bodies, API answers, the History page), scan it all
for A's secret and stored owner id, then try every identifier-like value found in it as visitor B's
secret on both front ends: B must see nothing of A's.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from studio.boards import Boards
from studio.exports import records_to_csv
from studio.gallery import Gallery
from studio.jobs import JobManager
from studio.metadata import read_metadata
from studio.service import Studio
from studio.types import GenerationRequest
from studio.webhooks import WebhookDispatcher
from tests.fakes.http import FakeServer, Response

ROOT = Path(__file__).resolve().parent.parent
GENERATE, HISTORY = "pages/1_Generate.py", "pages/4_History.py"
WEBHOOK_SECRET = "whsec-identity-test-0123456789"
# Anything that could be an id, a token or a hash: the values an attacker would try.
_CANDIDATE = re.compile(r"[A-Za-z0-9_:\-]{16,}")


# -- helpers ---------------------------------------------------------------------------------------


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "json", "code")
             for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def _unpacked(name: str, data: bytes | str) -> dict[str, str]:
    """Every output as text: raw bytes (latin-1, so any embedded string shows), decoded metadata, and
    each member of a zip (recursively)."""
    if isinstance(data, str):
        return {name: data}
    found = {name: data.decode("latin-1")}
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                found.update(_unpacked(f"{name}/{member}", archive.read(member)))
    else:
        try:
            found[f"{name}#metadata"] = json.dumps(read_metadata(data), default=str)
        except Exception:  # not an image: its raw text is already in
            pass
    return found


def _leaks(outputs: dict[str, bytes | str], identifiers: set[str]) -> list[str]:
    texts = {k: v for name, data in outputs.items() for k, v in _unpacked(name, data).items()}
    return sorted(f"{name} carries {value!r}" for name, text in texts.items() for value in identifiers
                  if value and value.lower() in text.lower())


def _candidates(outputs: dict[str, bytes | str]) -> set[str]:
    texts = [v for name, data in outputs.items() for v in _unpacked(name, data).values()]
    found = {m for text in texts for m in _CANDIDATE.findall(text)}
    # Also each piece after a prefix ("visitor:abc" -> "abc"), as an attacker would.
    return found | {part for value in found for part in re.split(r"[:\-]", value) if len(part) >= 16}


def _identifiers(secret: str, owner: str) -> set[str]:
    pieces = {secret, owner}
    pieces.update(part for part in re.split(r"[:\-]", owner) if len(part) >= 16)
    return pieces


class _Receiver:
    def __init__(self):
        self.bodies: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            self.bodies.append(request.body.decode("utf-8"))
        return Response(200, {"ok": True})


def _studio_outputs(studio: Studio, owner: str, record, gallery: Gallery | None = None) -> dict[str, bytes | str]:
    """Everything the core hands out for ``owner``'s image ``record``: files, info, zips, CSV, a
    finished batch job (zip, script, result) and its webhook bodies."""
    outputs: dict[str, bytes | str] = {
        "image file": studio.image_bytes(record),
        "thumbnail": studio.storage.read_thumbnail(record),
        "info": json.dumps(studio.info(record.id, owner), default=str),
        "csv": records_to_csv([record]),
    }
    gallery = gallery or Gallery()
    gallery.add([record.id])
    gallery.select_all()
    outputs["gallery zip"] = gallery.zip_selection(studio, owner)
    boards = Boards(studio)
    board = boards.create(owner, "mine")
    boards.add(owner, board.id, [record.id])
    outputs["board zip"] = boards.export_zip(owner, board.id)
    receiver = _Receiver()
    manager = JobManager(studio, webhooks=WebhookDispatcher(lambda: WEBHOOK_SECRET, base_delay=0.05))
    try:
        with FakeServer(receiver) as server:
            job = manager.submit("00:00:01 a lighthouse\n00:00:02 waves", provider="echo", user=owner,
                                 webhook=f"{server.url}/hook", concurrency=1)
            manager.wait(job.id, owner, timeout=20)
            assert manager.webhooks.flush(10)
        outputs["job zip"] = manager.export_zip(job.id, owner)
        outputs["job script"] = json.dumps(manager.enriched_script(job.id, owner), default=str)
        outputs["job result"] = json.dumps(manager.result(job.id, owner), default=str)
    finally:
        manager.close()
    assert receiver.bodies, "the job sent no webhook"
    outputs.update({f"webhook {i}": body for i, body in enumerate(receiver.bodies)})
    return outputs


@pytest.fixture
def private_home(app_home, monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    monkeypatch.setenv("STUDIO_WEBHOOK_SECRET", WEBHOOK_SECRET)
    return app_home


def _history_as(secret: str, **session) -> AppTest:
    at = AppTest.from_file(str(ROOT / HISTORY), default_timeout=30)
    at.query_params["visitor"] = secret
    for name, value in session.items():
        at.session_state[name] = value
    return at.run()


# -- Streamlit -------------------------------------------------------------------------------------


def test_nothing_a_streamlit_visitor_takes_away_names_them_or_lets_another_in(private_home):
    at = AppTest.from_file(str(ROOT / GENERATE), default_timeout=30).run()
    at.text_area(key="gen_prompt").input("a very private lighthouse").run()
    next(b for b in at.button if b.label == "Generate").click().run()
    for _ in range(200):
        if not any(b.label == "Cancel" for b in at.button):
            break
        at.run()
    secret = at.query_params["visitor"]
    studio = Studio(private_home)
    try:
        [record] = studio.history(owner=None).items
        owner = record.owner
        identifiers = _identifiers(secret, owner)
        key_file = Path(private_home) / "identity.key"
        if key_file.exists():  # the server's key must never leave either
            identifiers.add(key_file.read_text().strip())
        assert secret not in owner  # what proves who A is is not what is stored

        page = _history_as(secret, hist_selected=record.id)
        assert not page.exception, [e.value for e in page.exception]
        assert "a very private lighthouse" in _texts(page)  # A sees their own image and its details
        outputs = {"history page": _texts(page), "generate page": _texts(at),
                   **_studio_outputs(studio, owner, record, at.session_state["_studio_gallery"])}
        assert not _leaks(outputs, identifiers)

        for value in sorted(_candidates(outputs) | identifiers - {secret}):
            stranger = _history_as(value)
            assert "No images yet" in _texts(stranger), f"{value!r} opened A's history"
    finally:
        studio.close()


def test_an_old_style_visitor_id_from_a_shared_image_no_longer_opens_anything(private_home):
    """Images made before carried ``visitor-<32 hex>`` and the hex was the visitor's secret: those
    rows stay (the operator can reach them from the CLI) but no browser reaches them any more."""
    leaked = "0123456789abcdef0123456789abcdef"
    studio = Studio(private_home)
    try:
        studio.generate(GenerationRequest(prompt="made before the fix", provider="echo", user=f"visitor-{leaked}",
                                          width=64, height=64))
    finally:
        studio.close()
    page = _history_as(leaked)
    assert "No images yet" in _texts(page)
    assert page.query_params["visitor"] != leaked  # the browser was given a new secret


def test_a_signed_in_users_e_mail_leaves_in_nothing(app_home, monkeypatch):
    monkeypatch.setenv("STUDIO_WEBHOOK_SECRET", WEBHOOK_SECRET)
    at = AppTest.from_file(str(ROOT / GENERATE), default_timeout=30)
    at.user = {"is_logged_in": True, "email": "Alice@Example.com", "name": "Alice"}
    at.run()
    at.text_area(key="gen_prompt").input("alice's picture").run()
    next(b for b in at.button if b.label == "Generate").click().run()
    for _ in range(200):
        if not any(b.label == "Cancel" for b in at.button):
            break
        at.run()
    studio = Studio(app_home)
    try:
        [record] = studio.history(owner=None).items
        outputs = _studio_outputs(studio, record.owner, record)
        assert not _leaks(outputs, {"alice@example.com", record.owner})
    finally:
        studio.close()


# -- the identity key ------------------------------------------------------------------------------


def test_the_identity_key_is_made_once_private_to_the_owner_and_shared_by_racing_processes(tmp_path, monkeypatch):
    from studio import identity

    monkeypatch.delenv(identity.KEY_SETTING, raising=False)
    start = threading.Barrier(8)
    keys: list[bytes] = []

    def load():
        start.wait()
        keys.append(identity._load_key(tmp_path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    key_file = tmp_path / identity.KEY_FILE_NAME
    assert len(set(keys)) == 1 and keys[0] == key_file.read_bytes().strip()
    assert key_file.stat().st_mode & 0o077 == 0  # readable by the server's user only
    assert [p.name for p in tmp_path.iterdir()] == [identity.KEY_FILE_NAME]  # no temporary files left
    ids = identity.VisitorIds(keys[0])
    secret = identity.new_visitor_secret()
    assert ids.owner_for_secret(secret) == identity.VisitorIds(keys[0]).owner_for_secret(secret)
    assert ids.owner_for_secret(secret) != identity.VisitorIds(b"another key, 32 characters long!").owner_for_secret(secret)
    assert key_file.read_text().strip() not in repr(ids)

    monkeypatch.setenv(identity.KEY_SETTING, "short")
    with pytest.raises(ValueError, match="at least 32"):
        identity._load_key(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="not a visitor secret"):
        ids.owner_for_secret("0123456789abcdef0123456789abcdef")  # the old format


# -- the visitor policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("remote_ip, headers", [
    ("127.0.0.1", {}),  # a browser on this machine (Streamlit reports it as no address at all)
    ("::1", {}),
    ("203.0.113.7", {}),  # a remote visitor
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}),  # a remote visitor behind a proxy on this host
])
@pytest.mark.parametrize("space", [None, "someone/studio"])
def test_streamlit_visitors_are_private_unless_local_is_set(app_home, monkeypatch, remote_ip, headers, space):
    import streamlit.runtime.context as st_context

    monkeypatch.delenv("STUDIO_VISITORS", raising=False)
    if space:
        monkeypatch.setenv("SPACE_ID", space)
    else:
        monkeypatch.delenv("SPACE_ID", raising=False)
    # The connection as Streamlit's own context sees it (st.context.ip_address maps loopback to None).
    monkeypatch.setattr(st_context, "_get_client_context", lambda: SimpleNamespace(remote_ip=remote_ip))
    monkeypatch.setattr(st_context.ContextProxy, "headers", property(lambda self: headers))
    studio = Studio(app_home)
    try:
        studio.generate(GenerationRequest(prompt="the operator's own image", provider="echo", width=64, height=64))
    finally:
        studio.close()
    at = AppTest.from_file(str(ROOT / HISTORY), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No images yet" in _texts(at) and "private visitor" in _texts(at)
    assert at.query_params.get("visitor")

    monkeypatch.setenv("STUDIO_VISITORS", "local")
    local = AppTest.from_file(str(ROOT / HISTORY), default_timeout=30).run()
    assert "1 image" in _texts(local) and "visitor" not in local.query_params


def test_an_unknown_visitor_policy_is_a_clear_error_on_the_page(app_home, monkeypatch):
    monkeypatch.setenv("STUDIO_VISITORS", "lcoal")
    at = AppTest.from_file(str(ROOT / HISTORY), default_timeout=30).run()
    assert not at.exception
    assert any("STUDIO_VISITORS='lcoal' is not a visitor policy" in e.value for e in at.error)


# -- Gradio ----------------------------------------------------------------------------------------


class _Request:
    """What ``gr.Request`` tells the app about an event: no login, the client's session hash."""

    username = None

    def __init__(self, session_hash: str):
        self.session_hash = session_hash


def test_nothing_a_gradio_visitor_takes_away_names_them_or_lets_another_in(private_home, tmp_path, monkeypatch):
    import gradio_app
    from gradio_ui.endpoints import public_image, result_json
    from gradio_ui.identity import Access, new_token
    from gradio_ui.session_gallery import caption, describe

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    studio = Studio(private_home)
    try:
        ctx = gradio_app.build_app(studio, access=Access.from_env(), export_dir=tmp_path / "exports").studio_context
        secret = new_token()  # what the browser keeps in localStorage
        owner = ctx.owner({ctx.token: secret}, _Request("session-of-a"))
        made = ctx.actions.generate(owner, "a very private lighthouse", "echo")
        [record] = made.images
        page = ctx.actions.history(owner)
        exported = Path(ctx.actions.files(made.images, owner)[0])
        outputs = {
            "generate answer": json.dumps(result_json(made), default=str),
            "history answer": json.dumps({"items": [public_image(r) for r in page.items]}, default=str),
            "details panel": describe(record) + caption(record),
            "downloaded image": exported.read_bytes(),
            "download path": str(exported),
            "thumbnail path": ctx.exporter.thumbnail_file(record, owner),
            "history zip": Path(ctx.exporter.zip_file(page.items, owner, "history")).read_bytes(),
            **_studio_outputs(studio, owner, record),
        }
        assert secret != owner and secret not in owner
        assert not _leaks(outputs, _identifiers(secret, owner))

        for value in sorted(_candidates(outputs) | _identifiers(secret, owner) - {secret}):
            for stranger in (ctx.owner({ctx.token: value}, _Request("session-of-b")),  # as the browser token
                             ctx.owner({}, _Request(value))):  # as an API client's session hash
                assert stranger != owner, f"{value!r} became A"
                assert ctx.actions.history(stranger).total == 0
                assert ctx.boards.list(stranger) == [] and ctx.actions.jobs.list(stranger) == []
    finally:
        from studio.jobs import get_manager

        get_manager(studio).close(wait=2)
        studio.close()


# -- files written by earlier versions --------------------------------------------------------------


def _old_embedded_json(record):
    """What versions before this fix embedded: the whole record, owner included."""
    data = record.to_dict()
    for name in ("path", "key", "sha256", "size_bytes", "thumb_path", "cache_key"):
        data.pop(name, None)
    return data


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_images_stored_by_earlier_versions_leave_without_their_owner(app_home, monkeypatch, output_format):
    from PIL import Image, ImageChops

    import studio.metadata as metadata_module

    owner = 'user:alice@example.com'
    studio = Studio(app_home)
    try:
        with monkeypatch.context() as old_version:
            old_version.setattr(metadata_module, "embedded_json", _old_embedded_json)
            [record] = studio.generate(GenerationRequest(prompt="an old picture", provider="echo", user=owner,
                                                         width=64, height=64, output_format=output_format)).images
        stored = studio.storage.read(record)
        assert owner.encode() in stored  # the file on disk is as the old version wrote it

        served = studio.image_bytes(record)
        assert len(served) == len(stored) and owner.encode() not in served
        meta = read_metadata(served)  # still a valid file whose metadata reads back
        assert meta["studio"]["prompt"] == "an old picture" and not meta["studio"].get("owner")
        with Image.open(io.BytesIO(stored)) as before, Image.open(io.BytesIO(served)) as after:
            assert ImageChops.difference(before.convert("RGB"), after.convert("RGB")).getbbox() is None
        gallery = Gallery()
        gallery.add([record.id])
        gallery.select_all()
        outputs = {"gallery zip": gallery.zip_selection(studio, owner), "info": json.dumps(studio.info(record.id, owner)),
                   "board zip": _board_zip(studio, owner, record)}
        assert not _leaks(outputs, {owner, "alice@example.com"})
    finally:
        studio.close()


def _board_zip(studio: Studio, owner: str, record) -> bytes:
    boards = Boards(studio)
    board = boards.create(owner, "old")
    boards.add(owner, board.id, [record.id])
    return boards.export_zip(owner, board.id)

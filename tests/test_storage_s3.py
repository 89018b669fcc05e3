"""Images in S3-compatible storage (issue 13): the S3 file store against moto's S3 server
(tests/s3_server.py), which speaks the real S3 HTTP protocol to boto3.

Verified uploads, presigned URLs that work and expire, no public access, paging, the factory, and
both web front ends showing images that live only in the bucket. The contract shared with the local
store (crash windows, repair on both sides) runs in tests/test_storage.py once per store."""

from __future__ import annotations

import base64
import hashlib
import io
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from studio.config import Settings, SettingsError
from studio.service import Studio
from studio.storage import file_store_for
from studio.storage.files import LocalFileStore, StorageError
from studio.storage.s3 import S3FileStore, parse_s3_url
from studio.types import GenerationRequest
from tests.s3_server import s3_server, s3_storage_url  # noqa: F401  (also registered in conftest)

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@pytest.fixture
def store(s3_storage_url) -> S3FileStore:
    return S3FileStore(s3_storage_url)


def png(color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def gen(studio: Studio, n: int = 1, **kw):
    return studio.generate(GenerationRequest(prompt=kw.pop("prompt", "a harbour"), provider="echo", n=n,
                                             width=64, height=64, **kw))


# -- the store ----------------------------------------------------------------------------------


def test_put_get_exists_delete_and_keys_under_the_prefix_only(store, s3_server):
    data = png()
    store.put("images/a/2026/01/01/x.png", data)
    assert store.get("images/a/2026/01/01/x.png") == data and store.exists("images/a/2026/01/01/x.png")
    raw = s3_server.client()
    bucket = store.location.bucket
    head = raw.head_object(Bucket=bucket, Key="studio/images/a/2026/01/01/x.png")
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(data)
    raw.put_object(Bucket=bucket, Key="elsewhere/images/y.png", Body=b"another deployment")
    raw.put_object(Bucket=bucket, Key="studio/images2/z.png", Body=b"not under images/")
    assert list(store.keys("images")) == ["images/a/2026/01/01/x.png"]
    assert sorted(store.keys("")) == ["images/a/2026/01/01/x.png", "images2/z.png"]
    store.delete("images/a/2026/01/01/x.png")
    store.delete("images/a/2026/01/01/x.png")  # a missing key: nothing to do, as on disk
    assert not store.exists("images/a/2026/01/01/x.png")
    with pytest.raises(FileNotFoundError):
        store.get("images/a/2026/01/01/x.png")
    assert store.local_path("images/a/2026/01/01/x.png") is None


def test_keys_are_listed_page_by_page(store, s3_server):
    requests = []
    store.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: requests.append(kw))
    store.page_size = 2
    for index in range(5):
        store.put(f"thumbs/2026/01/{index}.webp", b"w%d" % index)
    assert sorted(store.keys("thumbs")) == [f"thumbs/2026/01/{index}.webp" for index in range(5)]
    assert len(requests) == 3  # 2 + 2 + 1


def test_keys_that_would_leave_the_prefix_are_refused(store):
    for key in ("../outside.png", "images/../../x.png", "/images/x.png", "images//x.png"):
        with pytest.raises(ValueError):
            store.put(key, b"x")
    assert list(store.keys("")) == []


def test_a_damaged_upload_is_caught_and_not_kept(store, s3_server):
    data = png()
    s3_server.corrupt_next_puts(1)  # a byte flipped on the way, after the client's checksums
    with pytest.raises(StorageError, match="did not arrive intact"):
        store.put("images/a/2026/01/01/x.png", data)
    assert not store.exists("images/a/2026/01/01/x.png")
    store.put("images/a/2026/01/01/x.png", data)  # the next try goes through
    assert store.get("images/a/2026/01/01/x.png") == data


def test_without_an_md5_in_the_answer_the_object_is_checked_by_head(store, s3_server):
    """A KMS-encrypted bucket answers a PUT with an ETag that is not the MD5: the store then HEADs
    the object and compares its size and checksums."""
    def kms_like(parsed, **_):
        parsed["ETag"], parsed["ServerSideEncryption"] = '"0123456789abcdef0123456789abcdef"', "aws:kms"

    heads = []
    store.client.meta.events.register("after-call.s3.PutObject", kms_like)
    store.client.meta.events.register("before-call.s3.HeadObject", lambda **kw: heads.append(kw))
    store.put("images/a/ok.png", b"fine bytes")
    assert len(heads) == 1 and store.get("images/a/ok.png") == b"fine bytes"
    s3_server.corrupt_next_puts(1)
    with pytest.raises(StorageError, match="did not arrive intact"):
        store.put("images/a/bad.png", b"other bytes")
    assert not store.exists("images/a/bad.png")


def test_a_generation_whose_upload_is_damaged_fails_and_leaves_no_row(s3_storage_url, echo_studio, s3_server):
    s3_server.corrupt_next_puts(2)  # the thumbnail and the image
    with pytest.raises(StorageError):
        gen(echo_studio)
    assert echo_studio.history().total == 0
    report = echo_studio.repair(fix=True)
    assert report.orphan_files == [] and report.reindexed == []


def test_move_copies_checks_then_deletes(store):
    store.put("images/a/x.png", b"bytes")
    store.move("images/a/x.png", "trash/images/a/x.png")
    assert not store.exists("images/a/x.png") and store.get("trash/images/a/x.png") == b"bytes"
    with pytest.raises(FileNotFoundError):
        store.move("images/a/x.png", "trash/images/a/x.png")


# -- browsers: presigned URLs, never public objects -----------------------------------------------


def test_a_presigned_url_works_for_its_lifetime_then_expires(store, s3_server):
    data = png()
    store.put("images/a/x.png", data)
    url = store.url("images/a/x.png", expires=300)
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["300"]
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["content-type"] == "image/png"
    s3_server.advance_clock(240)  # (X-Amz-Date is in whole seconds: leave a margin)
    assert httpx.get(url).status_code == 200
    s3_server.advance_clock(70)
    expired = httpx.get(url)
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    with pytest.raises(ValueError):
        store.url("images/a/x.png", expires=8 * 24 * 3600)


def test_objects_are_never_public(store, s3_server):
    store.put("images/a/x.png", png())
    plain = f"{s3_server.url}/{store.location.bucket}/studio/images/a/x.png"
    assert httpx.get(plain).status_code == 403  # no signature: refused
    grants = s3_server.client().get_object_acl(Bucket=store.location.bucket, Key="studio/images/a/x.png")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert not any(g["Grantee"].get("URI") == ALL_USERS for g in grants)


def test_storage_hands_out_urls_for_images_and_thumbnails(s3_storage_url, echo_studio):
    record = gen(echo_studio).images[0]
    assert echo_studio.storage.abs_path(record) is None and record.abs_path is None
    assert record.to_dict()["path"] == record.path  # the key, not a path on this machine
    assert echo_studio.storage.location(record) == f"{s3_storage_url}/{record.path}"
    image = httpx.get(echo_studio.storage.image_url(record))
    thumb = httpx.get(echo_studio.storage.image_url(record, 60, thumbnail=True))
    assert image.content == echo_studio.storage.read(record)
    assert thumb.content == echo_studio.storage.read_thumbnail(record)
    assert hashlib.sha256(image.content).hexdigest() == record.sha256


# -- choosing the store -------------------------------------------------------------------------


def test_the_factory_picks_the_store_from_the_settings(s3_storage_url, studio_home, monkeypatch):
    assert isinstance(file_store_for(Settings.load(studio_home)), S3FileStore)
    monkeypatch.delenv("STUDIO_STORAGE_URL")
    assert isinstance(file_store_for(Settings.load(studio_home)), LocalFileStore)
    assert parse_s3_url("s3://my-bucket/a/b/").prefix == "a/b" and parse_s3_url("s3://my-bucket").prefix == ""
    for bad in ("http://my-bucket/x", "s3:///x", "s3://My_Bucket/x", "s3://my-bucket/a/../b", "s3://my-bucket/x?y=1"):
        monkeypatch.setenv("STUDIO_STORAGE_URL", bad)
        with pytest.raises(SettingsError, match="STUDIO_STORAGE_URL"):
            Studio(studio_home)


def test_a_missing_bucket_stops_the_start_with_a_clear_error(s3_storage_url, studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_STORAGE_URL", "s3://no-such-bucket-here/studio")
    with pytest.raises(StorageError, match="'no-such-bucket-here' does not exist"):
        Studio(studio_home)


def test_nothing_is_written_to_the_data_directory_with_s3(s3_storage_url, echo_studio, studio_home):
    records = gen(echo_studio, n=2).images
    assert not (studio_home / "images").exists() and not (studio_home / "thumbs").exists()
    keys = set(echo_studio.storage.files.keys(""))
    assert {r.path for r in records} | {r.thumb_path for r in records} <= keys


# -- the web front ends show images that live only in the bucket -----------------------------------


def test_history_page_shows_thumbnails_from_s3(s3_storage_url, app_home):
    from streamlit.testing.v1 import AppTest

    from tests.test_app_pages import HISTORY, ROOT

    studio = Studio(app_home)
    try:
        records = gen(studio, n=2, user="local").images
        at = AppTest.from_file(str(ROOT / HISTORY), default_timeout=30).run()
        assert not at.exception
        at.segmented_control(key="hist_view").set_value("Table").run()
        table = at.dataframe[0].value
        shown = sorted(base64.b64decode(preview.split(",", 1)[1]) for preview in table["preview"])
        assert shown == sorted(studio.storage.files.get(r.thumb_path) for r in records)
    finally:
        studio.close()
    assert not (app_home / "images").exists()


@pytest.mark.slow
def test_gradio_serves_images_from_s3(s3_storage_url, studio_home, tmp_path, monkeypatch):
    from gradio_client import Client

    from gradio_ui.identity import Access
    from tests.test_gradio_app import launch, shut

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    running = launch(studio_home, None, Access())
    try:
        files, result = Client(running.url, verbose=False).predict(
            "a lighthouse", "echo", "", {"n": 2, "seed": 3, "size": "64x64"}, api_name="/generate")
        assert len(files) == 2
        for path, image in zip(files, result["images"]):
            with open(path, "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == image["sha256"]
        stored = running.studio.storage.files
        assert all(stored.exists(r.path) for r in running.studio.history().items)
    finally:
        shut(running)
    assert not (studio_home / "images").exists()


def test_the_cli_names_the_stored_key_and_repairs_on_s3(s3_storage_url, studio_home, monkeypatch, capsys):
    import json

    from studio.cli import main
    from tests.fakes import echo_provider

    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)
    echo_provider.install(studio_home / "catalog")
    assert main(["generate", "a red boat", "--provider", "echo"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split()[-1].startswith("images/") and "None" not in line  # no local file: its key
    assert main(["repair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] is True

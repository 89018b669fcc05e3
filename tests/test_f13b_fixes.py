"""Issue 13's faults found by A13 in the database, storage and HTTP parts (helper F13b): beyond A13's own
tests (tests/test_attack_issue13.py), the same kinds of fault on the other routes and paths."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from studio.errors import StorageError
from studio.http import create_app
from studio.tokens import tokens_for
from studio.types import GenerationRequest

ANN = "user:ann@example.com"


@pytest.fixture
def ann(echo_studio, monkeypatch):
    """(TestClient on echo_studio, Ann's auth headers)."""
    monkeypatch.setenv("STUDIO_VISITORS", "private")
    token = tokens_for(echo_studio).create(ANN, "ann")[1]
    return TestClient(create_app(echo_studio), raise_server_exceptions=False), {"Authorization": f"Bearer {token}"}


# -- fault 9: a file deleted behind the studio's back ------------------------------------------


@pytest.mark.background_errors
def test_every_route_reading_a_gone_file_answers_410(echo_studio, ann):
    client, headers = ann
    record = echo_studio.generate(GenerationRequest(prompt="a kite", provider="echo", user=ANN)).images[0]
    board = client.post("/api/v1/boards", json={"name": "kites"}, headers=headers).json()
    assert client.post(f"/api/v1/boards/{board['id']}/images", json={"image_ids": [record.id]},
                       headers=headers).status_code == 200
    echo_studio.storage.files.delete(record.path)
    if record.thumb_path:
        echo_studio.storage.files.delete(record.thumb_path)
    for route in (f"/api/v1/images/{record.id}/file", f"/api/v1/images/{record.id}/thumbnail",
                  f"/api/v1/images/{record.id}/metadata", f"/api/v1/boards/{board['id']}/collage?cell=600",
                  f"/api/v1/boards/{board['id']}/export.zip"):
        answer = client.get(route, headers=headers)
        assert answer.status_code == 410, (route, answer.status_code, answer.text)
        body = answer.json()
        assert body["error"] == "file_gone" and record.id in body["detail"], body
        assert str(echo_studio.home) not in body["detail"]


def test_a_gone_file_is_still_a_file_not_found_error_for_the_core(echo_studio):
    record = echo_studio.generate(GenerationRequest(prompt="a kite", provider="echo")).images[0]
    echo_studio.storage.files.delete(record.path)
    with pytest.raises(FileNotFoundError):  # the Streamlit pages' "image file missing" path
        echo_studio.image_bytes(record)


@pytest.mark.background_errors  # the server logs the store's full text
def test_an_unreachable_store_is_503_with_a_generic_detail(echo_studio, ann, monkeypatch):
    client, headers = ann
    record = echo_studio.generate(GenerationRequest(prompt="a kite", provider="echo", user=ANN)).images[0]

    def refused(key):
        raise StorageError(f"image storage: reading {key} in s3://team-secret-bucket/studio failed: AccessDenied")

    monkeypatch.setattr(echo_studio.storage.files, "get", refused)
    answer = client.get(f"/api/v1/images/{record.id}/file", headers=headers)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "storage_unavailable"
    assert "team-secret-bucket" not in answer.text and record.path not in answer.text


# -- fault 7: a database error while the rows are committed -------------------------------------


@pytest.mark.background_errors
def test_a_database_error_at_commit_is_a_storage_error_booked_as_billed(echo_studio, monkeypatch):
    import sqlalchemy as sa

    from studio.errors import ProviderFailure

    plain_finish = echo_studio.storage.index.finish_generation

    def insert_fails(reservation, records, generation):
        if not records:  # the failure's own audit row
            return plain_finish(reservation, records, generation)
        raise sa.exc.IntegrityError("INSERT INTO images (owner, path) VALUES (%(owner)s, %(path)s)",
                                    {"owner": ANN, "path": "images/x.png"}, Exception("duplicate key"))

    monkeypatch.setattr(echo_studio.storage.index, "finish_generation", insert_fails)
    with pytest.raises(StorageError) as failed:
        echo_studio.generate(GenerationRequest(prompt="a kite", provider="echo", user=ANN))
    assert not isinstance(failed.value, ProviderFailure)
    assert "ann@example.com" not in str(failed.value) and "INSERT" not in str(failed.value)
    monkeypatch.undo()
    (row,) = echo_studio.storage.index.generations()
    assert row["status"] == "failed" and row["error_kind"] == "storage_unavailable"
    assert "ann@example.com" not in row["error"] and "INSERT" not in row["error"]
    assert row["cost"] == pytest.approx(0.01)  # the provider answered: it was billed


def test_a_provider_error_is_still_a_provider_failure(echo_studio, monkeypatch):
    from studio.errors import ProviderFailure
    from tests.fakes import echo_provider

    def broken(self, request, ctx):
        raise RuntimeError("the SDK broke")

    monkeypatch.setattr(echo_provider.EchoProvider, "generate", broken)
    with pytest.raises(ProviderFailure, match="the SDK broke"):
        echo_studio.generate(GenerationRequest(prompt="a kite", provider="echo"))


# -- faults 6 and 10: the database URL ----------------------------------------------------------


@pytest.mark.parametrize("text, shown", [
    ("postgresql://studio:hunter2@db/studio", "postgresql://studio:***@db/studio"),
    ("postgresql:/studio:hunter2@db/studio", "postgresql:/studio:***@db/studio"),
    ("postgres:studio:hunter2@db/studio", "postgres:studio:***@db/studio"),
    ("studio:hunter2@db/studio", "studio:***@db/studio"),
    ("postgresql://studio@db/studio", "postgresql://studio@db/studio"),
    ("sqlite:///srv/index.sqlite3", "sqlite:///srv/index.sqlite3"),
])
def test_a_database_url_is_shown_with_its_password_masked_even_malformed(text, shown):
    from studio.db import masked_url

    assert masked_url(text) == shown


@pytest.mark.parametrize("url", ["postgresql:/u:pw@h/db", "postgres:u:pw@h/db", "mysql://u:pw@h/db", "sqlite://x.db",
                                 "postgresql://u:pw@h:5x/db", "sqlite:///"])
def test_a_mistyped_database_url_is_a_settings_error(url, tmp_path):
    from studio.config import SettingsError
    from studio.db import Database

    with pytest.raises(SettingsError, match="STUDIO_DATABASE_URL=") as refused:
        Database(url)
    assert ":pw@" not in str(refused.value)


def test_plain_paths_and_good_urls_are_still_accepted(tmp_path):
    from studio.db import Database, engine_url

    assert engine_url("postgres+psycopg://u@h:5433/db").drivername == "postgresql+psycopg"
    for target in (str(tmp_path / "a.sqlite3"), tmp_path / "b.sqlite3", f"sqlite:///{tmp_path / 'c.sqlite3'}"):
        Database(target).close()


def test_a_connection_lost_mid_command_is_one_line():
    import sqlalchemy as sa

    from studio.db import DatabaseUnavailable, connection_failure

    lost = sa.exc.OperationalError("SELECT * FROM images WHERE owner = %(owner)s", {"owner": ANN},
                                   Exception("server closed the connection unexpectedly\n\tThis probably means..."))
    failure = connection_failure(lost)
    assert isinstance(failure, DatabaseUnavailable) and "\n" not in str(failure)
    assert str(failure).startswith("cannot reach the database at ")
    assert str(failure).endswith(": server closed the connection unexpectedly")
    assert connection_failure(ValueError("not the database")) is None

"""A deleted image stays deleted: no copy of it is served any more, by the running Gradio app or
after a restart, and export folders do not pile up.

The app runs in-process on 127.0.0.1 with its own GRADIO_TEMP_DIR (Gradio's file cache); images
are made through the named API (so Gradio itself caches and serves them), deleted through the
History tab's own handler or the core (as the CLI does), and fetched by the URL Gradio gave out.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

import gradio_app
from gradio_ui.endpoints import Exporter, default_export_root
from studio.service import Studio
from studio.types import GenerationRequest
from tests.fakes import echo_provider


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("STUDIO_VISITORS", "local")  # one owner for the API client and the UI handlers
    echo_provider.install(tmp_path / "home" / "catalog")
    return tmp_path


class App:
    def __init__(self, root: Path):
        self.studio = Studio(root / "home")
        self.demo = gradio_app.build_app(self.studio, export_dir=root / "exports")
        _, self.url, _ = self.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)

    def close(self) -> None:
        self.demo.close()
        self.studio.close()

    def made(self, prompt: str) -> tuple[str, str]:
        """(image id, the URL Gradio serves the image at) for a new image made through /generate."""
        client = Client(self.url, verbose=False, download_files=False)
        files, result = client.predict(prompt, "echo", "", {"size": "64x64"}, api_name="/generate")
        return result["images"][0]["id"], files[0]["url"]

    def handler(self, name: str):
        return next(f for f in self.demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def served(url: str) -> bool:
    return httpx.get(url, timeout=30).status_code == 200


def copies_on_disk(root: Path, image_bytes: bytes) -> list[Path]:
    digest = hashlib.sha256(image_bytes).hexdigest()
    return [p for p in root.rglob("*") if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest]


def delete_in_history_tab(app: App, image_id: str) -> None:
    """What the History tab's Delete button runs, with that image selected."""
    delete = app.handler("on_delete")
    values = {}
    for component in delete.inputs:
        if component is app.demo.studio_context.token:
            values[component] = None
        elif isinstance(component, gr.State):
            # the tab's page state (a dict) or its selected image id
            values[component] = {"ids": [image_id], "offset": 0, "total": 1} if isinstance(
                component.value, dict) else image_id
        elif isinstance(component, gr.Dropdown) and component.label == "Per page":
            values[component] = 24
        else:
            values[component] = ""
    delete.fn(values, None, None)


def test_a_deleted_image_is_not_served_any_more_now_or_after_a_restart(env):
    app = App(env)
    try:
        first, first_url = app.made("a lighthouse")
        second, second_url = app.made("a harbour")
        first_bytes = app.studio.image_bytes(app.studio.get_image(first))
        second_bytes = app.studio.image_bytes(app.studio.get_image(second))
        assert served(first_url) and served(second_url)
        assert copies_on_disk(env / "gradio-cache", first_bytes)  # Gradio serves its cached copy

        delete_in_history_tab(app, first)
        assert app.studio.history(owner="local", text=first).total == 0
        assert not served(first_url)
        assert copies_on_disk(env / "gradio-cache", first_bytes) == []
        assert copies_on_disk(env / "exports", first_bytes) == []
        assert served(second_url)  # the other image is untouched
    finally:
        app.close()

    # Deleted while the app is down (as `python -m studio delete` does), then the app starts again.
    offline = Studio(env / "home")
    offline.delete_image(second)
    offline.close()
    app = App(env)
    try:
        # The restarted app may listen on another port (another test may hold the old one): ask it
        # for the same file path.
        assert not served(app.url.rstrip("/") + "/" + second_url.split("/", 3)[3])
        assert copies_on_disk(env / "gradio-cache", second_bytes) == []
        assert copies_on_disk(env / "exports", second_bytes) == []
    finally:
        app.close()


def test_zips_and_collages_holding_a_deleted_image_go_too(env):
    from studio.boards import Boards

    studio = Studio(env / "home")
    try:
        kept, dropped = (studio.generate(GenerationRequest(prompt=p, provider="echo", width=64, height=64)).images[0]
                         for p in ("a kite", "a boat"))
        exporter = Exporter(studio, env / "exports", cache_dir=env / "gradio-cache")
        both = exporter.zip_file([kept, dropped], "local", "history")
        only_kept = exporter.zip_file([kept], "local", "kept")
        boards = Boards(studio)
        board = boards.create("local", "harbour")
        boards.add("local", board.id, [kept.id, dropped.id])
        collage = exporter.bytes_file(boards.collage("local", board.id), "local", "collage.png",
                                      image_ids=[kept.id, dropped.id])
        # Gradio's cached copies, made by Gradio itself as when a handler returns these files
        cached = [gr.File().move_resource_to_block_cache(path) for path in (both, only_kept, collage)]
        assert all(Path(path).is_file() for path in cached)

        studio.delete_image(dropped.id)
        exporter.forget([dropped.id])
        assert not Path(both).exists() and not Path(collage).exists() and Path(only_kept).exists()
        assert [Path(p).exists() for p in cached] == [False, True, False]
    finally:
        studio.close()


def test_exports_of_earlier_runs_are_swept_instead_of_piling_up(env):
    studio = Studio(env / "home")
    try:
        record = studio.generate(GenerationRequest(prompt="a kite", provider="echo", width=64, height=64)).images[0]
        first = Exporter(studio, cache_dir=env / "gradio-cache")
        again = Exporter(studio, cache_dir=env / "gradio-cache")
        assert first.root == again.root == default_export_root(studio)  # one folder per data directory
        try:
            old = Path(first.zip_file([record], "local", "old"))
            stale = time.time() - 7 * 3600
            os.utime(old, (stale, stale))
            os.utime(old.parent, (stale, stale))
            Exporter(studio, max_age=6 * 3600, cache_dir=env / "gradio-cache")  # the next start
            assert not old.exists() and not old.parent.exists()
        finally:
            import shutil

            shutil.rmtree(first.root, ignore_errors=True)
    finally:
        studio.close()


def test_a_gradio_cache_shared_with_another_studio_keeps_that_studios_copies(env):
    echo_provider.install(env / "other" / "catalog")
    ours, theirs = Studio(env / "home"), Studio(env / "other")
    try:
        record = theirs.generate(GenerationRequest(prompt="a kite", provider="echo", width=64, height=64)).images[0]
        their_export = Exporter(theirs, env / "their-exports", cache_dir=env / "gradio-cache")
        cached = gr.File().move_resource_to_block_cache(their_export.image_file(record, "local"))
        Exporter(ours, env / "exports", cache_dir=env / "gradio-cache")  # our server starts and purges
        assert Path(cached).is_file()  # not an image of ours, not deleted: left alone
        theirs.delete_image(record.id)
        Exporter(theirs, env / "their-exports", cache_dir=env / "gradio-cache")  # their next start
        assert not Path(cached).exists()
    finally:
        ours.close()
        theirs.close()

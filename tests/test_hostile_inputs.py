"""Hostile inputs through the library and the CLI: each gets a clear error or is handled safely,
and nothing is written on a rejected request."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.exports import build_zip, records_to_csv
from studio.types import GenerationRequest
from tests.fakes import echo_provider
from tests.helpers import png, tree_snapshot

ROOT = Path(__file__).resolve().parent.parent


def test_path_traversal_and_odd_characters_in_names_stay_inside_the_data_dir(echo_studio, studio_home):
    for category in ("../../etc", "..", "/abs/path", "a/../../b", "C:\\Windows\\System32", "nul\x00byte",
                     "émoji 🎨 cat", "." * 60):
        record = echo_studio.generate(GenerationRequest(prompt="x", provider="echo", category=category,
                                                        tags=["../../x", "<script>"])).images[0]
        path = (studio_home / record.path).resolve()
        assert studio_home.resolve() in path.parents
        assert path.relative_to(studio_home.resolve()).parts[0] == "images"
        assert ".." not in record.path.split("/")
    assert not (studio_home.parent / "etc").exists()
    with pytest.raises(InvalidRequest, match="category is 300 characters"):
        echo_studio.generate(GenerationRequest(prompt="x", provider="echo", category="." * 300))


def test_csv_and_zip_manifests_neutralise_formula_injection(echo_studio, studio_home):
    evil = ["=HYPERLINK(\"http://evil\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)"]
    records = [echo_studio.generate(GenerationRequest(prompt=p, provider="echo", tags=[p[:20]])).images[0]
               for p in evil]
    text = records_to_csv(records)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["prompt"][0] for row in rows} == {"'"}
    assert all(row["tags"].startswith("'") for row in rows)
    archive = zipfile.ZipFile(io.BytesIO(build_zip(records, echo_studio.storage.read)))
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert all(row["prompt"].startswith("'") for row in manifest)
    assert json.loads(archive.read("manifest.json"))["images"][0]["prompt"] == evil[0]  # JSON keeps the truth
    for name in archive.namelist():
        assert not name.startswith("/") and ".." not in name.split("/")


def test_renamed_and_odd_image_files(echo_studio, studio_home, tmp_path):
    jpeg_named_png = tmp_path / "photo.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="JPEG")
    jpeg_named_png.write_bytes(buffer.getvalue())
    assert echo_studio.edit(str(jpeg_named_png), "x", provider="echo").images[0].width == 64
    text_named_png = tmp_path / "notes.png"
    text_named_png.write_text("hello, I am text")
    before = tree_snapshot(studio_home)
    with pytest.raises(InvalidRequest, match="not a readable image"):
        echo_studio.edit(str(text_named_png), "x", provider="echo")
    with pytest.raises(InvalidRequest):
        echo_studio.edit(str(tmp_path), "x", provider="echo")  # a directory
    assert tree_snapshot(studio_home) == before


def test_huge_prompt_and_absurd_numbers_via_library(echo_studio, studio_home):
    before = tree_snapshot(studio_home)
    for fields in ({"prompt": "a" * 1_000_000}, {"prompt": "x", "n": 10**9}, {"prompt": "x", "steps": 10**12},
                   {"prompt": "x", "width": 10**9, "height": 10**9}, {"prompt": "x", "guidance": float("inf")},
                   {"prompt": "x", "seed": "drop table"}, {"prompt": "x", "n": 2.5}, {"prompt": 12345},
                   {"prompt": "x", "compression": True}):
        with pytest.raises(InvalidRequest):
            echo_studio.generate(GenerationRequest(provider="echo", **fields))
    assert tree_snapshot(studio_home) == before


def test_non_utf8_prompt_from_the_shell_is_a_clear_cli_error(studio_home):
    env = {**os.environ, "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC, "PYTHONPATH": str(ROOT)}
    prompt = b"caf\xe9 latte"  # Latin-1 bytes, not UTF-8
    result = subprocess.run([sys.executable.encode(), b"-m", b"studio", b"generate", prompt, b"--provider", b"echo"],
                            capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "error: prompt is not valid UTF-8 text"
    assert not (studio_home / "images").exists()


def test_decompression_bomb_mask_and_image_via_cli(studio_home, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")
    source = tmp_path / "src.png"
    source.write_bytes(png(64, 64))
    env = {**os.environ, "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC, "PYTHONPATH": str(ROOT)}
    for args in (["edit", str(bomb), "x"], ["edit", str(source), "x", "--mask", str(bomb)]):
        result = subprocess.run([sys.executable, "-m", "studio", *args, "--provider", "echo"], capture_output=True,
                                text=True, env=env, cwd=ROOT, timeout=60)
        assert result.returncode == 2, result.stderr
        assert ("pixel limit" in result.stderr or "decompression bomb" in result.stderr)
        assert "Traceback" not in result.stderr

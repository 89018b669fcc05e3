"""JSON nested deeper than Python's recursion limit, in image metadata and in batch scripts: a clear
answer, never "unexpected RecursionError" (found by an outside tester: `info`, `rerun` and `batch -`
exited 1 with the library's recursion message)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from studio.cli import main
from tests.fakes import echo_provider

DEEP_OBJECT = '{"a":' * 50000 + "1" + "}" * 50000
DEEP_ARRAY = "[" * 100000 + "]" * 100000


@pytest.fixture
def echo(studio_home, monkeypatch):
    echo_provider.install(studio_home / "catalog")
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)


@pytest.mark.parametrize("chunk", ["prompt", "workflow", "invokeai_metadata", "Comment", "studio", "parameters"])
def test_deeply_nested_metadata_is_unrecognised_not_a_crash(echo, tmp_path, capsys, chunk):
    info = PngImagePlugin.PngInfo()
    info.add_text(chunk, DEEP_OBJECT)
    path = tmp_path / "deep.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)

    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "RecursionError" not in out + err and "unexpected" not in err

    assert main(["rerun", str(path), "-p", "echo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "RecursionError" not in err


@pytest.mark.parametrize("text", [DEEP_ARRAY, DEEP_OBJECT])
def test_a_deeply_nested_json_script_is_one_error_line(echo, capsys, monkeypatch, tmp_path, text):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["batch", "-p", "echo", "--dry-run", "-"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "RecursionError" not in err

    script = tmp_path / "deep.json"
    script.write_text(text)
    assert main(["batch", "-p", "echo", "--dry-run", str(script)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "RecursionError" not in err

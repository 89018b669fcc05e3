"""Edge cases an outside tester found in reading images and scripts: JSON nested deeper than Python's
recursion limit (in image metadata and batch scripts) gets a clear answer, never "unexpected
RecursionError"; `info` reports the size of the file itself after an edit was fitted back."""

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


def test_info_shows_the_size_of_the_file_after_an_edit_is_fitted_back(echo, tmp_path, capsys):
    """A 427x320 inpaint is saved at 427x320 (the provider drew 424x320): `info` said 424x320."""
    import json

    source, mask = tmp_path / "src.png", tmp_path / "mask.png"
    Image.new("RGB", (427, 320), (40, 90, 160)).save(source)
    painted = Image.new("L", (427, 320), 0)
    painted.paste(255, (100, 100, 200, 200))
    painted.save(mask)
    assert main(["edit", "-p", "echo", "--mask", str(mask), str(source), "a red door", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)["images"][0]
    assert main(["info", made["path"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["generation"]["width"], shown["generation"]["height"]) == (427, 320)
    with Image.open(made["path"]) as image:
        assert image.size == (427, 320)


def test_output_cut_short_by_the_reader_is_quiet(echo):
    """`python -m studio providers | head -0`: the reader is gone before the CLI writes; the CLI said
    "error: unexpected BrokenPipeError" or Python reported the broken pipe at exit."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all: the CLI's first write to stdout meets a broken pipe
    try:
        done = subprocess.run([sys.executable, "-m", "studio", "providers"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    stderr = done.stderr.decode()
    assert "BrokenPipe" not in stderr and "Traceback" not in stderr and "unexpected" not in stderr

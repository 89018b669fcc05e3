"""The local provider through the whole studio (service, storage, metadata, CLI) on the tiny model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from providers import local
from studio.config import Settings
from studio.errors import NotConfigured
from studio.service import Studio
from studio.types import GenerationRequest, Mode

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def studio(studio_home, tiny_model_dir):
    s = Studio(settings=Settings.load(studio_home, local_model=str(tiny_model_dir)))
    yield s
    s.close()


def request(**kw) -> GenerationRequest:
    defaults = dict(prompt="a harbour at dawn", provider="local", width=256, height=256, steps=2, seed=11)
    return GenerationRequest(**{**defaults, **kw})


def stored_pixels(studio: Studio, record) -> np.ndarray:
    with Image.open(io.BytesIO(studio.image_bytes(record))) as image:
        return np.asarray(image.convert("RGB"))


def test_generate_records_seeds_sampler_and_zero_cost(studio, tiny_model_dir):
    result = studio.generate(request(n=2))
    assert [r.seed for r in result.images] == [11, 12]
    assert result.cost == 0.0 and all(r.cost == 0.0 for r in result.images)
    record = result.images[0]
    assert record.provider == "local" and record.model == tiny_model_dir.name  # its name, never the path
    assert (record.width, record.height) == (256, 256)
    assert record.params["sampler"] == "EulerDiscreteScheduler" and record.params["steps"] == 2
    assert record.params["usage"]["device"] in ("cpu", "cuda")
    meta = studio.info(record.id)
    assert "Sampler: EulerDiscreteScheduler" in meta["parameters"] and "Seed: 11" in meta["parameters"]

    again = studio.generate(request(n=2, cache=False))  # run the model again, not the studio's cache
    assert not again.cached and again.images[0].id != record.id
    assert np.array_equal(stored_pixels(studio, again.images[1]), stored_pixels(studio, result.images[1]))


def test_edit_with_a_mask_inpaints_and_chains_to_the_parent(studio):
    parent = studio.generate(request()).images[0]
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (0, 0, 256, 128))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    child = studio.edit(parent.id, "a storm over the harbour", mask=buffer.getvalue(), strength=1.0,
                        provider="local", steps=2, seed=3).images[0]
    assert child.parent_id == parent.id and child.mode == Mode.INPAINT.value
    before, after = stored_pixels(studio, parent).astype(int), stored_pixels(studio, child).astype(int)
    assert np.array_equal(after[128:], before[128:])  # the black half of the mask is untouched
    assert np.abs(after[:128] - before[:128]).mean() > 10


def test_variations_of_a_stored_image_use_new_seeds(studio):
    parent = studio.generate(request()).images[0]
    events = []
    result = studio.variations(parent.id, n=2, strength=0.5, steps=2, progress=events.append)
    seeds = [r.seed for r in result.images]
    assert seeds[1] == seeds[0] + 1 and all(r.parent_id == parent.id for r in result.images)
    assert all(r.mode == Mode.VARIATION.value for r in result.images)
    assert any(e.stage == "generating" and e.step == 1 for e in events)


def test_a_model_that_cannot_load_records_no_image_and_no_cost(studio):
    with pytest.raises(NotConfigured, match="hf download nobody/absent"):
        studio.generate(request(model="nobody/absent"))
    assert studio.history().total == 0
    (row,) = studio.storage.index.generations()
    assert row["status"] == "failed" and row["error_kind"] == "not_configured" and row["cost"] == 0


def test_second_studio_request_reuses_the_loaded_model(studio):
    local.clear_cache()
    first = studio.generate(request(cache=False)).images[0]
    second = studio.generate(request(cache=False, seed=12)).images[0]
    assert first.params["usage"]["from_cache"] is False and first.params["usage"]["load_seconds"] > 0
    assert second.params["usage"]["from_cache"] is True


def test_cli_generates_with_the_local_model(tiny_model_dir, studio_home):
    env = {**os.environ, "STUDIO_LOCAL_MODEL": str(tiny_model_dir), "STUDIO_HOME": str(studio_home),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "studio", "generate", "a red kite", "--provider", "local",
                           "--size", "256x256", "--steps", "2", "--seed", "9", "-n", "2", "--json", "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    images = json.loads(done.stdout)["images"]
    assert [i["seed"] for i in images] == [9, 10]
    assert all(Path(i["path"]).is_file() and (i["width"], i["height"]) == (256, 256) for i in images)


def test_closing_one_studio_keeps_shared_models_and_clear_model_cache_frees_them(studio, studio_home):
    studio.generate(request(cache=False))
    assert len(local.CACHE.keys()) == 1
    other = Studio(studio_home)
    other.provider("local")
    other.close()  # another session's studio going away must not unload the model
    assert len(local.CACHE.keys()) == 1
    studio.clear_model_cache()
    assert local.CACHE.keys() == []

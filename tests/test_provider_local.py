"""The local diffusers provider, run for real on a tiny random Stable Diffusion model (see tiny_model.py).

Nothing is mocked: the model is saved to disk and loaded through the same diffusers calls a real
model uses; generation runs the real pipelines on the CPU. Images are noise, but deterministic noise,
which is what the seed, cache, mask and progress checks need.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from providers import local
from providers.base import READY, UNAVAILABLE
from providers.local import LocalProvider, ModelSource, choose_device, choose_dtype, steps_for_strength
from studio.catalog import Catalog
from studio.config import Settings
from studio.errors import Cancelled, InvalidRequest, NotConfigured, ProviderTimeout
from studio.masks import fit_to_input
from studio.types import Mode, PreparedRequest, ProgressEvent, RunContext
from tests.tiny_model import SINGLE_FILE_NAME

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def provider(tiny_model_dir, studio_home) -> LocalProvider:
    settings = Settings.load(studio_home, local_model=str(tiny_model_dir), local_device=None, local_dtype=None)
    return LocalProvider(settings, Catalog())


def prepared(provider: LocalProvider, **changes) -> PreparedRequest:
    fields = dict(provider="local", model=provider.default_model(), mode=Mode.TEXT_TO_IMAGE, prompt="a lighthouse",
                  negative_prompt="", width=256, height=256, n=1, seed=42, steps=2, guidance=7.5, strength=None,
                  init_image=None, mask=None, output_format="png", quality=None, compression=95, user="local",
                  extra={})
    fields.update(changes)
    if isinstance(fields["model"], str):
        fields["model"] = provider.model(fields["model"])
    return PreparedRequest(**fields)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(np.int16)


def kept_by_the_studio(data: bytes, init: Image.Image, mask: Image.Image) -> np.ndarray:
    """An inpaint's answer after the studio's post-step (studio.masks.fit_to_input, run on every
    provider's answer): at the input's size, its unmasked pixels the input's own."""
    with Image.open(io.BytesIO(data)) as image:
        fitted = fit_to_input(image.convert("RGB"), init, mask, init.size)
    return np.asarray(fitted).astype(np.int16)


def gradient(width: int = 300, height: int = 200) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(255, 0, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=-1), "RGB")


# -- without torch -------------------------------------------------------------------------


def test_importing_the_module_does_not_import_torch_or_diffusers():
    code = ("import providers.local, sys; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_status_does_not_import_torch(tiny_model_dir):
    code = ("import sys; from providers.local import LocalProvider; from studio.config import Settings; "
            "from studio.catalog import Catalog; "
            f"p = LocalProvider(Settings.load(local_model={str(tiny_model_dir)!r}), Catalog()); "
            "assert p.status().state == 'ready'; "
            "p.settings.local_model = 'stabilityai/sd-turbo'; p.status(); "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_status_is_unavailable_without_diffusers_and_never_imports_it(provider, monkeypatch):
    # A None entry in sys.modules makes importlib.util.find_spec report the package as missing.
    monkeypatch.setitem(sys.modules, "diffusers", None)
    status = provider.status()
    assert status.state == UNAVAILABLE
    assert "diffusers" in status.reason and "pip install" in status.reason


def test_status_ready_for_a_model_folder_and_unavailable_for_missing_models(provider, tmp_path):
    assert provider.status().state == READY
    provider.settings.local_model = str(tmp_path / "nowhere")
    status = provider.status()
    assert status.state == UNAVAILABLE and "not found" in status.reason
    provider.settings.local_model = "nobody/not-downloaded-model"  # HF_HUB_OFFLINE=1 in tests
    status = provider.status()
    assert status.state == UNAVAILABLE and "hf download nobody/not-downloaded-model" in status.reason


def test_device_and_dtype_choice():
    assert choose_device(None, cuda=True, mps=True) == "cuda"
    assert choose_device(None, cuda=False, mps=True) == "mps"
    assert choose_device(None, cuda=False, mps=False) == "cpu"
    assert choose_device("CPU", cuda=True, mps=False) == "cpu"  # an override wins over a present GPU
    assert choose_device("cuda:1", cuda=True, mps=False) == "cuda:1"
    with pytest.raises(NotConfigured, match="no CUDA"):
        choose_device("cuda", cuda=False, mps=False)
    with pytest.raises(NotConfigured, match="Metal"):
        choose_device("mps", cuda=True, mps=False)
    with pytest.raises(NotConfigured, match="cuda, mps or cpu"):
        choose_device("tpu", cuda=False, mps=False)
    assert choose_dtype("cuda", None) == "float16"
    assert choose_dtype("mps", None) == "float16"
    assert choose_dtype("cpu", None) == "float32"
    assert choose_dtype("cuda", "fp32") == "float32"
    assert choose_dtype("cpu", "bf16") == "bfloat16"
    with pytest.raises(NotConfigured, match="STUDIO_LOCAL_DTYPE"):
        choose_dtype("cpu", "int4")


def test_steps_are_raised_just_enough_for_low_strength():
    assert steps_for_strength(2, 0.5) == 2
    assert steps_for_strength(1, 0.5) == 2
    assert steps_for_strength(2, 0.3) == 4  # int(4 * 0.3) == 1 denoising step
    assert steps_for_strength(3, 1 / 3) == 3
    with pytest.raises(InvalidRequest, match="above 0"):
        steps_for_strength(2, 0.0)
    with pytest.raises(InvalidRequest, match="raise the strength"):
        steps_for_strength(2, 0.001, max_steps=150)


def test_model_sources(tiny_model_dir, tmp_path):
    assert ModelSource.parse("stabilityai/sd-turbo") == ModelSource("hub", "stabilityai/sd-turbo")
    assert ModelSource.parse(str(tiny_model_dir)).kind == "folder"
    assert ModelSource.parse(str(tiny_model_dir / SINGLE_FILE_NAME)).kind == "single_file"
    with pytest.raises(NotConfigured, match="not found"):
        ModelSource.parse(str(tmp_path / "missing.safetensors"))
    with pytest.raises(NotConfigured, match="model_index.json"):
        ModelSource.parse(str(tmp_path))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NotConfigured, match="not a model"):
        ModelSource.parse(str(tmp_path / "notes.txt"))


def test_per_user_model_mapping_and_catalog_template(provider, tiny_model_dir):
    provider.settings.local_model = "stabilityai/sd-turbo"
    provider.settings.user_models = {"alice": str(tiny_model_dir)}
    assert provider.default_model("bob").id == "stabilityai/sd-turbo"
    alice = provider.default_model("alice")
    # Shown by its folder's name (studio.model_names), loaded from its path; the name picks it again.
    assert alice.id == tiny_model_dir.name and alice.location == str(tiny_model_dir)
    assert provider.model(None, "alice").location == str(tiny_model_dir)
    assert provider.model(tiny_model_dir.name, "bob").location == str(tiny_model_dir)
    # A path is not in the catalog: it gets the local "*" template (30 steps, guidance 7.5, all modes).
    assert not alice.known and alice.steps.default == 30 and alice.supports("inpaint")
    assert provider.model("stabilityai/sd-turbo", "alice").steps.default == 2  # an explicit id still wins
    provider.settings.local_model = str(tiny_model_dir)
    defaults = [m.id for m in provider.models() if m.default]
    assert defaults == [tiny_model_dir.name]


# -- generation on the tiny model -----------------------------------------------------------


@pytest.mark.parametrize("size", [(256, 256), (320, 256), (256, 384)])
def test_text_to_image_returns_png_of_the_requested_size(provider, size):
    result = provider.generate(prepared(provider, width=size[0], height=size[1]), RunContext())
    (image,) = result.images
    assert pixels(image.data).shape == (size[1], size[0], 3)
    assert image.seed == 42
    assert image.info["sampler"] == "EulerDiscreteScheduler"
    assert (image.info["device"], image.info["dtype"]) == (result.usage["device"], result.usage["dtype"])
    assert result.cost is None  # free: the catalog's estimate (0) stands


def test_device_is_chosen_automatically(provider):
    import torch

    result = provider.generate(prepared(provider), RunContext())
    expected = ("cuda", "float16") if torch.cuda.is_available() else ("cpu", "float32")
    assert (result.usage["device"], result.usage["dtype"]) == expected


def test_dtype_override_is_honoured(provider):
    provider.settings.local_device = "cpu"
    provider.settings.local_dtype = "bfloat16"
    result = provider.generate(prepared(provider), RunContext())
    assert (result.usage["device"], result.usage["dtype"]) == ("cpu", "bfloat16")
    assert result.images[0].info["dtype"] == "bfloat16"
    assert ("cpu", "bfloat16") == local.CACHE.keys()[-1][1:]


def test_batch_uses_consecutive_seeds_and_same_seed_gives_same_pixels(provider):
    first = provider.generate(prepared(provider, n=2, seed=7), RunContext())
    again = provider.generate(prepared(provider, n=2, seed=7), RunContext())
    assert [i.seed for i in first.images] == [7, 8]
    assert [i.data for i in first.images] == [i.data for i in again.images]  # identical bytes
    assert first.images[0].data != first.images[1].data
    other = provider.generate(prepared(provider, n=1, seed=8), RunContext())
    # Image i of a batch is image 0 of a single run with seed + i (up to float rounding in a batch).
    difference = np.abs(pixels(other.images[0].data) - pixels(first.images[1].data))
    assert difference.mean() < 0.5 and difference.max() <= 8
    assert np.abs(pixels(other.images[0].data) - pixels(first.images[0].data)).mean() > 5


def test_image_to_image_resizes_the_input_and_depends_on_strength(provider):
    init = gradient()
    low = provider.generate(prepared(provider, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=0.5), RunContext())
    high = provider.generate(prepared(provider, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=1.0), RunContext())
    assert pixels(low.images[0].data).shape == (256, 256, 3)
    assert low.images[0].data != high.images[0].data
    assert low.usage["denoising_steps"] == 1 and high.usage["denoising_steps"] == 2
    repeat = provider.generate(prepared(provider, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=0.5),
                               RunContext())
    assert repeat.images[0].data == low.images[0].data


def test_image_to_image_with_too_few_steps_for_the_strength_still_runs(provider):
    events: list[ProgressEvent] = []
    result = provider.generate(prepared(provider, mode=Mode.IMAGE_TO_IMAGE, init_image=gradient(), steps=1,
                                        strength=0.3), RunContext(progress=events.append))
    assert result.usage["steps"] == 4 and result.images[0].info["steps"] == 4  # recorded in the metadata
    assert [(e.step, e.total_steps) for e in events if e.stage == "generating"] == [(1, 1)]


def test_variation_with_an_image_is_image_to_image(provider):
    init = gradient(256, 256)
    variation = provider.generate(prepared(provider, mode=Mode.VARIATION, init_image=init, strength=0.5),
                                  RunContext())
    edit = provider.generate(prepared(provider, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=0.5),
                             RunContext())
    assert variation.images[0].data == edit.images[0].data
    plain = provider.generate(prepared(provider, mode=Mode.VARIATION), RunContext())
    assert plain.images[0].data == provider.generate(prepared(provider), RunContext()).images[0].data


def test_inpaint_repaints_only_the_white_part_of_the_mask(provider):
    init = gradient(256, 256)
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    result = provider.generate(prepared(provider, mode=Mode.INPAINT, init_image=init, mask=mask, strength=1.0),
                               RunContext())
    assert pixels(result.images[0].data).shape == (256, 256, 3)
    out, original, keep = kept_by_the_studio(result.images[0].data, init, mask), np.asarray(init).astype(np.int16), \
        np.asarray(mask) == 0
    assert np.array_equal(out[keep], original[keep])  # black = keep, exactly
    assert np.abs(out[~keep] - original[~keep]).mean() > 10  # white = repainted

    other_mask = Image.new("L", (256, 256), 0)
    other_mask.paste(255, (0, 0, 128, 256))
    other = provider.generate(prepared(provider, mode=Mode.INPAINT, init_image=init, mask=other_mask, strength=1.0),
                              RunContext())
    changed = np.abs(kept_by_the_studio(other.images[0].data, init, other_mask) - original).sum(axis=-1) > 0
    assert not changed[:, 128:].any() and changed[:, :128].mean() > 0.5


def test_inpaint_resizes_image_and_mask_to_the_request_size(provider):
    init = gradient(512, 512)
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (0, 0, 256, 512))
    result = provider.generate(prepared(provider, mode=Mode.INPAINT, init_image=init, mask=mask, strength=0.8),
                               RunContext())
    assert pixels(result.images[0].data).shape == (256, 256, 3)  # the model ran at the request's size
    out = kept_by_the_studio(result.images[0].data, init, mask)
    assert out.shape == (512, 512, 3)  # and the studio brings it back to the input's
    original = np.asarray(init).astype(np.int16)
    assert np.array_equal(out[:, 256:], original[:, 256:]) and np.abs(out[:, :256] - original[:, :256]).mean() > 10


def test_three_pipelines_share_one_set_of_components(provider, tiny_model_dir):
    loaded, _ = provider.load(str(tiny_model_dir))
    t2i, i2i, inpaint = loaded.text_to_image, loaded.image_to_image, loaded.inpaint
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(i2i, name) is getattr(t2i, name) and getattr(inpaint, name) is getattr(t2i, name), name


def test_loaded_model_is_cached_across_requests_and_provider_instances(provider, tiny_model_dir):
    local.clear_cache()
    loads = local.CACHE.loads
    first = provider.generate(prepared(provider), RunContext())
    second = provider.generate(prepared(provider), RunContext())
    another = LocalProvider(provider.settings, provider.catalog)
    third = another.generate(prepared(another), RunContext())
    assert local.CACHE.loads == loads + 1
    assert first.usage["from_cache"] is False and first.usage["load_seconds"] > 0
    assert second.usage["from_cache"] is True and third.usage["from_cache"] is True
    assert second.usage["load_seconds"] == 0.0
    assert provider.load(str(tiny_model_dir))[0] is another.load(str(tiny_model_dir))[0]
    assert first.images[0].data == second.images[0].data == third.images[0].data

    provider.clear_cache()
    assert local.CACHE.keys() == []
    reloaded = provider.generate(prepared(provider), RunContext())
    assert reloaded.usage["from_cache"] is False and local.CACHE.loads == loads + 2


def test_cache_is_a_bounded_lru(provider, tiny_model_dir):
    local.clear_cache()
    provider.settings.local_cache_size = 1
    folder, single = str(tiny_model_dir), str(tiny_model_dir / SINGLE_FILE_NAME)
    provider.load(folder)
    provider.load(single)
    assert [key[0] for key in local.CACHE.keys()] == [single]  # the folder's model was evicted
    provider.settings.local_cache_size = 2
    provider.load(folder)
    provider.load(single)  # touch: now the most recently used
    provider.load(folder)
    assert [key[0] for key in local.CACHE.keys()] == [single, folder]


def test_single_file_checkpoint_gives_the_same_pixels_as_the_folder(provider, tiny_model_dir):
    from_folder = provider.generate(prepared(provider, seed=3), RunContext())
    single = str(tiny_model_dir / SINGLE_FILE_NAME)
    from_file = provider.generate(prepared(provider, seed=3, model=single), RunContext())
    assert from_file.images[0].data == from_folder.images[0].data


def test_two_threads_load_the_model_once_and_do_not_interfere(provider):
    local.clear_cache()
    loads = local.CACHE.loads
    results: list = [None, None]
    errors: list = []

    def run(slot: int) -> None:
        try:
            results[slot] = provider.generate(prepared(provider, seed=5, steps=3), RunContext())
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert local.CACHE.loads == loads + 1
    assert sorted(r.usage["from_cache"] for r in results) == [False, True]
    assert results[0].images[0].data == results[1].images[0].data  # the shared scheduler was not mixed up


def test_progress_is_reported_for_every_step(provider):
    events: list[ProgressEvent] = []
    local.clear_cache()
    provider.generate(prepared(provider, steps=3), RunContext(progress=events.append))
    assert events[0].stage == "initializing" and "loading" in events[0].message
    steps = [(e.step, e.total_steps, round(e.fraction, 3)) for e in events if e.stage == "generating"]
    assert steps == [(1, 3, 0.333), (2, 3, 0.667), (3, 3, 1.0)]


def test_cancel_during_generation_raises_cancelled_and_the_model_still_works(provider):
    before = provider.generate(prepared(provider, steps=4), RunContext())
    ctx = RunContext()
    seen: list[int] = []

    def cancel_after_first_step(event: ProgressEvent) -> None:
        if event.stage == "generating":
            seen.append(event.step)
            ctx.cancel.set()

    ctx.progress = cancel_after_first_step
    with pytest.raises(Cancelled):
        provider.generate(prepared(provider, steps=4), ctx)
    assert seen == [1]  # stopped at the next step boundary, not after all four
    after = provider.generate(prepared(provider, steps=4), RunContext())
    assert after.images[0].data == before.images[0].data


def test_cancel_before_start_and_timeout(provider):
    ctx = RunContext()
    ctx.cancel.set()
    with pytest.raises(Cancelled):
        provider.generate(prepared(provider), ctx)
    with pytest.raises(ProviderTimeout, match="longer than"):
        provider.generate(prepared(provider), RunContext(timeout=0.0))


def test_unknown_hub_model_offline_is_not_configured_with_a_fix(provider):
    with pytest.raises(NotConfigured) as caught:
        provider.generate(prepared(provider, model="nobody/no-such-model"), RunContext())
    message = str(caught.value)
    assert "nobody/no-such-model" in message
    assert "hf download nobody/no-such-model" in message and "STUDIO_LOCAL_MODEL" in message


def test_missing_mask_or_image_is_an_invalid_request(provider):
    with pytest.raises(InvalidRequest, match="mask"):
        provider.generate(prepared(provider, mode=Mode.INPAINT, init_image=gradient(), strength=0.5), RunContext())
    with pytest.raises(InvalidRequest, match="input image"):
        provider.generate(prepared(provider, mode=Mode.IMAGE_TO_IMAGE, strength=0.5), RunContext())


# -- Stable Diffusion XL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    from tests.tiny_model import save_tiny_sdxl_model

    return save_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture
def sdxl_provider(tiny_sdxl_dir, studio_home) -> LocalProvider:
    return LocalProvider(Settings.load(studio_home, local_model=str(tiny_sdxl_dir)), Catalog())


def test_sdxl_text_to_image_image_to_image_and_inpaint(sdxl_provider):
    # SDXL pipelines' outputs have no nsfw_content_detected field: every SDXL run used to fail
    # after its whole denoise with an AttributeError.
    loaded, _ = sdxl_provider.load(sdxl_provider.settings.local_model)
    assert type(loaded.text_to_image).__name__ == "StableDiffusionXLPipeline"
    assert type(loaded.inpaint).__name__ == "StableDiffusionXLInpaintPipeline"

    text = sdxl_provider.generate(prepared(sdxl_provider, n=2), RunContext())
    assert [i.seed for i in text.images] == [42, 43]
    assert all(pixels(i.data).shape == (256, 256, 3) for i in text.images)

    init = gradient(300, 200)
    redone = sdxl_provider.generate(prepared(sdxl_provider, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=0.5),
                                    RunContext())
    assert pixels(redone.images[0].data).shape == (256, 256, 3)

    square = gradient(256, 256)
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    painted = sdxl_provider.generate(prepared(sdxl_provider, mode=Mode.INPAINT, init_image=square, mask=mask,
                                              strength=1.0), RunContext())
    out, original, keep = (kept_by_the_studio(painted.images[0].data, square, mask), np.asarray(square).astype(np.int16),
                           np.asarray(mask) == 0)
    assert np.array_equal(out[keep], original[keep]) and np.abs(out[~keep] - original[~keep]).mean() > 10


# -- which models a remote visitor may name ----------------------------------------------------


def test_without_free_paths_only_offered_models_are_accepted_and_paths_are_not_probed(provider, tiny_model_dir,
                                                                                     tmp_path):
    provider.settings.local_free_paths = False
    secret_file = tmp_path / "secret.ckpt"
    secret_file.write_bytes(b"not a model")
    (tmp_path / "folder").mkdir()
    attempts = [str(secret_file), str(tmp_path / "folder"), str(tmp_path / "missing.safetensors"), "/etc/passwd",
                "../../etc", "someone/any-hub-model", str(tiny_model_dir / SINGLE_FILE_NAME)]
    answers = set()
    for model_id in attempts:
        with pytest.raises(InvalidRequest) as caught:
            provider.model(model_id)
        answers.add(caught.value.message)
    # One answer for a file, a folder, a missing path and a hub id: nothing tells what exists.
    assert len(answers) == 1
    (answer,) = answers
    assert "stabilityai/sd-turbo" in answer and str(tmp_path) not in answer and str(tiny_model_dir) not in answer

    # The catalog, the operator's default, per-user models and the allowlist stay available.
    assert provider.model("stabilityai/sdxl-turbo").id == "stabilityai/sdxl-turbo"
    assert provider.model(str(tiny_model_dir)).location == str(tiny_model_dir)  # the configured default
    provider.settings.local_models = (str(tiny_model_dir / SINGLE_FILE_NAME),)
    allowed = provider.model(str(tiny_model_dir / SINGLE_FILE_NAME))
    assert (allowed.id, allowed.location) == (SINGLE_FILE_NAME, str(tiny_model_dir / SINGLE_FILE_NAME))
    listed = {m.id: m.label for m in provider.models()}
    assert listed[allowed.id] == SINGLE_FILE_NAME  # the picker shows a file name, not the server path
    assert provider.model(SINGLE_FILE_NAME).location == allowed.location  # and that name picks it


def test_an_allowlisted_file_can_be_offered_under_a_name_that_hides_its_path(provider, tiny_model_dir):
    provider.settings.local_free_paths = False
    provider.settings.local_model = "stabilityai/sd-turbo"
    provider.settings.local_models = (f"tiny-style={tiny_model_dir / SINGLE_FILE_NAME}",)
    offered = provider.models()
    assert "tiny-style" in [m.id for m in offered]
    assert not any(str(tiny_model_dir) in str(m.to_dict()) for m in offered)
    with pytest.raises(InvalidRequest):
        provider.model(str(tiny_model_dir / SINGLE_FILE_NAME))  # only the name is offered
    result = provider.generate(prepared(provider, model="tiny-style"), RunContext())
    assert pixels(result.images[0].data).shape == (256, 256, 3)

    # The default model can be a named entry too: its path stays on the server, its status is its file's.
    provider.settings.local_model = "tiny-style"
    assert provider.status().state == READY
    assert [m.id for m in provider.models() if m.default] == ["tiny-style"]
    assert not any(str(tiny_model_dir) in str(m.to_dict()) for m in provider.models())


def test_free_paths_stay_open_for_the_cli_and_library(provider, tiny_model_dir):
    assert provider.settings.local_free_paths  # the default: the person at the machine names any path
    assert provider.model(str(tiny_model_dir / SINGLE_FILE_NAME)).location == str(tiny_model_dir / SINGLE_FILE_NAME)


def test_allowlist_setting_from_environment_and_file(studio_home, monkeypatch):
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "studio.toml").write_text('[local]\nallowed_models = ["org/a", "/models/b.safetensors"]\n')
    assert Settings.load(studio_home).local_models == ("org/a", "/models/b.safetensors")
    monkeypatch.setenv("STUDIO_LOCAL_MODELS", " org/c , /models/d ,")
    assert Settings.load(studio_home).local_models == ("org/c", "/models/d")


def test_a_pickle_checkpoint_is_never_unpickled(provider, tmp_path):
    # A .ckpt is a pickle: unpickling one can run any code. diffusers reads it with
    # torch.load(weights_only=True), which refuses objects that are not tensors.
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    checkpoint = tmp_path / "evil.ckpt"
    checkpoint.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(NotConfigured):
        provider.load(str(checkpoint))
    assert not marker.exists()

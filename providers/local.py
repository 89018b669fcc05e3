"""Local Stable Diffusion through Hugging Face diffusers.

One loaded model serves every mode: the text-to-image pipeline is loaded once and the
image-to-image and inpainting pipelines are built from it with ``from_pipe``, so all three share
the same UNet, VAE, text encoder and scheduler objects (one copy in memory, not three).

Loaded models live in a small module-level LRU cache keyed by (model, device, dtype), shared by every
``LocalProvider`` instance, so the second request for a model does not load it again. Each cached
model has its own lock: its pipelines share one scheduler, whose state changes at every step, so
only one generation runs on a model at a time. A second lock per key makes sure two threads asking
for the same model at once load it only once.

torch and diffusers are imported inside the functions that need them: importing this module, or
asking for the provider's status, never imports them.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from providers.base import READY, UNAVAILABLE, Provider, ProviderStatus
from providers.local_models import (check_downloadable, describe_bytes, download, hub_offline, is_downloaded,
                                    quiet_libraries, set_log_home)
from studio.catalog import ModelInfo
from studio.errors import (Cancelled, ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure, ProviderTimeout,
                           StudioError)
from studio.imaging import flatten, png_bytes
from studio.model_names import (MODEL_FILE_SUFFIXES, last_part, looks_like_path, named_entries, shown_model,
                                 without_location)
from studio.types import Mode, PreparedRequest, ProviderImage, ProviderResult, RunContext
from studio.validation import nth_seed, random_seed

SINGLE_FILE_SUFFIXES = MODEL_FILE_SUFFIXES
DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float32": "float32", "fp32": "float32", "float": "float32"}
LOW_MEMORY_GPU_BYTES = 8 * 1024**3  # below this, slice attention to lower the peak
LARGE_IMAGE_PIXELS = 1024 * 1024  # above this, decode the VAE in tiles
LOG = logging.getLogger("image_studio.local")
INSTALL_HINT = "pip install torch diffusers transformers accelerate"
Report = Callable[[str, float, str], None]  # (stage, fraction of that stage, message)


# -- where a model comes from ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """What ``model_id`` names: a Hugging Face repo, a diffusers folder, or one checkpoint file."""

    kind: str  # hub | folder | single_file
    location: str  # the repo id, or the absolute path

    looks_like_path = staticmethod(looks_like_path)  # the one rule, studio.model_names

    @classmethod
    def parse(cls, model_id: str, shown: str | None = None) -> "ModelSource":
        """Where ``model_id`` (a Hub id or a path) is. Raises ``NotConfigured`` for a path that is no
        model; its message names the model by ``shown`` (default: its file or folder name), as it may
        reach a remote visitor, and the full path goes to the server's log."""
        text = model_id.strip()
        path = Path(text).expanduser()
        if not (cls.looks_like_path(text) or path.exists()):
            return cls("hub", text)
        name = shown or last_part(text)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise _path_problem(text, f"the local model {name!r} is not a diffusers model folder (it has no "
                                          "model_index.json); point its setting at a folder saved with "
                                          "save_pretrained, or at a .safetensors/.ckpt file")
            return cls("folder", str(path.resolve()))
        if path.is_file():
            if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
                raise _path_problem(text, f"the local model {name!r} is not a model: use a diffusers folder or a "
                                          ".safetensors/.ckpt file")
            return cls("single_file", str(path.resolve()))
        raise _path_problem(text, f"local model {name!r} not found: no such file or folder")


_LOGGED_PROBLEMS: set[tuple[str, str]] = set()


def _path_problem(path: str, message: str) -> NotConfigured:
    """The error for a configured model path that is not usable: ``message`` names the model by its
    shown name; the operator finds the full path in the server log."""
    if (path, message) not in _LOGGED_PROBLEMS:  # status is asked often: once per problem is enough
        _LOGGED_PROBLEMS.add((path, message))
        LOG.warning("%s (configured as %s)", message, path)
    return NotConfigured(f"{message} (the server log names the path)", provider="local")


# A Hugging Face model id as the Hub writes one: owner/name, letters, digits, '-', '_' and '.'.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


# -- device and dtype ------------------------------------------------------------------------


def choose_device(preferred: str | None, *, cuda: bool, mps: bool) -> str:
    """The device to run on: the one asked for (if this machine has it), else CUDA, Apple MPS, CPU."""
    if preferred:
        wanted = preferred.strip().lower()
        if wanted.startswith("cuda") and not cuda:
            raise NotConfigured(f"STUDIO_LOCAL_DEVICE is {preferred!r} but torch sees no CUDA GPU; "
                                "unset it to choose automatically", provider="local")
        if wanted == "mps" and not mps:
            raise NotConfigured("STUDIO_LOCAL_DEVICE is 'mps' but Apple Metal is not available; "
                                "unset it to choose automatically", provider="local")
        if not (wanted == "cpu" or wanted == "mps" or wanted.startswith("cuda")):
            raise NotConfigured(f"unknown STUDIO_LOCAL_DEVICE {preferred!r}; use cuda, mps or cpu", provider="local")
        return wanted
    if cuda:
        return "cuda"
    if mps:
        return "mps"
    return "cpu"


def choose_dtype(device: str, preferred: str | None) -> str:
    """Half precision on GPUs (twice as fast, half the memory); full precision on the CPU, where
    float16 kernels are slow or missing."""
    if preferred:
        name = DTYPES.get(preferred.strip().lower())
        if name is None:
            raise NotConfigured(f"unknown STUDIO_LOCAL_DTYPE {preferred!r}; use float16, bfloat16 or float32",
                                provider="local")
        return name
    if device.startswith("cuda") or device == "mps":
        return "float16"
    return "float32"


def detect_device_and_dtype(preferred_device: str | None, preferred_dtype: str | None) -> tuple[str, str]:
    import torch

    mps_backend = getattr(torch.backends, "mps", None)
    device = choose_device(preferred_device, cuda=torch.cuda.is_available(),
                           mps=bool(mps_backend and mps_backend.is_available()))
    return device, choose_dtype(device, preferred_dtype)


# -- the cache of loaded models --------------------------------------------------------------


@dataclass
class LoadedModel:
    """One model in memory: three pipelines over the same components, and the lock that serialises them."""

    source: ModelSource
    device: str
    dtype: str
    text_to_image: Any
    image_to_image: Any
    inpaint: Any
    load_seconds: float
    low_memory: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def sampler(self) -> str:
        return type(self.text_to_image.scheduler).__name__


CacheKey = tuple[str, str, str]


class PipelineCache:
    """A bounded LRU of loaded models; ``get`` loads at most once per key, even from many threads."""

    def __init__(self) -> None:
        self._models: OrderedDict[CacheKey, LoadedModel] = OrderedDict()
        self._guard = threading.Lock()  # protects the two dicts, never held while loading
        self._loading: dict[CacheKey, threading.Lock] = {}
        self.loads = 0  # how many times a model was actually loaded (for tests and benchmarks)

    def get(self, key: CacheKey, load: Callable[[], LoadedModel], max_size: int) -> tuple[LoadedModel, bool]:
        """The model for ``key`` and whether it came from the cache."""
        with self._guard:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key], True
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._guard:  # another thread may have finished loading it while we waited
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key], True
            model = load()
            with self._guard:
                self.loads += 1
                self._models[key] = model
                self._loading.pop(key, None)
                evicted = []
                while len(self._models) > max(0, max_size):
                    evicted.append(self._models.popitem(last=False)[1])
        if evicted:
            devices = {m.device for m in evicted}
            del evicted  # a thread still generating on one keeps its own reference until it finishes
            _free_memory(devices)
        return model, False

    def keys(self) -> list[CacheKey]:
        with self._guard:
            return list(self._models)

    def clear(self) -> None:
        with self._guard:
            devices = {m.device for m in self._models.values()}
            self._models.clear()
        _free_memory(devices)


def _free_memory(devices: set[str]) -> None:
    gc.collect()
    if any(d.startswith("cuda") for d in devices):
        import torch

        torch.cuda.empty_cache()
    if "mps" in devices:
        import torch

        torch.mps.empty_cache()


CACHE = PipelineCache()


def clear_cache() -> None:
    """Drop every loaded model and give its memory back (GPU memory included)."""
    CACHE.clear()


# -- loading ---------------------------------------------------------------------------------


def _load_text_to_image(source: ModelSource, dtype: Any, config: str | None, report: Report):
    from diffusers import AutoPipelineForText2Image

    if source.kind == "folder":
        return AutoPipelineForText2Image.from_pretrained(source.location, dtype=dtype)
    if source.kind == "single_file":
        return _load_single_file(source.location, dtype, config)
    # A Hugging Face id: use the local cache first, so a cached model never touches the network.
    if is_downloaded(source.location):
        try:
            return AutoPipelineForText2Image.from_pretrained(source.location, dtype=dtype, local_files_only=True)
        except OSError as missing:
            LOG.info("%s is not completely in the Hugging Face cache: %s", source.location, missing)
    # Not on this machine: ask the Hub first (seconds), then fetch exactly the pipeline's files with
    # a progress bar, then load them from the cache as above.
    remote = check_downloadable(source.location)  # the answer status got moments ago, if any
    size = describe_bytes(remote.total_bytes)
    report("downloading", 0.0, f"downloading {source.location} from Hugging Face ({remote.describe()})")

    def on_bytes(done: int, total: int) -> None:
        report("downloading", done / total if total else 1.0,
               f"downloading {source.location}: {describe_bytes(done)} of {size}")

    try:
        download(remote, on_bytes)
    except StudioError:  # cancelled from the progress callback: the finished files stay for next time
        raise
    except Exception as exc:  # network drop, disk full, server error: the download did not complete
        LOG.warning("downloading %s failed: %s: %s", source.location, type(exc).__name__, exc)
        raise NotConfigured(
            f"downloading the local model {source.location!r} ({size}) failed: {type(exc).__name__}: "
            f"{str(exc)[:200]}. Try again (finished files are kept), or fetch it with `hf download "
            f"{source.location}`.", provider="local") from exc
    report("initializing", 0.0, f"loading {source.location}")
    return AutoPipelineForText2Image.from_pretrained(source.location, dtype=dtype, local_files_only=True)


def _load_single_file(path: str, dtype: Any, config: str | None):
    """A single .safetensors/.ckpt checkpoint. diffusers also needs the matching diffusers config
    (component classes, scheduler, tokenizer). It comes from, in order: ``extra={"config": ...}``
    (a folder or repo id), a diffusers folder holding the checkpoint (a ``model_index.json`` beside
    it), or diffusers' guess of the base model, looked up in the Hugging Face cache."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if config is None and (Path(path).parent / "model_index.json").is_file():
        config = str(Path(path).parent)
    pipeline_class = StableDiffusionXLPipeline if _is_sdxl_checkpoint(path) else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config:
        kwargs["config"] = config
    if hub_offline():
        kwargs["local_files_only"] = True
    try:
        return pipeline_class.from_single_file(path, **kwargs)
    except Exception as exc:  # anything failing while reading someone's checkpoint is a set-up problem
        raise NotConfigured(
            f"cannot load the checkpoint {path}: {str(exc)[:300]}. A single-file checkpoint needs its base "
            "model's diffusers config: download it (e.g. `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 "
            "--exclude '*.safetensors' '*.bin' '*.ckpt'`), or put the checkpoint in a diffusers model folder, "
            "or pass extra={'config': <diffusers folder>}.",
            provider="local") from exc


def _is_sdxl_checkpoint(path: str) -> bool:
    # SDXL checkpoints carry a second text encoder under "conditioner.embedders.1". Reading the key
    # names of a .safetensors file costs nothing; .ckpt files are pickles, assumed SD 1.x/2.x.
    if not path.lower().endswith(".safetensors"):
        return False
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return any(key.startswith("conditioner.embedders.1.") for key in handle.keys())


def load_model(source: ModelSource, device: str, dtype: str, *, config: str | None = None,
               report: Report = lambda stage, fraction, message: None) -> LoadedModel:
    """Load ``source`` once and derive the image-to-image and inpainting pipelines from it.

    A Hub model that is not in the cache is downloaded first, reporting ("downloading", 0..1, text).
    Raises ``NotConfigured`` when the model cannot be had (offline, unreachable, unreadable files)."""
    started = time.perf_counter()
    with quiet_libraries():  # library warnings and progress bars go to the log, not to the user
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        try:
            text_to_image = _load_text_to_image(source, getattr(torch, dtype), config, report)
            text_to_image.to(device)
        except StudioError:
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            raise NotConfigured(f"cannot load the local model {source.location}: {str(exc)[:300]}",
                                provider="local") from exc
        # from_pipe hands the same component objects to the new pipelines: no second copy of any weight.
        image_to_image = AutoPipelineForImage2Image.from_pipe(text_to_image)
        inpaint = AutoPipelineForInpainting.from_pipe(text_to_image)
    for pipe in (text_to_image, image_to_image, inpaint):
        pipe.set_progress_bar_config(disable=True)
    low_memory = device == "mps" or (
        device.startswith("cuda") and torch.cuda.get_device_properties(device).total_memory < LOW_MEMORY_GPU_BYTES)
    if low_memory:
        # Attention in slices: a little slower, much lower peak memory. The UNet is shared, so this
        # applies to all three pipelines. (On roomy GPUs torch's fused SDPA attention is already used.)
        text_to_image.enable_attention_slicing()
    return LoadedModel(source=source, device=device, dtype=dtype, text_to_image=text_to_image,
                       image_to_image=image_to_image, inpaint=inpaint,
                       load_seconds=time.perf_counter() - started, low_memory=low_memory)


# -- generation helpers ----------------------------------------------------------------------


def _asked_steps(request: PreparedRequest) -> int:
    """The steps the request asks for: its own, else the model's default (30 for a model without one)."""
    return int(request.steps or (request.model.steps.default if request.model.steps else 30))


def steps_for_strength(steps: int, strength: float, max_steps: int = 150) -> int:
    """diffusers runs ``int(steps * strength)`` denoising steps on an input image; zero would crash.
    Raise the step count just enough to run one step (e.g. 2 steps at strength 0.3 becomes 4)."""
    if strength <= 0:
        raise InvalidRequest("strength 0 would return the input image unchanged; choose a strength above 0")
    needed = max(steps, math.ceil(1 / strength))
    while int(needed * strength) < 1:  # guard against float rounding, e.g. 3 * (1/3)
        needed += 1
    if needed > max_steps:
        raise InvalidRequest(f"strength {strength} is too low: it would need {needed} steps to change anything "
                             f"(at most {max_steps}); raise the strength")
    return needed


def _sized(image, width: int, height: int, mode: str):
    from PIL import Image

    image = flatten(image) if mode == "RGB" else image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def clip_cut_warnings(pipe, prompt: str, negative_prompt: str) -> list[str]:
    """What of ``prompt`` and ``negative_prompt`` the pipeline's CLIP text encoder(s) cannot read, as
    warnings for the result: CLIP reads at most ``tokenizer.model_max_length`` tokens (77 for Stable
    Diffusion, start and end markers included) and diffusers drops the rest, saying so only in its log.
    SDXL's second tokenizer has the same limit; the longest cut is the one reported."""
    warnings = []
    tokenizers = [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t is not None]
    for what, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if not text:
            continue
        cuts = []
        for tokenizer in tokenizers:
            limit = int(tokenizer.model_max_length)
            ids = tokenizer(text, truncation=False, verbose=False).input_ids  # quiet: we report it
            if len(ids) > limit:
                # Start and end markers take two places; what follows place limit - 1 is never read.
                cuts.append((len(ids) - 2, limit - 2, tokenizer.decode(ids[limit - 1:-1]).strip()))
        if cuts:
            count, readable, lost = max(cuts, key=lambda cut: len(cut[2]))
            shown = lost if len(lost) <= 120 else lost[:117] + "..."
            warnings.append(f"the {what} is {count} CLIP tokens long and the model reads only the first "
                            f"{readable}; this end of it was ignored: \"{shown}\"")
    return warnings


# -- the provider ----------------------------------------------------------------------------


class LocalProvider(Provider):
    name = "local"
    label = "Local (diffusers)"
    key_names = ()
    sdk_module = "diffusers"
    sdk_package = "diffusers"
    max_concurrency = 1  # one GPU (or CPU) does one generation at a time anyway

    # -- models: the configured default (per user) leads, even when it is a path or unknown id --

    def __init__(self, settings, catalog):
        super().__init__(settings, catalog)
        set_log_home(settings.home)

    def models(self) -> list[ModelInfo]:
        """The catalog's local models, the operator's allowlist (``local_models``) and the default model,
        each under the name it is shown by (``studio.model_names``: never a server path)."""
        catalog_models = self.catalog.models(self.name)
        default_id = self.shown(self.settings.local_model)
        models = [dataclasses.replace(m, default=(m.id == default_id)) for m in catalog_models]
        listed = {m.id for m in models}
        extra = [self.shown(model_id) for model_id in (self.settings.local_model, *self.offered_models())]
        for model_id in dict.fromkeys(shown for shown in extra if shown not in listed):
            models.insert(0 if model_id == default_id else len(models),
                          dataclasses.replace(self._described(model_id), default=(model_id == default_id)))
        return models

    def offered_models(self) -> dict[str, str]:
        """The operator's allowlist (``Settings.local_models``) as {id visitors see: where the model is}.

        An entry ``name=/models/style.safetensors`` is offered as ``name``, so the server path never
        leaves the server; an entry without a name (a Hub id, or a path) is its own id."""
        return named_entries(self.settings.local_models)

    def shown(self, model_id: str) -> str:
        """The name ``model_id`` (an id, a name or a configured path) is shown by: ``studio.model_names``'
        rule over this server's allowlist."""
        return shown_model(model_id, self.offered_models())

    def _configured(self) -> dict[str, str]:
        """{shown name: where it is} for every model the operator configured: the allowlist, the
        default and the per-user models. The first configured wins a name two paths share."""
        configured: dict[str, str] = {}
        for location in (*self.offered_models().values(), self.settings.local_model,
                         *self.settings.user_models.values()):
            configured.setdefault(self.shown(location), location)
        return configured

    def location(self, model_id: str) -> str:
        """Where ``model_id`` is loaded from: an allowlist name's or a shown name's configured location,
        else ``model_id`` itself (a Hub id, or a path the operator gives)."""
        return self.offered_models().get(model_id) or self._configured().get(model_id) or model_id

    def _described(self, model_id: str) -> ModelInfo:
        """The catalog's entry for ``model_id`` under its shown name, with ``location`` set when that
        differs from where the model is (a path): what ``model`` and ``models`` hand out."""
        location, shown = self.location(model_id), self.shown(model_id)
        entry = self.catalog.model(self.name, shown if shown == location else location)
        if shown == entry.id:
            return entry
        label = shown if not entry.known or entry.label in ("", entry.id) else entry.label
        return dataclasses.replace(entry, id=shown, label=label, location=location)

    def allowed_model_ids(self) -> set[str]:
        """Every model a visitor may choose when free model paths are off: catalog, allowlist, defaults
        (by their configured ids and by the names they are shown by)."""
        return ({m.id for m in self.catalog.models(self.name)} | set(self.offered_models()) | set(self._configured())
                | {self.settings.local_model} | set(self.settings.user_models.values()))

    def default_model(self, user: str = "local", mode: str = "text-to-image") -> ModelInfo:
        # The operator's (or user's) chosen model leads; the catalog's default for ``mode`` only
        # when the chosen one cannot do it.
        chosen = self._described(self.settings.model_for_user(user))
        if chosen.supports(mode):
            return chosen
        return super().default_model(user, mode)

    def model(self, model_id: str | None, user: str = "local", mode: str = "text-to-image") -> ModelInfo:
        """The model for ``model_id``. Raises ``InvalidRequest`` when free model paths are off
        (``Settings.local_free_paths``: web front ends with private visitors) and it is not one the
        operator offers. The check is on the name alone, before anything looks at the disk, so the
        answer is the same for a file, a folder or nothing at all."""
        if not model_id:
            return self.default_model(user, mode)
        if not self.settings.local_free_paths and model_id not in self.allowed_model_ids():
            offered = ", ".join(m.id for m in self.models() if not ModelSource.looks_like_path(m.id))
            raise InvalidRequest(f"this server offers only its listed local models ({offered}); "
                                 "choose one of them")
        if (model_id not in self.allowed_model_ids() and not ModelSource.looks_like_path(model_id)
                and not _HUB_ID.fullmatch(model_id.strip()) and not Path(model_id.strip()).expanduser().exists()):
            # Neither offered, nor a file or folder, nor written as a Hub id (owner/name): a typo
            # or another provider's model. Bad input, said before anything asks the Hub.
            offered = ", ".join(m.id for m in self.models() if not ModelSource.looks_like_path(m.id))
            raise InvalidRequest(f"unknown local model {model_id[:100]!r}: choose one of {offered}, a Hugging "
                                 "Face model id (owner/name) or a path to a diffusers folder or .safetensors file "
                                 "(see `python -m studio providers`)", provider=self.name)
        return self._described(model_id)

    def status(self) -> ProviderStatus:
        models = [m.to_dict() for m in self.models()]
        missing = [name for name in ("torch", "diffusers", "transformers") if importlib.util.find_spec(name) is None]
        if missing:
            return ProviderStatus(self.name, self.label, UNAVAILABLE,
                                  f"{', '.join(missing)} not installed: {INSTALL_HINT}", models)
        state, reason = self._default_model_state()
        return ProviderStatus(self.name, self.label, state, reason, models)

    def _default_model_state(self) -> tuple[str, str]:
        """Whether the default model can load: "ready" when its files are here; "ready" with the
        reason "downloads on first use (size)" when the Hub has it; else "unavailable" with the reason
        ("not available offline: ..."). Asking the Hub takes one request of a few seconds at most,
        and the answer is remembered for minutes (``local_models.check_downloadable``)."""
        try:
            default = self.settings.local_model
            source = ModelSource.parse(self.location(default), self.shown(default))
        except NotConfigured as exc:
            return UNAVAILABLE, exc.message
        if source.kind != "hub":
            return READY, ""
        if is_downloaded(source.location):
            return READY, ""
        try:
            remote = check_downloadable(source.location)
        except NotConfigured as exc:
            return UNAVAILABLE, exc.message
        return READY, f"{source.location} downloads on first use ({describe_bytes(remote.total_bytes)})"

    # -- the cache --

    def load(self, model_id: str, ctx: RunContext | None = None, *, config: str | None = None
             ) -> tuple[LoadedModel, bool]:
        """The loaded model for ``model_id`` (an id, a path, or a name from the allowlist) on this
        machine, and whether it came from the cache."""
        location, shown = self.location(model_id), self.shown(model_id)
        source = ModelSource.parse(location, shown)
        if source.kind == "hub" and not is_downloaded(source.location):
            # Not on this machine: find out whether it can be downloaded (one Hub request, seconds)
            # before importing torch and diffusers, which alone takes many seconds.
            check_downloadable(source.location)
        device, dtype = detect_device_and_dtype(self.settings.local_device, self.settings.local_dtype)

        def report(stage: str, fraction: float, message: str) -> None:
            if ctx is not None:
                ctx.report(stage, fraction, message=message)
                ctx.check_cancelled()  # a download can take minutes: Cancel stops it between chunks

        def load() -> LoadedModel:
            report("initializing", 0.0, f"loading {shown} on {device} ({dtype})")
            try:
                return load_model(source, device, dtype, config=config, report=report)
            except NotConfigured as exc:  # the libraries' texts name the files: shown by the model's name
                message = without_location(without_location(exc.message, source.location, shown), location, shown)
                if message == exc.message:
                    raise
                LOG.warning("%s", exc.message)  # the full path, for the operator
                raise NotConfigured(message, provider=self.name) from exc

        return CACHE.get((source.location, device, dtype), load, self.settings.local_cache_size)

    def clear_cache(self) -> None:
        clear_cache()

    def close(self) -> None:
        # Loaded models are shared by every Studio in the process (other sessions may be using
        # them), so closing one studio leaves them loaded; Studio.clear_model_cache() frees them.
        pass

    # -- the work --

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        ctx.check_cancelled()
        loaded, from_cache = self.load(request.model.location or request.model.id, ctx,
                                       config=request.extra.get("config"))
        import torch  # after load(): a model that cannot be had is refused without importing torch first
        pipe, arguments, denoising_steps = self._pipeline_and_arguments(loaded, request)
        steps = arguments["num_inference_steps"]
        seed = request.seed if request.seed is not None else random_seed(self.seed_space)
        seeds = [nth_seed(seed, i, self.seed_space) for i in range(request.n)]
        # Generators on the CPU draw the same starting noise whatever the device, so a seed means the
        # same picture on CPU and GPU (up to their arithmetic differences). One generator per image:
        # image i of a batch can be re-made alone with seed + i.
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]

        with loaded.lock:  # the three pipelines share one scheduler: one run at a time per model
            ctx.check_cancelled()
            self._set_vae_tiling(loaded, request)
            started = time.perf_counter()
            deadline = time.monotonic() + ctx.timeout
            try:
                output = pipe(**arguments, num_images_per_prompt=request.n, generator=generators,
                              callback_on_step_end=self._step_callback(ctx, deadline, denoising_steps))
            except StudioError:
                raise
            except torch.OutOfMemoryError as exc:
                raise ProviderFailure(
                    f"out of memory on {loaded.device} at {request.size} x{request.n}: try fewer images or a "
                    "smaller size, or set STUDIO_LOCAL_DTYPE=float16", provider=self.name) from exc
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ProviderFailure(f"diffusers failed: {str(exc)[:300]}", provider=self.name) from exc
            generate_seconds = time.perf_counter() - started

        images = self._encode(output, request, seeds, loaded, steps)
        warnings = clip_cut_warnings(pipe, request.prompt, request.negative_prompt)
        if steps > _asked_steps(request):  # raised by steps_for_strength: said, not silent
            warnings.append(f"{_asked_steps(request)} step(s) at strength {arguments['strength']:g} would change "
                            f"nothing (diffusers runs steps x strength of them on an input image); {steps} steps "
                            f"were run")
        usage = {"device": loaded.device, "dtype": loaded.dtype, "from_cache": from_cache,
                 "load_seconds": 0.0 if from_cache else round(loaded.load_seconds, 4),
                 "generate_seconds": round(generate_seconds, 4), "steps": steps, "denoising_steps": denoising_steps,
                 "sampler": loaded.sampler}
        return ProviderResult(images=images, cost=None, usage=usage, warnings=warnings)

    def _pipeline_and_arguments(self, loaded: LoadedModel, request: PreparedRequest) -> tuple[Any, dict, int]:
        """Which of the three pipelines runs the request, with what arguments, and how many denoising
        steps it will take (fewer than ``num_inference_steps`` when starting from an image)."""
        mode = request.mode
        if mode == Mode.VARIATION:  # a variation of an image is image-to-image; of a prompt, new seeds
            mode = Mode.IMAGE_TO_IMAGE if request.init_image is not None else Mode.TEXT_TO_IMAGE
        steps = _asked_steps(request)
        guidance = request.guidance if request.guidance is not None else 7.5
        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "guidance_scale": guidance,
            "width": request.width,
            "height": request.height,
        }
        if mode == Mode.TEXT_TO_IMAGE:
            return loaded.text_to_image, {**arguments, "num_inference_steps": steps}, steps

        if request.init_image is None:
            raise InvalidRequest(f"{mode.value} needs an input image")
        strength = request.strength if request.strength is not None else 0.6
        max_steps = int(request.model.steps.max) if request.model.steps else 150
        steps = steps_for_strength(steps, strength, max_steps)
        init = _sized(request.init_image, request.width, request.height, "RGB")
        arguments.update(image=init, strength=strength, num_inference_steps=steps)
        denoising_steps = int(steps * strength)
        if mode == Mode.IMAGE_TO_IMAGE:
            del arguments["width"], arguments["height"]  # img2img takes the size from the image
            return loaded.image_to_image, arguments, denoising_steps
        if mode == Mode.INPAINT:
            if request.mask is None:
                raise InvalidRequest("inpainting needs a mask (white = repaint)")
            arguments["mask_image"] = _sized(request.mask, request.width, request.height, "L")
            return loaded.inpaint, arguments, denoising_steps
        raise InvalidRequest(f"the local provider does not support mode {mode.value}")

    @staticmethod
    def _set_vae_tiling(loaded: LoadedModel, request: PreparedRequest) -> None:
        # Decoding a large image in tiles keeps VAE memory flat. The VAE is shared, so this is set
        # for every run (under the model's lock) rather than left over from the previous one.
        vae = loaded.text_to_image.vae
        pixels = request.width * request.height * request.n
        large = pixels > LARGE_IMAGE_PIXELS or (loaded.low_memory and pixels > 512 * 512)
        if not hasattr(vae, "enable_tiling"):
            return
        if large:
            vae.enable_tiling()
        else:
            vae.disable_tiling()

    @staticmethod
    def _step_callback(ctx: RunContext, deadline: float, expected_steps: int):
        """Report each denoising step; stop at once when cancelled or out of time."""

        def on_step_end(pipe, step: int, timestep, tensors: dict) -> dict:
            if ctx.cancel.is_set():
                # Raising here unwinds out of the pipeline before the VAE decode: nothing is wasted.
                raise Cancelled("cancelled by the user", provider="local")
            if time.monotonic() > deadline:
                raise ProviderTimeout(f"the local model took longer than {ctx.timeout:.0f} s", provider="local")
            total = getattr(pipe, "num_timesteps", None) or expected_steps
            ctx.report("generating", (step + 1) / total, step=step + 1, total_steps=total)
            return tensors

        return on_step_end

    def _encode(self, output, request: PreparedRequest, seeds: list[int], loaded: LoadedModel,
                steps: int) -> list[ProviderImage]:
        # SD 1.x/2.x outputs say which images their safety checker blacked out; SDXL outputs have no
        # such field (the SDXL pipelines have no safety checker).
        flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
        info = {"sampler": loaded.sampler, "device": loaded.device, "dtype": loaded.dtype, "steps": steps}
        images = []
        for picture, seed, blocked in zip(output.images, seeds, flagged):
            if blocked:  # the model's own safety checker blacked this one out
                continue
            # An inpaint's unmasked pixels (blurred a little by the VAE round trip) are pasted back
            # from the input at its own size by the studio (studio.masks.fit_to_input), as for every provider.
            images.append(ProviderImage(data=png_bytes(picture), seed=seed, info=dict(info)))
        if not images:
            raise ContentBlocked("the model's safety checker flagged every image; try a different prompt",
                                 provider=self.name)
        return images

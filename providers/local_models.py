"""Getting a local model's files onto this machine: the Hugging Face cache, or a download checked first.

A model named by its Hugging Face id is loaded from the cache when it is there. When it is not,
the studio first asks the Hub (one request, a few seconds at most) which files the model has and
how large they are, so it can say at once "downloads on first use (2.6 GB)" or "not available
offline", instead of letting diffusers retry for a minute and fail with a message about a missing
``model_index.json``. The download itself fetches exactly the files the pipeline needs, one by one
through ``hf_hub_download`` (so they land in the ordinary Hugging Face cache, where diffusers then
finds them with ``local_files_only=True``), and reports the bytes done after every chunk.

Everything here talks to ``HF_ENDPOINT`` (default https://huggingface.co) through huggingface_hub, so
tests point it at a loopback fake that follows the Hub's published API: ``GET /api/models/{repo}``
with ``blobs=True`` lists the files (``siblings``, each with ``rfilename`` and ``size``), and
``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` serve them.

The libraries' own chatter (diffusers, transformers and huggingface_hub log warnings, retry notices
and progress bars on stderr) goes to ``$STUDIO_HOME/logs/libraries.log`` instead: see ``quiet_libraries``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from studio.errors import NotConfigured

LOG = logging.getLogger("image_studio.local")
CHECK_TIMEOUT_SECONDS = 5.0  # how long "can this model be downloaded?" may take before the answer is "no"
CHECK_TTL_SECONDS = {True: 600.0, False: 30.0}  # how long a yes / a no is remembered (a no is retried soon)
LIBRARIES = ("diffusers", "transformers", "huggingface_hub")
# Weight formats diffusers never loads for PyTorch (other frameworks, or whole-model checkpoints that
# repos ship next to the diffusers folders for other tools).
FOREIGN_WEIGHTS = (".onnx", ".onnx_data", ".msgpack", ".h5", ".pb", ".ot", ".ckpt", ".pt", ".pth")
PRECISION_VARIANTS = ("fp16", "bf16", "fp32", "non_ema", "ema")


def hub_offline() -> bool:
    """Whether Hugging Face downloads are switched off (``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def describe_bytes(size: int) -> str:
    """``2.6 GB``, ``340 MB``, ``12 kB``: decimal units, as the Hub shows sizes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


# -- what a model on the Hub consists of -----------------------------------------------------


@dataclass(frozen=True)
class RemoteModel:
    """The files of a Hub model that its diffusers pipeline needs, and their sizes in bytes."""

    repo_id: str
    files: tuple[tuple[str, int], ...]  # (path in the repo, size in bytes)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        return f"{describe_bytes(self.total_bytes)} in {len(self.files)} files"


_VARIANT = re.compile(r"\.(?:%s)(?=[.-])" % "|".join(PRECISION_VARIANTS))


def _without_variant(filename: str) -> str:
    """The plain file a precision variant stands in for: "unet.fp16.safetensors" -> "unet.safetensors",
    "m.fp16-00001-of-00002.safetensors" -> "m-00001-of-00002.safetensors", "m.safetensors.index.fp16.json"
    -> "m.safetensors.index.json". A plain file comes back unchanged."""
    return _VARIANT.sub("", filename, count=1)


def pipeline_files(siblings: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """The files ``from_pretrained`` (no variant, PyTorch) reads, picked from a repo's file list.

    ``model_index.json`` plus the files of each component folder (unet/, vae/, text_encoder/...), with:
    other frameworks' weights left out; ``.bin`` weights left out where the folder has ``.safetensors``;
    precision variants (``*.fp16.safetensors``) left out where the plain file exists. Files at the top
    level besides ``model_index.json`` (README, sample images, an all-in-one checkpoint of several GB)
    are not part of the diffusers layout and are left out too."""
    names = {name for name, _ in siblings}
    if "model_index.json" not in names:
        raise ValueError("no model_index.json: not a diffusers model")
    chosen = []
    for name, size in siblings:
        folder, _, filename = name.rpartition("/")
        if name != "model_index.json" and (not folder or "/" in folder):
            continue
        if filename.lower().endswith(FOREIGN_WEIGHTS):
            continue
        plain = _without_variant(name)
        if plain != name and plain in names:
            continue
        if filename.endswith(".bin") and any(n.startswith(folder + "/") and n.endswith(".safetensors")
                                             and _without_variant(n) == n for n in names):
            continue
        chosen.append((name, int(size or 0)))
    # model_index.json last: its presence in the cache then means the whole download finished
    # (see ``is_downloaded``); an interrupted download is resumed on the next request.
    chosen.sort(key=lambda item: item[0] == "model_index.json")
    return tuple(chosen)


def is_downloaded(repo_id: str) -> bool:
    """Whether ``repo_id`` is in the Hugging Face cache (its ``model_index.json``, fetched last), checked
    without the network."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


_checks: dict[str, tuple[float, RemoteModel | NotConfigured]] = {}
_checks_lock = threading.Lock()


def check_downloadable(repo_id: str, *, timeout: float = CHECK_TIMEOUT_SECONDS, fresh: bool = False) -> RemoteModel:
    """What downloading ``repo_id`` involves, asked of the Hub in one request of at most ``timeout`` s.

    Raises ``NotConfigured`` (message starting "not available offline") when downloads are off, the
    Hub cannot be reached, or it has no such diffusers model. Answers are remembered for a while
    (``CHECK_TTL_SECONDS``) so status pages can ask on every render; ``fresh=True`` asks again."""
    now = time.monotonic()
    with _checks_lock:
        remembered = _checks.get(repo_id)
    if remembered and not fresh:
        checked_at, answer = remembered
        if now - checked_at < CHECK_TTL_SECONDS[isinstance(answer, RemoteModel)]:
            if isinstance(answer, NotConfigured):
                raise NotConfigured(answer.message, provider="local")
            return answer
    try:
        answer: RemoteModel | NotConfigured = _ask_the_hub(repo_id, timeout)
    except NotConfigured as error:
        answer = error
    with _checks_lock:
        _checks[repo_id] = (time.monotonic(), answer)
    if isinstance(answer, NotConfigured):
        raise answer
    return answer


def forget_checks() -> None:
    with _checks_lock:
        _checks.clear()


def not_available_offline(repo_id: str, why: str) -> NotConfigured:
    return NotConfigured(
        f"not available offline: the local model {repo_id!r} is not on this machine and {why}. Download it "
        f"once with `hf download {repo_id}` where there is internet access, or set STUDIO_LOCAL_MODEL to a "
        "diffusers folder or .safetensors file on this machine, or pick a cloud provider.",
        provider="local")


def _ask_the_hub(repo_id: str, timeout: float) -> RemoteModel:
    if hub_offline():
        raise not_available_offline(repo_id, "Hugging Face downloads are switched off (HF_HUB_OFFLINE is set)")
    with quiet_libraries():
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        try:
            info = HfApi().model_info(repo_id, files_metadata=True, timeout=timeout)
        except GatedRepoError as exc:
            LOG.warning("model check for %s: %s", repo_id, exc)
            raise not_available_offline(
                repo_id, "Hugging Face only serves it after you accept its licence (log in with `hf auth login`)"
            ) from exc
        except RepositoryNotFoundError as exc:
            LOG.warning("model check for %s: %s", repo_id, exc)
            raise not_available_offline(repo_id, f"Hugging Face ({hub_endpoint()}) has no model of that name") \
                from exc
        except Exception as exc:  # connection refused, DNS, timeout, proxy, server error: all mean "cannot get it"
            LOG.warning("model check for %s failed: %s: %s", repo_id, type(exc).__name__, exc)
            raise not_available_offline(
                repo_id, f"Hugging Face ({hub_endpoint()}) cannot be reached ({type(exc).__name__})") from exc
    siblings = [(s.rfilename, s.size or 0) for s in (info.siblings or [])]
    try:
        files = pipeline_files(siblings)
    except ValueError as exc:
        raise not_available_offline(repo_id, "it is not a diffusers model (its repo has no model_index.json)") \
            from exc
    return RemoteModel(repo_id, files)


# -- downloading -------------------------------------------------------------------------------


ByteProgress = Callable[[int, int], None]  # (bytes done, bytes in all)


def download(remote: RemoteModel, progress: ByteProgress) -> None:
    """Fetch every file of ``remote`` into the Hugging Face cache, calling ``progress`` as bytes arrive.

    Files already in the cache are skipped (their bytes count as done). A file is written under a
    temporary name and renamed when complete (huggingface_hub's ``.incomplete`` files), so an
    interrupted download never leaves a truncated weight file that looks finished."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    total = remote.total_bytes
    done = 0
    lock = threading.Lock()

    class Counter:  # the minimal tqdm interface huggingface_hub drives: created per file, update(n) per chunk
        def __init__(self, *args, **kwargs) -> None:
            self.n = kwargs.get("initial") or 0

        def update(self, n: int = 1) -> None:
            nonlocal done
            with lock:
                done += n
                progress(min(done, total), total)
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.close()

        def close(self) -> None:
            pass

        def set_description(self, *args, **kwargs) -> None:
            pass

        def refresh(self, *args, **kwargs) -> None:
            pass

    progress(0, total)
    with quiet_libraries():
        for name, size in remote.files:
            if isinstance(try_to_load_from_cache(remote.repo_id, name), str):
                with lock:
                    done += size
                progress(min(done, total), total)
                continue
            before = done
            hf_hub_download(remote.repo_id, name, tqdm_class=Counter)
            with lock:  # small files may come without per-chunk updates; count them whole
                done = max(done, before + size)
            progress(min(done, total), total)


# -- keeping library output off the user's screen ----------------------------------------------


_quiet_lock = threading.Lock()
_quieted: set[str] = set()
_log_handler: logging.Handler | None = None
_log_home: Path | None = None
WARNINGS_LOG = logging.getLogger("image_studio.libraries")


def set_log_home(home: Path) -> None:
    """Where ``logs/libraries.log`` is written (the studio's home); the first studio to ask decides."""
    global _log_home
    with _quiet_lock:
        if _log_home is None:
            _log_home = Path(home)


def library_log_path() -> Path:
    from studio.config import default_home

    return (_log_home or default_home()) / "logs" / "libraries.log"


def _handler() -> logging.Handler:
    global _log_handler
    if _log_handler is None:
        path = library_log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _log_handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        except OSError:  # a read-only home: drop library chatter rather than print it to the user
            _log_handler = logging.NullHandler()
        _log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for logger in (LOG, WARNINGS_LOG):
            logger.addHandler(_log_handler)
            logger.propagate = False
    return _log_handler


def _route_library_loggers() -> None:
    """Send the libraries' loggers to the studio's log file instead of their own stderr handlers.

    Runs for each library once it is imported (each adds its stderr handler on import). The loggers
    stop propagating: an unconfigured root logger would print them on stderr again."""
    with _quiet_lock:
        handler = _handler()
        pending = [name for name in LIBRARIES if name in sys.modules and name not in _quieted]
        for name in pending:
            logger = logging.getLogger(name)
            for old in list(logger.handlers):
                if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                    logger.removeHandler(old)
            logger.addHandler(handler)
            logger.propagate = False
            _quieted.add(name)
        if "diffusers" in pending:
            from diffusers.utils import logging as diffusers_logging

            diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars on stderr
        if "transformers" in pending:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()


class _StderrToLog(io.TextIOBase):
    """A stand-in for stderr that writes each line to the libraries' log."""

    def __init__(self) -> None:
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                WARNINGS_LOG.info("%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            WARNINGS_LOG.info("%s", self._pending.rstrip())
        self._pending = ""


_quiet_depth = 0  # how many threads are inside quiet_libraries (stderr is swapped once, restored by the last)
_saved_outputs: tuple = ()


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    WARNINGS_LOG.warning("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Inside: library log records, Python warnings and anything printed on stderr go to
    ``libraries.log``, not to the user's terminal or page.

    Libraries print some messages while they are being imported, before their loggers can be
    re-routed, so stderr itself is redirected here, and ``warnings.showwarning`` logs instead of
    printing. Both are process-wide: the first thread in swaps them and the last one out puts them
    back (so overlapping loads in two threads cannot leave stderr redirected). Whatever another
    thread prints or warns meanwhile is logged instead of shown, which is harmless: model loads and
    downloads are rare."""
    global _quiet_depth, _saved_outputs
    _route_library_loggers()
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_outputs = (sys.stderr, warnings.showwarning)
            sys.stderr = _StderrToLog()
            warnings.showwarning = _log_warning
        _quiet_depth += 1
    try:
        yield
    finally:
        _route_library_loggers()  # libraries imported inside the block
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                sys.stderr.flush()
                sys.stderr, warnings.showwarning = _saved_outputs

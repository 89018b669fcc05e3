"""The one rule for the name a model is shown by: never a path on the server.

A local model may be configured as a path (``STUDIO_LOCAL_MODEL=/srv/models/style``, a per-user
mapping to a file, an allowlist entry). Everything that leaves the server (records, their embedded
metadata, history, API answers, provider and model lists, job progress, error texts) names it by:

* the operator's name for it, for an allowlist entry ``name=/srv/models/style.safetensors``;
* else, for a path, its last part (``/srv/models/style`` -> ``style``);
* else the id as it is (a catalog or Hugging Face id such as ``stabilityai/sd-turbo``).

Only the local provider ever needs the path back (``ModelInfo.location``); it maps a shown name to
its configured location (``providers.local.LocalProvider``).
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Iterable, Mapping

# Files a model may be given as; an id ending so is a path even without a slash in front.
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt")


def looks_like_path(model_id: str) -> bool:
    """Whether ``model_id`` is written as a path (judged from the text alone, no disk access)."""
    text = model_id.strip()
    return text.startswith(("/", ".", "~")) or text.lower().endswith(MODEL_FILE_SUFFIXES) or "\\" in text


def named_entries(entries: Iterable[str]) -> dict[str, str]:
    """The allowlist (``Settings.local_models``) as ``{name shown: where the model is}``: an entry
    ``name=location`` under its name, any other entry (a Hub id, a path) under itself."""
    named: dict[str, str] = {}
    for entry in entries:
        name, equals, location = entry.partition("=")
        if equals and name.strip() and location.strip():
            named[name.strip()] = location.strip()
        else:
            named[entry] = entry
    return named


def last_part(path: str) -> str:
    """A path's file or folder name (``/srv/models/style/`` -> ``style``; Windows paths too)."""
    text = path.strip().rstrip("/\\")
    return PureWindowsPath(text).name if "\\" in text else PurePosixPath(text).name or text


def shown_model(model_id: str, named: Mapping[str, str] | None = None) -> str:
    """The name ``model_id`` is shown by (see the module's rule). ``named`` is the operator's
    allowlist as ``named_entries`` gives it: an id that is one of its names, or the location of a
    named entry, is shown by that name."""
    for name, location in (named or {}).items():
        if model_id in (name, location) and name != location:
            return last_part(name) if looks_like_path(name) else name
    return last_part(model_id) if looks_like_path(model_id) else model_id


def without_location(text: str, location: str, shown: str) -> str:
    """``text`` (an error or a library's message) with the server path ``location`` (and anything
    under it) named by ``shown`` instead; ``text`` unchanged when ``location`` is not a path."""
    if not looks_like_path(location):
        return text
    for spelling in dict.fromkeys((location.strip(), location.strip().rstrip("/\\"))):
        if spelling:
            text = text.replace(spelling, shown)
    return text


__all__ = ["MODEL_FILE_SUFFIXES", "last_part", "looks_like_path", "named_entries", "shown_model", "without_location"]

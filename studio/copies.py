"""Copies of stored images that a front end hands out, and finding them again.

A web front end cannot serve the studio's own files (that would let anyone who guesses a path
fetch another visitor's image), so it serves copies: an exported ``<id>.<ext>``, a thumbnail
``<id>.thumb.webp``, a zip with a ``manifest.json``, a collage. Gradio copies each of those once
more into its file cache (``<cache>/<hash>/<file name>``) and serves that copy until it is removed,
across restarts. Deleting an image must remove every such copy; this module says which files are
copies of which images, so that rule lives in one place.

A derived file whose name and content do not say which images went into it (a collage) gets a
sidecar ``<file name>.ids`` listing them, written next to it. The core notes each deleted image id
in ``<home>/deleted-images.txt`` (``note_deleted``), so a server that was down, or another process,
can drop its copies later without touching copies that belong to another studio sharing the cache.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from studio.imaging import EXTENSIONS
from studio.types import ImageRecord

log = logging.getLogger(__name__)

# Stored image ids are 16 hex digits (``secrets.token_hex(8)``).
_COPY_NAME = re.compile(r"(?P<id>[0-9a-f]{16})(?:\.thumb)?\.(?:png|jpe?g|webp)")
IDS_SUFFIX = ".ids"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest larger than this is not one of ours


DELETED_LOG = "deleted-images.txt"


def note_deleted(home: Path, image_id: str) -> None:
    """Append ``image_id`` to the studio's log of deleted images (one id a line)."""
    with open(Path(home) / DELETED_LOG, "a", encoding="utf-8") as log_file:
        log_file.write(f"{image_id}\n")


def deleted_ids(home: Path) -> set[str]:
    """Every image id the studio at ``home`` has deleted (``note_deleted``)."""
    path = Path(home) / DELETED_LOG
    return set(path.read_text(encoding="utf-8").split()) if path.is_file() else set()


def copy_name(record: ImageRecord, *, thumbnail: bool = False) -> str:
    """The file name a copy of ``record`` is served under: ``<id>.<ext>``, or ``<id>.thumb.webp``."""
    if thumbnail:
        return f"{record.id}.thumb.webp"
    return f"{record.id}.{EXTENSIONS.get(record.format, record.format)}"


def write_ids(path: Path, image_ids: Iterable[str]) -> None:
    """Record next to the derived file ``path`` which images went into it."""
    Path(f"{path}{IDS_SUFFIX}").write_text("\n".join(sorted(set(image_ids))), encoding="utf-8")


def image_ids_in(path: Path) -> set[str]:
    """The stored images the served file ``path`` is a copy of or was made from: from its name, its
    ``.ids`` sidecar, or (for a zip) the ``id`` column of its ``manifest.json``. Empty for a file
    that is none of these; an unreadable zip is logged and counts as empty."""
    match = _COPY_NAME.fullmatch(path.name)
    if match:
        return {match.group("id")}
    found: set[str] = set()
    sidecar = Path(f"{path}{IDS_SUFFIX}")
    if sidecar.is_file():
        found |= set(sidecar.read_text(encoding="utf-8").split())
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("manifest.json")
                if info.file_size <= MAX_MANIFEST_BYTES:
                    rows = json.loads(archive.read(info)).get("images", [])
                    found |= {str(row.get("id")) for row in rows if isinstance(row, dict) and row.get("id")}
        except KeyError:  # a zip without our manifest: not one of ours
            pass
        except (OSError, zipfile.BadZipFile, ValueError, AttributeError) as exc:
            log.warning("cannot read the manifest of %s: %s", path, exc)
    return found


def copies(folder: Path, is_gone: Callable[[str], bool]) -> Iterator[Path]:
    """Files in ``folder`` or its sub-folders (two levels: an exporter's ``<visitor>/<file>`` and
    ``<visitor>/<tmp>/<file>``, Gradio's ``<hash>/<file>``) that copy or contain an image for which
    ``is_gone(image_id)`` is true."""
    if not folder.is_dir():
        return
    for path in folder.glob("**/*"):
        if len(path.relative_to(folder).parts) > 3 or not path.is_file() or path.name.endswith(IDS_SUFFIX):
            continue
        if any(is_gone(image_id) for image_id in image_ids_in(path)):
            yield path


def remove(path: Path, *, root: Path) -> None:
    """Delete the served file ``path`` with its sidecar, then its folders up to ``root`` that are
    left empty. A failure is logged (the next sweep tries again), never raised."""
    try:
        path.unlink(missing_ok=True)
        Path(f"{path}{IDS_SUFFIX}").unlink(missing_ok=True)
        parent = path.parent
        while parent != root and root in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    except OSError as exc:
        log.warning("could not remove the served copy %s: %s", path, exc)


def remove_folder(folder: Path) -> None:
    """Delete a whole folder of served copies; a failure is logged, never raised."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", folder, exc)


__all__ = ["DELETED_LOG", "IDS_SUFFIX", "copies", "copy_name", "deleted_ids", "image_ids_in", "note_deleted", "remove",
           "remove_folder", "write_ids"]

"""The file store: where image bytes live, behind a small interface.

``LocalFileStore`` keeps files under the data directory. Every write is atomic: bytes go to a
temporary file in the same folder, are flushed to disk, then renamed into place, so a crash leaves
either the whole file or nothing (plus a ``.tmp-`` file that ``repair`` removes).
``studio.storage.s3.S3FileStore`` implements the same methods on S3-compatible object storage;
``studio.storage.file_store_for`` picks one from the settings.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterator, Protocol

# The image store's errors are the studio's storage errors (studio.errors, shared with the database).
from studio.errors import StorageError

TMP_MARKER = ".tmp-"


class FileStore(Protocol):
    """Bytes by key (``images/<category>/<yyyy>/<mm>/<dd>/<id>.png``, ``thumbs/...``).

    ``put`` returns only once the bytes are durably stored and whole; ``get`` and ``move`` raise
    FileNotFoundError for a missing key; ``delete`` of a missing key does nothing. ``local_path``
    is None where objects have no path on this machine (callers then read bytes); ``url`` is a
    link a browser may fetch the object from for ``expires`` seconds, or None where the server must
    stream it; ``location_of`` names where a key's object is, for messages and the CLI (a file path,
    ``s3://bucket/key``)."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def move(self, src: str, dst: str) -> None: ...
    def keys(self, prefix: str) -> Iterator[str]: ...
    def local_path(self, key: str) -> Path | None: ...
    def discard_partial(self, key: str) -> None: ...
    def url(self, key: str, expires: int = 300) -> str | None: ...
    def location_of(self, key: str) -> str: ...


class LocalFileStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys are built by the studio, but never let one escape the data directory.
        if self.root.resolve() not in path.parents:
            raise ValueError(f"refusing a storage key outside the data directory: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}{TMP_MARKER}{secrets.token_hex(4)}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def move(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(src), target)
        _fsync_dir(target.parent)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for filename in filenames:
                yield Path(dirpath, filename).relative_to(self.root).as_posix()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def url(self, key: str, expires: int = 300) -> str | None:
        return None  # a local file has no URL of its own: the server reads and streams it

    def location_of(self, key: str) -> str:
        return str(self._path(key))

    def discard_partial(self, key: str) -> None:
        """Remove temp files an interrupted ``put(key, ...)`` left behind."""
        path = self._path(key)
        if path.parent.is_dir():
            for leftover in path.parent.glob(f"{path.name}{TMP_MARKER}*"):
                leftover.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

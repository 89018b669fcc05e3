"""A loopback fake of the Hugging Face Hub, for huggingface_hub pointed at it with ``HF_ENDPOINT``.

It follows the Hub's published HTTP API (https://huggingface.co/docs/hub/api, and what
huggingface_hub's ``model_info`` and ``hf_hub_download`` read):

- ``GET /api/models/{repo_id}`` (``?blobs=true`` for file sizes) and
  ``GET /api/models/{repo_id}/revision/{revision}``: ``{"id", "modelId", "sha", "siblings": [{"rfilename",
  "size", "blobId", "lfs"?}]}``; an unknown repo is a 404 with ``X-Error-Code: RepoNotFound``.
- ``HEAD`` / ``GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (for
  LFS files ``X-Linked-Etag`` and ``X-Linked-Size`` too) and ``Content-Length``; an unknown file is a
  404 with ``X-Error-Code: EntryNotFound``.

Files are served from memory: ``HubFake({"org/model": {"unet/config.json": b"...", ...}})``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote

from tests.fakes.http import Request, Response

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".msgpack", ".onnx")


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by its path relative to it (as a repo would hold them)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class HubFake:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commit = hashlib.sha1(repr(sorted((r, sorted(f)) for r, f in repos.items())).encode()).hexdigest()
        self.downloads: list[str] = []  # "repo/path" of every file served whole by a GET
        self.failing: set[str] = set()  # paths whose GET answers 500 (a CDN failing mid-download)

    def __call__(self, request: Request) -> Response:
        path = unquote(request.path)
        if path.startswith("/api/models/"):
            return self._model_info(path[len("/api/models/"):], request)
        if "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            _revision, _, filename = rest.partition("/")
            return self._file(repo_id, filename, request)
        return Response(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})

    def _model_info(self, rest: str, request: Request) -> Response:
        repo_id = rest.split("/revision/")[0]
        files = self.repos.get(repo_id)
        if files is None:
            return Response(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        with_sizes = request.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for name, data in files.items():
            sibling = {"rfilename": name}
            if with_sizes:
                sibling.update(size=len(data), blobId=hashlib.sha1(data).hexdigest())
                if name.endswith(LFS_SUFFIXES):
                    sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                      "pointerSize": 134}
            siblings.append(sibling)
        return Response(200, {"id": repo_id, "modelId": repo_id, "sha": self.commit, "private": False,
                              "library_name": "diffusers", "siblings": siblings})

    def _file(self, repo_id: str, filename: str, request: Request) -> Response:
        data = self.repos.get(repo_id, {}).get(filename)
        if data is None:
            code = "RepoNotFound" if repo_id not in self.repos else "EntryNotFound"
            return Response(404, {"error": f"{filename} not found"}, {"X-Error-Code": code})
        etag = hashlib.sha256(data).hexdigest() if filename.endswith(LFS_SUFFIXES) else hashlib.sha1(data).hexdigest()
        headers = {"X-Repo-Commit": self.commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if filename.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        if request.method == "GET":
            if filename in self.failing:
                return Response(500, {"error": "Internal Error"})
            self.downloads.append(f"{repo_id}/{filename}")
        return Response(200, data, headers)

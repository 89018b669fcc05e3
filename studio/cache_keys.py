"""What identifies a request's images for the cache, and an edit's inputs as kept for re-runs.

A request with a fixed seed on a deterministic model makes the same images every time, so the
studio can answer it from earlier images of the same user. ``cache_key`` names that: a sha256 of
every field that changes the pixels, an edit's input image and mask included (by the sha256 of
their PNG, which is also their file name in the file store, see ``edit_sources``).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from studio.imaging import png_bytes
from studio.options import recordable

if TYPE_CHECKING:
    from studio.types import GenerationRequest, PreparedRequest

SOURCES_PREFIX = "sources"  # file store folder of edits' input images and masks, kept for re-runs

# ``{"source_image" | "source_mask": (file store key, PNG bytes)}``
Sources = dict[str, tuple[str, bytes]]


def edit_sources(prepared: "PreparedRequest") -> Sources:
    """An edit's input image and mask as PNG, with the file store key each is kept under (none for
    text-to-image). Keys are ``sources/<sha256>.png``: the same input is kept once."""
    kept = {}
    for name, image in (("source_image", prepared.init_image), ("source_mask", prepared.mask)):
        if image is not None:
            data = png_bytes(image)
            kept[name] = (f"{SOURCES_PREFIX}/{hashlib.sha256(data).hexdigest()}.png", data)
    return kept


def cache_key(prepared: "PreparedRequest", sources: Sources) -> str:
    """The hex sha256 naming what ``prepared`` draws; ``sources`` is ``edit_sources(prepared)``
    (passed in so that each input is encoded once per request)."""
    def image_hash(name: str) -> str | None:  # the PNG's sha256, as in its key
        return hashlib.sha256(sources[name][1]).hexdigest() if name in sources else None

    material = {
        # A local model given as a path is keyed by the path: two folders shown by one name differ.
        "provider": prepared.provider, "model": prepared.model.location or prepared.model.id,
        "mode": prepared.mode.value,
        "prompt": prepared.prompt, "negative": prepared.negative_prompt, "size": prepared.size,
        "n": prepared.n, "seed": prepared.seed, "steps": prepared.steps, "guidance": prepared.guidance,
        "strength": prepared.strength, "quality": prepared.quality, "format": prepared.output_format,
        "compression": prepared.compression, "extra": recordable(prepared.extra),
        "init": image_hash("source_image"), "mask": image_hash("source_mask"),
        "postprocess": prepared.postprocess,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def wanted(request: "GenerationRequest", prepared: "PreparedRequest") -> bool:
    """Whether to answer from the cache: as the request says, else only when its seed is fixed and
    the model honours seeds (otherwise the same request is meant to draw something new)."""
    if request.cache is not None:
        return request.cache
    return request.seed is not None and prepared.model.seed

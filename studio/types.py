"""The studio's vocabulary: what a request asks for, what a provider returns, what is kept.

``GenerationRequest`` is what a person (or the CLI, a page, a batch item) asks for.
``PreparedRequest`` is the same request after validation and style expansion: decoded images,
every default filled in. Providers only ever see a ``PreparedRequest``.
``ImageRecord`` is one stored image with everything needed to find it, re-run it and pay for it.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:  # Pillow is cheap, but the type module should stay import-light.
    from PIL import Image

    from studio.catalog import ModelInfo


class Mode(str, Enum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINT = "inpaint"
    VARIATION = "variation"

    @classmethod
    def parse(cls, value: "Mode | str") -> "Mode":
        if isinstance(value, Mode):
            return value
        aliases = {"txt2img": cls.TEXT_TO_IMAGE, "img2img": cls.IMAGE_TO_IMAGE, "edit": cls.IMAGE_TO_IMAGE}
        text = str(value).strip().lower()
        if text in aliases:
            return aliases[text]
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            from studio.errors import InvalidRequest

            raise InvalidRequest(f"unknown mode {value!r}; choose one of {names}") from None


OUTPUT_FORMATS = ("png", "jpeg", "webp")

# An image handed to the studio: raw bytes, a path on disk, or an already decoded Pillow image.
ImageInput = Union[bytes, str, Path, "Image.Image"]


@dataclass
class GenerationRequest:
    """What someone asked for. Everything optional falls back to the model's defaults."""

    prompt: str
    mode: Mode | str = Mode.TEXT_TO_IMAGE
    provider: str | None = None
    model: str | None = None
    negative_prompt: str = ""
    style: str | None = None
    width: int | None = None
    height: int | None = None
    n: int = 1
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    init_image: ImageInput | None = None
    mask: ImageInput | None = None
    output_format: str = "png"
    quality: str | None = None  # the provider's render quality (e.g. low/medium/high, standard/ultra)
    compression: int = 95  # JPEG/WEBP encoder quality, 1-100
    category: str = ""
    tags: list[str] = field(default_factory=list)
    parent_id: str | None = None
    user: str = "local"
    cache: bool | None = None  # None: reuse stored images only for a fixed seed
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific options (background, ...)
    postprocess: dict[str, Any] = field(default_factory=dict)  # upscale / sharpen / autocontrast / enhance

    def replace(self, **changes: Any) -> "GenerationRequest":
        return dataclasses.replace(self, **changes)


@dataclass
class PreparedRequest:
    """A validated request with styles expanded and images decoded; what providers receive."""

    provider: str
    model: "ModelInfo"
    mode: Mode
    prompt: str
    negative_prompt: str
    width: int
    height: int
    n: int
    seed: int | None
    steps: int | None
    guidance: float | None
    strength: float | None
    init_image: "Image.Image | None"
    mask: "Image.Image | None"
    output_format: str
    quality: str | None
    compression: int
    user: str
    extra: dict[str, Any]
    style: str | None = None
    user_prompt: str = ""  # the prompt before the style template was applied
    user_negative_prompt: str = ""  # the negative prompt as the user wrote it, before the style added its own
    postprocess: dict[str, Any] = field(default_factory=dict)  # applied by the core after the provider

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass
class ProviderImage:
    """One image as a provider returned it: encoded bytes plus what the provider told us."""

    data: bytes
    seed: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # e.g. revised prompt, finish reason


@dataclass
class ProviderResult:
    images: list[ProviderImage]
    cost: float | None = None  # the provider's own figure (tokens, credits, GPU seconds); None: use the estimate
    usage: dict[str, Any] = field(default_factory=dict)
    # What the person should know about this answer (e.g. part of the prompt the model could not
    # read); the studio adds them to the request's warnings, which every front end shows.
    warnings: list[str] = field(default_factory=list)


@dataclass
class ProgressEvent:
    stage: str  # initializing | generating | saving | done
    fraction: float  # 0..1 over the whole request
    step: int | None = None
    total_steps: int | None = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class RunContext:
    """What a running generation can consult: where to report progress, whether to stop, how long."""

    progress: ProgressCallback | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    timeout: float = 300.0

    def report(self, stage: str, fraction: float, **details: Any) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(stage=stage, fraction=max(0.0, min(1.0, fraction)), **details))

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            from studio.errors import Cancelled

            raise Cancelled("cancelled by the user")


# What an ImageRecord knows that must never leave the server (see ``ImageRecord.public_dict``).
PRIVATE_RECORD_FIELDS = ("owner", "path", "abs_path", "thumb_path", "cache_key")


def without_private_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a record's fields (``ImageRecord`` as a dict, or the ``studio`` JSON read back from
    an image file, which older versions wrote with more in it) without ``PRIVATE_RECORD_FIELDS``."""
    return {name: value for name, value in data.items() if name not in PRIVATE_RECORD_FIELDS}


@dataclass
class ImageRecord:
    """One stored image and everything known about it."""

    id: str
    owner: str
    path: str  # key in the file store, relative to the images root
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int
    provider: str
    model: str
    mode: str
    prompt: str
    negative_prompt: str = ""
    style: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # steps, guidance, strength, quality, sampler...
    seed: int | None = None
    category: str = ""
    tags: list[str] = field(default_factory=list)
    cost: float = 0.0
    generation_time: float = 0.0
    created_at: str = ""
    status: str = "completed"
    parent_id: str | None = None
    thumb_path: str | None = None
    request_id: str | None = None
    cache_key: str | None = None
    shared: bool = False
    user_prompt: str = ""
    abs_path: str | None = None  # filled in by storage for local file stores

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["path"] = self.abs_path or self.path
        data["key"] = self.path
        data.pop("abs_path", None)
        return data

    def public_dict(self) -> dict[str, Any]:
        """The record as anyone who can see the image may learn it: no owner id (it names a visitor or
        an e-mail address) and no server paths or cache keys. Image metadata, the History page's
        details and other answers that leave the server start from this."""
        return without_private_fields(dataclasses.asdict(self))

    @property
    def file_name(self) -> str:
        """The stored file's own name (``<id>.png``...), without any folder."""
        return PurePosixPath(self.path).name

    def public_summary(self) -> dict[str, Any]:
        """``summary`` as it may leave the server (webhooks, API answers): the stored file's name
        (``file``) instead of its server path, from ``public_dict``."""
        shown = self.public_dict()
        return {"id": shown["id"], "file": self.file_name,
                **{name: value for name, value in self.summary().items() if name in shown and name != "id"}}

    def summary(self) -> dict[str, Any]:
        """The short form the CLI's ``--json`` output promises (on the server itself: the image's
        server path; ``public_summary`` is the form that leaves it)."""
        return {
            "id": self.id,
            "path": self.abs_path or self.path,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "provider": self.provider,
            "model": self.model,
            "seed": self.seed,
            "cost": round(self.cost, 6),
            "parent_id": self.parent_id,
        }

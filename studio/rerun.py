"""Reading an image back into a request: its embedded metadata ("PNG info") and the request that
re-runs it, with an edit's kept input image and mask for their owner only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.cache_keys import SOURCES_PREFIX
from studio.errors import InvalidRequest, missing_file
from studio.identity import may_change, visible_to
from studio.imaging import load_image, png_bytes
from studio.metadata import read_metadata
from studio.metadata_read import request_fields, seed_note
from studio.types import GenerationRequest, ImageRecord, Mode, without_private_fields

if TYPE_CHECKING:
    from studio.storage import Storage


def info_of(image: Any) -> dict[str, Any]:
    """``read_metadata``'s answer for ``image`` (a path, bytes or a Pillow image), without the owner
    and server paths that files written by earlier versions still carry, plus ``seed_note``.
    Raises NotFound (``missing_file``) for a path that is no file, InvalidRequest for bytes that
    are no image."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise missing_file(path)
        image = path.read_bytes()
    if not isinstance(image, (bytes, bytearray)):
        image = png_bytes(load_image(image))
    meta = read_metadata(bytes(image))
    if isinstance(meta.get("studio"), dict):
        meta["studio"] = without_private_fields(meta["studio"])
    meta["seed_note"] = seed_note(meta.get("generation"))
    return meta


def request_from(meta: dict[str, Any], record: ImageRecord | None, user: str, storage: Storage, *,
                 inputs: bool = True) -> GenerationRequest:
    """The request that re-runs the image ``meta`` describes (``info_of``), for ``user``; ``record``
    is its stored record when it came from the store. See ``Studio.request_from_image`` for
    ``inputs`` and the errors (InvalidRequest)."""
    try:
        fields = request_fields(meta)
        for name in ("source_image", "source_mask"):  # read from the stored record only
            fields.pop(name, None)
        run_mode, image_id = fields.pop("run_mode", None), fields.pop("id", None)
        if not inputs:
            fields.update(mode=Mode.TEXT_TO_IMAGE, strength=None)
        elif run_mode in (Mode.IMAGE_TO_IMAGE.value, Mode.INPAINT.value):
            fields.update(stored_sources(fields["mode"], record, image_id, user, storage))
        elif fields.get("mode") == Mode.VARIATION.value:
            fields["strength"] = None  # a variation of a prompt: no input image
        if fields.get("parent_id"):  # a file passed around may name a parent this user cannot see
            parent = storage.get(str(fields["parent_id"]))
            if parent is None or not visible_to(parent, user):
                fields["parent_id"] = None
        return GenerationRequest(**fields, user=user)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a file can carry anything
        raise InvalidRequest(f"this image's generation parameters are unreadable "
                             f"({type(exc).__name__}: {exc})") from exc


def stored_sources(mode: str, record: ImageRecord | None, image_id: str | None, user: str,
                   storage: Storage) -> dict[str, Any]:
    """The kept input image (and mask) of an edit, as ``init_image`` / ``mask`` request fields.
    Only for the owner of the image, from its stored record: neither a file's metadata nor a
    shared image reads another person's inputs (sharing shows the result, not what went in)."""
    if record is None and image_id:
        record = storage.get(str(image_id))
    what = mode.replace("-", " ")
    if record is None or not may_change(record, user):
        raise InvalidRequest(f"this image was made by {what} from an input image the studio does not hold "
                             f"for you; re-running it as text-to-image would make something else: "
                             f"edit the input image again instead")
    kept: dict[str, Any] = {}
    for name, field_name in (("source_image", "init_image"), ("source_mask", "mask")):
        key = record.params.get(name)  # the record's, not the file's (a file can name anything)
        if key is None:
            if name == "source_image" or mode == Mode.INPAINT.value:
                raise InvalidRequest(f"the input {'image' if name == 'source_image' else 'mask'} of this {what} "
                                     f"was not kept (made before inputs were); it cannot be re-run")
            continue
        if not str(key).startswith(f"{SOURCES_PREFIX}/") or not storage.files.exists(key):
            raise InvalidRequest(f"the input {'image' if name == 'source_image' else 'mask'} of this {what} "
                                 f"is gone; it cannot be re-run")
        kept[field_name] = storage.files.get(key)
    return kept


def made_with(image: Any, record: ImageRecord | None, user: str, storage: Storage) -> GenerationRequest | None:
    """What made a variation's source ``image``: its stored ``record``, else the generation
    parameters embedded in the file (as History reads them); None when the image carries none."""
    if record is not None:
        negative = record.params.get("user_negative_prompt")
        if negative is None:  # recorded before the user's part was kept apart from the style's
            negative = "" if record.style else record.negative_prompt
        return GenerationRequest(prompt=record.user_prompt or record.prompt, provider=record.provider,
                                 model=record.model, style=record.style, negative_prompt=negative, user=user)
    try:  # the variation brings its own image: only the text-to-image parameters
        return request_from(info_of(image), None, user, storage, inputs=False)
    except InvalidRequest:  # no parameters inside (or unreadable ones): the caller must give a prompt
        return None

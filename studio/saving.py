"""From a provider's answer to files in the store: decode and post-process each image, encode it
with its metadata, then write the files (steps 5-7 of ``Studio.generate``); and, before anything is
paid for, the check that those files will be able to keep their metadata."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from studio import metadata, postprocess
from studio.imaging import decode_result, sniff_format, thumbnail_bytes
from studio.masks import fit_to_input
from studio.metadata_write import check_fits, encode_image, insert_metadata
from studio.records import RunFacts, new_record, record_params, utc_now
from studio.validation import nth_seed

if TYPE_CHECKING:
    from PIL import Image

    from studio.storage import Storage
    from studio.types import ImageRecord, ProviderResult

log = logging.getLogger("studio.service")  # the warnings here were the service's: same logger
# Room left, when checking that an image's texts fit its format, for what the provider adds to its record.
METADATA_HEADROOM_BYTES = 4096


def check_metadata_fits(run: RunFacts) -> None:
    """Refuse (InvalidRequest) a request whose images could not keep their texts in full in the
    output format (a JPEG's metadata segments hold 64 KiB), or whose size (after upscaling) the
    format cannot hold, before anything is paid for. Checked on the record the image will carry,
    with room for what the provider adds to it, at ``run.keep_size`` when an edit keeps its input's."""
    prepared = run.prepared
    width, height = run.keep_size or (prepared.width, prepared.height)
    record = new_record(run, (width, height), prepared.seed, record_params(prepared, {}, {}),
                        cost=0.0, elapsed=0.0, created=utc_now(), cache_key=None)
    factor = prepared.postprocess.get("upscale", 1)
    check_fits(prepared.output_format, metadata.record_parameters(record), metadata.embedded_json(record),
               headroom=METADATA_HEADROOM_BYTES,
               size=(round(width * factor), round(height * factor)))


def decode_all(run: RunFacts, result: ProviderResult) -> list[tuple[Image.Image, bool]]:
    """Step 5: every image of ``result`` decoded, fitted (``masks.fit_to_input``: an edit's result back
    to ``run.keep_size`` with its unmasked pixels the input's own) and post-processed, each with
    whether it is still the provider's own picture (then its bytes can be kept as they are). All
    are decoded before any is written, so one broken answer writes nothing (UnusableResult). A note
    about a provider that answered at another size than asked (or, for an edit, in another shape)
    is added to ``run.warnings``."""
    prepared = run.prepared
    images = []
    for provided in result.images:
        decoded = decode_result(provided.data, prepared.provider)
        image = decoded
        if prepared.init_image is None:
            _note_other_size(run, decoded.size)
        else:
            image = fit_to_input(decoded, prepared.init_image, prepared.mask, run.keep_size)
            if run.keep_size is not None and _other_shape(decoded.size, run.keep_size):
                width, height = run.keep_size
                note = (f"{prepared.provider} answered at {decoded.size[0]}x{decoded.size[1]}, another shape than "
                        f"the input; the result was resized to the input's {width}x{height}")
                if note not in run.warnings:
                    run.warnings.append(note)
        image = postprocess.apply(image, prepared.postprocess)
        images.append((image, image is decoded))
    return images


def _note_other_size(run: RunFacts, made: tuple[int, int]) -> None:
    """Add a warning when the provider made another size than was asked, naming the size made (a
    ratio's published size, a size tier the provider picked): no silent corrections. A warning that
    already names that size (validation's "made as 16:9 (1376x768)") is enough."""
    prepared = run.prepared
    asked, made_text = (prepared.width, prepared.height), f"{made[0]}x{made[1]}"
    if made == asked or any(made_text in warning for warning in run.warnings):
        return
    run.warnings.append(f"{prepared.provider} made the image at {made_text}, not the {asked[0]}x{asked[1]} asked")


def encode_all(run: RunFacts, result: ProviderResult, images: list[tuple[Image.Image, bool]], *,
               cost: float, seed_space: int) -> list[tuple[ImageRecord, bytes, bytes]]:
    """Step 6: for each decoded image, its record (``cost`` USD shared equally; seeds the provider
    did not report follow the request's, in ``seed_space``), its file with the metadata written in,
    and its thumbnail. Nothing is written yet."""
    prepared = run.prepared
    per_image = cost / len(result.images)
    elapsed = run.answered_at - run.started
    source_keys = {name: key for name, (key, _data) in run.sources.items()}
    saved = []
    for index, (provided, (image, as_provided)) in enumerate(zip(result.images, images)):
        seed = provided.seed if provided.seed is not None else (
            nth_seed(prepared.seed, index, seed_space) if prepared.seed is not None else None)
        params = record_params(prepared, provided.info, result.usage)
        params.update(source_keys)
        record = new_record(run, image.size, seed, params, cost=per_image, elapsed=elapsed, created=run.created,
                            cache_key=run.cache_key)
        data = file_bytes(run, provided.data, image, record, as_provided=as_provided)
        saved.append((record, data, thumbnail_bytes(image)))
    return saved


def file_bytes(run: RunFacts, provided: bytes, image: Image.Image, record: ImageRecord, *,
               as_provided: bool = True) -> bytes:
    """The file to store for one answer. When the provider answered in the requested format and no
    post-processing is asked, its own bytes with the metadata written in (lossless, about a
    millisecond); otherwise ``image`` (decoded, post-processed) encoded with it. ``as_provided`` is
    False when ``image`` is no longer the provider's picture (an edit fitted back to its input)."""
    prepared = run.prepared
    parameters, studio_json = metadata.record_parameters(record), metadata.embedded_json(record)
    if as_provided and not prepared.postprocess and sniff_format(provided) == prepared.output_format:
        try:
            return insert_metadata(provided, prepared.output_format, parameters=parameters,
                                   studio_json=studio_json, size=image.size)
        except ValueError as exc:  # decodable, yet its structure is not one we write into: re-encode
            log.warning("%s answered a %s file whose metadata cannot be written in place (%s); re-encoding it",
                        prepared.provider, prepared.output_format, exc)
    return encode_image(image, prepared.output_format, parameters=parameters, studio_json=studio_json,
                        compression=prepared.compression)


def write_files(storage: Storage, run: RunFacts, saved: list[tuple[ImageRecord, bytes, bytes]]) -> None:
    """Step 7: say which files are about to be written, then write them (an edit's kept inputs
    first, once each); ``Storage.write_image_files`` fills in each record's file facts. Committing
    the rows then clears the intent; a crash in between is finished on the next start."""
    keys = [key for record, _data, _thumb in saved
            for key in (storage.image_key(record), storage.thumb_key(record))]
    storage.index.add_pending(run.request_id, keys, owner=run.prepared.user)
    for key, data in run.sources.values():
        if not storage.files.exists(key):
            storage.files.put(key, data)
    for record, data, thumb in saved:
        storage.write_image_files(record, data, thumb)


def _other_shape(size: tuple[int, int], wanted: tuple[int, int]) -> bool:
    """True when ``size`` has another aspect ratio than ``wanted`` (more than 1 % apart): resizing it
    then stretches the picture, which is worth telling. Rounding to a model's multiple of 8 is not."""
    return abs(size[0] * wanted[1] - size[1] * wanted[0]) > 0.01 * size[1] * wanted[0]

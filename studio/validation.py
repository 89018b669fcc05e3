"""Validation at the edge: a ``GenerationRequest`` becomes a ``PreparedRequest`` or an error.

Everything is checked here, before any file is written or any provider called: the prompt, the
mode against the model, sizes, counts and ranges, the images and the mask. Options the chosen model
does not have (a seed for a model without seeds, say) are dropped and reported as warnings, so a
script written for one provider still runs on another.
"""

from __future__ import annotations

import json
import re
import secrets
import unicodedata
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

from studio import postprocess
from studio.catalog import ModelInfo, check_not_retired
from studio.controls import STRENGTH_FLOOR
from studio.errors import InvalidRequest
from studio.imaging import load_image, normalize_format
from studio.masks import kept_size, load_mask
from studio.options import coerce_options
from studio.sizes import fit_pixel_budget, ratio_for_size, ratio_size
from studio.styles import StyleBook
from studio.types import GenerationRequest, Mode, PreparedRequest

MAX_PROMPT_CHARS = 4000
STEPS_LIMITS = (1, 150)
GUIDANCE_LIMITS = (1.0, 20.0)
MAX_SEED = 2**32 - 1
# Seeds are 0 .. SEED_SPACE - 1 unless a provider's range is smaller (``Provider.seed_space``).
SEED_SPACE = MAX_SEED + 1
ABSOLUTE_MAX_N = 10
MAX_SIDE = 4096
MIN_SIDE = 64
MAX_TAGS = 32
MAX_TAG_CHARS = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Prepared:
    request: PreparedRequest
    record_mode: Mode  # what the history calls it (a variation runs as image-to-image)
    warnings: list[str] = field(default_factory=list)


def clean_text(value: Any, what: str, *, required: bool, max_chars: int = MAX_PROMPT_CHARS) -> str:
    if value is None:
        value = ""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{what} is not valid UTF-8 text") from None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. undecodable bytes from a shell
        raise InvalidRequest(f"{what} is not valid UTF-8 text") from None
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", value)).strip()
    if required and not text:
        raise InvalidRequest(f"{what} is empty: describe the image you want")
    if len(text) > max_chars:
        raise InvalidRequest(f"{what} is {len(text):,} characters; the limit is {max_chars:,}")
    return text


def parse_size(value: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (``x``, ``X`` or ``×``, spaces allowed) as (width, height) in pixels.

    Raises InvalidRequest when the text is not of that shape. Whether the sides are in range is
    checked with the model (``prepare``); a side of more digits than any valid one is refused here
    already, as out of range (not as malformed)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(value))
    if not match:
        raise InvalidRequest(f"size {value!r} is not WIDTHxHEIGHT, e.g. 512x512")
    for digits, name in zip(match.groups(), ("width", "height")):
        if len(digits.lstrip("0")) > len(str(MAX_SIDE)):  # int() of thousands of digits is slow or refused
            raise _outside(name, digits if len(digits) <= 12 else digits[:12] + "…")
    return int(match.group(1)), int(match.group(2))


def _outside(name: str, side: Any) -> InvalidRequest:
    return InvalidRequest(f"{name} {side} is outside {MIN_SIDE}-{MAX_SIDE} pixels")


def _number(value: Any, what: str, kind=float) -> float | int:
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{what} must be a {'whole ' if kind is int else ''}number, not {value!r}") from None
    if kind is float and number != number:  # NaN
        raise InvalidRequest(f"{what} must be a number")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise InvalidRequest(f"{what} must be a whole number, not {value!r}")
    return number


def _check_size(model: ModelInfo, width: int, height: int) -> None:
    for side, name in ((width, "width"), (height, "height")):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise _outside(name, side)
    size = f"{width}x{height}"
    if model.sizes:
        if size not in model.sizes:
            raise InvalidRequest(f"{model.id} does not make {size} images; choose one of {', '.join(model.sizes)}")
    elif model.size_range:
        low, high = model.size_range["min"], model.size_range["max"]
        multiple = model.size_range.get("multiple", 1)
        for side, name in ((width, "width"), (height, "height")):
            if not low <= side <= high:
                raise InvalidRequest(f"{name} {side} is outside what {model.id} supports ({low}-{high} pixels)")
            if side % multiple:
                raise InvalidRequest(f"{name} {side} must be a multiple of {multiple} for {model.id}")


def _snap_to_model(model: ModelInfo, width: int, height: int) -> tuple[int, int]:
    """The supported size closest to ``width`` x ``height`` (used when an init image sets the size)."""
    if model.sizes:
        def distance(size: str) -> float:
            w, h = parse_size(size)
            return abs(w / h - width / height) * 10 + abs(w * h - width * height) / 1e6
        return parse_size(min(model.sizes, key=distance))
    if model.size_range:
        low, high = model.size_range["min"], model.size_range["max"]
        multiple = model.size_range.get("multiple", 1)
        scale = min(1.0, high / max(width, height))
        scale = max(scale, low / min(width, height))
        snapped = []
        for side in (width, height):
            value = int(round(side * scale / multiple)) * multiple
            snapped.append(max(low, min(high, value)))
        return snapped[0], snapped[1]
    return width, height


def _ranged(value: Any, what: str, model_range, generic: tuple[float, float], kind, warnings: list[str],
            model_id: str):
    if value is not None:
        number = _number(value, what, kind)
        if not generic[0] <= number <= generic[1] and not (model_range and model_range.contains(number)):
            raise InvalidRequest(f"{what} {number} is outside {generic[0]:g}-{generic[1]:g}")
        if model_range is None:
            warnings.append(f"{model_id} has no {what} setting; {what} ignored")
            return None
        if not model_range.contains(number):
            raise InvalidRequest(f"{what} {number} is outside what {model_id} supports "
                                 f"({model_range.min:g}-{model_range.max:g})")
        return number
    if model_range is None:
        return None
    return kind(model_range.default)


def parse_json(text: str, what: str = "") -> Any:
    """``text`` decoded as JSON (any value: object, list, text, number...). The one rule for JSON a
    user typed or uploaded: InvalidRequest "<what>: line L, column C: not valid JSON (reason)", or
    "...: the JSON is nested too deeply" for nesting past Python's recursion limit (the decoder recurses
    once a level, so a hostile text would otherwise raise RecursionError). ``what`` names the field;
    empty: the message starts at the line."""
    where = f"{what}: " if what else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{where}line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise InvalidRequest(f"{where}line 1: the JSON is nested too deeply") from None


def random_seed(space: int = SEED_SPACE) -> int:
    """A seed left to chance: uniform in ``0 .. space - 1``, ``space`` being the provider's number of
    seeds (``Provider.seed_space``). The one rule for every random seed: a single request's here, a
    batch's base seed through ``studio.application.frontends.random_base_seed``. ValueError unless
    ``space`` is 1 to ``SEED_SPACE``."""
    if not 1 <= int(space) <= SEED_SPACE:
        raise ValueError(f"seed space must be 1-{SEED_SPACE}, not {space}")
    return secrets.randbelow(int(space))


def nth_seed(seed: int, index: int, space: int = SEED_SPACE) -> int:
    """The seed of image ``index`` (0-based) of a request with ``seed``: ``seed + index``, wrapped
    into the provider's range ``0 .. space - 1`` so that every image of a batch can be re-run."""
    return (seed + index) % space


def prepare(request: GenerationRequest, provider: str, model: ModelInfo, styles: StyleBook, *,
            seed_space: int = SEED_SPACE, server_files: bool = True) -> Prepared:
    """Validate ``request`` for ``model`` of ``provider``; ``seed_space`` is the provider's number of
    seeds (a seed must be below it); ``server_files=False`` refuses file names in provider options
    (``studio.options.coerce_options``). Raises InvalidRequest, changing nothing."""
    warnings: list[str] = []
    check_not_retired(model)  # every provider: the one rule for models the provider shut down
    mode = Mode.parse(request.mode)
    user_prompt = clean_text(request.prompt, "prompt", required=True)
    user_negative = clean_text(request.negative_prompt, "negative prompt", required=False)
    prompt, negative = styles.expand(request.style, user_prompt, user_negative)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"prompt with its style is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    if negative and not model.negative_prompt:
        if request.negative_prompt:
            warnings.append(f"{model.id} takes no negative prompt; it was ignored")
        negative = ""

    # Which mode the provider runs: a variation of an image is image-to-image, of a prompt text-to-image.
    has_image = request.init_image is not None
    run_mode = mode
    if mode is Mode.VARIATION:
        run_mode = Mode.IMAGE_TO_IMAGE if has_image else Mode.TEXT_TO_IMAGE
    if run_mode in (Mode.IMAGE_TO_IMAGE, Mode.INPAINT) and not has_image:
        raise InvalidRequest(f"{mode.value} needs an input image")
    if run_mode is Mode.TEXT_TO_IMAGE and has_image:
        raise InvalidRequest("text-to-image takes no input image; use image-to-image (edit) instead")
    if run_mode is Mode.INPAINT and request.mask is None:
        raise InvalidRequest("inpainting needs a mask (white = repaint)")
    if request.mask is not None and run_mode is not Mode.INPAINT:
        raise InvalidRequest("a mask is only used for inpainting")
    if not model.supports(run_mode.value):
        raise InvalidRequest(f"{model.id} cannot do {run_mode.value}; it supports {', '.join(model.modes)}")

    init_image = load_image(request.init_image, "input image") if has_image else None
    mask = load_mask(request.mask, init_image) if request.mask is not None else None

    if (request.width is None) != (request.height is None):
        raise InvalidRequest("give both width and height, or neither")
    if request.width is None:
        if init_image is not None:
            width, height = _snap_to_model(model, *init_image.size)
        else:
            width, height = model.default_width, model.default_height
    else:
        width = int(_number(request.width, "width", int))
        height = int(_number(request.height, "height", int))
    _check_size(model, width, height)
    asked = f"{width}x{height}"
    width, height = fit_pixel_budget(model, width, height)  # the size the provider is sent, so the recorded one
    if request.width is not None and f"{width}x{height}" != asked:  # an input image's size is kept: no news
        ends = [model.size_range[end] for end in ("min_pixels", "max_pixels") if end in model.size_range]
        budget = "-".join(f"{pixels:,}" for pixels in ends)
        warnings.append(f"{model.id} makes {budget} pixels: {asked} is made as {width}x{height}")
    made_as = ratio_for_size(model, width, height) if request.width is not None else None
    if made_as is not None:
        # The provider is sent the nearest ratio; record (and cache) the size every front end uses for it.
        width, height = ratio_size(model, made_as)
        warnings.append(f"{model.id} takes aspect ratios, not pixel sizes: {asked} is made as {made_as} "
                        f"({width}x{height})")

    n = int(_number(request.n, "number of images", int))
    limit = min(model.max_images, ABSOLUTE_MAX_N)
    if not 1 <= n <= limit:
        raise InvalidRequest(f"number of images must be 1-{limit} for {model.id}, not {n}")

    steps = _ranged(request.steps, "steps", model.steps, STEPS_LIMITS, int, warnings, model.id)
    guidance = _ranged(request.guidance, "guidance", model.guidance, GUIDANCE_LIMITS, float, warnings, model.id)
    strength = None
    if run_mode in (Mode.IMAGE_TO_IMAGE, Mode.INPAINT):
        strength = _ranged(request.strength, "strength", model.strength, (0.0, 1.0), float, warnings, model.id)
        if strength is not None and strength < STRENGTH_FLOOR:  # the front ends' sliders stop at the same floor
            raise InvalidRequest(f"strength {strength:g} would return the input image (nearly) unchanged and still be "
                                 f"paid for; the least strength is {STRENGTH_FLOOR:g}")
    elif request.strength is not None:
        value = _number(request.strength, "strength")
        if not 0.0 <= value <= 1.0:
            raise InvalidRequest(f"strength {value} is outside 0-1")

    seed = None
    if request.seed is not None:
        seed = int(_number(request.seed, "seed", int))
        if not 0 <= seed < seed_space:
            raise InvalidRequest(f"seed must be 0-{seed_space - 1} for {provider}, not {seed}")
        if not model.seed:
            warnings.append(f"{model.id} does not take a seed; results will differ between runs")
            seed = None
    elif model.seed:
        seed = random_seed(seed_space)

    quality = None
    if model.qualities:
        wanted = (request.quality or model.default_quality or model.qualities[0]).strip().lower()
        quality = model.quality_aliases.get(wanted, wanted)
        if quality not in model.qualities:
            raise InvalidRequest(f"quality {request.quality!r} is not offered by {model.id}; "
                                 f"choose {', '.join(model.qualities)}")
    elif request.quality:
        warnings.append(f"{model.id} has no quality setting; quality ignored")

    compression = int(_number(request.compression, "compression", int))
    if not 1 <= compression <= 100:
        raise InvalidRequest(f"compression must be 1-100, not {compression}")

    # Provider options typed once, by the model's schema: the provider gets booleans, numbers, lists.
    extra = coerce_options(model, request.extra, server_files=server_files)

    # Upscaling limits apply to the size stored: an edit's result is brought back to its input's size.
    post = postprocess.clean_options(request.postprocess,
                                     *(kept_size(run_mode, init_image, request.width is not None) or (width, height)))
    user = clean_text(request.user, "user", required=True, max_chars=200)
    prepared = PreparedRequest(
        provider=provider, model=model, mode=run_mode, prompt=prompt, negative_prompt=negative,
        width=width, height=height, n=n, seed=seed, steps=steps, guidance=guidance, strength=strength,
        init_image=init_image, mask=mask, output_format=normalize_format(request.output_format),
        quality=quality, compression=compression, user=user, extra=extra, style=request.style,
        user_prompt=user_prompt, user_negative_prompt=user_negative, postprocess=post,
    )
    return Prepared(prepared, mode, warnings)


# Tags with this prefix say which schedule made an image (studio.schedules.schedule_tag); only the
# scheduler's own firing may add one (``server_tags``), so no hand-given tag can claim a schedule.
RESERVED_TAG_PREFIX = "schedule:"
_SERVER_TAGS: ContextVar[frozenset[str]] = ContextVar("studio_server_tags", default=frozenset())


@contextmanager
def server_tags(*tags: str) -> Iterator[None]:
    """While inside, ``clean_tags`` accepts these reserved tags (the server adds them, not a user):
    the scheduler around its batch preview, the job runner around a scheduled job's scenes."""
    token = _SERVER_TAGS.set(_SERVER_TAGS.get() | {str(tag).lower() for tag in tags})
    try:
        yield
    finally:
        _SERVER_TAGS.reset(token)


def clean_tags(tags: Any, keep: Any = ()) -> list[str]:
    """Tags (a list, or one "a, b" string) tidied: stripped, lower case, no duplicates, at most
    ``MAX_TAGS``. A tag starting ``schedule:`` is refused (InvalidRequest) unless the server adds it
    (``server_tags``) or it is in ``keep`` (the tags an image already has, when its tags are edited)."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in tags.split(",")]
    allowed = _SERVER_TAGS.get() | {str(tag).lower() for tag in keep or ()}
    cleaned = []
    for tag in tags:
        text = clean_text(tag, "tag", required=False, max_chars=MAX_TAG_CHARS).lower()
        if text.startswith(RESERVED_TAG_PREFIX) and text not in allowed:
            raise InvalidRequest(f"tags starting {RESERVED_TAG_PREFIX!r} are reserved: only a schedule's own runs "
                                 f"add them (tag {text[:70]!r})")
        if text and text not in cleaned:
            cleaned.append(text)
    if len(cleaned) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags per image")
    return cleaned


def clean_category(category: Any) -> str:
    return clean_text(category, "category", required=False, max_chars=64).lower()

"""Inpainting masks: the one reading of every form a mask arrives in, and the one post-step that
keeps an edit's result the input's size with its unmasked pixels untouched.

THE CONVENTION. A mask, once read, is a greyscale ("L") picture exactly the size of the input image in
which WHITE (255) MEANS REPAINT and black (0) means keep; greys in between are soft edges (blended).
Every front end (CLI ``--mask``, the library's ``mask=``, Streamlit's upload and drawing canvas, Gradio's
upload and ImageEditor layers) goes through ``load_mask`` or ``mask_from_layers``, so a file means the
same thing wherever it is given. How each form is read:

* No transparency (L, 1, RGB, palette, 16-bit, float; RGBA/LA whose alpha is opaque everywhere): its
  brightness. White repaints, black keeps.
* Transparency (RGBA, LA, a palette with a transparent colour, painted on a transparent layer): a
  layer of paint over the image. Wherever it is painted (alpha > 0) is repainted, in whatever colour
  the paint is: the way the Streamlit canvas, Gradio's editor and image editors' layers work.
  One exception, OpenAI's documented mask form: a copy of the image itself with the area to change
  erased. When the opaque pixels reproduce the input image, the transparent (erased) ones are repainted.
* Where some alpha is partial but no pixel is fully transparent (a flattened export with soft spots),
  the brightness of the mask composed over black.

A mask that marks nothing to repaint, or one of another size, is refused (``InvalidRequest``): an
inpaint that changes nothing would still be paid for.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, ImageChops, ImageStat

from studio.errors import InvalidRequest
from studio.imaging import load_image
from studio.types import ImageInput, Mode

REPAINT = 255
KEEP = 0
# A mask's opaque pixels "reproduce the image" (OpenAI's erased-copy form) when they differ from the
# input by at most this mean (8-bit levels; allows for a lossy re-save) and are not one flat colour of
# paint (a standard deviation of at least this much).
ERASED_COPY_MAX_MEAN_DIFFERENCE = 4.0
ERASED_COPY_MIN_STDDEV = 2.0


def load_mask(source: ImageInput, image: Image.Image) -> Image.Image:
    """The mask in ``source`` (bytes, a path or a Pillow image, any form above) for the input ``image``,
    as an "L" picture of ``image.size``, white = repaint.

    Errors: ``InvalidRequest`` when the mask is unreadable, not the image's size, or marks nothing to
    repaint; ``NotFound`` for a missing file."""
    picture = load_image(source, "mask")
    if picture.size != image.size:
        raise InvalidRequest(f"mask is {picture.size[0]}x{picture.size[1]} but the image is "
                             f"{image.size[0]}x{image.size[1]}; they must match")
    mask = _repaint_area(picture, image)
    if mask.getbbox() is None:
        raise InvalidRequest("the mask marks nothing to repaint (white = repaint, or paint on a transparent layer)")
    return mask


def _repaint_area(picture: Image.Image, image: Image.Image) -> Image.Image:
    """``picture`` (RGB or RGBA, as loaded) read by the convention in the module docstring."""
    if picture.mode != "RGBA":
        return picture.convert("L")
    alpha = picture.getchannel("A")
    lowest, _highest = alpha.getextrema()
    if lowest == 255:  # alpha opaque everywhere: an ordinary black-and-white mask
        return picture.convert("L")
    if lowest > 0:  # no transparent background, only soft spots: brightness over black
        over_black = Image.new("RGB", picture.size, (0, 0, 0))
        over_black.paste(picture.convert("RGB"), mask=alpha)
        return over_black.convert("L")
    if _is_erased_copy(picture, image):
        return ImageChops.invert(alpha)  # OpenAI's form: the erased (transparent) part changes
    return alpha  # paint on a transparent layer: the painted part changes


def _is_erased_copy(picture: Image.Image, image: Image.Image) -> bool:
    """True when ``picture``'s fully opaque pixels are the input image's own (OpenAI's mask form)."""
    opaque = picture.getchannel("A").point(lambda value: 255 if value == 255 else 0)
    if opaque.getbbox() is None:
        return False
    painted = picture.convert("RGB")
    stats = ImageStat.Stat(painted, mask=opaque)
    if max(stats.stddev) < ERASED_COPY_MIN_STDDEV:  # one flat colour: paint, not a picture
        return False
    difference = ImageChops.difference(painted, image.convert("RGB"))
    return max(ImageStat.Stat(difference, mask=opaque).mean) <= ERASED_COPY_MAX_MEAN_DIFFERENCE


def mask_from_layers(layers: Iterable[Any], size: tuple[int, int]) -> Image.Image | None:
    """The mask painted in an editor's layers (Gradio ``ImageEditor`` layers, the Streamlit canvas's
    strokes): wherever any layer has paint (alpha > 0) is white (repaint), the rest black, scaled to
    ``size`` (width, height). Layers are Pillow images, file paths or bytes; None entries are skipped.
    Returns None when nothing was painted.

    The faint rim of a soft brush counts as painted, so no seam is left around the repainted area."""
    painted = None
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Image.Image):
            layer = Image.open(io.BytesIO(layer) if isinstance(layer, (bytes, bytearray)) else Path(layer))
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        painted = alpha if painted is None else ImageChops.lighter(painted, alpha)
    if painted is None or painted.getbbox() is None:
        return None
    return painted.point(lambda value: REPAINT if value > 0 else KEEP)


def kept_size(mode: Mode, init_image: Image.Image | None, size_asked: bool) -> tuple[int, int] | None:
    """The (width, height) an edit's result is stored at (``fit_to_input`` brings it there): the input
    image's own for an inpaint (its mask is drawn on it), and for image-to-image (an image's variations
    too) unless a width and height were asked for (``size_asked``). None when the result keeps the size
    the provider made it at (no input image, or a size asked for image-to-image)."""
    if init_image is None:
        return None
    if mode is Mode.INPAINT or not size_asked:
        return init_image.size
    return None


def fit_to_input(result: Image.Image, source: Image.Image, mask: Image.Image | None,
                 size: tuple[int, int] | None) -> Image.Image:
    """An edit's result brought back to its input: the post-step run on every provider's answer.

    ``result`` is the provider's decoded image; ``source`` the input image as loaded; ``mask`` the
    inpainting mask ("L", ``source``'s size, white = repaint) or None for image-to-image; ``size`` the
    (width, height) the result must have, or None to leave its size alone.

    Providers work at their own sizes (a multiple of 8 or 64, a fixed list), so the result is resized to
    ``size`` when it differs (the inverse of the input being resized to the model's size). When
    inpainting, every pixel the mask keeps (0) is then the source's own, exactly, and soft mask edges
    blend the two. Returns ``result`` itself when nothing had to change."""
    fitted = result
    if size is not None and fitted.size != size:
        fitted = fitted.resize(size, Image.Resampling.LANCZOS)
    if mask is not None:
        # The kept pixels are the source's own, its transparency included.
        mode = "RGBA" if "RGBA" in (source.mode, fitted.mode) else "RGB"
        base = source if source.mode == mode else source.convert(mode)
        fitted = fitted if fitted.mode == mode else fitted.convert(mode)
        if base.size != fitted.size:  # an explicit output size for an inpaint: the mask follows it
            base = base.resize(fitted.size, Image.Resampling.LANCZOS)
            mask = mask.resize(fitted.size, Image.Resampling.LANCZOS)
        fitted = Image.composite(fitted, base, mask)
    return fitted

"""The inpainting mask: painted in the browser on top of the image, or uploaded.

The canvas (streamlit-drawable-canvas 0.13, a components-v2 widget) returns only the strokes, as an
RGBA picture the size of the canvas: wherever the brush went is opaque. That layer is read by
``studio.masks.mask_from_layers`` (white = repaint), scaled to the image's own size; an uploaded mask by
``studio.masks.load_mask`` (the one convention, in that module's docstring). The component registers itself on import and only
inside a running app, so it is imported here, when the mask editor is drawn.
"""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from studio.errors import StudioError
from studio.imaging import load_image
from studio.masks import load_mask, mask_from_layers
from ui.widgets import PERSIST, show_error

CANVAS_MAX_SIDE = 512


def canvas_size(width: int, height: int, side: int = CANVAS_MAX_SIDE) -> tuple[int, int]:
    """The canvas shows the image with its longer side at ``side`` pixels (small images are enlarged
    so there is room to paint; the mask is scaled back to the image's size)."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def mask_from_strokes(strokes: Image.Image, size: tuple[int, int]) -> Image.Image | None:
    """White where anything was painted, black elsewhere, at ``size``; None when nothing was painted."""
    return mask_from_layers([strokes], size)


def mask_editor(image_data: bytes, prefix: str) -> Image.Image | None:
    """Paint or upload the mask for ``image_data``; returns an "L" mask of the image's size, or None."""
    try:
        image = load_image(image_data, "input image")
    except StudioError as error:
        show_error(error)
        return None
    how = st.radio("Mask", ["Paint it", "Upload a mask"], key=f"{prefix}_mask_how", horizontal=True,
                   persist_state=PERSIST)
    if how == "Upload a mask":
        upload = st.file_uploader("Mask (white = repaint, or paint on a transparent layer)", type=["png", "webp"],
                                  key=f"{prefix}_mask_upload")
        st.image(image, caption="Input", width="stretch")
        if upload is None:
            return None
        try:
            return load_mask(upload.getvalue(), image)
        except StudioError as error:
            show_error(error)
            return None
    from streamlit_drawable_canvas import st_canvas

    width, height = canvas_size(*image.size)
    brush = st.slider("Brush size", 5, 100, 35, key=f"{prefix}_brush", persist_state=PERSIST)
    st.caption("Paint over the area to change.")
    result = st_canvas(stroke_width=brush, stroke_color="rgba(255, 255, 255, 0.9)",
                       fill_color="rgba(255, 255, 255, 0.9)",
                       background_image=image.resize((width, height)), width=width, height=height,
                       drawing_mode="freedraw", return_image_data=True, key=f"{prefix}_canvas")
    data = result.image_bytes
    if not data:
        return None
    mask = mask_from_strokes(Image.open(io.BytesIO(data)), image.size)
    if mask is not None:
        st.image(mask, caption="Mask (white = repaint)", width=160)
    return mask

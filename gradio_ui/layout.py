"""Layout pieces the Gradio tabs share."""

from __future__ import annotations

from typing import Collection

import gradio as gr


def action_buttons(*labels: str, stop: Collection[str] = ()) -> list[gr.Button]:
    """A row of small buttons, one per label in that order; the labels in ``stop`` are drawn as
    destructive (red). ``edit, delete = action_buttons("Edit", "Delete", stop={"Delete"})``."""
    with gr.Row():
        return [gr.Button(label, size="sm", variant="stop" if label in stop else "secondary") for label in labels]

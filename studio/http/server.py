"""Serving the HTTP API: ``python -m studio serve [--host H] [--port P] [--no-ui]``.

One uvicorn process serves the API and, unless ``gradio=False``, the Gradio UI mounted at ``/ui`` on
the same port (as on a Space).
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"  # this machine only: serving others is a choice (--host 0.0.0.0)
DEFAULT_PORT = 8000


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, gradio: bool = True, studio=None) -> None:
    """Run the API (and the UI at /ui) until interrupted. Raises ``SettingsError`` for a bad setting
    before listening."""
    import uvicorn

    from studio.http import create_app

    app = create_app(studio, gradio=gradio)
    uvicorn.run(app, host=host, port=port, log_level="info")


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve"]

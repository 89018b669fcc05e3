"""The HTTP API of the studio: one FastAPI application (needs the ``fastapi`` package; ``import
studio`` does not import this package).

    from studio.http import create_app
    app = create_app()                 # the studio of $STUDIO_HOME
    app = create_app(studio, gradio=True)  # with the Gradio UI mounted at /ui

Layers, outermost first: CORS (``Settings.api_cors_origins``), the catch-all that turns an unexpected
exception into a logged, redacted 500, the caller and rate limit (401 / 429), the upload bound (413),
then the routes: ``/api/v1`` (library, generation, jobs) and the seed systems' routes. Errors are JSON
``{"error", "detail"}`` (studio.http.errors). OpenAPI documents at ``/docs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fastapi

    from studio.config import Settings
    from studio.service import Studio


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("image-studio")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def create_app(studio: "Studio | None" = None, *, settings: "Settings | None" = None,
               gradio: bool = False) -> "fastapi.FastAPI":
    """The API application over ``studio`` (default: a ``Studio`` built from ``settings``, or the
    shared studio of $STUDIO_HOME). ``settings`` (default: the studio's) gives the API's knobs: CORS
    origins, rate limit (requests per minute per caller), upload bound (bytes). ``gradio=True`` mounts
    the Gradio UI (gradio_app.build_app) at ``/ui``.

    Raises ``studio.config.SettingsError`` for a visitor policy ($STUDIO_VISITORS) it does not know."""
    from fastapi import FastAPI

    from studio.application import Application
    from studio.http.errors import CatchAllMiddleware, install_handlers, json_cors_middleware
    from studio.http.limits import CallerMiddleware, RateLimiter, UploadLimitMiddleware
    from studio.identity import LOCAL, visitor_policy
    from studio.tokens import tokens_for

    if studio is None:
        if settings is not None:
            from studio.service import Studio

            studio = Studio(settings=settings)
        else:
            from studio import get_studio

            studio = get_studio()
    settings = settings or studio.settings
    app = FastAPI(title="Image Studio API", version=_version(), docs_url="/docs", redoc_url=None,
                  description="Generate, edit and keep images. Authorization: Bearer <API token> "
                              "(without one only a single-user studio answers).")
    app.state.studio = studio
    app.state.application = Application(studio)
    app.state.settings = settings
    app.state.tokens = tokens_for(studio)
    app.state.visitor_policy = visitor_policy()
    # A shared studio's callers may be anyone: files on this server (image options, local model paths)
    # are named by its operator only, as in the Gradio app with private visitors.
    studio.settings.local_free_paths = app.state.visitor_policy == LOCAL
    app.state.rate_limiter = RateLimiter(settings.api_rate_limit)
    install_handlers(app)
    # add_middleware wraps what is there: the last added runs first.
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.api_max_upload_bytes)
    app.add_middleware(CallerMiddleware, state=app.state, limiter=app.state.rate_limiter)
    app.add_middleware(CatchAllMiddleware, redact=studio.redact)
    if settings.api_cors_origins:
        app.add_middleware(json_cors_middleware(), allow_origins=list(settings.api_cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After"],
                           max_age=600)
    _include_routers(app)
    if gradio:
        _mount_gradio(app, studio)
    return app


def _include_routers(app: Any) -> None:
    from studio.http import compat_jobs, compat_local, compat_web, v1_generation, v1_jobs, v1_library

    for module in (v1_library, v1_generation, v1_jobs, compat_jobs, compat_local, compat_web):
        app.include_router(module.router)


def _mount_gradio(app: Any, studio: "Studio") -> None:
    """The Gradio app at /ui, with the options ``python gradio_app.py`` launches it with (its
    visitors' logins, upload bound and theme)."""
    import gradio as gr

    from gradio_app import MAX_UPLOAD, build_app
    from gradio_ui.identity import Access

    access = Access.from_env()
    gr.mount_gradio_app(app, build_app(studio, access=access), path="/ui", auth=access.users or None,
                        auth_message="Image Studio: log in to continue.", max_file_size=MAX_UPLOAD,
                        theme=gr.themes.Soft())


__all__ = ["create_app"]

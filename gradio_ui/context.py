"""What every tab of the Gradio app shares: the studio, the actions, sign-in rules and session state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from gradio_ui.endpoints import Actions, Exporter, StopSwitches
from gradio_ui.identity import Access, owner_for
from studio.application.frontends import front_end_setting
from studio.boards import Boards
from studio.config import env_int
from studio.gallery import Gallery
from studio.identity import VisitorIds
from studio.service import Studio


def _int_env(name: str, default: int) -> int:
    return env_int(name, default)  # SettingsError naming the variable for anything but a whole number >= 1


@dataclass
class Limits:
    """Queue limits. Generations share one concurrency group: the machine (or the provider account)
    runs that many at once, whichever tab or API endpoint they come from; the rest wait in the queue."""

    generation: int = field(default_factory=lambda: _int_env("STUDIO_GRADIO_CONCURRENCY", 2))
    light: int = field(default_factory=lambda: _int_env("STUDIO_GRADIO_LIGHT_CONCURRENCY", 8))
    queue_size: int = field(default_factory=lambda: _int_env("STUDIO_GRADIO_MAX_QUEUE", 64))

    def generating(self) -> dict[str, Any]:
        return {"concurrency_limit": self.generation, "concurrency_id": "generation"}

    def reading(self) -> dict[str, Any]:
        return {"concurrency_limit": self.light, "concurrency_id": "reading"}


@dataclass
class AppContext:
    studio: Studio
    actions: Actions
    exporter: Exporter
    boards: Boards
    access: Access
    limits: Limits
    stops: StopSwitches = field(default_factory=StopSwitches)
    token: Any = None  # gr.BrowserState holding the anonymous visitor's token
    session: Any = None  # gr.State holding this browser session's studio.gallery.Gallery
    boards_changed: Any = None  # gr.State counter: bumped when the visitor's boards change, to refresh pickers
    board_pickers: list = field(default_factory=list)  # gallery panels' board dropdowns (values: names)
    board_selector: Any = None  # the Mood boards tab's dropdown (values: board ids)

    @property
    def app(self):
        """The application layer (``studio.application.Application``) every tab calls."""
        return self.actions.app

    @classmethod
    def create(cls, studio: Studio, access: Access, limits: Limits, export_dir=None) -> "AppContext":
        exporter = Exporter(studio, export_dir)
        return cls(studio=studio, actions=Actions(studio, exporter), exporter=exporter, boards=Boards(studio),
                   access=access, limits=limits)

    def make_session_state(self) -> None:
        # Kept in the visitor's browser so a reload keeps their anonymous history; see identity.py.
        self.token = gr.BrowserState(None, storage_key="image-studio-visitor",
                                     secret=front_end_setting("STUDIO_BROWSER_SECRET") or "image-studio")
        self.session = gr.State(Gallery())
        self.boards_changed = gr.State(0)

    def board_choices(self, owner: str) -> list[tuple[str, str]]:
        return [(board.name, board.id) for board in self.boards.list(owner)]

    def owner(self, values: dict, request: gr.Request | None, profile: Any = None) -> str:
        """The owner id for one event (``gradio_ui.identity.owner_for``); never shown to anyone."""
        return owner_for(request, profile, values.get(self.token), single_user=self.access.single_user,
                         ids=VisitorIds.for_home(self.studio.home))

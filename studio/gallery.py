"""The session gallery: the images one browser session made or picked, newest first, with a selection.

A gallery holds image ids only; the records come from the studio each time, so an image deleted in
History simply drops out, and an image the session's user may not see never shows. The Streamlit layer
keeps one ``Gallery`` per browser session in ``st.session_state``: sessions never share a gallery.
Nothing here imports Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from studio.errors import InvalidRequest
from studio.exports import build_zip
from studio.identity import visible_to
from studio.types import ImageRecord

if TYPE_CHECKING:
    from studio.service import Studio

DEFAULT_LIMIT = 200  # a session that makes more keeps the newest; History has them all


@dataclass
class Gallery:
    ids: list[str] = field(default_factory=list)  # newest first
    selected: list[str] = field(default_factory=list)  # in the order they were selected
    limit: int = DEFAULT_LIMIT

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.ids

    # -- contents -----------------------------------------------------------------------------

    def add(self, image_ids: Iterable[str]) -> None:
        """Put images at the front (in the order given); one already here moves to the front."""
        new = [i for i in dict.fromkeys(image_ids) if i]
        self.ids = new + [i for i in self.ids if i not in new]
        for dropped in self.ids[self.limit:]:
            self._unselect(dropped)
        del self.ids[self.limit:]

    def remove(self, image_id: str) -> None:
        if image_id in self.ids:
            self.ids.remove(image_id)
        self._unselect(image_id)

    def clear(self) -> None:
        self.ids.clear()
        self.selected.clear()

    # -- selection ----------------------------------------------------------------------------

    def select(self, image_id: str, on: bool = True) -> None:
        if not on:
            self._unselect(image_id)
        elif image_id in self.ids and image_id not in self.selected:
            self.selected.append(image_id)

    def _unselect(self, image_id: str) -> None:
        if image_id in self.selected:
            self.selected.remove(image_id)

    def is_selected(self, image_id: str) -> bool:
        return image_id in self.selected

    def select_all(self) -> None:
        self.selected = list(self.ids)

    def select_none(self) -> None:
        self.selected.clear()

    def selection(self) -> list[str]:
        """Selected ids in gallery order (newest first), which is the order a zip lists them."""
        chosen = set(self.selected)
        return [i for i in self.ids if i in chosen]

    # -- records ------------------------------------------------------------------------------

    def records(self, studio: "Studio", user: str, ids: list[str] | None = None) -> list[ImageRecord]:
        """The records of ``ids`` (default: the whole gallery) that still exist and ``user`` may see.

        Ids whose image is gone are dropped from the gallery, so it heals itself after deletes."""
        wanted = list(self.ids if ids is None else ids)
        found = studio.storage.index.get_many(wanted)
        visible = [studio.storage.with_path(r) for r in found if visible_to(r, user)]
        present = {r.id for r in found}
        for missing in [i for i in wanted if i not in present]:
            self.remove(missing)
        return visible

    def selected_records(self, studio: "Studio", user: str) -> list[ImageRecord]:
        return self.records(studio, user, self.selection())

    def zip_selection(self, studio: "Studio", user: str) -> bytes:
        """The selected images plus manifest.csv / manifest.json describing each one."""
        records = self.selected_records(studio, user)
        if not records:
            raise InvalidRequest("select at least one image in the gallery first")
        return build_zip(records, studio.image_bytes)


__all__ = ["Gallery", "DEFAULT_LIMIT"]

"""History actions: what an owner may see (their images and shared ones), page by page, as CSV, and
what they spent per day. Part of ``studio.application.Application``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from studio.application.forms import is_blank, whole_number
from studio.errors import InvalidRequest
from studio.paging import MAX_PAGE, page_bounds
from studio.storage import HistoryQuery, Page
from studio.types import ImageRecord

if TYPE_CHECKING:
    from studio.service import Studio

CSV_MAX_ROWS = 50_000  # rows in one history CSV export
_CSV_PAGE = 1000  # rows read from the index at a time while exporting
# History filters a front end may pass (HistoryQuery's fields, less owner and paging).
HISTORY_FILTERS = ("text", "provider", "model", "tag", "category", "mode", "date_from", "date_to", "parent_id")
_FOLDED_FILTERS = ("tag", "category")  # stored lower-case: the filter is folded the same way


# One page of history: ``items`` newest first, ``total`` matching images, ``next_cursor`` (pass it
# back as ``cursor`` for the next page; None on the last page). The index's own page and keyset
# cursor (``studio.paging``): the layer has no paging rule of its own.
HistoryPage = Page


class HistoryActions:
    """The history half of ``Application`` (which sets ``studio``)."""

    studio: "Studio"

    def history_query(self, owner: str, filters: Mapping[str, Any] | None = None, *, limit: Any = 24,
                      offset: Any = 0) -> HistoryQuery:
        """The index query for ``owner``'s history: their images and every shared one
        (``studio.identity.visible_to``), filtered by ``filters`` (``HISTORY_FILTERS``; blank values
        ignored, tag and category folded to lower case). Raises InvalidRequest for an unknown filter
        or a limit outside 1-``MAX_PAGE``."""
        filters = dict(filters or {})
        unknown = sorted(set(filters) - set(HISTORY_FILTERS))
        if unknown:
            raise InvalidRequest(f"unknown history filter(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: {', '.join(HISTORY_FILTERS)}")
        given = {name: str(value).strip() for name, value in filters.items() if not is_blank(value)}
        for name in _FOLDED_FILTERS:
            if name in given:
                given[name] = given[name].lower()
        limit, offset = page_bounds(24 if is_blank(limit) else limit, 0 if is_blank(offset) else offset)
        return HistoryQuery(owner=owner, include_shared=True, limit=limit, offset=offset, **given)

    def history(self, owner: str, filters: Mapping[str, Any] | None = None, *, cursor: str | None = None,
                limit: Any = 24, offset: Any = 0) -> HistoryPage:
        """A page of what ``owner`` may see, newest first. ``cursor``: a page's ``next_cursor`` (it
        wins over ``offset``). Raises InvalidRequest for a bad filter, limit or cursor."""
        query = self.history_query(owner, filters, limit=limit, offset=offset)
        query.after = None if is_blank(cursor) else str(cursor)
        return self.studio.history(query)

    def history_count(self, owner: str, filters: Mapping[str, Any] | None = None) -> int:
        """How many images ``owner`` may see that match ``filters``."""
        return self.history(owner, filters, limit=1).total

    def export_history_csv(self, owner: str, filters: Mapping[str, Any] | None = None) -> str:
        """The metadata of every image ``history`` would list (at most ``CSV_MAX_ROWS``), as CSV text
        (``studio.exports.records_to_csv``: no owner ids, no server paths)."""
        from studio.exports import records_to_csv

        records: list[ImageRecord] = []
        cursor: str | None = None
        while len(records) < CSV_MAX_ROWS:
            page = self._history_rows(owner, filters, cursor)
            records.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return records_to_csv(records[:CSV_MAX_ROWS])

    def _history_rows(self, owner: str, filters: Mapping[str, Any] | None, cursor: str | None) -> HistoryPage:
        # Export reads bigger pages than a visitor may ask for (MAX_PAGE): it is the server's own loop.
        query = self.history_query(owner, filters, limit=MAX_PAGE)
        query.limit, query.after = _CSV_PAGE, cursor
        return self.studio.history(query)

    def spend_by_day(self, owner: str, days: int = 30):
        """USD spent and requests made per UTC day and provider over the last ``days`` days, from the
        audit log (``studio.monitoring.spend_by_day``: the figures ``stats`` and the alerts use)."""
        from studio.monitoring import spend_by_day

        days = whole_number(days, "days")
        if days < 1:
            raise InvalidRequest(f"days must be 1 or more, not {days}")
        return spend_by_day(self.studio.storage.index, days=days, owner=owner)


__all__ = ["CSV_MAX_ROWS", "HISTORY_FILTERS", "HistoryActions", "HistoryPage"]

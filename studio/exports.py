"""Exports: zips of images with a manifest, and CSV of metadata, safe to open in a spreadsheet.

Every zip a user downloads (a gallery selection, a history page, a mood board, a batch job) is built
here, so the manifest columns and the CSV escaping are the same everywhere.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from typing import Any, Callable, Iterable

from studio.storage import slug
from studio.types import ImageRecord

MANIFEST_COLUMNS = ("file", "id", "created_at", "provider", "model", "mode", "prompt", "negative_prompt",
                    "style", "width", "height", "format", "seed", "cost", "generation_time", "category", "tags",
                    "parent_id", "sha256")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas (CSV injection): a text cell starting with = + - @ is prefixed
    with a quote so Excel and LibreOffice show it as text instead of running it."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def manifest_row(record: ImageRecord, file_name: str, **extra: Any) -> dict[str, Any]:
    row = {name: getattr(record, name, None) for name in MANIFEST_COLUMNS if name != "file"}
    row["file"] = file_name
    row["tags"] = ",".join(record.tags)
    row.update(extra)
    return row


def rows_to_csv(rows: list[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else MANIFEST_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_safe(row.get(key)) for key in columns})
    return buffer.getvalue()


def records_to_csv(records: list[ImageRecord]) -> str:
    return rows_to_csv([manifest_row(r, _default_name(i, r)) for i, r in enumerate(records)], MANIFEST_COLUMNS)


def _default_name(index: int, record: ImageRecord) -> str:
    words = slug(record.prompt[:40], default="image")
    return f"{index + 1:03d}_{words}_{record.id}.{'jpg' if record.format == 'jpeg' else record.format}"


def build_zip(records: list[ImageRecord], read: Callable[[ImageRecord], bytes], *,
              name_for: Callable[[int, ImageRecord], str] = _default_name,
              extra_columns: Callable[[int, ImageRecord], dict[str, Any]] | None = None,
              extra_files: dict[str, bytes | str] | None = None) -> bytes:
    """A zip of the images plus ``manifest.csv`` and ``manifest.json`` describing each file.

    Images are stored, not deflated: they are already compressed, and storing is several times
    faster for large selections."""
    buffer = io.BytesIO()
    rows: list[dict[str, Any]] = []
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, record in enumerate(records):
            name = name_for(index, record)
            archive.writestr(zipfile.ZipInfo(name, date_time=_zip_time(record)), read(record),
                             compress_type=zipfile.ZIP_STORED)
            extra = extra_columns(index, record) if extra_columns else {}
            rows.append(manifest_row(record, name, **extra))
        columns = list(MANIFEST_COLUMNS) + [k for k in (rows[0] if rows else {}) if k not in MANIFEST_COLUMNS]
        archive.writestr("manifest.csv", rows_to_csv(rows, columns), compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("manifest.json", json.dumps({"images": rows}, indent=2, ensure_ascii=False, default=str),
                         compress_type=zipfile.ZIP_DEFLATED)
        for name, content in (extra_files or {}).items():
            archive.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _zip_time(record: ImageRecord) -> tuple[int, int, int, int, int, int]:
    text = record.created_at or "1980-01-01T00:00:00"
    try:
        return (int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                int(text[17:19]))
    except ValueError:
        return (1980, 1, 1, 0, 0, 0)

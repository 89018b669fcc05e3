"""A finished job's results: the zip (images named by scene order and timestamp, manifest CSV and
JSON) and the enriched script, where each segment gains its images."""

from __future__ import annotations

import json
from typing import Any

from studio.exports import build_zip
from studio.jobs.model import Job, JobItem
from studio.scripts import format_seconds
from studio.storage import slug
from studio.types import ImageRecord

EXTENSIONS = {"jpeg": "jpg"}


def _time_part(item: JobItem) -> str:
    """``00-01-05`` (``00-01-05-500`` with milliseconds) for times; the label, slugged, otherwise."""
    if item.start is not None:
        return format_seconds(item.start).replace(":", "-").replace(".", "-")
    return slug(item.timestamp, default="") if item.timestamp else ""


def file_name(item: JobItem, record: ImageRecord, position: int, count: int) -> str:
    """``003_00-00-12_waves-crash-on-the-rocks.png``; ``_2`` and on for a scene's further images."""
    parts = [f"{item.index + 1:03d}", _time_part(item), slug(item.text[:40], default="scene")]
    stem = "_".join(p for p in parts if p)
    if count > 1:
        stem += f"_{position + 1}"
    return f"{stem}.{EXTENSIONS.get(record.format, record.format)}"


def item_records(studio, items: list[JobItem]) -> dict[str, ImageRecord]:
    """Every image of ``items`` that still exists, by id (a user may have deleted some since)."""
    ids = [image_id for item in items for image_id in item.image_ids]
    records = studio.storage.index.get_many(list(dict.fromkeys(ids)))
    return {r.id: studio.storage.with_path(r) for r in records}


def enriched_script(studio, job: Job, names: dict[tuple[int, str], str] | None = None, *,
                    with_paths: bool = False) -> dict[str, Any]:
    """The script as segments, each with its status and images (file names match the zip's).
    Server file paths are included only with ``with_paths`` (the CLI and library on the same machine);
    what a visitor downloads never reveals them."""
    items = job.items or []
    records = item_records(studio, items)
    segments = []
    for item in items:
        images = []
        present = [records[i] for i in item.image_ids if i in records]
        for position, record in enumerate(present):
            name = (names or {}).get((item.index, record.id)) or file_name(item, record, position, len(present))
            image = {"id": record.id, "file": name, "seed": record.seed, "width": record.width,
                     "height": record.height, "cost": round(record.cost, 6)}
            if with_paths:
                image["path"] = record.abs_path or record.path
            images.append(image)
        segments.append({"index": item.index, "timestamp": item.timestamp, "start": item.start, "end": item.end,
                         "text": item.text, "prompt": item.prompt, "status": item.status.value,
                         "error": item.error if item.status.value != "COMPLETED" else None,
                         "warnings": item.warnings,
                         "image": images[0] if images else None, "images": images})
    return {"job_id": job.id, "status": job.status.value, "provider": job.provider, "model": job.model,
            "style": job.style, "script": job.script_name, "format": job.script_format, "segments": segments}


def job_zip(studio, job: Job) -> bytes:
    """The images in scene order, ``manifest.csv`` / ``manifest.json`` (timestamp, text, prompt,
    file, seed, provider, cost, ...) and ``script.json`` (the enriched script)."""
    items = job.items or []
    records = item_records(studio, items)
    entries: list[tuple[JobItem, ImageRecord, str]] = []
    for item in items:
        present = [records[i] for i in item.image_ids if i in records]
        for position, record in enumerate(present):
            entries.append((item, record, file_name(item, record, position, len(present))))
    names = {(item.index, record.id): name for item, record, name in entries}
    script = enriched_script(studio, job, names)
    return build_zip(
        [record for _, record, _ in entries], studio.image_bytes,  # as served: no owner id inside
        name_for=lambda position, _record: entries[position][2],
        extra_columns=lambda position, _record: {"scene": entries[position][0].index + 1,
                                                 "timestamp": entries[position][0].timestamp or "",
                                                 "text": entries[position][0].text},
        extra_files={"script.json": json.dumps(script, indent=2, ensure_ascii=False)})

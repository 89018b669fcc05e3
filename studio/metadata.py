"""Metadata embedded in every image, and reading it back ("PNG info").

Two pieces travel inside each file:
- ``parameters``: the AUTOMATIC1111 text other tools read (prompt, ``Negative prompt: ...``, then
  ``Steps: .., Sampler: .., CFG scale: .., Seed: .., Size: WxH, Model: ..``);
- ``studio``: a JSON object with everything else (ids, provider, cost, parent, tags...).
PNG keeps them in text chunks; JPEG and WEBP in EXIF (UserComment for ``parameters``, the image
description for the JSON), a long JPEG's in XMP too. Writing them is ``studio.metadata_write``.
Nothing secret is ever part of either.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from studio.imaging import open_checked
from studio.metadata_write import (EXIF_IFD_POINTER, EXIF_IMAGE_DESCRIPTION, EXIF_USER_COMMENT, JSON_PREFIX,
                                   UNICODE_HEADER, encode_image, xmp_fields)

if TYPE_CHECKING:
    from studio.types import ImageRecord

__all__ = ["STUDIO_VERSION", "embedded_json", "encode_image", "format_parameters", "parse_parameters",
           "read_metadata", "record_parameters"]
STUDIO_VERSION = "image-studio 0.1"  # the ``Version`` of the A1111 text the studio writes
_NEEDS_QUOTES = re.compile(r"[,:\n\"]")


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if _NEEDS_QUOTES.search(text) else text


def format_parameters(prompt: str, negative_prompt: str, pairs: dict[str, Any]) -> str:
    """The A1111 ``parameters`` text: prompt, optional negative line, then ``key: value`` pairs."""
    lines = [prompt.strip()]
    if negative_prompt and negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs.items() if value not in (None, "")))
    return "\n".join(lines)


def record_parameters(record: "ImageRecord") -> str:
    """The A1111 ``parameters`` text of one stored image: its prompts, then steps, sampler (the
    provider's, else the provider's name), guidance, seed, size, model, strength and our version."""
    params = record.params
    pairs = {
        "Steps": params.get("steps"),
        "Sampler": params.get("sampler") or record.provider,
        "CFG scale": params.get("guidance"),
        "Seed": record.seed,
        "Size": f"{record.width}x{record.height}",
        "Model": record.model,
        "Denoising strength": params.get("strength"),
        "Provider": record.provider,
        "Version": STUDIO_VERSION,
    }
    return format_parameters(record.prompt, record.negative_prompt, pairs)


def embedded_json(record: "ImageRecord") -> dict[str, Any]:
    """What goes into the image's ``studio`` metadata: what anyone holding the file may know
    (``ImageRecord.public_dict``: no owner), minus file facts it cannot know about itself."""
    data = record.public_dict()
    for name in ("sha256", "size_bytes"):
        data.pop(name, None)
    return data


_PAIR = re.compile(r'\s*([\w ./+-]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse A1111 ``parameters`` text into prompt, negative prompt and the key/value pairs."""
    lines = text.strip().split("\n")
    pairs: dict[str, str] = {}
    last = lines[-1] if lines else ""
    found = _PAIR.findall(last)
    if len(found) >= 3:
        lines = lines[:-1]
        for key, value in found:
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                try:
                    value = json.loads(value)
                except (json.JSONDecodeError, RecursionError):  # hostile nesting is just text
                    pass
            pairs[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:"):].strip()
        target.append(line)
    return {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip(),
            "pairs": pairs}


def _decode_user_comment(raw: bytes | str, exif_big_endian: bool = True) -> str:
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == UNICODE_HEADER:
        if body[:2] == b"\xff\xfe":
            return body[2:].decode("utf-16-le", errors="replace")
        if body[:2] == b"\xfe\xff":
            return body[2:].decode("utf-16-be", errors="replace")
        # No BOM. A1111, piexif and the studio write big-endian; some writers (Microsoft Photo, exiftool
        # in little-endian Exif) little-endian. The first character decides nothing (一 is 4E 00 in
        # big-endian), but A1111 text is largely ASCII (its settings line at least), whose high bytes are
        # zero: zeros at even offsets mean big-endian, at odd offsets little-endian; on a tie, the Exif's
        # own byte order.
        zeros_even, zeros_odd = body[0::2].count(0), body[1::2].count(0)
        big_endian = zeros_even > zeros_odd or (zeros_even == zeros_odd and exif_big_endian)
        return body[:len(body) // 2 * 2].decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return body.decode("utf-8", errors="replace")
    return raw.decode("utf-8", errors="replace")


def read_metadata(data: bytes) -> dict[str, Any]:
    """Everything embedded in an image: ``parameters`` (text and parsed), the ``studio`` JSON, and
    ``generation``: the generation parameters of whichever tool wrote the file in one shape
    (``studio.metadata_read``), or None with ``note`` saying why. Raises InvalidRequest for a file
    that is not an image."""
    image = open_checked(data, "image")
    parameters: str | None = None
    studio_json: dict[str, Any] | None = None
    info = image.info or {}
    if isinstance(info.get("parameters"), str):
        parameters = info["parameters"]
    if isinstance(info.get("studio"), str):
        studio_json = _loads(info["studio"])
    exif = image.getexif()
    if exif:
        description = exif.get(EXIF_IMAGE_DESCRIPTION)
        if isinstance(description, bytes):
            description = description.decode("utf-8", errors="replace")
        if studio_json is None and isinstance(description, str) and description.startswith(JSON_PREFIX):
            studio_json = _loads(description[len(JSON_PREFIX):])
        comment = exif.get_ifd(EXIF_IFD_POINTER).get(EXIF_USER_COMMENT)
        if parameters is None and comment:
            parameters = _decode_user_comment(comment, exif.endian != "<").rstrip("\x00")
    # A JPEG whose texts did not fit its Exif segment keeps them in full in XMP (metadata_write).
    ours = xmp_fields(info.get("xmp") or info.get("XML:com.adobe.xmp"))
    if studio_json is None and "studio" in ours:
        studio_json = _loads(ours["studio"])
    if "parameters" in ours:
        parameters = ours["parameters"]
    # Other tools' chunks (ComfyUI, InvokeAI, NovelAI, Fooocus, XMP...) as text; this module imports
    # the readers here because they in turn use parse_parameters.
    from studio.metadata_read import read_generation

    chunks = {name: value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
              for name, value in info.items() if isinstance(name, str) and isinstance(value, (str, bytes))}
    # ComfyUI's WEBP saver keeps its graphs in EXIF text tags as "prompt:{...}" / "workflow:{...}"
    # (Make, Model and the tags below them); they read as its PNG chunks do.
    for tag, value in (exif or {}).items():
        if isinstance(value, str) and 0x0100 <= tag <= 0x0110:
            name, _, graph = value.partition(":")
            if name in ("prompt", "workflow") and graph.lstrip().startswith("{"):
                chunks.setdefault(name, graph)
    found, note = read_generation(chunks, parameters, studio_json)
    return {
        "format": (image.format or "").lower(),
        "width": image.size[0],
        "height": image.size[1],
        "parameters": parameters,
        # The A1111 text read as A1111 text; None when it is JSON (another tool's), which is no prompt.
        "parsed": parse_parameters(parameters) if parameters and not parameters.lstrip().startswith("{") else None,
        "studio": studio_json,
        "generation": found,  # metadata_read's normalised shape, whichever tool wrote it
        "note": note,  # why there is no generation: "no generation metadata" / "unrecognised format"
    }


def _loads(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nesting deeper than any real record
        return None
    return value if isinstance(value, dict) else None

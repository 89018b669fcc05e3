"""Metadata embedded in every image, and reading it back ("PNG info").

Two pieces travel inside each file:
- ``parameters``: the AUTOMATIC1111 text other tools read (prompt, ``Negative prompt: ...``, then
  ``Steps: .., Sampler: .., CFG scale: .., Seed: .., Size: WxH, Model: ..``);
- ``studio``: a JSON object with everything else (ids, provider, cost, parent, tags...).
PNG keeps them in text chunks; JPEG and WEBP in EXIF (UserComment for ``parameters``, the image
description for the JSON). Nothing secret is ever part of either.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from PIL import Image, PngImagePlugin

from studio.imaging import PIL_FORMATS, open_checked

EXIF_USER_COMMENT = 0x9286
EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_IFD_POINTER = 0x8769
JSON_PREFIX = "image-studio:"
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
                except json.JSONDecodeError:
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


def _encode_user_comment(text: str) -> bytes:
    # EXIF UserComment: an 8-byte character-code prefix, then the text. UNICODE means UTF-16;
    # we write big-endian, as the EXIF spec's default byte order for this field in A1111's readers.
    return b"UNICODE\x00" + text.encode("utf-16-be")


def _decode_user_comment(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        # Some writers use little-endian; a BOM or the position of the zero bytes tells which.
        if body[:2] == b"\xff\xfe":
            return body[2:].decode("utf-16-le", errors="replace")
        if body[:2] == b"\xfe\xff":
            return body[2:].decode("utf-16-be", errors="replace")
        if len(body) >= 2 and body[0] != 0 and body[1] == 0:
            return body.decode("utf-16-le", errors="replace")
        return body.decode("utf-16-be", errors="replace")
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return body.decode("utf-8", errors="replace")
    return raw.decode("utf-8", errors="replace")


def encode_image(image: Image.Image, fmt: str, *, parameters: str, studio_json: dict[str, Any],
                 compression: int = 95) -> bytes:
    """Encode ``image`` as ``fmt`` with both metadata pieces embedded."""
    buffer = io.BytesIO()
    payload = json.dumps(studio_json, ensure_ascii=True, sort_keys=True, default=str)
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("parameters", parameters)
        info.add_itxt("studio", payload)
        image.save(buffer, format="PNG", pnginfo=info, optimize=False)
        return buffer.getvalue()
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = JSON_PREFIX + payload
    exif.get_ifd(EXIF_IFD_POINTER)[EXIF_USER_COMMENT] = _encode_user_comment(parameters)
    if fmt == "jpeg" and image.mode != "RGB":
        from studio.imaging import flatten

        image = flatten(image)
    image.save(buffer, format=PIL_FORMATS[fmt], exif=exif.tobytes(), quality=int(compression))
    return buffer.getvalue()


def read_metadata(data: bytes) -> dict[str, Any]:
    """Everything embedded in an image: ``parameters`` (text and parsed) and the ``studio`` JSON."""
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
            parameters = _decode_user_comment(comment).rstrip("\x00")
    return {
        "format": (image.format or "").lower(),
        "width": image.size[0],
        "height": image.size[1],
        "parameters": parameters,
        "parsed": parse_parameters(parameters) if parameters else None,
        "studio": studio_json,
    }


def _loads(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None

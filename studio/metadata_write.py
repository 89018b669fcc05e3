"""Writing the studio's metadata into image files (reading it back is ``studio.metadata``).

Two texts travel in each file (see ``studio.metadata``): ``parameters``, the AUTOMATIC1111 text, and
``studio``, our JSON record. Where they go:

- PNG: two uncompressed ``iTXt`` chunks, ``parameters`` and ``studio``, right after ``IHDR``;
- JPEG (an ``APP1`` Exif segment) and WEBP (an ``EXIF`` chunk): a big-endian TIFF structure with
  ``ImageDescription`` (ASCII) = ``image-studio:`` + the JSON, and in the Exif IFD ``UserComment``
  (type UNDEFINED, the ``UNICODE\\0`` character-code header, then UTF-16 big-endian: what
  AUTOMATIC1111, Forge and SD.Next write and what their readers and sd-prompt-reader expect).

A JPEG segment holds at most 65,533 bytes. When the texts do not fit there (long non-ASCII prompts:
the JSON is ASCII-escaped, six bytes per CJK character), the JSON moves, in UTF-8, to an XMP packet
(``imagestudio:studio`` in ``XMP_NAMESPACE``), and if even the A1111 text alone is too long, the
Exif copy is cut at a character boundary and marked (``CUT_MARK``) and the full text goes to the
XMP packet too (``imagestudio:parameters``). ``check_fits`` says before a request is paid for whether
every text will be kept in full; ``insert_metadata`` and ``encode_image`` never fail for size.

``insert_metadata`` writes the texts into an encoded file as it is (the provider's own bytes):
lossless, and about a millisecond instead of a full re-encode.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any

from PIL import Image

from studio.errors import InvalidRequest
from studio.imaging import PIL_FORMATS, flatten, sniff_format

log = logging.getLogger(__name__)

# Shared with the reader (studio.metadata), which imports them from here.
EXIF_USER_COMMENT = 0x9286
EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_IFD_POINTER = 0x8769
EXIF_VERSION = 0x9000
JSON_PREFIX = "image-studio:"
UNICODE_HEADER = b"UNICODE\x00"  # EXIF character code of UserComment: UCS-2/UTF-16
XMP_NAMESPACE = "urn:image-studio:metadata:1"
CUT_MARK = " \u2026 [cut: the full text is in this file's XMP]"

EXIF_HEADER = b"Exif\x00\x00"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
JPEG_SEGMENT_MAX = 65533  # payload bytes of one JPEG marker segment (its 2-byte length counts itself)
EXIF_TIFF_MAX = JPEG_SEGMENT_MAX - len(EXIF_HEADER)
XMP_PACKET_MAX = JPEG_SEGMENT_MAX - len(XMP_HEADER)
MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65500, "webp": 16383}  # pixels: the formats' (and encoders') limits

# TIFF field types
_ASCII, _LONG, _UNDEFINED = 2, 4, 7


@dataclass(frozen=True)
class Embedding:
    """What goes into one file. ``exif``: TIFF bytes (no ``Exif\\0\\0`` header) or None for PNG;
    ``xmp``: an XMP packet (UTF-8) or None; ``complete``: every text is somewhere in full;
    ``cut``: the Exif copy of the A1111 text was shortened (the full one is in ``xmp`` if complete)."""

    fmt: str
    parameters: str
    studio_payload: str
    exif: bytes | None
    xmp: bytes | None
    complete: bool
    cut: bool


# -- deciding what goes where ---------------------------------------------------------------------


def plan(fmt: str, parameters: str, studio_json: dict[str, Any]) -> Embedding:
    """Place both texts for ``fmt`` (png, jpeg or webp). Never raises for size: what does not fit a
    JPEG is cut (marked) or dropped, and ``complete`` says whether anything was lost."""
    payload = json.dumps(studio_json, ensure_ascii=True, sort_keys=True, default=str)
    if fmt == "png":
        return Embedding(fmt, parameters, payload, None, None, True, False)
    full_exif = build_exif(parameters, JSON_PREFIX + payload)
    if fmt != "jpeg" or len(full_exif) <= EXIF_TIFF_MAX:
        return Embedding(fmt, parameters, payload, full_exif, None, True, False)
    # JPEG, too long for one segment: the JSON goes to XMP in UTF-8 (a third of its escaped size
    # for CJK); the A1111 text stays in Exif, cut when even alone it does not fit.
    utf8_payload = json.dumps(studio_json, ensure_ascii=False, sort_keys=True, default=str)
    exif = build_exif(parameters, None)
    cut = len(exif) > EXIF_TIFF_MAX
    if cut:
        exif = build_exif(_cut_parameters(parameters, EXIF_TIFF_MAX - len(build_exif("", None))), None)
    fields = {"studio": utf8_payload, **({"parameters": parameters} if cut else {})}
    xmp = xmp_packet(fields)
    complete = len(xmp) <= XMP_PACKET_MAX
    if not complete and cut:  # keep at least the whole JSON (it holds the prompts too)
        xmp = xmp_packet({"studio": utf8_payload})
    if len(xmp) > XMP_PACKET_MAX:
        log.warning("image metadata of %d bytes does not fit a JPEG; the JSON record is left out of the file "
                    "(it stays in the studio's index)", len(xmp))
        xmp = None
    return Embedding(fmt, parameters, payload, exif, xmp, complete, cut)


def check_fits(fmt: str, parameters: str, studio_json: dict[str, Any], *, headroom: int = 0,
               size: tuple[int, int] | None = None) -> None:
    """Raise InvalidRequest when ``fmt`` cannot keep both texts in full (only a JPEG's 64 KiB
    segments can run out), with ``headroom`` bytes to spare in the JSON, or cannot hold an image of
    ``size`` (width, height in pixels: WEBP sides stop at 16,383, JPEG's at 65,500). Called before a
    request is paid for, on the texts and size it will write."""
    if size is not None and max(size) > MAX_SIDE[fmt]:
        raise InvalidRequest(f"a {size[0]}x{size[1]} image cannot be saved as {fmt.upper()}, whose sides stop at "
                             f"{MAX_SIDE[fmt]:,} pixels; choose PNG or a smaller size or upscale")
    padded = {**studio_json, "_headroom": "x" * headroom} if headroom else studio_json
    if not plan(fmt, parameters, padded).complete:
        raise InvalidRequest("the prompt is too long to keep in full in a JPEG's metadata (at most 64 KiB per "
                             "block); choose PNG or WEBP, or shorten the prompt or negative prompt")


def _cut_parameters(text: str, budget: int) -> str:
    """The A1111 text in at most ``budget`` bytes of UserComment: the prompt part cut at a character
    boundary (never inside a surrogate pair or before a combining mark), ``CUT_MARK``, then the
    ``key: value`` line kept whole so readers still find the settings."""
    head, newline, pairs = text.rpartition("\n")
    if not newline:
        head, pairs = text, ""
    tail = CUT_MARK + ("\n" + pairs if pairs else "")

    def size(count: int) -> int:
        return len(UNICODE_HEADER) + len((head[:count] + tail).encode("utf-16-be", errors="replace"))

    if size(0) > budget:  # the settings line alone is too long: cut everything
        tail, pairs = CUT_MARK, ""
    low, high = 0, len(head)
    while low < high:  # the longest prefix of head that fits
        middle = (low + high + 1) // 2
        if size(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    while 0 < low < len(head) and (unicodedata.combining(head[low]) or head[low] in "\u200d\ufe0e\ufe0f"):
        low -= 1  # do not separate a character from its combining marks / joiners / variation selector
    return head[:low].rstrip() + tail


# -- EXIF (TIFF structure) --------------------------------------------------------------------------


def user_comment(text: str) -> bytes:
    """EXIF UserComment value: the ``UNICODE\\0`` header, then UTF-16 big-endian without a BOM, in
    the byte order of the big-endian TIFF structure it sits in (A1111's piexif writes the same)."""
    return UNICODE_HEADER + text.encode("utf-16-be", errors="replace")


def build_exif(parameters: str | None, description: str | None) -> bytes:
    """A big-endian TIFF structure: IFD0 with ImageDescription (ASCII, when given) and the Exif IFD
    pointer; the Exif IFD with UserComment (UNDEFINED, when given). Returned without the JPEG
    ``Exif\\0\\0`` header."""
    ifd0: list[tuple[int, int, int, bytes]] = []  # (tag, type, count, value bytes)
    if description is not None:
        text = description.encode("ascii", errors="replace") + b"\x00"
        ifd0.append((EXIF_IMAGE_DESCRIPTION, _ASCII, len(text), text))
    exif_ifd = [(EXIF_VERSION, _UNDEFINED, 4, b"0232")]  # Exif 2.32, the version whose UserComment we write
    if parameters is not None:
        comment = user_comment(parameters)
        exif_ifd.append((EXIF_USER_COMMENT, _UNDEFINED, len(comment), comment))
    ifd0_offset = 8
    exif_ifd_offset = ifd0_offset + 2 + 12 * (len(ifd0) + 1) + 4
    data_offset = exif_ifd_offset + 2 + 12 * len(exif_ifd) + 4
    ifd0.append((EXIF_IFD_POINTER, _LONG, 1, struct.pack(">I", exif_ifd_offset)))
    ifd0.sort()
    blobs = bytearray()

    def directory(entries: list[tuple[int, int, int, bytes]]) -> bytes:
        out = bytearray(struct.pack(">H", len(entries)))
        for tag, kind, count, value in entries:
            if len(value) <= 4:
                field_value = value.ljust(4, b"\x00")
            else:  # stored after the directories, at a word boundary
                field_value = struct.pack(">I", data_offset + len(blobs))
                blobs.extend(value + b"\x00" * (len(value) % 2))
            out += struct.pack(">HHI", tag, kind, count) + field_value
        return bytes(out + struct.pack(">I", 0))

    first, second = directory(ifd0), directory(exif_ifd)
    return b"MM\x00\x2a" + struct.pack(">I", ifd0_offset) + first + second + bytes(blobs)


# -- XMP ---------------------------------------------------------------------------------------------

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def xmp_packet(fields: dict[str, str]) -> bytes:
    """An XMP packet with each field as a simple ``imagestudio:<name>`` property (UTF-8)."""
    properties = "".join(f"<imagestudio:{name}>{_xml_text(value)}</imagestudio:{name}>"
                         for name, value in fields.items())
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:imagestudio="{XMP_NAMESPACE}">{properties}</rdf:Description>'
            '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode("utf-8")


_XMP_FIELD = re.compile(r"<imagestudio:(\w+)>(.*?)</imagestudio:\1>", re.S)


def xmp_fields(packet: str | bytes | None) -> dict[str, str]:
    """The ``imagestudio:`` properties of an XMP packet written by ``xmp_packet`` ({} when none)."""
    if not packet:
        return {}
    text = packet.decode("utf-8", errors="replace") if isinstance(packet, bytes) else packet
    if XMP_NAMESPACE not in text:
        return {}
    found = {}
    for name, value in _XMP_FIELD.findall(text):
        for entity, char in (("&#13;", "\r"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
            value = value.replace(entity, char)
        found[name] = value
    return found


# -- writing into encoded files ------------------------------------------------------------------------


def encode_image(image: Image.Image, fmt: str, *, parameters: str, studio_json: dict[str, Any],
                 compression: int = 95) -> bytes:
    """Encode ``image`` as ``fmt`` (png, jpeg, webp; ``compression`` is the JPEG/WEBP quality 1-100)
    with both texts embedded. A JPEG is flattened over white when it has transparency."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        if fmt == "jpeg" and image.mode != "RGB":
            image = flatten(image)
        image.save(buffer, format=PIL_FORMATS[fmt], quality=int(compression))
    return _insert(buffer.getvalue(), plan(fmt, parameters, studio_json), image.size)


def insert_metadata(data: bytes, fmt: str, *, parameters: str, studio_json: dict[str, Any],
                    size: tuple[int, int]) -> bytes:
    """``data`` (an encoded ``fmt`` file, e.g. a provider's answer) with both texts written in, the
    pixels untouched: PNG ``iTXt`` chunks, JPEG ``APP1`` segments, WEBP ``EXIF``/``XMP `` chunks.
    ``size`` is the decoded (width, height), needed when a simple WEBP becomes an extended one.
    Earlier metadata of ours and the file's own Exif are replaced (its XMP only when we write one).
    Raises ValueError when ``data`` is not a well-formed ``fmt`` file."""
    if sniff_format(data) != fmt:
        raise ValueError(f"the bytes are not a {fmt} file")
    return _insert(data, plan(fmt, parameters, studio_json), size)


def _insert(data: bytes, embedding: Embedding, size: tuple[int, int]) -> bytes:
    if embedding.fmt == "png":
        return _insert_png(data, embedding)
    if embedding.fmt == "jpeg":
        return _insert_jpeg(data, embedding)
    return _insert_webp(data, embedding, size)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _itxt(keyword: str, text: str) -> bytes:
    # keyword, NUL, not compressed (0), method 0, empty language tag and translated keyword, UTF-8 text
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00"
                      + text.encode("utf-8", errors="replace"))


def _insert_png(data: bytes, embedding: Embedding) -> bytes:
    ours = {b"parameters", b"studio"}
    out = bytearray(data[:8])
    position = 8
    while position < len(data):
        if position + 12 > len(data):
            raise ValueError("truncated PNG chunk")
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        end = position + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        body = data[position + 8:position + 8 + length]
        if not (kind in (b"tEXt", b"iTXt", b"zTXt") and body.split(b"\x00", 1)[0] in ours):
            out += data[position:end]
        if kind == b"IHDR":
            out += _itxt("parameters", embedding.parameters) + _itxt("studio", embedding.studio_payload)
        position = end
        if kind == b"IEND":
            break
    return bytes(out)


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _insert_jpeg(data: bytes, embedding: Embedding) -> bytes:
    assert embedding.exif is not None
    ours = [_jpeg_segment(0xE1, EXIF_HEADER + embedding.exif)]
    if embedding.xmp is not None:
        ours.append(_jpeg_segment(0xE1, XMP_HEADER + embedding.xmp))
    kept: list[bytes] = []
    position = 2
    inserted_at = 0
    while True:
        while position < len(data) and data[position] == 0xFF and position + 1 < len(data) \
                and data[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position + 4 > len(data) or data[position] != 0xFF:
            raise ValueError("malformed JPEG marker")
        marker = data[position + 1]
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image: the rest is copied as is
            break
        if 0xD0 <= marker <= 0xD7 or marker in (0x00, 0x01, 0xD8):
            raise ValueError(f"unexpected JPEG marker 0x{marker:02X} before the scan")
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        end = position + 2 + length
        if length < 2 or end > len(data):
            raise ValueError("truncated JPEG segment")
        payload = data[position + 4:end]
        replaced = marker == 0xE1 and (payload.startswith(EXIF_HEADER)
                                       or (embedding.xmp is not None and payload.startswith(XMP_HEADER)))
        if not replaced:
            kept.append(data[position:end])
            if marker == 0xE0 and inserted_at == len(kept) - 1:
                inserted_at = len(kept)  # Exif goes after a leading JFIF APP0, which must come first
        position = end
    return data[:2] + b"".join(kept[:inserted_at]) + b"".join(ours) + b"".join(kept[inserted_at:]) + data[position:]


def _riff_chunk(fourcc: bytes, body: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _insert_webp(data: bytes, embedding: Embedding, size: tuple[int, int]) -> bytes:
    assert embedding.exif is not None
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a RIFF WEBP file")
    chunks: list[tuple[bytes, bytes]] = []
    position = 12
    end_of_riff = min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    while position + 8 <= end_of_riff:
        fourcc, length = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        body = data[position + 8:position + 8 + length]
        if len(body) != length:
            raise ValueError("truncated WEBP chunk")
        chunks.append((fourcc, body))
        position += 8 + length + (length % 2)
    if not chunks:
        raise ValueError("empty WEBP file")
    write_xmp = embedding.xmp is not None
    chunks = [(fourcc, body) for fourcc, body in chunks
              if fourcc != b"EXIF" and not (write_xmp and fourcc == b"XMP ")]
    if chunks[0][0] == b"VP8X":
        header = bytearray(chunks[0][1])
        chunks = chunks[1:]
    else:  # a simple file (one VP8/VP8L chunk) becomes an extended one, which may carry metadata
        width, height = size
        alpha = chunks[0][0] == b"VP8L" and len(chunks[0][1]) >= 5 and (
            struct.unpack("<I", chunks[0][1][1:5])[0] >> 28) & 1
        header = bytearray(b"\x10\x00\x00\x00" if alpha else b"\x00\x00\x00\x00")
        header += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    header[0] |= 0x08 | (0x04 if write_xmp else 0)  # EXIF and XMP flags
    # Chunk order (WebP container spec): VP8X, ICCP, ANIM, image data, EXIF, XMP, unknown chunks.
    place = next((i for i, (fourcc, _body) in enumerate(chunks) if fourcc == b"XMP "), len(chunks))
    ours = [(b"EXIF", embedding.exif)] + ([(b"XMP ", embedding.xmp)] if write_xmp else [])
    chunks = [(b"VP8X", bytes(header))] + chunks[:place] + ours + chunks[place:]
    body = b"WEBP" + b"".join(_riff_chunk(fourcc, chunk) for fourcc, chunk in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body

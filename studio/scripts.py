"""Video scripts in, scenes out.

A script is a list of scenes, each with its text and (when the format has one) its timestamp.
Five formats are read:

- plain text: one scene per line, or per paragraph when scenes span several lines (blank lines
  between them). A line may start with a timestamp (``00:01:05 A lighthouse``, ``[01:05] ...``)
  and end with overrides in the AUTOMATIC1111 "prompts from file" habit:
  ``a lighthouse at dusk --seed 5 --style cinematic``. Lines starting with ``#`` are comments.
  A provider option of the job's model is ``--option go_fast=false`` (repeatable).
- CSV (comma, semicolon or tab) with a header naming a ``text`` column and optionally
  ``timestamp`` and override columns (``seed``, ``style``, ...), and a provider option per
  ``option.NAME`` column (``option.go_fast``);
- JSON: a list of ``{"timestamp", "text"}`` objects (or of strings), optionally wrapped as
  ``{"segments": [...]}``; a segment's provider options are an ``"options"`` object (JSON types
  kept: ``{"go_fast": false}``) or ``"option.NAME"`` keys;
- SRT and WebVTT subtitles: each cue is a scene, its timestamp the cue's start. SRT is read as
  the ``srt`` library reads it, WebVTT by the W3C parsing algorithm (see "subtitles" below).

Without a file name the format is recognised from the content (a WEBVTT signature, JSON, an SRT
timing line, a CSV header naming a text column and a time or override column). Bytes are UTF-8, or
UTF-8/16/32 announced by a byte-order mark. Anything malformed raises ``InvalidRequest`` naming the
line, before any job exists. Provider options are read here as given (text, or JSON values); the
job's model types and checks them (``studio.options.coerce_options``) when the batch is previewed,
so an option the model refuses is an error naming its line, before any job exists too.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from studio.errors import InvalidRequest, missing_file
from studio.options import parse_option_pairs
from studio.validation import MAX_PROMPT_CHARS, parse_json, parse_size

MAX_SCENES = 2000
MAX_SCRIPT_BYTES = 5 * 1024 * 1024
FORMATS = ("text", "csv", "json", "srt", "vtt")

# Per-scene overrides: the option name in a script -> (GenerationRequest field, type).
OVERRIDES: dict[str, tuple[str, type]] = {
    "seed": ("seed", int),
    "style": ("style", str),
    "negative": ("negative_prompt", str),
    "negative_prompt": ("negative_prompt", str),
    "steps": ("steps", int),
    "guidance": ("guidance", float),
    "cfg_scale": ("guidance", float),
    "n": ("n", int),
    "width": ("width", int),
    "height": ("height", int),
    "size": ("size", str),
    "quality": ("quality", str),
}
# A CSV column or JSON key naming one provider option of the job's model: ``option.go_fast``.
OPTION_PREFIX = "option."
_TEXT_COLUMNS = ("text", "prompt", "scene", "description")
_TIME_COLUMNS = ("timestamp", "time", "start", "timecode")

_LEADING_TIME = re.compile(r"^\[?((?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?)\]?(?:\s*[-–—|:]\s*|\s+)(\S.*)$")
_OPTIONS_START = re.compile(r"(?:^|\s)--[A-Za-z]")


@dataclass
class Scene:
    index: int  # 0-based position in the script
    text: str
    timestamp: str | None = None  # as written (text, CSV, JSON) or the cue's start (SRT, VTT)
    start: float | None = None  # the timestamp in seconds, when it is a time
    end: float | None = None  # a subtitle cue's end
    line: int = 0  # 1-based line where the scene starts, for messages
    overrides: dict[str, Any] = field(default_factory=dict)  # GenerationRequest fields for this scene only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Script:
    scenes: list[Scene]
    format: str
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "name": self.name, "scenes": [s.to_dict() for s in self.scenes]}


# -- entry points ------------------------------------------------------------------------------


def parse_script(source: str | bytes | Path | Iterable, *, name: str = "", format: str | None = None) -> Script:
    """Read a script from text, bytes, a file path or a list of segments (dicts or strings).

    ``format`` is one of text, csv, json, srt, vtt (or lines / paragraphs to force how text is
    split); by default it follows the file name's extension,
    then the content."""
    if isinstance(source, Path):
        name = name or source.name
        source = _read_file(source)
    elif isinstance(source, (list, tuple)):
        return Script(_scenes_from_segments([(value, None) for value in source]), "json", name)
    if isinstance(source, bytes):
        source = _decode(source)
    if not isinstance(source, str):
        raise InvalidRequest("a script is text, a file, or a list of {timestamp, text} segments")
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_BYTES:
        raise InvalidRequest(f"the script is larger than {MAX_SCRIPT_BYTES // (1024 * 1024)} MiB")
    text = source.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    kind = (format or detect_format(name, text)).lower()
    parsers = {"text": _parse_text, "txt": _parse_text, "lines": lambda t: _parse_text(t, paragraphs=False),
               "paragraphs": lambda t: _parse_text(t, paragraphs=True), "csv": _parse_csv, "json": _parse_json,
               "srt": _parse_srt, "vtt": _parse_vtt, "webvtt": _parse_vtt}
    if kind not in parsers:
        raise InvalidRequest(f"unknown script format {_excerpt(kind)}; choose one of {', '.join(FORMATS)}")
    scenes = parsers[kind](text)
    if not scenes:
        raise InvalidRequest("the script has no scenes")
    return Script(scenes, {"txt": "text", "lines": "text", "paragraphs": "text", "webvtt": "vtt"}.get(kind, kind),
                  name)


def read_script_file(path: str | Path, *, format: str | None = None) -> Script:
    path = Path(path).expanduser()
    if not path.is_file():
        raise missing_file(path, "script")
    return parse_script(path, name=path.name, format=format)


def detect_format(name: str, text: str) -> str:
    suffix = Path(name).suffix.lower().lstrip(".") if name else ""
    by_suffix = {"txt": "text", "md": "text", "text": "text", "csv": "csv", "tsv": "csv", "json": "json",
                 "srt": "srt", "vtt": "vtt"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    head = text.lstrip()
    if _is_vtt_signature(head.split("\n", 1)[0]):
        return "vtt"
    if head.startswith(("[", "{")) and _looks_like_json(head):
        return "json"
    first_lines = head.split("\n", 2)[:2]
    if _srt_timing_at(first_lines, 0, after_blank=False) is not None:  # a complete timing line
        return "srt"
    if _is_csv_header(first_lines[0] if first_lines else ""):
        return "csv"
    return "text"


def _excerpt(value: Any, limit: int = 60) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters (a script line can be
    megabytes long)."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_timestamp(value: Any) -> float | None:
    """Seconds from ``HH:MM:SS(.mmm)``, ``MM:SS(.mmm)`` (``,`` also accepted) or a number; None when
    the value is a label rather than a time. Raises ``ValueError`` for a broken time like ``00:6x``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if value < 0 or value != value:
            raise ValueError(f"timestamp {value!r} is negative")
        return float(value)
    text = str(value).strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(?:[.,]\d+)?", text):
        return float(text.replace(",", "."))
    if ":" not in text:
        return None  # a label such as "intro"
    match = re.fullmatch(r"(?:(\d{1,3}):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?", text)
    if not match:
        raise ValueError(f"timestamp {_excerpt(text)} is not HH:MM:SS or MM:SS")
    hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise ValueError(f"timestamp {_excerpt(text)} has minutes or seconds above 59")
    total = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (int(fraction.ljust(3, "0")) / 1000 if fraction else 0.0)


def format_seconds(seconds: float | None) -> str:
    """``HH:MM:SS`` (with ``.mmm`` when there is a fraction); empty for None."""
    if seconds is None:
        return ""
    millis = int(round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}" + (f".{ms:03d}" if ms else "")


# -- helpers shared by the formats -------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidRequest(f"cannot read script {path}: {exc.strerror or exc}") from None
    if size > MAX_SCRIPT_BYTES:
        raise InvalidRequest(f"the script is larger than {MAX_SCRIPT_BYTES // (1024 * 1024)} MiB")
    return path.read_bytes()


# Byte-order marks and the codec each one announces; UTF-32 LE first, since its mark begins with
# UTF-16 LE's. Without a mark a script is UTF-8 (the codecs below drop the mark themselves).
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16"))


def _decode(data: bytes) -> str:
    """Text from a script's bytes: UTF-8, or UTF-8/16/32 announced by a byte-order mark.

    Raises ``InvalidRequest`` naming the line of the first byte that is not text in that encoding."""
    if len(data) > MAX_SCRIPT_BYTES:
        raise InvalidRequest(f"the script is larger than {MAX_SCRIPT_BYTES // (1024 * 1024)} MiB")
    codec = next((name for mark, name in _BYTE_ORDER_MARKS if data.startswith(mark)), "utf-8")
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].decode(codec, "replace").count("\n") + 1
        label = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}.get(codec, "UTF-8")
        hint = "" if codec != "utf-8" else " (UTF-16 and UTF-32 need a byte-order mark)"
        raise InvalidRequest(f"line {line}: the script is not {label} text (byte {exc.start}){hint}") from None


class _Collector:
    """Collects scenes, enforcing the scene limit as soon as it is passed (a 10,000-line script
    is refused at scene 2,001, not after building everything)."""

    def __init__(self) -> None:
        self.scenes: list[Scene] = []

    def add(self, line: int, text: str, timestamp: Any = None, overrides: dict[str, Any] | None = None,
            end: float | None = None, start: float | None = None) -> None:
        text = " ".join(text.split())
        if not text:
            raise InvalidRequest(f"line {line}: the scene has no text")
        if len(text) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"line {line}: the scene is {len(text):,} characters; the limit is "
                                 f"{MAX_PROMPT_CHARS:,}")
        if len(self.scenes) >= MAX_SCENES:
            raise InvalidRequest(f"line {line}: the script has more than {MAX_SCENES:,} scenes, the limit for "
                                 "one batch; split it into several batches")
        label = None if timestamp is None or str(timestamp).strip() == "" else str(timestamp).strip()
        if start is None:
            try:
                start = parse_timestamp(timestamp)
            except ValueError as exc:
                raise InvalidRequest(f"line {line}: {exc}") from None
        self.scenes.append(Scene(len(self.scenes), text, label, start, end, line, overrides or {}))


def _convert_override(key: str, value: Any, line: int) -> tuple[str, Any]:
    name = key.strip().lower().replace("-", "_")
    if name not in OVERRIDES:
        raise InvalidRequest(f"line {line}: unknown option --{key}; use "
                             + ", ".join(f"--{o}" for o in OVERRIDES if o not in ("negative_prompt", "cfg_scale"))
                             + " or --option NAME=VALUE")
    target, kind = OVERRIDES[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRequest(f"line {line}: --{name} needs a value")
    if target == "size":
        try:
            return "size", parse_size(str(value))
        except InvalidRequest as exc:
            raise InvalidRequest(f"line {line}: {exc}") from None
    if kind is str:
        return target, str(value).strip()
    # Numbers are read by the one coercion every front end uses (studio.application.forms).
    from studio.application.forms import real_number, whole_number

    try:
        return target, whole_number(value, f"--{name}") if kind is int else real_number(value, f"--{name}")
    except InvalidRequest as exc:
        raise InvalidRequest(f"line {line}: {exc.message}") from None


def _finish_overrides(pairs: dict[str, Any]) -> dict[str, Any]:
    """Turn a ``size`` pair into width/height, the fields a request has."""
    if "size" in pairs:
        pairs["width"], pairs["height"] = pairs.pop("size")
    return pairs


def _split_options(text: str, line: int) -> tuple[str, dict[str, Any]]:
    """``a lighthouse --seed 5 --style "film noir"`` -> (``a lighthouse``, {seed: 5, style: ...})."""
    match = _OPTIONS_START.search(text)
    if not match:
        return text, {}
    prompt, options = text[:match.start()], text[match.start():]
    try:
        tokens = shlex.split(options)
    except ValueError as exc:
        raise InvalidRequest(f"line {line}: cannot read the options ({exc})") from None
    pairs: dict[str, Any] = {}
    provider_options: list[str] = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if not token.startswith("--"):
            raise InvalidRequest(f"line {line}: expected an option like --seed 5, found {_excerpt(token)}")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if position + 1 >= len(tokens) or tokens[position + 1].startswith("--"):
                raise InvalidRequest(f"line {line}: --{key} needs a value")
            value = tokens[position + 1]
            position += 1
        position += 1
        if key.lower() == "prompt":  # A1111's form: the whole line is options, the prompt one of them
            prompt = value
            continue
        if key.lower() == "option":  # --option NAME=VALUE, typed later by the job's model
            provider_options.append(value)
            continue
        target, converted = _convert_override(key, value, line)
        pairs[target] = converted
    if provider_options:
        pairs["extra"] = parse_option_pairs(provider_options, what=f"line {line}: --option")
    return prompt.strip(), _finish_overrides(pairs)


# -- plain text --------------------------------------------------------------------------------


def _parse_text(text: str, paragraphs: bool | None = None) -> list[Scene]:
    """One scene per line; or per paragraph when blank lines separate several blocks and one of
    them spans more than one line, unless a line inside a block starts with a timestamp or ends
    with ``--options`` (those mark a scene-per-line script). ``paragraphs`` forces either reading."""
    blocks: list[tuple[int, list[str]]] = []  # (first line number, its lines)
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue
        if not stripped:
            if blocks and blocks[-1][1]:
                blocks.append((0, []))
            continue
        if not blocks or not blocks[-1][1]:
            blocks[-1:] = [(number, [])] if blocks else [(number, [])]
        blocks[-1][1].append(stripped)
    blocks = [block for block in blocks if block[1]]
    if paragraphs is None:
        # a timestamp opening, or options closing, a line in the middle of a block: scene per line
        per_line_marks = any(any(_LEADING_TIME.match(line) for line in lines[1:])
                             or any(_OPTIONS_START.search(line) for line in lines[:-1]) for _, lines in blocks)
        paragraphs = len(blocks) > 1 and any(len(lines) > 1 for _, lines in blocks) and not per_line_marks
    if paragraphs:
        entries = [(first, " ".join(lines)) for first, lines in blocks]
    else:
        entries = [(first + offset, line) for first, lines in blocks for offset, line in enumerate(lines)]

    collector = _Collector()
    for number, entry in entries:
        timestamp = None
        match = _LEADING_TIME.match(entry)
        if match:
            timestamp, entry = match.group(1), match.group(2)
        prompt, overrides = _split_options(entry, number)
        collector.add(number, prompt, timestamp, overrides)
    return collector.scenes


# -- CSV ---------------------------------------------------------------------------------------


_COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_ -]{0,39}")


def _csv_delimiter(header_line: str) -> str:
    """The separator a CSV header uses: the most frequent of comma, semicolon and tab."""
    return max(",;\t", key=header_line.count) if any(c in header_line for c in ",;\t") else ","


def _is_csv_header(line: str) -> bool:
    """Whether a script's first line is a CSV header: separated column names, one a text column
    and another a time or override column (``prompt,seed``, ``Time;Text``). A first scene such as
    ``Prompt, dramatic light`` stays plain text."""
    if not any(c in line for c in ",;\t"):
        return False
    try:
        cells = next(csv.reader([line], delimiter=_csv_delimiter(line)))
    except (csv.Error, StopIteration):
        return False
    columns = [cell.strip().lower() for cell in cells]
    names = [c.removeprefix(OPTION_PREFIX) for c in columns]
    if len(columns) < 2 or not all(_COLUMN_NAME.fullmatch(c) for c in names if c):
        return False
    known = set(_TIME_COLUMNS) | set(OVERRIDES)
    return any(c in _TEXT_COLUMNS for c in columns) and any(c in known or c.startswith(OPTION_PREFIX)
                                                            for c in columns)


def _parse_csv(text: str) -> list[Scene]:
    reader = csv.reader(io.StringIO(text), delimiter=_csv_delimiter(text.split("\n", 1)[0]), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidRequest("line 1: the CSV file is empty") from None
    except csv.Error as exc:
        raise InvalidRequest(f"line 1: {exc}") from None
    columns = [c.strip().lower() for c in header]
    text_col = next((columns.index(c) for c in _TEXT_COLUMNS if c in columns), None)
    if text_col is None:
        raise InvalidRequest(f"line 1: the CSV header needs a 'text' column (found: {', '.join(header) or 'nothing'})")
    time_col = next((columns.index(c) for c in _TIME_COLUMNS if c in columns), None)
    override_cols = [(i, c) for i, c in enumerate(columns) if c in OVERRIDES]
    option_cols = [(i, header[i].strip()[len(OPTION_PREFIX):]) for i, c in enumerate(columns)
                   if c.startswith(OPTION_PREFIX)]

    collector = _Collector()
    line = 1
    while True:
        row_start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InvalidRequest(f"line {row_start}: {exc} (a quote left open?)") from None
        line = row_start
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            raise InvalidRequest(f"line {line}: {len(row)} fields but the header has {len(columns)} "
                                 "(quote text that contains the separator)")
        cells = row + [""] * (len(columns) - len(row))
        overrides = {}
        for index, name in override_cols:
            if cells[index].strip():
                target, value = _convert_override(name, cells[index], line)
                overrides[target] = value
        extra = {name: cells[index].strip() for index, name in option_cols if cells[index].strip()}
        if extra:
            overrides["extra"] = extra
        timestamp = cells[time_col] if time_col is not None else None
        collector.add(line, cells[text_col], timestamp, _finish_overrides(overrides))
    return collector.scenes


# -- JSON --------------------------------------------------------------------------------------


def _looks_like_json(text: str) -> bool:
    try:
        json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text.startswith("{") or bool(re.match(r"\[\s*[\[{\"]", text))
    return True


def _parse_json(text: str) -> list[Scene]:
    data = parse_json(text)
    array_start = 0
    if isinstance(data, dict):
        key = next((k for k in ("segments", "scenes", "script") if isinstance(data.get(k), list)), None)
        if key is None:
            raise InvalidRequest("line 1: the JSON needs a list of segments, or an object with a "
                                 "\"segments\" list")
        data = data[key]
        found = re.search(r'"' + key + r'"\s*:\s*\[', text)
        array_start = found.end() - 1 if found else -1
    elif not isinstance(data, list):
        raise InvalidRequest("line 1: the JSON needs a list of segments like {\"timestamp\": \"00:00:05\", "
                             "\"text\": \"...\"}")
    lines = _element_lines(text, array_start, len(data)) if array_start >= 0 else [None] * len(data)
    return _scenes_from_segments(list(zip(data, lines)))


def _segment_options(item: dict[str, Any], line: int) -> dict[str, Any]:
    """A JSON segment's provider options: its ``"options"`` object and ``"option.NAME"`` keys, with
    their JSON values (false stays a boolean)."""
    extra: dict[str, Any] = {}
    for key, value in item.items():
        name = str(key)
        if name.lower() == "options":
            if not isinstance(value, dict):
                raise InvalidRequest(f"line {line}: \"options\" must be an object like {{\"go_fast\": false}}")
            extra.update({str(k): v for k, v in value.items()})
        elif name.lower().startswith(OPTION_PREFIX):
            extra[name[len(OPTION_PREFIX):]] = value
    return extra


def _element_lines(text: str, array_start: int, count: int) -> list[int | None]:
    """The line each element of the JSON array at ``array_start`` begins on (for messages)."""
    decoder = json.JSONDecoder()
    position = array_start + 1
    line = text.count("\n", 0, position) + 1
    result: list[int | None] = []
    whitespace = re.compile(r"[\s,]*")
    for _ in range(count):
        skip = whitespace.match(text, position).end()
        line += text.count("\n", position, skip)
        position = skip
        result.append(line)
        try:
            _value, end = decoder.raw_decode(text, position)
        except (json.JSONDecodeError, RecursionError):
            return result + [None] * (count - len(result))
        line += text.count("\n", position, end)
        position = end
    return result


def _scenes_from_segments(items: list[tuple[Any, int | None]]) -> list[Scene]:
    collector = _Collector()
    for number, (item, line) in enumerate(items, start=1):
        where = f"line {line}" if line else f"segment {number}"
        if isinstance(item, str):
            collector.add(line or number, item) if item.strip() else _empty(where)
            continue
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: a segment must be an object with \"text\" (and \"timestamp\")")
        keys = {str(k).lower(): v for k, v in item.items()}
        text_key = next((k for k in _TEXT_COLUMNS if k in keys), None)
        if text_key is None or not isinstance(keys[text_key], str) or not keys[text_key].strip():
            raise InvalidRequest(f"{where}: the segment has no \"text\"")
        time_key = next((k for k in _TIME_COLUMNS if k in keys), None)
        overrides = {}
        for name in OVERRIDES:
            if name in keys and keys[name] not in (None, ""):
                target, value = _convert_override(name, keys[name], line or number)
                overrides[target] = value
        extra = _segment_options(item, line or number)
        if extra:
            overrides["extra"] = extra
        try:
            collector.add(line or number, keys[text_key], keys[time_key] if time_key else None,
                          _finish_overrides(overrides))
        except InvalidRequest as exc:
            if line:
                raise
            raise InvalidRequest(exc.message.replace(f"line {number}:", f"{where}:", 1)) from None
    return collector.scenes


def _empty(where: str):
    raise InvalidRequest(f"{where}: the segment has no text")


# -- subtitles ---------------------------------------------------------------------------------
#
# SRT has no formal grammar: it is read as the `srt` library reads it. A cue is an optional index
# line, a timing line (``00:00:01,000 --> 00:00:04,000``; ``.`` also before the milliseconds, an
# arrow of ``-->``, ``- >`` or ``-- >``, anything after the end time ignored) and text up to the next
# cue; a blank line followed by something that is not a cue stays inside the text. One addition to
# `srt`: a complete timing line starts a new cue even without a blank line or an index before it
# (`srt` would put it, and the cue, in the previous cue's text). A short fraction is a decimal
# fraction of a second (``00:00:03.5`` is 3.5 s; `srt` reads 5 ms).
#
# WebVTT follows the W3C parsing algorithm (https://www.w3.org/TR/webvtt1/#file-parsing): a block's
# timing is its first or second line containing "-->", text ends at a blank line or at the next line
# containing "-->", and blocks without a timing (NOTE, STYLE, REGION) make no scene. Where the
# algorithm would drop a cue silently (a broken timing, text without any), we refuse with its line.

_SRT_INDEX = re.compile(r"\s*-?\d+(?:\.\d*)?\s*")
_SRT_TIMING = re.compile(r"\s*(\d+[:：]\S*?) *-[ -] *> *(\S+)")  # start, end (anything after is ignored)
_SRT_TIMESTAMP_START = re.compile(r"\s*\d+[:：]\d+[:：]\d+")  # a line that opens like a timing line
_SRT_TIME = re.compile(r"(?:(\d+)[:：])?(\d{1,2})[:：](\d{1,2})(?:[,.:，．。：](\d{1,3}))?")
# SRT's formatting tags (<i> <b> <u> <s> <font ...>) and ASS overrides ({\an8}); any other "<" is text.
_SRT_MARKUP = re.compile(r"</?[ibus]>|<font(?:\s[^<>]*)?>|</font>|\{\\[^}]*\}", re.IGNORECASE)

_VTT_TIMING = re.compile(r"[ \t\f]*(\S+?)[ \t\f]*-->[ \t\f]*(\S+)")  # start, end (then cue settings)
_VTT_TIME = re.compile(r"(?:(\d+):)?(\d{2}):(\d{2})\.(\d{3})")
_VTT_TAG = re.compile(r"<[^>]*(?:>|\Z)")  # the cue text tokenizer: any "<" opens a tag (text writes &lt;)
_VTT_NON_CUE = re.compile(r"NOTE(?:[ \t].*)?|(?:STYLE|REGION)[ \t\f]*")  # a comment, style sheet or region


def _srt_seconds(value: str, line: int) -> float:
    match = _SRT_TIME.fullmatch(value)
    if not match or int(match.group(2)) > 59 or int(match.group(3)) > 59:
        raise InvalidRequest(f"line {line}: {_excerpt(value)} is not a cue time like 00:00:01,000")
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int((millis or "0").ljust(3, "0")) / 1000


def _vtt_seconds(value: str, line: int) -> float:
    """A WebVTT timestamp as the algorithm collects one: ``[h...:]mm:ss.ttt``, minutes and seconds
    at most 59."""
    match = _VTT_TIME.fullmatch(value)
    if not match or int(match.group(2)) > 59 or int(match.group(3)) > 59:
        raise InvalidRequest(f"line {line}: {_excerpt(value)} is not a cue time like 00:00:01.000 or 00:01.000")
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def _cue_timing(pattern: re.Pattern, to_seconds, text: str, line: int,
                example: str) -> tuple[str, float, float]:
    """(start as written, start, end) of a cue's timing line; ``line`` is its 1-based number."""
    match = pattern.match(text)
    if not match:
        raise InvalidRequest(f"line {line}: expected a cue timing like {example} --> {example}, "
                             f"found {_excerpt(text.strip())}")
    start, end = to_seconds(match.group(1), line), to_seconds(match.group(2), line)
    if end < start:
        raise InvalidRequest(f"line {line}: the cue ends before it starts")
    return match.group(1), start, end


def _srt_timing_at(lines: list[str], index: int, *, after_blank: bool) -> int | None:
    """Where the timing line is when a cue starts at ``lines[index]`` (an optional index line, then
    the timing), or None when no cue starts there. A complete timing line starts a cue anywhere;
    at the start and after a blank line, so does a line that merely opens with a time (it must then
    be a timing line: an error, as in `srt`, rather than text)."""
    timing = index + 1 if index + 1 < len(lines) and _SRT_INDEX.fullmatch(lines[index]) else index
    if _SRT_TIMING.match(lines[timing]) or (after_blank and _SRT_TIMESTAMP_START.match(lines[timing])):
        return timing
    return None


def _parse_srt(text: str) -> list[Scene]:
    lines = text.split("\n")
    collector = _Collector()
    index = next((number for number, line in enumerate(lines) if line.strip()), len(lines))
    if index == len(lines):
        return []
    timing = _srt_timing_at(lines, index, after_blank=True)
    if timing is None:
        where = index + 1 if index + 1 < len(lines) and _SRT_INDEX.fullmatch(lines[index]) else index
        raise InvalidRequest(f"line {where + 1}: expected a cue timing like 00:00:01,000 --> 00:00:04,000, "
                             f"found {_excerpt(lines[where].strip())}")
    while timing is not None:
        label, start, end = _cue_timing(_SRT_TIMING, _srt_seconds, lines[timing], timing + 1, "00:00:01,000")
        body: list[str] = []
        following, index, after_blank = None, timing + 1, False
        while index < len(lines):
            if not lines[index].strip():
                after_blank = True
            else:
                following = _srt_timing_at(lines, index, after_blank=after_blank)
                if following is not None:
                    break
                body.append(_SRT_MARKUP.sub("", lines[index]))
                after_blank = False
            index += 1
        if " ".join(body).strip():  # an empty cue (a pause) makes no scene
            collector.add(timing + 1, " ".join(body), label, end=end, start=start)
        timing = following
    return collector.scenes


def _is_vtt_signature(line: str) -> bool:
    return line == "WEBVTT" or line.startswith(("WEBVTT ", "WEBVTT\t"))


def _parse_vtt(text: str) -> list[Scene]:
    """The WebVTT file parsing algorithm, block by block, on lines (``text`` has ``\n`` line ends)."""
    lines = text.replace("\0", "\ufffd").split("\n")
    if not _is_vtt_signature(lines[0]):
        raise InvalidRequest("line 1: a WebVTT file starts with \"WEBVTT\"")
    collector = _Collector()
    position, in_header = 1, True  # the block after the signature line is the header
    while position < len(lines):
        first, previous, line_count = position, position, 0
        timing: int | None = None
        buffer: list[str] = []  # the identifier or comment until the timing, then the cue text
        while position < len(lines):
            line = lines[position]
            position += 1
            line_count += 1
            if "-->" in line:
                if not in_header and (line_count == 1 or (line_count == 2 and timing is None)):
                    timing, buffer, previous = position - 1, [], position
                    continue
                position = previous  # the next cue starts on this line
                break
            if line == "":
                break
            buffer.append(line)
            previous = position
        if timing is not None:
            label, start, end = _cue_timing(_VTT_TIMING, _vtt_seconds, lines[timing], timing + 1, "00:00:01.000")
            cue_text = html.unescape(_VTT_TAG.sub("", "\n".join(buffer)))
            if cue_text.strip():  # an empty cue (a pause) makes no scene
                collector.add(timing + 1, cue_text, label, end=end, start=start)
        elif buffer and not in_header and not _VTT_NON_CUE.fullmatch(buffer[0]):
            where = first + min(1, len(buffer) - 1)
            raise InvalidRequest(f"line {where + 1}: expected a cue timing like 00:00:01.000 --> 00:00:04.000, "
                                 f"found {_excerpt(lines[where].strip())}")
        in_header = False
        while position < len(lines) and lines[position] == "":
            position += 1
    return collector.scenes


__all__ = ["Scene", "Script", "parse_script", "read_script_file", "detect_format", "parse_timestamp",
           "format_seconds", "MAX_SCENES", "FORMATS", "OVERRIDES"]

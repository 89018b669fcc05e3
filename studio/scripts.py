"""Video scripts in, scenes out.

A script is a list of scenes, each with its text and (when the format has one) its timestamp.
Five formats are read:

- plain text: one scene per line, or per paragraph when scenes span several lines (blank lines
  between them). A line may start with a timestamp (``00:01:05 A lighthouse``, ``[01:05] ...``)
  and end with overrides in the AUTOMATIC1111 "prompts from file" habit:
  ``a lighthouse at dusk --seed 5 --style cinematic``. Lines starting with ``#`` are comments.
- CSV (comma, semicolon or tab) with a header naming a ``text`` column and optionally
  ``timestamp`` and override columns (``seed``, ``style``, ...);
- JSON: a list of ``{"timestamp", "text"}`` objects (or of strings), optionally wrapped as
  ``{"segments": [...]}``;
- SRT and WebVTT subtitles: each cue is a scene, its timestamp the cue's start.

Anything malformed raises ``InvalidRequest`` naming the line, before any job exists.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from studio.errors import InvalidRequest
from studio.validation import MAX_PROMPT_CHARS, parse_size

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
_TEXT_COLUMNS = ("text", "prompt", "scene", "description")
_TIME_COLUMNS = ("timestamp", "time", "start", "timecode")

_LEADING_TIME = re.compile(r"^\[?((?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?)\]?(?:\s*[-–—|:]\s*|\s+)(\S.*)$")
_OPTIONS_START = re.compile(r"(?:^|\s)--[A-Za-z]")
_CUE_TIMING = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)")
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")


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
        raise InvalidRequest(f"unknown script format {kind!r}; choose one of {', '.join(FORMATS)}")
    scenes = parsers[kind](text)
    if not scenes:
        raise InvalidRequest("the script has no scenes")
    return Script(scenes, {"txt": "text", "lines": "text", "paragraphs": "text", "webvtt": "vtt"}.get(kind, kind),
                  name)


def read_script_file(path: str | Path, *, format: str | None = None) -> Script:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"script file not found: {path}")
    return parse_script(path, name=path.name, format=format)


def detect_format(name: str, text: str) -> str:
    suffix = Path(name).suffix.lower().lstrip(".") if name else ""
    by_suffix = {"txt": "text", "md": "text", "text": "text", "csv": "csv", "tsv": "csv", "json": "json",
                 "srt": "srt", "vtt": "vtt"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    head = text.lstrip()
    if head.startswith("WEBVTT"):
        return "vtt"
    if head.startswith(("[", "{")) and _looks_like_json(head):
        return "json"
    first_lines = [line.strip() for line in head.split("\n", 3)[:2]]
    if len(first_lines) == 2 and first_lines[0].isdigit() and "-->" in first_lines[1]:
        return "srt"
    header = first_lines[0].lower() if first_lines else ""
    if any(sep in header for sep in ",;\t"):
        columns = {c.strip().strip('"') for c in re.split(r"[,;\t]", header)}
        if columns & set(_TEXT_COLUMNS) and columns & set(_TIME_COLUMNS):
            return "csv"
    return "text"


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
        raise ValueError(f"timestamp {text!r} is not HH:MM:SS or MM:SS")
    hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise ValueError(f"timestamp {text!r} has minutes or seconds above 59")
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


def _decode(data: bytes) -> str:
    if len(data) > MAX_SCRIPT_BYTES:
        raise InvalidRequest(f"the script is larger than {MAX_SCRIPT_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InvalidRequest(f"line {line}: the script is not UTF-8 text (byte {exc.start})") from None


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
                             + ", ".join(f"--{o}" for o in OVERRIDES if o not in ("negative_prompt", "cfg_scale")))
    target, kind = OVERRIDES[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRequest(f"line {line}: --{name} needs a value")
    if target == "size":
        try:
            return "size", parse_size(str(value))
        except InvalidRequest as exc:
            raise InvalidRequest(f"line {line}: {exc}") from None
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            converted: Any = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
        elif kind is float:
            converted = float(value)
        else:
            converted = str(value).strip()
    except (TypeError, ValueError):
        raise InvalidRequest(f"line {line}: --{name} must be a {'whole ' if kind is int else ''}number, "
                             f"not {value!r}") from None
    return target, converted


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
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if not token.startswith("--"):
            raise InvalidRequest(f"line {line}: expected an option like --seed 5, found {token!r}")
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
        target, converted = _convert_override(key, value, line)
        pairs[target] = converted
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


def _parse_csv(text: str) -> list[Scene]:
    header_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header_line.count) if any(c in header_line for c in ",;\t") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
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
        timestamp = cells[time_col] if time_col is not None else None
        collector.add(line, cells[text_col], timestamp, _finish_overrides(overrides))
    return collector.scenes


# -- JSON --------------------------------------------------------------------------------------


def _looks_like_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return text.startswith("{") or bool(re.match(r"\[\s*[\[{\"]", text))
    return True


def _parse_json(text: str) -> list[Scene]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from None
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
        except json.JSONDecodeError:
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


def _cue_blocks(text: str) -> Iterable[tuple[int, list[str]]]:
    """Blocks of non-blank lines with the number of their first line."""
    block: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            if not block:
                start = number
            block.append(raw.rstrip())
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def _cue_time(value: str, line: int, example: str) -> float:
    try:
        seconds = parse_timestamp(value)
    except ValueError:
        seconds = None
    if seconds is None:
        raise InvalidRequest(f"line {line}: {value!r} is not a cue time like {example}")
    return seconds


def _add_cue(collector: _Collector, block: list[str], timing_at: int, first_line: int, example: str) -> None:
    match = _CUE_TIMING.match(block[timing_at])
    if not match:
        raise InvalidRequest(f"line {first_line + timing_at}: expected a cue timing like "
                             f"{example} --> {example}, found {block[timing_at].strip()!r}")
    line = first_line + timing_at
    start = _cue_time(match.group(1), line, example)
    end = _cue_time(match.group(2), line, example)
    if end < start:
        raise InvalidRequest(f"line {line}: the cue ends before it starts")
    text = " ".join(_MARKUP.sub("", part) for part in block[timing_at + 1:])
    if text.strip():  # an empty cue (a pause) makes no scene
        collector.add(line, text, match.group(1), end=end, start=start)


def _parse_srt(text: str) -> list[Scene]:
    collector = _Collector()
    for first, block in _cue_blocks(text):
        timing_at = 1 if block[0].strip().isdigit() and len(block) > 1 else 0
        _add_cue(collector, block, timing_at, first, "00:00:01,000")
    return collector.scenes


def _parse_vtt(text: str) -> list[Scene]:
    if not text.startswith("WEBVTT"):
        raise InvalidRequest("line 1: a WebVTT file starts with \"WEBVTT\"")
    collector = _Collector()
    for index, (first, block) in enumerate(_cue_blocks(text)):
        if index == 0 or block[0].startswith(("NOTE", "STYLE", "REGION")):
            continue  # the header block, comments and style sheets
        timing_at = 0 if "-->" in block[0] else 1
        if timing_at >= len(block):
            raise InvalidRequest(f"line {first}: a cue needs a timing line like 00:01.000 --> 00:04.000")
        _add_cue(collector, block, timing_at, first, "00:00:01.000")
    return collector.scenes


__all__ = ["Scene", "Script", "parse_script", "read_script_file", "detect_format", "parse_timestamp",
           "format_seconds", "MAX_SCENES", "FORMATS", "OVERRIDES"]

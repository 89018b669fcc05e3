"""Style presets, prompt templates and scene variations, all read from data files.

Built-in styles live in ``studio/data/styles.json``; a user adds or overrides styles in
``$STUDIO_HOME/styles.json`` (same shape). A style is a prompt template with a ``{prompt}``
placeholder plus a negative prompt. Prompt templates are grouped by category and use ``{subject}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.errors import InvalidRequest

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Style:
    name: str
    label: str
    prompt: str
    negative_prompt: str = ""
    aliases: tuple[str, ...] = ()
    source: str = "builtin"

    def apply(self, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
        expanded = self.prompt.replace("{prompt}", prompt.strip())
        negatives = [part for part in (negative_prompt.strip(), self.negative_prompt.strip()) if part]
        return expanded, ", ".join(negatives)


@dataclass(frozen=True)
class PromptTemplate:
    category: str
    name: str
    label: str
    prompt: str
    negative_prompt: str = ""
    style: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def fill(self, subject: str) -> str:
        return self.prompt.replace("{subject}", subject.strip())


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read {what} file {path}: {exc}") from exc


def _style_from_entry(name: str, entry: dict[str, Any], source: str) -> Style:
    template = entry.get("prompt", "")
    if "{prompt}" not in template:
        raise InvalidRequest(f"style {name!r} in {source} has no {{prompt}} placeholder in its prompt")
    return Style(
        name=name,
        label=entry.get("label", name),
        prompt=template,
        negative_prompt=entry.get("negative_prompt", ""),
        aliases=tuple(a.lower() for a in entry.get("aliases", [])),
        source=source,
    )


class StyleBook:
    def __init__(self, home: Path | None = None):
        self._styles: dict[str, Style] = {}
        builtin = _read_json(DATA_DIR / "styles.json", "styles")
        for name, entry in builtin.items():
            self._styles[name] = _style_from_entry(name, entry, "builtin")
        user_file = home / "styles.json" if home else None
        if user_file and user_file.is_file():
            for name, entry in _read_json(user_file, "user styles").items():
                self._styles[name.lower()] = _style_from_entry(name.lower(), entry, str(user_file))
        self._templates = [
            PromptTemplate(category=category, **entry)
            for category, entries in _read_json(DATA_DIR / "templates.json", "templates").items()
            for entry in entries
        ]
        self._scene_variations = _read_json(DATA_DIR / "scene_variations.json", "scene variations")

    def names(self) -> list[str]:
        return list(self._styles)

    def all(self) -> list[Style]:
        return list(self._styles.values())

    def get(self, name: str) -> Style:
        key = name.strip().lower()
        if key in self._styles:
            return self._styles[key]
        for style in self._styles.values():
            if key in style.aliases or key == style.label.lower():
                return style
        raise InvalidRequest(f"unknown style {name!r}; choose one of {', '.join(self._styles)}")

    def expand(self, style: str | None, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
        if not style or style.strip().lower() in ("none", ""):
            return prompt.strip(), negative_prompt.strip()
        return self.get(style).apply(prompt, negative_prompt)

    def templates(self, category: str | None = None) -> list[PromptTemplate]:
        return [t for t in self._templates if category in (None, t.category)]

    def categories(self) -> list[str]:
        return sorted({t.category for t in self._templates})

    def scene_variations(self) -> list[dict[str, str]]:
        return list(self._scene_variations)

"""The studio's own content filter: prompts are checked against a list of blocked terms before any
provider is called (providers moderate too; this is the operator's policy, in data).

Terms come from ``studio/data/blocked_terms.txt`` and ``$STUDIO_HOME/blocked_terms.txt``: one word or
phrase per line, ``#`` for comments, matched as whole words regardless of case.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.errors import ContentBlocked

BUILTIN = Path(__file__).parent / "data" / "blocked_terms.txt"


def _read_terms(path: Path) -> list[str]:
    if not path.is_file():
        return []
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip().lower()
        if text:
            terms.append(text)
    return terms


class ContentFilter:
    def __init__(self, home: Path | None = None):
        terms = _read_terms(BUILTIN) + (_read_terms(home / "blocked_terms.txt") if home else [])
        self.terms = sorted(set(terms))
        self._pattern = (re.compile(r"\b(" + "|".join(re.escape(t) for t in self.terms) + r")\b", re.IGNORECASE)
                         if self.terms else None)

    def check(self, prompt: str) -> None:
        """Raise ContentBlocked when ``prompt`` contains a blocked term."""
        if self._pattern is None:
            return
        match = self._pattern.search(prompt)
        if match:
            raise ContentBlocked(f"the prompt contains {match.group(0).lower()!r}, which this studio's content "
                                 "filter blocks; rephrase it", provider="studio")

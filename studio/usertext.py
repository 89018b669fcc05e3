"""User text made literal for front ends that render Markdown or HTML.

Prompts, negative prompts, tags, categories, board names, notes, file names, model ids typed by a
user and error messages that echo input are shown by Streamlit (``st.markdown``, ``st.caption``,
``st.info``, toasts, tooltips) and Gradio (``gr.Markdown``, ``gr.Info``) as markup. A prompt such as
``![x](http://host/x.png)`` would then load a remote image in every viewer's browser, and
``**bold**`` or ``:red[...]`` would change how it reads. Front ends pass such text through
``markdown_literal`` (Markdown bodies) or ``html_literal`` (messages rendered as HTML), or show it
with a text-only element (``st.text``, a ``gr.Textbox``).
"""

from __future__ import annotations

import html
import re
from typing import Any

# CommonMark lets any ASCII punctuation mark be backslash-escaped and then shows it as itself. All
# of them are escaped, not a chosen few: Streamlit adds directives (``:red[..]``, ``:material/x:``),
# LaTeX (``$..$``) and GFM autolinks on top of CommonMark, and each starts with punctuation.
_ASCII_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
# GitHub-flavoured Markdown (Streamlit's renderer; Gradio's too) also turns bare web addresses into
# links *after* escapes are read, on the text itself: "http://", "https://", "www." and e-mail
# addresses. A WORD JOINER (U+2060: invisible, zero-width) after the scheme, after "www" and after
# "@" breaks each of those patterns while the reader sees the same characters.
_WORD_JOINER = "\u2060"
_AUTOLINK_STARTS = re.compile(r"(?i)(\b(?:https?|ftp|mailto|xmpp)(?=:)|\bwww(?=\.)|@)")


def markdown_literal(text: Any) -> str:
    """Markdown source that renders as exactly ``str(text)`` (``None``: empty): every ASCII
    punctuation mark is backslash-escaped, and each line break is a hard break (so lines stay
    lines). Leading spaces and tabs are kept as non-breaking spaces, so an indented line never
    becomes a code block. Web and e-mail addresses carry an invisible word joiner (U+2060) so no
    renderer turns them into links."""
    lines = []
    for line in ("" if text is None else str(text)).replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.lstrip(" \t")
        indent = "\u00a0" * (len(line) - len(stripped))
        unlinked = _AUTOLINK_STARTS.sub(lambda match: match.group(0) + _WORD_JOINER, stripped)
        lines.append(indent + _ASCII_PUNCTUATION.sub(lambda match: "\\" + match.group(0), unlinked))
    return "  \n".join(lines)


def html_literal(text: Any) -> str:
    """``str(text)`` (``None``: empty) with ``&``, ``<``, ``>`` and quotes as HTML entities: shown as
    written, never a tag."""
    return html.escape("" if text is None else str(text), quote=True)


__all__ = ["html_literal", "markdown_literal"]

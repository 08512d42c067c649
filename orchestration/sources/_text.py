"""Small helpers the HTTP sources share to turn API fields into plain snippets."""

from __future__ import annotations

import html
import re

SNIPPET_CHARS = 300
_TAG = re.compile(r"<[^>]+>")


def plain(value: object) -> str:
    """Text without HTML tags or entities, whitespace folded."""
    return " ".join(html.unescape(_TAG.sub("", str(value or ""))).split())


def clip(text: str, size: int = SNIPPET_CHARS) -> str:
    return text if len(text) <= size else text[:size].rsplit(" ", 1)[0] + " …"

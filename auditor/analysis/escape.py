"""Escaping of captured text for every place it is shown: HTML, CSV and Markdown.

Everything that came from the network is hostile: markup in host names, formulas in headers,
bidi overrides that reorder what a reader sees, control characters. These functions are the
only way captured text reaches a report.
"""

from __future__ import annotations

import html
import re
from typing import Any

# C0/C1 controls except tab and newline, DEL, and the Unicode bidi controls and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~:@])")
# GFM's extended autolinks make a live link of a bare "www." domain, a URL or an e-mail
# address; an escaped ':', '@' or '.' breaks them (the escape renders as the plain character).
_MD_WWW = re.compile(r"(?i)\b(www)\.")


def visible(text: Any, limit: int | None = None) -> str:
    """Text with every unsafe character shown as a ``\\uXXXX`` escape, cut at ``limit``."""
    s = "" if text is None else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "…"
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", s)


def html_text(text: Any, limit: int | None = None) -> str:
    """For HTML element content and quoted attribute values."""
    return html.escape(visible(text, limit), quote=True)


def safe_url_href(url: Any) -> str | None:
    """A captured URL is never made a live link: ``javascript:`` and friends are refused, and
    http(s) URLs are only shown as text by the report. Kept for completeness of the API."""
    s = visible(url)
    if re.match(r"(?i)^\s*https?://", s):
        return html.escape(s, quote=True)
    return None


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    s = visible(value)
    if s.startswith(_FORMULA_START):
        return "'" + s
    return s


def md_text(text: Any, limit: int | None = None) -> str:
    """Markdown-inert text: no emphasis, links (autolinks included), HTML or table breaks;
    one line."""
    s = visible(text, limit).replace("\n", " ").replace("\r", " ")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_WWW.sub(r"\1\\.", _MD_SPECIAL.sub(r"\\\1", s))

"""Escaping of captured text for every place it is shown: HTML, CSV and Markdown.

Everything that came from the network is hostile: markup in host names, formulas in headers,
bidi overrides that reorder what a reader sees, control characters that steer a terminal,
invisible characters that make two names look the same. These functions are the only way
captured text reaches a report or a terminal.
"""

from __future__ import annotations

import html
import re
from typing import Any

# What is never shown as itself, by Unicode property (UCD 15, DerivedCoreProperties.txt and
# UnicodeData.txt):
# - Cc, controls: C0 but tab and newline, DEL, C1. A terminal obeys them (ESC, CSI, BS, CR).
# - Cf, format characters: bidi controls and isolates, which reorder what a reader sees,
#   zero-width space/joiners, word joiner, BOM, soft hyphen, Arabic letter mark, Mongolian
#   vowel separator, tag characters, invisible operators, interlinear annotation marks.
# - Zl, Zp: U+2028 and U+2029, line breaks to editors and browsers but not to terminals.
# - Cs: lone surrogates, as file names decoded with surrogateescape hold them.
# - the rest of Default_Ignorable_Code_Point, invisible though not Cf: combining grapheme
#   joiner, Hangul fillers, Khmer inherent vowels, Mongolian and other variation selectors.
INVISIBLE = (  # a regex character class body; the redaction decoder drops these too
    "\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5"
    "\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ud800-\udfff\ufe00-\ufe0f"
    "\ufeff\uffa0\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{INVISIBLE}]")
# the same and newline and tab, for a value that must stay on one line
_UNSAFE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{INVISIBLE}]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~:@])")
# GFM's extended autolinks make a live link of a bare "www." domain, a URL or an e-mail
# address; an escaped ':', '@' or '.' breaks them (the escape renders as the plain character).
_MD_WWW = re.compile(r"(?i)\b(www)\.")


def _escape(m: re.Match[str]) -> str:
    n = ord(m.group())
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def visible(text: Any, limit: int | None = None, *, one_line: bool = False) -> str:
    """Text with every control, format or invisible character shown as a ``\\uXXXX`` escape
    (``\\UXXXXXXXX`` past the BMP), cut at ``limit``. Newlines and tabs are kept unless
    ``one_line``: a value quoted in a line of output must not start a line of its own."""
    s = "" if text is None else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "…"
    return (_UNSAFE_LINE if one_line else _UNSAFE).sub(_escape, s)


def json_visible(doc: str) -> str:
    """A JSON document (as ``json.dumps`` writes it) with the characters :func:`visible`
    escapes written as JSON ``\\u`` escapes: the same document to a parser, inert on a
    terminal. ``json.dumps`` escapes C0 controls itself, not DEL, C1 or the invisible ones."""

    def esc(m: re.Match[str]) -> str:
        n = ord(m.group())
        if n < 0x10000:
            return f"\\u{n:04x}"
        n -= 0x10000
        return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"

    return _UNSAFE.sub(esc, doc)


def html_text(text: Any, limit: int | None = None) -> str:
    """For HTML element content and quoted attribute values."""
    return html.escape(visible(text, limit), quote=True)


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

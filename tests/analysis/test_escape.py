import re

import pytest

from auditor.analysis.escape import csv_cell, html_text, md_text, safe_url_href, visible

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    '=HYPERLINK("http://evil")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3",
    "\tTAB",
    "\rCR",
    "evil\u202egnp.exe",
    "nul\x00byte\x1b[31m",
    "| table | break |",
    "[link](http://x) **bold** `code`",
]


@pytest.mark.parametrize("s", HOSTILE)
def test_html_has_no_markup(s: str) -> None:
    out = html_text(s)
    assert "<" not in out and ">" not in out and '"' not in out
    assert "\u202e" not in out and "\x00" not in out and "\x1b" not in out


@pytest.mark.parametrize("s", HOSTILE)
def test_csv_never_starts_a_formula(s: str) -> None:
    out = csv_cell(s)
    assert not out.startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.parametrize("s", HOSTILE)
def test_markdown_is_inert(s: str) -> None:
    out = md_text(s)
    assert "<" not in out and ">" not in out
    for ch in "[]`|*":
        assert all(out[i - 1] == "\\" for i, c in enumerate(out) if c == ch), (ch, out)
    assert "\n" not in out and "\u202e" not in out


def test_visible_and_limits() -> None:
    assert visible("a\u202eb") == "a\\u202eb"
    assert visible("x" * 10, 4) == "xxxx…"
    assert csv_cell(5) == 5 and csv_cell(None) is None
    assert safe_url_href("javascript:alert(1)") is None
    assert safe_url_href("https://a.example/?q=<x>") == "https://a.example/?q=&lt;x&gt;"


@pytest.mark.parametrize(
    "s",
    [
        "see http://evil.example/x",
        "HTTPS://evil.example",
        "ftp://evil.example/x",
        "www.evil.example/path",
        "WWW.evil.example",
        "mail me@evil.example",
        "mailto:me@evil.example",
        "xmpp:me@evil.example",
    ],
)
def test_markdown_breaks_gfm_autolinks(s: str) -> None:
    # GFM links bare URLs, www. domains and e-mail addresses; a backslash before ':', '@' and
    # the dot of www. breaks each (and renders as the plain character).
    out = md_text(s)
    assert not re.search(r"[^\\][:@]", out) and not re.search(r"(?i)www\.", out)
    assert re.sub(r"\\(.)", r"\1", out) == s

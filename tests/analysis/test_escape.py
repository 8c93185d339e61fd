import itertools
import json
import re
import unicodedata

import pytest

from auditor.analysis.escape import (
    csv_cell,
    html_text,
    json_visible,
    md_text,
    visible,
)

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


# Default_Ignorable_Code_Point, as Unicode 15.0 publishes it (DerivedCoreProperties-15.0.0.txt,
# https://www.unicode.org/Public/15.0.0/ucd/DerivedCoreProperties.txt): characters a renderer
# shows as nothing. Controls and format characters come from Python's unicodedata below.
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
]  # fmt: skip


def _never_shown() -> list[str]:
    """Every character that must not reach a reader as itself: controls but tab and newline,
    format characters, line/paragraph separators, lone surrogates, default-ignorables."""
    out = {chr(a) for lo, hi in DEFAULT_IGNORABLE for a in range(lo, hi + 1)}
    # planes 2-13, 15 and 16 hold ideographs, private use and unassigned code points alone
    for n in itertools.chain(range(0x20000), range(0xE0000, 0xF0000)):
        c = chr(n)
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") and c not in "\t\n":
            out.add(c)
    return sorted(out)


NEVER_SHOWN = _never_shown()


def test_every_control_format_and_invisible_character_is_escaped() -> None:
    assert len(NEVER_SHOWN) > 6000  # the tag and variation-selector planes included
    for c in NEVER_SHOWN:
        out = visible(f"a{c}b")
        assert c not in out and out.isascii(), hex(ord(c))
        # the escape names the code point: \uXXXX, or \UXXXXXXXX past the BMP
        n = ord(c)
        assert out == (f"a\\u{n:04x}b" if n < 0x10000 else f"a\\U{n:08x}b"), hex(n)


@pytest.mark.parametrize(
    "name",
    [
        "tracking.miui\u200b.com",  # zero-width space: looks like tracking.miui.com
        "api\u200c.xiaomi.com",
        "api\u200d.xiaomi.com",
        "api\u2060.xiaomi.com",  # word joiner
        "\ufeffapi.xiaomi.com",  # BOM
        "api.\u061cxiaomi.com",  # Arabic letter mark (a bidi control)
        "api.xia\u00adomi.com",  # soft hyphen
        "api.xiaomi\u180e.com",  # Mongolian vowel separator
        "api.xiaomi.com\u2028OK",  # line separator
        "api.xiaomi.com\u2029OK",
        "api.xiaomi.com\U000e0041\U000e0042",  # tag characters (hidden ASCII)
        "api.xiaomi.com\ufe0f",  # variation selector
        "\u3164api.xiaomi.com",  # Hangul filler: shows as blank
    ],
)
def test_lookalike_names_show_their_invisible_characters(name: str) -> None:
    out = visible(name)
    assert out.isascii() and ("\\u" in out or "\\U" in out)
    assert out != name and not any(c in out for c in NEVER_SHOWN)


def test_ordinary_text_is_left_alone() -> None:
    for s in (
        "api.xiaomi.com",
        "хiaomi.com",
        "Zoë Müller",
        "百度",
        "مرحبا",
        "שלום",
        "🙂",
        "a\tb\nc",
    ):
        assert visible(s) == s


def test_one_line_escapes_newline_and_tab_too() -> None:
    assert visible("a\nb\tc") == "a\nb\tc"
    assert visible("a\nb\tc", one_line=True) == "a\\u000ab\\u0009c"
    assert visible("x\r\nOK", 3, one_line=True) == "x\\u000d\\u000a…"


def test_escapes_read_back_to_the_text() -> None:
    # what is shown names each character exactly: Python's own decoder gives the text back
    s = "".join(NEVER_SHOWN[::7]) + "plain"
    assert visible(s).encode().decode("unicode_escape") == s


def test_json_visible_is_the_same_document_and_inert() -> None:
    doc = {"operator": "J\x1b[2K\x9b1A\u202e\u200b\U000e0041\x7f\udcff", "n": 1, "é": "ü"}
    text = json_visible(json.dumps(doc, ensure_ascii=False, indent=2))
    assert json.loads(text) == doc
    assert "é" in text and "ü" in text  # other non-ASCII stays readable
    assert not any(c in text for c in NEVER_SHOWN)
    assert "\\ud83c\\udc41" not in text and "\\udb40\\udc41" in text  # a surrogate pair

"""Hosts files (``parse_hosts``) and the intel format sniffer: random text, and mutated real
blocklists. Only IntelImportError may escape; what is imported can be indexed and written.

Host names themselves (``normalise_host``, ``inspect_host``, the knowledge base's lookup):
random Unicode and names built from the characters lookalikes are made of. Nothing raises; a
key is a canonical ASCII name that is its own key; invisible characters never fold into the
plain name; a label mixing Latin and Cyrillic or Greek letters is always marked; a marked
name's shown form reads back as its key."""

from __future__ import annotations

import unicodedata
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

from auditor.intel.formats.hosts import parse_hosts
from auditor.intel.index import detect_format
from auditor.intel.kb import KnowledgeBase, _ip_literal
from auditor.intel.lookalike import HOSTLABEL_RE, MARKER, inspect_host, key_of_shown
from auditor.intel.schema import IntelFormat, normalise_host
from tests.fuzz.helpers import fuzz, mutated_text, parse_intel_checked, sample_paths

PATH = Path("/fuzz/blocklist.hosts")


@cache
def _seeds() -> list[str]:
    return [p.read_text() for p in sample_paths("intel/samples/*.hosts")] + [
        "0.0.0.0 a.example b.example\n::1 ip6-localhost\n",
        "127.0.0.1 localhost\n# comment\n\n0.0.0.0 xn--bcher-kva.example. # c\n",
    ]


def _parse(text: str) -> None:
    fmt = detect_format(PATH, text)
    assert isinstance(fmt, IntelFormat)
    detect_format(Path("/fuzz/x"), text)
    parse_intel_checked(parse_hosts, text, PATH)


@fuzz(st.text(max_size=1000), share=0.2)
def test_random_text(text: str) -> None:
    _parse(text)


_lines = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(
                [
                    "0.0.0.0",
                    "127.0.0.1",
                    "::1",
                    "::",
                    "0",
                    "1.2.3.4/8",
                    "::ffff:1.2.3.4",
                    "fe80::1%eth0",
                    "256.0.0.1",
                ]
            ),
            st.text(max_size=16),
        ),
        st.lists(
            st.one_of(
                st.text(max_size=30),
                st.sampled_from(
                    [
                        "localhost",
                        "xn--",
                        "xn--zz",
                        "a..b",
                        "é.example",
                        "a" * 64 + ".example",
                        ("a" * 63 + ".") * 5,
                        "-a.example",
                        "a_b.example",
                        "*.example",
                        "a.example:80",
                        "a.example:x",
                        "[::1]",
                        "ﬁ.example",
                        "\u200d.example",
                        "ß.de",
                    ]
                ),
            ),
            max_size=4,
        ),
        st.sampled_from(["", " # c", "#", "\t#\t"]),
    ).map(lambda t: f"{t[0]} {' '.join(t[1])}{t[2]}"),
    max_size=20,
).map("\n".join)


@fuzz(_lines, share=0.2)
def test_generated_lines(text: str) -> None:
    _parse(text)


@fuzz(st.deferred(lambda: mutated_text(_seeds())), share=0.2)
def test_mutated_real_blocklists(text: str) -> None:
    _parse(text)


# --- host names ------------------------------------------------------------------------------

# what lookalikes are made of: format and default-ignorable characters, Cyrillic and Greek
# doubles, width forms and other dots, compatibility letters, combining marks, CJK
_TRICKY = (
    "\u200b\u200c\u200d\u2060\ufeff\u061c\u00ad\u034f\ufe0f\U000e0100\u180b\u115f\u202e"
    "\u0430\u0435\u043e\u0440\u0441\u0445\u0443\u0456\u04cf\u03b1\u03bf\u03c1\u03bd"
    "\u3002\uff0e\uff61\uff41\uff38\ufb01\U0001d431\u24e7\u00b9\u0301\u0b43"
    "\u4e2d\u3042\u30a2\ud55c\u00e9\u00df\u0645"
)
_label = st.text(
    st.one_of(
        st.sampled_from("abcdefghijklmnopqrstuvwxyzXIAOM0123456789-_"),
        st.sampled_from(_TRICKY),
        st.characters(),
    ),
    min_size=0,
    max_size=12,
)
_names = st.one_of(
    st.lists(_label, min_size=1, max_size=5).map(".".join),
    st.lists(_label, min_size=1, max_size=4).map(lambda ls: ".".join([*ls, "com"])),
    st.text(max_size=80),
    st.sampled_from(
        ["xn--iaomi-pze.com", "xn--zz.com", "xn--.com", "xn--tracking-miui.com", "a..b", "."]
    ).map(lambda x: x + "."),
)


def _invisible(c: str) -> bool:
    return unicodedata.category(c) == "Cf" or c in "\u034f\ufe0f\U000e0100\u180b\u115f"


@cache
def _kb() -> KnowledgeBase:
    return KnowledgeBase.load(datasets=False)


@fuzz(_names, share=0.4)
def test_host_names(raw: str) -> None:
    key = normalise_host(raw)
    name = inspect_host(raw)
    assert (key is None) == (name is None)
    if name is None:
        return
    assert key == name.key
    # a key is a canonical ASCII name, and its own key
    assert key.isascii() and key == key.lower() and len(key) <= 253
    assert all(HOSTLABEL_RE.match(x) for x in key.split("."))
    assert normalise_host(key) == key
    # invisible characters never fold into the plain name
    plain = "".join(c for c in raw if not _invisible(c))
    if plain != raw:
        assert key != normalise_host(plain), (raw, plain)
    # a label with both Latin and Cyrillic or Greek letters is marked
    for label in raw.lower().split("."):
        scripts = {unicodedata.name(c, "").split(" ")[0] for c in label if c.isalpha()}
        if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
            assert name.suspicious, raw
    if name.suspicious:
        assert name.shown.startswith(f"{MARKER} {key} (")
        assert key_of_shown(name.shown) == key
        again = inspect_host(key)
        assert again is not None and again.shown == name.shown
    else:
        assert name.shown == key
    # the knowledge base answers the name and its shown form alike (an address is looked up
    # as an address)
    if _ip_literal(raw) is not None:
        return
    kb = _kb()
    a = kb.lookup_host(raw)
    b = kb.lookup_host(name.shown)
    assert a.host == b.host == key
    assert a.organisation == b.organisation

"""Hosts files (``parse_hosts``) and the intel format sniffer: random text, and mutated real
blocklists. Only IntelImportError may escape; what is imported can be indexed and written."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hypothesis import strategies as st

from auditor.intel.formats.hosts import parse_hosts
from auditor.intel.index import detect_format
from auditor.intel.schema import IntelFormat
from tests.fuzz import fuzz, mutated_text, parse_intel_checked, sample_paths

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


@fuzz(st.text(max_size=1000), share=0.3)
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


@fuzz(_lines, share=0.35)
def test_generated_lines(text: str) -> None:
    _parse(text)


@fuzz(st.deferred(lambda: mutated_text(_seeds())), share=0.35)
def test_mutated_real_blocklists(text: str) -> None:
    _parse(text)

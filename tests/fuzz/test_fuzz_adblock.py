"""Adblock lists (``parse_adblock``): random text, generated rules and mutated real filter
lists. Only IntelImportError may escape; what is imported can be indexed and written."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hypothesis import example
from hypothesis import strategies as st

from auditor.intel.formats.adblock import parse_adblock
from tests.fuzz.helpers import fuzz, mutated_text, parse_intel_checked, sample_paths

PATH = Path("/fuzz/filters.txt")


@cache
def _seeds() -> list[str]:
    return [p.read_text() for p in sample_paths("intel/samples/filters.txt")]


def _parse(text: str) -> None:
    parse_intel_checked(parse_adblock, text, PATH)


@fuzz(st.text(max_size=1000), share=0.3)
def test_random_text(text: str) -> None:
    _parse(text)


_rules = st.lists(
    st.builds(
        "{}{}{}{}".format,
        st.sampled_from(["||", "@@||", "|", "", "!", "[", "##"]),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(
                [
                    "a.example",
                    "é.example",
                    "xn--",
                    "a..b",
                    "a.example:443",
                    "*.a.example",
                    "a" * 300,
                    "[::1]",
                    "1.2.3.4",
                ]
            ),
        ),
        st.sampled_from(["^", "", "^|", "/", "^$third-party", "^$domain=x|y", "$", "]"]),
        st.sampled_from(["", " ", "\t", "##.ad"]),
    ),
    max_size=20,
).map("\n".join)


@fuzz(_rules, share=0.35)
def test_generated_rules(text: str) -> None:
    _parse(text)


@example("||a.example^$\ud800x\n")  # the options note kept the surrogate: not UTF-8
@fuzz(st.deferred(lambda: mutated_text(_seeds())), share=0.35)
def test_mutated_real_filter_lists(text: str) -> None:
    _parse(text)

"""auditor's own intel YAML (``parse_intel_yaml``, as ``KnowledgeBase.load(extra=...)`` reads
it): random text, mutated real files (as text and as data), and YAML alias bombs. Only
IntelImportError may escape, in bounded time; what is imported can be indexed and written."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example
from hypothesis import strategies as st

from auditor.intel.formats.yaml import parse_intel_yaml
from auditor.intel.kb import KnowledgeBase
from auditor.intel.model import IntelImportError, Source
from tests.fuzz.helpers import (
    assert_intel_usable,
    fuzz,
    intel_source,
    mutated_json,
    mutated_text,
    plain_data,
    sample_paths,
)

PATH = Path("/fuzz/lab.intel.yaml")
YAML_KEYS = (
    "version",
    "label",
    "source",
    "sources",
    "organisations",
    "entries",
    "host",
    "domain",
    "ip",
    "network",
    "organisation",
    "categories",
    "name",
    "note",
    "id",
    "country",
    "state_linked",
    "state_link",
    "jurisdiction",
    "assessments",
    "manufacturers",
    "parent",
    "statement",
    "as_of",
    "title",
    "publisher",
    "year",
    "url",
    "accessed",
)


@cache
def _texts() -> list[str]:
    return [p.read_text() for p in sample_paths("intel/samples/*.yaml")]


@cache
def _docs() -> list[Any]:
    return [plain_data(yaml.safe_load(t)) for t in _texts()]


@cache
def _kb_sources() -> dict[str, Source]:
    return KnowledgeBase.default().sources


def _parse(text: str) -> None:
    try:
        result = parse_intel_yaml(
            text, path=PATH, label="fuzz", source=intel_source(), sources=_kb_sources()
        )
    except IntelImportError as exc:
        assert str(exc).startswith(str(PATH))
        return
    assert_intel_usable(result)


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, UnicodeError):  # what PyYAML cannot write, no file holds
        return ""


@fuzz(st.text(max_size=600), share=0.1)
def test_random_text(text: str) -> None:
    _parse(text)


@example("\ud800version: 1\n")  # libyaml's UnicodeEncodeError escaped load_yaml
@example("version: 1\nsources: [a]\nentries: []\n")  # AttributeError: no .items()
@example("version: 1\norganisations: 5\nentries: []\n")  # TypeError: not iterable
@fuzz(st.deferred(lambda: mutated_text(_texts())), share=0.3)
def test_mutated_real_files_as_text(text: str) -> None:
    _parse(text)


@fuzz(st.deferred(lambda: mutated_json(_docs(), keys=YAML_KEYS)), share=0.57)
def test_hostile_values_in_real_files(doc: Any) -> None:
    _parse(_dump(doc))


def _bomb(depth: int, width: int, where: str, recursive: bool = False) -> str:
    """A "billion laughs": each anchor a list of ``width`` aliases of the one before (the
    first holding itself, when ``recursive``)."""
    lines = ["a0: &a0 [*a0]" if recursive else "a0: &a0 [lol]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    top = f"*a{depth}"
    body = {
        "categories": f"entries: [{{host: x.example, categories: {top}}}]",
        "name": f"entries: [{{host: x.example, name: {top}}}]",
        "host": f"entries: [{{host: {top}}}]",
        "ip": f"entries: [{{ip: {top}}}]",
        "network": f"entries: [{{network: {top}}}]",
        "organisation": f"entries: [{{host: x.example, organisation: {top}}}]",
        "entries": f"entries: {top}",
        "organisations": f"organisations: {top}\nentries: []",
        "org-categories": f"organisations: [{{id: o, name: n, country: FR, state_linked: false,"
        f" categories: {top}}}]\nentries: []",
        "sources": f"sources: {{s: {top}}}\nentries: []",
        "version": f"version: {top}\nentries: []",
        "as_of": f"organisations: [{{id: o, name: n, country: FR, state_linked: false, "
        f"categories: [advertising], assessments: [{{statement: s, as_of: {top}}}]}}]"
        "\nentries: []",
    }[where]
    # the anchors live under an allowed key, so that parsing gets as far as ``where``
    return "version: 1\nlabel: {" + ", ".join(lines) + "}\n" + body


_WHERE = (
    "categories",
    "name",
    "host",
    "ip",
    "network",
    "organisation",
    "entries",
    "organisations",
    "org-categories",
    "sources",
    "version",
    "as_of",
)


# str() of the categories took exponential time (InputTooSlow) before aliases were bounded.
# The space is finite (13 x 12 x 12 x 2 = 3,744 inputs): its share asks for no more than that,
# or hypothesis stops early and the parser's total falls short of the examples asked for.
@example(9, 9, "categories", False)
@fuzz(st.integers(0, 12), st.integers(1, 12), st.sampled_from(_WHERE), st.booleans(), share=0.03)
def test_alias_bombs(depth: int, width: int, where: str, recursive: bool) -> None:
    _parse(_bomb(depth, width, where, recursive))

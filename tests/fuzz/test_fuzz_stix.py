"""STIX 2.1 bundles (``parse_stix``): random bytes, mutated real bundles (values replaced by
hostile ones of the same type, objects dropped and repeated) and indicators whose patterns
are mutated. Only IntelImportError may escape; what is imported can be indexed and written."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import example
from hypothesis import strategies as st

from auditor.intel.formats.stix import parse_stix
from auditor.intel.model import IntelImportError
from tests.fuzz.helpers import (
    assert_intel_usable,
    fuzz,
    intel_source,
    json_bytes,
    mutated,
    mutated_json,
    mutated_text,
    sample_paths,
)

PATH = Path("/fuzz/indicators.stix.json")
STIX_KEYS = (
    "type",
    "id",
    "spec_version",
    "created",
    "modified",
    "name",
    "pattern",
    "pattern_type",
    "pattern_version",
    "valid_from",
    "labels",
    "indicator_types",
    "created_by_ref",
    "value",
    "objects",
    "identity_class",
    "resolves_to_refs",
)


@cache
def _bundles() -> list[Any]:
    return [json.loads(p.read_text()) for p in sample_paths("intel/samples/*.stix.json")]


@cache
def _texts() -> list[bytes]:
    return [p.read_bytes() for p in sample_paths("intel/samples/*.stix.json")]


@cache
def _patterns() -> list[str]:
    found = [
        o["pattern"]
        for b in _bundles()
        for o in b.get("objects", [])
        if isinstance(o, dict) and "pattern" in o
    ]
    return [
        *found,
        "[url:value = 'http://a.example/' OR ipv6-addr:value IN ('::1', '2001:db8::/32')]",
        "([domain-name:value = 'a.example'] AND [file:hashes.MD5 = 'x']) REPEATS 5 TIMES",
        "[domain-name:value LIKE '%.example'] WITHIN 10 SECONDS",
        "[ipv4-addr:value ISSUBSET '10.0.0.0/8'] FOLLOWEDBY [x-custom:value NOT = 'y']",
    ]


def _parse(text: str) -> None:
    try:
        result = parse_stix(text, path=PATH, label="fuzz", source=intel_source())
    except IntelImportError as exc:
        assert str(exc).startswith(str(PATH))
        return
    assert_intel_usable(result)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass") if _utf8ish(data) else data.decode("latin-1")


def _utf8ish(data: bytes) -> bool:
    try:
        data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


@fuzz(st.text(max_size=600), share=0.1)
def test_random_text(text: str) -> None:
    _parse(text)


@fuzz(st.deferred(lambda: mutated(_texts(), max_ops=4)), share=0.15)
def test_mutated_real_bundles_bytes(data: bytes) -> None:
    _parse(_text(data))


def _named(name: str) -> Any:
    doc = json.loads(json.dumps(_bundles()[0]))
    next(o for o in doc["objects"] if o["type"] == "indicator")["name"] = name
    return doc


@example(_named("\ud800"))  # a lone surrogate reached the entries, which are written as UTF-8
@fuzz(st.deferred(lambda: mutated_json(_bundles(), keys=STIX_KEYS)), share=0.4)
def test_hostile_fields_in_real_bundles(doc: Any) -> None:
    _parse(json_bytes(doc).decode("utf-8", "surrogatepass"))


def _indicator(pattern: str, otype: str) -> dict[str, Any]:
    return {
        "type": otype,
        "spec_version": "2.1",
        "id": "indicator--1f2e3d4c-5b6a-4789-8a0b-c1d2e3f4a5b6",
        "created": "2024-03-01T09:00:00.000Z",
        "modified": "2024-03-01T09:00:00.000Z",
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2024-03-01T09:00:00Z",
        "value": pattern,
    }


@example([("", "indicator")])  # stix2-patterns raised UnboundLocalError on an empty pattern
@fuzz(
    st.lists(
        st.tuples(
            st.one_of(st.deferred(lambda: mutated_text(_patterns(), max_ops=4)), st.text()),
            st.sampled_from(["indicator", "domain-name", "url", "ipv4-addr", "ipv6-addr"]),
        ),
        min_size=1,
        max_size=3,
    ),
    share=0.35,
)
def test_mutated_patterns_and_observables(items: list[tuple[str, str]]) -> None:
    bundle = {
        "type": "bundle",
        "id": "bundle--6e7f8a9b-0c1d-4e2f-9a3b-5c6d7e8f9a01",
        "objects": [_indicator(p, t) for p, t in items],
    }
    _parse(json_bytes(bundle).decode("utf-8", "surrogatepass"))

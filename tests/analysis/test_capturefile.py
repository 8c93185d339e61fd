"""A capture's account (auditor.analysis.packetflows.CaptureFile) and the packet flow cache
entry that holds it (CapturePart): what is written to the cache reads back the same, every
field of it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pandas as pd
import pytest

from auditor.analysis.packetflows import CaptureFile, CapturePart

# every field away from its default, so that a field the cache forgets is seen
FULL = CaptureFile(
    rel="packets/capture-1.pcapng",
    packets=123_456,
    flows=789,
    paths={"proxy": 700, "bypass": 80, "direct": 9},
    dns_rows=321,
    warnings={"truncated": 2, "bad_checksum": 1},
    error="packets/capture-1.pcapng: cut short at byte 9000",
)


def _through_json(d: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps: the entry's facts as JSON text."""
    out = json.loads(json.dumps(d))
    assert isinstance(out, dict)
    return out


def test_every_field_differs_from_its_default() -> None:
    empty = CaptureFile(FULL.rel)
    for f in dataclasses.fields(CaptureFile):
        if f.name != "rel":
            assert getattr(FULL, f.name) != getattr(empty, f.name), f.name


@pytest.mark.parametrize("acct", [FULL, CaptureFile("packets/unread.pcap")])
def test_from_dict_reads_back_what_to_dict_wrote(acct: CaptureFile) -> None:
    back = CaptureFile.from_dict(_through_json(acct.to_dict()))
    assert back == acct
    for f in dataclasses.fields(CaptureFile):
        assert type(getattr(back, f.name)) is type(getattr(acct, f.name)), f.name


def test_a_cache_entry_gives_back_its_part() -> None:
    part = CapturePart(
        dataclasses.replace(FULL, error=None),
        warnings=["packets/capture-1.pcapng: 3 packet warning(s): bad_checksum 1, truncated 2"],
        names={"example.com": ("192.0.2.1", "2001:db8::1")},
        lookups=[{"name": "example.com", "answers": ["192.0.2.1"]}],
        cnames={"www.example.com": "example.com"},
        frame=pd.DataFrame({"a": [1]}),
    )
    back = CapturePart.from_cache(part.frame, _through_json(part.facts()))
    assert back is not None
    assert (back.acct, back.warnings, back.names, back.lookups, back.cnames) == (
        part.acct,
        part.warnings,
        part.names,
        part.lookups,
        part.cnames,
    )
    assert back.frame is part.frame


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"acct": {**FULL.to_dict(), "packets": "many"}},
        {"acct": {k: v for k, v in FULL.to_dict().items() if k != "paths"}},
        {"acct": {**FULL.to_dict(), "paths": ["proxy"]}},
    ],
)
def test_an_entry_that_is_not_one_gives_nothing(broken: dict[str, Any]) -> None:
    facts = {"warnings": [], "names": {}, "lookups": [], "cnames": {}, **broken}
    assert CapturePart.from_cache(None, facts) is None

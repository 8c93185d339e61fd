"""User intel: STIX 2.1 bundles, hosts files, adblock lists and auditor's own YAML format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import stix2
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.intel.index import load_intel, parse_intel_spec
from auditor.intel.kb import KnowledgeBase
from auditor.intel.model import IntelImportError, KnowledgeBaseError, MatchedBy
from auditor.intel.schema import IndicatorKind, IntelFormat, normalise_host

SAMPLES = Path(__file__).with_name("samples")
STIX = SAMPLES / "indicators.stix.json"
HOSTS = SAMPLES / "blocklist.hosts"
ADBLOCK = SAMPLES / "filters.txt"
YAML = SAMPLES / "lab.intel.yaml"


def _by_value(entries):  # type: ignore[no-untyped-def]
    return {e.value: e for e in entries}


# --- STIX 2.1 -------------------------------------------------------------------------------


def test_stix_sample_bundle() -> None:
    f = load_intel(f"cert={STIX}")
    assert (f.label, f.format) == ("cert", IntelFormat.STIX)
    got = _by_value(f.entries)
    assert {k: str(e.kind) for k, e in got.items()} == {
        "collector.telemetry.example": "domain",
        "beacon.example.net": "host",
        "198.51.100.23": "ip",
        "2001:db8:1::5": "ip",
        "2001:db8:2::/64": "network",
        "globalapi.ad.xiaomi.com": "domain",
        "sdk.tracker.example": "domain",
    }
    e = got["collector.telemetry.example"]
    assert e.name == "Telemetry collector of a test handset vendor"
    assert e.tags == ("anomalous-activity", "sample", "telemetry")
    assert e.created == "2024-03-01T09:00:00+00:00"
    assert e.where == "indicators.stix.json#indicator--1f2e3d4c-5b6a-4789-8a0b-c1d2e3f4a5b6"
    assert (
        got["beacon.example.net"].note
        and "https://beacon.example.net/v1/ping" in got["beacon.example.net"].note
    )
    assert f.source.publisher == "Example Lab CERT"
    assert f.source.url.startswith("file://") and f.sha256 in (f.source.note or "")
    assert f.ignored == 1  # the file-hash indicator
    assert f.warning_count == 0


def test_stix_bundle_built_with_the_library(tmp_path: Path) -> None:
    ind = stix2.Indicator(
        name="Stalkerware C2",
        labels=["stalkerware"],
        pattern="[domain-name:value = 'c2.stalker.example'] AND [ipv4-addr:value = '192.0.2.9']",
        pattern_type="stix",
        valid_from="2023-05-01T00:00:00Z",
    )
    path = tmp_path / "bundle.json"
    path.write_text(stix2.Bundle(objects=[ind]).serialize(), encoding="utf-8")
    f = load_intel(f"lab={path}")
    assert sorted((str(e.kind), e.value) for e in f.entries) == [
        ("domain", "c2.stalker.example"),
        ("ip", "192.0.2.9"),
    ]
    assert all(e.name == "Stalkerware C2" and "stalkerware" in e.tags for e in f.entries)


def test_stix_bad_objects_are_counted_not_fatal(tmp_path: Path) -> None:
    bundle = json.loads(STIX.read_text(encoding="utf-8"))
    bundle["objects"].append({"type": "indicator", "spec_version": "2.1", "id": "indicator--x"})
    bundle["objects"].append(
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": "indicator--0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d",
            "created": "2024-03-01T09:00:00.000Z",
            "modified": "2024-03-01T09:00:00.000Z",
            "pattern": "[domain-name:value = 'unterminated]",
            "pattern_type": "stix",
            "valid_from": "2024-03-01T09:00:00Z",
        }
    )
    bundle["objects"].append(
        {
            "type": "domain-name",
            "spec_version": "2.1",
            "id": "domain-name--1b2c3d4e-5f6a-5b7c-8d9e-0f1a2b3c4d5e",
            "value": "<script>",
        }
    )
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    f = load_intel(path)
    assert len(f.entries) == 7
    assert f.warning_count == 3
    assert any("indicator--x" in w for w in f.warnings)
    assert all(str(path) in w for w in f.warnings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"type": "bundle", "objects": [\n  {"type": "indicator",,}\n]}',
            r"bad\.json:2:\d+: not JSON",
        ),
        ('{"type": "indicator"}', r"not a STIX 2\.1 bundle \(type 'indicator'\)"),
        ("[1, 2]", r"not a STIX 2\.1 bundle \(type 'list'\)"),
        ('{"type": "bundle", "objects": {}}', r"`objects` must be a list"),
    ],
)
def test_stix_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IntelImportError, match=message):
        load_intel(path)


# --- hosts files and adblock lists -----------------------------------------------------------


def test_hosts_file() -> None:
    f = load_intel(f"blocklist={HOSTS}")
    assert f.format is IntelFormat.HOSTS
    assert [e.value for e in f.entries] == [
        "ads.tracker.example",
        "metrics.tracker.example",
        "upper.case.tracker.example",
        "two.example",
        "three.example",
    ]
    assert all(e.kind is IndicatorKind.HOST and e.label == "blocklist" for e in f.entries)
    assert f.entries[0].where == "blocklist.hosts:5"
    assert f.ignored == 4  # localhost and friends
    assert f.warning_count == 2
    assert re.search(r"blocklist\.hosts:9: not a host name: '<script>", f.warnings[0])
    assert re.search(r"blocklist\.hosts:10: expected 'ADDRESS HOST", f.warnings[1])


def test_adblock_list() -> None:
    f = load_intel(f"easy={ADBLOCK}")
    assert f.format is IntelFormat.ADBLOCK
    got = _by_value(f.entries)
    assert sorted(got) == ["ads.vendor.example", "tracker.example", "tracking.miui.com"]
    assert all(e.kind is IndicatorKind.DOMAIN for e in f.entries)
    assert got["ads.vendor.example"].note == "adblock options $third-party"
    assert f.ignored == 3  # exception, cosmetic and path rules
    assert f.warning_count == 2
    assert any(re.search(r"filters\.txt:10: not a host name", w) for w in f.warnings)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "garbage.hosts",
            "no addresses here\nnor here\n",
            r"garbage\.hosts:1: expected 'ADDRESS HOST",
        ),
        ("bad.txt", "||<b>^\n||also bad^\n", r"bad\.txt:1: not a host name"),
    ],
)
def test_files_with_no_valid_line_are_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IntelImportError, match=message):
        load_intel(path)


def test_binary_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "blob.hosts"
    path.write_bytes(b"0.0.0.0 a.example\n0.0.0.0 \xff\xfe.example\n")
    with pytest.raises(IntelImportError, match=r"blob\.hosts:2: not UTF-8 text"):
        load_intel(path)
    with pytest.raises(IntelImportError, match="cannot read intel file"):
        load_intel(tmp_path / "missing.txt")


def test_label_spec() -> None:
    assert parse_intel_spec("my-lab=/x/y.json") == ("my-lab", Path("/x/y.json"))
    assert parse_intel_spec(Path("/x/easy list.txt")) == ("easy-list", Path("/x/easy list.txt"))


# --- auditor's own YAML ------------------------------------------------------------------------


def test_yaml_intel_file() -> None:
    f = load_intel(YAML)
    assert f.format is IntelFormat.YAML and f.label == "lab.intel"
    assert [o.id for o in f.organisations] == ["example-ads"]
    assert f.source.publisher == "Example Lab" and f.source.year == 2024
    kinds = {e.value: str(e.kind) for e in f.entries}
    assert kinds["198.51.100.0/24"] == "network" and kinds["203.0.113.77"] == "ip"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nentries:\n  - {host: a.example, domain: b.example}\n",
            r"x\.yaml:3: entry #1: give exactly one",
        ),
        ("version: 1\nentries:\n  - {host: '<x>'}\n", r"x\.yaml:3: entry #1: not a host name"),
        ("version: 1\nentries:\n  - {ip: 1.2.3}\n", "not an IP address"),
        ("version: 1\nentries:\n  - {host: a.example, colour: red}\n", "unknown fields: colour"),
        (
            "version: 1\nentries:\n  - {host: a.example, source: nowhere}\n",
            "unknown source id 'nowhere'",
        ),
        ("version: 2\nentries: []\n", "`version: 1` is required"),
        ("version: 1\nentries: [\n", r"x\.yaml:\d+: not valid YAML"),
    ],
)
def test_yaml_intel_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IntelImportError, match=message):
        load_intel(path)


# --- intel in the knowledge base -----------------------------------------------------------------


@pytest.fixture(scope="module")
def kb_with_intel() -> KnowledgeBase:
    return KnowledgeBase.load(
        extra=[f"cert={STIX}", f"blocklist={HOSTS}", f"easy={ADBLOCK}", f"lab={YAML}"]
    )


def test_intel_attributes_what_the_kb_does_not_know(kb_with_intel: KnowledgeBase) -> None:
    a = kb_with_intel.lookup_host("deep.sub.tracker.example")
    # a blocklist flags the name (labels, the indicator, the file as a source) but names no
    # recipient
    assert a.matched_by is MatchedBy.NONE and a.organisation is None
    assert a.labels == ("easy",) and a.matched == "domain:tracker.example"
    assert a.sources[0].id == "intel:easy" and a.sources[0].url.startswith("file://")
    b = kb_with_intel.lookup_host("sdk.example-ads.example")
    assert (b.organisation, b.country, b.matched_by) == (
        "example-ads",
        "FR",
        MatchedBy.INTEL_IMPORT,
    )
    assert b.matched == "host:sdk.example-ads.example"
    c = kb_with_intel.lookup_host("collector.telemetry.example")
    assert c.labels == ("cert",) and c.note and "Telemetry collector" in c.note


def test_knowledge_base_wins_over_intel_but_keeps_its_labels(kb_with_intel: KnowledgeBase) -> None:
    a = kb_with_intel.lookup_host("tracking.miui.com")
    assert (a.organisation, a.matched_by) == ("xiaomi", MatchedBy.EXACT_HOST)
    assert a.labels == ("easy",)
    assert a.sources[0].id == "forbes-2020"
    assert "intel:easy" in {s.id for s in a.sources}
    b = kb_with_intel.lookup_host("x.sub.qq.com")
    assert (b.organisation, b.labels) == ("tencent", ("lab",))


def test_intel_addresses(kb_with_intel: KnowledgeBase) -> None:
    a = kb_with_intel.lookup_ip("203.0.113.77")
    assert a.matched_by is MatchedBy.NONE and a.labels == ("lab",)
    assert a.server_country is None and "RFC 5737" in (a.server_country_reason or "")
    b = kb_with_intel.lookup_ip("198.51.100.23")
    assert b.organisation == "example-ads" and set(b.labels) == {"cert", "lab"}
    c = kb_with_intel.lookup_ip("2001:db8:2::77")
    assert c.labels == ("cert",)


def test_intel_in_bulk(kb_with_intel: KnowledgeBase) -> None:
    out = kb_with_intel.classify_hosts(["ads.tracker.example", "tracking.miui.com", "x.example"])
    assert out["matched_by"].tolist() == ["none", "exact-host", "none"]
    assert out["matched"].tolist()[0] == "host:ads.tracker.example"
    assert out["labels"].tolist()[:2] == ["blocklist;easy", "easy"]


def test_intel_organisation_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "version: 1\nentries:\n  - {host: a.example, organisation: nobody}\n", encoding="utf-8"
    )
    with pytest.raises(KnowledgeBaseError, match=r"x\.yaml:3: unknown organisation 'nobody'"):
        KnowledgeBase.load(extra=[path])
    path.write_text(
        "version: 1\norganisations:\n  - {id: xiaomi, name: X, country: CN, categories: [push],"
        " state_linked: false}\nentries: []\n",
        encoding="utf-8",
    )
    with pytest.raises(KnowledgeBaseError, match="'xiaomi' is already in the knowledge base"):
        KnowledgeBase.load(extra=[path])


# --- host names -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_normalise_host_never_raises(raw: str) -> None:
    out = normalise_host(raw)
    assert out is None or (re.fullmatch(r"[a-z0-9_.-]+", out) and len(out) <= 253)

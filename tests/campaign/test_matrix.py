"""The matrix and its pages, from findings documents: builds named as Android names them,
one column per recipient across handsets, and hostile text shown inert."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditor.campaign import matrix as mx
from auditor.campaign.report import render_html, render_md

PROFILES = ("huawei-p40", "oneplus-8t", "pixel-android14", "xiaomi-mi10t")


@pytest.mark.parametrize("profile", PROFILES)
def test_build_is_the_fingerprints_id_and_incremental(profile: str) -> None:
    """Build.FINGERPRINT is BRAND/PRODUCT/DEVICE:RELEASE/ID/INCREMENTAL:TYPE/TAGS
    (developer.android.com/reference/android/os/Build#FINGERPRINT); the profile's own
    ro.build.id and ro.build.version.incremental say what ID and INCREMENTAL are."""
    path = resources.files("vhandset") / "profiles" / f"{profile}.yaml"
    props = yaml.safe_load(path.read_text(encoding="utf-8"))["props"]
    want = f"{props['ro.build.id']}/{props['ro.build.version.incremental']}"
    assert mx.build_of(props["ro.build.fingerprint"]) == want


def test_build_of_odd_fingerprints() -> None:
    assert mx.build_of(None) is None
    assert mx.build_of("") is None
    assert mx.build_of("not/a/fingerprint") == "not/a/fingerprint"


def endpoint(
    org: str | None, country: str | None, host: str, flows: int, up: int
) -> dict[str, Any]:
    return {
        "organisation": org,
        "country": country,
        "host": host,
        "flows": flows,
        "bytes_up": up,
        "bytes_down": 0,
        "flow_ids": [f"{host}#{i}" for i in range(flows)],
    }


def findings(device: dict[str, Any], endpoints: list[Any], found: list[Any]) -> dict[str, Any]:
    return {
        "device": device,
        "endpoints": endpoints,
        "findings": found,
        "coverage": {"duration_seconds": 1800.0},
    }


def entry(serial: str, outcome: str = "complete", report: str | None = None) -> mx.HandsetEntry:
    return mx.HandsetEntry(
        serial, "V", "M", "B/1", None, outcome, "scenario_done", True, "", None, report, 1800.0, 1
    )


IMEI_TO_GOOGLE = {
    "rule": "identifier-sent",
    "organisation": "Google LLC",
    "identifiers": ["imei"],
    "encodings": ["plain"],
}


def test_one_column_per_recipient_and_rates_per_hour() -> None:
    google = endpoint("Google LLC", "US", "a.google.com", 3, 300)
    docs = {
        "s1": findings(
            {},
            [google, endpoint(None, None, "10.0.0.1", 1, 10)],
            [IMEI_TO_GOOGLE],
        ),
        "s2": findings({}, [endpoint("Google LLC", "US", "b.google.com", 2, 100)], []),
    }
    doc = mx.build_matrix({"campaign_id": "c"}, [entry("s1"), entry("s2")], docs)
    assert [r["recipient"] for r in doc["recipients"]] == ["Google LLC", mx.UNKNOWN]
    cells = {(c["serial"], c["recipient"]): c for c in doc["cells"]}
    assert set(cells) == {("s1", "Google LLC"), ("s1", mx.UNKNOWN), ("s2", "Google LLC")}
    c = cells[("s1", "Google LLC")]
    assert (c["flows"], c["flows_per_hour"], c["bytes_up_per_hour"]) == (3, 6.0, 600.0)
    assert c["identifiers"] == ["imei"] and c["encodings"] == {"imei": ["plain"]}
    assert cells[("s2", "Google LLC")]["identifiers"] == []


def test_hostile_text_is_inert(tmp_path: Path) -> None:
    org = "<script>alert(1)</script>|**x**](http://evil)"
    docs = {
        "s1": findings(
            {"manufacturer": "<b>V</b>", "model": "M\u202eX", "fingerprint": "a/b/c:1/I/N:u/k"},
            [endpoint(org, "CN", "<img src=x>", 1, 1)],
            [{"rule": "identifier-sent", "organisation": org, "identifiers": ["id\u202e<i>"]}],
        )
    }
    handsets = [entry("s1", report="../../etc/passwd"), entry('s2"><x', "device_lost")]
    doc = mx.build_matrix({"campaign_id": "c", "scenario_name": "idle", "duration": None,
                           "started_at": "t0", "ended_at": "t1", "status": "done"},
                          handsets, docs)  # fmt: skip
    html = render_html(doc)
    for raw in ("<script>", "<img", "<b>V", "<i>", "\u202e", '"><x', "../../etc/passwd"):
        assert raw not in html, raw
    assert "&lt;script&gt;" in html and "\\u202e" in html
    md = render_md(doc)
    for raw in ("<script>", "](http", "**x**", "\u202e", "|**"):
        assert raw not in md, raw

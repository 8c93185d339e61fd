"""The virtual handset's Google jobs send real-schema protobufs: the pixel plan's bodies read
by gproto into named fields, with the profile's identifiers found in them. (The decoder itself
is tested on upstream-encoded bodies in test_gproto.py, never only on these.)"""

from __future__ import annotations

import pytest

from auditor.analysis.payload import Body, Scanner
from vhandset.payloads import TemplateError, build_body, facts_from_profile, render
from vhandset.profiles import load_profile
from vhandset.traffic import load_plan

IDS = ("imei", "android_id", "serial", "wifi_mac", "advertising_id")


@pytest.fixture(scope="module")
def scanned() -> dict[str, tuple[set[tuple[str, str]], list[str], tuple[str, ...]]]:
    facts = facts_from_profile(load_profile("pixel-android14"))
    scanner = Scanner({k: str(facts[k]) for k in IDS})
    out = {}
    for job in load_plan("pixel-android14").jobs:
        r = job.request
        if r is None or r.body is None or not r.kind.startswith("protobuf:"):
            continue
        data, headers = build_body(r.body, r.kind, r.encoding, facts)
        res = scanner.scan_flow(
            str(render(r.url, facts)),
            [],
            [Body(data, headers.get("Content-Encoding"), headers["Content-Type"])],
        )
        assert not res.warnings, job.name
        (reading,) = res.decoded
        out[job.name] = (
            {(m.identifier, m.detail) for m in res.matches},
            [reading.message],
            reading.log_sources,
        )
    return out


def test_checkin_fields(scanned) -> None:
    found, messages, _ = scanned["google-checkin"]
    assert messages == ["auditor.gproto.checkin.CheckinRequest"]
    # the profile's Android ID is past 2^63: sent as a negative int64, still found as hex
    assert found == {
        ("imei", "imei"),
        ("android_id", "android_id (hex)"),
        ("serial", "serial"),
        ("wifi_mac", "mac_address[0]"),
    }


def test_clearcut_and_firebase_fields(scanned) -> None:
    found, messages, sources = scanned["play-log"]
    assert messages == ["auditor.gproto.clearcut.LogRequest"] and sources == ("LAUNCHER_EVENTS",)
    assert found == {("android_id", "log_event[0].source_extension|pb:2")}
    found, messages, _ = scanned["firebase-analytics"]
    assert messages == ["auditor.gproto.measurement.Batch"]
    assert found == {("advertising_id", "bundle[0].resettable_device_id")}


def test_template_errors_name_the_field() -> None:
    with pytest.raises(TemplateError, match="no field 'imie'"):
        build_body({"imie": "1"}, "protobuf:auditor.gproto.checkin.CheckinRequest", None, {})
    with pytest.raises(TemplateError, match="unknown message"):
        build_body({}, "protobuf:auditor.gproto.nope.Nope", None, {})

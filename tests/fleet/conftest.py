"""A small fleet, built once per test session (each module would pay ~10 s): three audits
of the virtual handset, recorded as the recorder records them (mitmproxy flows, auditor's
session writer with the profile's device facts) and analysed as `auditor analyze` does.

- Xiaomi Mi 10T, firmware A (the profile's build), June 2025: the profile's traffic plan;
- the same handset, firmware B (a later MIUI build), July 2025: the "opt-out" update of
  tests/analysis/test_diff.py (the analytics job gone, the ad-config job half as often, the
  OnePlus 8T profile's HeyTap and OnePlus jobs added);
- OnePlus 8T, its own build and plan, June 2025, plus one flow to a host whose name is
  markup (captured traffic is hostile).

The flows come from test_diff's helpers (the simulator's plans rendered with the profile's
facts): this fleet is the diff's firmware pair and one more handset.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http

from auditor.analysis.engine import report_session
from auditor.proxy.mitmconv import http_record
from auditor.session import SessionWriter
from tests.analysis.test_diff import T0, _flow, _jobs, urlhost
from vhandset.payloads import facts_from_profile
from vhandset.profiles import load_profile

SECONDS = 240.0
MONTH_B = 40 * 86400  # firmware B is recorded 40 days later: another month
FW_B_INCREMENTAL = "V12.5.1.0.QJDEUXM"
HOSTILE_HOST = "x<script>alert(1)</script>\u202e.example"


@dataclass
class Audit:
    name: str
    profile: str
    session: Path
    report: Path
    device: dict[str, Any]
    t0: float


def device_facts(profile: str, fingerprint: str | None = None) -> dict[str, Any]:
    """The manifest's device section, as auditor's profile collector writes it from getprop."""
    p = load_profile(profile)
    props = p.props
    facts = facts_from_profile(p)
    ids = ("imei", "android_id", "wifi_mac", "advertising_id", "serial")
    return {
        "manufacturer": props["ro.product.manufacturer"],
        "brand": props["ro.product.brand"],
        "model": props["ro.product.model"],
        "device": props["ro.product.device"],
        "android_release": props["ro.build.version.release"],
        "fingerprint": fingerprint or props["ro.build.fingerprint"],
        "security_patch": props.get("ro.build.version.security_patch", ""),
        "build_type": props.get("ro.build.type", ""),
        "identifiers": [
            {"name": k, "value": str(facts[k]), "source": "virtual handset profile"}
            for k in ids
            if facts.get(k)
        ],
    }


def _record(root: Path, device: dict[str, Any], flows: list[http.HTTPFlow]) -> Path:
    w = SessionWriter.create(root, device=device, notes="fleet test")
    for f in flows:
        w.write(http_record(f, w.bodies))
    w.close()
    return w.path


def _plan_flows(jobs: list[tuple[Any, float]], profile: str, t0: float, side: str) -> list[Any]:
    facts = facts_from_profile(load_profile(profile))
    out = []
    for job, period in jobs:
        k = 0
        while k * period <= SECONDS - 1:
            out.append(_flow(job, facts, t0 + k * period + 0.5, k, side))
            k += 1
    out.sort(key=lambda f: f.request.timestamp_start)
    return out


def _hostile(t0: float) -> http.HTTPFlow:
    from mitmproxy.test import tflow

    f = tflow.tflow(resp=True)
    f.id = "00000000-0000-4000-8000-00000000bad1"
    f.request.host = HOSTILE_HOST
    f.request.headers["Host"] = HOSTILE_HOST
    f.server_conn.address = (HOSTILE_HOST, 80)
    for t in (f.request, f.response):
        assert t is not None
        t.timestamp_start, t.timestamp_end = t0 + 5, t0 + 5.1
    f.client_conn.timestamp_start = f.server_conn.timestamp_start = t0 + 5
    return f


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Audit]:
    root = tmp_path_factory.mktemp("fleet")
    captures, reports = root / "captures", root / "reports"
    xiaomi = _jobs("xiaomi-mi10t")
    fw_a = [(j, j.period) for j in xiaomi]
    fw_b = [(j, j.period * 2 if j.name == "miadblacklistconfig" else j.period) for j in xiaomi]
    fw_b = [(j, p) for j, p in fw_b if j.name != "analytics-track"]
    xiaomi_hosts = {urlhost(x) for x in xiaomi}
    fw_b += [(j, j.period) for j in _jobs("oneplus-8t") if urlhost(j) not in xiaomi_hosts]
    a_dev = device_facts("xiaomi-mi10t")
    fp = a_dev["fingerprint"].split(":")
    rel, build_id, _inc = fp[1].split("/")
    b_dev = device_facts("xiaomi-mi10t", f"{fp[0]}:{rel}/{build_id}/{FW_B_INCREMENTAL}:{fp[2]}")
    op_dev = device_facts("oneplus-8t")
    plans = [
        ("xiaomi-a", "xiaomi-mi10t", a_dev, _plan_flows(fw_a, "xiaomi-mi10t", T0, "a"), T0),
        (
            "xiaomi-b",
            "xiaomi-mi10t",
            b_dev,
            _plan_flows(fw_b, "xiaomi-mi10t", T0 + MONTH_B, "b"),
            T0 + MONTH_B,
        ),
        (
            "oneplus",
            "oneplus-8t",
            op_dev,
            [
                *_plan_flows([(j, j.period) for j in _jobs("oneplus-8t")], "oneplus-8t", T0, "o"),
                _hostile(T0),
            ],
            T0,
        ),
    ]
    out = {}
    for name, profile, device, flows, t0 in plans:
        session = _record(captures, device, flows)
        report = report_session(session, reports, ["json", "csv"])
        out[name] = Audit(name, profile, session, report, device, t0)
    return out


@pytest.fixture(scope="session")
def dataset(fleet: dict[str, Audit], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fleet exported once: firmware A and the OnePlus as report folders, firmware B as
    its session (analysed by the export). Tests that change a dataset copy it first."""
    from auditor.fleet.export import export

    ds = tmp_path_factory.mktemp("dataset") / "fleet"
    res = export([fleet["xiaomi-a"].report, fleet["xiaomi-b"].session, fleet["oneplus"].report], ds)
    assert len(res.exported) == 3 and not res.failed, res.to_dict()
    return ds


def month_of(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m")

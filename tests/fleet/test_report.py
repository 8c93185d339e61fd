"""auditor.fleet.report: the fleet report's answers checked against the report folders
themselves (findings.json read with json, flows.parquet with pandas), not the dataset; and
captured text escaped in the HTML."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from auditor.fleet.dataset import Dataset
from auditor.fleet.engines import aggregates
from auditor.fleet.report import build_report, html_page, report_command
from tests.fleet.conftest import HOSTILE_HOST, Audit

IDENTIFIER_RULES = {"identifier-sent", "cleartext-identifier"}
UNKNOWN = "(unknown operator)"


def _build(a: Audit) -> tuple[str, str, str]:
    return (a.device["manufacturer"], a.device["model"], a.device["fingerprint"].split(":")[1])


def _findings(a: Audit) -> dict[str, Any]:
    folder = a.report
    return json.loads((folder / "findings.json").read_text())


def _sent(a: Audit) -> set[tuple[str, str]]:
    """(recipient, identifier) pairs of the identifier findings of one report."""
    out = set()
    for f in _findings(a)["findings"]:
        if f["rule"] in IDENTIFIER_RULES:
            for ident in f["identifiers"]:
                out.add((f["organisation"] or UNKNOWN, ident))
    return out


@pytest.fixture(scope="module")
def report(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fleet-report")
    res = report_command(dataset, out, ["html", "json", "csv"], generated_at="2000-01-01T00:00:00Z")
    return {"doc": res.doc, "out": out, "files": res.files}


def test_identifiers_per_build_and_recipient_match_the_findings(
    fleet: dict[str, Audit], report: dict[str, Any]
) -> None:
    want: dict[tuple[str, ...], int] = defaultdict(int)
    for a in fleet.values():
        for recipient, ident in _sent(a):
            want[(*_build(a), recipient, ident)] += 1  # one session per build here
    got = {
        (r["vendor"], r["model"], r["build"], r["recipient"], i["identifier"]): i["sessions"]
        for r in report["doc"]["recipients"]
        for i in r["identifiers"]
    }
    assert got == dict(want)
    assert any(k[3] == "Xiaomi Corporation" and k[4] == "imei" for k in got)
    # the same rows in the CSV
    with (report["out"] / "fleet-identifiers.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {
        (r["vendor"], r["model"], r["build"], r["recipient"], r["identifier"]) for r in rows
    } == set(want)


def test_since_which_build(fleet: dict[str, Audit], report: dict[str, Any]) -> None:
    a, b = fleet["xiaomi-a"], fleet["xiaomi-b"]
    sent_a, sent_b = _sent(a), _sent(b)
    assert sent_b - sent_a, "firmware B adds recipients: something must be new in it"
    assert sent_a - sent_b, "firmware B drops the analytics job: something must stop"
    build_a, build_b = _build(a)[2], _build(b)[2]
    rows = {
        (r["build"], r["recipient"], i["identifier"]): i
        for r in report["doc"]["recipients"]
        if r["vendor"] == "Xiaomi"
        for i in r["identifiers"]
    }
    for recipient, ident in sent_b:
        row = rows[(build_b, recipient, ident)]
        assert row["since_build"] == (build_a if (recipient, ident) in sent_a else build_b)
        assert row["in_latest_build"] is True
    for recipient, ident in sent_a - sent_b:
        row = rows[(build_a, recipient, ident)]
        assert row["since_build"] == build_a and row["in_latest_build"] is False
    order = {b["build"]: b["order"] for b in report["doc"]["builds"] if b["vendor"] == "Xiaomi"}
    assert order == {build_a: 1, build_b: 2}  # firmware A was recorded first


def test_flows_per_recipient_match_the_flow_tables(
    fleet: dict[str, Audit], report: dict[str, Any]
) -> None:
    want: dict[tuple[str, ...], int] = {}
    for a in fleet.values():
        df = pd.read_parquet(a.report / "flows.parquet", columns=["organisation_name"])
        counts = df["organisation_name"].fillna(UNKNOWN).value_counts()
        for recipient, n in counts.items():
            want[(*_build(a), str(recipient))] = int(n)
        # and findings.json's endpoints agree (the flows of each recipient, summed)
        by_org: dict[str, int] = defaultdict(int)
        for e in _findings(a)["endpoints"]:
            by_org[e["organisation"] or UNKNOWN] += e["flows"]
        assert dict(by_org) == {str(k): int(v) for k, v in counts.items()}
    got = {
        (r["vendor"], r["model"], r["build"], r["recipient"]): r["flows"]
        for r in report["doc"]["recipients"]
    }
    assert got == want
    assert report["doc"]["totals"]["flows"] == sum(want.values())


def test_hostile_host_is_escaped_in_html(report: dict[str, Any]) -> None:
    doc = report["doc"]
    hosts = {h["host"] for r in doc["recipients"] for h in r["hosts"]}
    assert HOSTILE_HOST in hosts  # kept as captured in the JSON
    page = (report["out"] / "fleet-report.html").read_text()
    assert "<script>" not in page
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;\\u202e.example" in page
    assert "\u202e" not in page
    assert "Content-Security-Policy" in page


def test_hostile_values_in_every_cell_are_escaped(dataset: Path) -> None:
    agg = aggregates(Dataset.open(dataset))
    hostile = "<img src=x onerror=alert(1)>"
    for table in ("builds", "recipients", "hosts", "identifiers", "encodings"):
        df = getattr(agg, table)
        for col in ("build", "recipient"):
            if col in df.columns:
                df[col] = df[col] + hostile
    page = html_page(build_report(agg, generated_at="x"))
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page

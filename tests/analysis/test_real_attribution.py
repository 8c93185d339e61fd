"""Attribution on traffic nobody here made: the public Android captures in ../shared/captures
and the real browser/tool HAR files in tests/imports/samples, imported and analysed whole.

On every one: each flow is attributed on its own, and the totals of "Who received what"
(verdicts), the endpoints (findings.json and endpoints.csv), the flow table and the findings
agree; no endpoint names a recipient without evidence about its name, and none names the
hosting network in the recipient's place.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from auditor.analysis.engine import UNKNOWN_RECIPIENT, analyze, write
from auditor.imports.session import import_files

from ..conftest import SHARED_CAPTURES

NAME_RUNGS = ("kb-host", "kb-domain", "intel-import", "dataset", "certificate", "cname")
HARS = Path(__file__).resolve().parents[1] / "imports" / "samples"
PCAPS = sorted(SHARED_CAPTURES.glob("*.pcap*")) if SHARED_CAPTURES.is_dir() else []
REAL = [
    *(pytest.param(p, id=p.name) for p in PCAPS),
    *(
        pytest.param(HARS / n, id=n)
        for n in ("chrome.har", "firefox.har", "charles.har", "httptoolkit.har")
    ),
]


def _report(path: Path, root: Path) -> Path:
    res = import_files([path], root / "captures")
    analysis = analyze([res.session])
    out = root / "report"
    write(analysis, out, ["json", "csv"])
    return out


@pytest.mark.parametrize("path", REAL)
def test_totals_agree_and_every_recipient_rests_on_the_name(path: Path, tmp_path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    out = _report(path, tmp_path)
    doc = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    with (out / "flows.csv").open(encoding="utf-8", newline="") as fh:
        flows = list(csv.DictReader(fh))
    with (out / "endpoints.csv").open(encoding="utf-8", newline="") as fh:
        endpoint_rows = list(csv.DictReader(fh))
    endpoints = doc["endpoints"]
    total = len(flows)
    assert sum(e["flows"] for e in endpoints) == total
    assert sum(int(r["flows"]) for r in endpoint_rows) == total
    assert sum(v["flows"] for v in doc["verdicts"]) == total
    # per recipient, the verdicts, the endpoints and the flow table say the same
    by_flows = Counter(r["organisation_name"] or UNKNOWN_RECIPIENT for r in flows)
    by_endpoints: Counter[str] = Counter()
    for e in endpoints:
        by_endpoints[e["organisation"] or UNKNOWN_RECIPIENT] += e["flows"]
    by_verdicts: Counter[str] = Counter()
    for v in doc["verdicts"]:
        by_verdicts[v["organisation"]] += v["flows"]
    assert by_flows == by_endpoints == by_verdicts
    # a finding's organisation is the recipient of every flow it cites
    org_of = {r["flow_id"]: r["organisation_name"] or None for r in flows}
    for f in doc["findings"]:
        for fid in f["flow_ids"]:
            if fid in org_of:
                assert org_of[fid] == f["organisation"], (f["rule"], fid)
    for e in endpoints:
        if e["organisation"]:
            # named by the first rung of its evidence, a rung about the name, never the AS
            top = e["evidence"][0]
            assert (top["basis"], top["name"]) == (e["basis"], e["organisation"]), e["host"]
            assert e["basis"] in NAME_RUNGS, e["host"]
        else:
            assert e["basis"] == "none" and e["recipient"].startswith("unknown operator")
        assert all(isinstance(x["basis"], str) and x["basis"] for x in e["legal_exposure"])
    assert doc["method"]["knowledge_base"]["datasets"], "the data sets used are named"
    for d in doc["method"]["knowledge_base"]["datasets"]:
        assert d["licence"] and len(d["sha256"]) == 64 and (d["version"] or d["date"])

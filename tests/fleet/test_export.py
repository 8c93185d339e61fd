"""auditor.fleet.export and auditor.fleet.dataset: partitions, idempotence, the schema
version, interrupted exports and inputs that cannot be read."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from auditor.fleet.dataset import Dataset, FleetError
from auditor.fleet.engines import query
from auditor.fleet.export import export
from auditor.fleet.schema import FLEET_SCHEMA_VERSION, TABLES
from tests.fleet.conftest import Audit, month_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"


def _expected_partition(a: Audit) -> tuple[str, str, str, str]:
    # the build is the fingerprint's RELEASE/ID/INCREMENTAL (brand/product/device:...:type/tags)
    return (
        a.device["manufacturer"],
        a.device["model"],
        a.device["fingerprint"].split(":")[1],
        month_of(a.t0),
    )


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _rows(root: Path) -> dict[str, int]:
    return {
        t: sum(pq.read_metadata(f).num_rows for f in (root / t).rglob("*.parquet")) for t in TABLES
    }


def test_each_audit_lands_in_its_partition(fleet: dict[str, Audit], dataset: Path) -> None:
    sessions = pd.concat(pd.read_parquet(f) for f in (dataset / "sessions").rglob("*.parquet"))
    got = {
        tuple(r)
        for r in sessions[["vendor", "model", "build", "month"]].itertuples(index=False, name=None)
    }
    assert got == {_expected_partition(a) for a in fleet.values()}
    assert len(got) == 3  # two vendors, two Xiaomi builds, two months
    for f in (dataset / "flows").rglob("*.parquet"):
        folders = dict(p.split("=", 1) for p in f.relative_to(dataset / "flows").parts[:-1])
        values = pd.read_parquet(f, columns=["vendor", "month"]).drop_duplicates()
        assert len(values) == 1
        assert folders["vendor"] == values["vendor"].iloc[0].lower()
        assert folders["month"] == values["month"].iloc[0]
    # every flow of each report is in the dataset, under that audit's partition
    for a in fleet.values():
        want = len(pd.read_parquet(a.report / "flows.parquet"))
        counts = query(
            Dataset.open(dataset),
            "SELECT vendor, model, build, month, count(*) AS n FROM flows GROUP BY ALL",
        )
        got_n = {tuple(r[:4]): r[4] for r in counts.itertuples(index=False, name=None)}
        assert got_n[_expected_partition(a)] == want, a.name


def test_exporting_again_changes_nothing(
    fleet: dict[str, Audit], dataset: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "fleet"
    shutil.copytree(dataset, ds)
    before, rows = _snapshot(ds), _rows(ds)
    # the same audits again: firmware B now as its report folder, and again as its session
    again = [
        fleet["xiaomi-a"].report,
        fleet["xiaomi-b"].report,
        fleet["xiaomi-b"].session,
        fleet["oneplus"].report,
    ]
    res = export(again, ds)
    assert res.exported == [] and res.failed == [] and res.files == []
    assert [s["reason"] for s in res.skipped] == ["already in the dataset"] * 4
    assert _snapshot(ds) == before
    assert _rows(ds) == rows
    assert rows["sessions"] == 3 and rows["flows"] > 0


def test_schema_version_is_written_and_checked(dataset: Path, tmp_path: Path) -> None:
    doc = json.loads((dataset / "fleet.json").read_text())
    assert doc["fleet_schema_version"] == FLEET_SCHEMA_VERSION == 1
    assert f"schema version {FLEET_SCHEMA_VERSION}" in DOCS.read_text()
    for table in TABLES:
        for f in (dataset / table).rglob("*.parquet"):
            meta = pq.read_schema(f).metadata
            assert meta[b"auditor.fleet_schema_version"] == b"1"
            assert pq.read_schema(f).names == TABLES[table].names
    newer = tmp_path / "newer"
    shutil.copytree(dataset, newer)
    (newer / "fleet.json").write_text(json.dumps({"fleet_schema_version": 99}))
    with pytest.raises(FleetError, match="newer than this auditor reads"):
        Dataset.open(newer)
    with pytest.raises(FleetError, match="not a fleet dataset"):
        Dataset.open(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(FleetError, match="not empty and not a fleet dataset"):
        export([dataset], tmp_path / "other")


def test_an_interrupted_export_is_ignored_then_removed(
    fleet: dict[str, Audit], dataset: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "fleet"
    shutil.copytree(dataset, ds)
    count = query(Dataset.open(ds), "SELECT count(*) AS n FROM flows")["n"].iloc[0]
    some = next((ds / "flows").rglob("part-*.parquet"))
    stray = some.with_name("part-" + "0" * 24 + ".parquet")  # no sessions file commits it
    shutil.copy(some, stray)
    (some.parent / ".part-x.parquet.tmp").write_bytes(b"half")
    assert stray not in Dataset.open(ds).files("flows")
    assert query(Dataset.open(ds), "SELECT count(*) AS n FROM flows")["n"].iloc[0] == count
    res = export([fleet["xiaomi-a"].report], ds)
    assert len(res.removed) == 2 and not stray.exists()
    assert any("interrupted export" in w for w in res.warnings)


def test_unreadable_inputs_are_named_and_the_rest_exported(
    fleet: dict[str, Audit], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "findings.json").write_text('{"endpoints": [')
    res = export([empty, broken, fleet["oneplus"].report], tmp_path / "fleet")
    assert len(res.exported) == 1
    reasons = {Path(f["input"]).name: f["reason"] for f in res.failed}
    assert "neither a report folder" in reasons["empty"]
    assert "not JSON" in reasons["broken"]

"""auditor.fleet.cli through click's CliRunner on the commands themselves (auditor.cli adds
them to `auditor`): help with examples, --json, one-line errors and exit statuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from auditor.fleet.cli import export_command, fleet_group
from tests.fleet.conftest import Audit


def _commands() -> list[click.Command]:
    return [export_command, fleet_group, *fleet_group.commands.values()]


@pytest.mark.parametrize("cmd", _commands(), ids=lambda c: c.name)
def test_every_command_has_help_with_an_example(cmd: click.Command) -> None:
    assert cmd.help and "Example" in cmd.help
    res = CliRunner().invoke(cmd, ["--help"])
    assert res.exit_code == 0 and "Example" in res.output


def test_export_then_report_then_query(
    fleet: dict[str, Audit], dataset: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    ds = tmp_path / "fleet"
    shutil.copytree(dataset, ds)
    res = runner.invoke(export_command, [str(fleet["xiaomi-a"].report), "--dataset", str(ds)])
    assert res.exit_code == 0, res.output
    assert "0 exported, 1 already there, 0 failed" in res.stdout
    assert "already in the dataset" in res.stderr
    out = tmp_path / "report"
    res = runner.invoke(fleet_group, ["report", str(ds), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["totals"]["sessions"] == 3
    assert json.loads((out / "fleet-report.json").read_text())["totals"] == doc["totals"]
    assert {p.name for p in out.iterdir()} == {
        "fleet-report.json",
        "fleet-report.html",
        "fleet-recipients.csv",
        "fleet-identifiers.csv",
    }
    sql = "SELECT vendor, count(*) AS n FROM sessions GROUP BY vendor ORDER BY vendor"
    res = runner.invoke(fleet_group, ["query", str(ds), sql, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"vendor": "OnePlus", "n": 1}, {"vendor": "Xiaomi", "n": 2}]
    res = runner.invoke(fleet_group, ["query", str(ds), sql, "--csv"])
    assert res.stdout.splitlines() == ["vendor,n", "OnePlus,1", "Xiaomi,2"]


def test_export_json_and_a_failed_input(fleet: dict[str, Audit], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(empty), str(fleet["oneplus"].report), "--dataset", str(tmp_path / "ds"), "--json"]
    res = CliRunner().invoke(export_command, args)
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert len(doc["exported"]) == 1 and doc["exported"][0]["vendor"] == "OnePlus"
    assert doc["failed"][0]["input"] == str(empty)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "{missing}"], "not a fleet dataset"),
        (["query", "{missing}", "SELECT 1"], "not a fleet dataset"),
        (["query", "{ds}", "SELECT * FROM nowhere"], "SQL: Catalog Error"),
        (["query", "{ds}", "DELETE FROM flows"], "only queries are allowed"),
        (["report", "{ds}", "--engine", "dask"], "needs --scheduler"),
        (["report", "{corrupt}"], "No magic bytes found at end of file"),
        (["query", "{corrupt}", "SELECT 1"], "No magic bytes found at end of file"),
    ],
)
def test_errors_are_one_line(dataset: Path, tmp_path: Path, args: list[str], message: str) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(dataset, corrupt)
    victim = next((corrupt / "flows").rglob("part-*.parquet"))
    victim.write_bytes(victim.read_bytes()[:100])
    paths = {"missing": tmp_path / "missing", "ds": dataset, "corrupt": corrupt}
    argv = [a.format(**paths) for a in args]
    if args[0] == "report":
        argv += ["--out", str(tmp_path / "out")]
    res = CliRunner().invoke(fleet_group, argv)
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines

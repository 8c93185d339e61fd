"""The report's formats are a table (REPORT_FORMATS): one writer per format, csv bringing
parquet along as it always has, and the CLI's --format offering exactly the table's names."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.analysis.report import (
    ALL_FORMATS,
    FORMATS,
    REPORT_FORMATS,
    selected_formats,
    write_report,
)
from auditor.cli import main

from .report_material import hostile


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.parametrize(
    ("formats", "files"),
    [
        (["json"], ["findings.json"]),
        (["parquet"], ["flows.parquet"]),
        (["csv"], ["flows.parquet", "flows.csv", "endpoints.csv"]),
        (["md"], ["summary.md"]),
        (["html"], ["report.html"]),
        (
            list(FORMATS),
            [
                "findings.json",
                "flows.parquet",
                "flows.csv",
                "endpoints.csv",
                "summary.md",
                "report.html",
            ],
        ),
    ],
)
def test_each_format_writes_its_own_files(
    tmp_path: Path, formats: list[str], files: list[str]
) -> None:
    doc, flows = hostile()
    written = write_report(tmp_path, doc, flows, formats)
    assert _names(written) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # nothing else, no stage


def test_csv_includes_parquet_and_unknown_names_are_dropped() -> None:
    assert selected_formats(["csv"]) == {"csv", "parquet"}
    assert selected_formats(["parquet"]) == {"parquet"}
    assert selected_formats(["nope", "md"]) == {"md"}
    for fmt in REPORT_FORMATS.values():
        assert set(fmt.includes) <= set(REPORT_FORMATS)


def test_the_cli_offers_the_table() -> None:
    assert ALL_FORMATS == tuple(REPORT_FORMATS)
    result = CliRunner().invoke(main, ["analyze", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in REPORT_FORMATS:
        assert f"{name} (" in text
    bad = CliRunner().invoke(main, ["analyze", "x", "--format", "csv,xml"])
    assert bad.exit_code != 0 and "unknown format(s): xml" in bad.output

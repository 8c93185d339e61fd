"""Writing the analysis: ``findings.json``, ``flows.csv``/``flows.parquet``, ``endpoints.csv``,
``summary.md``, a self-contained ``report.html`` and, on request, ``report.pdf``.

The HTML loads nothing from the network and runs no script (its Content-Security-Policy
forbids both). Both the page and ``summary.md`` tell the same story
(:mod:`auditor.analysis.report.story`): a summary in sentences, then the findings by
recipient. Every captured string goes through :mod:`auditor.analysis.escape`.

The formats are a table (:data:`REPORT_FORMATS`), one writer each, as ``default_rules()`` is
for the rules; ``auditor analyze --format`` offers its names.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.analysis.report.files import (
    dumps_findings,
    flows_for_export,
    write_csv,
    write_csv_tables,
    write_parquet,
)
from auditor.analysis.report.markdown import markdown
from auditor.analysis.report.page import html_report
from auditor.analysis.report.pdf import find_chromium, print_pdf, require_chromium
from auditor.fsutil import private_dir, write_private


@dataclass
class ReportJob:
    """What the writers of one report share: the staging folder, the document, the flows, the
    formats asked for, and what several writers use, made once."""

    out: Path
    doc: dict[str, Any]
    flows: pd.DataFrame
    formats: frozenset[str]
    chromium: str | None = None

    @functools.cached_property
    def export(self) -> pd.DataFrame:
        """The flows as the tables hold them (flows.csv, flows.parquet)."""
        return flows_for_export(self.flows)

    @functools.cached_property
    def page(self) -> str:
        """The HTML page (report.html, and what the PDF is printed from)."""
        return html_report(self.doc, self.flows)


@dataclass(frozen=True, slots=True)
class ReportFormat:
    """One format of the report: its name (``--format``), the files it writes, and its writer.
    ``includes`` names formats it brings along."""

    name: str
    files: str
    write: Callable[[ReportJob], list[Path]]
    includes: tuple[str, ...] = ()


def _json(job: ReportJob) -> list[Path]:
    public = {k: v for k, v in job.doc.items() if not k.startswith("_")}
    write_private(job.out / "findings.json", dumps_findings(public))
    return [job.out / "findings.json"]


def _parquet(job: ReportJob) -> list[Path]:
    return write_parquet(job.out, job.doc, job.export)


def _csv(job: ReportJob) -> list[Path]:
    return write_csv_tables(job.out, job.doc, job.export)


def _md(job: ReportJob) -> list[Path]:
    write_private(job.out / "summary.md", markdown(job.doc))
    return [job.out / "summary.md"]


def _html(job: ReportJob) -> list[Path]:
    write_private(job.out / "report.html", job.page)
    return [job.out / "report.html"]


def _pdf(job: ReportJob) -> list[Path]:
    if "html" in job.formats:  # written before this one (the table's order)
        return [print_pdf(job.out / "report.html", job.out / "report.pdf", chromium=job.chromium)]
    html = job.out / ".report.print.html"
    write_private(html, job.page)
    try:
        return [print_pdf(html, job.out / "report.pdf", chromium=job.chromium)]
    finally:
        html.unlink(missing_ok=True)


REPORT_FORMATS: dict[str, ReportFormat] = {
    f.name: f
    for f in (
        ReportFormat("json", "findings.json", _json),
        ReportFormat("parquet", "flows.parquet", _parquet),
        # csv has always written flows.parquet too: users who ask for csv still get it
        ReportFormat("csv", "flows.csv and endpoints.csv, with parquet", _csv, ("parquet",)),
        ReportFormat("md", "summary.md", _md),
        ReportFormat("html", "report.html", _html),
        ReportFormat("pdf", "report.pdf, printed by Chromium", _pdf),
    )
}
"""The report's formats, in the order they are written: a format's writer may use what one
before it wrote (pdf prints report.html), and the tables' warnings reach summary.md and
report.html."""

FORMATS = ("json", "csv", "md", "html")  # what a report holds unless asked otherwise
ALL_FORMATS = tuple(REPORT_FORMATS)

__all__ = [
    "ALL_FORMATS", "FORMATS", "REPORT_FORMATS", "ReportFormat", "ReportJob", "dumps_findings",
    "find_chromium", "flows_for_export", "html_report", "markdown", "print_pdf", "private_dir",
    "selected_formats", "write_csv", "write_report",
]  # fmt: skip


def selected_formats(formats: Iterable[str]) -> frozenset[str]:
    """The formats asked for, with those they include (csv: parquet); unknown names dropped."""
    chosen = {f for f in formats if f in REPORT_FORMATS}
    for name in list(chosen):
        chosen.update(REPORT_FORMATS[name].includes)
    return frozenset(chosen)


def write_report(
    out: Path, doc: dict[str, Any], flows: pd.DataFrame, formats: Iterable[str] = FORMATS
) -> list[Path]:
    """Write the report's files into ``out`` and return their paths. They are written into a
    staging folder inside ``out`` first and moved into place only when all are written, so a
    failure part-way (a full disk) leaves the previous report as it was, never new files
    beside old ones; the staging folder goes on every way out."""
    chosen = selected_formats(formats)
    chromium = require_chromium() if "pdf" in chosen else None  # before anything is written
    private_dir(out)
    stage = out / f".partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    private_dir(stage)
    try:
        job = ReportJob(stage, doc, flows, chosen, chromium)
        staged = [
            f for fmt in REPORT_FORMATS.values() if fmt.name in chosen for f in fmt.write(job)
        ]
        written = []
        for f in staged:  # renames in one folder: they do not fail for want of space
            os.replace(f, out / f.name)
            written.append(out / f.name)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)

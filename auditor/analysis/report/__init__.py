"""Writing the analysis: ``findings.json``, ``flows.csv``/``flows.parquet``, ``endpoints.csv``,
``summary.md``, a self-contained ``report.html`` and, on request, ``report.pdf``.

The HTML loads nothing from the network and runs no script (its Content-Security-Policy
forbids both). Both the page and ``summary.md`` tell the same story
(:mod:`auditor.analysis.report.story`): a summary in sentences, then the findings by
recipient. Every captured string goes through :mod:`auditor.analysis.escape`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.analysis.report.files import (
    dumps_findings,
    flows_for_export,
    private_dir,
    write_csv,
    write_private,
    write_tables,
)
from auditor.analysis.report.markdown import markdown
from auditor.analysis.report.page import html_report
from auditor.analysis.report.pdf import find_chromium, print_pdf, require_chromium

FORMATS = ("json", "csv", "md", "html")
ALL_FORMATS = (*FORMATS, "pdf")

__all__ = [
    "ALL_FORMATS", "FORMATS", "dumps_findings", "find_chromium", "flows_for_export",
    "html_report", "markdown", "print_pdf", "private_dir", "write_csv", "write_report",
]  # fmt: skip


def write_report(
    out: Path, doc: dict[str, Any], flows: pd.DataFrame, formats: Iterable[str] = FORMATS
) -> list[Path]:
    """Write the report's files into ``out`` and return their paths. They are written into a
    staging folder inside ``out`` first and moved into place only when all are written, so a
    failure part-way (a full disk) leaves the previous report as it was, never new files
    beside old ones; the staging folder goes on every way out."""
    formats = set(formats)
    chromium = require_chromium() if "pdf" in formats else None  # before anything is written
    private_dir(out)
    stage = out / f".partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    private_dir(stage)
    try:
        staged = _write_all(stage, doc, flows, formats, chromium)
        written = []
        for f in staged:  # renames in one folder: they do not fail for want of space
            os.replace(f, out / f.name)
            written.append(out / f.name)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_all(
    out: Path, doc: dict[str, Any], flows: pd.DataFrame, formats: set[str], chromium: Any
) -> list[Path]:
    written = []
    if "json" in formats:
        public = {k: v for k, v in doc.items() if not k.startswith("_")}
        write_private(out / "findings.json", dumps_findings(public))
        written.append(out / "findings.json")
    if "csv" in formats:
        written += write_tables(out, doc, flows)
    if "md" in formats:
        write_private(out / "summary.md", markdown(doc))
        written.append(out / "summary.md")
    if "html" in formats or "pdf" in formats:
        page = html_report(doc, flows)
        html = out / ("report.html" if "html" in formats else ".report.print.html")
        write_private(html, page)
        if "html" in formats:
            written.append(html)
        if "pdf" in formats:
            try:
                written.append(print_pdf(html, out / "report.pdf", chromium=chromium))
            finally:
                if "html" not in formats:
                    html.unlink(missing_ok=True)
    return written

"""``auditor export`` and ``auditor fleet report|query|tables``: click commands that parse
their arguments and call one function of :mod:`auditor.fleet` each. ``auditor.cli`` adds
them to its ``main`` group.

The helpers of ``auditor.cli.common`` (escaped output, one-line errors, the custody log) are
taken when a command runs, not when this module is imported: importing them imports the
package ``auditor.cli``, which imports this module, and this module may be imported first.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from auditor.fleet.engines import ENGINES


def _cli() -> Any:
    from auditor.cli import common

    return common


def _json_option[F: Callable[..., Any]](fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


def _handled[F: Callable[..., Any]](*custody: str) -> Callable[[F], F]:
    """``auditor.cli.common``'s one-line errors (and, for the ``custody`` parameters, its custody
    log), applied when the command runs."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cli = _cli()
            run = cli.handle_errors(fn)
            if custody:
                run = cli.custody_logged(*custody)(run)
            return run(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def echo(text: Any = "", err: bool = False, *, fit: bool = False) -> None:
    _cli().echo(text, err, fit=fit)


def terminal_line(text: Any, limit: int | None = None) -> str:
    line: str = _cli().terminal_line(text, limit)
    return line


def emit_json(obj: Any) -> None:
    _cli().emit_json(obj)


def emit_json_text(doc: str) -> None:
    _cli().emit_json_text(doc)


DEFAULT_OUT = Path("reports") / "fleet"


class _ExportProgress:
    """``[3/120] reports/S3`` on standard error, one line per input (none with --json)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, done: int, total: int, path: str) -> None:
        if self.quiet or not path:
            return
        echo(f"[{done + 1}/{total}] {terminal_line(path, 200)}", err=True, fit=True)


@click.command("export")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    required=True,
    type=click.Path(path_type=Path),
    help="The fleet dataset's folder (made when missing).",
)
@_json_option
@_handled("inputs")
def export_command(inputs: tuple[Path, ...], dataset: Path, as_json: bool) -> None:
    """Append analysed audits (report folders or sessions) to a fleet dataset.

    The dataset is Parquet, partitioned by vendor, model, build and month, and holds the
    flows, endpoints, findings and identifiers sent of each audit (docs/fleet.md). A session
    is analysed first, as `auditor analyze` does. An audit already in the dataset (the same
    sessions, by their manifests' hashes) is skipped: exporting twice changes nothing. An
    input that cannot be read is named with the reason, the others are still exported, and
    the exit status is 1.

    \b
    Example:
        auditor export reports/* --dataset fleet/
        auditor export captures/S1 captures/S2 --dataset fleet/ --json
    """
    from auditor.fleet.export import export

    res = export(list(inputs), dataset, on_progress=_ExportProgress(as_json))
    if as_json:
        emit_json(res.to_dict())
    else:
        for s in res.skipped:
            echo(f"skipped {terminal_line(s['input'])}: {terminal_line(s['reason'])}", err=True)
        for s in res.failed:
            why = s["reason"] if s["input"] in s["reason"] else f"{s['input']}: {s['reason']}"
            echo(f"error: {terminal_line(why)}", err=True)
        for w in res.warnings:
            echo(f"warning: {terminal_line(w)}", err=True)
        echo(
            f"{len(res.exported)} exported, {len(res.skipped)} already there, "
            f"{len(res.failed)} failed, "
            f"{len(res.files)} file(s) written to {terminal_line(res.dataset)}"
        )
    if res.failed:
        sys.exit(1)


@click.group("fleet")
def fleet_group() -> None:
    """Questions across many audits: reports and SQL over a fleet dataset.

    \b
    Example:
        auditor export reports/* --dataset fleet/
        auditor fleet report fleet/ --out reports/fleet
        auditor fleet query fleet/ "SELECT recipient, count(*) FROM flows GROUP BY 1"
    """


@fleet_group.command("report")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for fleet-report.html, fleet-report.json and the CSV files.",
)
@click.option(
    "--format", "formats", default="html,json,csv", show_default=True, help="Comma-separated."
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="duckdb",
    show_default=True,
    help="duckdb (in this process), dask (a dask.distributed cluster: --scheduler) or pandas.",
)
@click.option(
    "--scheduler",
    default=None,
    help="The dask scheduler's address, e.g. tcp://10.0.0.5:8786 (with --engine dask).",
)
@_json_option
@_handled()
def report(
    dataset: Path,
    out: Path,
    formats: str,
    engine: str,
    scheduler: str | None,
    as_json: bool,
) -> None:
    """Per vendor, model, build and recipient: which identifiers are sent, in how many
    sessions and flows, and since which build; flows, rates and hosts per recipient.

    \b
    Example:
        auditor fleet report fleet/
        auditor fleet report fleet/ --out reports/fleet --format json,csv --json
        auditor fleet report fleet/ --engine dask --scheduler tcp://10.0.0.5:8786
    """
    from auditor.fleet.report import dumps, report_command, summary_lines

    res = report_command(
        dataset,
        out,
        [f.strip() for f in formats.split(",") if f.strip()],
        engine=engine,
        scheduler=scheduler,
        on_step=None if as_json else lambda m: echo(m, err=True),
    )
    if as_json:
        emit_json_text(dumps(res.doc).rstrip("\n"))
        return
    for line in summary_lines(res.doc):
        echo(terminal_line(line), fit=True)
    echo(f"report {terminal_line(res.out)}", err=True)


@fleet_group.command("query")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.argument("sql")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@_json_option
@_handled()
def query(dataset: Path, sql: str, as_csv: bool, as_json: bool) -> None:
    """Run SQL (DuckDB's dialect, queries only) over the dataset's tables: flows,
    endpoints, findings, identifiers and sessions (`auditor fleet tables` lists their
    columns; docs/fleet.md describes them).

    \b
    Example:
        auditor fleet query fleet/ "SELECT vendor, build, count(*) AS n FROM sessions GROUP BY ALL"
        auditor fleet query fleet/ "SELECT * FROM identifiers WHERE identifier = 'imei'" --json
    """
    from auditor.fleet.dataset import Dataset
    from auditor.fleet.engines import query as run

    df = run(Dataset.open(dataset), sql)
    if as_json:
        emit_json(_records(df))
    elif as_csv:
        import csv
        import io

        from auditor.analysis.escape import csv_cell

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([csv_cell(str(c)) for c in df.columns])
        for row in _records(df):
            w.writerow([csv_cell(v) for v in row.values()])
        click.echo(buf.getvalue(), nl=False)
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 200):
            echo(df.to_string(index=False) if len(df.columns) else "(no columns)")


@fleet_group.command("tables")
@_json_option
def tables(as_json: bool) -> None:
    """The dataset's tables and their columns (the names SQL uses).

    \b
    Example:
        auditor fleet tables --json
    """
    from auditor.fleet.schema import FLEET_SCHEMA_VERSION, TABLES

    described = {t: {f.name: str(f.type) for f in s} for t, s in TABLES.items()}
    if as_json:
        emit_json({"fleet_schema_version": FLEET_SCHEMA_VERSION, "tables": described})
        return
    for t, cols in described.items():
        echo(f"{t}: " + ", ".join(f"{c} {ty}" for c, ty in cols.items()))


def _records(df: Any) -> list[dict[str, Any]]:
    """JSON-ready rows: timestamps as ISO 8601, missing values as null, lists as lists."""
    import json

    text = df.to_json(orient="records", date_format="iso", date_unit="us")
    rows: list[dict[str, Any]] = json.loads(text)
    return rows

"""``auditor fleet report``: per vendor, model, build and recipient, which identifiers are
sent, how often, and since which build; written as JSON, CSV and HTML from the
:class:`~auditor.fleet.engines.Aggregates` of any engine (``docs/fleet.md``).

A build's place in time is when the dataset first saw it: builds of one vendor and model
are ordered by their first session's start (then by name), and "since" names the first
build, in that order, in which the recipient received the identifier.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.analysis.escape import html_text
from auditor.analysis.report.files import write_csv
from auditor.analysis.report.page import CSP
from auditor.fleet.dataset import Dataset
from auditor.fleet.engines import Aggregates, aggregates
from auditor.fsutil import private_dir, write_private
from auditor.timeutil import now_iso

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
MAX_HOSTS = 20  # hosts listed per recipient row (the count says how many there were)
FORMATS = ("html", "json", "csv")
JSON_NAME, HTML_NAME = "fleet-report.json", "fleet-report.html"
RECIPIENTS_CSV, IDENTIFIERS_CSV = "fleet-recipients.csv", "fleet-identifiers.csv"
RECIPIENT_FIELDS = [
    "vendor", "model", "build", "recipient", "sessions", "sessions_of_build", "share",
    "flows", "flows_per_hour", "bytes_up", "bytes_down", "hosts_count", "identifiers",
]  # fmt: skip
IDENTIFIER_FIELDS = [
    "vendor", "model", "build", "recipient", "identifier", "sessions", "sessions_of_build",
    "share", "flows", "encodings", "since_build", "since", "builds_sent", "in_latest_build",
]  # fmt: skip


def _iso(t: Any) -> str | None:
    if t is None or pd.isna(t):
        return None
    return pd.Timestamp(t).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _records(df: pd.DataFrame) -> list[Any]:
    """Rows as plain objects with attribute access (columns are known names)."""
    from types import SimpleNamespace

    cols = [str(c) for c in df.columns]
    return [
        SimpleNamespace(**dict(zip(cols, row, strict=True)))
        for row in df.itertuples(index=False, name=None)
    ]


def _share(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


def build_report(agg: Aggregates, *, generated_at: str | None = None) -> dict[str, Any]:
    """The report document (``fleet-report.json``) from the aggregates alone."""
    builds: dict[tuple[str, str, str], dict[str, Any]] = {}
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in _records(agg.builds):
        b = {
            "vendor": r.vendor,
            "model": r.model,
            "build": r.build,
            "sessions": int(r.sessions),
            "first_started": _iso(r.first_started),
            "last_started": _iso(r.last_started),
            "hours": round(int(r.milliseconds) / 3_600_000, 3),
        }
        builds[(r.vendor, r.model, r.build)] = b
        by_model[(r.vendor, r.model)].append(b)
    for group in by_model.values():
        group.sort(key=lambda b: (b["first_started"] is None, b["first_started"] or "", b["build"]))
        for n, b in enumerate(group, 1):
            b["order"] = n
            b["latest"] = n == len(group)

    hosts: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for h in _records(agg.hosts):
        hosts[(h.vendor, h.model, h.build, h.recipient)].append(
            {"host": h.host, "flows": int(h.flows)}
        )
    encodings: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for e in _records(agg.encodings):
        encodings[(e.vendor, e.model, e.build, e.recipient, e.identifier)].append(e.encoding)
    # (vendor, model, recipient, identifier) -> the builds (their order) that sent it
    sent_in: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for i in _records(agg.identifiers):
        got = builds.get((i.vendor, i.model, i.build))
        if got is not None:
            sent_in[(i.vendor, i.model, i.recipient, i.identifier)].append(got)

    rows: dict[tuple[str, ...], dict[str, Any]] = {}

    def row(key: tuple[str, str, str, str]) -> dict[str, Any]:
        if key not in rows:
            b = builds.get(key[:3]) or {"sessions": 0, "hours": 0.0, "order": None}
            rows[key] = {
                "vendor": key[0],
                "model": key[1],
                "build": key[2],
                "build_order": b["order"],
                "recipient": key[3],
                "sessions": 0,
                "sessions_of_build": b["sessions"],
                "share": None,
                "flows": 0,
                "flows_per_hour": None,
                "bytes_up": 0,
                "bytes_down": 0,
                "hosts_count": 0,
                "hosts": [],
                "identifiers": [],
            }
        return rows[key]

    for r in _records(agg.recipients):
        key = (r.vendor, r.model, r.build, r.recipient)
        out = row(key)
        hours = (builds.get(key[:3]) or {}).get("hours") or 0.0
        hs = sorted(hosts.get(key, []), key=lambda h: (-h["flows"], h["host"]))
        out.update(
            sessions=int(r.sessions),
            share=_share(int(r.sessions), out["sessions_of_build"]),
            flows=int(r.flows),
            flows_per_hour=round(int(r.flows) / hours, 3) if hours else None,
            bytes_up=int(r.bytes_up),
            bytes_down=int(r.bytes_down),
            hosts_count=len(hs),
            hosts=hs[:MAX_HOSTS],
        )
    for i in _records(agg.identifiers):
        out = row((i.vendor, i.model, i.build, i.recipient))
        seen = sorted(sent_in[(i.vendor, i.model, i.recipient, i.identifier)], key=_order)
        first = seen[0] if seen else None
        out["identifiers"].append(
            {
                "identifier": i.identifier,
                "sessions": int(i.sessions),
                "share": _share(int(i.sessions), out["sessions_of_build"]),
                "flows": int(i.flows),
                "encodings": sorted(
                    encodings.get((i.vendor, i.model, i.build, i.recipient, i.identifier), [])
                ),
                "since_build": first["build"] if first else None,
                "since": first["first_started"] if first else None,
                "builds_sent": len(seen),
                "in_latest_build": any(b.get("latest") for b in seen),
            }
        )
    for out in rows.values():
        out["identifiers"].sort(key=lambda x: x["identifier"])
    ordered = sorted(
        rows.values(),
        key=lambda r: (r["vendor"], r["model"], r["build_order"] or 0, r["build"], r["recipient"]),
    )
    build_list = sorted(builds.values(), key=lambda b: (b["vendor"], b["model"], b["order"]))
    return {
        "fleet_report_schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": generated_at or now_iso(),
        "totals": {
            "sessions": sum(b["sessions"] for b in build_list),
            "builds": len(build_list),
            "vendors": len({b["vendor"] for b in build_list}),
            "recipients": len({r["recipient"] for r in ordered}),
            "flows": sum(r["flows"] for r in ordered),
            "identifier_rows": sum(len(r["identifiers"]) for r in ordered),
        },
        "builds": build_list,
        "recipients": ordered,
    }


def _order(b: dict[str, Any]) -> tuple[int, str]:
    return (int(b.get("order") or 0), str(b["build"]))


# ---------------------------------------------------------------- files


def identifier_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in doc["recipients"]:
        for i in r["identifiers"]:
            out.append(
                {
                    **{k: r[k] for k in ("vendor", "model", "build", "recipient")},
                    **i,
                    "sessions_of_build": r["sessions_of_build"],
                    "encodings": "; ".join(i["encodings"]),
                }
            )
    return out


def recipient_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**r, "identifiers": "; ".join(i["identifier"] for i in r["identifiers"])}
        for r in doc["recipients"]
    ]


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return "<td class='none'>–</td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, float):
        return f"<td class='num'>{v:g}</td>"
    if isinstance(v, int):
        return f"<td class='num'>{v:,}</td>"
    return f"<td>{html_text(v, 300)}</td>"


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}
td.num{text-align:right}td.none{color:#999}th{background:#f2f2f2}
td{overflow-wrap:anywhere;max-width:28em}
"""


def html_page(doc: dict[str, Any]) -> str:
    t = doc["totals"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<title>Fleet report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Fleet report</h1>",
        f"<p>{t['sessions']:,} session(s) of {t['builds']:,} build(s) from "
        f"{t['vendors']:,} vendor(s); {t['flows']:,} flow(s) to {t['recipients']:,} "
        f"recipient(s). Generated {html_text(doc['generated_at'])}.</p>",
        "<h2>Builds</h2><table><tr><th>vendor</th><th>model</th><th>#</th><th>build</th>"
        "<th>sessions</th><th>first seen</th><th>hours recorded</th></tr>",
    ]
    for b in doc["builds"]:
        cells = [b[k] for k in ("vendor", "model", "order", "build", "sessions", "first_started")]
        parts.append("<tr>" + "".join(map(_cell, [*cells, b["hours"]])) + "</tr>")
    parts.append("</table>")
    parts.append(
        "<h2>Identifiers sent, per build and recipient</h2><table><tr><th>vendor</th>"
        "<th>model</th><th>build</th><th>recipient</th><th>identifier</th><th>sessions</th>"
        "<th>share</th><th>flows</th><th>encodings</th><th>since build</th>"
        "<th>in latest build</th></tr>"
    )
    for r in identifier_rows(doc):
        keys = ("vendor", "model", "build", "recipient", "identifier", "sessions", "share")
        cells = [r[k] for k in keys]
        cells += [r["flows"], r["encodings"], r["since_build"], r["in_latest_build"]]
        parts.append("<tr>" + "".join(map(_cell, cells)) + "</tr>")
    parts.append("</table>")
    parts.append(
        "<h2>Recipients, per build</h2><table><tr><th>vendor</th><th>model</th><th>build</th>"
        "<th>recipient</th><th>sessions</th><th>flows</th><th>flows per hour</th>"
        "<th>bytes up</th><th>bytes down</th><th>hosts</th></tr>"
    )
    for r in doc["recipients"]:
        cells = [r[k] for k in ("vendor", "model", "build", "recipient", "sessions", "flows")]
        cells += [r["flows_per_hour"], r["bytes_up"], r["bytes_down"]]
        names = ", ".join(h["host"] for h in r["hosts"])
        more = r["hosts_count"] - len(r["hosts"])
        cells.append(names + (f" (+{more} more)" if more > 0 else ""))
        parts.append("<tr>" + "".join(map(_cell, cells)) + "</tr>")
    parts.append("</table></body></html>\n")
    return "".join(parts)


@dataclass
class ReportOutcome:
    doc: dict[str, Any]
    out: Path
    files: list[Path]


def write_report(doc: dict[str, Any], out: Path, formats: list[str]) -> list[Path]:
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        from auditor.fleet.dataset import FleetError

        raise FleetError(f"unknown format {', '.join(bad)} (html, json, csv)")
    private_dir(out)
    written = []
    if "json" in formats:
        write_private(out / JSON_NAME, dumps(doc))
        written.append(out / JSON_NAME)
    if "csv" in formats:
        write_csv(out / RECIPIENTS_CSV, recipient_rows(doc), RECIPIENT_FIELDS)
        write_csv(out / IDENTIFIERS_CSV, identifier_rows(doc), IDENTIFIER_FIELDS)
        written += [out / RECIPIENTS_CSV, out / IDENTIFIERS_CSV]
    if "html" in formats:
        write_private(out / HTML_NAME, html_page(doc))
        written.append(out / HTML_NAME)
    return written


def report_command(
    dataset: Path,
    out: Path,
    formats: list[str],
    *,
    engine: str = "duckdb",
    scheduler: str | None = None,
    generated_at: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ReportOutcome:
    ds = Dataset.open(Path(dataset))
    if on_step:
        on_step(f"aggregating on {engine}")
    agg = aggregates(ds, engine, scheduler)
    doc = build_report(agg, generated_at=generated_at)
    files = write_report(doc, Path(out), formats)
    return ReportOutcome(doc, Path(out), files)


def summary_lines(doc: dict[str, Any]) -> list[str]:
    t = doc["totals"]
    lines = [
        f"{t['sessions']} session(s), {t['builds']} build(s), {t['vendors']} vendor(s), "
        f"{t['flows']} flow(s) to {t['recipients']} recipient(s)"
    ]
    for r in identifier_rows(doc):
        lines.append(
            f"{r['vendor']} {r['model']} {r['build']}: {r['identifier']} to {r['recipient']} "
            f"in {r['sessions']}/{r['sessions_of_build']} session(s), {r['flows']} flow(s), "
            f"since {r['since_build']}"
        )
    return lines

"""The campaign report: ``matrix.json``, ``report.html`` and ``summary.md`` in the campaign
folder, from the campaign manifest and each session's own ``findings.json``.

Every value that came from a handset or its traffic (vendor, model, organisations, hosts,
identifiers) is escaped for where it is shown; the page runs no script and loads nothing,
and links only to the sessions' own reports inside the campaign folder.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor.analysis import diff
from auditor.analysis.escape import html_text, md_text
from auditor.analysis.report.page import CSP
from auditor.campaign import matrix as mx
from auditor.errors import AuditorError

MATRIX_JSON, REPORT_HTML, SUMMARY_MD = "matrix.json", "report.html", "summary.md"
MAX_IDS_SHOWN = 8

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}
th{background:#f4f4f4}
td.n{text-align:right}
td.empty{color:#aaa;text-align:center}
.ids{font-family:monospace;color:#a00}
.bad{color:#a00;font-weight:bold}
small{color:#666}
"""


def handset_entries(
    folder: Path, manifest: Mapping[str, Any]
) -> tuple[list[mx.HandsetEntry], dict[str, dict[str, Any]], list[str]]:
    """Each handset as the matrix shows it, the findings.json of those with a report, and a
    warning for each report that could not be read."""
    from auditor.session.manifest import read_manifest_lenient

    entries, docs, warnings = [], {}, []
    for h in manifest.get("handsets") or []:
        serial = str(h["serial"])
        device: Mapping[str, Any] = {}
        doc = None
        duration = None
        if h.get("report"):
            try:
                doc = diff.read_findings((folder / h["report"]).parent)
            except AuditorError as exc:
                warnings.append(f"{serial}: {exc}")
        if doc is not None:
            docs[serial] = doc
            device = _dict(doc.get("device"))
            duration = diff.recorded_seconds(doc)
        elif h.get("session"):
            try:
                m, _ = read_manifest_lenient(folder / h["session"])
                device = _dict(m.get("device"))
            except AuditorError as exc:
                warnings.append(f"{serial}: {exc}")
        f = mx.device_fields(device)
        entries.append(
            mx.HandsetEntry(
                serial=serial,
                vendor=f["vendor"],
                model=f["model"],
                build=f["build"],
                fingerprint=f["fingerprint"],
                outcome=str(h.get("outcome")),
                stopped_by=h.get("stopped_by"),
                restored=h.get("restored"),
                detail=str(h.get("detail") or ""),
                session=h.get("session"),
                report=h.get("report") if doc is not None else None,
                duration_seconds=duration,
                flows=h.get("flows"),
            )
        )
    return entries, docs, warnings


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def campaign_meta(manifest: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("campaign_id", "status", "started_at", "ended_at", "scenario_name", "duration")
    return {k: manifest.get(k) for k in keys}


def write_reports(folder: Path, manifest: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
    entries, docs, warnings = handset_entries(folder, manifest)
    doc = mx.build_matrix(campaign_meta(manifest), entries, docs, warnings)
    if warnings:
        manifest["warnings"] = warnings
    files = []
    for name, text in (
        (MATRIX_JSON, json.dumps(doc, indent=2, ensure_ascii=False) + "\n"),
        (REPORT_HTML, render_html(doc)),
        (SUMMARY_MD, render_md(doc)),
    ):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        files.append(path)
    return doc, files


# ---------------------------------------------------------------------------------- pieces


def _rate(x: Any) -> str:
    return "-" if x is None else f"{x:g}"


def _ids(ids: Sequence[str]) -> str:
    more = len(ids) - MAX_IDS_SHOWN
    return ", ".join(ids[:MAX_IDS_SHOWN]) + (f" (+{more})" if more > 0 else "")


def _cells(doc: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(c["serial"], c["recipient"]): c for c in doc["cells"]}


def _column(r: Mapping[str, Any]) -> str:
    return f"{r['recipient']} ({r['country']})" if r.get("country") else str(r["recipient"])


def _status(h: Mapping[str, Any]) -> str:
    text = str(h["outcome"])
    if h.get("stopped_by") and h["outcome"] != "complete":
        text += f" ({h['stopped_by']})"
    if h.get("restored") is False:
        text += ", NOT restored"
    return text


def sentences(doc: Mapping[str, Any]) -> list[str]:
    """One line per handset: what the terminal and the summary show first."""
    out = []
    cells = doc["cells"]
    for h in doc["handsets"]:
        mine = [c for c in cells if c["serial"] == h["serial"]]
        with_ids = sorted({c["recipient"] for c in mine if c["identifiers"]})
        out.append(
            f"{h['serial']} ({mx.HandsetEntry(**h).label()}): {_status(h)}; "
            f"{len(mine)} recipient(s)"
            + (f", identifiers to {', '.join(with_ids)}" if with_ids else "")
        )
    return out


def _href(path: str | None) -> str | None:
    """A link into the campaign folder, to a report this campaign wrote."""
    if not path or path.startswith(("/", "\\")) or ".." in Path(path).parts:
        return None
    return html.escape(path, quote=True)


# -------------------------------------------------------------------------------- markdown


def render_md(doc: Mapping[str, Any]) -> str:
    c = doc["campaign"]
    lines = [
        f"# Campaign {md_text(c['campaign_id'])}",
        "",
        f"Scenario {md_text(c['scenario_name'])}"
        + (f", duration {md_text(c['duration'])}" if c.get("duration") else "")
        + f"; {md_text(c['started_at'])} to {md_text(c['ended_at'])}; {md_text(c['status'])}.",
        "",
    ]
    lines += [f"- {md_text(s)}" for s in sentences(doc)]
    lines += ["", "## Handsets", ""]
    lines += [
        "| serial | vendor | model | build | outcome | recorded | flows | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in doc["handsets"]:
        rep = f"[report]({h['report']})" if _href(h["report"]) else "-"
        lines.append(
            "| "
            + " | ".join(
                [
                    md_text(h["serial"]),
                    md_text(h["vendor"] or "-"),
                    md_text(h["model"] or "-"),
                    md_text(h["build"] or "-"),
                    md_text(_status(h)),
                    "-" if h["duration_seconds"] is None else f"{h['duration_seconds']:g} s",
                    "-" if h["flows"] is None else str(h["flows"]),
                    rep,
                ]
            )
            + " |"
        )
    lines += ["", "## Handset x recipient", ""]
    cells = _cells(doc)
    head = ["handset", *(_column(r) for r in doc["recipients"])]
    lines.append("| " + " | ".join(md_text(x) for x in head) + " |")
    lines.append("|" + "---|" * len(head))
    for h in doc["handsets"]:
        row = [md_text(f"{mx.HandsetEntry(**h).label()} [{h['serial']}]")]
        for r in doc["recipients"]:
            cell = cells.get((h["serial"], r["recipient"]))
            if cell is None:
                row.append("")
                continue
            text = f"{cell['flows']} flows ({_rate(cell['flows_per_hour'])}/h)"
            if cell["identifiers"]:
                text += "; ids: " + _ids(cell["identifiers"])
            row.append(md_text(text))
        lines.append("| " + " | ".join(row) + " |")
    if doc.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {md_text(w)}" for w in doc["warnings"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ html


def _identifier_html(name: str, encodings: Sequence[str] | None) -> str:
    if not encodings:
        return html_text(name)
    return f"{html_text(name)} <small>({html_text(', '.join(encodings))})</small>"


def _cell_html(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "<td class=empty>-</td>"
    parts = [
        f"{cell['flows']} flows, {_rate(cell['flows_per_hour'])}/h",
        f"<br><small>{cell['bytes_up']} B up, {_rate(cell['bytes_up_per_hour'])} B/h</small>",
    ]
    if cell["identifiers"]:
        ids = ", ".join(_identifier_html(n, cell["encodings"].get(n)) for n in cell["identifiers"])
        parts.append(f"<br><span class=ids>{ids}</span>")
    if cell["hosts"]:
        parts.append(f"<br><small>{html_text(_ids(cell['hosts']))}</small>")
    href = _href(cell.get("report"))
    if href:
        parts.append(f'<br><a href="{href}">session report</a>')
    return "<td>" + "".join(parts) + "</td>"


def render_html(doc: Mapping[str, Any]) -> str:
    c = doc["campaign"]
    cells = _cells(doc)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>auditor campaign {html_text(c['campaign_id'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Campaign {html_text(c['campaign_id'])}</h1>",
        f"<p>Scenario <b>{html_text(c['scenario_name'])}</b>"
        + (f", duration {html_text(c['duration'])}" if c.get("duration") else "")
        + f"; {html_text(c['started_at'])} to {html_text(c['ended_at'])}; "
        f"{html_text(c['status'])}. Recipients are organisations as the analysis named them "
        "(the country is the organisation's, not where its servers stand); rates are per "
        "hour of each session's own recording.</p>",
        "<ul>",
        *(f"<li>{html_text(s)}</li>" for s in sentences(doc)),
        "</ul>",
        "<h2>Handset &times; recipient</h2><table><thead><tr><th>handset</th>",
        *(f"<th>{html_text(_column(r))}</th>" for r in doc["recipients"]),
        "</tr></thead><tbody>",
    ]
    for h in doc["handsets"]:
        bad = h["outcome"] != "complete"
        label = html_text(mx.HandsetEntry(**h).label())
        head = f"<th>{label}<br><small>{html_text(h['serial'])}</small>"
        head += f"<br><span class={'bad' if bad else 'ok'}>{html_text(_status(h))}</span>"
        href = _href(h.get("report"))
        if href:
            head += f'<br><a href="{href}">session report</a>'
        out.append(f"<tr>{head}</th>")
        out += [_cell_html(cells.get((h["serial"], r["recipient"]))) for r in doc["recipients"]]
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(
        "<h2>Handsets</h2><table><thead><tr><th>serial</th><th>vendor</th><th>model</th>"
        "<th>build</th><th>outcome</th><th>restored</th><th>recorded</th><th>flows</th>"
        "<th>session</th><th>detail</th></tr></thead><tbody>"
    )
    for h in doc["handsets"]:
        vals = [
            h["serial"],
            h["vendor"] or "-",
            h["model"] or "-",
            h["build"] or "-",
            h["outcome"] + (f" ({h['stopped_by']})" if h.get("stopped_by") else ""),
            {True: "yes", False: "NO", None: "-"}[h["restored"]],
            "-" if h["duration_seconds"] is None else f"{h['duration_seconds']:g} s",
            "-" if h["flows"] is None else h["flows"],
            h["session"] or "-",
            h["detail"],
        ]
        out.append("<tr>" + "".join(f"<td>{html_text(v)}</td>" for v in vals) + "</tr>")
    out.append("</tbody></table>")
    if doc.get("warnings"):
        out.append("<h2>Warnings</h2><ul>")
        out += [f"<li>{html_text(w)}</li>" for w in doc["warnings"]]
        out.append("</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)

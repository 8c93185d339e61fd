"""Writing the analysis: ``findings.json``, ``flows.csv``/``flows.parquet``, ``endpoints.csv``,
``summary.md`` and a self-contained ``report.html``.

The HTML loads nothing from the network and runs no script (its Content-Security-Policy
forbids both); charts are inline SVG. Every captured string goes through
:mod:`auditor.analysis.escape`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from auditor import columns as C
from auditor.analysis.escape import csv_cell, html_text, md_text

FORMATS = ("json", "csv", "md", "html")


def private_dir(path: Path) -> Path:
    """``path`` made owner-only (0700), with every folder this creates on the way: whatever
    the umask, reports of a phone's traffic are for their owner alone."""
    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is cut by the umask; chmod's is not
    os.chmod(path, 0o700)
    return path


def _private_file(path: Path) -> int:
    """A descriptor on a fresh ``path`` (a temporary name), 0600 even if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(_private_file(tmp), "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def dumps_findings(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False, default=str) + "\n"


def write_csv(path: Path, rows: Iterable[Mapping[Any, Any]], fields: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(_private_file(tmp), "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: csv_cell(row.get(k)) for k in fields})
    os.replace(tmp, path)


def flows_for_export(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in (C.START, C.END):
        if col not in out:
            continue
        out[col] = out[col].map(
            lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if not pd.isna(t) else None
        )
    keys = [c for c in (C.START, C.FLOW_ID) if c in out]
    return out.sort_values(keys, na_position="last").reset_index(drop=True) if keys else out


def write_report(
    out: Path, doc: dict[str, Any], flows: pd.DataFrame, formats: Iterable[str] = FORMATS
) -> list[Path]:
    private_dir(out)
    formats = set(formats)
    written = []
    if "json" in formats:
        public = {k: v for k, v in doc.items() if not k.startswith("_")}
        _write(out / "findings.json", dumps_findings(public))
        written.append(out / "findings.json")
    if "csv" in formats:
        exp = flows_for_export(flows)
        write_csv(out / "flows.csv", exp.to_dict("records"), list(exp.columns))
        try:
            safe = exp.astype({c: "string" for c in exp.columns if exp[c].dtype == object})
            tmp = out / ".flows.parquet.tmp"
            with os.fdopen(_private_file(tmp), "wb") as fh:
                safe.to_parquet(fh, index=False)
            os.replace(tmp, out / "flows.parquet")
            written.append(out / "flows.parquet")
        except (ImportError, ValueError) as exc:  # pragma: no cover - pyarrow is a dependency
            doc.setdefault("warnings", []).append(f"flows.parquet not written: {exc}")
        endpoints = doc.get("endpoints") or []
        fields = [
            "host", "ip", "organisation", "organisation_id", "parent", "country", "basis",
            "confidence", "conflicts", "hosted_by", "server_country", "categories",
            "state_control", "legal_exposure", "state_linked", "flows", "bytes_up",
            "bytes_down", "first_seen", "last_seen", "apps",
        ]  # fmt: skip
        write_csv(
            out / "endpoints.csv",
            (
                {
                    **e,
                    "categories": ";".join(e["categories"]),
                    "apps": ";".join(e["apps"]),
                    "conflicts": "; ".join(_evidence_text(x) for x in e.get("conflicts") or []),
                    "state_control": "; ".join(
                        f["statement"] for f in e.get("state_control") or []
                    ),
                    "legal_exposure": "; ".join(x["basis"] for x in e.get("legal_exposure") or []),
                }
                for e in endpoints
            ),
            fields,
        )
        written += [out / "flows.csv", out / "endpoints.csv"]
    if "md" in formats:
        _write(out / "summary.md", markdown(doc))
        written.append(out / "summary.md")
    if "html" in formats:
        _write(out / "report.html", html_report(doc, flows))
        written.append(out / "report.html")
    return written


# -------------------------------------------------------------------------------------- markdown


def _evidence_text(ev: dict[str, Any]) -> str:
    """``dataset (v2fly: domain:umeng.com): Umeng``: one rung of the evidence, in words."""
    detail = ev.get("detail") or ev.get("matched") or ""
    return f"{ev.get('basis')} ({detail}): {ev.get('name')}"


def _basis_text(e: dict[str, Any]) -> str:
    """The rung that named the recipient, its confidence, and any conflicting rung."""
    evidence = e.get("evidence") or []
    if not evidence:
        return "no evidence about the name"
    text = f"{_evidence_text(evidence[0])}, {e.get('confidence')} confidence"
    for c in e.get("conflicts") or []:
        text += f"; CONFLICT: {_evidence_text(c)}"
    return text


def _concern_text(e: dict[str, Any]) -> str:
    """State control and legal exposure in words (never a bare yes), each with its basis."""
    parts = [f"state control: {f['statement']}" for f in e.get("state_control") or []]
    parts += [f"legal exposure: {x['basis']}" for x in e.get("legal_exposure") or []]
    return " | ".join(" ".join(p.split()) for p in parts)


def markdown(doc: dict[str, Any]) -> str:
    dev = doc.get("device") or {}
    lines = [
        f"# auditor report: session {md_text(doc.get('session', {}).get('id'))}",
        "",
        f"Device: {md_text(dev.get('manufacturer'))} {md_text(dev.get('model'))} "
        f"(Android {md_text(dev.get('android_release'))}); "
        f"scenario {md_text((doc.get('method') or {}).get('scenario', {}).get('name'))}.",
        "",
        "## Findings",
        "",
        "| severity | finding | organisation | country | identifiers | flows |",
        "|---|---|---|---|---|---|",
    ]
    for f in doc.get("findings", []):
        lines.append(
            f"| {f['severity']} | {md_text(f['title'], 160)} | {md_text(f['organisation'])} "
            f"| {md_text(f['country'])} | {md_text(', '.join(f['identifiers']))} "
            f"| {len(f['flow_ids'])} |"
        )
    if doc.get("claims"):
        lines += ["", "## Claims", "", "| claim | verdict | reason |", "|---|---|---|"]
        for c in doc["claims"]:
            lines.append(f"| {md_text(c['claim'])} | {c['verdict']} | {md_text(c['reason'])} |")
    lines += [
        "",
        "## Endpoints",
        "",
        "The recipient comes from evidence about the name (basis, confidence); the hosting is "
        "the network and country the server stood in, never the recipient by itself.",
        "",
        "| host | recipient | HQ | basis | hosted by | state control / legal exposure "
        "| flows | up | down |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in doc.get("endpoints", []):
        lines.append(
            f"| {md_text(e['host'], 120)} | {md_text(e['organisation'] or 'unknown operator')} "
            f"| {md_text(e['country'])} | {md_text(_basis_text(e))} "
            f"| {md_text(e.get('hosted_by') or '-', 160)} "
            f"| {md_text(_concern_text(e) or '-', 300)} | {e['flows']} "
            f"| {e['bytes_up']} | {e['bytes_down']} |"
        )
    cov = doc.get("coverage") or {}
    if doc.get("packets"):
        lines += [
            "",
            "## Packets and the proxy",
            "",
            f"{int(cov.get('packets') or 0)} packets in {int(cov.get('packet_files') or 0)} "
            f"capture file(s); {int(cov.get('bypassed_proxy') or 0)} flow(s) bypassed the proxy.",
            "",
            "| file | packets | flows | paths |",
            "|---|---|---|---|",
        ]
        for p in doc["packets"].values():
            for f in p.get("files") or []:
                paths = ", ".join(f"{k} {v}" for k, v in sorted((f.get("paths") or {}).items()))
                lines.append(
                    f"| {md_text(f.get('file'))} | {int(f.get('packets') or 0)} "
                    f"| {int(f.get('flows') or 0)} | {md_text(paths)} |"
                )
    if doc.get("warnings"):
        lines += ["", "## Warnings", ""]
        lines += [f"- {md_text(w, 400)}" for w in doc["warnings"]]
    m = doc.get("method") or {}
    lines += [
        "",
        "## Method",
        "",
        f"- Tool versions: {md_text(json.dumps(m.get('versions', {}), sort_keys=True))}",
        f"- Knowledge base: {md_text(m.get('knowledge_base'))}",
        f"- IP database: {md_text(m.get('ip_database'))}",
        f"- Policy: {md_text((m.get('policy') or {}).get('name'))}",
        f"- Coverage: {md_text(json.dumps(doc.get('coverage', {}), sort_keys=True))}",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ html

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1b1b1b}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.25rem .4rem;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}
th{background:#f3f3f3}code,pre{font-family:ui-monospace,monospace;font-size:12px}
pre{white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:.4rem}
.sev-critical{background:#7a0010;color:#fff}.sev-high{background:#c0392b;color:#fff}
.sev-medium{background:#e67e22}.sev-low{background:#f1c40f}.sev-info{background:#ddd}
.verdict-contradicted{color:#a00;font-weight:bold}.verdict-supported_by_this_capture{color:#060}
mark{background:#ffe066}.muted{color:#666}
"""


def _e(v: Any, limit: int | None = 400) -> str:
    return html_text(v, limit)


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bar_svg(title: str, items: list[tuple[str, int, int]]) -> str:
    """Horizontal bars of bytes up (dark) and down (light) per label."""
    if not items:
        return "<p class='muted'>no data</p>"
    items = items[:20]
    peak = max(max(u, d) for _, u, d in items) or 1
    h = 22 * len(items) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="720" height="{h}" role="img" '
        f'aria-label="{_e(title)}">'
    ]
    for i, (label, up, down) in enumerate(items):
        y = 5 + i * 22
        wu, wd = int(400 * up / peak), int(400 * down / peak)
        parts.append(f'<text x="0" y="{y + 13}" font-size="11">{_e(label, 40)}</text>')
        parts.append(f'<rect x="250" y="{y}" width="{wu}" height="9" fill="#34495e"/>')
        parts.append(f'<rect x="250" y="{y + 10}" width="{wd}" height="9" fill="#95a5a6"/>')
        parts.append(
            f'<text x="{255 + max(wu, wd)}" y="{y + 13}" font-size="10">'
            f"{up:,} up / {down:,} down</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline_svg(flows: pd.DataFrame) -> str:
    df = flows.dropna(subset=[C.START])
    if df.empty:
        return "<p class='muted'>no flows</p>"
    org_col = C.ORGANISATION_NAME if C.ORGANISATION_NAME in df else C.ORGANISATION
    orgs = sorted({str(o) if isinstance(o, str) and o else "(unknown)" for o in df[org_col]})
    t0 = df[C.START].min().timestamp()
    t1 = max(df[C.START].max().timestamp(), t0 + 1)
    h = 20 * len(orgs) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="720" height="{h}" role="img" '
        'aria-label="flows per organisation over time">'
    ]
    row_of = {o: i for i, o in enumerate(orgs)}
    for o, i in row_of.items():
        parts.append(f'<text x="0" y="{20 * i + 14}" font-size="11">{_e(o, 30)}</text>')
    for org, ts, rtype in zip(df[org_col], df[C.START], df[C.RECORD_TYPE], strict=True):
        key = str(org) if isinstance(org, str) and org else "(unknown)"
        x = 200 + int(500 * (ts.timestamp() - t0) / (t1 - t0))
        y = 20 * row_of[key] + 10
        color = "#c0392b" if rtype == "tls_failed" else "#2c3e50"
        parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>')
    parts.append(
        f'<text x="200" y="{h - 4}" font-size="10">0 s</text>'
        f'<text x="660" y="{h - 4}" font-size="10">{t1 - t0:.0f} s</text></svg>'
    )
    return "".join(parts)


def _excerpt(ev: dict[str, Any], needle_values: dict[str, list[str]]) -> str:
    text = _e(ev.get("excerpt") or "", 600)
    for value in needle_values.get(str(ev.get("identifier")), []):
        v = _e(value)
        if v and v in text:
            text = text.replace(v, f"<mark>{v}</mark>")
    return f"<pre>{text}</pre>" if text else ""


MAX_LOOKUPS_SHOWN = 200


def _packets_html(doc: dict[str, Any]) -> list[str]:
    """The packet captures: what each held, how its flows went (through the proxy, around
    it), and the DNS answers seen; the lookup list is cut at MAX_LOOKUPS_SHOWN (all are in
    findings.json)."""
    packets = doc.get("packets") or {}
    if not packets:
        return []
    cov = doc.get("coverage") or {}
    out = [
        "<h2 id='packets'>Packets and the proxy</h2>",
        f"<p>{int(cov.get('packets') or 0)} packets in {int(cov.get('packet_files') or 0)} "
        f"capture file(s); {int(cov.get('bypassed_proxy') or 0)} flow(s) left the phone "
        "outside the proxy, and are in the tables above as seen by the packets only. "
        f"The capture itself reported {int(cov.get('packets_dropped') or 0)} packet(s) "
        f"dropped and {int(cov.get('packets_lost') or 0)} received broken.</p>",
    ]
    files: list[list[str]] = []
    lookups: list[dict[str, Any]] = []
    for sid, p in sorted(packets.items()):
        for f in p.get("files") or []:
            paths = f.get("paths") or {}
            files.append(
                [
                    _e(sid),
                    _e(f.get("file")),
                    str(int(f.get("packets") or 0)),
                    str(int(f.get("flows") or 0)),
                    ", ".join(f"{_e(k)} {int(v)}" for k, v in sorted(paths.items())),
                    _e(f.get("error") or ""),
                ]
            )
        lookups += p.get("dns_lookups") or []
    out.append(_table(["session", "file", "packets", "flows", "paths", "error"], files))
    if lookups:
        out.append("<h3>DNS answers seen</h3>")
        shown = lookups[:MAX_LOOKUPS_SHOWN]
        out.append(
            _table(
                ["time", "name", "type", "server", "answers", "flow"],
                [
                    [
                        _e(x.get("ts")),
                        _e(x.get("qname")),
                        _e(x.get("qtype")),
                        _e(x.get("server")),
                        _e(", ".join(x.get("answers") or [])),
                        _e(x.get("flow_id")),
                    ]
                    for x in shown
                ],
            )
        )
        if len(lookups) > len(shown):
            out.append(f"<p class='muted'>… and {len(lookups) - len(shown)} more.</p>")
    return out


def html_report(doc: dict[str, Any], flows: pd.DataFrame) -> str:
    dev = doc.get("device") or {}
    sess = doc.get("session") or {}
    method = doc.get("method") or {}
    highlights: dict[str, list[str]] = doc.get("_highlight", {})
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        f"<title>auditor report {_e(sess.get('id'))}</title><style>{_CSS}</style></head><body>",
        f"<h1>auditor report</h1><p>Session <code>{_e(sess.get('id'))}</code>, "
        f"{_e(dev.get('manufacturer'))} {_e(dev.get('model'))}, "
        f"generated {_e(doc.get('generated_at'))}.</p>",
    ]
    # verdict table by organisation and country
    out.append("<h2 id='verdicts'>Who received what</h2>")
    rows = []
    for v in doc.get("verdicts", []):
        rows.append(
            [
                _e(v["organisation"]),
                _e(v["country"]),
                _e(_concern_text(v) or "none recorded", 600),
                _e(", ".join(v["identifiers"]) or "none"),
                str(v["flows"]),
                f"{v['bytes_up']:,}",
                f"<span class='sev-{_e(v['worst'])}'>{_e(v['worst'])}</span>",
            ]
        )
    out.append(
        _table(
            [
                "recipient",
                "HQ country",
                "state control / legal exposure (basis)",
                "identifiers",
                "flows",
                "bytes up",
                "worst finding",
            ],
            rows,
        )
    )
    if doc.get("claims"):
        out.append("<h2 id='claims'>Claims</h2>")
        out.append(
            _table(
                ["claim", "verdict", "reason", "flows"],
                [
                    [
                        _e(c["claim"]),
                        f"<span class='verdict-{_e(c['verdict'])}'>{_e(c['verdict'])}</span>",
                        _e(c["reason"]),
                        str(len(c["flow_ids"])),
                    ]
                    for c in doc["claims"]
                ],
            )
        )
    out.append("<h2 id='timeline'>Flows over time</h2>" + _timeline_svg(flows))
    out.append("<h2 id='bytes'>Bytes by recipient and by server country</h2>")
    out.append(_bar_svg("bytes by recipient", doc.get("_bytes_by_org", [])))
    out.append(_bar_svg("bytes by server country", doc.get("_bytes_by_country", [])))
    out.append("<h2 id='findings'>Findings</h2>")
    flows_by_id = {str(r[C.FLOW_ID]): r for r in flows.to_dict("records")}
    for f in doc.get("findings", []):
        out.append(
            f"<section class='finding'><h3><span class='sev-{_e(f['severity'])}'>"
            f"{_e(f['severity'])}</span> {_e(f['title'])}</h3>"
            f"<p>{_e(f['description'])}</p><p class='muted'>Rule {_e(f['rule'])}; "
            f"{_e('; '.join(f['citations']))}</p>"
        )
        if f["encodings"]:
            out.append(f"<p>Encodings: {_e(', '.join(f['encodings']))}</p>")
        for ev in f.get("evidence", [])[:5]:
            r = flows_by_id.get(str(ev["flow_id"]), {})
            out.append(
                f"<p><code>{_e(r.get(C.METHOD))} {_e(r.get(C.URL), 300)}</code> "
                f"({_e(ev['location'])} {_e(ev['detail'])}, {_e(ev['encoding'])})</p>"
            )
            out.append(_excerpt(ev, highlights))
        out.append(
            f"<p class='muted'>Flows: {_e(', '.join(f['flow_ids'][:10]))}"
            f"{' …' if len(f['flow_ids']) > 10 else ''}</p></section>"
        )
    out.append("<h2 id='endpoints'>Endpoints</h2>")
    out.append(
        _table(
            [
                "host",
                "recipient",
                "parent",
                "HQ",
                "basis",
                "hosted by",
                "categories",
                "flows",
                "up",
                "down",
                "apps",
                "sources",
            ],
            [
                [
                    _e(e["host"]),
                    _e(e["organisation"] or "unknown operator"),
                    _e(e["parent"]),
                    _e(e["country"]),
                    _e(_basis_text(e), 600),
                    _e(e.get("hosted_by") or "-", 300),
                    _e(", ".join(e["categories"])),
                    str(e["flows"]),
                    str(e["bytes_up"]),
                    str(e["bytes_down"]),
                    _e(", ".join(e["apps"])),
                    _e("; ".join(s.get("title", "") for s in e.get("sources", []))[:300]),
                ]
                for e in doc.get("endpoints", [])
            ],
        )
    )
    out += _packets_html(doc)
    out.append("<h2 id='device'>Device profile</h2>")
    out.append(
        _table(
            ["property", "value"],
            [[_e(k), _e(v)] for k, v in sorted(dev.items()) if not isinstance(v, list | dict)],
        )
    )
    out.append("<h2 id='method'>Method</h2>")
    out.append(
        _table(
            ["item", "value"],
            [
                [_e(k), f"<pre>{_e(json.dumps(v, indent=1, sort_keys=True), 4000)}</pre>"]
                for k, v in sorted(method.items())
            ],
        )
    )
    if doc.get("warnings"):
        out.append("<h2 id='warnings'>Warnings</h2><ul>")
        out += [f"<li>{_e(w)}</li>" for w in doc["warnings"]]
        out.append("</ul>")
    out.append("</body></html>\n")
    return "".join(out)

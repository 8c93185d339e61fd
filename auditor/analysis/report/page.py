"""``report.html``: one self-contained page that runs no script and loads nothing (its
Content-Security-Policy forbids both). Evidence folds away in ``<details>``, which needs no
script; the stylesheet (``report.css``) keeps wide content inside the page and prints every
fold open. Every captured string goes through :func:`auditor.analysis.escape.html_text`.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

import pandas as pd

from auditor import columns
from auditor.analysis.escape import html_text
from auditor.analysis.report.files import evidence_text
from auditor.analysis.report.story import (
    Group,
    Item,
    Link,
    Sentence,
    Story,
    build_story,
    flow_anchor,
    plural,
)
from auditor.intel.lookalike import shown_url

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)
MAX_LOOKUPS_SHOWN = 200
MAX_FLOWS_SHOWN = 500
MAX_EVIDENCE_SHOWN = 5
TIMELINE_BUCKETS = 200


@cache
def stylesheet() -> str:
    return files("auditor.analysis.report").joinpath("report.css").read_text(encoding="utf-8")


def _e(v: Any, limit: int | None = 400) -> str:
    return html_text(v, limit)


def _num(n: Any) -> str:
    try:
        return f"<span class='num'>{int(n):,}</span>"
    except (TypeError, ValueError):
        return ""


def _table(
    headers: list[str],
    rows: list[list[str]],
    numeric: set[int] | None = None,
    names: set[int] | None = None,
) -> str:
    """A table in its own scrolling box; ``numeric`` columns are right-aligned, never wrapped;
    ``names`` columns (hosts, files) keep room for a short name before they wrap."""
    cls = {i: " class=num" for i in numeric or set()} | {i: " class=name" for i in names or set()}
    head = "".join(f"<th{cls.get(i, '')}>{_e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls.get(i, '')}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return (
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def _sev(sev: Any) -> str:
    return f"<span class='sev sev-{_e(sev)}'>{_e(sev)}</span>"


def _link(link: Link) -> str:
    cls = " class='fl'" if link.anchor.startswith("f-") else ""  # F1, F2: kept whole
    return f"<a{cls} href='#{_e(link.anchor)}'>{_e(link.label, 200)}</a>"


# a number in running text, with its unit, kept on one line; entities are skipped whole
_NUMBER = re.compile(r"&#?\w+;|(?<![\w.&#-])(~?\d[\d,.:-]{0,24}(?:\s(?:s|UTC))?)(?![\w-])")


def _prose(text: str) -> str:
    """Escaped running text whose numbers, dates and times do not wrap."""

    def keep(m: re.Match[str]) -> str:
        return f"<span class='num'>{m.group(1)}</span>" if m.group(1) else m.group(0)

    return _NUMBER.sub(keep, _e(text, 2000))


def _sentence(s: Sentence) -> str:
    refs = ""
    if s.links:
        refs = " <span class='refs'>(" + ", ".join(_link(x) for x in s.links) + ")</span>"
    cls = " class='hedged'" if s.hedged else ""
    return f"<li{cls}>{_prose(s.text)}{refs}</li>"


# ------------------------------------------------------------------------------------ sections


def _summary(story: Story) -> list[str]:
    out = ["<section id='summary'><h2>Summary</h2><ul class='story'>"]
    out += [_sentence(s) for s in story.overview]
    for g in story.groups:
        out.append(
            f"<li class='recipient-line'><a href='#{g.anchor}'><strong>{_e(g.name)}</strong></a>"
            f" {_sev(g.worst)}<ul>"
        )
        out += [_sentence(s) for s in g.sentences]
        out.append("</ul></li>")
    out += [_sentence(s) for s in story.others]
    out += [_sentence(s) for s in story.claims]
    if story.gaps:
        out.append("<li class='recipient-line'><a href='#coverage'><strong>What could not be "
                   "inspected</strong></a><ul>")  # fmt: skip
        out += [_sentence(s) for s in story.gaps]
        out.append("</ul></li>")
    out.append("</ul></section>")
    return out


def _verdicts(doc: dict[str, Any], story: Story) -> list[str]:
    anchor = {g.key: g.anchor for g in story.groups}
    rows = []
    for v in doc.get("verdicts") or []:
        name = _e(v.get("organisation"))
        key = str(v.get("organisation"))
        if key in anchor:
            name = f"<a href='#{anchor[key]}'>{name}</a>"
        rows.append(
            [
                name,
                _e(v.get("country")),
                _e(concern_text(v) or "none recorded", 600),
                _e(", ".join(v.get("identifiers") or []) or "none"),
                _num(v.get("flows")),
                _num(v.get("bytes_up")),
                _sev(v.get("worst")),
            ]
        )
    headers = [
        "recipient", "HQ country", "state control / legal exposure (basis)", "identifiers",
        "flows", "bytes up", "worst finding",
    ]  # fmt: skip
    return ["<h2 id='verdicts'>Who received what</h2>", _table(headers, rows, {4, 5})]


def _evidence(ev: dict[str, Any], row: dict[str, Any], highlights: dict[str, list[str]]) -> str:
    where = f"{ev.get('location') or ''} {ev.get('detail') or ''}".strip()
    what = shown_url(row.get(columns.URL) or row.get(columns.NAME))
    head = (
        f"<p><code>{_e(row.get(columns.METHOD))} {_e(what, 300)}</code> "
        f"({_e(where)}, {_e(ev.get('encoding'))})</p>"
    )
    text = _e(ev.get("excerpt") or "", 600)
    for value in highlights.get(str(ev.get("identifier")), []):
        v = _e(value)
        if v and v in text:
            text = text.replace(v, f"<mark>{v}</mark>")
    return head + (f"<pre>{text}</pre>" if text else "")


def _data(data: dict[str, Any]) -> str:
    """A finding's figures, each as text (lists and tables shortened)."""
    if not data:
        return ""
    rows = []
    for k, v in data.items():
        if isinstance(v, list):
            shown = ", ".join(str(x) for x in v[:20]) + (f" … ({len(v)})" if len(v) > 20 else "")
        elif isinstance(v, dict):
            shown = ", ".join(f"{a} {b}" for a, b in list(v.items())[:20])
        else:
            shown = str(v)
        rows.append(f"<dt>{_e(k)}</dt><dd>{_e(shown, 600)}</dd>")
    return f"<dl class='data'>{''.join(rows)}</dl>"


def _finding(
    item: Item,
    flows_by_id: dict[str, dict[str, Any]],
    shown_flows: set[str],
    highlights: dict[str, list[str]],
) -> str:
    f = item.finding
    out = [
        f"<details class='finding' id='{item.anchor}'><summary><span class='label'>"
        f"{item.label}</span> {_sev(f.get('severity'))} {_e(f.get('title'), 600)}</summary>"
        "<div class='body'>",
        f"<p>{_e(f.get('description'), 1000)}</p>",
        f"<p class='muted'>Rule {_e(f.get('rule'))}; host {_e(f.get('host'), 300)}; "
        f"{_e('; '.join(f.get('citations') or []), 800)}</p>",
    ]
    if f.get("identifiers"):
        out.append(f"<p>Identifiers: {_e(', '.join(f['identifiers']))}</p>")
    if f.get("encodings"):
        out.append(f"<p>Encodings: {_e(', '.join(f['encodings']))}</p>")
    out.append(_data(f.get("data") or {}))
    evidence = f.get("evidence") or []
    for ev in evidence[:MAX_EVIDENCE_SHOWN]:
        out.append(_evidence(ev, flows_by_id.get(str(ev.get("flow_id")), {}), highlights))
    if len(evidence) > MAX_EVIDENCE_SHOWN:
        out.append(
            f"<p class='muted'>… and {plural(len(evidence) - MAX_EVIDENCE_SHOWN, 'more place')} "
            "(findings.json)</p>"
        )
    ids = [str(x) for x in f.get("flow_ids") or []]
    refs = [
        f"<a href='#{flow_anchor(x)}'>{_e(x, 200)}</a>" if x in shown_flows else _e(x, 200)
        for x in ids[:20]
    ]
    more = f" … and {len(ids) - 20} more" if len(ids) > 20 else ""
    out.append(f"<p class='muted'>{plural(len(ids), 'flow')}: {', '.join(refs)}{more}</p>")
    out.append("</div></details>")
    return "".join(out)


def _group(
    g: Group,
    flows_by_id: dict[str, dict[str, Any]],
    shown_flows: set[str],
    highlights: dict[str, list[str]],
) -> str:
    v = g.verdict
    hq = f" <span class='muted'>HQ {_e(g.country)}</span>" if g.country else ""
    out = [
        f"<section class='recipient worst-{_e(g.worst)}' id='{g.anchor}'>",
        f"<h3>{_e(g.name)}{hq} {_sev(g.worst)}</h3>",
        "<ul class='facts'>",
        *(f"<li{' class=hedged' if s.hedged else ''}>{_prose(s.text)}</li>" for s in g.sentences),
        "</ul>",
        f"<p class='figures'>{_num(v.get('flows'))} flows, {_num(v.get('bytes_up'))} bytes up; "
        f"{plural(len(g.items), 'finding')}.</p>",
    ]
    if g.endpoints:
        rows = [
            [
                _e(e.get("host"), 300),
                _e(basis_text(e), 600),
                _e(e.get("hosted_by") or "-", 300),
                _num(e.get("flows")),
                _num(e.get("bytes_up")),
                _num(e.get("bytes_down")),
            ]
            for e in g.endpoints
        ]
        out.append(
            f"<details class='servers'><summary>Servers and the evidence of who runs them "
            f"({len(g.endpoints)})</summary><div class='body'>"
            + _table(["host", "named by", "hosted by", "flows", "up", "down"], rows, {3, 4, 5}, {0})
            + "</div></details>"
        )
    out += [_finding(i, flows_by_id, shown_flows, highlights) for i in g.items]
    out.append("</section>")
    return "".join(out)


def _claims(doc: dict[str, Any]) -> list[str]:
    if not doc.get("claims"):
        return []
    rows = [
        [
            _e(c.get("claim")),
            f"<span class='verdict-{_e(c.get('verdict'))}'>{_e(c.get('verdict'))}</span>",
            _e(c.get("reason")),
            _num(len(c.get("flow_ids") or [])),
        ]
        for c in doc["claims"]
    ]
    return [
        "<h2 id='claims'>Claims</h2>",
        _table(["claim", "verdict", "reason", "flows"], rows, {3}),
    ]


def _coverage(doc: dict[str, Any], story: Story) -> list[str]:
    cov = doc.get("coverage") or {}
    out = ["<h2 id='coverage'>What could not be inspected</h2>"]
    if story.gaps:
        out.append("<ul class='story'>" + "".join(_sentence(s) for s in story.gaps) + "</ul>")
    else:
        out.append("<p>Every recorded connection was decrypted and went through the proxy.</p>")
    facts = [
        ("connections", cov.get("connections")),
        ("not decrypted", cov.get("not_decrypted")),
        ("bypassed the proxy", cov.get("bypassed_proxy")),
        ("seen only in packets", cov.get("seen_only_in_packets")),
        ("packet capture files", cov.get("packet_files")),
        ("items skipped", cov.get("skipped_total")),
    ]
    out.append(
        "<dl class='data'>"
        + "".join(f"<dt>{_e(k)}</dt><dd>{_num(v)}</dd>" for k, v in facts if v is not None)
        + "</dl>"
    )
    if cov.get("sessions_incomplete"):
        out.append("<h3>Sessions that did not end as planned</h3>")
        out.append(
            _table(
                ["session", "status", "stopped by"],
                [
                    [_e(s.get("session")), _e(s.get("status")), _e(s.get("stopped_by") or "-")]
                    for s in cov["sessions_incomplete"]
                ],
            )
        )
    skipped = cov.get("skipped") or []
    if skipped or cov.get("skipped_total"):
        out.append(
            f"<h3 id='skipped'>Skipped while reading "
            f"({_num(cov.get('skipped_total') or sum(int(x.get('count') or 0) for x in skipped))})"
            "</h3>"
        )
        out.append(
            _table(
                ["session", "file", "kind", "reason", "count", "examples"],
                [
                    [
                        _e(x.get("session")),
                        _e(x.get("file"), 300),
                        _e(x.get("kind")),
                        _e(x.get("reason"), 600),
                        _num(x.get("count")),
                        _e("; ".join(str(v) for v in (x.get("examples") or [])[:5]), 600),
                    ]
                    for x in skipped
                ],
                {4},
            )
        )
    return out


def _bars(title: str, items: list[Any]) -> str:
    """Bytes up (dark) and down (light) per label, as boxes whose labels wrap."""
    if not items:
        return "<p class='muted'>no data</p>"
    items = [tuple(x) for x in items[:20]]
    peak = max(max(int(u), int(d)) for _, u, d in items) or 1
    rows = [f"<div class='bars' role='list' aria-label='{_e(title)}'>"]
    for label, up, down in items:
        wu, wd = 100 * int(up) / peak, 100 * int(down) / peak
        rows.append(
            "<div class='bar-row' role='listitem'>"
            f"<span class='bar-label'>{_e(label, 200)}</span>"
            f"<span class='bar-track'><span class='bar up' style='width:{wu:.2f}%'></span>"
            f"<span class='bar down' style='width:{wd:.2f}%'></span></span>"
            f"<span class='bar-value'>{_num(up)} up / {_num(down)} down</span></div>"
        )
    rows.append("</div>")
    return "".join(rows)


_MARK_KINDS = {"scenario_mark": "mark", "device_rebooted": "reboot",
               "scenario_setting": "setting", "quic_blocked": "QUIC blocked"}  # fmt: skip


def _marks_of(doc: dict[str, Any]) -> list[tuple[float, str]]:
    """The scenario's marks, reboots and settings (``method.scenario_events``), as (time,
    label) for the timeline; labels are captured text: escaped where shown."""
    out = []
    for e in (doc.get("method") or {}).get("scenario_events") or []:
        if not isinstance(e, dict) or e.get("kind") not in _MARK_KINDS:
            continue
        try:
            ts = pd.Timestamp(str(e.get("ts"))).timestamp()
        except (ValueError, TypeError):
            continue
        what = _MARK_KINDS[str(e["kind"])]
        if e["kind"] == "scenario_mark":
            what = str(e.get("mark") or what)
        elif e["kind"] == "scenario_setting":
            what = f"{e.get('key')}: {e.get('found')} -> {e.get('set')}"
        out.append((ts, what))
    return sorted(out)


def _timeline(flows: pd.DataFrame, marks: list[tuple[float, str]] | None = None) -> str:
    """Flows per recipient over time: one dot per time slice that had a flow (red: a TLS
    handshake the phone refused); the scenario's marks on a row of their own, and listed
    with their times below (a line for each, readable in print)."""
    if columns.START not in flows or flows.empty:
        return "<p class='muted'>no flows</p>"
    df = flows.dropna(subset=[columns.START])
    if df.empty:
        return "<p class='muted'>no flows</p>"
    org_col = columns.ORGANISATION_NAME if columns.ORGANISATION_NAME in df else columns.ORGANISATION
    orgs = [
        str(o) if isinstance(o, str) and o else "(unknown operator)"
        for o in (df[org_col] if org_col in df else [None] * len(df))
    ]
    kinds = list(df[columns.RECORD_TYPE]) if columns.RECORD_TYPE in df else [None] * len(df)
    t0 = df[columns.START].min().timestamp()
    t1 = max(df[columns.START].max().timestamp(), t0 + 1)
    dots: dict[str, dict[int, bool]] = {}
    for org, ts, kind in zip(orgs, df[columns.START], kinds, strict=True):
        b = min(TIMELINE_BUCKETS - 1, int(TIMELINE_BUCKETS * (ts.timestamp() - t0) / (t1 - t0)))
        row = dots.setdefault(org, {})
        row[b] = row.get(b, False) or kind == "tls_failed"
    out = ["<div class='timeline'>"]
    marks = marks or []
    if marks:
        ticks = "".join(
            f"<span class='mark' title='{_e(label, 200)}' style='left:"
            f"{100 * min(1.0, max(0.0, (ts - t0) / (t1 - t0))):.2f}%'></span>"
            for ts, label in marks
        )
        out.append(
            "<div class='tl-row'><span class='tl-label'><em>scenario</em></span>"
            f"<span class='tl-track'>{ticks}</span></div>"
        )
    for org in sorted(dots):
        spans = "".join(
            f"<span{' class=failed' if failed else ''} style='left:"
            f"{100 * (b + 0.5) / TIMELINE_BUCKETS:.2f}%'></span>"
            for b, failed in sorted(dots[org].items())
        )
        out.append(
            f"<div class='tl-row'><span class='tl-label'>{_e(org, 200)}</span>"
            f"<span class='tl-track'>{spans}</span></div>"
        )
    out.append(
        f"<div class='tl-row'><span></span><span class='tl-axis'><span class='num'>0 s</span>"
        f"<span class='num'>{t1 - t0:,.0f} s</span></span></div></div>"
    )
    if marks:
        out.append("<ol class='marks'>")
        out += [
            f"<li><span class='num'>{ts - t0:+,.0f} s</span> {_e(label, 200)}</li>"
            for ts, label in marks[:100]
        ]
        out.append("</ol>")
    return "".join(out)


def _endpoints(doc: dict[str, Any]) -> list[str]:
    headers = [
        "host", "recipient", "parent", "HQ", "basis", "hosted by", "categories", "flows", "up",
        "down", "apps", "sources",
    ]  # fmt: skip
    rows = [
        [
            _e(e.get("host"), 300),
            _e(e.get("organisation") or "unknown operator"),
            _e(e.get("parent")),
            _e(e.get("country")),
            _e(basis_text(e), 600),
            _e(e.get("hosted_by") or "-", 300),
            _e(", ".join(e.get("categories") or [])),
            _num(e.get("flows")),
            _num(e.get("bytes_up")),
            _num(e.get("bytes_down")),
            _e(", ".join(e.get("apps") or [])),
            _e("; ".join(str(s.get("title", "")) for s in e.get("sources") or [])[:300]),
        ]
        for e in doc.get("endpoints") or []
    ]
    return ["<h2 id='endpoints'>Endpoints</h2>", _table(headers, rows, {7, 8, 9}, {0})]


def _flow_index(story: Story, flows_by_id: dict[str, dict[str, Any]]) -> tuple[list[str], set[str]]:
    """The flows the findings cite, each with an anchor the findings link to."""
    cited = [f for f in story.flow_ids if f in flows_by_id]
    if not cited:
        return [], set()

    def when(fid: str) -> str:
        t = flows_by_id[fid].get(columns.START)
        return "" if t is None or pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S")

    cited.sort(key=lambda f: (when(f), f))
    shown = cited[:MAX_FLOWS_SHOWN]
    rows = []
    for fid in shown:
        r = flows_by_id[fid]
        # a lookalike host in a URL reads as the name it imitates: show it as the name is
        what = shown_url(r.get(columns.URL)) or r.get(columns.NAME) or r.get(columns.HOST)
        method = r.get(columns.METHOD) or r.get(columns.TRANSPORT) or ""
        rows.append(
            f"<tr id='{flow_anchor(fid)}'><td class=name>{_e(fid, 200)}</td>"
            f"<td class=num>{_e(when(fid))}</td><td>{_e(r.get(columns.APPS) or '')}</td>"
            f"<td><code>{_e(method)} {_e(what, 300)}</code></td>"
            f"<td>{_e(r.get(columns.ORGANISATION_NAME) or 'unknown operator')}</td>"
            f"<td class=num>{_num(r.get(columns.BYTES_UP))}</td>"
            f"<td class=num>{_num(r.get(columns.BYTES_DOWN))}</td></tr>"
        )
    head = "".join(
        f"<th{' class=num' if h in ('time', 'up', 'down') else ''}>{h}</th>"
        for h in ("flow", "time", "app", "request", "recipient", "up", "down")
    )
    out = [
        "<h2 id='flows'>Flows behind the findings</h2>",
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
        "</tbody></table></div>",
    ]
    if len(cited) > len(shown):
        out.append(f"<p class='muted'>… and {len(cited) - len(shown)} more in flows.csv.</p>")
    return out, set(shown)


def _packets(doc: dict[str, Any]) -> list[str]:
    """The packet captures: what each held, how its flows went (through the proxy, around
    it), and the DNS answers seen; the lookup list is cut at MAX_LOOKUPS_SHOWN (all are in
    findings.json)."""
    packets = doc.get("packets") or {}
    if not packets:
        return []
    cov = doc.get("coverage") or {}
    out = [
        "<h2 id='packets'>Packets and the proxy</h2>",
        f"<p>{_num(cov.get('packets') or 0)} packets in {_num(cov.get('packet_files') or 0)} "
        f"capture file(s); {_num(cov.get('bypassed_proxy') or 0)} flow(s) left the phone "
        "outside the proxy, and are in the tables above as seen by the packets only. "
        f"The capture itself reported {_num(cov.get('packets_dropped') or 0)} packet(s) "
        f"dropped and {_num(cov.get('packets_lost') or 0)} received broken.</p>",
    ]
    files_rows: list[list[str]] = []
    lookups: list[dict[str, Any]] = []
    for sid, p in sorted(packets.items()):
        for f in p.get("files") or []:
            paths = f.get("paths") or {}
            files_rows.append(
                [
                    _e(sid),
                    _e(f.get("file")),
                    _num(f.get("packets") or 0),
                    _num(f.get("flows") or 0),
                    ", ".join(f"{_e(k)} {int(v)}" for k, v in sorted(paths.items())),
                    _e(f.get("error") or ""),
                ]
            )
        lookups += p.get("dns_lookups") or []
    out.append(
        _table(["session", "file", "packets", "flows", "paths", "error"], files_rows, {2, 3}, {1})
    )
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


def basis_text(e: dict[str, Any]) -> str:
    """The rung that named the recipient, its confidence, and any conflicting rung."""
    evidence = e.get("evidence") or []
    if not evidence:
        return "no evidence about the name"
    text = f"{evidence_text(evidence[0])}, {e.get('confidence')} confidence"
    for c in e.get("conflicts") or []:
        text += f"; CONFLICT: {evidence_text(c)}"
    return text


def concern_text(e: dict[str, Any]) -> str:
    """State control and legal exposure in words (never a bare yes), each with its basis."""
    parts = [f"state control: {f['statement']}" for f in e.get("state_control") or []]
    parts += [f"legal exposure: {x['basis']}" for x in e.get("legal_exposure") or []]
    return " | ".join(" ".join(p.split()) for p in parts)


def _header(doc: dict[str, Any], story: Story) -> list[str]:
    sess = doc.get("session") or {}
    if len(story.sessions) > 1:
        sessions = "Sessions " + ", ".join(f"<code>{_e(s)}</code>" for s in story.sessions)
    else:
        sessions = f"Session <code>{_e(sess.get('id'))}</code>"
    parts = [sessions, _e(story.device)]
    if story.scenario:
        parts.append(f"scenario {_e(story.scenario)}")
    generated = doc.get("generated_at")
    if generated:
        parts.append(f"generated {_e(generated)}")
    return [f"<h1>auditor report</h1><p class='meta'>{'; '.join(parts)}.</p>"]


_TOC = (
    ("summary", "Summary"), ("verdicts", "Who received what"), ("findings", "Findings"),
    ("claims", "Claims"), ("coverage", "Not inspected"), ("timeline", "Timeline"),
    ("bytes", "Bytes"), ("endpoints", "Endpoints"), ("flows", "Flows"),
    ("packets", "Packets"), ("device", "Device"), ("method", "Method"), ("warnings", "Warnings"),
)  # fmt: skip


def html_report(doc: dict[str, Any], flows: pd.DataFrame) -> str:
    story = build_story(doc)
    dev = doc.get("device") or {}
    method = doc.get("method") or {}
    highlights: dict[str, list[str]] = doc.get("_highlight", {})
    flows_by_id: dict[str, dict[str, Any]] = (
        {
            str(r[columns.FLOW_ID]): {str(k): v for k, v in r.items()}
            for r in flows.to_dict("records")
        }
        if columns.FLOW_ID in flows
        else {}
    )
    flow_section, shown_flows = _flow_index(story, flows_by_id)
    body: list[str] = []
    body += _summary(story)
    body += _verdicts(doc, story)
    body.append("<h2 id='findings'>Findings by recipient</h2>")
    if story.groups:
        body.append(
            "<p class='muted'>The most severe first. Open a finding for its evidence; every "
            "fold opens when printed.</p>"
        )
    else:
        body.append("<p>No finding.</p>")
    body += [_group(g, flows_by_id, shown_flows, highlights) for g in story.groups]
    body += _claims(doc)
    body += _coverage(doc, story)
    body.append("<h2 id='timeline'>Flows over time</h2>" + _timeline(flows, _marks_of(doc)))
    body.append("<h2 id='bytes'>Bytes by recipient and by server country</h2>")
    body.append(
        "<p class='legend'><i class='up'></i>bytes up (sent) <i class='down'></i>bytes down</p>"
    )
    body.append("<h3>By recipient</h3>" + _bars("bytes by recipient", doc.get("_bytes_by_org", [])))
    body.append(
        "<h3>By server country</h3>"
        + _bars("bytes by server country", doc.get("_bytes_by_country", []))
    )
    body += _endpoints(doc)
    body += flow_section
    body += _packets(doc)
    body.append("<h2 id='device'>Device profile</h2>")
    device_rows = [[_e(k), _e(v)] for k, v in sorted(dev.items()) if not isinstance(v, list | dict)]
    body.append(
        _table(["property", "value"], device_rows)
        if device_rows
        else "<p class='muted'>No device profile (an imported session): unknown device.</p>"
    )
    body.append("<h2 id='method'>Method</h2>")
    body.append(
        _table(
            ["item", "value"],
            [
                [_e(k), f"<pre>{_e(json.dumps(v, indent=1, sort_keys=True), 4000)}</pre>"]
                for k, v in sorted(method.items())
            ],
        )
    )
    if doc.get("warnings"):
        body.append("<h2 id='warnings'>Warnings</h2><ul>")
        body += [f"<li>{_e(w)}</li>" for w in doc["warnings"]]
        body.append("</ul>")
    page = "".join(body)
    toc = "".join(f"<li><a href='#{a}'>{t}</a></li>" for a, t in _TOC if f"id='{a}'" in page)
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            f"<title>auditor report {_e((doc.get('session') or {}).get('id'))}</title>",
            f"<style>{stylesheet()}</style></head><body>",
            *_header(doc, story),
            f"<nav class='toc' aria-label='contents'><ul>{toc}</ul></nav>",
            page,
            "</body></html>\n",
        ]
    )

"""``summary.md``: the report's story in Markdown, in the order of ``report.html`` (summary,
findings by recipient, claims, what could not be inspected, endpoints, packets, warnings,
method). It holds no link, image or HTML: references are the finding labels (F1, F2 ...)
that the HTML page shows too, and every captured string goes through
:func:`auditor.analysis.escape.md_text`.
"""

from __future__ import annotations

import json
from typing import Any

from auditor.analysis.escape import md_text
from auditor.analysis.report.page import basis_text, concern_text
from auditor.analysis.report.story import Group, Sentence, Story, build_story, plural

MAX_EVIDENCE_LINES = 3


def _sentence(s: Sentence, indent: str = "") -> str:
    labels = [x.label for x in s.links if x.anchor.startswith("f-")]
    if labels and len(labels) < len(s.links):
        labels.append("…")
    refs = f" ({md_text(', '.join(labels))})" if labels else ""
    text = md_text(s.text, 2000)
    return f"{indent}- {'_' + text + '_' if s.hedged else text}{refs}"


def _summary(story: Story) -> list[str]:
    out = ["## Summary", ""]
    out += [_sentence(s) for s in story.overview]
    for g in story.groups:
        out.append(f"- **{md_text(g.name)}** (worst finding: {md_text(g.worst)})")
        out += [_sentence(s, "  ") for s in g.sentences]
    out += [_sentence(s) for s in story.others]
    out += [_sentence(s) for s in story.claims]
    if story.gaps:
        out.append("- **What could not be inspected**")
        out += [_sentence(s, "  ") for s in story.gaps]
    return out


def _group(g: Group, number: int) -> list[str]:
    v = g.verdict
    hq = f", HQ {md_text(g.country)}" if g.country else ""
    out = [
        "",
        f"### {number}. {md_text(g.name)}{hq} (worst finding: {md_text(g.worst)})",
        "",
        f"{int(v.get('flows') or 0):,} flows, {int(v.get('bytes_up') or 0):,} bytes up; "
        f"{plural(len(g.items), 'finding')}.",
        "",
    ]
    for item in g.items:
        f = item.finding
        ids = (
            f", identifiers: {md_text(', '.join(f['identifiers']))}" if f.get("identifiers") else ""
        )
        out.append(
            f"- **{item.label}** {md_text(f.get('severity'))}: {md_text(f.get('title'), 300)} "
            f"({md_text(f.get('rule'))}{ids}; {plural(len(f.get('flow_ids') or []), 'flow')})"
        )
        for ev in (f.get("evidence") or [])[:MAX_EVIDENCE_LINES]:
            where = f"{ev.get('location') or ''} {ev.get('detail') or ''}".strip()
            out.append(
                f"  - evidence: {md_text(where, 200)}, {md_text(ev.get('encoding'))}, "
                f"flow {md_text(ev.get('flow_id'), 200)}"
            )
    return out


def markdown(doc: dict[str, Any]) -> str:
    story = build_story(doc)
    title = md_text((doc.get("session") or {}).get("id"))
    meta = f"Device: {md_text(story.device)}"
    if story.scenario:
        meta += f"; scenario {md_text(story.scenario)}"
    if len(story.sessions) > 1:
        meta += f"; sessions {md_text(', '.join(story.sessions))}"
    lines = [f"# auditor report: session {title}", "", meta + ".", ""]
    lines += _summary(story)
    lines += ["", "## Findings by recipient"]
    if not story.groups:
        lines += ["", "No finding."]
    for n, g in enumerate(story.groups, 1):
        lines += _group(g, n)
    if doc.get("claims"):
        lines += ["", "## Claims", "", "| claim | verdict | reason |", "|---|---|---|"]
        for c in doc["claims"]:
            lines.append(f"| {md_text(c['claim'])} | {c['verdict']} | {md_text(c['reason'])} |")
    cov = doc.get("coverage") or {}
    lines += ["", "## What could not be inspected", ""]
    lines += [_sentence(s) for s in story.gaps] or [
        "Every recorded connection was decrypted and went through the proxy."
    ]
    for x in cov.get("skipped") or []:
        lines.append(
            f"- skipped: {int(x.get('count') or 0):,} {md_text(x.get('kind'))} in "
            f"{md_text(x.get('file'), 200)} ({md_text(x.get('session'))}): "
            f"{md_text(x.get('reason'), 300)}"
        )
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
    for e in doc.get("endpoints") or []:
        lines.append(
            f"| {md_text(e['host'], 120)} | {md_text(e['organisation'] or 'unknown operator')} "
            f"| {md_text(e['country'])} | {md_text(basis_text(e))} "
            f"| {md_text(e.get('hosted_by') or '-', 160)} "
            f"| {md_text(concern_text(e) or '-', 300)} | {e['flows']} "
            f"| {e['bytes_up']} | {e['bytes_down']} |"
        )
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

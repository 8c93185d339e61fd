"""The diff document (``auditor.analysis.diff``) for people: sentences, ``diff.md`` and
``diff.html``. Every value from a capture (hosts, organisations, identifiers, titles) is
escaped for where it is shown; the page runs no script and loads nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from auditor.analysis.escape import html_text, md_text
from auditor.analysis.report.page import CSP
from auditor.timeutil import seconds_text

SIDE_WORD = {"a": "A (before)", "b": "B (after)"}
MAX_IDS_SHOWN = 5

Row = Mapping[str, Any]


def _ids(ids: list[str]) -> str:
    more = len(ids) - MAX_IDS_SHOWN
    return ", ".join(ids[:MAX_IDS_SHOWN]) + (f" (+{more})" if more > 0 else "") if ids else "-"


def _marks(row: Row) -> str:
    out = []
    if row.get("few_flows"):
        out.append("few flows")
    ab = row.get("absence")
    if ab and ab.get("weak"):
        out.append("weak absence: " + "; ".join(ab.get("why") or []))
    return "; ".join(out)


def _rate(x: Any) -> str:
    return "-" if x is None else f"{x:g}"


def sentences(doc: Row) -> list[str]:
    """One line per side, then one per change: what the terminal shows."""
    out = []
    for s in ("a", "b"):
        side = doc["sides"][s]
        dev = " ".join(
            str(v)
            for k, v in side["device"].items()
            if k in ("manufacturer", "model", "fingerprint")
        )
        out.append(
            f"{SIDE_WORD[s]}: {side['name']} ({side['input']}), "
            f"recorded {seconds_text(side['duration_seconds'])}, "
            f"{side['flows']} flow(s), {side['findings']} finding(s)" + (f", {dev}" if dev else "")
        )
    for r in doc["recipients"]:
        if r["status"] != "present":
            out.append(
                _line(f"recipient {r['status']}: {r['recipient']} ({r['country'] or '?'})", r)
            )
        elif r["changed"]:
            out.append(_line(f"recipient changed ({', '.join(r['changed'])}): {r['recipient']}", r))
        if r["status"] == "present" and r["rate_changed"]:
            ra = r["rate_ratio"]
            out.append(
                _line(
                    f"rate of {r['recipient']}: flows/h {_rate(r['a']['flows_per_hour'])} -> "
                    f"{_rate(r['b']['flows_per_hour'])} (x{_rate(ra['flows'])}), bytes up/h "
                    f"{_rate(r['a']['bytes_up_per_hour'])} -> {_rate(r['b']['bytes_up_per_hour'])}",
                    r,
                )
            )
    for i in doc["identifiers"]:
        enc = i["encodings"]["b" if i["status"] == "newly_sent" else "a"]
        if i["status"] != "still_sent":
            out.append(
                _line(
                    f"{i['identifier']} {i['status'].replace('_', ' ')} to {i['recipient']} "
                    f"[{', '.join(enc)}]",
                    i,
                )
            )
        elif i["encodings_changed"]:
            out.append(
                _line(
                    f"{i['identifier']} to {i['recipient']}: encodings "
                    f"{i['encodings']['a']} -> {i['encodings']['b']}",
                    i,
                )
            )
    for bc in doc["beacons"]:
        if bc["status"] != "unchanged":
            p = bc["period_s"]
            out.append(
                _line(
                    f"beacon {bc['status'].replace('_', ' ')}: {bc['host']} "
                    f"(period {_rate(p['a'])} s -> {_rate(p['b'])} s)",
                    bc,
                )
            )
    for h in doc["hosts_moved"]:
        out.append(
            _line(
                f"host moved: {h['host']} "
                f"{'/'.join(h['countries']['a'])} -> {'/'.join(h['countries']['b'])}",
                h,
            )
        )
    for f in doc["findings"]:
        if f["status"] != "unchanged":
            out.append(
                _line(
                    f"findings {f['status']}: {f['rule']} ({f['count']['a']} -> {f['count']['b']})",
                    f,
                )
            )
    for c in doc.get("claims") or []:
        out.append(f"claim: {c['claim']}: {c['verdict']}: {c['reason']}")
    if len(out) == 2:
        out.append("no change")
    return out


def _line(text: str, row: Row) -> str:
    m = _marks(row)
    return text + (f" [{m}]" if m else "")


# ---------------------------------------------------------------- Markdown


def _md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md_text(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def _sections(doc: Row) -> list[tuple[str, list[str], list[list[Any]]]]:
    ev = ["flows A", "flows B", "notes"]

    def fl(r: Row) -> list[str]:
        return [_ids(r["flow_ids"]["a"]), _ids(r["flow_ids"]["b"]), _marks(r)]

    recips = [
        [
            r["recipient"],
            r["status"] + (f" ({', '.join(r['changed'])})" if r["changed"] else ""),
            r["country"] or "?",
            ", ".join((r["a"] or {}).get("legal_exposure") or []) or "-",
            ", ".join((r["b"] or {}).get("legal_exposure") or []) or "-",
            *fl(r),
        ]
        for r in doc["recipients"]
        if r["status"] != "present" or r["changed"]
    ]
    rates = [
        [
            r["recipient"],
            _rate(r["a"]["flows_per_hour"]),
            _rate(r["b"]["flows_per_hour"]),
            _rate(r["a"]["bytes_up_per_hour"]),
            _rate(r["b"]["bytes_up_per_hour"]),
            _rate(r["rate_ratio"]["flows"]),
            "changed" if r["rate_changed"] else "",
            *fl(r),
        ]
        for r in doc["recipients"]
        if r["status"] == "present"
    ]
    idents = [
        [
            i["recipient"],
            i["identifier"],
            i["status"].replace("_", " ")
            + (" (encodings changed)" if i["encodings_changed"] else ""),
            ", ".join(i["encodings"]["a"]) or "-",
            ", ".join(i["encodings"]["b"]) or "-",
            *fl(i),
        ]
        for i in doc["identifiers"]
    ]
    beacons = [
        [
            b["host"],
            b["recipient"],
            b["status"].replace("_", " "),
            _rate(b["period_s"]["a"]),
            _rate(b["period_s"]["b"]),
            *fl(b),
        ]
        for b in doc["beacons"]
    ]
    hosts = [
        [
            h["host"],
            ", ".join(h["countries"]["a"]),
            ", ".join(h["countries"]["b"]),
            "; ".join(h["hosted_by"]["a"]),
            "; ".join(h["hosted_by"]["b"]),
            *fl(h),
        ]
        for h in doc["hosts_moved"]
    ]
    rules = [
        [
            f["rule"],
            f["status"],
            f["count"]["a"],
            f["count"]["b"],
            "; ".join(f"{x['host'] or x['recipient']}" for x in f["only_in"]["a"]) or "-",
            "; ".join(f"{x['host'] or x['recipient']}" for x in f["only_in"]["b"]) or "-",
            *fl(f),
        ]
        for f in doc["findings"]
    ]
    return [
        (
            "Recipients that appeared, disappeared or changed",
            ["recipient", "change", "HQ", "legal exposure A", "legal exposure B", *ev],
            recips,
        ),
        (
            "Identifiers per recipient",
            ["recipient", "identifier", "change", "encodings A", "encodings B", *ev],
            idents,
        ),
        (
            "Contact rates per hour (normalised by each side's duration)",
            [
                "recipient",
                "flows/h A",
                "flows/h B",
                "bytes up/h A",
                "bytes up/h B",
                "ratio B/A",
                "",
                *ev,
            ],
            rates,
        ),
        ("Beacons", ["host", "recipient", "change", "period A (s)", "period B (s)", *ev], beacons),
        (
            "Hosts that moved country",
            ["host", "countries A", "countries B", "hosted by A", "hosted by B", *ev],
            hosts,
        ),
        ("Findings by rule", ["rule", "change", "A", "B", "only in A", "only in B", *ev], rules),
    ]


CLAIM_HEAD = ["claim", "verdict", "reason", "flows A", "flows B"]


def _claim_rows(doc: Row) -> list[list[Any]]:
    """The claims table, one row per claim, for Markdown and HTML alike."""
    return [
        [c["claim"], c["verdict"], c["reason"], _ids(c["flow_ids"]["a"]), _ids(c["flow_ids"]["b"])]
        for c in doc["claims"]
    ]


def _side_rows(doc: Row) -> list[list[Any]]:
    rows = []
    for s in ("a", "b"):
        d = doc["sides"][s]
        dev = ", ".join(f"{k}={v}" for k, v in d["device"].items()) or "unknown device"
        rows.append(
            [
                SIDE_WORD[s],
                d["name"],
                d["input"],
                seconds_text(d["duration_seconds"]),
                d["flows"],
                d["findings"],
                d["not_decrypted"],
                dev,
                ", ".join(d["session_ids"]),
            ]
        )
    return rows


SIDE_HEAD = [
    "side",
    "name",
    "input",
    "recorded",
    "flows",
    "findings",
    "not decrypted",
    "device",
    "sessions",
]


def _rules_text(doc: Row) -> str:
    r = doc["rules"]
    return (
        f'A change seen in fewer than {r["few_flows"]} flows is marked "few flows". An absence '
        f"(disappeared, no longer sent, stopped) is weak when the side where it is absent recorded "
        f"under {r['min_absence_s']:g} s, or under {r['duration_share']:g} of the other side's "
        f"time, or when at the rate seen fewer than {r['few_flows']} flows were to be expected "
        f"there: a short session is not evidence of absence. Rates are per hour of each side's "
        f"recording; a ratio of {r['rate_factor']:g} or more either way is a change. A beacon's "
        f"period changed when it moved "
        f"by more than {r['period_share']:.0%}."
    )


def render_md(doc: Row) -> str:
    out = ["# What changed between two audits", "", _rules_text(doc), ""]
    out += _md_table(SIDE_HEAD, _side_rows(doc))
    for title, head, rows in _sections(doc):
        out += [f"## {title}", "", *_md_table(head, rows)]
    if doc.get("claims"):
        out += ["## Claims", ""]
        out += _md_table(CLAIM_HEAD, _claim_rows(doc))
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- HTML

CSS = (
    "body{font-family:system-ui,sans-serif;margin:1rem;max-width:80rem}"
    "table{border-collapse:collapse;display:block;overflow-x:auto;margin-bottom:1rem}"
    "td,th{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top;overflow-wrap:anywhere}"
    "th{background:#f3f3f3;text-align:left}td.n{white-space:nowrap;text-align:right}"
    ".weak{color:#8a4b00}"
)


def _html_table(
    head: list[str], rows: list[list[Any]], cell: Callable[[Any], str] = html_text
) -> str:
    if not rows:
        return "<p>(none)</p>"
    h = "".join(f"<th>{html_text(c)}</th>" for c in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if isinstance(c, int | float) else ''}>{cell(c)}</td>" for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def render_html(doc: Row) -> str:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",  # the report's
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>auditor diff: {html_text(doc['sides']['a']['name'])} / "
        f"{html_text(doc['sides']['b']['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>What changed between two audits</h1>",
        f"<p>{html_text(_rules_text(doc))}</p>",
        _html_table(SIDE_HEAD, _side_rows(doc)),
        "<h2>In short</h2><ul>",
        *(f"<li>{html_text(s)}</li>" for s in sentences(doc)),
        "</ul>",
    ]
    for title, head, rows in _sections(doc):
        parts += [f"<h2>{html_text(title)}</h2>", _html_table(head, rows)]
    if doc.get("claims"):
        parts.append("<h2>Claims</h2>")
        parts.append(_html_table(CLAIM_HEAD, _claim_rows(doc)))
    parts.append("</body></html>\n")
    return "\n".join(parts)

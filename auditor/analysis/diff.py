"""Compare two audits: what changed between a before (A) and an after (B).

Long because: every comparison (recipients, identifiers, rates, beacons, countries,
findings) reads the same two documents through the same flow references and the same rule for
weak absences; the rendering is apart, in :mod:`auditor.analysis.diff_report`.

A side is a report folder (its ``findings.json``) or a session, which is then analysed
exactly as ``auditor analyze`` does (the engine, then the report writer) and read back from
the ``findings.json`` it wrote. The diff is built from those two documents alone:
recipients, identifiers per recipient, rates per hour, beacons, hosts' server countries and
findings by rule. Every change names the flows behind it on both sides, says when it rests
on few flows, and says when an absence is weak because the side where something is absent
recorded too little to show it. ``docs/diff.md`` describes the document (``diff.json``) and
the rules; claims about a before/after pair are checked here too (:func:`evaluate_claims`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor import jsonio
from auditor.analysis.claims import claim_items, names_organisation
from auditor.analysis.model import Verdict
from auditor.errors import AuditorError
from auditor.timeutil import now_iso, seconds_text

log = logging.getLogger(__name__)

DIFF_SCHEMA_VERSION = 1
UNKNOWN = "(unknown operator)"
SIDES = ("a", "b")
FORMATS = ("html", "json", "md")
# A change resting on fewer flows than this (on the side where it is seen) is "few flows".
FEW_FLOWS = 3
# An absence is weak when the side where it is absent recorded under this many seconds...
MIN_ABSENCE_S = 300.0
# ... or under this share of the time the side where it was seen recorded ...
DURATION_SHARE = 0.9
# ... or when, at the rate it was seen, fewer than FEW_FLOWS flows were to be expected there.
# Rates per hour that differ by this factor or more (either way) are a change.
RATE_FACTOR = 2.0
# Beacon periods that differ by more than this share of the before period are a change.
PERIOD_SHARE = 0.25
MAX_FLOW_IDS = 200  # per side and change, as findings.json's endpoints keep them
MAX_FINDINGS_BYTES = 512 * 1024 * 1024
IDENTIFIER_RULES = ("identifier-sent", "cleartext-identifier")
DEVICE_KEYS = (
    "manufacturer",
    "brand",
    "model",
    "android_release",
    "fingerprint",
    "security_patch",
    "build_type",
)


class DiffError(AuditorError):
    pass


# ---------------------------------------------------------------- the two sides


@dataclass
class Side:
    name: str  # the folder's name, as given
    kind: str  # "report" or "session"
    doc: dict[str, Any]
    report: Path | None = None  # where the session's report was written, if it was kept


def read_findings(folder: Path) -> dict[str, Any]:
    """The findings.json of a report folder, checked for the keys the diff reads."""
    path = folder / "findings.json"
    try:
        doc = jsonio.load(path, expect=dict, max_bytes=MAX_FINDINGS_BYTES)
    except OSError as exc:
        raise DiffError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    for key, kind in (("endpoints", list), ("findings", list), ("coverage", dict)):
        if not isinstance(doc.get(key), kind):
            raise DiffError(f"{path}: not a findings.json of auditor ('{key}' is missing)")
    return doc


def load_side(
    path: Path,
    workdir: Path,
    *,
    policy: str = "default",
    identifiers: Mapping[str, str] | None = None,
    intel: Sequence[str] = (),
    formats: Sequence[str] = ("json",),
) -> Side:
    """``path`` as a side of the diff: a report folder is read; a session is analysed into
    ``workdir`` with the code path of ``auditor analyze`` and its findings.json read back."""
    from auditor.session.layout import MANIFEST

    path = Path(path)
    if (path / "findings.json").is_file():
        return Side(path.name, "report", read_findings(path))
    if not (path / MANIFEST).is_file():
        raise DiffError(
            f"{path}: neither a report folder (no findings.json) nor a session (no {MANIFEST})"
        )
    from auditor.analysis.engine import analyze, write
    from auditor.analysis.policy import load_policy

    result = analyze(
        [path],
        policy=load_policy(policy),
        intel=[Path(i) if "=" not in i else i for i in intel],  # type: ignore[misc]
        identifiers=dict(identifiers or {}),
        artifacts_dir=workdir / "artifacts",
    )
    write(result, workdir, sorted(set(formats) | {"json"}))
    return Side(path.name, "session", read_findings(workdir), workdir)


# ---------------------------------------------------------------- what each side holds


def recorded_seconds(doc: Mapping[str, Any]) -> float:
    try:
        return max(0.0, float((doc.get("coverage") or {}).get("duration_seconds") or 0.0))
    except (TypeError, ValueError):
        return 0.0


def _key(org: Any) -> str:
    return str(org) if org else UNKNOWN


def _sorted_ids(ids: Iterable[Any]) -> list[str]:
    return sorted({str(i) for i in ids if i is not None})[:MAX_FLOW_IDS]


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def recipients_of(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in doc.get("endpoints") or []:
        if not isinstance(e, dict):
            continue
        r = out.setdefault(
            _key(e.get("organisation")),
            {
                "organisation": e.get("organisation"),
                "organisation_id": e.get("organisation_id"),
                "parent": e.get("parent"),
                "country": e.get("country"),
                "legal_exposure": set(),
                "state_control": False,
                "hosts": set(),
                "server_countries": set(),
                "flows": 0,
                "bytes_up": 0,
                "bytes_down": 0,
                "flow_ids": set(),
            },
        )
        for x in e.get("legal_exposure") or []:
            if isinstance(x, dict) and x.get("country"):
                r["legal_exposure"].add(str(x["country"]))
        r["state_control"] = r["state_control"] or bool(e.get("state_control"))
        if e.get("host"):
            r["hosts"].add(str(e["host"]))
        r["server_countries"] |= _host_countries(e)
        r["flows"] += _int(e.get("flows"))
        r["bytes_up"] += _int(e.get("bytes_up"))
        r["bytes_down"] += _int(e.get("bytes_down"))
        r["flow_ids"] |= {str(f) for f in e.get("flow_ids") or []}
    return out


def _host_countries(e: Mapping[str, Any]) -> set[str]:
    got = {
        str(h["country"])
        for h in e.get("hosting") or []
        if isinstance(h, dict) and h.get("country")
    }
    if not got and e.get("server_country"):
        got = {str(e["server_country"])}
    return got


def _hosts(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in doc.get("endpoints") or []:
        if not isinstance(e, dict) or not e.get("host"):
            continue
        h = out.setdefault(
            str(e["host"]),
            {
                "countries": set(),
                "hosted_by": set(),
                "recipients": set(),
                "flows": 0,
                "flow_ids": set(),
            },
        )
        h["countries"] |= _host_countries(e)
        if e.get("hosted_by"):
            h["hosted_by"].add(str(e["hosted_by"]))
        h["recipients"].add(_key(e.get("organisation")))
        h["flows"] += _int(e.get("flows"))
        h["flow_ids"] |= {str(f) for f in e.get("flow_ids") or []}
    return out


def identifiers_of(doc: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(recipient, identifier) -> encodings, hosts, rules and flows, from the identifier
    findings; an identifier's encodings and flows are those of the evidence naming it (all
    of the finding's when it names that identifier alone)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for f in _findings(doc):
        if f.get("rule") not in IDENTIFIER_RULES:
            continue
        names = [str(i) for i in f.get("identifiers") or []]
        for ident in names:
            it = out.setdefault(
                (_key(f.get("organisation")), ident),
                {"encodings": set(), "hosts": set(), "rules": set(), "flow_ids": set()},
            )
            it["rules"].add(str(f["rule"]))
            if f.get("host"):
                it["hosts"].add(str(f["host"]))
            if len(names) == 1:
                it["encodings"] |= {str(x) for x in f.get("encodings") or []}
                it["flow_ids"] |= {str(x) for x in f.get("flow_ids") or []}
            for ev in f.get("evidence") or []:
                if isinstance(ev, dict) and str(ev.get("identifier")) == ident:
                    if ev.get("encoding"):
                        it["encodings"].add(str(ev["encoding"]))
                    if ev.get("flow_id"):
                        it["flow_ids"].add(str(ev["flow_id"]))
    return out


def _findings(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in doc.get("findings") or [] if isinstance(f, dict) and f.get("rule")]


def _beacons(doc: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for f in _findings(doc):
        if f["rule"] != "beacon":
            continue
        data = f.get("data") or {}
        period = data.get("period_s")
        out[(str(f.get("host") or ""), _key(f.get("organisation")))] = {
            "period_s": float(period) if isinstance(period, int | float) else None,
            "contacts": data.get("contacts"),
            "flows": len(f.get("flow_ids") or []),
            "flow_ids": set(map(str, f.get("flow_ids") or [])),
        }
    return out


def _finding_key(f: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        str(f.get("host") or ""),
        _key(f.get("organisation")),
        ",".join(sorted(str(i) for i in f.get("identifiers") or [])),
    )


# ---------------------------------------------------------------- weighing a change


def per_hour(count: float, seconds: float) -> float | None:
    return round(count * 3600.0 / seconds, 3) if seconds > 0 else None


def absence(seen_flows: int, seen_s: float, absent_s: float) -> dict[str, Any]:
    """How far the side where something is absent can show that it is absent."""
    why = []
    expected = round(seen_flows * absent_s / seen_s, 2) if seen_s > 0 else None
    if absent_s < MIN_ABSENCE_S:
        why.append(f"that side recorded {seconds_text(absent_s)}, under {MIN_ABSENCE_S:g} s")
    if absent_s < DURATION_SHARE * seen_s:
        why.append(f"that side recorded {seconds_text(absent_s)}, the other {seconds_text(seen_s)}")
    if expected is not None and expected < FEW_FLOWS:
        why.append(f"at the rate seen, {expected:g} flow(s) were to be expected there")
    return {"weak": bool(why), "expected_flows": expected, "why": why}


def _evidence(a_ids: Iterable[str], b_ids: Iterable[str]) -> dict[str, list[str]]:
    return {"a": _sorted_ids(a_ids), "b": _sorted_ids(b_ids)}


def _few(*counts: int) -> bool:
    seen = [c for c in counts if c > 0]
    return bool(seen) and min(seen) < FEW_FLOWS


def _presence(in_a: bool, in_b: bool, gone: str, new: str, same: str) -> str:
    return same if in_a and in_b else (new if in_b else gone)


def _absence_of(
    status: str, flows: dict[str, int], dur: dict[str, float], gone: str, new: str
) -> dict[str, Any] | None:
    if status == gone:
        return absence(flows["a"], dur["a"], dur["b"])
    if status == new:
        return absence(flows["b"], dur["b"], dur["a"])
    return None


# ---------------------------------------------------------------- the diff


def build_diff(a: Side, b: Side, *, generated_at: str | None = None) -> dict[str, Any]:
    """The diff document of ``a`` (before) and ``b`` (after); see docs/diff.md."""
    docs = {"a": a.doc, "b": b.doc}
    dur = {s: recorded_seconds(d) for s, d in docs.items()}
    recipients = _diff_recipients(docs, dur)
    identifiers = _diff_identifiers(docs, dur)
    beacons = _diff_beacons(docs, dur)
    hosts = _diff_hosts(docs)
    rules = _diff_rules(docs, dur)
    changes = {
        "recipients": sum(1 for r in recipients if r["status"] != "present" or r["changed"]),
        "identifiers": sum(
            1 for i in identifiers if i["status"] != "still_sent" or i["encodings_changed"]
        ),
        "rates": sum(1 for r in recipients if r["status"] == "present" and r["rate_changed"]),
        "beacons": sum(1 for x in beacons if x["status"] != "unchanged"),
        "hosts_moved": len(hosts),
        "findings": sum(1 for r in rules if r["status"] != "unchanged"),
    }
    return {
        "diff_schema_version": DIFF_SCHEMA_VERSION,
        "generated_at": generated_at or now_iso(),
        "sides": {
            "a": _side_summary(a, dur["a"]),
            "b": _side_summary(b, dur["b"]),
        },
        "rules": {
            "few_flows": FEW_FLOWS,
            "min_absence_s": MIN_ABSENCE_S,
            "duration_share": DURATION_SHARE,
            "rate_factor": RATE_FACTOR,
            "period_share": PERIOD_SHARE,
        },
        "changes": changes,
        "recipients": recipients,
        "identifiers": identifiers,
        "beacons": beacons,
        "hosts_moved": hosts,
        "findings": rules,
        "claims": [],
    }


def _side_summary(side: Side, duration: float) -> dict[str, Any]:
    doc = side.doc
    cov = doc.get("coverage") or {}
    sess = doc.get("session") or {}
    device = doc.get("device") or {}
    return {
        "name": side.name,
        "input": side.kind,
        "session_ids": [str(s) for s in sess.get("ids") or [sess.get("id")] if s],
        "manifest_sha256": [str(h) for h in sess.get("manifest_sha256") or []],
        "device": {
            k: device.get(k) for k in DEVICE_KEYS if isinstance(device, dict) and device.get(k)
        },
        "duration_seconds": duration,
        "flows": sum(
            _int(e.get("flows")) for e in doc.get("endpoints") or [] if isinstance(e, dict)
        ),
        "findings": len(_findings(doc)),
        "connections": _int(cov.get("connections")),
        "not_decrypted": _int(cov.get("not_decrypted")),
        "scenarios": [str(s) for s in cov.get("scenarios") or []],
        "identifiers_searched": sorted(str(i) for i in doc.get("identifiers_searched") or []),
    }


def _diff_recipients(docs: dict[str, Any], dur: dict[str, float]) -> list[dict[str, Any]]:
    per = {s: recipients_of(d) for s, d in docs.items()}
    rows: list[dict[str, Any]] = []
    for key in sorted(set(per["a"]) | set(per["b"])):
        ra, rb = per["a"].get(key), per["b"].get(key)
        status = _presence(ra is not None, rb is not None, "disappeared", "appeared", "present")
        some = rb or ra
        assert some is not None
        flows = {"a": ra["flows"] if ra else 0, "b": rb["flows"] if rb else 0}
        sides = {}
        for s, r in (("a", ra), ("b", rb)):
            sides[s] = (
                None
                if r is None
                else {
                    "country": r["country"],
                    "legal_exposure": sorted(r["legal_exposure"]),
                    "state_control": r["state_control"],
                    "hosts": sorted(r["hosts"]),
                    "server_countries": sorted(r["server_countries"]),
                    "flows": r["flows"],
                    "bytes_up": r["bytes_up"],
                    "bytes_down": r["bytes_down"],
                    "flows_per_hour": per_hour(r["flows"], dur[s]),
                    "bytes_up_per_hour": per_hour(r["bytes_up"], dur[s]),
                }
            )
        changed = []
        ratio = {"flows": None, "bytes_up": None}
        rate_changed = False
        if ra and rb:
            changed = [
                k
                for k in ("country", "legal_exposure", "state_control", "server_countries")
                if sides["a"][k] != sides["b"][k]  # type: ignore[index]
            ]
            for what in ("flows", "bytes_up"):
                pa, pb = sides["a"][f"{what}_per_hour"], sides["b"][f"{what}_per_hour"]  # type: ignore[index]
                if pa and pb is not None:
                    ratio[what] = round(pb / pa, 3)
                    rate_changed |= ratio[what] >= RATE_FACTOR or ratio[what] <= 1 / RATE_FACTOR  # type: ignore[operator]
        rows.append(
            {
                "recipient": key,
                "organisation": some["organisation"],
                "organisation_id": some["organisation_id"],
                "parent": some["parent"],
                "country": some["country"],
                "status": status,
                "changed": changed,
                "a": sides["a"],
                "b": sides["b"],
                "rate_ratio": ratio,
                "rate_changed": rate_changed,
                "few_flows": _few(flows["a"], flows["b"]),
                "absence": _absence_of(status, flows, dur, "disappeared", "appeared"),
                "flow_ids": _evidence(ra["flow_ids"] if ra else (), rb["flow_ids"] if rb else ()),
            }
        )
    order = {"appeared": 0, "disappeared": 1, "present": 2}
    rows.sort(key=lambda r: (order[r["status"]], r["recipient"]))
    return rows


def _diff_identifiers(docs: dict[str, Any], dur: dict[str, float]) -> list[dict[str, Any]]:
    per = {s: identifiers_of(d) for s, d in docs.items()}
    recips = {s: recipients_of(d) for s, d in docs.items()}
    rows: list[dict[str, Any]] = []
    for key in sorted(set(per["a"]) | set(per["b"])):
        ia, ib = per["a"].get(key), per["b"].get(key)
        status = _presence(
            ia is not None, ib is not None, "no_longer_sent", "newly_sent", "still_sent"
        )
        enc = {s: sorted(i["encodings"]) if i else [] for s, i in (("a", ia), ("b", ib))}
        flows = {s: len(i["flow_ids"]) if i else 0 for s, i in (("a", ia), ("b", ib))}
        org = next((r[key[0]] for r in (recips["b"], recips["a"]) if key[0] in r), None)
        rows.append(
            {
                "recipient": key[0],
                "organisation_id": org["organisation_id"] if org else None,
                "parent": org["parent"] if org else None,
                "country": org["country"] if org else None,
                "identifier": key[1],
                "status": status,
                "encodings": enc,
                "encodings_changed": bool(ia and ib and enc["a"] != enc["b"]),
                "hosts": {s: sorted(i["hosts"]) if i else [] for s, i in (("a", ia), ("b", ib))},
                "flows": flows,
                "few_flows": _few(flows["a"], flows["b"]),
                "absence": _absence_of(status, flows, dur, "no_longer_sent", "newly_sent"),
                "flow_ids": _evidence(ia["flow_ids"] if ia else (), ib["flow_ids"] if ib else ()),
            }
        )
    order = {"newly_sent": 0, "no_longer_sent": 1, "still_sent": 2}
    rows.sort(key=lambda r: (order[r["status"]], r["recipient"], r["identifier"]))
    return rows


def _diff_beacons(docs: dict[str, Any], dur: dict[str, float]) -> list[dict[str, Any]]:
    per = {s: _beacons(d) for s, d in docs.items()}
    rows: list[dict[str, Any]] = []
    for key in sorted(set(per["a"]) | set(per["b"])):
        ba, bb = per["a"].get(key), per["b"].get(key)
        status = _presence(ba is not None, bb is not None, "stopped", "started", "unchanged")
        if ba and bb:
            pa, pb = ba["period_s"], bb["period_s"]
            if pa and pb is not None and abs(pb - pa) > PERIOD_SHARE * pa:
                status = "period_changed"
        flows = {"a": ba["flows"] if ba else 0, "b": bb["flows"] if bb else 0}
        rows.append(
            {
                "host": key[0],
                "recipient": key[1],
                "status": status,
                "period_s": {
                    "a": ba["period_s"] if ba else None,
                    "b": bb["period_s"] if bb else None,
                },
                "contacts": {
                    "a": ba["contacts"] if ba else None,
                    "b": bb["contacts"] if bb else None,
                },
                "few_flows": _few(flows["a"], flows["b"]),
                "absence": _absence_of(status, flows, dur, "stopped", "started"),
                "flow_ids": _evidence(ba["flow_ids"] if ba else (), bb["flow_ids"] if bb else ()),
            }
        )
    order = {"started": 0, "stopped": 1, "period_changed": 2, "unchanged": 3}
    rows.sort(key=lambda r: (order[r["status"]], r["host"], r["recipient"]))
    return rows


def _diff_hosts(docs: dict[str, Any]) -> list[dict[str, Any]]:
    ha, hb = _hosts(docs["a"]), _hosts(docs["b"])
    rows: list[dict[str, Any]] = []
    for host in sorted(set(ha) & set(hb)):
        a, b = ha[host], hb[host]
        if not a["countries"] or not b["countries"] or a["countries"] == b["countries"]:
            continue  # unknown on a side is not a move
        rows.append(
            {
                "host": host,
                "countries": {"a": sorted(a["countries"]), "b": sorted(b["countries"])},
                "hosted_by": {"a": sorted(a["hosted_by"]), "b": sorted(b["hosted_by"])},
                "recipients": {"a": sorted(a["recipients"]), "b": sorted(b["recipients"])},
                "few_flows": _few(a["flows"], b["flows"]),
                "flow_ids": _evidence(a["flow_ids"], b["flow_ids"]),
            }
        )
    return rows


def _diff_rules(docs: dict[str, Any], dur: dict[str, float]) -> list[dict[str, Any]]:
    per: dict[str, dict[str, dict[tuple[str, str, str], list[dict[str, Any]]]]] = {}
    for s, d in docs.items():
        per[s] = defaultdict(lambda: defaultdict(list))
        for f in _findings(d):
            per[s][str(f["rule"])][_finding_key(f)].append(f)
    rows: list[dict[str, Any]] = []
    for rule in sorted(set(per["a"]) | set(per["b"])):
        fa, fb = per["a"].get(rule, {}), per["b"].get(rule, {})
        count = {"a": sum(map(len, fa.values())), "b": sum(map(len, fb.values()))}
        status = _presence(
            bool(count["a"]), bool(count["b"]), "disappeared", "appeared", "unchanged"
        )
        only = {
            "a": [_finding_item(k, fa[k]) for k in sorted(set(fa) - set(fb))],
            "b": [_finding_item(k, fb[k]) for k in sorted(set(fb) - set(fa))],
        }
        if status == "unchanged" and (only["a"] or only["b"]):
            status = "changed"
        ids = {
            s: {i for fs in g.values() for f in fs for i in f.get("flow_ids") or []}
            for s, g in (("a", fa), ("b", fb))
        }
        flows = {s: len(v) for s, v in ids.items()}
        rows.append(
            {
                "rule": rule,
                "status": status,
                "count": count,
                "only_in": only,
                "few_flows": _few(flows["a"], flows["b"]),
                "absence": _absence_of(status, flows, dur, "disappeared", "appeared"),
                "flow_ids": _evidence(ids["a"], ids["b"]),
            }
        )
    order = {"appeared": 0, "disappeared": 1, "changed": 2, "unchanged": 3}
    rows.sort(key=lambda r: (order[r["status"]], r["rule"]))
    return rows


def _finding_item(key: tuple[str, str, str], fs: list[dict[str, Any]]) -> dict[str, Any]:
    ids = {str(i) for f in fs for i in f.get("flow_ids") or []}
    return {
        "host": key[0],
        "recipient": key[1],
        "identifiers": [i for i in key[2].split(",") if i],
        "severity": sorted({str(f.get("severity")) for f in fs}),
        "titles": sorted({str(f.get("title")) for f in fs}),
        "flows": len(ids),
        "flow_ids": _sorted_ids(ids),
    }


# ---------------------------------------------------------------- claims about a diff

CLAIM_KINDS = (
    "no_identifiers_to",
    "no_data_to",
    "stopped_identifiers_to",
    "no_new_identifiers",
    "no_new_recipients",
)
_PARTY_KINDS = ("no_identifiers_to", "no_data_to", "stopped_identifiers_to")
_FORMS = (
    (re.compile(r"no (?:device )?identifiers? (?:sent )?to (?P<p>.+)", re.I), "no_identifiers_to"),
    (re.compile(r"no data (?:sent )?to (?P<p>.+)", re.I), "no_data_to"),
    (
        re.compile(r"(?:device )?identifiers? to (?P<p>.+?) (?:stopped|no longer sent)", re.I),
        "stopped_identifiers_to",
    ),
    (re.compile(r"no new identifiers?(?: (?:sent )?to (?P<p>.+))?", re.I), "no_new_identifiers"),
    (re.compile(r"no new recipients?", re.I), "no_new_recipients"),
)


@dataclass(frozen=True, slots=True)
class DiffClaim:
    text: str
    kind: str
    side: str = "b"  # the side a one-sided claim is about: "a" (before) or "b" (after)
    organisation: str | None = None
    country: str | None = None


def parse_claim(raw: Any, where: str = "claim") -> DiffClaim:
    """A claim as a mapping (``kind``, ``side``, ``organisation``/``country``, ``claim``) or
    as text: ``after: no identifiers to Xiaomi``, ``before: no data to CN``,
    ``before/after: identifiers to Xiaomi stopped``, ``after: no new recipients``."""
    if isinstance(raw, str):
        when, sep, rest = raw.partition(":")
        if not sep:
            raise DiffError(f"{where}: start with 'before:', 'after:' or 'before/after:'")
        said = {"before": "a", "after": "b", "before/after": "b"}.get(when.strip().lower())
        if said is None:
            raise DiffError(f"{where}: start with 'before:', 'after:' or 'before/after:'")
        for pattern, form in _FORMS:
            m = pattern.fullmatch(rest.strip().rstrip("."))
            if m:
                party = (m.groupdict().get("p") or "").strip()
                spec: dict[str, Any] = {"claim": raw, "kind": form, "side": said}
                if party:
                    spec["country" if re.fullmatch(r"[A-Z]{2}", party) else "organisation"] = party
                raw = spec
                break
        else:
            raise DiffError(f"{where}: not a claim form of a diff ({', '.join(CLAIM_KINDS)})")
    if not isinstance(raw, dict):
        raise DiffError(f"{where}: not a mapping or a text")
    kind = raw.get("kind")
    if kind not in CLAIM_KINDS:
        raise DiffError(f"{where}: kind must be one of {', '.join(CLAIM_KINDS)}")
    side = {"a": "a", "before": "a", "b": "b", "after": "b"}.get(
        str(raw.get("side") or "after").lower()
    )
    if side is None:
        raise DiffError(f"{where}: side must be before or after")
    claim = DiffClaim(
        text=str(raw.get("claim") or kind),
        kind=str(kind),
        side=side,
        organisation=str(raw["organisation"]) if raw.get("organisation") else None,
        country=str(raw["country"]).upper() if raw.get("country") else None,
    )
    if kind in _PARTY_KINDS and not (claim.organisation or claim.country):
        raise DiffError(f"{where}: give an organisation or a country")
    return claim


def load_diff_claims(path: Path) -> list[DiffClaim]:
    """A claims file for a diff: ``claims:`` holding mappings or text forms (docs/diff.md)."""
    items = claim_items(path, DiffError)
    return [parse_claim(raw, f"{path}: claim {i}") for i, raw in enumerate(items, 1)]


def _party(row: Mapping[str, Any], claim: DiffClaim, side: str | None = None) -> bool:
    if claim.organisation:
        org = claim.organisation.lower()
        for v in (row.get("recipient"), row.get("organisation_id"), row.get("parent")):
            if names_organisation(str(v or "").lower(), org):
                return True
    if claim.country:
        if row.get("country") == claim.country:
            return True
        sides = [side] if side else list(SIDES)
        for s in sides:
            got = row.get(s) if isinstance(row.get(s), dict) else None
            if got and claim.country in (got.get("server_countries") or []):
                return True
    return False


def _weak(row: Mapping[str, Any]) -> list[str]:
    a = row.get("absence") or {}
    return list(a.get("why") or []) if a.get("weak") else []


def _side_dur(diff: Mapping[str, Any], s: str) -> float:
    return float(((diff.get("sides") or {}).get(s) or {}).get("duration_seconds") or 0.0)


def evaluate_claim(diff: Mapping[str, Any], claim: DiffClaim) -> dict[str, Any]:
    """A verdict on ``claim`` from a diff document: ``verdict`` (the values of claims.py),
    ``reason`` and ``flow_ids`` on both sides."""
    s, other = claim.side, ("a" if claim.side == "b" else "b")
    word = {"a": "before", "b": "after"}
    who = claim.organisation or claim.country or ""
    ids = (
        [r for r in diff.get("identifiers") or [] if _party(r, claim)]
        if claim.kind in _PARTY_KINDS
        else []
    )
    recips = (
        [r for r in diff.get("recipients") or [] if _party(r, claim, s)]
        if claim.kind in _PARTY_KINDS
        else []
    )
    flows: dict[str, set[str]] = {"a": set(), "b": set()}
    verdict, reason = Verdict.SUPPORTED, ""

    def collect(rows: Iterable[Mapping[str, Any]], sides: Iterable[str] = SIDES) -> None:
        for r in rows:
            for x in sides:
                flows[x] |= set((r.get("flow_ids") or {}).get(x) or [])

    def short() -> str | None:
        d = _side_dur(diff, s)
        return (
            f"the {word[s]} side recorded {seconds_text(d)}, under {MIN_ABSENCE_S:g} s"
            if d < MIN_ABSENCE_S
            else None
        )

    if claim.kind in ("no_identifiers_to", "no_data_to"):
        if claim.kind == "no_identifiers_to":
            hit = [r for r in ids if r["flows"][s]]
            what = "device identifiers"
        else:
            hit = [r for r in recips if (r.get(s) or {}).get("bytes_up")]
            what = "data"
        seen_other = [
            r for r in (ids if claim.kind == "no_identifiers_to" else recips) if r not in hit
        ]
        if hit:
            collect(hit)
            verdict = Verdict.CONTRADICTED
            names = sorted({str(r.get("identifier") or r["recipient"]) for r in hit})
            reason = (
                f"{len(flows[s])} flow(s) {word[s]} carried {what} to {who} ({', '.join(names)})"
            )
        else:
            weak = [w for r in seen_other for w in _weak(r)]
            collect(seen_other)
            why = sorted(set(weak)) or [w for w in [short()] if w]
            if why:
                verdict = Verdict.UNDETERMINED
                reason = (
                    f"no {what} to {who} {word[s]}, but an absence there is weak: " + "; ".join(why)
                )
            elif seen_other:
                n = len(flows[other])
                reason = f"{what} to {who} were seen {word[other]} ({n} flow(s)) and not {word[s]}"
            else:
                reason = f"no {what} to {who} on either side"
    elif claim.kind == "stopped_identifiers_to":
        before = [r for r in ids if r["flows"]["a"]]
        after = [r for r in ids if r["flows"]["b"]]
        collect(ids)
        if after:
            verdict = Verdict.CONTRADICTED
            names = sorted({str(r["identifier"]) for r in after})
            n = len({f for r in after for f in r["flow_ids"]["b"]})
            reason = f"{n} flow(s) after still carried identifiers to {who} ({', '.join(names)})"
        elif not before:
            verdict = Verdict.UNDETERMINED
            reason = f"no identifiers to {who} before either: nothing was seen that could stop"
        else:
            weak = sorted({w for r in before for w in _weak(r)})
            if weak:
                verdict = Verdict.UNDETERMINED
                reason = (
                    f"identifiers to {who} seen before are absent after, but the absence is weak: "
                    + "; ".join(weak)
                )
            else:
                names = sorted({str(r["identifier"]) for r in before})
                reason = (
                    f"identifiers to {who} seen before ({', '.join(names)}) were not seen after"
                )
    elif claim.kind == "no_new_identifiers":
        new = [
            r
            for r in diff.get("identifiers") or []
            if r["status"] == "newly_sent"
            and (not (claim.organisation or claim.country) or _party(r, claim))
        ]
        collect(new)
        if new:
            verdict = Verdict.CONTRADICTED
            reason = "newly sent after: " + ", ".join(
                sorted(f"{r['identifier']} to {r['recipient']}" for r in new)
            )
        else:
            reason = "no identifier was sent after to a recipient that did not receive it before"
    elif claim.kind == "no_new_recipients":
        new = [r for r in diff.get("recipients") or [] if r["status"] == "appeared"]
        collect(new)
        if new:
            verdict = Verdict.CONTRADICTED
            reason = "recipients seen only after: " + ", ".join(sorted(r["recipient"] for r in new))
        else:
            reason = "every recipient seen after was seen before"
    return {
        "claim": claim.text,
        "kind": claim.kind,
        "side": s,
        "verdict": str(verdict),
        "reason": reason,
        "flow_ids": {x: sorted(v)[:MAX_FLOW_IDS] for x, v in flows.items()},
    }


def evaluate_claims(diff: dict[str, Any], claims: Sequence[DiffClaim]) -> list[dict[str, Any]]:
    return [evaluate_claim(diff, c) for c in claims]


# ---------------------------------------------------------------- the command


@dataclass
class DiffOutcome:
    doc: dict[str, Any]
    out: Path
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """Plain lines for the terminal (the CLI passes each through terminal_line)."""
    from auditor.analysis.diff_report import sentences

    return sentences(doc)


def diff_command(
    a: Path,
    b: Path,
    out: Path | None,
    formats: Sequence[str],
    as_json: bool,
    *,
    policy: str = "default",
    identifiers: Mapping[str, str] | None = None,
    intel: Sequence[str] = (),
    claims: Path | None = None,
    generated_at: str | None = None,
) -> DiffOutcome:
    """``auditor diff A B``: the diff of two report folders or sessions, written to ``out``
    (``reports/diff-<A>-<B>`` when None) in ``formats``. A session is analysed into
    ``out/sides/a`` (or ``b``) as ``auditor analyze`` would; ``as_json`` leaves out the
    terminal lines (the caller prints the document)."""
    from auditor.analysis.diff_report import render_html, render_md
    from auditor.fsutil import private_dir, write_private

    fmts = [f.strip().lower() for f in formats if f.strip()]
    bad = sorted(set(fmts) - set(FORMATS))
    if bad or not fmts:
        raise DiffError(
            f"unknown format(s): {', '.join(bad) or '(none)'}; use {', '.join(FORMATS)}"
        )
    parsed = load_diff_claims(claims) if claims else []  # a bad claims file fails before analysing
    target = Path(out) if out else Path("reports") / f"diff-{Path(a).name}-{Path(b).name}"
    for p in (a, b):
        if not Path(p).is_dir():
            raise DiffError(f"{p}: not a folder (give a report folder or a session)")
    sides = []
    for label, path in (("a", a), ("b", b)):
        from auditor.session.layout import MANIFEST

        if (Path(path) / "findings.json").is_file() or not (Path(path) / MANIFEST).is_file():
            sides.append(load_side(Path(path), target))  # read, or refused with its reason
            continue
        work = private_dir(target / "sides" / label)
        sides.append(
            load_side(
                Path(path),
                work,
                policy=policy,
                identifiers=identifiers,
                intel=intel,
                formats=("json", "md"),
            )
        )
        sides[-1].report = Path("sides") / label
    doc = build_diff(sides[0], sides[1], generated_at=generated_at)
    for side, label in zip(sides, SIDES, strict=True):
        doc["sides"][label]["report"] = str(side.report) if side.report else None
    doc["claims"] = evaluate_claims(doc, parsed)
    private_dir(target)
    files = []
    for fmt, name, render in (
        ("json", "diff.json", dumps),
        ("md", "diff.md", render_md),
        ("html", "diff.html", render_html),
    ):
        if fmt in fmts:
            write_private(target / name, render(doc))
            files.append(target / name)
    return DiffOutcome(doc, target, files, [] if as_json else summary_lines(doc))

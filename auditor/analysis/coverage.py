"""What a report covers, and what it could not: the ``coverage`` block of ``findings.json``.

Counts of connections, of what was not decrypted or bypassed the proxy, the sessions'
duration and scenario, the packet captures and what their engines dropped, and the
warnings a report must carry when a session did not end as planned.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditor import columns
from auditor.analysis.packetflows import PacketData
from auditor.session.layout import TLS_KEYLOG
from auditor.session.reader import Session


def build_coverage(
    sessions: list[Session],
    flows: pd.DataFrame,
    packets: dict[str, PacketData] | None,
    stats: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The ``coverage`` block of ``findings.json``."""
    out = _base(sessions, flows, packets)
    out["skipped"] = skipped(sessions)
    out["skipped_total"] = sum(int(x["count"]) for x in out["skipped"])
    out["packets_dropped"] = sum(int(x.get("dropped") or 0) for v in stats.values() for x in v)
    out["packets_lost"] = sum(int(x.get("lost") or 0) for v in stats.values() for x in v)
    return out


def incomplete(sess: Session) -> list[str]:
    """What the report must say when a session did not end as planned."""
    m = sess.manifest
    status = m.get("status")
    if status == "complete":
        return []
    if status == "open":
        return [
            f"{sess.id}: the session was never closed (its writer died); the report covers what "
            "was flushed to disk, and no file hashes can be checked"
        ]
    imported = _imported_files(m)
    if imported or m.get("import_failed"):
        return _import_incomplete(sess.id, m, imported)
    why = m.get("stopped_by") or "unknown"
    ended = m.get("ended_at") or "?"
    return [
        f"{sess.id}: the session is incomplete (stopped by {why} at {ended}); traffic after "
        "that point, and anything not flushed before it, is missing from this report"
    ]


def _imported_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    capture = manifest.get("capture")
    imp = capture.get("import") if isinstance(capture, dict) else None
    files = imp.get("files") if isinstance(imp, dict) else None
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def _import_incomplete(sid: str, m: dict[str, Any], files: list[dict[str, Any]]) -> list[str]:
    """An imported session is incomplete because a file was cut or damaged, or because the
    import itself failed: say which, never a stop that did not happen."""
    out: list[str] = []
    for f in files:
        stop = f.get("stopped")
        at = f.get("stopped_at_byte")
        if not isinstance(stop, dict) and at is None:
            continue
        stop = stop if isinstance(stop, dict) else {}
        name = f.get("name") or "?"
        size = stop.get("size", f.get("size"))
        where = f"byte {stop.get('at_byte', at)}" + (f" of {size}" if size is not None else "")
        n = stop.get("after_flows", (f.get("counts") or {}).get("flows", "?"))
        if stop.get("why") == "ends-mid-record":
            what = f"ends mid-record at {where}, after {n} flows (the file was cut short)"
        else:
            what = f"cannot be read past {where}, after {n} flows ({stop.get('reason', '?')})"
        out.append(
            f"{sid}: the imported flow file {name} {what}; the flows before that point are in "
            "this report, anything the file held after it is not"
        )
    if m.get("import_failed"):
        out.append(
            f"{sid}: the import failed part-way ({m['import_failed']}); the report covers "
            "what was imported before the failure"
        )
    if not out:
        out.append(
            f"{sid}: the imported session is marked {m.get('status')} without a recorded "
            "cause; check its import events"
        )
    return out


def skipped(sessions: list[Session]) -> list[dict[str, Any]]:
    """What imports skipped (``coverage.skipped``): per session, file, kind and reason, how
    many and where the first few were. Sorted, so the same sessions give the same list."""
    out: list[dict[str, Any]] = []
    for s in sessions:
        for f in _imported_files(s.manifest):
            groups = f.get("skipped_by_reason")
            if not isinstance(groups, list):  # a session imported before groups were kept
                n = f.get("skipped")
                groups = (
                    [{"kind": "unknown", "reason": "not recorded", "count": n, "examples": []}]
                    if isinstance(n, int) and n > 0
                    else []
                )
            for g in groups:
                if not isinstance(g, dict) or not isinstance(g.get("count"), int):
                    continue
                examples = g.get("examples")
                out.append(
                    {
                        "session": s.id,
                        "file": str(f.get("name") or "?"),
                        "kind": str(g.get("kind") or "unknown"),
                        "reason": str(g.get("reason") or ""),
                        "count": g["count"],
                        "examples": [str(e) for e in examples[:5]]
                        if isinstance(examples, list)
                        else [],
                    }
                )
    out.sort(key=lambda x: (x["session"], x["file"], x["kind"], -x["count"], x["reason"]))
    return out


def skipped_warnings(sess: Session) -> list[str]:
    """One warning per group of items an import of ``sess`` skipped (for the report's
    warnings, beside :func:`incomplete`): the file, how many of what, why, and where."""
    out = []
    for g in skipped([sess]):
        where = f" (first: {', '.join(g['examples'])})" if g["examples"] else ""
        out.append(
            f"{g['session']}: {g['file']}: {g['count']} {g['kind']} item(s) not imported: "
            f"{g['reason']}{where}"
        )
    return out


def _base(
    sessions: list[Session], flows: pd.DataFrame, packets: dict[str, PacketData] | None = None
) -> dict[str, Any]:
    total = len(flows)
    failed = int((flows[columns.RECORD_TYPE] == "tls_failed").sum()) if total else 0
    seen_by_packets = int((flows[columns.SEEN_BY] == "packets").sum()) if total else 0
    bypass = int(flows[columns.BYPASS].fillna(False).astype(bool).sum()) if total else 0
    captures = [f for p in (packets or {}).values() for f in p.files]
    idle = 0.0
    scen = []
    duration = 0.0
    for s in sessions:
        d = s.duration_seconds() or 0.0
        duration += d
        sc = s.manifest.get("scenario") or {}
        scen.append(sc.get("name") or "-")
        for step in sc.get("steps") or []:
            if step.get("kind") == "idle":
                idle += float(step.get("duration") or 0)
    return {
        "sessions": len(sessions),
        "duration_seconds": round(duration, 1),
        "scenarios": scen,
        "idle_seconds": idle,
        "connections": total,
        "not_decrypted": failed,
        "not_decrypted_share": round(failed / total, 3) if total else 0.0,
        "packet_capture": bool(captures),
        "packet_files": len(captures),
        "packets": sum(f.packets for f in captures),
        "seen_only_in_packets": seen_by_packets,
        "bypassed_proxy": bypass,
        "sessions_incomplete": [
            {
                "session": s.id,
                "status": s.manifest.get("status"),
                "stopped_by": s.manifest.get("stopped_by"),
                "why": incomplete(s),
            }
            for s in sessions
            if s.manifest.get("status") != "complete"
        ],
        "tls_keylogs": tls_keylogs(sessions),
    }


def tls_keylogs(sessions: list[Session]) -> list[dict[str, Any]]:
    """The TLS key log each session holds (mitmdump's secrets: Wireshark decrypts the
    session's packet captures with it), as its manifest hashed it: path, size and SHA-256,
    never the file itself (which holds the keys). Sorted by session."""
    out = []
    for s in sessions:
        for a in s.manifest.get("artifacts") or []:
            if isinstance(a, dict) and a.get("path") == TLS_KEYLOG:
                out.append(
                    {
                        "session": s.id,
                        "path": TLS_KEYLOG,
                        "size": a.get("size"),
                        "sha256": a.get("sha256"),
                    }
                )
    return sorted(out, key=lambda k: str(k["session"]))


def capture_stats(records: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """What each live packet capture said of itself when it stopped (``packets_stopped``):
    packets, and those the capture engine dropped or received broken, never hidden."""
    from auditor.records import EventRecord

    keys = ("source", "packets", "bytes", "dropped", "lost", "interruptions", "files", "errors")
    out: dict[str, list[dict[str, Any]]] = {}
    for sid, recs in records.items():
        for r in recs:
            if isinstance(r, EventRecord) and r.kind == "packets_stopped":
                out.setdefault(sid, []).append({k: r.data.get(k) for k in keys})
    return out

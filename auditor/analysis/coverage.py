"""What a report covers, and what it could not: the ``coverage`` block of ``findings.json``.

Counts of connections, of what was not decrypted or bypassed the proxy, the sessions'
duration and scenario, the packet captures and what their engines dropped, and the
warnings a report must carry when a session did not end as planned.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditor import columns as C
from auditor.analysis.packetflows import PacketData
from auditor.session import Session


def build_coverage(
    sessions: list[Session],
    flows: pd.DataFrame,
    packets: dict[str, PacketData] | None,
    stats: dict[str, list[dict[str, Any]]],
    records: dict[str, list[Any]],
) -> dict[str, Any]:
    """The ``coverage`` block of ``findings.json``."""
    out = _base(sessions, flows, packets)
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
    why = m.get("stopped_by") or "unknown"
    ended = m.get("ended_at") or "?"
    return [
        f"{sess.id}: the session is incomplete (stopped by {why} at {ended}); traffic after "
        "that point, and anything not flushed before it, is missing from this report"
    ]


def _base(
    sessions: list[Session], flows: pd.DataFrame, packets: dict[str, PacketData] | None = None
) -> dict[str, Any]:
    total = len(flows)
    failed = int((flows[C.RECORD_TYPE] == "tls_failed").sum()) if total else 0
    seen_by_packets = int((flows[C.SEEN_BY] == "packets").sum()) if total else 0
    bypass = int(flows[C.BYPASS].fillna(False).astype(bool).sum()) if total else 0
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
            }
            for s in sessions
            if s.manifest.get("status") != "complete"
        ],
    }


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

"""The conditions a capture was made under, as the report states them: whether QUIC was
blocked on the phone and how many QUIC packets were seen anyway, what the scenario marked and
set (the studies' presets: ``idle-after-boot``, ``sim-insert``, ``analytics-off``), and the
``--decrypt`` rules an analysis used.

``findings.json`` carries them as ``coverage.quic`` (one row per session), ``method.scenario_
events`` and ``method.decrypt_rules`` (docs/findings.md). They are read from what the session
recorded (its manifest's ``quic`` entry, its events) and from the packet flows, never inferred.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from auditor import columns
from auditor.records import EventRecord

# the events of a scenario the report lists, in time order, with the fields each keeps
SCENARIO_EVENTS: dict[str, tuple[str, ...]] = {
    "scenario_mark": ("mark",),
    "scenario_setting": ("namespace", "key", "found", "set", "source"),
    "device_rebooted": (),
    "quic_blocked": ("method",),
    "quic_not_blocked": ("why",),
}
MAX_SCENARIO_EVENTS = 200  # per session: a scenario that loops is not a timeline


def quic_rows(
    sessions: Iterable[tuple[str, Mapping[str, Any]]],
    seen: Mapping[str, dict[str, int] | None],
) -> list[dict[str, Any]]:
    """Per session (its id and manifest): whether QUIC was blocked and how (the manifest's
    ``quic``; ``None`` where the session does not say, as an import), and the QUIC the packet
    capture saw anyway (``seen``, by session id: :func:`quic_seen` of its packet flows)."""
    out = []
    for sid, manifest in sessions:
        q = manifest.get("quic")
        q = q if isinstance(q, Mapping) else {}
        out.append(
            {
                "session": sid,
                "blocked": q.get("blocked") if isinstance(q.get("blocked"), bool) else None,
                "method": q.get("method") if isinstance(q.get("method"), str) else None,
                "requested": q.get("requested") if isinstance(q.get("requested"), str) else None,
                "why": q.get("why") if isinstance(q.get("why"), str) else None,
                "seen": seen.get(sid),
            }
        )
    return out


def quic_seen(flows: pd.DataFrame | None) -> dict[str, int] | None:
    """The QUIC a session's packet flows (:class:`~auditor.analysis.packetflows.PacketData`
    ``flows``) show: flows to UDP port 443 and their packets, of which those whose Initial
    named a server (``transport`` quic). Taken when the capture is read, so that the
    packet rows need not be kept to the end of the analysis."""
    if flows is None or columns.SERVER_PORT not in flows:
        return None
    udp443 = _udp_443(flows)
    packets = _packets(flows)
    named = (
        _text_in(flows[columns.TRANSPORT], ["quic"])
        if columns.TRANSPORT in flows
        else np.zeros(len(flows), dtype=bool)
    )
    return {
        "udp_443_flows": int(udp443.sum()),
        "udp_443_packets": int(packets[udp443].sum()),
        "quic_flows_named": int((named & udp443).sum()),
    }


def _text_in(column: pd.Series, values: list[str]) -> np.ndarray:
    """Which rows hold one of ``values`` (no Python object made per row)."""
    return np.asarray(column.isin(values).fillna(False), dtype=bool)


def _udp_443(flows: pd.DataFrame) -> np.ndarray:
    port = pd.to_numeric(flows[columns.SERVER_PORT], errors="coerce").fillna(-1).to_numpy()
    if columns.TRANSPORT not in flows:
        return np.zeros(len(flows), dtype=bool)
    return (port == 443) & _text_in(flows[columns.TRANSPORT], ["udp", "quic"])


def _packets(flows: pd.DataFrame) -> np.ndarray:
    total = np.zeros(len(flows), dtype=np.int64)
    for col in (columns.PACKETS_UP, columns.PACKETS_DOWN):
        if col in flows:
            total += pd.to_numeric(flows[col], errors="coerce").fillna(0).to_numpy(np.int64)
    return total


def scenario_events(records: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """The scenario's marks, the settings it found and set, reboots and the QUIC blocking, per
    session in time order (at most :data:`MAX_SCENARIO_EVENTS` each), with only the fields
    :data:`SCENARIO_EVENTS` names (texts as recorded: escape them where shown)."""
    out: list[dict[str, Any]] = []
    for sid in sorted(records):
        rows = [r for r in records[sid] if isinstance(r, EventRecord) and r.kind in SCENARIO_EVENTS]
        rows.sort(key=lambda r: str(r.ts))
        for r in rows[:MAX_SCENARIO_EVENTS]:
            data = r.data if isinstance(r.data, Mapping) else {}
            out.append(
                {
                    "session": sid,
                    "ts": str(r.ts),
                    "kind": r.kind,
                    "message": str(r.message)[:500],
                    **{k: data.get(k) for k in SCENARIO_EVENTS[r.kind] if k in data},
                }
            )
    return out


def decrypt_rules(rules: Any) -> dict[str, Any] | None:
    """What findings.json says of a ``--decrypt`` rules file: its name, SHA-256 and each rule
    as :meth:`auditor.analysis.decrypt.Rule.describe` gives it (never a key)."""
    if rules is None:
        return None
    from pathlib import Path

    return {
        "file": Path(rules.source).name if rules.source else None,
        "sha256": rules.sha256 or None,
        "rules": [r.describe() for r in rules.rules],
    }

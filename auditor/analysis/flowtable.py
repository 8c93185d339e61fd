"""The analyser's flow table: every flow of a session, named, owned and placed in the scenario.

- **Name**: the HTTP Host, else the TLS SNI, else a DNS answer seen in the same capture for
  the server address, else the address alone; ``name_evidence`` says which.
- **Owning app**: from the socket snapshots (``sockets.jsonl``) and the package UID map of
  the device profile. A flow whose client port is the phone's own (emulator or LAN route) is
  matched by local port and time; through ``adb reverse`` the proxy sees the adb server's
  port instead, so a flow is matched to the sockets open toward the proxy port around its
  start (``time-window``), and more than one candidate UID is reported as ``ambiguous``.
- **Step**: the scenario step that was running when the flow started (from the session's
  ``scenario_step`` events), and whether it was an idle step.
- **Name evidence beside the name**: the leaf certificate of the server connection the flow
  used (``cert_*``; from the recorder's ``tls_server`` records for proxy rows, from a TLS
  <= 1.2 handshake for packet rows; ``cert_source`` says which) and the CNAME chain from the
  flow's name through every DNS answer of the session (``cnames``).
"""

from __future__ import annotations

import bisect
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor import columns, jsonio
from auditor.analysis.packetflows import (
    PacketData,
    cname_chains,
    cname_map,
    codes_of,
    per_value,
    text_array,
)
from auditor.device.model import socket_has_owner
from auditor.fsutil import open_regular
from auditor.netutil import is_loopback
from auditor.records import (
    CertificateInfo,
    DnsRecord,
    EventRecord,
    HttpRecord,
    TlsFailedRecord,
    TlsServerRecord,
)
from auditor.session import Session
from auditor.timeutil import parse_iso

log = logging.getLogger(__name__)

SOCKETS = "sockets.jsonl"
WINDOW_BEFORE = 1.5  # a snapshot may be up to a poll interval late
WINDOW_AFTER = 6.0  # and a socket lingers in the keep-alive pool after the request


@dataclass
class SocketIndex:
    """Socket snapshots, by time, reduced to what attribution needs."""

    times: list[float] = field(default_factory=list)
    by_local_port: list[dict[int, int]] = field(default_factory=list)  # lport -> uid
    to_remote: list[dict[tuple[str, int], set[int]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> SocketIndex:
        idx = cls()
        try:
            raw = open_regular(path)  # a FIFO in its place would make analyze wait forever
        except FileNotFoundError:
            return idx
        except OSError as exc:
            idx.warnings.append(f"{SOCKETS}: not read ({exc.strerror or exc})")
            return idx
        fh = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        rows: list[tuple[float, dict[int, int], dict[tuple[str, int], set[int]]]] = []
        with fh:
            for n, line in enumerate(fh, 1):
                try:
                    snap = jsonio.loads(line, f"{SOCKETS} line {n}")
                    ts = parse_iso(snap["ts"])
                    local: dict[int, int] = {}
                    remote: dict[tuple[str, int], set[int]] = {}
                    for e in snap["entries"]:
                        _proto, _lip, lport, rip, rport, state, uid = e[:7]
                        # sessions recorded before the poller kept ownerless rows apart
                        # hold them here: root, not the app, never owns a flow
                        if not socket_has_owner(state, int(uid), e[7] if len(e) > 7 else None):
                            continue
                        local[int(lport)] = int(uid)
                        remote.setdefault((str(rip), int(rport)), set()).add(int(uid))
                    rows.append((ts, local, remote))
                except (ValueError, KeyError, TypeError, IndexError):
                    idx.warnings.append(f"{SOCKETS}: line {n} unreadable, skipped")
        rows.sort(key=lambda r: r[0])
        idx.times = [r[0] for r in rows]
        idx.by_local_port = [r[1] for r in rows]
        idx.to_remote = [r[2] for r in rows]
        return idx

    def _window(self, ts: float) -> range:
        lo = bisect.bisect_left(self.times, ts - WINDOW_BEFORE)
        hi = bisect.bisect_right(self.times, ts + WINDOW_AFTER)
        return range(lo, hi)

    def by_port(self, ts: float, port: int) -> int | None:
        for i in self._window(ts):
            uid = self.by_local_port[i].get(port)
            if uid is not None:
                return uid
        return None

    def toward(self, ts: float, remote: tuple[str, int]) -> set[int]:
        uids: set[int] = set()
        for i in self._window(ts):
            uids |= self.to_remote[i].get(remote, set())
        return uids


@dataclass(frozen=True, slots=True)
class StepSpan:
    start: float
    kind: str
    label: str


def scenario_steps(records: Iterable[Any]) -> list[StepSpan]:
    spans = []
    for r in records:
        if isinstance(r, EventRecord) and r.kind == "scenario_step":
            if r.data.get("status") == "started":
                spans.append(StepSpan(parse_iso(r.ts), str(r.data.get("step", "")), r.message))
        elif isinstance(r, EventRecord) and r.kind in ("scenario_finished", "capture_stopped"):
            spans.append(StepSpan(parse_iso(r.ts), "", ""))
    spans.sort(key=lambda s: s.start)
    return spans


def build_flow_table(
    session: Session, records: list[Any] | None = None, packets: PacketData | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The session's flows with names, owning apps and scenario steps. Returns the table and
    the warnings met on the way. ``records``: the session's records, if already read;
    ``packets``: its packet flows (:func:`auditor.analysis.packetflows.read_packet_flows`),
    added as rows of their own (the flows the proxy did not see)."""
    if records is None:
        records = list(session.records())
    df = session.flows(records)
    warnings = list(session.warnings)
    df[columns.TRANSPORT] = "tcp"
    df[columns.SEEN_BY] = "proxy"
    df[columns.BYPASS] = False
    dns_names = _dns_names(records)
    if packets is not None:
        warnings += packets.warnings
        dns_names = {**packets.addr_names, **dns_names}  # the proxy's own DNS first
    steps = scenario_steps(records)
    device = session.manifest.get("device") or {}
    uid_map = _uid_map(device)
    sockets = SocketIndex.load(session.path / SOCKETS)
    warnings += sockets.warnings
    proxy = proxy_endpoint(session.manifest)

    df[columns.NAME], df[columns.NAME_EVIDENCE] = _proxy_names(df, dns_names)
    df[columns.PCAP_UID] = -1
    df[columns.PCAP_APP] = ""
    _add_certificates(df, records)
    if packets is not None and not packets.flows.empty:
        pf = packets.flows.copy(deep=False)  # copy-on-write: a column is copied when set
        _name_by_session_dns(pf, dns_names)
        df = pd.concat([df, pf], ignore_index=True) if len(df) else pf.reset_index(drop=True)
        df[columns.BYPASS] = df[columns.BYPASS].fillna(False).astype(bool)
    cnames = cname_map(_cname_pairs(records))
    if packets is not None:
        for owner, target in packets.cnames.items():
            cnames.setdefault(owner, target)
    df[columns.CNAMES] = cname_chains(df[columns.NAME], cnames)

    # seconds since the epoch, only when sockets or steps need them (Timestamp.timestamp()
    # per row, as the socket snapshots and step events are compared with)
    starts: list[float | None] = (
        [ts.timestamp() if not pd.isna(ts) else None for ts in df[columns.START]]
        if sockets.times or steps
        else []
    )
    df[columns.APP_UIDS], df[columns.APPS], df[columns.APP_EVIDENCE] = _apps(
        df, starts, uid_map, sockets, proxy
    )
    df[columns.STEP], df[columns.IDLE] = _steps(starts, steps, len(df))
    return df, warnings


def _name_by_session_dns(pf: pd.DataFrame, dns_names: dict[str, str]) -> None:
    """Name the packet rows the packets left unnamed (``name_evidence`` "ip") by a DNS
    answer seen elsewhere in the session, in place: each distinct address looked up once,
    the columns rebuilt by Arrow (:func:`text_array`)."""
    if not dns_names:
        return
    by_ip = (pf[columns.NAME_EVIDENCE] == "ip").to_numpy(dtype=bool)
    if not by_ip.any():
        return
    codes, ips = codes_of(pf[columns.SERVER_IP])
    # only the addresses of rows named by their address are looked up (the others keep
    # their names whatever the answer)
    asked = np.zeros(len(ips), dtype=bool)
    asked[codes[by_ip & (codes >= 0)]] = True
    answer: list[str | None] = [None] * len(ips)
    texts = np.asarray(ips, dtype=object)
    for k in np.flatnonzero(asked).tolist():
        answer[k] = dns_names.get(texts[k])
    known = np.append(np.asarray([a is not None for a in answer], dtype=bool), False)[codes]
    unnamed = by_ip & known
    if not unnamed.any():
        return
    name_codes, names = codes_of(pf[columns.NAME])
    # the new names follow the column's own: code len(names) + k is the k-th address's answer
    values = [*np.asarray(names, dtype=object).tolist(), *answer]
    name_codes = np.where(unnamed, len(names) + codes, name_codes)
    pf[columns.NAME] = text_array(name_codes, values)
    ev_codes, evidence = codes_of(pf[columns.NAME_EVIDENCE])
    ev_values = [*np.asarray(evidence, dtype=object).tolist(), "dns-answer"]
    pf[columns.NAME_EVIDENCE] = text_array(np.where(unnamed, len(evidence), ev_codes), ev_values)


def _proxy_names(df: pd.DataFrame, dns_names: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The name of each row and its evidence: the HTTP Host of an HTTP flow, else the SNI,
    else a DNS answer for the server address, else the address alone. Each distinct value is
    looked at once."""
    n = len(df)
    if n == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=object)

    def nonempty(col: str) -> np.ndarray:
        return per_value(df[col], lambda v: isinstance(v, str) and bool(v)).astype(bool)

    lower = lambda v: v.lower() if isinstance(v, str) else v  # noqa: E731
    ip = df[columns.SERVER_IP].to_numpy(dtype=object)
    by_host = (df[columns.RECORD_TYPE].to_numpy(dtype=object) == "http") & nonempty(columns.HOST)
    by_sni = ~by_host & nonempty(columns.SNI)
    answered = per_value(ip, lambda v: dns_names.get(v) if isinstance(v, str) else None)
    by_dns = ~by_host & ~by_sni & np.asarray([a is not None for a in answered], dtype=bool)
    rest = ~(by_host | by_sni | by_dns)
    names = np.empty(n, dtype=object)
    names[by_host] = per_value(df[columns.HOST].to_numpy(dtype=object)[by_host], lower)
    names[by_sni] = per_value(df[columns.SNI].to_numpy(dtype=object)[by_sni], lower)
    names[by_dns] = answered[by_dns]
    names[rest] = per_value(ip[rest], lambda v: v if isinstance(v, str) else "")
    evidence = np.select(
        [by_host, by_sni, by_dns], ["http-host", "tls-sni", "dns-answer"], "ip"
    ).astype(object)
    return names, evidence


def _apps(
    df: pd.DataFrame,
    starts: list[float | None],
    uid_map: dict[int, list[str]],
    sockets: SocketIndex,
    proxy: tuple[str, int] | None,
) -> tuple[Any, Any, Any]:
    """The owning app of each flow: PCAPdroid's uid when the packets carry one (the best
    evidence there is), else the socket snapshots by local port or, for the proxy's rows,
    by the sockets open toward the proxy around the flow's start."""
    n = len(df)
    pcap_uid = pd.to_numeric(df[columns.PCAP_UID], errors="coerce").to_numpy(dtype="float64")
    droid = ~np.isnan(pcap_uid) & (pcap_uid >= 0)
    if not droid.any() and not sockets.times:  # no evidence of an owner (an imported capture)
        none = np.zeros(n, dtype=np.intp)
        return text_array(none, [""]), text_array(none, [""]), text_array(none, ["none"])
    uids = np.full(n, "", dtype=object)
    apps = np.full(n, "", dtype=object)
    how = np.full(n, "none", dtype=object)
    if droid.any():
        uid_int = pcap_uid[droid].astype(np.int64)
        uids[droid] = per_value(uid_int.astype(object), lambda u: str(u))
        pcap_app = df[columns.PCAP_APP].to_numpy(dtype=object)[droid]
        keys = np.asarray([f"{u}\0" for u in uid_int.tolist()], dtype=object) + per_value(
            pcap_app, lambda a: str(a or "")
        )
        apps[droid] = per_value(keys, lambda k: _droid_app(k, uid_map))
        how[droid] = "pcapdroid"
    if not sockets.times:
        return uids, apps, how
    cips = df[columns.CLIENT_IP].to_numpy(dtype=object)
    cports = df[columns.CLIENT_PORT].to_numpy(dtype=object)
    seen = df[columns.SEEN_BY].to_numpy(dtype=object)
    for i in np.flatnonzero(~droid).tolist():
        ts, cip, cport = starts[i], cips[i], cports[i]
        found: set[int] = set()
        h = "none"
        if ts is not None:
            local = isinstance(cip, str) and is_loopback(cip)  # the phone's end of adb reverse
            if cport is not None and not pd.isna(cport) and not local:
                uid = sockets.by_port(ts, int(cport))
                if uid is not None:
                    found, h = {uid}, "local-port"
            if not found and proxy is not None and seen[i] == "proxy":
                found = sockets.toward(ts, proxy)
                h = "time-window" if len(found) == 1 else ("ambiguous" if found else "none")
        uids[i] = ";".join(str(u) for u in sorted(found))
        apps[i] = ";".join(sorted({p for u in found for p in uid_map.get(u, [])}))
        how[i] = h
    return uids, apps, how


def _droid_app(key: str, uid_map: dict[int, list[str]]) -> str:
    uid, app = key.split("\0", 1)
    known = uid_map.get(int(uid), [])
    return ";".join(sorted(known)) if known else app


def _steps(starts: list[float | None], steps: list[StepSpan], n: int) -> tuple[Any, np.ndarray]:
    """The scenario step running when each flow started, and whether it was an idle step."""
    if not steps:
        return text_array(np.zeros(n, dtype=np.intp), [""]), np.zeros(n, dtype=bool)
    step_times = np.asarray([s.start for s in steps], dtype="float64")
    ts = np.asarray([np.nan if t is None else t for t in starts], dtype="float64")
    i = np.searchsorted(step_times, ts, side="right") - 1
    i[np.isnan(ts)] = -1
    label_of = np.asarray([s.label for s in steps] + [""], dtype=object)
    idle_of = np.asarray([s.kind == "idle" for s in steps] + [False], dtype=bool)
    return label_of[i], idle_of[i]


def _add_certificates(df: pd.DataFrame, records: Iterable[Any]) -> None:
    """The ``cert_*`` columns of the proxy's rows: the leaf of the ``tls_server`` record the
    flow's ``server_conn_id`` names (a plain HTTP connection, or a session recorded before
    the recorder kept certificates, has none)."""
    leaves: dict[str, CertificateInfo] = {}
    conn: dict[tuple[str, str], str] = {}
    for r in records:
        if isinstance(r, TlsServerRecord) and r.certificates:
            leaves.setdefault(r.id, r.certificates[0])
        elif isinstance(r, HttpRecord | TlsFailedRecord) and r.server_conn_id:
            conn[(r.TYPE.value, r.id)] = r.server_conn_id
    rows: list[tuple[Any, ...]] = []
    for rtype, fid in zip(df[columns.RECORD_TYPE], df[columns.FLOW_ID], strict=True):
        leaf = leaves.get(conn.get((rtype, fid), ""))
        rows.append(_leaf_fields(leaf) if leaf else (None,) * len(columns.CERT_COLUMNS))
    for i, col in enumerate(columns.CERT_COLUMNS):
        df[col] = pd.Series([r[i] for r in rows], index=df.index, dtype=object)
    df[columns.CERT_SOURCE] = pd.Series(
        ["proxy" if r[-1] is not None else None for r in rows], index=df.index, dtype=object
    )


def _leaf_fields(leaf: CertificateInfo) -> tuple[str | None, ...]:
    from auditor.packets.tlscert import flow_fields  # not at import: it loads cryptography

    return flow_fields(leaf)


def _cname_pairs(records: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for r in records:
        if isinstance(r, DnsRecord):
            for a in r.answers:
                if a.rtype == "CNAME":
                    yield a.name, a.value


def _dns_names(records: Iterable[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in records:
        if isinstance(r, DnsRecord):
            for a in r.answers:
                if a.rtype in ("A", "AAAA"):
                    out.setdefault(a.value, r.qname.lower().rstrip("."))
    return out


def _uid_map(device: dict[str, Any]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in device.get("packages") or []:
        if isinstance(p, dict) and isinstance(p.get("uid"), int):
            out.setdefault(p["uid"], []).append(str(p.get("name")))
    return out


def proxy_endpoint(manifest: dict[str, Any]) -> tuple[str, int] | None:
    cap = manifest.get("capture") or {}
    proxy = cap.get("proxy") or {}
    port = proxy.get("port")
    if not isinstance(port, int):
        return None
    route = cap.get("route", "reverse")
    host = {"reverse": "127.0.0.1", "emulator": "10.0.2.2"}.get(route, proxy.get("listen_host"))
    return (str(host), port)

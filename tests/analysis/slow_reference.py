"""The per-row analysis path as it was before it was vectorised (commit 14bbed2), kept only as
a reference for tests/analysis/test_scale_equivalence.py: the fast path must give the same
flow table and the same findings.json. Slow by design; never imported by auditor."""

# ruff: noqa
# mypy: ignore-errors

from __future__ import annotations

import bisect
import ipaddress
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from auditor import columns as C
from auditor.analysis.engine import _NO_NAME, _hosting_entries, _recipient_text, _s
from auditor.analysis.flowtable import (
    SOCKETS,
    SocketIndex,
    _add_certificates,
    _cname_pairs as _record_cname_pairs,
    _dns_names,
    proxy_endpoint,
    _uid_map,
    scenario_steps,
)
from auditor.analysis.packetflows import (
    PATH_BYPASS,
    PATH_DIRECT,
    PATH_LOCAL,
    PATH_PROXY,
    RECORD_TYPE,
    SOURCE,
    PACKET_ROW_COLUMNS,
    CaptureFile,
    PacketData,
    _answer,
    _cname_pairs,
    cname_chain,
    cname_map,
    empty_frame,
    proxy_addresses,
    session_captures,
)
from auditor.intel.kb import KnowledgeBase, _rows_to_frame, cert_from_columns
from auditor.session import Session


def _tcp_state(proto: str, syn: bool, synack: bool, fin: bool, rst: bool) -> str:
    if proto != "tcp":
        return ""
    if rst:
        return "reset"
    if fin:
        return "closed"
    if syn and synack:
        return "established"
    if syn:
        return "syn-only"
    return "mid-stream"  # the capture began after the handshake


def _ts_s(t: float) -> str:
    return pd.Timestamp(t, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hosting_rows(cols, server_country, idx):
    """The networks a group's flows went to: AS, its organisation, the server's country."""
    from collections import defaultdict

    counts = defaultdict(int)
    for key in zip(*(c[idx] for c in cols), server_country[idx], strict=True):
        counts[key] += 1
    return _hosting_entries(counts.items())


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def read_packet_flows(path: Path, manifest: dict[str, Any]) -> PacketData:
    """Read every packet capture of the session at ``path``. A capture that cannot be read
    becomes a warning naming it; the others are still read."""
    from auditor.packets import PcapError, read_capture
    from auditor.packets import flows as F

    proxies = proxy_addresses(manifest)
    had_proxy = bool(proxies)
    frames: list[pd.DataFrame] = []
    data = PacketData(flows=empty_frame())
    for rel in session_captures(path, manifest):
        acct = CaptureFile(rel)
        data.files.append(acct)
        try:
            res = read_capture(path / rel, keep_packets=False)
        except (PcapError, OSError, ValueError) as exc:
            acct.error = str(exc)
            data.warnings.append(f"{rel}: not read: {exc}")
            continue
        acct.packets = int(res.counts.get("packets", 0))
        acct.flows = len(res.flows)
        acct.dns_rows = len(res.dns)
        acct.warnings = {str(k): int(v) for k, v in res.warnings.items()}
        if res.warnings:
            total = sum(res.warnings.values())
            data.warnings.append(
                f"{rel}: {total} packet warning(s): "
                + ", ".join(f"{k} {v}" for k, v in sorted(res.warnings.items()))
            )
        for name, addrs in res.names.items():
            for a in addrs:
                data.addr_names.setdefault(a, name.lower().rstrip("."))
        data.lookups += _lookups(rel, res, F)
        file_cnames = cname_map(_cname_pairs(res))
        for owner, target in file_cnames.items():
            data.cnames.setdefault(owner, target)
        fl = res.flows
        if fl.empty:
            continue
        server = list(zip(fl[F.SERVER_IP].astype(str), fl[F.SERVER_PORT].astype(int), strict=True))
        client_ips = fl[F.CLIENT_IP].astype(str).tolist()
        paths = []
        for (sip, sport), cip in zip(server, client_ips, strict=True):
            if (sip, sport) in proxies:
                paths.append(PATH_PROXY)
            elif _loopback(sip) and _loopback(cip):
                paths.append(PATH_LOCAL)
            else:
                paths.append(PATH_BYPASS if had_proxy else PATH_DIRECT)
        for p in paths:
            acct.paths[p] = acct.paths.get(p, 0) + 1
        keep = [p in (PATH_BYPASS, PATH_DIRECT) for p in paths]
        sel = fl[keep]
        if sel.empty:
            continue
        frames.append(_rows(rel, sel, res.dns, had_proxy, F, file_cnames))
    if frames:
        data.flows = pd.concat(frames, ignore_index=True)
    return data


def _rows(
    rel: str,
    fl: pd.DataFrame,
    dns: pd.DataFrame,
    had_proxy: bool,
    F: Any,
    cnames: dict[str, str],
) -> pd.DataFrame:
    """Packet flows in the analyser's columns."""
    n = len(fl)
    queries: dict[int, str] = {}
    if not dns.empty:
        asked = dns[~dns[F.RESPONSE]]
        for fid, grp in asked.groupby(F.DNS_FLOW_ID, sort=False):
            qn = sorted({str(q).lower().rstrip(".") for q in grp[F.QNAME].dropna()})
            queries[int(fid)] = ";".join(q for q in qn if q)
    sni = fl[F.SNI].where(fl[F.SNI].notna(), fl[F.QUIC_SNI])
    alpn = fl[F.ALPN].where(fl[F.ALPN].notna(), fl[F.QUIC_ALPN])
    proto = fl[F.PROTO].astype(str)
    transport = proto.where(~(fl[F.QUIC_SNI].notna() & (proto == "udp")), "quic")
    scheme = pd.Series([None] * n, index=fl.index, dtype=object)
    scheme[fl[F.HTTP_HOST].notna()] = "http"
    scheme[sni.notna()] = "https"
    state = [
        _tcp_state(p, syn, synack, fin, rst)
        for p, syn, synack, fin, rst in zip(
            proto, fl[F.SYN_SEEN], fl[F.SYNACK_SEEN], fl[F.FIN_SEEN], fl[F.RST_SEEN], strict=True
        )
    ]
    app = [a if isinstance(a, str) else "" for a in fl[F.APP]]
    out = pd.DataFrame(
        {
            C.FLOW_ID: [f"{rel}#{int(i)}" for i in fl[F.FLOW_ID]],
            C.RECORD_TYPE: RECORD_TYPE,
            C.SOURCE: SOURCE,
            C.START: fl[F.FIRST_SEEN].to_numpy(),
            C.END: fl[F.LAST_SEEN].to_numpy(),
            C.CLIENT_IP: fl[F.CLIENT_IP].astype(str).to_numpy(),
            C.CLIENT_PORT: fl[F.CLIENT_PORT].astype("Int64").to_numpy(),
            C.SERVER_IP: fl[F.SERVER_IP].astype(str).to_numpy(),
            C.SERVER_PORT: fl[F.SERVER_PORT].astype("Int64").to_numpy(),
            C.SNI: sni.to_numpy(),
            C.TLS_VERSION: None,
            C.ALPN: alpn.to_numpy(),
            C.METHOD: None,
            C.SCHEME: scheme.to_numpy(),
            C.HOST: fl[F.HTTP_HOST].to_numpy(),
            C.PORT: fl[F.SERVER_PORT].astype("Int64").to_numpy(),
            C.PATH: None,
            C.URL: None,
            C.STATUS: pd.array([pd.NA] * n, dtype="Int64"),
            C.BYTES_UP: fl[F.IP_BYTES_UP].astype("int64").to_numpy(),
            C.BYTES_DOWN: fl[F.IP_BYTES_DOWN].astype("int64").to_numpy(),
            C.ERROR: None,
            C.TRANSPORT: transport.to_numpy(),
            C.SEEN_BY: SOURCE,
            C.BYPASS: had_proxy,
            C.PACKETS_UP: fl[F.PACKETS_UP].astype("int64").to_numpy(),
            C.PACKETS_DOWN: fl[F.PACKETS_DOWN].astype("int64").to_numpy(),
            C.CAPTURE_FILE: rel,
            C.TCP_STATE: state,
            C.NAME: fl[F.NAME].astype(str).str.lower().to_numpy(),
            C.NAME_EVIDENCE: fl[F.NAME_EVIDENCE].astype(str).to_numpy(),
            C.PCAP_UID: fl[F.UID].astype("int64").to_numpy(),
            C.PCAP_APP: app,
            C.DNS_QUERIES: [queries.get(int(i), "") for i in fl[F.FLOW_ID]],
            **{c: _objects(fl[c]) for c in C.CERT_COLUMNS},
            C.CERT_SOURCE: [SOURCE if isinstance(v, str) else None for v in fl[C.CERT_SHA256]],
        }
    )
    out[C.CNAMES] = [cname_chain(name, cnames) for name in out[C.NAME]]
    for col in C.FLOW_COLUMNS:
        if col not in out.columns:
            out[col] = None
    return out[list(PACKET_ROW_COLUMNS)]


def _objects(column: pd.Series) -> list[str | None]:
    """A text column with None (not NaN) where it has no value."""
    return [v if isinstance(v, str) else None for v in column]


def _lookups(rel: str, res: Any, F: Any) -> list[dict[str, Any]]:
    """One entry per DNS answer seen (responses only): what was asked, of whom, and what came
    back, with the capture and flow it came from."""
    dns = res.dns
    if dns.empty:
        return []
    out = []
    for i, row in enumerate(dns.itertuples(index=False)):
        r = row._asdict()
        if not r[F.RESPONSE]:
            continue
        answers = res.answers_of(i)
        out.append(
            {
                "ts": r[F.DNS_TS].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "qname": str(r[F.QNAME] or "").lower().rstrip("."),
                "qtype": str(r[F.QTYPE] or ""),
                "rcode": str(r[F.RCODE] or ""),
                "server": f"{r[F.DNS_SERVER_IP]}:{int(r[F.DNS_SERVER_PORT])}",
                "protocol": str(r[F.DNS_PROTOCOL]),
                "transport": str(r[F.TRANSPORT]),
                "answers": [_answer(a) for a in answers][:32],
                "flow_id": f"{rel}#{int(r[F.DNS_FLOW_ID])}",
            }
        )
    return out


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
    df[C.TRANSPORT] = "tcp"
    df[C.SEEN_BY] = "proxy"
    df[C.BYPASS] = False
    dns_names = _dns_names(records)
    if packets is not None:
        warnings += packets.warnings
        for ip, name in packets.addr_names.items():
            dns_names.setdefault(ip, name)
    steps = scenario_steps(records)
    device = session.manifest.get("device") or {}
    uid_map = _uid_map(device)
    sockets = SocketIndex.load(session.path / SOCKETS)
    warnings += sockets.warnings
    proxy = proxy_endpoint(session.manifest)

    names, evidence = [], []
    for host, sni, ip, rtype in zip(
        df[C.HOST], df[C.SNI], df[C.SERVER_IP], df[C.RECORD_TYPE], strict=True
    ):
        if rtype == "http" and isinstance(host, str) and host:
            names.append(host.lower())
            evidence.append("http-host")
        elif isinstance(sni, str) and sni:
            names.append(sni.lower())
            evidence.append("tls-sni")
        elif isinstance(ip, str) and ip in dns_names:
            names.append(dns_names[ip])
            evidence.append("dns-answer")
        else:
            names.append(ip if isinstance(ip, str) else "")
            evidence.append("ip")
    df[C.NAME] = names
    df[C.NAME_EVIDENCE] = evidence
    df[C.PCAP_UID] = -1
    df[C.PCAP_APP] = ""
    _add_certificates(df, records)
    if packets is not None and not packets.flows.empty:
        pf = packets.flows.copy()
        # an address the packets left unnamed may be named by DNS seen elsewhere in the session
        unnamed = (pf[C.NAME_EVIDENCE] == "ip") & pf[C.SERVER_IP].isin(dns_names.keys())
        pf.loc[unnamed, C.NAME] = pf.loc[unnamed, C.SERVER_IP].map(dns_names)
        pf.loc[unnamed, C.NAME_EVIDENCE] = "dns-answer"
        df = pd.concat([df, pf], ignore_index=True) if len(df) else pf.reset_index(drop=True)
        df[C.BYPASS] = df[C.BYPASS].fillna(False).astype(bool)
    cnames = cname_map(_record_cname_pairs(records))
    if packets is not None:
        for owner, target in packets.cnames.items():
            cnames.setdefault(owner, target)
    df[C.CNAMES] = [cname_chain(n, cnames) for n in df[C.NAME]]

    starts = [ts.timestamp() if not pd.isna(ts) else None for ts in df[C.START]]
    app_uids, apps, app_ev = [], [], []
    for ts, cip, cport, seen_by, pcap_uid, pcap_app in zip(
        starts,
        df[C.CLIENT_IP],
        df[C.CLIENT_PORT],
        df[C.SEEN_BY],
        df[C.PCAP_UID],
        df[C.PCAP_APP],
        strict=True,
    ):
        uids: set[int] = set()
        how = "none"
        if isinstance(pcap_uid, (int, float)) and not pd.isna(pcap_uid) and pcap_uid >= 0:
            # PCAPdroid named the app of each packet: the best evidence there is
            droid_uid = int(pcap_uid)
            app_uids.append(str(droid_uid))
            known = uid_map.get(droid_uid, [])
            apps.append(";".join(sorted(known)) if known else str(pcap_app or ""))
            app_ev.append("pcapdroid")
            continue
        if ts is not None and sockets.times:
            if cport is not None and not pd.isna(cport) and cip not in ("127.0.0.1", "::1"):
                uid = sockets.by_port(ts, int(cport))
                if uid is not None:
                    uids, how = {uid}, "local-port"
            if not uids and proxy is not None and seen_by == "proxy":
                uids = sockets.toward(ts, proxy)
                how = "time-window" if len(uids) == 1 else ("ambiguous" if uids else "none")
        app_uids.append(";".join(str(u) for u in sorted(uids)))
        apps.append(";".join(sorted({p for u in uids for p in uid_map.get(u, [])})))
        app_ev.append(how)
    df[C.APP_UIDS] = app_uids
    df[C.APPS] = apps
    df[C.APP_EVIDENCE] = app_ev

    step_times = [s.start for s in steps]
    labels, idle = [], []
    for ts in starts:
        i = bisect.bisect_right(step_times, ts) - 1 if ts is not None else -1
        span = steps[i] if i >= 0 else None
        labels.append(span.label if span else "")
        idle.append(bool(span and span.kind == "idle"))
    df[C.STEP] = labels
    df[C.IDLE] = idle
    return df, warnings


def _endpoints(
    flows: pd.DataFrame, kb: KnowledgeBase, boots: list[float] | None = None
) -> list[dict[str, Any]]:
    """One row per host and recipient: every flow is attributed on its own evidence, and a
    row groups the flows of one host that went to one recipient (a host whose flows met
    different evidence, e.g. another certificate, gives several rows). The hosting of each
    row is listed per network and country, with its flows, and its legal exposure covers
    every country its servers stood in.

    One pass over the table: rows are sorted by group once and each group is read from
    plain arrays (pandas per group costs about 5 ms, 40 s on 7,000 groups)."""
    out: list[dict[str, Any]] = []
    n = len(flows)
    if n == 0:
        return out

    def col(name: str) -> np.ndarray:
        if name not in flows.columns:
            return np.full(n, None, dtype=object)
        v = flows[name].astype(object).to_numpy(copy=True)
        v[pd.isna(v)] = None
        return v

    names = np.asarray([_NO_NAME if v is None else str(v) for v in col(C.NAME)], dtype=object)
    orgs = np.asarray(["" if v is None else str(v) for v in col(C.ORGANISATION)], dtype=object)
    gcodes, _ = pd.factorize(pd.Series(names + "\0" + orgs, dtype=object))
    order = np.argsort(gcodes, kind="stable")
    bounds = np.flatnonzero(np.diff(gcodes[order])) + 1
    groups = np.split(order, bounds)
    starts = pd.to_datetime(flows[C.START], utc=True, errors="coerce")
    secs = np.where(starts.isna(), np.nan, starts.dt.as_unit("ns").astype("int64") / 1e9)
    up = flows[C.BYTES_UP].fillna(0).to_numpy(dtype="float64")
    down = flows[C.BYTES_DOWN].fillna(0).to_numpy(dtype="float64")
    idle = flows[C.IDLE].fillna(False).astype(bool).to_numpy()
    linked = flows[C.STATE_LINKED].fillna(False).astype(bool).to_numpy()
    ips, fids, apps = col(C.SERVER_IP), col(C.FLOW_ID), col(C.APPS)
    org_name, parent, country, cats = (
        col(C.ORGANISATION_NAME), col(C.PARENT), col(C.COUNTRY), col(C.CATEGORIES)
    )  # fmt: skip
    hosting_cols = [col(c) for c in (C.ASN, C.HOSTING_NAME, C.HOSTING_ORG, C.ASN_ORG)]
    server_country = col(C.SERVER_COUNTRY)
    evidence_cols = {c: col(c) for c in C.NAME_EVIDENCE_COLUMNS}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for idx in groups:
        i0 = int(idx[0])
        host = str(names[i0])
        attribution = kb.lookup(
            None if host == _NO_NAME else host,
            _s(ips[i0]),
            cert=cert_from_columns({c: v[i0] for c, v in evidence_cols.items()}),
            cnames=[x for x in str(evidence_cols[C.CNAMES][i0] or "").split(";") if x],
        ).to_json()
        hosting = _hosting_rows(hosting_cols, server_country, idx)
        exposure = list(attribution["legal_exposure"])
        have = {e["country"] for e in exposure}
        for h in hosting:  # every server country of the group, not only the first flow's
            c = h["country"]
            if c and c not in have:
                have.add(c)
                e = kb.exposure_of(c, "server location")
                if e is not None:
                    exposure.append(e.to_json())
        times = np.sort(secs[idx][~np.isnan(secs[idx])])
        span = float(times[-1] - times[0]) if len(times) > 1 else 0.0
        after_boot = None
        for boot in boots or []:
            later = times[times >= boot]
            if len(later):
                after_boot = round(float(later[0]) - boot, 1)
        group_ips = sorted({str(x) for x in ips[idx] if x is not None})
        record = {
            "host": host,
            "ip": group_ips[0] if group_ips else None,
            "ips": group_ips[:50],
            "organisation": _s(org_name[i0]),
            "organisation_id": _s(orgs[i0]) or None,
            "parent": _s(parent[i0]),
            "country": _s(country[i0]),
            "categories": sorted(c for c in str(cats[i0] or "").split(";") if c),
            "basis": attribution["basis"],
            "confidence": attribution["confidence"],
            "evidence": attribution["evidence"],
            "conflicts": attribution["conflicts"],
            "recipient": _recipient_text(attribution, hosting),
            "hosting": hosting,
            "hosted_by": "; ".join(h["label"] for h in hosting) or None,
            "server_country": hosting[0]["country"] if hosting else None,
            "state_control": attribution["state_control"],
            "legal_exposure": exposure,
            "state_linked": bool(linked[idx].any()),
            "flows": len(idx),
            "flow_ids": sorted(str(f) for f in fids[idx])[:200],
            "bytes_up": int(up[idx].sum()),
            "bytes_down": int(down[idx].sum()),
            "first_seen": _ts_s(times[0]) if len(times) else None,
            "last_seen": _ts_s(times[-1]) if len(times) else None,
            "apps": sorted({a for v in apps[idx] if v for a in str(v).split(";") if a}),
            "per_minute": round(60 * (len(times) - 1) / span, 2) if span else None,
            "idle_flows": int(idle[idx].sum()),
            "first_contact_after_boot_s": after_boot,
            "sources": attribution.get("sources") or [],
            "jurisdiction": attribution.get("jurisdiction") or [],
            "state_link": attribution.get("state_link") or [],
        }
        rows.append((host, str(orgs[i0]), record))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


def classify_hosts(
    self,
    hosts: pd.Series | Sequence[str | None],
    ips: pd.Series | Sequence[str | None] | None = None,
    *,
    evidence: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Attribute a whole column of hosts (and, optionally, the matching server addresses
    and the name evidence of each flow: the CERT_* and CNAMES columns of ``evidence``).

    Each distinct combination is looked up once and mapped back to the rows with integer
    codes, so the cost follows the number of distinct values, not of rows. The result has
    the columns of :data:`auditor.intel.model.CLASSIFY_COLUMNS` and the index of
    ``hosts``; text columns are categorical, ``asn`` is a nullable integer.
    """
    import numpy as np
    import pandas as pd

    hs = hosts if isinstance(hosts, pd.Series) else pd.Series(list(hosts), dtype=object)
    n = len(hs)
    columns: list[np.ndarray] = [hs.to_numpy(dtype=object)]
    if ips is not None:
        ip_s = ips if isinstance(ips, pd.Series) else pd.Series(list(ips), dtype=object)
        if len(ip_s) != n:
            raise ValueError("hosts and ips must have the same length")
        columns.append(ip_s.to_numpy(dtype=object))
    else:
        columns.append(np.full(n, None, dtype=object))
    ev_cols = [c for c in C.NAME_EVIDENCE_COLUMNS if evidence is not None and c in evidence.columns]
    if evidence is not None and ev_cols and len(evidence) != n:
        raise ValueError("evidence must have one row per host")
    for name in ev_cols:
        assert evidence is not None
        columns.append(evidence[name].to_numpy(dtype=object))
    # one mixed-radix code per row over all columns, refactorized only when the radix
    # would overflow; an evidence column with no value at all is left out
    codes = np.zeros(n, dtype=np.int64)
    radix = 1
    kept: list[np.ndarray] = []
    kept_ev: list[str] = []
    for j, col in enumerate(columns):
        vcodes, uniq = pd.factorize(col, use_na_sentinel=True)
        if j >= 2 and len(uniq) == 0:
            continue
        kept.append(col)
        if j >= 2:
            kept_ev.append(ev_cols[j - 2])
        width = len(uniq) + 1
        if radix * width >= 2**62:
            dense, seen = pd.factorize(codes)
            codes, radix = dense.astype(np.int64), len(seen)
        codes = codes * width + (vcodes.astype(np.int64) + 1)
        radix *= width
    codes = pd.factorize(codes)[0].astype(np.int64)
    columns, ev_cols = kept, kept_ev
    # codes are dense (0..k-1) after the last factorize: one lookup per distinct code
    _, first = np.unique(codes, return_index=True)
    rows = [self._row([col[i] for col in columns], ev_cols) for i in first.tolist()]
    return _rows_to_frame(rows, codes, hs.index)

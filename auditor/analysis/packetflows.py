"""A session's packet captures as rows of the analyser's flow table.

A proxy sees only what goes through it. The packet captures of a session (live, in
``packets/``, or imported, under ``original/``) also hold what did not: DNS, QUIC, push
channels, and apps that ignore the proxy setting. Each capture is read with the fast packet
path (:func:`auditor.packets.read_capture`), and each of its flows is classified:

- ``proxy``: the phone's connection to the interception proxy (``127.0.0.1:PORT`` through
  ``adb reverse``, ``10.0.2.2:PORT`` on the emulator, or the LAN address). The proxy's own
  records already describe it, so it is counted and left out of the table.
- ``local``: loopback on the phone, not the proxy (it never leaves the phone); counted, left out.
- ``bypass``: anything else, while the session had a proxy set: it left the phone without going
  through the proxy. These rows carry ``bypass = True``, and the ``proxy-bypass`` rule reports
  them per app.
- ``direct``: anything else in a session that had no proxy (an imported capture): the
  packets are all there is, so nothing "bypassed" anything.

Each row's ``flow_id`` is ``<capture file>#<flow number>``, the flow's index in
:func:`~auditor.packets.read_capture`'s table for that file, so a finding names the file and
the flow that back it. The capture is never modified and nothing is cached in the session
(it is sealed evidence); reading is fast enough to do on every analysis.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from auditor import columns as C

# the server's leaf certificate (from the packets' TLS <= 1.2 handshakes, or the proxy's)

log = logging.getLogger(__name__)

PACKETS_DIR = "packets"
ORIGINAL_DIR = "original"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
PACKET_FORMATS = ("pcap", "pcapng")
RECORD_TYPE = "packet_flow"
SOURCE = "packets"

PATH_PROXY = "proxy"
PATH_LOCAL = "local"
PATH_BYPASS = "bypass"
PATH_DIRECT = "direct"


@dataclass
class CaptureFile:
    """One capture of the session, and what reading it gave."""

    rel: str
    packets: int = 0
    flows: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    dns_rows: int = 0
    warnings: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.rel,
            "packets": self.packets,
            "flows": self.flows,
            "paths": dict(sorted(self.paths.items())),
            "dns_rows": self.dns_rows,
            "warnings": dict(sorted(self.warnings.items())),
            "error": self.error,
        }


@dataclass
class PacketData:
    """The packet flows of a session (analyser columns), the names DNS gave to addresses, the
    DNS lookups, and per-file accounts."""

    flows: pd.DataFrame
    addr_names: dict[str, str] = field(default_factory=dict)
    cnames: dict[str, str] = field(default_factory=dict)  # owner -> target, first answer seen
    lookups: list[dict[str, Any]] = field(default_factory=list)
    files: list[CaptureFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        paths: dict[str, int] = {}
        for f in self.files:
            for k, v in f.paths.items():
                paths[k] = paths.get(k, 0) + v
        return {
            "files": [f.to_dict() for f in self.files],
            "packets": sum(f.packets for f in self.files),
            "flows": sum(f.flows for f in self.files),
            "paths": dict(sorted(paths.items())),
        }


def session_captures(path: Path, manifest: dict[str, Any]) -> list[str]:
    """The packet captures of a session, relative to it: ``packets/*.pcap[ng]`` and the
    imported originals whose format was pcap or pcapng. Sorted, so analysis is deterministic."""
    out: list[str] = []
    pdir = path / PACKETS_DIR
    if pdir.is_dir():
        for p in sorted(pdir.iterdir()):
            if p.is_file() and p.suffix.lower() in CAPTURE_SUFFIXES:
                out.append(f"{PACKETS_DIR}/{p.name}")
    imported = ((manifest.get("capture") or {}).get("import") or {}).get("files") or []
    for f in imported:
        if not isinstance(f, dict) or f.get("format") not in PACKET_FORMATS:
            continue
        rel = f.get("original")
        if isinstance(rel, str) and _inside(path, rel):
            out.append(rel)
    return out


def _inside(base: Path, rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and (base / p).is_file()


def proxy_addresses(manifest: dict[str, Any]) -> set[tuple[str, int]]:
    """Where the phone's proxied connections go, as the phone sees them."""
    cap = manifest.get("capture") or {}
    proxy = cap.get("proxy") or {}
    port = proxy.get("port")
    if not isinstance(port, int):
        return set()
    route = cap.get("route", "reverse")
    hosts = {"reverse": {"127.0.0.1", "::1"}, "emulator": {"10.0.2.2"}}.get(route)
    if hosts is None:
        hosts = {str(proxy.get("listen_host") or "")}
    return {(h, port) for h in hosts if h}


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
        data.lookups += _lookups(rel, res.dns, F)
        file_cnames = cname_map(_cname_pairs(res.dns, F))
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


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in PACKET_ROW_COLUMNS})


PACKET_ROW_COLUMNS: tuple[str, ...] = (
    *C.FLOW_COLUMNS,
    C.TRANSPORT,
    C.SEEN_BY,
    C.BYPASS,
    C.PACKETS_UP,
    C.PACKETS_DOWN,
    C.CAPTURE_FILE,
    C.TCP_STATE,
    C.NAME,
    C.NAME_EVIDENCE,
    C.PCAP_UID,
    C.PCAP_APP,
    C.DNS_QUERIES,
    *C.CERT_COLUMNS,
    C.CERT_SOURCE,
    C.CNAMES,
)


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


# ---------------------------------------------------------------------------- CNAME chains

MAX_CHAIN = 16  # names in a CNAME chain, the flow's own included


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def cname_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """CNAME answers (owner, target) as a map; when one owner was given several targets, the
    first answer seen is kept (deterministic: records in file order, packets in order)."""
    out: dict[str, str] = {}
    for owner, target in pairs:
        o, t = _norm(owner), _norm(target)
        if o and t and o != t:
            out.setdefault(o, t)
    return out


def cname_chain(name: object, cnames: dict[str, str]) -> str:
    """``name;cname1;cname2`` following ``cnames`` from the flow's name (a loop or more than
    :data:`MAX_CHAIN` names ends it); empty when the name has no CNAME. A ``;`` inside a
    name is written ``\\059``."""
    from auditor.packets.tlscert import joined  # not at import: it loads cryptography

    if not isinstance(name, str) or not cnames:
        return ""
    chain = [_norm(name)]
    while len(chain) < MAX_CHAIN:
        nxt = cnames.get(chain[-1])
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    return joined(chain) if len(chain) > 1 else ""


def _cname_pairs(dns: pd.DataFrame, F: Any) -> Iterator[tuple[str, str]]:
    """(owner, target) of each CNAME in the DNS answers of a capture, in packet order."""
    from auditor.packets.names import TYPE_CNAME, DnsResource

    if dns.empty:
        return
    for answers, response in zip(dns[F.ANSWERS], dns[F.RESPONSE], strict=True):
        if not response or not answers:
            continue
        for a in answers:
            if isinstance(a, DnsResource) and a.rtype == TYPE_CNAME and a.value:
                yield a.name, a.value


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


def _lookups(rel: str, dns: pd.DataFrame, F: Any) -> list[dict[str, Any]]:
    """One entry per DNS answer seen (responses only): what was asked, of whom, and what came
    back, with the capture and flow it came from."""
    if dns.empty:
        return []
    resp = dns[dns[F.RESPONSE]]
    out = []
    for row in resp.itertuples(index=False):
        r = row._asdict()
        answers = r.get(F.ANSWERS) or ()
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


def _answer(a: Any) -> str:
    from auditor.packets.names import DnsResource, dns_type_name

    if isinstance(a, DnsResource):
        value = a.value if a.value is not None else "(not decoded)"
        hints = f" hints {','.join(a.hints)}" if a.hints else ""
        return f"{dns_type_name(a.rtype)} {value}{hints}"
    return str(a)

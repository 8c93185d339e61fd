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
the flow that back it. The capture is never modified and nothing is added to the session
(it is sealed evidence). What each capture gives is kept in the user's cache folder, under its
SHA-256 and the code's (:mod:`auditor.analysis.packetcache`), so that analysing a session
again, or for the first time after ``auditor import`` read it, does not read it again.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor import columns
from auditor.netutil import is_loopback
from auditor.packets import flows as capture_flows
from auditor.session import readable_files

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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptureFile:
        """The inverse of :meth:`to_dict`; raises where ``d`` is not one of its outputs."""
        paths, warns = ({str(k): int(v) for k, v in d[n].items()} for n in ("paths", "warnings"))
        error = d["error"]
        return cls(str(d["file"]), int(d["packets"]), int(d["flows"]), paths, int(d["dns_rows"]),
                   warns, None if error is None else str(error))  # fmt: skip


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
    # only what the manifest hashed, once the session is closed: what is not hashed is not
    # read (a capture added later is named by `auditor verify`, never analysed)
    out = [
        rel
        for rel in readable_files(path, manifest, PACKETS_DIR)
        if rel.count("/") == 1 and Path(rel).suffix.lower() in CAPTURE_SUFFIXES
    ]
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


def codes_of(column: pd.Series | np.ndarray) -> tuple[np.ndarray, Any]:
    """A column as integer codes (-1: no value) and the value of each code, in the column's
    own type (a pandas Index or array): a categorical's own codes and categories, else
    pandas' factorize (Arrow strings are encoded by Arrow). No Python object is made per
    row."""
    if isinstance(column, pd.Series) and isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy().astype(np.intp), column.cat.categories
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.intp), uniques


def _is_arrow_text(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"


def text_array(codes: np.ndarray, values: Any) -> Any:
    """``values[codes]`` as a column of the table's text type (Arrow strings; missing where
    the code is -1 or the value None), gathered by Arrow: a table of 400,000 rows would
    otherwise turn 400,000 Python strings into Arrow strings one by one. ``values``: text
    (Arrow strings are taken as they are), None or NaN. No rows: an empty object array, the
    type a table gives an empty column of text."""
    import pyarrow as pa

    if len(codes) == 0:
        return np.empty(0, dtype=object)

    if _is_arrow_text(values):
        dictionary = pa.array(pd.Series(values, copy=False).array)
        if isinstance(dictionary, pa.ChunkedArray):
            dictionary = dictionary.combine_chunks()
    else:
        items = values.tolist() if hasattr(values, "tolist") else list(values)
        dictionary = pa.array(items, type=pa.large_string(), from_pandas=True)
    index = pa.array(np.asarray(codes, dtype=np.int64), mask=np.asarray(codes) < 0)
    return pd.array(dictionary.take(index), dtype="str")


def per_value(values: pd.Series | np.ndarray, func: Callable[[Any], Any]) -> np.ndarray:
    """``func`` of every value (an object array), computed once per distinct value: a
    capture has hundreds of thousands of flows but far fewer distinct addresses and names.
    Missing values are passed to ``func`` as they come, once per kind (None, NaN, pd.NA
    and NaT may give different answers)."""
    if isinstance(values, pd.Series) and values.dtype != object:
        # one kind of missing value (the dtype's): the column's codes, no object array
        codes, uniques = codes_of(values)
        mapped = np.empty(len(uniques) + 1, dtype=object)
        mapped[:-1] = [func(u) for u in np.asarray(uniques, dtype=object).tolist()]
        absent = np.flatnonzero(codes < 0)
        if len(absent):
            at = int(absent[0])
            mapped[-1] = func(values.iloc[at : at + 1].to_numpy(dtype=object)[0])
        return mapped[codes]
    arr = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
    out = np.empty(len(arr), dtype=object)
    if not len(arr):
        return out
    codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)  # the last one: missing, set below
    mapped[:-1] = [func(u) for u in uniques]
    out[:] = mapped[codes]
    missing = codes < 0
    if missing.any():
        na = arr[missing]
        kinds, first = np.unique(_TYPE_OF(na).astype(str), return_index=True)
        if len(kinds) == 1:
            out[missing] = func(na[first[0]])
        else:
            kind_codes = np.searchsorted(kinds, _TYPE_OF(na).astype(str))
            answers = np.empty(len(kinds), dtype=object)
            answers[:] = [func(na[i]) for i in first.tolist()]
            out[missing] = answers[kind_codes]
    return out


_TYPE_OF = np.frompyfunc(lambda v: type(v).__qualname__, 1, 1)


def _loopbacks(values: Any) -> np.ndarray:
    """:func:`~auditor.netutil.is_loopback` of each distinct value (text), asked only of those
    it may answer yes for (found by Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # an IPv6 loopback or IPv4-mapped address has its first groups zero: written from "0"
    # or ":" (any other first digit is a non-zero group)
    text = pa.array(pd.Series(values, dtype="str", copy=False).array)
    v6 = pc.and_(
        pc.match_substring(text, ":"),
        pc.or_(pc.starts_with(text, "0"), pc.starts_with(text, ":")),
    )
    maybe = pc.or_(pc.or_(pc.starts_with(text, "127."), v6), pc.starts_with(text, "["))
    which = np.flatnonzero(np.asarray(pc.fill_null(maybe, False)))
    out = np.zeros(len(values), dtype=bool)
    if len(which):
        out[which] = [
            isinstance(v, str) and is_loopback(v) for v in pd.Series(values).iloc[which].tolist()
        ]
    return out


def _address_codes(column: pd.Series) -> tuple[np.ndarray, Any]:
    """A text column (addresses, names) as codes and the text of each code: ``str`` of the
    value, as ``astype(str)`` shows it (a column of text is kept as it is)."""
    codes, values = codes_of(column)
    if _is_arrow_text(values):
        return codes, values
    return codes, np.asarray([str(v) for v in np.asarray(values, dtype=object).tolist()], object)


def path_codes(fl: pd.DataFrame, proxies: set[tuple[str, int]], had_proxy: bool) -> np.ndarray:
    """The path of each flow as an index into :data:`PATHS`; each distinct address is
    tested once, and the flows are compared on integer codes."""
    scodes, stext = _address_codes(fl[capture_flows.SERVER_IP])
    ccodes, ctext = _address_codes(fl[capture_flows.CLIENT_IP])
    sport = fl[capture_flows.SERVER_PORT].astype(int).to_numpy()
    to_proxy = np.zeros(len(fl), dtype=bool)
    for host, port in proxies:
        hit = np.flatnonzero(np.asarray(stext == host, dtype=bool))
        if len(hit):
            to_proxy |= np.isin(scodes, hit) & (sport == port)
    # code -1 (no address) reads the last entry: never loopback
    s_loop = np.append(_loopbacks(stext), False)[scodes]
    c_loop = np.append(_loopbacks(ctext), False)[ccodes]
    out = np.full(len(fl), _PATH_CODE[PATH_BYPASS if had_proxy else PATH_DIRECT], dtype=np.int8)
    out[s_loop & c_loop] = _PATH_CODE[PATH_LOCAL]
    out[to_proxy] = _PATH_CODE[PATH_PROXY]
    return out


PATHS = (PATH_PROXY, PATH_LOCAL, PATH_BYPASS, PATH_DIRECT)
_PATH_CODE = {p: i for i, p in enumerate(PATHS)}


def read_packet_flows(
    path: Path, manifest: dict[str, Any], *, read: dict[str, tuple[str, Any]] | None = None
) -> PacketData:
    """Read every packet capture of the session at ``path``. A capture that cannot be read
    becomes a warning naming it; the others are still read.

    Each capture's part is kept in the packet flow cache (:mod:`auditor.analysis.packetcache`)
    and taken from it when the capture, the code and the session's proxy are the same.
    ``read``: captures already read, ``{rel: (sha256, CaptureResult)}`` (``auditor import``
    gives its own reads, so that the first analysis finds them in the cache)."""
    from auditor.analysis import packetcache

    proxies = proxy_addresses(manifest)
    had_proxy = bool(proxies)
    frames: list[pd.DataFrame] = []
    data = PacketData(flows=empty_frame())
    for rel in session_captures(path, manifest):
        given = (read or {}).get(rel)
        part: CapturePart | None = None
        if packetcache.enabled():
            try:
                digest = given[0] if given else packetcache.capture_sha256(path / rel)
            except OSError:
                digest = None
            if digest is not None:
                entry = packetcache.entry_path(digest, (rel, sorted(proxies), had_proxy))
                hit = packetcache.load(entry)
                part = CapturePart.from_cache(*hit) if hit is not None else None
                if part is None:
                    part = _read_part(path, rel, proxies, had_proxy, given[1] if given else None)
                    if part.acct.error is None:
                        packetcache.store(entry, part.frame, part.facts())
        if part is None:
            part = _read_part(path, rel, proxies, had_proxy, given[1] if given else None)
        data.files.append(part.acct)
        data.warnings += part.warnings
        data.addr_names = _with_names(data.addr_names, part.names)
        data.lookups += part.lookups
        for owner, target in part.cnames.items():
            data.cnames.setdefault(owner, target)
        if part.frame is not None:
            frames.append(part.frame)
    if frames:
        data.flows = pd.concat(frames, ignore_index=True)
    return data


@dataclass
class CapturePart:
    """What one capture gives the session's :class:`PacketData` (a packet flow cache entry)."""

    acct: CaptureFile
    warnings: list[str] = field(default_factory=list)
    names: dict[str, Any] = field(default_factory=dict)  # name -> addresses DNS gave
    lookups: list[dict[str, Any]] = field(default_factory=list)
    cnames: dict[str, str] = field(default_factory=dict)
    frame: pd.DataFrame | None = None  # its bypass and direct flows, in the analyser's rows

    def facts(self) -> dict[str, Any]:
        """Everything but the frame, as JSON (a cache entry's facts)."""
        return {
            "acct": self.acct.to_dict(),
            "warnings": self.warnings,
            "names": {k: list(v) for k, v in self.names.items()},
            "lookups": self.lookups,
            "cnames": self.cnames,
        }

    @classmethod
    def from_cache(cls, frame: pd.DataFrame | None, facts: dict[str, Any]) -> CapturePart | None:
        """The part a cache entry holds (None when the entry is not one)."""
        try:
            return cls(
                CaptureFile.from_dict(facts["acct"]), list(facts["warnings"]),
                {str(k): tuple(v) for k, v in facts["names"].items()},
                list(facts["lookups"]), dict(facts["cnames"]), frame,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _read_part(
    path: Path, rel: str, proxies: set[tuple[str, int]], had_proxy: bool, res: Any = None
) -> CapturePart:
    """One capture read (or ``res``, its ``CaptureResult`` read already) into its part."""
    from auditor.packets import PcapError, read_capture

    part = CapturePart(CaptureFile(rel))
    acct = part.acct
    if res is None:
        try:
            res = read_capture(path / rel, keep_packets=False)
        except (PcapError, OSError, ValueError) as exc:
            acct.error = str(exc)
            part.warnings.append(f"{rel}: not read: {exc}")
            return part
    acct.packets = int(res.counts.get("packets", 0))
    acct.flows = len(res.flows)
    acct.dns_rows = len(res.dns)
    acct.warnings = {str(k): int(v) for k, v in res.warnings.items()}
    if res.warnings:
        total = sum(res.warnings.values())
        part.warnings.append(
            f"{rel}: {total} packet warning(s): "
            + ", ".join(f"{k} {v}" for k, v in sorted(res.warnings.items()))
        )
    part.names = dict(res.names)
    part.lookups = _lookups(rel, res)
    part.cnames = cname_map(_cname_pairs(res))
    fl = res.flows
    if fl.empty:
        return part
    paths = path_codes(fl, proxies, had_proxy)
    for p, n in enumerate(np.bincount(paths, minlength=len(PATHS)).tolist()):
        if n:
            acct.paths[PATHS[p]] = acct.paths.get(PATHS[p], 0) + n
    keep = (paths == _PATH_CODE[PATH_BYPASS]) | (paths == _PATH_CODE[PATH_DIRECT])
    sel = fl if keep.all() else fl[keep]  # no copy of a table kept whole
    if not sel.empty:
        part.frame = _rows(rel, sel, res.dns, had_proxy, part.cnames)
    return part


def _with_names(known: dict[str, str], names: dict[str, Any]) -> dict[str, str]:
    """``known`` with the addresses DNS gave each name (``{name: [address, ...]}``) that it
    does not hold yet; an address given several names keeps the first. Each name is
    normalised once, and the addresses are added by dict operations, not one by one."""
    items = list(names.items())[::-1]  # the first name seen written last: it is kept
    addrs = itertools.chain(*(a for _, a in items))
    norm = itertools.chain(*(itertools.repeat(n.lower().rstrip("."), len(a)) for n, a in items))
    found: dict[str, str] = dict(zip(addrs, norm, strict=True))
    if not known:
        return found
    return {**found, **known}


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in PACKET_ROW_COLUMNS})


PACKET_ROW_COLUMNS: tuple[str, ...] = (
    *columns.FLOW_COLUMNS,
    columns.TRANSPORT,
    columns.SEEN_BY,
    columns.BYPASS,
    columns.PACKETS_UP,
    columns.PACKETS_DOWN,
    columns.CAPTURE_FILE,
    columns.TCP_STATE,
    columns.NAME,
    columns.NAME_EVIDENCE,
    columns.PCAP_UID,
    columns.PCAP_APP,
    columns.DNS_QUERIES,
    *columns.CERT_COLUMNS,
    columns.CERT_SOURCE,
    columns.CNAMES,
)


def _rows(
    rel: str,
    fl: pd.DataFrame,
    dns: pd.DataFrame,
    had_proxy: bool,
    cnames: dict[str, str],
) -> pd.DataFrame:
    """Packet flows in the analyser's columns. Text columns are gathered by Arrow from
    each column's distinct values (:func:`text_array`), never made string by string."""
    n = len(fl)
    fids = fl[capture_flows.FLOW_ID].to_numpy(dtype=np.int64)
    sni = _coalesce(fl[capture_flows.SNI], fl[capture_flows.QUIC_SNI])
    alpn = _coalesce(fl[capture_flows.ALPN], fl[capture_flows.QUIC_ALPN])
    proto_codes, protos = _address_codes(fl[capture_flows.PROTO])
    is_tcp = _code_is(proto_codes, protos, "tcp")
    quic = fl[capture_flows.QUIC_SNI].notna().to_numpy(dtype=bool) & _code_is(
        proto_codes, protos, "udp"
    )
    transport = np.where(quic, len(protos), proto_codes)
    scheme = np.where(sni.notna().to_numpy(dtype=bool), 2, -1)
    scheme[(scheme < 0) & fl[capture_flows.HTTP_HOST].notna().to_numpy(dtype=bool)] = 1
    state = _tcp_state_codes(
        is_tcp,
        *(
            fl[c].to_numpy(dtype=bool)
            for c in (
                capture_flows.SYN_SEEN,
                capture_flows.SYNACK_SEEN,
                capture_flows.FIN_SEEN,
                capture_flows.RST_SEEN,
            )
        ),
    )
    app_codes, apps = codes_of(fl[capture_flows.APP])
    name = fl[capture_flows.NAME].astype(str).str.lower()
    one = np.zeros(n, dtype=np.intp)
    table: dict[str, Any] = {
        columns.FLOW_ID: _flow_id_text(rel, fids),
        columns.RECORD_TYPE: text_array(one, [RECORD_TYPE]),
        columns.SOURCE: text_array(one, [SOURCE]),
        columns.START: fl[capture_flows.FIRST_SEEN].array,
        columns.END: fl[capture_flows.LAST_SEEN].array,
        columns.CLIENT_IP: text_array(*_address_codes(fl[capture_flows.CLIENT_IP])),
        columns.CLIENT_PORT: fl[capture_flows.CLIENT_PORT].astype("Int64").to_numpy(),
        columns.SERVER_IP: text_array(*_address_codes(fl[capture_flows.SERVER_IP])),
        columns.SERVER_PORT: fl[capture_flows.SERVER_PORT].astype("Int64").to_numpy(),
        columns.SNI: _text(sni),
        columns.TLS_VERSION: None,
        columns.ALPN: _text(alpn),
        columns.METHOD: None,
        columns.SCHEME: _inferred_text(scheme, [None, "http", "https"]),
        columns.HOST: _text(fl[capture_flows.HTTP_HOST]),
        columns.PORT: fl[capture_flows.SERVER_PORT].astype("Int64").to_numpy(),
        columns.PATH: None,
        columns.URL: None,
        columns.STATUS: pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)),
        columns.BYTES_UP: fl[capture_flows.IP_BYTES_UP].astype("int64").to_numpy(),
        columns.BYTES_DOWN: fl[capture_flows.IP_BYTES_DOWN].astype("int64").to_numpy(),
        columns.ERROR: None,
        columns.TRANSPORT: text_array(transport, [*protos.tolist(), "quic"]),
        columns.SEEN_BY: text_array(one, [SOURCE]),
        columns.BYPASS: had_proxy,
        columns.PACKETS_UP: fl[capture_flows.PACKETS_UP].astype("int64").to_numpy(),
        columns.PACKETS_DOWN: fl[capture_flows.PACKETS_DOWN].astype("int64").to_numpy(),
        columns.CAPTURE_FILE: text_array(one, [rel]),
        columns.TCP_STATE: text_array(state, TCP_STATES),
        columns.NAME: name.array,
        columns.NAME_EVIDENCE: text_array(*_address_codes(fl[capture_flows.NAME_EVIDENCE])),
        columns.PCAP_UID: fl[capture_flows.UID].astype("int64").to_numpy(),
        columns.PCAP_APP: text_array(
            np.where(app_codes < 0, len(apps), app_codes),
            [a if isinstance(a, str) else "" for a in apps.tolist()] + [""],
        ),
        columns.DNS_QUERIES: text_array(*_queries(dns, fids)),
        **{c: _objects(fl[c]) for c in columns.CERT_COLUMNS},
        columns.CERT_SOURCE: _cert_source(fl[columns.CERT_SHA256]),
        columns.CNAMES: cname_chains(name, cnames),
    }
    for col in columns.FLOW_COLUMNS:
        table.setdefault(col, None)
    # copy=False: each column stays its own block (consolidating 40 columns of 400,000 rows
    # copies them all into fresh memory)
    out = pd.DataFrame(table, copy=False)
    return out[list(PACKET_ROW_COLUMNS)]


def _coalesce(first: pd.Series, then: pd.Series) -> pd.Series:
    """``first`` where it has a value, else ``then`` (by Arrow when both are Arrow text)."""
    if _is_arrow_text(first) and _is_arrow_text(then):
        import pyarrow as pa
        import pyarrow.compute as pc

        both = pc.coalesce(pa.array(first.array), pa.array(then.array))
        return pd.Series(pd.array(both, dtype="str"), index=first.index)
    return first.where(first.notna(), then)


def _code_is(codes: np.ndarray, values: np.ndarray, value: str) -> np.ndarray:
    return np.isin(codes, np.flatnonzero(values == value))


def _inferred_text(codes: np.ndarray, values: list[str | None]) -> Any:
    """``values[codes]`` as the table would infer it from an object array: Arrow strings when
    there is a string, else the objects (None)."""
    v = np.asarray(values, dtype=object)
    if (v[codes[codes >= 0]] != None).any():  # noqa: E711 - elementwise
        return text_array(codes, values)
    return np.full(len(codes), None, dtype=object)


def _text(column: pd.Series) -> Any:
    """A text column for the table: kept as its Arrow strings when it is a column of them
    with a value (the table would convert an object array back, string by string), else
    as the objects the table infers its type from."""
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow" and column.notna().any():
        return column.array
    return column.to_numpy()


def _objects(column: pd.Series) -> np.ndarray:
    """A text column with None (not NaN) where it has no value."""
    if column.isna().all():  # most flows carry no certificate: skip the conversion
        return np.full(len(column), None, dtype=object)
    return per_value(column, lambda v: v if isinstance(v, str) else None)


def _cert_source(sha256: pd.Series) -> np.ndarray:
    """``packets`` where the flow carries a certificate (from its handshake), else None."""
    out = np.full(len(sha256), None, dtype=object)
    out[_objects(sha256) != None] = SOURCE  # noqa: E711 - elementwise
    return out


def _flow_id_text(rel: str, numbers: np.ndarray) -> Any:
    """:func:`flow_ids` as the table's text column (made in Arrow: no Python string each)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.large_string())
    head, empty = (pa.scalar(x, type=pa.large_string()) for x in (rel + "#", ""))
    return pd.array(pc.binary_join_element_wise(head, text, empty), dtype="str")


def flow_ids(rel: str, numbers: np.ndarray) -> np.ndarray:
    """``<capture file>#<flow number>`` of each flow, as an object array."""
    return (rel + "#" + pd.Series(numbers, dtype=np.int64).astype(str)).to_numpy(dtype=object)


def _queries(dns: pd.DataFrame, fids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The names each flow asked a DNS server for (questions, not answers): distinct,
    lower-case without the final dot, sorted and ";"-joined; "" for a flow that asked none.
    Given as codes and the text of each code (:func:`text_array`)."""
    none = (np.zeros(len(fids), dtype=np.intp), [""])
    if dns.empty or not len(fids):
        return none
    asked = dns[~dns[capture_flows.RESPONSE].to_numpy(dtype=bool)]
    qcodes, quniq = codes_of(asked[capture_flows.QNAME])
    has = qcodes >= 0
    # each distinct name normalised once, ranked as Python sorts str (code points); the
    # distinct (flow, name) pairs then sorted by flow and name in one np.unique
    norm = [str(q).lower().rstrip(".") for q in quniq.tolist()]
    names = sorted(set(norm) - {""})
    if not names:
        return none
    rank_of = {q: i for i, q in enumerate(names)}
    qrank = np.asarray([rank_of.get(q, -1) for q in norm], dtype=np.int64)[qcodes[has]]
    fid_all = asked[capture_flows.DNS_FLOW_ID].to_numpy(dtype=np.int64)[has]
    keep = qrank >= 0
    width = len(names)
    fid, r = np.divmod(distinct_sorted(fid_all[keep] * width + qrank[keep]), width)
    qs = np.asarray(names, dtype=object)[r]
    starts = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    ends = np.r_[starts[1:], len(fid)]
    single = ends - starts == 1  # one name asked: read from the names; several: joined
    several = np.flatnonzero(~single)
    code = np.where(single, r[starts], len(names) + np.cumsum(~single) - 1)
    values = [*names, *(";".join(qs[starts[k] : ends[k]]) for k in several.tolist()), ""]
    # each flow's position among the flows that asked (the last code: asked none)
    at = np.searchsorted(fid[starts], fids)
    at_c = np.minimum(at, len(starts) - 1)
    found = (at < len(starts)) & (fid[starts][at_c] == fids)
    return np.where(found, code[at_c], len(values) - 1), values


def distinct_sorted(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of integers by sorting (numpy's hash-based unique is several times
    slower on a few hundred thousand values)."""
    x = np.sort(values)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


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


def cname_chains(names: pd.Series, cnames: dict[str, str]) -> Any:
    """:func:`cname_chain` of every name, followed once per distinct name, as a text column
    (:func:`text_array`)."""
    if not cnames:
        return text_array(np.zeros(len(names), dtype=np.intp), [""])
    codes, values = codes_of(names)
    missing = cname_chain(None, cnames)
    return text_array(
        np.where(codes < 0, len(values), codes),
        [cname_chain(v, cnames) for v in values.tolist()] + [missing],
    )


def _cname_pairs(res: Any) -> list[tuple[str, str]]:
    """(owner, target) of each CNAME in the DNS answers of a capture (a ``CaptureResult``),
    in packet order: read from its compact DNS tables, only the CNAME records made text."""
    from auditor.packets.dns import TYPE_CNAME

    t = res.dns_tables
    a = t.answers
    if not len(a):
        return []
    a = a[(a["rtype"] == TYPE_CNAME) & (a["value"] >= 0)]
    a = a[t.rows["response"][a["row"]].astype(bool)]
    texts = t.texts
    return [
        (o, v)
        for o, v in zip(texts[a["name"]].tolist(), texts[a["value"]].tolist(), strict=True)
        if v
    ]


TCP_STATES = ("", "reset", "closed", "established", "syn-only", "mid-stream")
"""A packet flow's ``tcp_state``: "" for a flow that is not TCP, "mid-stream" when the capture
began after the handshake."""


def _tcp_state_codes(
    tcp: np.ndarray, syn: np.ndarray, synack: np.ndarray, fin: np.ndarray, rst: np.ndarray
) -> np.ndarray:
    """Each flow's index in :data:`TCP_STATES`: the first of these that holds."""
    return np.select([~tcp, rst, fin, syn & synack, syn], [0, 1, 2, 3, 4], 5)


LOOKUPS_KEPT = 5000  # DNS answers kept per capture (findings.json lists the first 5,000)


def _lookups(rel: str, res: Any, limit: int = LOOKUPS_KEPT) -> list[dict[str, Any]]:
    """One entry per DNS answer seen (responses only, the first ``limit`` of the capture;
    ``dns_rows`` counts them all): what was asked, of whom, and what came back, with the
    capture and flow it came from (``res``: its ``CaptureResult``)."""
    dns = res.dns
    if dns.empty:
        return []
    rows = np.flatnonzero(dns[capture_flows.RESPONSE].to_numpy(dtype=bool))[:limit]
    resp = dns.iloc[rows]
    if resp.empty:
        return []
    ts = resp[capture_flows.DNS_TS].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_numpy(dtype=object)
    qname = per_value(resp[capture_flows.QNAME], lambda q: str(q or "").lower().rstrip("."))
    qtype = per_value(resp[capture_flows.QTYPE], lambda v: str(v or ""))
    rcode = per_value(resp[capture_flows.RCODE], lambda v: str(v or ""))
    sport = resp[capture_flows.DNS_SERVER_PORT].to_numpy(dtype=np.int64)
    server = [
        f"{ip}:{int(port)}"
        for ip, port in zip(
            resp[capture_flows.DNS_SERVER_IP].to_numpy(dtype=object), sport, strict=True
        )
    ]
    protocol = per_value(resp[capture_flows.DNS_PROTOCOL], str)
    transport = per_value(resp[capture_flows.TRANSPORT], str)
    fids = flow_ids(rel, resp[capture_flows.DNS_FLOW_ID].to_numpy(dtype=np.int64))
    answers = _answer_lists(res, rows)
    return [
        {
            "ts": ts[i],
            "qname": qname[i],
            "qtype": qtype[i],
            "rcode": rcode[i],
            "server": server[i],
            "protocol": protocol[i],
            "transport": transport[i],
            "answers": answers.get(int(rows[i]), [])[:32],
            "flow_id": fids[i],
        }
        for i in range(len(resp))
    ]


def _answer_lists(res: Any, rows: np.ndarray) -> dict[int, list[str]]:
    """The answers of each of the DNS rows ``rows`` (sorted positions), as texts: read from
    the capture's compact DNS tables, only those rows' records made text."""
    from auditor.packets.dns import dns_type_name

    t = res.dns_tables
    a = t.answers
    if not len(a) or not len(rows):
        return {}
    lo, hi = np.searchsorted(a["row"], [rows[0], rows[-1] + 1])
    sub = a[lo:hi]
    sub = sub[np.isin(sub["row"], rows)]
    texts = t.texts.tolist()
    out: dict[int, list[str]] = {}
    for r, rtype, v, h in zip(
        sub["row"].tolist(),
        sub["rtype"].tolist(),
        sub["value"].tolist(),
        sub["hints"].tolist(),
        strict=True,
    ):
        value = texts[v] if v >= 0 else None
        hints = texts[h] if h >= 0 else None
        out.setdefault(r, []).append(_answer((None, dns_type_name(rtype), 0, value, hints)))
    return out


def _answer(a: tuple[Any, ...]) -> str:
    """An answer record (name, type, ttl, value, hints) as the lookups list shows it."""
    _name, rtype, _ttl, value, hints = a
    shown = value if isinstance(value, str) else "(not decoded)"
    return f"{rtype} {shown}" + (f" hints {hints}" if isinstance(hints, str) else "")

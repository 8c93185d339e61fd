"""Which app made each flow, from the OS's own log: Android 16 intrusion logs joined to the
session's proxy and packet flows by time and address.

An intrusion log (:mod:`auditor.imports.intrusion`) holds, for every outgoing connection, the
package, the remote address and port and the time (``os_connect``), and for every DNS lookup
the package, the name and the addresses it got (``os_dns``). A flow of the table is given the
app of the OS's events that fit it:

1. **connect** (``os-connect``): a connection to the flow's server address and port that the
   phone opened at most ``Window.before`` seconds before the flow's connection started and at
   most ``Window.after`` after (clock skew). A flow's connection starts at the earliest start
   of the rows that share its client and server address and port (the requests a proxy saw on
   one kept-alive connection). For the proxy's rows the phone connected to the proxy, not to
   the server: a connection to the proxy's address (as the phone reaches it) in the same window
   fits too.
2. **dns** (``os-dns``), only when no connection fits: a lookup, at most ``Window.dns_before``
   seconds before the connection started, that answered the flow's server address or asked for
   the flow's name.

When the events that fit name one package, the flow is that package's. When they name two or
more, the flow is ``ambiguous`` and every one of them is listed: the join never picks one (two
apps reaching one CDN address within a second are both named). Event times are the phone's
clock; ``Window.clock_offset`` (phone minus host, seconds) corrects a known skew.

Connections of the OS log that no flow fits are the traffic no proxy or capture saw; they
become rows of their own (``seen_by`` ``os-log``), named by the lookup of the same app that
answered their address when there is exactly one such name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from auditor import columns as C
from auditor.imports.intrusion import OsNetworkEvent

log = logging.getLogger(__name__)

#: Columns the join adds to the flow table (candidates for auditor.columns).
OS_APPS = "os_apps"  # the packages the OS log names for the flow, ";"-joined
OS_APP_EVIDENCE = "os_app_evidence"  # os-connect | os-dns | ambiguous | none
OS_EVENTS = "os_events"  # the events that fit, as "<file>:<line>", ";"-joined (first 5)

CONNECT = "os-connect"
DNS = "os-dns"
AMBIGUOUS = "ambiguous"
NONE = "none"
SEEN_BY_OS = "os-log"  # seen_by of the rows only the OS log saw
RECORD_TYPE = "os_connect"
SOURCE = "intrusion-log"
MAX_LISTED_EVENTS = 5


@dataclass(frozen=True, slots=True)
class Window:
    """How far apart in time an OS event and a flow may be and still fit.

    ``before``: a connection is opened before its first packet or request (a proxy's request
    starts after the TLS handshake); ``after``: clock skew the other way, the phone's clock
    against the host's; ``dns_before``: how long an answer may be cached before the connection
    it served (Android's resolver keeps answers for their TTL, often minutes);
    ``clock_offset``: the phone's clock minus the host's, in seconds, when known."""

    before: float = 5.0
    after: float = 2.0
    dns_before: float = 300.0
    clock_offset: float = 0.0


@dataclass
class AppJoin:
    """The join's result: per flow row, the packages, the evidence and the events that fit;
    the OS's connections no flow fits; and counts."""

    apps: np.ndarray
    evidence: np.ndarray
    events: np.ndarray
    os_only: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


def os_events(records: Iterable[Any]) -> list[OsNetworkEvent]:
    """The OS-log events among a session's records (``os_dns``, ``os_connect``)."""
    out = []
    for rec in records:
        ev = OsNetworkEvent.from_record(rec)
        if ev is not None:
            out.append(ev)
    return out


class _Index:
    """Events grouped by a key (an address and port, an address, a name), each group sorted by
    time, with the package of each event as a code, so that a time window is two binary
    searches and "one package or more" one comparison."""

    def __init__(self, keys: list[Any], times: list[float], pkgs: list[str], refs: list[int]):
        self.groups: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.packages: list[str] = sorted(set(pkgs))
        code = {p: i for i, p in enumerate(self.packages)}
        by_key: dict[Any, list[int]] = {}
        for i, k in enumerate(keys):
            by_key.setdefault(k, []).append(i)
        for k, idx in by_key.items():
            t = np.asarray([times[i] for i in idx], dtype="float64")
            order = np.argsort(t, kind="stable")
            c = np.asarray([code[pkgs[idx[j]]] for j in order], dtype=np.int64)
            # changes[i]: how many times the package changes up to i (the window's packages are
            # one when the count is the same at both ends)
            changes = np.concatenate([[0], np.cumsum(c[1:] != c[:-1])])
            r = np.asarray([refs[idx[j]] for j in order], dtype=np.int64)
            self.groups[k] = (t[order], c, changes, r)

    def window(self, key: Any, lo_t: np.ndarray, hi_t: np.ndarray) -> tuple[Any, ...] | None:
        g = self.groups.get(key)
        if g is None:
            return None
        t, c, changes, r = g
        lo = np.searchsorted(t, lo_t, side="left")
        hi = np.searchsorted(t, hi_t, side="right")
        return lo, hi, c, changes, r


def join(
    flows: pd.DataFrame,
    events: Sequence[OsNetworkEvent],
    *,
    proxy: tuple[str, int] | None = None,
    window: Window = Window(),
) -> AppJoin:
    """Fit the OS log's ``events`` to the rows of ``flows`` (a flow table: ``start``,
    ``server_ip``, ``server_port``, ``client_ip``, ``client_port``, ``seen_by``, ``name``).
    ``proxy``: the proxy's address and port as the phone reached it, for the proxy's rows."""
    n = len(flows)
    apps = np.full(n, "", dtype=object)
    how = np.full(n, NONE, dtype=object)
    refs_out = np.full(n, "", dtype=object)
    connects = [e for e in events if e.kind == "connect"]
    lookups = [e for e in events if e.kind == "dns"]
    refs = [f"{e.line}" for e in events]
    ref_of = {id(e): i for i, e in enumerate(events)}
    shift = window.clock_offset
    stats = {
        "os_connect_events": len(connects),
        "os_dns_events": len(lookups),
    }
    conn_idx = _Index(
        [(e.ip, e.port) for e in connects],
        [e.ts - shift for e in connects],
        [e.package for e in connects],
        [ref_of[id(e)] for e in connects],
    )
    start = _starts(flows)
    ok = ~np.isnan(start)
    used = np.zeros(len(events), dtype=bool)

    def fit(rows: np.ndarray, key: Any, index: _Index, before: float, label: str) -> None:
        if not rows.size:
            return
        found = index.window(key, start[rows] - before, start[rows] + window.after)
        if found is None:
            return
        lo, hi, codes, changes, r = found
        hit = hi > lo
        for row, a, b in zip(rows[hit].tolist(), lo[hit].tolist(), hi[hit].tolist(), strict=True):
            used[r[a:b]] = True
            if changes[b - 1] == changes[a]:
                apps[row] = index.packages[codes[a]]
                how[row] = label
            else:
                apps[row] = ";".join(sorted({index.packages[x] for x in codes[a:b].tolist()}))
                how[row] = AMBIGUOUS
            refs_out[row] = ";".join(refs[x] for x in r[a:b][:MAX_LISTED_EVENTS].tolist())

    ips = flows[C.SERVER_IP].to_numpy(dtype=object) if n else np.empty(0, dtype=object)
    ports = _ints(flows, C.SERVER_PORT)
    if n:
        keys = pd.Series(list(zip(ips.tolist(), ports.tolist(), strict=True)), dtype=object)
        for key, pos in keys.groupby(keys, sort=False).indices.items():
            sel = np.asarray(pos, dtype=np.intp)
            fit(sel[ok[sel]], key, conn_idx, window.before, CONNECT)
        if proxy is not None and C.SEEN_BY in flows:
            seen = flows[C.SEEN_BY].to_numpy(dtype=object)
            rows = np.flatnonzero(ok & (how == NONE) & (seen == "proxy"))
            fit(rows, proxy, conn_idx, window.before, CONNECT)

    # DNS: the lookups that answered the server's address, or asked for the flow's name
    dns_keys, dns_t, dns_p, dns_r = [], [], [], []
    for e in lookups:
        name = ("name", (e.hostname or "").lower().rstrip("."))
        for key in dict.fromkeys([*(("ip", a) for a in e.addresses), name]):
            dns_keys.append(key)
            dns_t.append(e.ts - shift)
            dns_p.append(e.package)
            dns_r.append(ref_of[id(e)])
    dns_idx = _Index(dns_keys, dns_t, dns_p, dns_r)
    if n and lookups:
        rest = ok & (how == NONE)
        _fit_dns(rest, ips, _names(flows), start, dns_idx, window, apps, how, refs_out, refs)

    stats |= {
        "rows_by_os_connect": int((how == CONNECT).sum()),
        "rows_by_os_dns": int((how == DNS).sum()),
        "rows_ambiguous": int((how == AMBIGUOUS).sum()),
        "rows_without_os_evidence": int((how == NONE).sum()),
    }
    os_only = _os_only(connects, [ref_of[id(e)] for e in connects], used, lookups, window, proxy)
    stats["os_only_connections"] = len(os_only)
    stats["os_only_loopback_skipped"] = sum(
        1 for e in connects if not used[ref_of[id(e)]] and _loopback(e.ip or "")
    )
    return AppJoin(apps, how, refs_out, os_only, stats)


def _fit_dns(
    rest: np.ndarray,
    ips: np.ndarray,
    names: np.ndarray,
    start: np.ndarray,
    index: _Index,
    window: Window,
    apps: np.ndarray,
    how: np.ndarray,
    refs_out: np.ndarray,
    refs: list[str],
) -> None:
    """Rows with no connection that fits: the packages of the lookups, in the window before
    the row, that answered its address or asked for its name (both sets together)."""
    rows = np.flatnonzero(rest)
    if not rows.size:
        return
    found: dict[int, tuple[set[str], list[int]]] = {}
    for kind, values in (("ip", ips), ("name", names)):
        keys = pd.Series([(kind, v) for v in values[rows].tolist()], dtype=object)
        for key, pos in keys.groupby(keys, sort=False).indices.items():
            sub = rows[pos]
            hit = index.window(key, start[sub] - window.dns_before, start[sub] + window.after)
            if hit is None:
                continue
            lo, hi, codes, _, r = hit
            for row, a, b in zip(sub.tolist(), lo.tolist(), hi.tolist(), strict=True):
                if b > a:
                    pk, rf = found.setdefault(row, (set(), []))
                    pk.update(index.packages[x] for x in codes[a:b].tolist())
                    rf.extend(r[a:b].tolist())
    for row, (pk, rf) in found.items():
        apps[row] = ";".join(sorted(pk))
        how[row] = DNS if len(pk) == 1 else AMBIGUOUS
        uniq = sorted(set(rf))
        refs_out[row] = ";".join(refs[x] for x in uniq[:MAX_LISTED_EVENTS])


def _os_only(
    connects: list[OsNetworkEvent],
    refs: list[int],
    used: np.ndarray,
    lookups: list[OsNetworkEvent],
    window: Window,
    proxy: tuple[str, int] | None,
) -> pd.DataFrame:
    """The OS's connections no flow fits, as flow rows (loopback ones and the phone's own
    connections to the proxy are left out: they are no destination)."""
    answers: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for e in lookups:
        for a in e.addresses:
            answers.setdefault((e.package, a), []).append((e.ts, e.hostname or ""))
    rows: list[dict[str, Any]] = []
    for e, ref in zip(connects, refs, strict=True):
        ip = e.ip or ""
        if used[ref] or _loopback(ip) or (proxy is not None and (ip, e.port) == proxy):
            continue
        ts = e.ts - window.clock_offset
        named = {
            h
            for t, h in answers.get((e.package, ip), [])
            if e.ts - window.dns_before <= t <= e.ts + window.after
        }
        name, evidence = (named.pop(), "os-dns") if len(named) == 1 else (ip, "ip")
        rows.append(
            {
                C.FLOW_ID: f"os-{e.line}",
                C.RECORD_TYPE: RECORD_TYPE,
                C.SOURCE: SOURCE,
                C.START: pd.Timestamp(ts, unit="s", tz="UTC"),
                C.END: pd.Timestamp(ts, unit="s", tz="UTC"),
                C.SERVER_IP: ip,
                C.SERVER_PORT: e.port,
                C.NAME: name,
                C.NAME_EVIDENCE: evidence,
                C.APPS: e.package,
                C.APP_EVIDENCE: CONNECT,
                C.SEEN_BY: SEEN_BY_OS,
                C.BYPASS: False,
                OS_APPS: e.package,
                OS_APP_EVIDENCE: CONNECT,
                OS_EVENTS: str(e.line),
            }
        )
    return pd.DataFrame(rows)


def apply(flows: pd.DataFrame, joined: AppJoin, *, add_os_only: bool = True) -> pd.DataFrame:
    """The flow table with the join's columns (``os_apps``, ``os_app_evidence``,
    ``os_events``); where the table had no owner for a row (``app_evidence`` none), ``apps``
    and ``app_evidence`` take the OS log's. Rows that had an owner keep it; whether the OS log
    agrees is counted in ``joined.stats`` (``os_agrees``, ``os_disagrees``). With
    ``add_os_only``, the OS's connections no flow fits are added as rows."""
    df = flows.copy(deep=False)
    df[OS_APPS] = joined.apps
    df[OS_APP_EVIDENCE] = joined.evidence
    df[OS_EVENTS] = joined.events
    if len(df):
        prior = (
            df[C.APP_EVIDENCE].astype(object).fillna(NONE).to_numpy(dtype=object)
            if C.APP_EVIDENCE in df
            else np.full(len(df), NONE, dtype=object)
        )
        had = df[C.APPS].astype(object).fillna("").to_numpy(dtype=object) if C.APPS in df else None
        known = joined.evidence != NONE
        take = known & (prior == NONE)
        apps = had.copy() if had is not None else np.full(len(df), "", dtype=object)
        apps[take] = joined.apps[take]
        ev = prior.copy()
        ev[take] = joined.evidence[take]
        df[C.APPS] = apps
        df[C.APP_EVIDENCE] = ev
        both = known & (prior != NONE) & (joined.evidence != AMBIGUOUS)
        if had is not None and both.any():
            same = np.asarray(
                [
                    set(str(a).split(";")) == set(str(b).split(";"))
                    for a, b in zip(had[both].tolist(), joined.apps[both].tolist(), strict=True)
                ],
                dtype=bool,
            )
            joined.stats["os_agrees"] = int(same.sum())
            joined.stats["os_disagrees"] = int((~same).sum())
    if add_os_only and len(joined.os_only):
        df = pd.concat([df, joined.os_only], ignore_index=True) if len(df) else joined.os_only
        if C.BYPASS in df:
            df[C.BYPASS] = df[C.BYPASS].fillna(False).astype(bool)
    return df


def attribute_session(
    flows: pd.DataFrame,
    records: Iterable[Any],
    proxy: tuple[str, int] | None = None,
    window: Window = Window(),
) -> tuple[pd.DataFrame, list[str], dict[str, int]]:
    """For the analysis: a session's flow table with the OS log's apps (see :func:`apply`), the
    warnings, and the join's counts. A session without OS-log records is left as it is."""
    events = os_events(records)
    if not events:
        return flows, [], {}
    joined = join(flows, events, proxy=proxy, window=window)
    out = apply(flows, joined)
    warnings = []
    s = joined.stats
    if s.get("rows_ambiguous"):
        warnings.append(
            f"the OS log names more than one app for {s['rows_ambiguous']} flows "
            "(shown as ambiguous, with every app named)"
        )
    if s.get("os_disagrees"):
        warnings.append(
            f"the OS log names another app than the capture's own evidence for "
            f"{s['os_disagrees']} flows (the capture's is kept)"
        )
    return out, warnings, s


def _starts(flows: pd.DataFrame) -> np.ndarray:
    """Each row's connection start, in epoch seconds (NaN when unknown): the earliest start of
    the rows that share its client and server address and port."""
    n = len(flows)
    if not n or C.START not in flows:
        return np.full(n, np.nan)
    st = pd.to_datetime(flows[C.START], utc=True, errors="coerce")
    secs = (st - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype="float64")
    if C.CLIENT_PORT not in flows or C.CLIENT_IP not in flows:
        return secs
    cport = _ints(flows, C.CLIENT_PORT)
    has = cport >= 0
    if not has.any():
        return secs
    key = pd.DataFrame(
        {
            "c": flows[C.CLIENT_IP].astype(object).to_numpy(dtype=object),
            "p": cport,
            "s": flows[C.SERVER_IP].astype(object).to_numpy(dtype=object),
            "q": _ints(flows, C.SERVER_PORT),
            "t": secs,
        }
    )
    first = key.groupby(["c", "p", "s", "q"], dropna=False, sort=False)["t"].transform("min")
    out = np.where(has, first.to_numpy(dtype="float64"), secs)
    return np.asarray(out, dtype="float64")


def _ints(flows: pd.DataFrame, col: str) -> np.ndarray:
    if col not in flows:
        return np.full(len(flows), -1, dtype=np.int64)
    v = pd.to_numeric(flows[col], errors="coerce").fillna(-1)
    return v.to_numpy(dtype="float64").astype(np.int64)


def _names(flows: pd.DataFrame) -> np.ndarray:
    """The name each row goes by (the table's ``name``, else the HTTP host, else the SNI),
    lower case, without a final dot."""
    n = len(flows)
    out = np.full(n, "", dtype=object)
    for col in (C.NAME, C.HOST, C.SNI):
        if col not in flows:
            continue
        v = flows[col].to_numpy(dtype=object)
        empty = out == ""
        good = np.asarray([isinstance(x, str) and bool(x) for x in v], dtype=bool) & empty
        out[good] = [x.lower().rstrip(".") for x in v[good].tolist()]
    return out


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"

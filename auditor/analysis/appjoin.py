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
   fits too, taken together with those to the server.
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

from auditor import columns
from auditor.imports.intrusion import OsNetworkEvent
from auditor.netutil import is_loopback

log = logging.getLogger(__name__)

#: Columns the join adds to the flow table (candidates for auditor.columns).
OS_APPS = "os_apps"  # the packages the OS log names for the flow, ";"-joined
OS_APP_EVIDENCE = "os_app_evidence"  # os-connect | os-dns | ambiguous | none
OS_EVENT = "os_event"  # the latest OS event that fits: its record's id (or its line)
OS_EVENT_COUNT = "os_event_count"  # how many OS events fit

CONNECT = "os-connect"
DNS = "os-dns"
AMBIGUOUS = "ambiguous"
NONE = "none"
SEEN_BY_OS = "os-log"  # seen_by of the rows only the OS log saw
RECORD_TYPE = "os_connect"
SOURCE = "intrusion-log"


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
    events: np.ndarray  # the latest event that fits (OsNetworkEvent.key)
    counts: np.ndarray  # how many events fit
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
    """Events sorted by key (an address and port, an address, a name) and then time, in one
    int64 array of ``key rank * width + milliseconds``: a row's time window in its key's
    events is two binary searches, for all rows at once. ``changes[i]`` counts the package
    changes up to event i, so the events of a window name one package when it is the same at
    both ends."""

    def __init__(self, keys: np.ndarray, ms: np.ndarray, pkgs: np.ndarray, refs: np.ndarray):
        kc, uniq = pd.factorize(keys, sort=False)
        # an object index: an Arrow-backed one converts itself at every lookup
        self.keys = pd.Index(np.asarray(uniq, dtype=object), dtype=object)
        order = np.lexsort((ms, kc))
        self.kc, self.t = kc[order].astype(np.int64), ms[order].astype(np.int64)
        pc, pk = pd.factorize(pkgs[order], sort=True)
        self.pkg = pc.astype(np.int64)
        self.packages = np.asarray(pk, dtype=object)
        self.ref = refs[order]
        self.changes = np.concatenate([[0], np.cumsum(self.pkg[1:] != self.pkg[:-1])])
        self.base = int(self.t.min()) if len(self.t) else 0
        self.width = (int(self.t.max()) - self.base + 1) if len(self.t) else 1
        # keys * width must stay inside int64: a log of centuries and millions of keys would
        # not, and is read at a coarser grain (never seen; kept so that it cannot overflow)
        self.grain = 1
        while max(len(self.keys), 1) * (self.width // self.grain + 1) > 2**62:
            self.grain *= 10
        self.span = self.width // self.grain + 1
        self.sorted = self.kc * self.span + (self.t - self.base) // self.grain

    def window(
        self, row_keys: np.ndarray, lo_ms: np.ndarray, hi_ms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the events [lo, hi) of its key from ``lo_ms`` to ``hi_ms``."""
        n = len(row_keys)
        lo = np.zeros(n, dtype=np.int64)
        hi = np.zeros(n, dtype=np.int64)
        if not n or not len(self.t):
            return lo, hi
        rc = self.keys.get_indexer(pd.Index(row_keys, dtype=object)).astype(np.int64)
        last = self.base + self.width - 1
        live = (rc >= 0) & (hi_ms >= self.base) & (lo_ms <= last)
        if not live.any():
            return lo, hi
        a = np.clip(np.floor(lo_ms[live]), self.base, last).astype(np.int64) - self.base
        b = np.clip(np.ceil(hi_ms[live]), self.base, last).astype(np.int64) - self.base
        lo[live] = np.searchsorted(self.sorted, rc[live] * self.span + a // self.grain, "left")
        hi[live] = np.searchsorted(self.sorted, rc[live] * self.span + b // self.grain, "right")
        return lo, hi

    def one_package(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Whether each non-empty window's events name a single package."""
        hit = hi > lo
        out = np.zeros(len(lo), dtype=bool)
        out[hit] = self.changes[hi[hit] - 1] == self.changes[lo[hit]]
        return out

    def packages_in(self, lo: int, hi: int) -> list[str]:
        return sorted({str(self.packages[c]) for c in self.pkg[lo:hi].tolist()})


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
    last = np.full(n, "", dtype=object)
    count = np.zeros(n, dtype=np.int64)
    connects = [e for e in events if e.kind == "connect"]
    lookups = [e for e in events if e.kind == "dns"]
    shift_ms = window.clock_offset * 1000.0
    stats = {"os_connect_events": len(connects), "os_dns_events": len(lookups)}

    conn = _Index(
        np.asarray([f"{e.ip}|{e.port}" for e in connects], dtype=object),
        np.asarray([round(e.ts * 1000 - shift_ms) for e in connects], dtype=np.int64),
        np.asarray([e.package for e in connects], dtype=object),
        np.arange(len(connects), dtype=np.int64),
    )
    start = _starts(flows) * 1000.0
    ok = ~np.isnan(start)
    used: list[tuple[np.ndarray, np.ndarray]] = []  # the events each fit covered
    lines = np.asarray([e.key for e in connects], dtype=object)

    def fit(rows: np.ndarray, *keys: np.ndarray) -> None:
        """Fit ``rows`` to the connections of any of their ``keys`` (one array per kind of
        key): one package among all of them, or ambiguous."""
        if not rows.size:
            return
        t = start[rows]
        found = [conn.window(k, t - window.before * 1000, t + window.after * 1000) for k in keys]
        hits = [hi > lo for lo, hi in found]
        hit = np.logical_or.reduce(hits)
        if not hit.any():
            return
        one = hit.copy()
        pkg = np.full(len(rows), -1, dtype=np.int64)
        latest = np.full(len(rows), -1, dtype=np.int64)
        for (lo, hi), h in zip(found, hits, strict=True):
            used.append((lo[h], hi[h]))
            mine = np.where(h, conn.pkg[np.minimum(lo, max(len(conn.pkg) - 1, 0))], -1)
            one &= ~h | conn.one_package(lo, hi)
            one &= (pkg < 0) | ~h | (mine == pkg)
            pkg = np.where(pkg < 0, mine, pkg)
            latest = np.where(h, np.maximum(latest, conn.ref[np.maximum(hi - 1, 0)]), latest)
            count[rows[h]] += (hi - lo)[h]
        apps[rows[one]] = conn.packages[pkg[one]]
        how[rows[one]] = CONNECT
        for i in np.flatnonzero(hit & ~one).tolist():
            names = {p for lo, hi in found for p in conn.packages_in(int(lo[i]), int(hi[i]))}
            apps[rows[i]] = ";".join(sorted(names))
            how[rows[i]] = AMBIGUOUS
        last[rows[hit]] = lines[latest[hit]]

    ips = _text(flows, columns.SERVER_IP)
    if n:
        keys = _joined(ips, _ints(flows, columns.SERVER_PORT))
        via_proxy = np.zeros(n, dtype=bool)
        if proxy is not None and columns.SEEN_BY in flows:
            via_proxy = flows[columns.SEEN_BY].to_numpy(dtype=object) == "proxy"
        fit(np.flatnonzero(ok & ~via_proxy), keys[ok & ~via_proxy])
        # the proxy's rows: the phone connected to the proxy (or, with a transparent proxy,
        # to the server itself); an app that reached the server directly at that moment
        # makes the row ambiguous, never another app's
        rows = np.flatnonzero(ok & via_proxy)
        to_proxy = np.full(len(rows), f"{proxy[0]}|{proxy[1]}" if proxy else "", dtype=object)
        fit(rows, keys[rows], to_proxy)
    fitted = _covered(len(connects), used)

    if n and lookups:
        _fit_dns(np.flatnonzero(ok & (how == NONE)), ips, _names(flows), start, lookups,
                 window, apps, how, last, count)  # fmt: skip
        if columns.DNS_QUERIES in flows:
            _fit_queries(np.flatnonzero(ok & (how == NONE)), _text(flows, columns.DNS_QUERIES),
                         start, lookups, window, apps, how, last, count)  # fmt: skip

    stats |= {
        "rows_by_os_connect": int((how == CONNECT).sum()),
        "rows_by_os_dns": int((how == DNS).sum()),
        "rows_ambiguous": int((how == AMBIGUOUS).sum()),
        "rows_without_os_evidence": int((how == NONE).sum()),
    }
    os_only = _os_only(connects, fitted, lookups, window, proxy)
    stats["os_only_connections"] = len(os_only)
    stats["os_only_loopback_skipped"] = sum(
        1
        for e, f in zip(connects, fitted.tolist(), strict=True)
        if not f and is_loopback(e.ip or "")
    )
    return AppJoin(apps, how, last, count, os_only, stats)


def _covered(n: int, ranges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Which of ``n`` events fall in any of the [lo, hi) ranges (a difference array)."""
    d = np.zeros(n + 1, dtype=np.int64)
    for lo, hi in ranges:
        np.add.at(d, lo, 1)
        np.add.at(d, hi, -1)
    return np.cumsum(d[:n]) > 0


def _fit_dns(
    rows: np.ndarray,
    ips: np.ndarray,
    names: np.ndarray,
    start: np.ndarray,
    lookups: list[OsNetworkEvent],
    window: Window,
    apps: np.ndarray,
    how: np.ndarray,
    last: np.ndarray,
    count: np.ndarray,
) -> None:
    """Rows with no connection that fits: the packages of the lookups, in the window before
    the row, that answered its address or asked for its name (both together)."""
    if not rows.size:
        return
    keys, ms, pkgs, refs = [], [], [], []
    shift_ms = window.clock_offset * 1000.0
    for i, e in enumerate(lookups):
        host = (e.hostname or "").lower().rstrip(".")
        t = round(e.ts * 1000 - shift_ms)
        addrs = ["a|" + a for a in e.addresses]
        named = ["n|" + host] if host else []
        # "b|" keys: the lookups that fit a row both ways, to count each lookup once
        both = [f"b|{host}|{a}" for a in e.addresses] if host else []
        for key in dict.fromkeys([*addrs, *named, *both]):
            keys.append(key)
            ms.append(t)
            pkgs.append(e.package)
            refs.append(i)
    index = _Index(
        np.asarray(keys, dtype=object),
        np.asarray(ms, dtype=np.int64),
        np.asarray(pkgs, dtype=object),
        np.asarray(refs, dtype=np.int64),
    )
    lines = np.asarray([e.key for e in lookups], dtype=object)
    t = start[rows]
    lo_t, hi_t = t - window.dns_before * 1000, t + window.after * 1000
    by_ip = index.window(_prefixed(ips[rows], "a|"), lo_t, hi_t)
    by_name = index.window(_prefixed(names[rows], "n|"), lo_t, hi_t)
    by_both = index.window(_prefixed(_joined(names[rows], ips[rows]), "b|"), lo_t, hi_t)
    # a row with a name (not its address as its name) fits only lookups of that name: a lookup
    # of another name that answered the same address (a shared CDN address) is not its app's
    named_row = (names[rows] != "") & (names[rows] != ips[rows])
    by_ip = (by_ip[0], np.where(named_row, by_ip[0], by_ip[1]))  # no address fit for those
    hit_a, hit_n = by_ip[1] > by_ip[0], by_name[1] > by_name[0]
    hit = hit_a | hit_n
    if not hit.any():
        return
    one_a, one_n = index.one_package(*by_ip), index.one_package(*by_name)
    pkg_a = np.where(hit_a, index.pkg[np.minimum(by_ip[0], len(index.pkg) - 1)], -1)
    pkg_n = np.where(hit_n, index.pkg[np.minimum(by_name[0], len(index.pkg) - 1)], -1)
    one = hit & (one_a | ~hit_a) & (one_n | ~hit_n) & (~(hit_a & hit_n) | (pkg_a == pkg_n))
    r = rows[one]
    apps[r] = index.packages[np.where(hit_a[one], pkg_a[one], pkg_n[one])]
    how[r] = DNS
    both = hit & ~one
    for row, a0, a1, n0, n1 in zip(rows[both].tolist(), by_ip[0][both].tolist(),
                                   by_ip[1][both].tolist(), by_name[0][both].tolist(),
                                   by_name[1][both].tolist(), strict=True):  # fmt: skip
        apps[row] = ";".join(sorted({*index.packages_in(a0, a1), *index.packages_in(n0, n1)}))
        how[row] = AMBIGUOUS
    # the latest lookup that fits, and how many fit (one that fits both ways counted once)
    end_a = np.where(hit_a, index.t[np.maximum(by_ip[1] - 1, 0)], np.iinfo(np.int64).min)
    end_n = np.where(hit_n, index.t[np.maximum(by_name[1] - 1, 0)], np.iinfo(np.int64).min)
    pick = np.where(end_a >= end_n, np.maximum(by_ip[1] - 1, 0), np.maximum(by_name[1] - 1, 0))
    last[rows[hit]] = lines[index.ref[pick[hit]]]
    fits = np.where(
        named_row,
        by_name[1] - by_name[0],
        by_ip[1] - by_ip[0] + by_name[1] - by_name[0] - (by_both[1] - by_both[0]),
    )
    count[rows[hit]] = fits[hit]


def _fit_queries(
    rows: np.ndarray,
    queries: np.ndarray,
    start: np.ndarray,
    lookups: list[OsNetworkEvent],
    window: Window,
    apps: np.ndarray,
    how: np.ndarray,
    last: np.ndarray,
    count: np.ndarray,
) -> None:
    """A capture's DNS flows (to the resolver, ``dns_queries`` the names they asked): the
    packages of the lookups of those names, timed as connections are (the OS logs a lookup
    when the app asks, which is when the query leaves)."""
    has = rows[queries[rows] != ""]
    if not has.size:
        return
    shift_ms = window.clock_offset * 1000.0
    index = _Index(
        np.asarray(["n|" + (e.hostname or "").lower().rstrip(".") for e in lookups], dtype=object),
        np.asarray([round(e.ts * 1000 - shift_ms) for e in lookups], dtype=np.int64),
        np.asarray([e.package for e in lookups], dtype=object),
        np.arange(len(lookups), dtype=np.int64),
    )
    lines = np.asarray([e.key for e in lookups], dtype=object)
    # one entry per (row, name asked)
    pairs = []
    for r, text in zip(has.tolist(), queries[has].tolist(), strict=True):
        for q in dict.fromkeys(n.lower().rstrip(".") for n in text.split(";") if n):
            pairs.append((r, q))
    if not pairs:
        return
    prow = np.asarray([r for r, _ in pairs], dtype=np.int64)
    keys = np.asarray(["n|" + q for _, q in pairs], dtype=object)
    t = start[prow]
    lo, hi = index.window(keys, t - window.before * 1000, t + window.after * 1000)
    found: dict[int, tuple[set[str], int, int]] = {}
    for r, a, b in zip(prow.tolist(), lo.tolist(), hi.tolist(), strict=True):
        if b > a:
            pk, n, latest = found.get(r, (set(), 0, -1))
            pk.update(index.packages_in(a, b))
            latest = max(latest, int(index.ref[b - 1]))  # the last in the file
            found[r] = (pk, n + b - a, latest)
    for r, (pk, n, latest) in found.items():
        apps[r] = ";".join(sorted(pk))
        how[r] = DNS if len(pk) == 1 else AMBIGUOUS
        last[r] = lines[latest]
        count[r] = n


def _os_only(
    connects: list[OsNetworkEvent],
    fitted: np.ndarray,
    lookups: list[OsNetworkEvent],
    window: Window,
    proxy: tuple[str, int] | None,
) -> pd.DataFrame:
    """The OS's connections no flow fits, as flow rows (loopback ones and the phone's own
    connections to the proxy are left out: they are no destination)."""
    keep = [
        e
        for e, f in zip(connects, fitted.tolist(), strict=True)
        if not f and not is_loopback(e.ip or "") and (proxy is None or (e.ip, e.port) != proxy)
    ]
    if not keep:
        return pd.DataFrame()
    wanted = {(e.package, e.ip) for e in keep}
    answers: dict[tuple[str, str | None], list[tuple[float, str]]] = {}
    for d in lookups:
        for a in d.addresses:
            if (d.package, a) in wanted:
                answers.setdefault((d.package, a), []).append((d.ts, d.hostname or ""))
    names, evidence = [], []
    for e in keep:
        named = {
            h
            for t, h in answers.get((e.package, e.ip), [])
            if e.ts - window.dns_before <= t <= e.ts + window.after
        }
        if len(named) == 1:  # one name: the app's own lookup; two or more: no guess
            names.append(named.pop())
            evidence.append("os-dns")
        else:
            names.append(e.ip or "")
            evidence.append("ip")
    ts = pd.to_datetime(
        np.asarray([e.ts - window.clock_offset for e in keep], dtype="float64"), unit="s", utc=True
    )
    pkgs = [e.package for e in keep]
    return pd.DataFrame(
        {
            columns.FLOW_ID: [f"os-{e.ref}" if e.ref else f"os-{e.line}" for e in keep],
            columns.RECORD_TYPE: RECORD_TYPE,
            columns.SOURCE: SOURCE,
            columns.TRANSPORT: "tcp",  # a ConnectEvent is a TCP connect (its Javadoc)
            columns.START: ts,
            columns.END: ts,
            columns.SERVER_IP: [e.ip or "" for e in keep],
            columns.SERVER_PORT: [e.port for e in keep],
            columns.NAME: names,
            columns.NAME_EVIDENCE: evidence,
            columns.APPS: pkgs,
            columns.APP_EVIDENCE: CONNECT,
            columns.SEEN_BY: SEEN_BY_OS,
            columns.BYPASS: False,
            OS_APPS: pkgs,
            OS_APP_EVIDENCE: CONNECT,
            OS_EVENT: [e.key for e in keep],
            OS_EVENT_COUNT: 1,
        }
    )


def apply(flows: pd.DataFrame, joined: AppJoin, *, add_os_only: bool = True) -> pd.DataFrame:
    """The flow table with the join's columns (``os_apps``, ``os_app_evidence``, ``os_event``,
    ``os_event_count``); where the table had no owner for a row (``app_evidence`` none),
    ``apps`` and ``app_evidence`` take the OS log's. Rows that had an owner keep it; whether
    the OS log agrees is counted in ``joined.stats`` (``os_agrees``, ``os_disagrees``). With
    ``add_os_only``, the OS's connections no flow fits are added as rows."""
    df = flows.copy(deep=False)
    df[OS_APPS] = joined.apps
    df[OS_APP_EVIDENCE] = joined.evidence
    df[OS_EVENT] = joined.events
    df[OS_EVENT_COUNT] = joined.counts
    if len(df):
        prior = (
            df[columns.APP_EVIDENCE].astype(object).fillna(NONE).to_numpy(dtype=object)
            if columns.APP_EVIDENCE in df
            else np.full(len(df), NONE, dtype=object)
        )
        had = (
            df[columns.APPS].astype(object).fillna("").to_numpy(dtype=object)
            if columns.APPS in df
            else None
        )
        known = joined.evidence != NONE
        take = known & (prior == NONE)
        apps = had.copy() if had is not None else np.full(len(df), "", dtype=object)
        apps[take] = joined.apps[take]
        ev = prior.copy()
        ev[take] = joined.evidence[take]
        df[columns.APPS] = apps
        df[columns.APP_EVIDENCE] = ev
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
        # every column of the table on both sides (an empty table's too): the analysis reads
        # them all; what the OS log does not say (bytes, TLS) is left missing
        cols = list(dict.fromkeys([*df.columns, *joined.os_only.columns]))
        parts = [df.reindex(columns=cols), joined.os_only.reindex(columns=cols)]
        df = pd.concat([p for p in parts if len(p)], ignore_index=True).reindex(columns=cols)
        if columns.BYPASS in df:
            df[columns.BYPASS] = df[columns.BYPASS].astype(object).fillna(False).astype(bool)
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
    if not n or columns.START not in flows:
        return np.full(n, np.nan)
    st = pd.to_datetime(flows[columns.START], utc=True, errors="coerce")
    secs = (st - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype="float64")
    if columns.CLIENT_PORT not in flows or columns.CLIENT_IP not in flows:
        return secs
    cport = _ints(flows, columns.CLIENT_PORT)
    has = cport >= 0
    if not has.any():
        return secs
    key = pd.DataFrame(
        {
            "c": flows[columns.CLIENT_IP].astype(object).to_numpy(dtype=object),
            "p": cport,
            "s": flows[columns.SERVER_IP].astype(object).to_numpy(dtype=object),
            "q": _ints(flows, columns.SERVER_PORT),
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
    lower case, without a final dot; each distinct value worked on once."""
    out = np.full(len(flows), "", dtype=object)
    for col in (columns.NAME, columns.HOST, columns.SNI):
        if col not in flows:
            continue
        codes, uniq = pd.factorize(flows[col].to_numpy(dtype=object))
        tidy = np.asarray(
            [v.lower().rstrip(".") if isinstance(v, str) else "" for v in uniq] + [""],
            dtype=object,
        )
        values = tidy[codes]  # code -1 (missing) takes the last: ""
        empty = out == ""
        out[empty] = values[empty]
    return out


def _text(flows: pd.DataFrame, col: str) -> np.ndarray:
    if col not in flows:
        return np.full(len(flows), "", dtype=object)
    codes, uniq = pd.factorize(flows[col].to_numpy(dtype=object))
    tidy = np.asarray([v if isinstance(v, str) else "" for v in uniq] + [""], dtype=object)
    return tidy[codes]


def _joined(ips: np.ndarray, ports: np.ndarray) -> np.ndarray:
    """``<ip>|<port>`` per row, built once per distinct pair."""
    frame = pd.DataFrame({"i": ips, "p": ports})
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(frame))
    texts = np.asarray([f"{i}|{p}" for i, p in uniq.tolist()], dtype=object)
    return texts[codes]


def _prefixed(values: np.ndarray, prefix: str) -> np.ndarray:
    """``prefix + value`` per row; an empty value stays empty (no key matches it)."""
    codes, uniq = pd.factorize(values)
    texts = np.asarray([prefix + str(v) if v else "" for v in uniq] + [""], dtype=object)
    return texts[codes]

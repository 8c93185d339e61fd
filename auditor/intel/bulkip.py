"""IP facts for many addresses at once: the same answers as :meth:`IpDatabase.lookup`, in
numpy.

A capture of a million packets can reach 200,000 distinct servers; one lookup through
``ipaddress`` and geoip2fast costs about 40 us, 8 s for them all. Here canonical IPv4
addresses (``a.b.c.d``, no leading zeros) are parsed together, placed in the special
ranges by integer comparison, and found in geoip2fast's sorted network tables with
``numpy.searchsorted`` (its two-level index, flattened: each chunk starts with its index
entry, which :func:`_tables` checks). Every other value (IPv6, odd spellings, garbage), and
every lookup when a user ``.mmdb`` is in use, goes through :meth:`IpDatabase.lookup`, so the
answers are the same by construction; ``tests/analysis/test_scale_equivalence.py`` compares
the two.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.intel.ipdb import SPECIAL_RANGES, IpDatabase, _Geoip2fast
from auditor.intel.model import IpFacts

_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_IGNORED_ASN = ("<unknown>", "IANA.ORG")


@dataclass(frozen=True)
class _Tables:
    first: np.ndarray  # uint64: first address of each country network (IPv4 part)
    netlen: np.ndarray
    country_id: np.ndarray
    asn_first: np.ndarray
    asn_last: np.ndarray  # uint64, last address the ASN entry covers (capped)
    asn_id: np.ndarray
    country: np.ndarray  # object: the country a country id gives (None: private, not a code)
    asn_org: np.ndarray  # object: the AS organisation an ASN id gives (None: ignored names)
    not_found_country: str | None  # what an address outside every network gets
    database: str


_lock = threading.Lock()
_cached: dict[int, _Tables | None] = {}


def _tables() -> _Tables | None:
    """geoip2fast's tables as numpy arrays, built once per loaded database; None when its
    layout is not the one this module reads (then every lookup takes the slow path)."""
    geo = _Geoip2fast.get()
    key = id(geo)
    if key in _cached:
        return _cached[key]
    with _lock:
        if key not in _cached:
            try:
                _cached[key] = _build(geo)
            except Exception:  # noqa: BLE001 - any other layout: the per-address path
                _cached[key] = None
    return _cached[key]


def _build(geo: Any) -> _Tables | None:
    import geoip2fast.geoip2fast as g

    if not (geo.country and geo.asn and geo.ipv6):
        return None
    max_v4 = g.MAX_IPv4
    heads_ok = all(g.mainIndex[r] == c[0] for r, c in enumerate(g.mainListFirstIP)) and all(
        g.mainIndexASN[r] == c[0] for r, c in enumerate(g.mainListFirstIPASN)
    )
    if not heads_ok or any(n.count(":") != 1 for n in g.mainListNamesCountry):
        return None
    first = np.fromiter(itertools.chain.from_iterable(g.mainListFirstIP), dtype=object)
    n4 = int(np.count_nonzero(first <= max_v4))
    asn_first = np.fromiter(itertools.chain.from_iterable(g.mainListFirstIPASN), dtype=object)
    a4 = int(np.count_nonzero(asn_first <= max_v4))
    asn_first4 = asn_first[:a4].astype(np.uint64)
    asn_len = np.fromiter(itertools.chain.from_iterable(g.mainListNetlengthASN), dtype=np.int64)
    asn_len = asn_len[:a4]
    # geoip2fast with IPv6 data measures an ASN entry with the IPv6 sizes, for every
    # address: 2**(128 - length) addresses, past 2**64 for any length up to 64
    if any(g.numIPsv6[n] != 2 ** (128 - n) for n in range(129)):
        return None
    wide = asn_len <= 64
    shift = np.where(wide, 0, 128 - asn_len).astype(np.uint64)
    asn_last = np.where(
        wide,
        np.uint64(2**64 - 1),
        asn_first4 + np.left_shift(np.uint64(1), shift) - np.uint64(1),
    )

    def flat(lists: list[list[int]], count: int) -> np.ndarray:
        return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64)[:count]

    return _Tables(
        first=first[:n4].astype(np.uint64),
        netlen=flat(g.mainListNetlength, n4),
        country_id=flat(g.mainListIDCountryCodes, n4),
        asn_first=asn_first4,
        asn_last=asn_last.astype(np.uint64),
        asn_id=flat(g.mainListIDASN, a4),
        country=np.asarray(
            [_country(i, n.split(":")[0], geo) for i, n in enumerate(g.mainListNamesCountry)]
            + [None],
            dtype=object,
        ),
        asn_org=np.asarray(
            [n if n and n not in _IGNORED_ASN else None for n in g.mainListNamesASN] + [None],
            dtype=object,
        ),
        not_found_country=_code(str(geo.error_code_network_not_found)),
        database=_Geoip2fast.info().name,
    )


def _code(code: str) -> str | None:
    """How :meth:`IpDatabase.lookup` reads geoip2fast's country code."""
    return code.upper() if len(code) == 2 and code.isalpha() else None


def _country(index: int, code: str, geo: Any) -> str | None:
    private = index < 16  # geoip2fast's first 16 ids are its special networks
    return None if private else _code(code)


def _special_v4() -> list[tuple[int, int, str]]:
    out = []
    for net, reason in SPECIAL_RANGES:
        if isinstance(net, ipaddress.IPv4Network):
            out.append((int(net.network_address), int(net.broadcast_address), reason))
    return out


_SPECIAL_V4 = _special_v4()


Row = tuple[str, str | None, int | None, str | None, str | None, str | None, str | None]
"""The fields of :class:`IpFacts`, in order (a tuple: cheap to make by the hundred thousand)."""


def lookup_many(ipdb: IpDatabase, ips: list[str]) -> list[IpFacts]:
    """``[ipdb.lookup(ip) for ip in ips]``, with canonical IPv4 addresses found together."""
    return [IpFacts(*r) for r in lookup_rows(ipdb, ips)]


def lookup_rows(ipdb: IpDatabase, ips: list[str]) -> list[Row]:
    """The facts of each address as :data:`Row` tuples (see :func:`lookup_many`)."""
    tables = None if ipdb._mmdb or not ipdb._bundled else _tables()
    fast = [i for i, ip in enumerate(ips) if isinstance(ip, str) and _V4.fullmatch(ip)]
    out: list[Row | None] = [None] * len(ips)
    if tables is not None and fast:
        for i, row in zip(fast, _v4_rows(tables, [ips[i] for i in fast]), strict=True):
            out[i] = row
    for i, ip in enumerate(ips):
        if out[i] is None:
            f = ipdb.lookup(ip)
            out[i] = (f.ip, f.country, f.asn, f.asn_org, f.network, f.reason, f.database)
    return [r for r in out if r is not None]


def _v4_rows(t: _Tables, ips: list[str]) -> list[Row | None]:
    packed = b"".join(socket.inet_aton(ip) for ip in ips)
    x = np.frombuffer(packed, dtype=">u4").astype(np.uint64)
    reason = np.full(len(ips), None, dtype=object)
    for lo, hi, why in reversed(_SPECIAL_V4):  # the first range that holds it names it
        reason[(x >= lo) & (x <= hi)] = why
    # country network: the last entry starting at or before the address
    k = np.searchsorted(t.first, x, side="right") - 1
    kk = np.maximum(k, 0)
    size = np.left_shift(np.uint64(1), (32 - t.netlen[kk]).astype(np.uint64))
    found = (k >= 0) & (x <= t.first[kk] + size - np.uint64(1))
    a = np.searchsorted(t.asn_first, x, side="right") - 1
    aa = np.maximum(a, 0)
    asn_in = found & (a >= 0) & (x <= t.asn_last[aa])
    country = np.where(found, t.country[t.country_id[kk]], t.not_found_country)
    asn_org = np.where(asn_in, t.asn_org[t.asn_id[aa]], None)
    net = np.where(country != None, kk, -1)  # noqa: E711 - elementwise
    used = (country != None) | (asn_org != None)  # noqa: E711
    reason_l, k_l, a_l = reason.tolist(), k.tolist(), a.tolist()
    country_l: list[Any] = np.asarray(country).tolist()
    asn_l: list[Any] = np.asarray(asn_org).tolist()
    net_l: list[int] = np.asarray(net).tolist()
    used_l: list[bool] = np.asarray(used).tolist()
    db = t.database
    networks: dict[int, str] = {}
    out: list[Row | None] = []
    for i, ip in enumerate(ips):
        if reason_l[i] is not None:
            out.append((ip, None, None, None, None, reason_l[i], None))
        elif k_l[i] < 0 or a_l[i] < 0:
            out.append(None)  # before the first entry: the per-address path decides
        else:
            c = country_l[i]
            network = None
            if c is not None:
                n = net_l[i]
                network = networks.get(n)
                if network is None:
                    first = int(t.first[n])
                    network = f"{socket.inet_ntoa(struct.pack('>L', first))}/{int(t.netlen[n])}"
                    networks[n] = network
            out.append(
                (ip, c, None, asn_l[i], network, None if c else "not in the IP databases",
                 db if used_l[i] else None)
            )  # fmt: skip
    return out

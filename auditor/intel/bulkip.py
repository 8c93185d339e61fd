"""IP facts for many addresses at once: the same answers as :meth:`IpDatabase.lookup`, in
numpy.

A capture of a million packets can reach 200,000 distinct servers; one lookup through
``ipaddress`` and geoip2fast costs about 40 us, 8 s for them all. Here canonical IPv4
addresses (``a.b.c.d``, no leading zeros) are parsed together, placed in the special
ranges by integer comparison, and found in geoip2fast's sorted network tables with
``numpy.searchsorted`` (its two-level index, flattened: each chunk starts with its index
entry, which :func:`_tables` checks). Canonical IPv6 addresses outside ``::/64`` are found
the same way in the IPv6 part of the tables, each address as two uint64 halves. Every other
value (odd spellings, garbage) goes through :meth:`IpDatabase.lookup`, so the answers are
the same by construction; :meth:`IpDatabase.lookup_rows` is the entry point (a user
``.mmdb`` takes the per-address path), and ``tests/intel/test_bulkip.py`` and
``tests/analysis/test_scale_equivalence.py`` compare the two.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import itertools
import logging
import re
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from auditor.intel.ipdb import SPECIAL_RANGES, FactsColumns, FactsRow, _Geoip2fast

_V4 = re.compile(  # ASCII digits only, as in ipdb
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_IGNORED_ASN = ("<unknown>", "IANA.ORG")
log = logging.getLogger(__name__)


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
    # the IPv6 part of the same tables, each address as two uint64 halves (high, low)
    first6_hi: np.ndarray
    first6_lo: np.ndarray
    netlen6: np.ndarray
    country_id6: np.ndarray
    asn6_hi: np.ndarray
    asn6_lo: np.ndarray
    asn_len6: np.ndarray
    asn_id6: np.ndarray


_lock = threading.Lock()
_cached: dict[str, _Tables | None] = {}
TABLES_PREFIX = "geoip-tables-"
TABLES_FORMAT = 1  # bumped when the layout of the cached tables changes
_ARRAYS = tuple(f.name for f in fields(_Tables) if f.type == "np.ndarray")
_OBJECTS = ("country", "asn_org")  # object arrays, kept as JSON lists (text or null)


def _tables() -> _Tables | None:
    """geoip2fast's tables as numpy arrays, once per process; None when its layout is not
    the one this module reads (then every lookup takes the slow path).

    Loading geoip2fast's file and building the tables from its lists costs about 0.7 s of
    CPU and 170 MB, on every analysis: the tables are kept in the intel cache folder
    (:func:`auditor.cachedir.cache_dir`) as a ``.npz`` without pickled objects, under a
    name derived from the SHA-256 of the data file and of this module, and read back in a
    few tens of milliseconds (geoip2fast itself is then loaded only if an address takes the
    per-address path)."""
    path = _Geoip2fast.path()
    key = str(path)
    if key in _cached:
        return _cached[key]
    with _lock:
        if key not in _cached:
            _cached[key] = _load_or_build(path)
    return _cached[key]


def _load_or_build(data: Any) -> _Tables | None:
    try:
        stored = _tables_path(data)
    except OSError:  # the data file is missing: geoip2fast says so when it loads
        stored = None
    if stored is not None:
        found = _read_tables(stored)
        if found is not None:
            return found
    geo = _Geoip2fast.get()
    try:
        built = _build(geo)
    except Exception:  # noqa: BLE001 - any other layout: the per-address path
        return None
    if built is not None and stored is not None:
        _write_tables(stored, built)
    return built


def _tables_path(data: Any) -> Path:
    import hashlib

    from auditor.cachedir import cache_dir

    h = hashlib.sha256()
    h.update(f"format {TABLES_FORMAT}\0".encode())
    # geoip2fast's own code (its version among it), read and not run: importing it costs
    # more than reading the tables
    lib = _Geoip2fast.path().parent
    for module in ("__init__.py", "geoip2fast.py"):
        h.update((lib / module).read_bytes() + b"\0")
    h.update(f"numpy {np.__version__}\0".encode())
    h.update(Path(__file__).read_bytes())
    h.update(Path(data).read_bytes())
    return cache_dir() / f"{TABLES_PREFIX}{h.hexdigest()[:32]}.npz"


def _read_tables(path: Path) -> _Tables | None:
    """The cached tables, when the file is there, owner-only and whole; else None."""
    import json

    from auditor.cachedir import owner_only

    if not owner_only(path, "IP tables"):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in _ARRAYS if name not in _OBJECTS}
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        if not isinstance(meta["source_name"], str):
            raise ValueError("meta: not text")
        for name in _OBJECTS:
            values = meta[name]
            if not all(v is None or isinstance(v, str) for v in values):
                raise ValueError(f"{name}: not text")
            arrays[name] = np.asarray(values, dtype=object)
        found = _Tables(
            **arrays, not_found_country=meta["not_found_country"], database=meta["database"]
        )
        if not isinstance(found.database, str) or not (
            found.not_found_country is None or isinstance(found.not_found_country, str)
        ):
            raise ValueError("meta: not text")
        _Geoip2fast.remember_name(meta["source_name"])
        return found
    except Exception as exc:  # noqa: BLE001 - a damaged file raises anything: rebuilt
        log.warning("%s: unreadable IP tables (%s); rebuilding", path, type(exc).__name__)
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def _write_tables(path: Path, t: _Tables) -> None:
    import json

    from auditor.cachedir import write_cache_file

    meta = {name: getattr(t, name).tolist() for name in _OBJECTS}
    meta.update(
        not_found_country=t.not_found_country,
        database=t.database,
        source_name=_Geoip2fast.source_name(),
    )
    arrays = {name: getattr(t, name) for name in _ARRAYS if name not in _OBJECTS}
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    write_cache_file(
        path,
        lambda fh: np.savez(fh, meta=blob, **arrays),
        stale=f"{TABLES_PREFIX}*.npz",
        what="IP tables",
    )


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
    chain = itertools.chain.from_iterable
    # the lists are sorted, IPv4 first: numpy converts the IPv4 part in C, the IPv6 part (past
    # 64 bits) is split into halves
    first_all = list(chain(g.mainListFirstIP))
    n4 = bisect.bisect_right(first_all, max_v4)
    asn_all = list(chain(g.mainListFirstIPASN))
    a4 = bisect.bisect_right(asn_all, max_v4)
    asn_first4 = np.array(asn_all[:a4], dtype=np.uint64)
    asn_len_all = np.array(list(chain(g.mainListNetlengthASN)), dtype=np.int64)
    asn_len = asn_len_all[:a4]
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

    def ints(lists: list[list[int]]) -> np.ndarray:
        return np.fromiter(chain(lists), dtype=np.int64, count=sum(map(len, lists)))

    def halves(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
        big = np.array(values, dtype=object)  # Python ints past 64 bits: shifted by numpy's loop
        return (big >> 64).astype(np.uint64), (big & _LOW).astype(np.uint64)

    first6_hi, first6_lo = halves(first_all[n4:])
    asn6_hi, asn6_lo = halves(asn_all[a4:])
    netlen, country_id, asn_id = (
        ints(g.mainListNetlength), ints(g.mainListIDCountryCodes), ints(g.mainListIDASN)
    )  # fmt: skip

    return _Tables(
        first=np.array(first_all[:n4], dtype=np.uint64),
        netlen=netlen[:n4],
        country_id=country_id[:n4],
        asn_first=asn_first4,
        asn_last=asn_last.astype(np.uint64),
        asn_id=asn_id[:a4],
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
        first6_hi=first6_hi,
        first6_lo=first6_lo,
        netlen6=netlen[n4:],
        country_id6=country_id[n4:],
        asn6_hi=asn6_hi,
        asn6_lo=asn6_lo,
        asn_len6=asn_len_all[a4:],
        asn_id6=asn_id[a4:],
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
_LOW = 2**64 - 1
_ZERO8 = bytes(8)


def _special_v6() -> list[tuple[int, int, str]]:
    """The special IPv6 ranges on the high 64 bits of an address; the ranges longer than
    /64 (``::``, ``::1``) lie in ``::/64``, which :func:`_v6_rows` never answers."""
    out = []
    for net, reason in SPECIAL_RANGES:
        if isinstance(net, ipaddress.IPv6Network):
            lo, hi = int(net.network_address) >> 64, int(net.broadcast_address) >> 64
            if net.prefixlen > 64:
                assert lo == 0, net
            out.append((lo, hi, reason))
    return out


_SPECIAL_V6 = _special_v6()


def bundled_columns(
    ips: Sequence[str], one: Callable[[str], FactsRow], *, networks: bool = True
) -> FactsColumns:
    """The bundled database's facts of each address, as columns: canonical IPv4 and IPv6
    addresses found together, every other value through ``one`` (the per-address lookup).
    ``networks=False``: the ``network`` column is left None (not written out as text)."""
    n = len(ips)
    cols = FactsColumns(*(np.full(n, None, dtype=object) for _ in range(7)))
    done = np.zeros(n, dtype=bool)
    tables = _tables()
    if tables is not None:
        v4_mask, v6_mask = address_kinds(ips)
        v4 = np.flatnonzero(v4_mask)
        v6 = np.flatnonzero(v6_mask)
        for group, found in (
            (v4, _v4_rows(tables, [ips[i] for i in v4.tolist()], networks=networks)),
            (v6, _v6_rows(tables, [ips[i] for i in v6.tolist()], networks=networks)),
        ):
            if found is None:
                continue
            answered, values = found
            at = group[answered]
            for col, v in zip(cols, values, strict=True):
                col[at] = v[answered]
            done[at] = True
    for i in np.flatnonzero(~done).tolist():
        for column, value in zip(cols, one(ips[i]), strict=True):
            column[i] = value
    if not networks:
        cols.network[:] = None
    return cols


def address_kinds(ips: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Which values are canonical IPv4 text, and which hold a colon (IPv6 candidates), found
    by Arrow over the whole column (a value that is not text is neither)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array([ip if isinstance(ip, str) else None for ip in ips], type=pa.large_string())
    v4 = pc.match_substring_regex(text, f"^{_V4.pattern}$")
    v6 = pc.match_substring(text, ":")
    return (
        np.asarray(pc.fill_null(v4, False), dtype=bool),
        np.asarray(pc.fill_null(v6, False), dtype=bool),
    )


_Found = tuple[np.ndarray, tuple[np.ndarray, ...]] | None
"""What a table search gives: which addresses it answered, and the seven columns."""


def _v4_rows(t: _Tables, ips: list[str], *, networks: bool = True) -> _Found:
    if not ips:
        return None
    x = _v4_integers(ips)
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
    country = np.asarray(np.where(found, t.country[t.country_id[kk]], t.not_found_country))
    asn_org = np.asarray(np.where(asn_in, t.asn_org[t.asn_id[aa]], None))

    def network_texts(ns: np.ndarray) -> list[str]:
        """``a.b.c.d/len`` of table entries, written by Arrow."""
        import pyarrow as pa
        import pyarrow.compute as pc

        first = t.first[ns]
        parts = [
            pa.array((first >> np.uint64(s)) & np.uint64(255)).cast(pa.string())
            for s in (24, 16, 8, 0)
        ]
        text = pc.binary_join_element_wise(*parts, ".")
        length = pa.array(t.netlen[ns]).cast(pa.string())
        return list(pc.binary_join_element_wise(text, length, "/").to_pylist())

    return _assemble(
        t,
        ips,
        reason,
        (k >= 0) & (a >= 0),
        k,
        country,
        asn_org,
        network_texts if networks else None,
    )


def _v4_integers(ips: list[str]) -> np.ndarray:
    """Canonical IPv4 text as integers (uint64): each packed by ``inet_aton`` (in C, mapped
    over the list: a third of the time of Arrow's split and cast), read as big-endian
    32-bit integers. Only canonical text reaches here (:func:`address_kinds`), which
    ``inet_aton`` reads as its four bytes."""
    packed = b"".join(map(socket.inet_aton, ips))
    return np.frombuffer(packed, dtype=">u4").astype(np.uint64)


def _v6_rows(t: _Tables, ips: list[str], *, networks: bool = True) -> _Found:
    """Canonical IPv6 text (as ``str(IPv6Address)`` writes it) outside ``::/64``; None for
    every other value and for an address before the first IPv6 network of either table
    (geoip2fast would then read an IPv4 entry: the per-address path decides)."""
    keep: list[int] = []
    packed: list[bytes] = []
    for i, ip in enumerate(ips):
        try:
            b = socket.inet_pton(socket.AF_INET6, ip)
        except (OSError, ValueError):
            continue
        if b[:8] != _ZERO8 and socket.inet_ntop(socket.AF_INET6, b) == ip:
            keep.append(i)
            packed.append(b)
    if not keep:
        return None
    x = np.frombuffer(b"".join(packed), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    hi, lo = np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1])
    reason = np.full(len(keep), None, dtype=object)
    for first, last, why in reversed(_SPECIAL_V6):
        reason[(hi >= np.uint64(first)) & (hi <= np.uint64(last))] = why
    k = _last_at_or_before(t.first6_hi, t.first6_lo, hi, lo)
    found = _covers(t.first6_hi, t.first6_lo, t.netlen6, k, hi, lo)
    a = _last_at_or_before(t.asn6_hi, t.asn6_lo, hi, lo)
    asn_in = found & _covers(t.asn6_hi, t.asn6_lo, t.asn_len6, a, hi, lo)
    kk, aa = np.maximum(k, 0), np.maximum(a, 0)
    country = np.asarray(np.where(found, t.country[t.country_id6[kk]], t.not_found_country))
    asn_org = np.asarray(np.where(asn_in, t.asn_org[t.asn_id6[aa]], None))

    def network_texts(ns: np.ndarray) -> list[str]:
        out = []
        for n in ns.tolist():
            first = struct.pack(">QQ", int(t.first6_hi[n]), int(t.first6_lo[n]))
            out.append(f"{socket.inet_ntop(socket.AF_INET6, first)}/{int(t.netlen6[n])}")
        return out

    answered, values = _assemble(
        t, [ips[i] for i in keep], reason, (k >= 0) & (a >= 0), k, country, asn_org,
        network_texts if networks else None,
    )  # fmt: skip
    at = np.asarray(keep, dtype=np.int64)
    mask = np.zeros(len(ips), dtype=bool)
    mask[at] = answered
    full = []
    for v in values:
        col = np.full(len(ips), None, dtype=object)
        col[at] = v
        full.append(col)
    return mask, tuple(full)


def _last_at_or_before(
    t_hi: np.ndarray, t_lo: np.ndarray, hi: np.ndarray, lo: np.ndarray
) -> np.ndarray:
    """The index of the last table entry at or before each address (-1: none), the table and
    the addresses as sorted (high, low) halves."""
    r = np.searchsorted(t_hi, hi, side="right") - 1
    rr = np.maximum(r, 0)
    # entries sharing the address's high half (networks longer than /64) are ordered by
    # their low half: few, looked at one by one
    for j in np.flatnonzero((r >= 0) & (t_hi[rr] == hi) & (t_lo[rr] > lo)).tolist():
        left = int(np.searchsorted(t_hi, hi[j], side="left"))
        r[j] = left + int(np.searchsorted(t_lo[left : r[j] + 1], lo[j], side="right")) - 1
    return r


def _covers(
    t_hi: np.ndarray, t_lo: np.ndarray, length: np.ndarray, k: np.ndarray, hi: np.ndarray,
    lo: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Whether entry ``k`` (a network starting at or before the address, of prefix
    ``length``) holds the address: address - first < 2**(128 - length)."""
    kk = np.maximum(k, 0)
    n = length[kk]
    borrow = (lo < t_lo[kk]).astype(np.uint64)
    d_hi = hi - t_hi[kk] - borrow
    d_lo = lo - t_lo[kk]  # modulo 2**64: the low half of the difference
    wide = np.left_shift(np.uint64(1), np.clip(64 - n, 0, 63).astype(np.uint64))
    narrow = np.left_shift(np.uint64(1), np.clip(128 - n, 0, 63).astype(np.uint64))
    inside = np.where(n <= 64, (n == 0) | (d_hi < wide), (d_hi == 0) & (d_lo < narrow))
    return (k >= 0) & inside


def _assemble(
    t: _Tables,
    ips: list[str],
    reason: np.ndarray,
    ok: np.ndarray,
    k: np.ndarray,
    country: np.ndarray,
    asn_org: np.ndarray,
    networks_of: Callable[[np.ndarray], list[str]] | None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The seven columns from those a table search gave, and which addresses they answer
    (not where ``ok`` is false outside the special ranges: the per-address path decides);
    the networks as text by ``networks_of``, or None for each without it."""
    special = reason != None  # noqa: E711 - elementwise
    answered = special | np.asarray(ok, dtype=bool)
    located = ~special & (country != None)  # noqa: E711
    if networks_of is None:
        network = np.full(len(ips), None, dtype=object)
    else:
        net = np.where(located, k, -1)
        nets, net_codes = np.unique(net, return_inverse=True)
        names = np.full(len(nets), None, dtype=object)
        names[nets >= 0] = networks_of(nets[nets >= 0])
        network = names[net_codes.reshape(-1)]
    used = ~special & (located | (asn_org != None))  # noqa: E711
    none = np.full(len(ips), None, dtype=object)
    return answered, (
        np.asarray(ips, dtype=object),
        _choose(located, country, None),
        none,
        _choose(special, None, asn_org),
        network,
        _choose(special, reason, _choose(located, None, "not in the IP databases")),
        _choose(used, t.database, None),
    )


def _choose(cond: np.ndarray, yes: Any, no: Any) -> np.ndarray:
    """``np.where`` over object values (a column or one value each side)."""
    return np.where(cond, np.asarray(yes, dtype=object), np.asarray(no, dtype=object))

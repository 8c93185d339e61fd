"""IP facts offline: country and autonomous system of an address, with no network access.

The bundled source is geoip2fast's ``geoip2fast-asn-ipv6.dat.gz`` (MaxMind GeoLite2 country and
ASN data for IPv4 and IPv6, shipped inside the package), loaded once, lazily, from the
package's own folder. Its ASN part carries AS-organisation *names* only, no AS numbers; a
user-supplied MaxMind ``.mmdb`` (GeoLite2/GeoIP2 Country, City or ASN) takes precedence field
by field and gives numbers too. Private, loopback, documentation and benchmarking ranges never
reach a database: they get no country and a reason.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np

from auditor.intel.model import DatabaseInfo, IntelError, IpFacts

log = logging.getLogger(__name__)

GEOIP2FAST_FILE = "geoip2fast-asn-ipv6.dat.gz"
"""The geoip2fast data file with country and ASN for IPv4 and IPv6."""

GEOLITE_LICENCE = (
    "This product includes GeoLite2 data created by MaxMind, available from "
    "https://www.maxmind.com (GeoLite2 End User License Agreement); packaged by geoip2fast (MIT)"
)

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges that never locate a server, with the reason a report shows. Order matters only for
# the text: the first range that holds the address names it.
SPECIAL_RANGES: tuple[tuple[_Net, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "'this network' (RFC 791)"),
        ("10.0.0.0/8", "private range (RFC 1918)"),
        ("100.64.0.0/10", "shared address space, carrier-grade NAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback (RFC 1122)"),
        ("169.254.0.0/16", "link-local (RFC 3927)"),
        ("172.16.0.0/12", "private range (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
        ("192.0.2.0/24", "documentation range TEST-NET-1 (RFC 5737)"),
        ("192.168.0.0/16", "private range (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking range (RFC 2544)"),
        ("198.51.100.0/24", "documentation range TEST-NET-2 (RFC 5737)"),
        ("203.0.113.0/24", "documentation range TEST-NET-3 (RFC 5737)"),
        ("224.0.0.0/4", "multicast (RFC 5771)"),
        ("240.0.0.0/4", "reserved (RFC 1112)"),
        ("::/128", "unspecified address (RFC 4291)"),
        ("::1/128", "loopback (RFC 4291)"),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)"),
        ("100::/64", "discard-only (RFC 6666)"),
        ("2001:2::/48", "benchmarking range (RFC 5180)"),
        ("2001:db8::/32", "documentation range (RFC 3849)"),
        ("fc00::/7", "unique local address (RFC 4193)"),
        ("fe80::/10", "link-local (RFC 4291)"),
        ("ff00::/8", "multicast (RFC 4291)"),
    )
)

NOT_AN_IP = "not an IP address"

FactsRow = tuple[str, str | None, int | None, str | None, str | None, str | None, str | None]
"""The fields of :class:`IpFacts` in order, as :meth:`IpDatabase.lookup_rows` gives them."""
BULK_MIN_ADDRESSES: Final = 2000
"""Fewer distinct addresses than this are looked up one by one (see
:meth:`IpDatabase.lookup_columns`)."""


class FactsColumns(NamedTuple):
    """The fields of :class:`IpFacts` as object arrays, one row per address
    (:meth:`IpDatabase.lookup_columns`)."""

    ip: np.ndarray
    country: np.ndarray
    asn: np.ndarray
    asn_org: np.ndarray
    network: np.ndarray
    reason: np.ndarray
    database: np.ndarray


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


_GEOIP2FAST_DATE = re.compile(r"(\d{8})$")


# ASCII digits only: Python's \d also takes other scripts' digits ("١.2.3.4"), which
# inet_aton refuses with an OSError
_CANONICAL_V4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_ZERO8 = bytes(8)


def special_reason(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``addr`` cannot be located (a private, loopback, documentation... range), or None."""
    for net, reason in SPECIAL_RANGES:
        if addr.version == net.version and addr in net:
            return reason
    return None


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from text (``[v6]`` brackets and zone ids dropped; IPv4-mapped v6 unwrapped)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    if not text or len(text) > 45:
        return None
    # canonical text (as ``str()`` writes an address) made from its packed bytes: ipaddress
    # parses text in Python, ~10 us an address, and a capture names 100,000 servers by address
    if _CANONICAL_V4.fullmatch(text):
        return ipaddress.IPv4Address(socket.inet_aton(text))
    if ":" in text and "." not in text:
        try:
            packed = socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):  # ValueError: a NUL in the text
            packed = b""
        if packed[:8] not in (b"", _ZERO8) and socket.inet_ntop(socket.AF_INET6, packed) == text:
            return ipaddress.IPv6Address(packed)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class _Geoip2fast:
    """geoip2fast's data, loaded once per process (the library keeps it in module globals)."""

    _lock = threading.Lock()
    _instance: Any = None
    _info: DatabaseInfo | None = None
    _name: str | None = None  # the name geoip2fast recorded, when known without loading it

    @classmethod
    def path(cls) -> Path:
        """The data file, found beside the library without running it (its imports cost
        20-70 ms that an analysis reading the cached tables never repays)."""
        import importlib.util

        spec = importlib.util.find_spec("geoip2fast")
        if spec is not None and spec.origin:
            return Path(spec.origin).with_name(GEOIP2FAST_FILE)
        import geoip2fast  # not found: raises as it always did

        return Path(geoip2fast.__file__).with_name(GEOIP2FAST_FILE)

    @classmethod
    def get(cls) -> Any:
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    from geoip2fast import GeoIP2Fast

                    path = cls.path()
                    if not path.is_file():
                        raise IntelError(f"{path}: geoip2fast's bundled data file is missing")
                    # An absolute path, never a bare name: geoip2fast would look for a bare
                    # name in the current directory first and unpickle whatever it finds.
                    cls._instance = GeoIP2Fast(geoip2fast_data_file=str(path))
                    log.debug("loaded %s", path)
        return cls._instance

    @classmethod
    def info(cls) -> DatabaseInfo:
        if cls._info is None:
            path = cls.path()
            name = cls.source_name()
            match = _GEOIP2FAST_DATE.search(name)
            date = None
            if match:
                d = match.group(1)
                date = f"{d[:4]}-{d[4:6]}-{d[6:]}"
            cls._info = DatabaseInfo(
                name=f"geoip2fast {GEOIP2FAST_FILE} ({name})",
                date=date,
                kind="bundled",
                path=str(path),
                licence=GEOLITE_LICENCE,
            )
        return cls._info

    @classmethod
    def source_name(cls) -> str:
        """The database name geoip2fast recorded (e.g.
        MAXMIND:GeoLite2-CountryASN-...-20240618)."""
        if cls._name is None:
            cls._name = _read_geoip2fast_name(cls.path())
        return cls._name

    @classmethod
    def remember_name(cls, name: str) -> None:
        """The recorded name, read from a cache of this data file
        (:mod:`auditor.intel.bulkip`): geoip2fast need not be loaded to name it."""
        if cls._name is None:
            cls._name = name


def _read_geoip2fast_name(path: Path) -> str:
    """The database name geoip2fast recorded (e.g. MAXMIND:GeoLite2-CountryASN-...-20240618)."""
    del path
    return str(getattr(_Geoip2fast.get(), "source_info", "") or "unknown")


class _Mmdb:
    def __init__(self, path: Path) -> None:
        import maxminddb

        try:
            self.reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise IntelError(f"{path}: not a readable MaxMind DB: {exc}") from exc
        meta = self.reader.metadata()
        built = datetime.fromtimestamp(int(meta.build_epoch), UTC).date().isoformat()
        self.info = DatabaseInfo(
            name=f"{meta.database_type} ({path.name})",
            date=built,
            kind="mmdb",
            path=str(path),
            licence=None,
        )

    def get(self, ip: str) -> dict[str, Any] | None:
        import maxminddb

        try:
            rec = self.reader.get(ip)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        except maxminddb.InvalidDatabaseError as exc:
            log.warning("%s: corrupt record for %s: %s", self.info.path, ip, exc)
            return None
        return rec if isinstance(rec, dict) else None


def _mmdb_country(rec: dict[str, Any]) -> str | None:
    for key in ("country", "registered_country"):
        sub = rec.get(key)
        if isinstance(sub, dict):
            code = sub.get("iso_code")
            if isinstance(code, str) and len(code) == 2:
                return code.upper()
    return None


class IpDatabase:
    """Country and AS of addresses, from user ``.mmdb`` files first, then geoip2fast's data.

    >>> db = IpDatabase()
    >>> db.lookup("192.168.1.10").reason
    'private range (RFC 1918)'
    """

    def __init__(self, mmdb: Sequence[Path | str] = (), *, bundled: bool = True) -> None:
        self._mmdb = [_Mmdb(Path(p)) for p in mmdb]
        self._bundled = bundled
        self._cache: dict[str, IpFacts] = {}

    def databases(self) -> list[DatabaseInfo]:
        """The databases in use, in precedence order, with their names and dates."""
        out = [m.info for m in self._mmdb]
        if self._bundled:
            out.append(_Geoip2fast.info())
        return out

    def lookup(self, ip: str) -> IpFacts:
        """Facts about one address; never raises on bad input (``reason`` says why)."""
        cached = self._cache.get(ip)
        if cached is not None:
            return cached
        facts = self._lookup(ip)
        if len(self._cache) < 1_000_000:
            self._cache[ip] = facts
        return facts

    def lookup_rows(self, ips: Sequence[str]) -> list[FactsRow]:
        """The facts of many addresses, each as a tuple of the :class:`IpFacts` fields."""
        return list(zip(*(c.tolist() for c in self.lookup_columns(ips)), strict=True))

    def lookup_columns(self, ips: Sequence[str], *, networks: bool = True) -> FactsColumns:
        """The facts of many addresses as columns (object arrays, one per :class:`IpFacts`
        field): the answers of :meth:`lookup`. With the bundled database alone, canonical
        IPv4 and IPv6 addresses are found together in its tables
        (:mod:`auditor.intel.bulkip`, numpy); a user ``.mmdb`` and every other value take
        the per-address path, and so do fewer than :data:`BULK_MIN_ADDRESSES` (the tables
        cost about 170 MB and half a second to build, which a small capture never repays).
        ``networks=False`` leaves the ``network`` column None: an attribution never reads
        it, and writing 100,000 networks as text costs a twentieth of a second."""
        if self._bundled and not self._mmdb and len(ips) >= BULK_MIN_ADDRESSES:
            from auditor.intel.bulkip import bundled_columns

            return bundled_columns(ips, self._lookup_row, networks=networks)
        rows = [self._lookup_row(ip) for ip in ips]
        cols = FactsColumns(*(_objects([r[j] for r in rows]) for j in range(7)))
        if not networks:
            cols.network[:] = None
        return cols

    def _lookup_row(self, ip: str) -> FactsRow:
        f = self.lookup(ip)
        return (f.ip, f.country, f.asn, f.asn_org, f.network, f.reason, f.database)

    def _lookup(self, raw: str) -> IpFacts:
        addr = parse_ip(raw) if isinstance(raw, str) else None
        if addr is None:
            shown = raw[:64] if isinstance(raw, str) else repr(raw)[:64]
            return IpFacts(shown, None, None, None, None, NOT_AN_IP, None)
        ip = str(addr)
        special = special_reason(addr)
        if special is not None:
            return IpFacts(ip, None, None, None, None, special, None)
        country: str | None = None
        asn: int | None = None
        asn_org: str | None = None
        network: str | None = None
        answered: list[str] = []
        for db in self._mmdb:
            rec = db.get(ip)
            if rec is None:
                continue
            used = False
            if country is None and (c := _mmdb_country(rec)):
                country, used = c, True
            num = rec.get("autonomous_system_number")
            if asn is None and isinstance(num, int) and not isinstance(num, bool):
                asn, used = num, True
            org = rec.get("autonomous_system_organization")
            if asn_org is None and isinstance(org, str) and org:
                asn_org, used = org, True
            if used:
                answered.append(db.info.name)
        if self._bundled and (country is None or asn_org is None):
            res = _Geoip2fast.get().lookup(ip)
            code = getattr(res, "country_code", "") or ""
            used = False
            if country is None and len(code) == 2 and code.isalpha() and not res.is_private:
                country, used = code.upper(), True
                network = getattr(res, "cidr", None) or None
            name = getattr(res, "asn_name", "") or ""
            if asn_org is None and name and name not in ("<unknown>", "IANA.ORG"):
                asn_org, used = name, True
            if used:
                answered.append(_Geoip2fast.info().name)
        reason = None if country else "not in the IP databases"
        return IpFacts(ip, country, asn, asn_org, network, reason, "; ".join(answered) or None)


_default: IpDatabase | None = None
_default_lock = threading.Lock()


def default_ipdb() -> IpDatabase:
    """The process-wide bundled database (no user ``.mmdb``)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = IpDatabase()
    return _default

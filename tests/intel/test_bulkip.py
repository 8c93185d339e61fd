"""The bulk IP lookup (:mod:`auditor.intel.bulkip`) against geoip2fast's own per-address
lookup (:meth:`IpDatabase.lookup`): IPv6 addresses at the edges of the database's own
networks (first, last, one past the last, one before the first, one inside), including the
networks longer than /64 that share a high half, and text that is not canonical."""

from __future__ import annotations

import ipaddress
import itertools
import random

import pytest

from auditor.intel.ipdb import IpDatabase, _Geoip2fast
from auditor.intel.model import IpFacts


def _edges(first: int, length: int, rng: random.Random) -> list[str]:
    size = 2 ** (128 - length)
    values = (first, first + size - 1, first + size, first - 1, first + rng.randrange(size))
    return [str(ipaddress.IPv6Address(v)) for v in values if 0 <= v < 2**128]


@pytest.fixture(scope="module")
def addresses() -> list[str]:
    _Geoip2fast.get()
    import geoip2fast.geoip2fast as g

    rng = random.Random(14)
    chain = itertools.chain.from_iterable
    pairs = zip(chain(g.mainListFirstIP), chain(g.mainListNetlength), strict=True)
    country = [(f, n) for f, n in pairs if f > 2**64]
    asn = [
        (f, n)
        for f, n in zip(chain(g.mainListFirstIPASN), chain(g.mainListNetlengthASN), strict=True)
        if f > 2**64
    ]
    long = [(f, n) for f, n in country + asn if n > 64]
    picked = rng.sample(country, 1500) + rng.sample(asn, 1000) + rng.sample(long, 300)
    out = [ip for f, n in picked for ip in _edges(f, n, rng)]
    out += ["::1", "::", "::ffff:8.8.8.8", "::8.8.8.8", "fe80::1", "fe80::1%eth0", "fc00::5"]
    out += ["2001:db8::1", "ff02::1", "2001:2::1", "64:ff9b:1::1", "100::1", "[2a00:1450::1]"]
    out += ["2A00:1450:4001::1", "2a00:1450:0:0::1", "2a00:1450:4001:0:0:0:0:1", ":::1", "1::2::3"]
    return out


def test_bulk_ipv6_facts_equal_the_per_address_lookup(addresses: list[str]) -> None:
    from auditor.intel import bulkip

    # the bulk path must really run (an unknown table layout falls back to the per-address
    # lookup, which would make this compare that lookup with itself)
    assert bulkip._tables() is not None
    fast = [IpFacts(*row) for row in IpDatabase().lookup_rows(addresses)]
    slow_db = IpDatabase()
    slow = [slow_db.lookup(ip) for ip in addresses]
    assert sum(f.country is not None for f in slow) > 5_000  # the database answered
    assert sum(f.asn_org is not None for f in slow) > 4_000
    assert sum(f.reason not in (None, "not in the IP databases") for f in slow) >= 10
    assert [(f, s) for f, s in zip(fast, slow, strict=True) if f != s] == []


def test_a_user_mmdb_or_no_bundled_data_takes_the_per_address_path() -> None:
    db = IpDatabase(bundled=False)
    rows = db.lookup_rows(["2a00:1450:4001::1", "8.8.8.8"])
    assert [r[5] for r in rows] == ["not in the IP databases"] * 2
    assert [r[1] for r in rows] == [None, None]


def test_a_few_addresses_never_build_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables cost about 170 MB: a small capture's addresses are looked up one by one
    (the analysis of a handful of flows stays small; tests/e2e/test_safety.py bounds it)."""
    from auditor.intel import bulkip
    from auditor.intel.ipdb import BULK_MIN_ADDRESSES

    def tables_asked() -> None:
        raise AssertionError("the bulk tables were asked for")

    db = IpDatabase()
    few = ["8.8.8.8", "2a00:1450:4001::1", "1.1.1.1"]
    expected = [db.lookup(ip) for ip in few]
    monkeypatch.setattr(bulkip, "_tables", tables_asked)
    assert len(few) < BULK_MIN_ADDRESSES
    assert [IpFacts(*row) for row in db.lookup_rows(few)] == expected
    with pytest.raises(AssertionError, match="bulk tables"):
        db.lookup_rows(few * BULK_MIN_ADDRESSES)

"""IP facts offline: geoip2fast's bundled data, special ranges, a user .mmdb first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor.intel.ipdb import IpDatabase, _Geoip2fast, default_ipdb, parse_ip
from auditor.intel.kb import KnowledgeBase
from auditor.intel.model import IntelError, MatchedBy

CANDIDATES = ("8.8.8.8", "1.1.1.1", "9.9.9.9", "151.101.1.1", "2001:4860:4860::8888")


def _known_public() -> list[tuple[str, str]]:
    """(address, country) pairs the bundled data itself locates: nothing assumed."""
    raw = _Geoip2fast.get()
    out = []
    for ip in CANDIDATES:
        res = raw.lookup(ip)
        if len(res.country_code) == 2 and not res.is_private:
            out.append((ip, res.country_code))
    return out


def test_bundled_data_locates_public_addresses() -> None:
    pairs = _known_public()
    assert pairs, "the bundled data locates none of the candidate addresses"
    db = default_ipdb()
    for ip, country in pairs:
        facts = db.lookup(ip)
        assert facts.country == country and facts.reason is None
        assert facts.database and "geoip2fast" in facts.database
        assert facts.asn_org  # the bundled file carries AS-organisation names


def test_database_name_and_date_for_the_report() -> None:
    (info,) = default_ipdb().databases()
    assert info.kind == "bundled" and "GeoLite2" in info.name
    assert info.date and re.match(r"^\d{4}-\d{2}-\d{2}$", info.date)
    assert info.licence and "MaxMind" in info.licence
    assert info.path and Path(info.path).is_file()


@pytest.mark.parametrize(
    ("ip", "rfc"),
    [
        ("10.1.2.3", "RFC 1918"),
        ("172.16.5.4", "RFC 1918"),
        ("172.31.255.255", "RFC 1918"),
        ("192.168.1.1", "RFC 1918"),
        ("127.0.0.1", "RFC 1122"),
        ("127.255.0.9", "RFC 1122"),
        ("192.0.2.1", "RFC 5737"),
        ("198.51.100.1", "RFC 5737"),
        ("203.0.113.200", "RFC 5737"),
        ("198.18.0.1", "RFC 2544"),
        ("198.19.255.254", "RFC 2544"),
        ("2001:db8::1", "RFC 3849"),
        ("2001:db8:ffff::1", "RFC 3849"),
        ("::1", "RFC 4291"),
        ("fe80::1%wlan0", "RFC 4291"),
        ("fd12:3456::1", "RFC 4193"),
        ("100.64.0.1", "RFC 6598"),
        ("169.254.1.1", "RFC 3927"),
        ("::ffff:10.0.0.1", "RFC 1918"),
        ("[2001:db8::5]", "RFC 3849"),
    ],
)
def test_special_ranges_have_no_country_and_a_reason(ip: str, rfc: str) -> None:
    facts = default_ipdb().lookup(ip)
    assert facts.country is None and facts.asn is None and facts.asn_org is None
    assert facts.reason and rfc in facts.reason


def test_boundaries_of_special_ranges() -> None:
    db = default_ipdb()
    for outside in ("172.32.0.1", "198.20.0.1", "11.0.0.1"):
        assert "RFC" not in (db.lookup(outside).reason or ""), outside


@pytest.mark.parametrize("raw", ["", "abc", "1.2.3", "999.1.1.1", "<script>", "1" * 10_000, "\x00"])
def test_invalid_addresses(raw: str) -> None:
    facts = default_ipdb().lookup(raw)
    assert facts.country is None and facts.reason == "not an IP address"
    assert len(facts.ip) <= 64


def test_ipv4_mapped_addresses_are_unwrapped() -> None:
    assert str(parse_ip("::ffff:8.8.8.8")) == "8.8.8.8"
    assert default_ipdb().lookup("::ffff:8.8.8.8").ip == "8.8.8.8"


# --- a user-supplied MaxMind DB --------------------------------------------------------------


@pytest.fixture
def mmdb(tmp_path: Path) -> Path:
    writer_mod = pytest.importorskip("mmdb_writer")
    netaddr = pytest.importorskip("netaddr")
    w = writer_mod.MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="Test-Country-ASN",
        description={"en": "auditor test database"},
    )
    w.insert_network(
        netaddr.IPSet(["8.8.8.0/24"]),
        {
            "country": {"iso_code": "DE"},
            "autonomous_system_number": 15169,
            "autonomous_system_organization": "Renamed Google AS",
        },
    )
    w.insert_network(netaddr.IPSet(["9.9.9.0/24"]), {"registered_country": {"iso_code": "ch"}})
    w.insert_network(netaddr.IPSet(["10.0.0.0/8"]), {"country": {"iso_code": "FR"}})
    path = tmp_path / "test.mmdb"
    w.to_db_file(str(path))
    return path


def test_mmdb_takes_precedence(mmdb: Path) -> None:
    db = IpDatabase([mmdb])
    facts = db.lookup("8.8.8.8")
    assert (facts.country, facts.asn, facts.asn_org) == ("DE", 15169, "Renamed Google AS")
    assert facts.database == "Test-Country-ASN (test.mmdb)"
    assert db.lookup("9.9.9.9").country == "CH"  # registered country when no country
    infos = db.databases()
    assert [i.kind for i in infos] == ["mmdb", "bundled"]
    assert infos[0].date and re.match(r"^\d{4}-\d{2}-\d{2}$", infos[0].date)


def test_mmdb_falls_back_to_bundled_data(mmdb: Path) -> None:
    pairs = _known_public()
    outside = [(ip, c) for ip, c in pairs if not ip.startswith(("8.8.8.", "9.9.9."))]
    if not outside:
        pytest.skip("no candidate address outside the test database")
    ip, country = outside[0]
    facts = IpDatabase([mmdb]).lookup(ip)
    assert facts.country == country and "geoip2fast" in (facts.database or "")


def test_mmdb_never_locates_special_ranges(mmdb: Path) -> None:
    facts = IpDatabase([mmdb]).lookup("10.1.1.1")
    assert facts.country is None and "RFC 1918" in (facts.reason or "")


def test_mmdb_as_number_maps_to_the_hosting_organisation(mmdb: Path) -> None:
    kb = KnowledgeBase.load(mmdb=[mmdb], datasets=False)
    a = kb.lookup_ip("8.8.8.8")
    assert (a.organisation, a.matched_by, a.asn) == (None, MatchedBy.NONE, 15169)
    assert a.hosting is not None
    assert (a.hosting.organisation, a.hosting.basis) == ("google", "asn")
    assert a.server_country == "DE"
    assert any(d["kind"] == "mmdb" for d in kb.info()["ip_databases"])


def test_unreadable_mmdb_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a maxmind database")
    with pytest.raises(IntelError, match=r"bad\.mmdb: not a readable MaxMind DB"):
        IpDatabase([bad])


@pytest.mark.parametrize("raw", ["١.2.3.4", "１.2.3.4", "1.2.3.٤", "𝟏.2.3.4"])
def test_digits_of_other_scripts_are_no_address(raw: str) -> None:
    """Python's ``\\d`` matches them, and ``inet_aton`` then raised OSError out of an
    analysis (a hostile HAR can name such a host)."""
    assert parse_ip(raw) is None


def test_a_host_of_other_scripts_digits_is_looked_up_without_raising() -> None:
    from auditor.intel.kb import KnowledgeBase

    kb = KnowledgeBase.load(datasets=False)
    got = kb.lookup_host("١.2.3.4")
    assert got.organisation is None  # nobody's, and no crash
    assert kb.classify_hosts(["١.2.3.4", "8.8.8.8"]) is not None

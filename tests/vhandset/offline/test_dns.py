"""The offline DNS: pure resolution, and real UDP/TCP queries to a server on loopback."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest
from mitmproxy import dns
from mitmproxy.net.dns import classes, response_codes, types

from vhandset.offline.dns import (
    OfflineDns,
    answer,
    derived_ipv4,
    derived_ipv6,
    lookup,
    resolve,
)
from vhandset.offline.services import parse_services

BENCH = ipaddress.IPv4Network("198.18.0.0/15")
FIXED_V4 = ipaddress.IPv4Network("198.18.0.0/24")
DOC6 = ipaddress.IPv6Network("2001:db8::/32")
FIXED_V6 = ipaddress.IPv6Network("2001:db8::/48")

ALIASES = """\
version: 1
defaults:
  upload: {status: 204}
  fetch: {status: 200}
services:
  - name: alias
    hosts: [www.alias.example]
    cname: edge.cdn.example
    source: A test fixture (2024).
  - name: edge
    hosts: [edge.cdn.example]
    ipv4: 198.18.0.77
    source: A test fixture (2024).
  - name: loop
    hosts: [a.loop.example]
    cname: b.loop.example
    source: A test fixture (2024).
  - name: loop2
    hosts: [b.loop.example]
    cname: a.loop.example
    source: A test fixture (2024).
"""


def query(name: str, qtype: int, qid: int = 4242, additionals: list | None = None) -> bytes:
    return dns.DNSMessage(
        id=qid,
        query=True,
        op_code=0,
        authoritative_answer=False,
        truncation=False,
        recursion_desired=True,
        recursion_available=False,
        reserved=0,
        response_code=0,
        questions=[dns.Question(name, qtype, classes.IN)],
        answers=[],
        authorities=[],
        additionals=additionals or [],
    ).packed


@pytest.fixture(scope="module")
def server() -> Iterator[OfflineDns]:
    with OfflineDns(tcp_timeout=2.0) as d:
        yield d


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    yield s
    s.close()


def ask(server: OfflineDns, udp: socket.socket, packet: bytes) -> dns.DNSMessage:
    udp.sendto(packet, server.address)
    return dns.DNSMessage.unpack(udp.recv(4096))


# --- pure --------------------------------------------------------------------------------


def test_addresses_are_deterministic_and_synthetic() -> None:
    # Regression anchors: a change of the derivation would move every recorded address.
    assert derived_ipv4("globalapi.ad.xiaomi.com") == "198.18.143.183"
    assert derived_ipv6("globalapi.ad.xiaomi.com") == "2001:db8:16d2:477a:b294:b6b7:f961:b7e6"
    names = [f"host{i}.example.com" for i in range(2000)]
    v4 = [ipaddress.IPv4Address(derived_ipv4(n)) for n in names]
    v6 = [ipaddress.IPv6Address(derived_ipv6(n)) for n in names]
    assert all(a in BENCH and a not in FIXED_V4 for a in v4)
    assert all(0 < int(a) % 256 < 255 for a in v4)
    assert all(a in DOC6 and a not in FIXED_V6 for a in v6)
    assert len(set(v4)) > 1950 and len(set(v6)) == len(names)
    assert [derived_ipv4(n) for n in names] == [str(a) for a in v4]


def test_resolve_is_case_and_dot_insensitive() -> None:
    a = resolve("tracking.miui.com")
    assert a == resolve("Tracking.MIUI.com.") and len(a) == 2
    assert ipaddress.ip_address(a[0]) in BENCH and ipaddress.ip_address(a[1]) in DOC6
    assert resolve("tracking.miui.com") != resolve("data.mistat.xiaomi.com")


def test_invalid_names_do_not_exist_except_the_canary() -> None:
    assert resolve("auditor-canary.invalid") == ["198.18.0.2", "2001:db8::2"]
    assert resolve("AUDITOR-CANARY.invalid.") == ["198.18.0.2", "2001:db8::2"]
    for name in ("x.invalid", "invalid", "sub.auditor-canary.invalid", "a.b.invalid"):
        assert resolve(name) == [] and not lookup(name).exists


def test_localhost_is_loopback() -> None:
    assert resolve("localhost") == ["127.0.0.1", "::1"]
    assert resolve("foo.localhost") == ["127.0.0.1", "::1"]


def test_cname_chains_and_loops() -> None:
    cat = parse_services(ALIASES, "aliases.yaml")
    r = lookup("www.alias.example", cat)
    assert r.cnames == ("edge.cdn.example",) and r.ipv4 == "198.18.0.77"
    assert resolve("www.alias.example", cat)[0] == "198.18.0.77"
    looped = lookup("a.loop.example", cat)
    assert looped.exists and looped.ipv4 and len(looped.cnames) <= 8


def test_answer_is_pure_and_handles_edns() -> None:
    opt = dns.ResourceRecord("", 41, 1232, 0, b"")  # an EDNS OPT record, as resolvers send
    reply = answer(query("play.googleapis.com", types.A, additionals=[opt]))
    assert reply is not None
    msg = dns.DNSMessage.unpack(reply)
    assert msg.id == 4242 and not msg.query and msg.recursion_desired
    assert [str(a.ipv4_address) for a in msg.answers] == [resolve("play.googleapis.com")[0]]


def test_answer_truncates_what_does_not_fit() -> None:
    cat = parse_services(ALIASES, "aliases.yaml")
    reply = answer(query("www.alias.example", types.ANY), cat, max_size=40)
    assert reply is not None
    msg = dns.DNSMessage.unpack(reply)
    assert msg.truncation and msg.answers == []


def test_answer_drops_what_it_must_not_answer() -> None:
    assert answer(b"") is None
    assert answer(b"\x00\x01\x02") is None
    response = bytearray(query("a.example", types.A))
    response[2] |= 0x80  # QR: this is a response; answering it could loop two servers
    assert answer(bytes(response)) is None


@pytest.mark.parametrize(
    "packet,rcode",
    [
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc", response_codes.FORMERR),
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
         response_codes.FORMERR),  # a compression pointer to itself
        (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
         response_codes.FORMERR),  # two questions
        (b"\x12\x34\x11\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",
         response_codes.NOTIMP),  # opcode 2 (STATUS)
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x03",
         response_codes.REFUSED),  # class CH
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 * 5,
         response_codes.FORMERR),  # name over 255 bytes
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04caf\xe9\x03com\x00\x00\x01\x00\x01",
         response_codes.FORMERR),  # a label that is not ASCII: it could not be echoed as asked
        (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03a.b\x03com\x00\x00\x01\x00\x01",
         response_codes.FORMERR),  # a dot inside a label: it would be echoed as two labels
    ],
)  # fmt: skip
def test_malformed_queries_get_an_error_with_their_id(packet: bytes, rcode: int) -> None:
    reply = answer(packet)
    assert reply is not None
    msg = dns.DNSMessage.unpack(reply)
    assert msg.id == 0x1234 and msg.response_code == rcode and not msg.query


# --- over the wire -----------------------------------------------------------------------


def test_a_and_aaaa_over_udp(server: OfflineDns, udp: socket.socket) -> None:
    a = ask(server, udp, query("globalapi.ad.xiaomi.com", types.A, qid=1))
    assert a.id == 1 and a.response_code == response_codes.NOERROR
    assert [(r.type, str(r.ipv4_address)) for r in a.answers] == [(types.A, "198.18.143.183")]
    assert a.answers[0].name == "globalapi.ad.xiaomi.com" and a.answers[0].ttl == 60
    aaaa = ask(server, udp, query("globalapi.ad.xiaomi.com", types.AAAA, qid=2))
    assert [str(r.ipv6_address) for r in aaaa.answers] == ["2001:db8:16d2:477a:b294:b6b7:f961:b7e6"]
    again = ask(server, udp, query("globalapi.ad.xiaomi.com", types.A, qid=3))
    assert again.answers[0].data == a.answers[0].data


def test_question_case_is_echoed(server: OfflineDns, udp: socket.socket) -> None:
    # Resolvers that randomise case (DNS 0x20) drop answers whose question differs.
    msg = ask(server, udp, query("TrAcKiNg.MiUi.CoM", types.A))
    assert msg.questions[0].name == "TrAcKiNg.MiUi.CoM"
    assert str(msg.answers[0].ipv4_address) == resolve("tracking.miui.com")[0]


def test_nxdomain_for_invalid_but_not_the_canary(server: OfflineDns, udp: socket.socket) -> None:
    nx = ask(server, udp, query("tracker.invalid", types.A))
    assert nx.response_code == response_codes.NXDOMAIN and nx.answers == []
    assert [r.type for r in nx.authorities] == [types.SOA]
    canary = ask(server, udp, query("auditor-canary.invalid", types.A))
    assert canary.response_code == response_codes.NOERROR
    assert str(canary.answers[0].ipv4_address) == "198.18.0.2"


@pytest.mark.parametrize("qtype", [types.HTTPS, types.CNAME, types.MX, types.TXT])
def test_other_types_exist_but_are_empty(
    server: OfflineDns, udp: socket.socket, qtype: int
) -> None:
    msg = ask(server, udp, query("www.googleapis.com", qtype))
    assert msg.response_code == response_codes.NOERROR and msg.answers == []
    assert [r.type for r in msg.authorities] == [types.SOA]


def test_tcp(server: OfflineDns) -> None:
    with socket.create_connection(server.address, timeout=2.0) as s:
        for qid, name in enumerate(["api.sec.miui.com", "update.miui.com"], start=10):
            p = query(name, types.A, qid=qid)
            s.sendall(struct.pack("!H", len(p)) + p)
            (n,) = struct.unpack("!H", _recv_exact(s, 2))
            msg = dns.DNSMessage.unpack(_recv_exact(s, n))
            assert msg.id == qid and str(msg.answers[0].ipv4_address) == resolve(name)[0]


def test_malformed_packets_do_not_stop_the_server(server: OfflineDns, udp: socket.socket) -> None:
    udp.sendto(b"\xff" * 3, server.address)  # too short even for an id: dropped
    udp.sendto(b"\x00" * 12, server.address)  # a header with no question: FORMERR
    formerr = dns.DNSMessage.unpack(udp.recv(4096))
    assert formerr.response_code == response_codes.FORMERR
    udp.sendto(bytes(range(256)) * 4, server.address)  # noise
    udp.recv(4096)  # its header parses, so it earns an error reply
    with socket.create_connection(server.address, timeout=2.0) as s:
        s.sendall(b"\x00\x05abc")  # a TCP message cut short, then closed
    msg = ask(server, udp, query("still.alive.example", types.A, qid=77))
    assert msg.id == 77 and msg.answers
    assert any(q.rcode == "dropped" for q in server.queries())


def test_stop_releases_the_port() -> None:
    d = OfflineDns().start()
    port = d.port
    d.stop(timeout=2.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # would raise if the server still held it


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf

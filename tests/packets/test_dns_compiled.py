"""The compiled DNS parser (``auditor/packets/_dns.c``) against the Python reference
(``_parse_dns_python``): the same ``DnsMessage`` (fields, their types and repr), or
``MalformedError`` from both, on every DNS message of the real captures, on hand-built corner
cases (compression pointers and their limits, the ``seen`` cache, name lengths, escaping, record
counts, rdata lengths, HTTPS/SVCB parameters, mDNS announcements), cut at every length, and on
mutated and random bytes."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.packets import dns as dns_parser
from auditor.packets import names as N
from auditor.packets.dns import (
    DNS_PARSER,
    DnsMessage,
    DnsResource,
    _parse_dns_python,
    parse_dns,
    read_name,
)
from auditor.packets.dnstables import DnsStore
from auditor.packets.tls import (
    _parse_client_hello_python,
    looks_like_client_hello_record,
    parse_client_hello,
)
from auditor.packets.wire import MalformedError
from tests.fuzz.helpers import mutated
from tests.packets.helpers import (
    SHARED_CAPTURES,
    dns_name,
    dns_query,
    dns_response,
    ip6,
    rr,
    svcb_rdata,
)

try:
    from auditor.packets import _dns as compiled
except ImportError:  # not built: the tests that need it skip
    compiled = None  # type: ignore[assignment]
else:  # dns.py does this only when it uses the compiled parser (not under PURE_PYTHON)
    compiled.setup(DnsResource, DnsMessage, MalformedError)
built = pytest.mark.skipif(compiled is None, reason="the compiled DNS parser is not built")

FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
DNS_PORTS = (53, 5353, 5355)


def test_the_compiled_parser_is_built_where_there_is_a_compiler() -> None:
    """Without it DNS parsing is many times slower; a silent fallback would hide that."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    if os.environ.get("AUDITOR_PURE_PYTHON_SCAN"):
        assert DNS_PARSER == "python"
        assert N._dns_compiled is None
    else:
        assert DNS_PARSER == "compiled"
        assert compiled is not None and N._dns_compiled is compiled


# -------------------------------------------------------------------------------- compare


def outcome(parse: Callable[[Any], DnsMessage], msg: Any) -> DnsMessage | str:
    try:
        return parse(msg)
    except MalformedError as exc:
        assert type(exc) is MalformedError and str(exc)
        return "malformed"


def assert_same(msg: bytes) -> DnsMessage | str:
    """The compiled parser gives what the Python one gives for ``msg`` (returned)."""
    want = outcome(_parse_dns_python, msg)
    got = outcome(compiled.parse, msg)
    assert got == want, msg.hex()
    assert repr(got) == repr(want), msg.hex()  # types too: bool, int, str, None, tuple
    if isinstance(got, DnsMessage):
        assert isinstance(want, DnsMessage)
        assert type(got.questions) is tuple and type(got.answers) is tuple
        for r in got.answers:
            assert type(r) is DnsResource and type(r.hints) is tuple
            assert all(type(h) is str for h in r.hints)
        assert hash(got) == hash(want)
    return want


def assert_same_cut(msg: bytes) -> None:
    """The same at every length of ``msg`` (a message cut by the snap length)."""
    for n in range(len(msg) + 1):
        assert_same(msg[:n])


# ------------------------------------------------------------------------------- messages


def header(qd: int, an: int, *, ident: int = 0x1234, flags: int = 0x8180) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, 0, 0)


def ptr(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def question(name: bytes, qtype: int = 1) -> bytes:
    return name + struct.pack("!HH", qtype, 1)


def record(owner: bytes, rtype: int, rdata: bytes, *, rdlen: int | None = None) -> bytes:
    """A resource record whose length field may lie (``rdlen``)."""
    size = len(rdata) if rdlen is None else rdlen
    return owner + struct.pack("!HHIH", rtype, 1, 300, size) + rdata


def links(at: int, count: int, target: int) -> bytes:
    """``count`` compression pointers from ``at`` on, each to the next, the last to ``target``."""
    if not count:
        return b""
    return b"".join(ptr(at + 2 * (k + 1)) for k in range(count - 1)) + ptr(target)


def chain(jumps: int) -> bytes:
    """One question whose name is reached through ``jumps`` compression pointers."""
    tail = 18  # after the question: its name is a pointer, then type and class
    return (
        header(1, 0)
        + question(ptr(tail))
        + links(tail, jumps - 1, tail + 2 * (jumps - 1))
        + dns_name("chain.example")
    )


def labels(*sizes: int, fill: int = 0x61) -> bytes:
    return b"".join(bytes([n]) + bytes([fill]) * n for n in sizes) + b"\x00"


def mdns_announcement() -> bytes:
    service = dns_name("_googlecast._tcp.local")
    instance = b"\x0dChromecast-1a" + ptr(12)
    host = dns_name("cc1a.local")
    body = (
        record(service, 12, instance)
        + record(instance, 33, b"\x00\x00\x00\x00\x1f\x49" + host)
        + record(instance, 16, b"\x09id=1a2b3c")
        + record(host, 1, bytes([192, 168, 1, 40]))
        + record(host, 28, ip6("fe80::1a2b:3cff:fe4d:5e6f"))
    )
    return header(0, 5, ident=0, flags=0x8400) + body


def hand_built() -> list[bytes]:
    """Messages of each kind the parser decodes, for cuts and mutations."""
    q = "www.example.com"
    return [
        dns_query(0x1234, "connectivitycheck.gstatic.com", 28),
        dns_query(7, "", 1),
        dns_response(
            7,
            q,
            1,
            [
                rr(b"\xc0\x0c", 5, b"\x04edge\x03cdn" + b"\xc0\x10"),
                rr(b"\xc0\x2d", 1, bytes([93, 184, 216, 34])),
                rr(b"\xc0\x2d", 28, ip6("2606:2800:220:1::248")),
                rr(b"\xc0\x2d", 16, b"\x05hello"),
                rr(b"\xc0\x0c", 2, dns_name("ns1.example.com")),
                rr(b"\xc0\x0c", 12, b"\x03ptr\xc0\x0c"),
            ],
        ),
        dns_response(
            1,
            "example.net",
            65,
            [
                rr(
                    b"\xc0\x0c",
                    65,
                    svcb_rdata(
                        1,
                        "svc.example.net",
                        [(1, b"\x02h3"), (4, bytes(range(1, 9))), (6, ip6("2001:db8::5"))],
                    ),
                ),
                rr(b"\xc0\x0c", 64, svcb_rdata(0, "", [])),
            ],
        ),
        mdns_announcement(),
        chain(64),
    ]


# ---------------------------------------------------------------------------- real captures


@cache
def real_messages() -> tuple[bytes, ...]:
    """The UDP payloads to or from a DNS, mDNS or LLMNR port in the real captures."""
    from auditor.packets import iter_packets

    out: list[bytes] = []
    for path in sorted(SHARED_CAPTURES.glob("*.pcap*")):
        for batch in iter_packets(path):
            dns = (batch.proto == 17) & (
                np.isin(batch.sport, DNS_PORTS) | np.isin(batch.dport, DNS_PORTS)
            )
            out.extend(batch.payload(int(i)) for i in np.flatnonzero(dns))
    return tuple(out)


def real_or_skip() -> tuple[bytes, ...]:
    if not SHARED_CAPTURES.is_dir():
        pytest.skip("real captures not present at /work/shared/captures")
    msgs = real_messages()
    if not msgs:
        pytest.skip("no DNS in the real captures")
    return msgs


@built
def test_every_dns_message_of_the_real_captures() -> None:
    msgs = real_or_skip()
    results = [assert_same(m) for m in msgs]
    assert sum(isinstance(r, DnsMessage) and bool(r.answers) for r in results) > 10


@built
def test_real_messages_cut_at_every_length() -> None:
    for m in sorted(set(real_or_skip()), key=len)[-40:]:  # the longest, most answers
        assert_same_cut(m)


@built
def test_real_messages_as_bytearray_and_memoryview() -> None:
    for m in real_or_skip()[:50]:
        want = outcome(_parse_dns_python, m)
        assert outcome(compiled.parse, bytearray(m)) == want
        assert outcome(compiled.parse, memoryview(m)) == want
        assert outcome(compiled.parse, memoryview(b"xx" + m)[2:]) == want


# ------------------------------------------------------------------------------ hand-built


@built
def test_hand_built_messages_and_every_cut() -> None:
    for m in hand_built():
        assert isinstance(assert_same(m), DnsMessage)
        assert_same_cut(m)


@built
def test_compression_pointer_chains_up_to_the_limit() -> None:
    for jumps in (1, 2, 63, 64):
        m = assert_same(chain(jumps))
        assert isinstance(m, DnsMessage) and m.questions == (("chain.example", 1),)
    assert assert_same(chain(65)) == "malformed"
    assert assert_same(chain(200)) == "malformed"


@built
def test_pointer_loops_into_the_header_to_itself_and_past_the_end() -> None:
    body = b"\x00\x01\x00\x01"
    cases = [
        header(1, 0) + ptr(12) + body,  # to itself
        header(1, 0) + ptr(18) + body + ptr(12),  # a loop of two
        header(1, 0) + ptr(18) + body + ptr(20) + ptr(18),  # a loop of two, entered late
        header(1, 0) + ptr(0x3FFF) + body,  # past the end
        header(1, 0) + b"\xc0",  # cut in the pointer
        header(1, 0) + b"\x01a\xc0",
        header(1, 0) + ptr(18) + body + dns_name("forward.example"),  # forward
        header(2, 0) + question(dns_name("b.example")) + question(b"\x01a" + ptr(12)),  # back
        header(2, 0) + question(b"\x01a" + ptr(12 + 15)) + question(b"\x01b" + ptr(12)),
    ]
    # into the header: its bytes read as labels and pointers, for header bytes of each kind
    for at in range(12):
        for ident, flags in ((0x0000, 0x0000), (0x0101, 0x0161), (0xC00C, 0xC000), (0x3F40, 0)):
            cases.append(header(1, 0, ident=ident, flags=flags) + question(ptr(at)))
    for m in cases:
        assert_same(m)
        assert_same_cut(m)
    assert assert_same(cases[0]) == assert_same(cases[1]) == assert_same(cases[3]) == "malformed"


@built
def test_the_seen_cache_lets_a_pointer_to_a_64_jump_name_through() -> None:
    """A name already read is not read again: a pointer to the question whose name took 64
    jumps is that name, where following it would make 65 jumps (an error)."""
    tail = 12 + 6 + 16  # question (pointer, type, class), then one A record
    msg = (
        header(1, 1)
        + question(ptr(tail))
        + record(ptr(12), 1, bytes([10, 0, 0, 1]))
        + links(tail, 63, tail + 126)
        + dns_name("seen.example")
    )
    with pytest.raises(MalformedError):
        read_name(msg, 18)  # the owner name, read without the cache
    m = assert_same(msg)
    assert isinstance(m, DnsMessage) and not m.truncated
    assert m.answers == (DnsResource("seen.example", 1, 300, "10.0.0.1"),)


@built
@pytest.mark.parametrize("rtype", [5, 2, 12, 64, 65])
def test_names_read_into_the_cache_or_not(rtype: int) -> None:
    """NS/CNAME/PTR targets are kept in the cache, HTTPS/SVCB targets are not (``_svcb``
    reads without it): a pointer to a 64-jump target goes through for the first, makes 65
    jumps and cuts the message for the second."""
    qname = dns_name("svc.example")
    pre = b"\x00\x01" if rtype in (64, 65) else b""
    rdata_at = 12 + len(qname) + 4 + 2 + 10
    target_at = rdata_at + len(pre)
    tail = target_at + 2 + 2 + 10 + 4  # after the second record
    msg = (
        header(1, 2)
        + question(qname)
        + record(ptr(12), rtype, pre + ptr(tail))
        + record(ptr(target_at), 1, bytes([10, 0, 0, 2]))
        + links(tail, 63, tail + 126)
        + dns_name("target.example")
    )
    m = assert_same(msg)
    assert isinstance(m, DnsMessage) and m.answers[0].value == "target.example"
    assert (len(m.answers), m.truncated) == ((1, True) if pre else (2, False))


@built
def test_an_empty_rdata_name_and_the_next_owner_read_at_one_offset() -> None:
    """A CNAME of rdata length 0 is read from the next record's owner name: two names read at
    one offset (the cache keeps the text of the later one)."""
    for owner in (dns_name("next.example"), ptr(12), b"\x04next" + ptr(12)):
        msg = (
            header(1, 3)
            + question(dns_name("a.example"))
            + record(ptr(12), 5, b"")
            + record(owner, 12, b"")
            + record(owner, 1, b"\x01\x02\x03\x04")
        )
        m = assert_same(msg)
        assert isinstance(m, DnsMessage) and len(m.answers) == 3 and not m.truncated
        assert_same_cut(msg)


@built
def test_names_of_255_and_256_bytes() -> None:
    for sizes, ok in (((63, 63, 63, 62), True), ((63, 63, 63, 63), False), ((1,) * 127, True)):
        for rest in (b"", b"\x00\x01\x00\x01"):
            msg = header(1, 0) + labels(*sizes) + rest
            assert isinstance(assert_same(msg), DnsMessage) is (ok and bool(rest))
    # the labels before a pointer count too
    far = 12 + 3 + 2 + 4  # after the question (a label, a pointer, type, class)
    for first, ok in ((59, True), (60, False)):
        msg = header(1, 0) + b"\x02ab" + ptr(far) + b"\x00\x01\x00\x01" + labels(first, 63, 63, 63)
        m = assert_same(msg)
        assert isinstance(m, DnsMessage) is ok
    # a name too long in an answer: what came before is kept
    msg = header(1, 1) + question(dns_name("a")) + record(labels(63, 63, 63, 63), 1, bytes(4))
    m = assert_same(msg)
    assert isinstance(m, DnsMessage) and m.truncated and not m.answers


@built
def test_labels_with_every_byte_value_are_escaped_alike() -> None:
    raw = bytes(range(256))
    chunks = [raw[i : i + 63] for i in range(0, 256, 63)]
    msg = header(len(chunks), 0) + b"".join(
        question(bytes([len(c)]) + c + b"\x01.\x01\\\x00") for c in chunks
    )
    m = assert_same(msg)
    assert isinstance(m, DnsMessage)
    assert m.questions[0][0].startswith("\\000\\001")
    assert m.questions[0][0].endswith(".\\046.\\092")
    for b in range(256):  # each byte alone, as a whole name
        assert_same(header(1, 0) + question(bytes([1, b, 0])))


@built
def test_reserved_label_types() -> None:
    for kind in (0x40, 0x41, 0x7F, 0x80, 0xBF):
        assert assert_same(header(1, 0) + question(bytes([kind, 0]))) == "malformed"
        m = assert_same(header(1, 1) + question(b"\x00") + record(bytes([kind, 0]), 1, bytes(4)))
        assert isinstance(m, DnsMessage) and m.truncated
        m = assert_same(header(1, 0) + question(b"\x01a" + bytes([kind]) + b"\x00"))
        assert m == "malformed"


@built
def test_record_counts_at_and_past_the_limit() -> None:
    first = question(dns_name("q.example"))
    for qd in (511, 512, 513, 0xFFFF):
        msg = header(qd, 0) + first + question(ptr(12)) * (qd - 1)
        m = assert_same(msg)
        assert isinstance(m, DnsMessage) is (qd <= 512)
        assert_same(msg[: len(msg) // 2])  # fewer questions than counted
    for an in (511, 512, 513, 0xFFFF):
        msg = header(1, an) + first + record(ptr(12), 1, bytes([1, 2, 3, 4])) * an
        m = assert_same(msg)
        assert isinstance(m, DnsMessage) is (an <= 512)
        assert_same(msg[: len(msg) // 2])
    for qd, an in ((512, 512), (513, 0), (0, 513)):
        assert_same(header(qd, an))


@built
def test_addresses_of_the_wrong_length_are_not_decoded() -> None:
    for rtype in (1, 28):
        for size in range(0, 21):
            rdata = bytes(range(1, size + 1))
            msg = header(1, 2) + question(dns_name("a.example"))
            msg += record(ptr(12), rtype, rdata) + record(ptr(12), rtype, rdata)
            m = assert_same(msg)
            assert isinstance(m, DnsMessage)
            assert (m.answers[0].value is not None) is (size == (4 if rtype == 1 else 16))
            assert_same(msg[:-1])


@built
def test_every_address_text() -> None:
    """IPv4 with 1-, 2- and 3-digit bytes; IPv6 with every pattern of zero groups (where ``::``
    goes, and the IPv4-mapped and IPv4-compatible forms)."""
    v4 = [bytes([v, 255 - v, v // 3, 9]) for v in range(256)]
    msg = (
        header(1, len(v4)) + question(dns_name("v4")) + b"".join(record(ptr(12), 1, a) for a in v4)
    )
    assert_same(msg)
    for fill in (0x0001, 0xFFFF, 0x0A0B, 0xFFFE, 0x0100):
        v6 = [
            struct.pack("!8H", *(0 if mask >> i & 1 else fill for i in range(8)))
            for mask in range(256)
        ]
        v6 += [struct.pack("!8H", 0, 0, 0, 0, 0, 0xFFFF, fill, fill)]
        v6 += [struct.pack("!8H", 0, 0, 0, 0, 0, 0, 0, fill), struct.pack("!8H", *[0] * 8)]
        body = b"".join(record(ptr(12), 28, a) for a in v6)
        m = assert_same(header(1, len(v6)) + question(dns_name("v6")) + body)
        assert isinstance(m, DnsMessage) and len(m.answers) == len(v6)


@built
def test_name_targets_read_past_their_rdata() -> None:
    for rtype in (2, 5, 12):
        base = header(1, 2) + question(dns_name("a.example"))
        cases = [
            base + record(ptr(12), rtype, b"") + record(ptr(12), 1, bytes(4)),
            base + record(ptr(12), rtype, b"\x04long", rdlen=2) + b"\x07example\x00",
            base + record(ptr(12), rtype, ptr(12), rdlen=1) + record(ptr(12), 1, bytes(4)),
            base + record(ptr(12), rtype, b"\x05ab", rdlen=3),  # past the message
            base + record(ptr(12), rtype, b"\x05ab", rdlen=9),
            base + record(ptr(12), rtype, ptr(0x3000)),
            base + record(ptr(12), rtype, b"\x80"),
        ]
        for msg in cases:
            assert_same(msg)
            assert_same_cut(msg)


@built
def test_https_and_svcb_parameters() -> None:
    base = header(1, 2) + question(dns_name("svc.example"))
    after = record(ptr(12), 1, bytes([10, 0, 0, 9]))
    rdatas: list[bytes] = [b"", b"\x00", b"\x00\x01", b"\x00\x01\x00"]
    for key in (4, 6, 1, 0, 0xFFFF):
        for size in (0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48):
            rdatas.append(svcb_rdata(1, "t.example", [(key, bytes(range(10, 10 + size)))]))
    rdatas += [
        svcb_rdata(1, "", [(4, bytes(8)), (6, bytes(16)), (4, bytes([1, 1, 1, 1]))]),
        svcb_rdata(1, "t", [(4, bytes(4))]) + b"\x00",  # leftovers shorter than a parameter
        svcb_rdata(1, "t", [(4, bytes(4))]) + b"\x00\x04\x00",
        svcb_rdata(1, "t", []) + b"\x00\x04\x00\x08\x01\x02\x03\x04",  # runs past the record
        svcb_rdata(1, "t", []) + b"\x00\x06\xff\xff",
        b"\x00\x01" + ptr(12) + struct.pack("!HH", 4, 4) + bytes([8, 8, 4, 4]),
        b"\x00\x01" + b"\x01",  # the target runs past the rdata
    ]
    for rtype in (64, 65):
        for rdata in rdatas:
            for size in (len(rdata), len(rdata) - 1, len(rdata) + 1, 3):
                if size < 0:
                    continue
                msg = base + record(ptr(12), rtype, rdata, rdlen=size) + after
                assert_same(msg)
                assert_same(msg[: len(msg) - len(after)])
    m = assert_same(base + record(ptr(12), 65, rdatas[-7]) + after)
    assert isinstance(m, DnsMessage)
    assert m.answers[0].hints == ("0.0.0.0", "0.0.0.0", "::", "1.1.1.1")


@built
def test_mdns_announcements_without_questions() -> None:
    msg = mdns_announcement()
    m = assert_same(msg)
    assert isinstance(m, DnsMessage) and not m.questions and len(m.answers) == 5
    assert_same_cut(msg)
    bad_first = header(0, 2, flags=0x8400) + record(b"\x40", 1, bytes(4)) * 2
    assert assert_same(bad_first) == "malformed"
    bad_second = header(0, 2, flags=0x8400) + record(b"\x00", 1, bytes(4)) + b"\x40"
    m = assert_same(bad_second)
    assert isinstance(m, DnsMessage) and m.truncated and len(m.answers) == 1


@built
def test_header_fields_at_their_extremes() -> None:
    for ident, flags in ((0, 0), (0xFFFF, 0xFFFF), (0x8000, 0x7FFF), (1, 0x8000)):
        for ttl in (0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF):
            answer = b"\x00" + struct.pack("!HHIH", 0xFFFF, 0xFFFF, ttl, 2) + b"\xff\xff"
            msg = header(1, 1, ident=ident, flags=flags) + question(b"\x00", 0xFFFF) + answer
            m = assert_same(msg)
            assert isinstance(m, DnsMessage) and m.answers[0].ttl == ttl
    for n in range(13):
        assert_same(bytes(n))
        assert_same(b"\xff" * n)


@built
def test_long_messages_with_names_out_of_pointer_reach() -> None:
    """Past offset 0x3FFF no pointer reaches a name: the compiled cache leaves those out."""
    pad = record(ptr(12), 16, bytes(20000)) + record(ptr(12), 16, bytes(65535))
    msg = (
        header(1, 6)
        + question(dns_name("a.example"))
        + pad
        + record(dns_name("far.example"), 5, dns_name("cname.far"))
        + record(ptr(12), 12, ptr(0x3FFF))
        + record(ptr(0x3FFF), 1, bytes(4))
        + record(ptr(12), 1, bytes(4))
    )
    m = assert_same(msg)
    assert isinstance(m, DnsMessage) and len(m.answers) >= 3
    assert_same(msg[:20050])


def far_names() -> tuple[bytes, list[str]]:
    """Names at offsets whose pointers use each bit of the 14-bit offset (0x010C shares its
    low byte with 12, 0x210C its low 13 bits with 0x010C, 0x3FF0 is near the end of reach),
    each reached by a pointer from the cache and by one followed after a label; and what the
    owner names of the answers should be."""
    msg = bytearray(question(dns_name("a.example")))
    count = 0
    owners: list[str] = []

    def add(owner: bytes, rtype: int, rdata: bytes, text: str) -> None:
        nonlocal count
        msg.extend(record(owner, rtype, rdata))
        owners.append(text)
        count += 1

    for at, name in ((0x010C, "b.example"), (0x210C, "c.example"), (0x3FF0, "d.example")):
        add(ptr(12), 16, bytes(at - 12 - len(msg) - 12), "a.example")  # up to `at`
        add(dns_name(name), 1, bytes([10, 0, 0, count]), name)
        add(ptr(at), 1, bytes([10, 0, 1, count]), name)
        add(b"\x03www" + ptr(at), 5, ptr(at), "www." + name)
    return header(1, count) + bytes(msg), owners


@built
def test_pointers_to_far_offsets() -> None:
    msg, owners = far_names()
    m = assert_same(msg)
    assert isinstance(m, DnsMessage) and not m.truncated
    assert [r.name for r in m.answers] == owners


# ----------------------------------------------------------------------------- hypothesis


@st.composite
def dns_like(draw: st.DrawFn) -> bytes:
    """A header with small counts, then pieces of names (labels, pointers to the first bytes,
    the end) and records (types the parser decodes, lengths near the truth)."""
    head = header(
        draw(st.integers(0, 3)),
        draw(st.integers(0, 5)),
        ident=draw(st.integers(0, 0xFFFF)),
        flags=draw(st.sampled_from([0x0100, 0x8180, 0x8400, 0xFFFF])),
    )
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(0, 24))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            pieces.append(dns_name(draw(st.sampled_from(["a", "example.com", "x.local", ""]))))
        elif kind == 1:
            pieces.append(ptr(draw(st.integers(0, 120))))
        elif kind == 2:
            label = draw(st.binary(max_size=12))
            pieces.append(bytes([len(label)]) + label)
        elif kind == 3:
            rtype = draw(st.sampled_from([1, 2, 5, 12, 16, 28, 64, 65]))
            rdlen = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 8, 16, 20]))
            pieces.append(struct.pack("!HHIH", rtype, 1, 60, rdlen))
        elif kind == 4:
            pieces.append(
                struct.pack("!HH", draw(st.sampled_from([4, 6, 1])), draw(st.integers(0, 20)))
            )
        else:
            pieces.append(draw(st.binary(max_size=8)))
    return head + b"".join(pieces)


def seeds() -> list[bytes]:
    out = hand_built()
    if SHARED_CAPTURES.is_dir():
        out += list(real_messages())
    return out


@built
@FAST
@given(st.data())
def test_mutated_messages(data: st.DataObject) -> None:
    assert_same(data.draw(mutated(seeds())))


@built
@FAST
@given(dns_like())
def test_generated_messages(msg: bytes) -> None:
    assert_same(msg)


@built
@FAST
@given(st.binary(max_size=300))
def test_random_bytes(msg: bytes) -> None:
    assert_same(msg)
    assert_same(header(1, 2) + msg)


# ------------------------------------------------------------------- objects and arguments


@built
def test_the_records_built_in_c_are_ordinary_instances() -> None:
    m = compiled.parse(hand_built()[3])
    assert type(m) is DnsMessage and m == _parse_dns_python(hand_built()[3])
    assert pickle.loads(pickle.dumps(m)) == m  # noqa: S301 - our own bytes
    r = m.answers[0]
    assert dataclasses.replace(r, ttl=1).ttl == 1 and r.ttl == 300
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.ttl = 1  # type: ignore[misc]
    assert {m: 1}[_parse_dns_python(hand_built()[3])] == 1


@built
def test_parse_dns_is_the_compiled_parser_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    msg = hand_built()[2]
    monkeypatch.setattr(dns_parser, "_dns_compiled", compiled)
    assert parse_dns(msg) == _parse_dns_python(msg)
    calls: list[bytes] = []
    monkeypatch.setattr(dns_parser, "_parse_dns_python", lambda m: calls.append(m))
    parse_dns(msg)
    assert not calls
    monkeypatch.setattr(dns_parser, "_dns_compiled", None)
    parse_dns(msg)
    assert calls == [msg]


@built
@pytest.mark.parametrize("bad", [None, "www.example.com", 12, 1.5, [1, 2], object()])
def test_arguments_that_are_not_bytes(bad: object) -> None:
    with pytest.raises(TypeError):
        compiled.parse(bad)  # type: ignore[arg-type]


@built
def test_arguments_in_the_wrong_number_or_layout() -> None:
    with pytest.raises(TypeError):
        compiled.parse()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        compiled.parse(b"", b"")  # type: ignore[call-arg]
    with pytest.raises(BufferError):  # as the Python parser
        compiled.parse(memoryview(bytes(64))[::2])
    with pytest.raises(BufferError):
        _parse_dns_python(memoryview(bytes(64))[::2])  # type: ignore[arg-type]


@built
def test_setup_checks_its_classes_and_keeps_the_old_ones_when_they_are_wrong() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Other:
        name: str

    R, M, E = DnsResource, DnsMessage, MalformedError
    bad: Iterable[tuple[Any, ...]] = [
        (),
        (R, M),
        (1, M, E),
        (R, M, 3),
        (R, M, int),
        (int, M, E),
        (Other, M, E),
        (R, Other, E),
        (M, R, E),
        (R, R, E),
    ]
    for args in bad:
        with pytest.raises(TypeError):
            compiled.setup(*args)
    assert_same(hand_built()[2])
    compiled.setup(R, M, E)
    assert_same(hand_built()[2])


def test_parse_before_setup_and_the_pure_python_switch() -> None:
    if compiled is None:
        pytest.skip("the compiled DNS parser is not built")
    code = (
        "from auditor.packets import _dns\n"
        "try:\n    _dns.parse(bytes(12))\nexcept RuntimeError as e:\n    print('refused', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("refused")
    env = dict(os.environ, AUDITOR_PURE_PYTHON_SCAN="1")
    code = "from auditor.packets import dns\nprint(dns.DNS_PARSER, dns._dns_compiled)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["python", "None"]


# ------------------------------------------------------------- many messages: collect()


def _dns_job(msgs: list[bytes]) -> N.NameJob:
    """The messages as the UDP DNS packets of one job (flows of 3 packets each, the first
    packet of each flow sent by its lower side)."""
    n = len(msgs)
    return N.NameJob(
        kind=np.full(n, N.KIND_DNS, dtype=np.int8),
        flow=np.arange(n, dtype=np.int64) // 3,
        direction=(np.arange(n) % 2).astype(np.int8),
        seq=np.zeros(n, dtype=np.int64),
        ts=1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000,
        tcp=np.zeros(n, dtype=bool),
        order=np.arange(n, dtype=np.int64),
        ends=np.cumsum([len(m) for m in msgs]).astype(np.int64),
        blob=b"".join(msgs),
        dns=np.arange(n, dtype=np.int64),
    )


def _hints(r: N.NameResult) -> list[tuple[int, int, int]]:
    """A NameResult's client sides as (flow, packet order, side), comparable."""
    return sorted(zip(*(a.tolist() for a in r.hints), strict=True))


def _names(r: N.NameResult) -> dict[str, list[tuple[int, str, str]]]:
    """A NameResult's names as kind -> [(flow, values joined, first)], comparable."""
    return {k: sorted(zip(*(a.tolist() for a in c), strict=True)) for k, c in r.names.items()}


def collected(msgs: list[bytes], compiled_path: bool) -> tuple[object, ...]:
    """What a NameCollector learns from the messages: by _dns.collect or message by message
    with the Python parser."""
    was = N._dns_compiled
    if not compiled_path:
        N._dns_compiled = None
    try:
        c = N.NameCollector()
        c.feed(_dns_job(msgs))
        r = c.result()
    finally:
        N._dns_compiled = was
    d = r.dns
    return d.python_rows(), _hints(r), d.name_addrs(), d.python_answered(), r.warnings


@built
def test_collect_is_the_message_by_message_path_on_the_real_captures() -> None:
    msgs = list(real_or_skip())
    fast = collected(msgs, True)
    assert fast[0] and fast[2]  # rows and names: not an empty comparison
    assert fast == collected(msgs, False)


@built
def test_collect_on_hand_built_cut_and_mutated_messages() -> None:
    import random

    rng = random.Random(5)
    base = hand_built() + list(real_messages())[:200]
    msgs = list(base)
    for m in base:
        msgs.append(m[: rng.randrange(len(m) + 1)])
        b = bytearray(m)
        for _ in range(3):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        msgs.append(bytes(b))
    fast = collected(msgs, True)
    assert fast[4].get("dns-malformed")  # some of them are damaged
    assert fast == collected(msgs, False)


def _case_swapped(m: bytes) -> bytes:
    """The message with its letters after the header in the other case (a name asked in
    capitals, as DNS 0x20 randomisation sends it; lengths and data may change too)."""
    return m[:12] + bytes(b ^ 0x20 if b < 0x80 and chr(b).isalpha() else b for b in m[12:])


@built
def test_collect_keeps_its_index_of_texts_across_jobs_and_python_additions() -> None:
    """_dns.collect keeps the texts it made in the store, for the next job: the numbers must
    stay those the store's dict gives, also when a job in between went the Python way (a
    TCP DNS message in it) and numbered texts the index has not seen, and for names seen
    first in one case and then in the other (their lower-case's number is kept too)."""
    base = hand_built() + list(real_messages())[:300]
    msgs = [m for pair in zip(base, map(_case_swapped, base), strict=True) for m in pair]
    chunks = [msgs[k : k + 37] for k in range(0, len(msgs), 37)]

    def learnt(compiled_path: bool) -> tuple[object, ...]:
        was = N._dns_compiled
        if not compiled_path:
            N._dns_compiled = None
        try:
            c = N.NameCollector()
            for k, chunk in enumerate(chunks):
                job = _dns_job(chunk)
                if k % 3 == 1:  # its first message by TCP: the whole job goes message by message
                    job.tcp[0] = True
                    framed = len(chunk[0]).to_bytes(2, "big") + chunk[0]
                    job = _dns_job([framed, *chunk[1:]])
                    job.tcp[0] = True
                    job.flow[0] = 10_000 + k
                c.feed(job)
            r = c.result()
        finally:
            N._dns_compiled = was
        d = r.dns
        return d.python_rows(), d.name_addrs(), d.python_answered(), r.warnings, set(d.texts)

    fast, slow = learnt(True), learnt(False)
    assert fast[0] and fast[1]  # not an empty comparison
    assert any(t != t.lower() for t in fast[4])  # names in capitals were read
    assert fast[:4] == slow[:4]
    # the texts are the same but for lower-cased CNAME names, which collect numbers all of
    # (to follow chains by number) and Python only when a chain leads to an address
    assert slow[4] <= fast[4] and all(t == t.lower() for t in fast[4] - slow[4])


@built
def test_collect_index_grows_past_its_first_tables() -> None:
    """More distinct names and addresses than the index's first tables hold (4,096 slots,
    grown at half full), in several jobs, some asked twice in capitals: the same as Python."""
    msgs = []
    for k in range(3000):
        name = f"h{k}.n{k % 13}.example"
        cname = f"edge{k}.cdn.example"
        answers = [
            rr(b"\xc0\x0c", 5, dns_name(cname)),
            rr(dns_name(cname), 1, bytes([10, k >> 8 & 255, k & 255, 7])),
            rr(dns_name(cname), 28, bytes(14) + k.to_bytes(2, "big")),
        ]
        msgs.append(dns_query(k, name))
        msgs.append(dns_response(k, name if k % 3 else name.upper(), 1, answers))
    was = N._dns_compiled
    results = []
    for compiled_path in (True, False):
        if not compiled_path:
            N._dns_compiled = None
        try:
            c = N.NameCollector()
            for at in range(0, len(msgs), 1000):
                c.feed(_dns_job(msgs[at : at + 1000]))
            r = c.result()
        finally:
            N._dns_compiled = was
        d = r.dns
        results.append((d.python_rows(), d.name_addrs(), d.python_answered(), set(d.texts)))
    fast, slow = results
    assert len(fast[3]) > 12_000  # names, CNAMEs and addresses: past several growths
    assert fast == slow


@built
def test_collect_refuses_rows_outside_the_blob() -> None:
    with pytest.raises(ValueError):
        compiled.collect(b"abc", np.array([3], dtype=np.int64), np.array([1], dtype=np.int64),
                         np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                         DnsStore())  # fmt: skip
    zero = np.zeros(1, dtype=np.int64)
    with pytest.raises(TypeError):  # not a store
        compiled.collect(b"abc", np.array([3], dtype=np.int64), zero, zero, zero, object())


# ------------------------------------------------------------------- TLS ClientHello
def hello_outcome(parse: Callable[[bytes], Any], data: bytes) -> object:
    try:
        h = parse(data)
    except MalformedError:
        return "malformed"
    return (h.sni, h.alpn, h.legacy_version)


@cache
def real_hellos() -> tuple[bytes, ...]:
    """The ClientHello handshake messages that start a TCP payload in the real captures."""
    from auditor.packets import iter_packets

    out: list[bytes] = []
    for path in sorted(SHARED_CAPTURES.glob("*.pcap*")):
        for batch in iter_packets(path):
            for i in np.flatnonzero((batch.proto == 6) & (batch.payload_len > 9)):
                payload = batch.payload(int(i))
                if looks_like_client_hello_record(payload):
                    out.append(payload[5:])
    return tuple(out)


def scapy_hellos() -> list[bytes]:
    from scapy.layers.tls.extensions import (
        ProtocolName,
        ServerName,
        TLS_Ext_ALPN,
        TLS_Ext_ServerName,
    )
    from scapy.layers.tls.handshake import TLSClientHello

    out = []
    for names, protos in ((["a.example"], ["h2", "http/1.1"]), ([], []), (["é.example"], [""])):
        ext = []
        if names:
            ext.append(
                TLS_Ext_ServerName(servernames=[ServerName(servername=n.encode()) for n in names])
            )
        if protos:
            ext.append(TLS_Ext_ALPN(protocols=[ProtocolName(protocol=p.encode()) for p in protos]))
        out.append(bytes(TLSClientHello(ciphers=[0x1301], ext=ext or None)))
    return out


@built
def test_client_hello_compiled_is_the_python_parser() -> None:
    import random

    rng = random.Random(7)
    base = list(scapy_hellos())
    if SHARED_CAPTURES.is_dir():
        base += list(real_hellos())[:300]
    assert any(hello_outcome(_parse_client_hello_python, h) != "malformed" for h in base)
    cases = list(base)
    for h in base:
        cases += [h[:k] for k in sorted(rng.sample(range(len(h) + 1), min(len(h) + 1, 12)))]
        for _ in range(4):
            b = bytearray(h)
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
    outcomes = [hello_outcome(_parse_client_hello_python, c) for c in cases]
    assert "malformed" in outcomes
    assert outcomes == [hello_outcome(parse_client_hello, c) for c in cases]


@built
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_client_hello_compiled_on_random_bytes(data: bytes) -> None:
    data = b"\x01" + len(data).to_bytes(3, "big") + data
    assert hello_outcome(parse_client_hello, data) == hello_outcome(
        _parse_client_hello_python, data
    )


def _record(handshake: bytes, version: int = 1) -> bytes:
    return bytes([22, 3, version]) + len(handshake).to_bytes(2, "big") + handshake


def _tls_job(payloads: list[tuple[int, int, bytes]]) -> N.NameJob:
    """TCP payloads (flow, sequence number, bytes) that start like a ClientHello record."""
    n = len(payloads)
    return N.NameJob(
        kind=np.full(n, N.KIND_TLS, dtype=np.int8),
        flow=np.array([p[0] for p in payloads], dtype=np.int64),
        direction=np.zeros(n, dtype=np.int8),
        seq=np.array([p[1] for p in payloads], dtype=np.int64),
        ts=np.arange(n, dtype=np.int64),
        tcp=np.ones(n, dtype=bool),
        order=np.arange(n, dtype=np.int64),
        ends=np.cumsum([len(p[2]) for p in payloads]).astype(np.int64),
        blob=b"".join(p[2] for p in payloads),
        dns=np.full(n, -1, dtype=np.int64),
    )


@built
def test_whole_client_hellos_read_at_once_are_what_the_segment_path_reads() -> None:
    """NameCollector reads the ClientHellos whole in their first record with one call to
    _dns.client_hellos per job; what it learns (names, client sides, warnings, which flows
    wait for more) must be what _tls_segment alone learns, for hellos whole, cut, mutated,
    split over two records, retransmitted, other records, and flows that wait."""
    import random

    rng = random.Random(11)
    base = list(scapy_hellos())
    if SHARED_CAPTURES.is_dir():
        base += list(real_hellos())[:200]
    payloads: list[tuple[int, int, bytes]] = []
    flow = 0
    for h in base:
        flow += 1
        whole = _record(h)
        payloads.append((flow, 100, whole))
        payloads.append((flow, 100, whole))  # a retransmission
        flow += 1
        payloads.append((flow, 7, whole[: rng.randrange(1, len(whole))]))  # cut: it waits
        payloads.append((flow, 9, _record(h)))  # a whole one on a flow that waits
        flow += 1
        b = bytearray(whole)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(5, len(b))] = rng.randrange(256)
        payloads.append((flow, 1, bytes(b)))
        flow += 1
        cut = len(h) // 2
        payloads.append((flow, 1, _record(h[:cut]) + _record(h[cut:])))  # two records
        flow += 1
        payloads.append((flow, 1, b"\x17\x03\x03\x00\x05hello"))  # not a handshake record
        flow += 1
        payloads.append((flow, 1, b"\x16\x03\x01\x00"))  # shorter than a record header
    rng.shuffle(payloads)  # flows interleaved; each flow's payloads keep their order below
    payloads.sort(key=lambda p: p[0] % 7)
    jobs = [payloads[k : k + 50] for k in range(0, len(payloads), 50)]

    def learnt(compiled_path: bool) -> tuple[object, ...]:
        was = N._dns_compiled
        if not compiled_path:
            N._dns_compiled = None
        try:
            c = N.NameCollector()
            for chunk in jobs:
                c.feed(_tls_job(chunk))
            waiting = sorted(c._tls)
            r = c.result()
        finally:
            N._dns_compiled = was
        return _names(r), _hints(r), r.warnings, waiting

    fast = learnt(True)
    assert len(fast[0].get(N.NAME_SNI, [])) > 3  # names were read
    assert fast[2] and fast[3]  # damaged hellos were counted, cut ones wait
    assert fast == learnt(False)

"""Hostile input: random bytes, random records behind valid headers, mutated real and
generated captures, payloads shaped to reach the deep dissectors. Nothing may raise but
PcapError (for input that is not a capture); damage is counted in warnings."""

from __future__ import annotations

import io
import struct
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.packets import PcapError, read_capture
from auditor.packets.dns import parse_dns
from auditor.packets.flows import CaptureResult
from auditor.packets.http1 import parse_http_request
from auditor.packets.quic import CryptoStream, crypto_frames, parse_long_header
from auditor.packets.tls import client_hello_from_records, parse_client_hello
from auditor.packets.wire import MalformedError
from tests.packets.helpers import (
    SHARED_CAPTURES,
    epb,
    ether,
    idb,
    ipv4,
    ipv6,
    pcap,
    quic_initials,
    shb,
    tcp,
    udp,
)

FAST = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
LINKS = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]


def _read(data: bytes) -> CaptureResult | None:
    try:
        r = read_capture(io.BytesIO(data), chunk_size=4096, workers=0)
    except PcapError:
        return None
    assert r.counts.get("packets", 0) == len(r.packets)
    return r


@FAST
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    _read(data)


@FAST
@given(
    st.sampled_from(
        [b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"]
    ),
    st.sampled_from(LINKS),
    st.binary(max_size=4000),
)
def test_random_records_behind_a_pcap_header(magic: bytes, link: int, body: bytes) -> None:
    order = "<" if magic[0] in (0xD4, 0x4D) else ">"
    head = magic + struct.pack(order + "HHiIII", 2, 4, 0, 0, 65535, link)
    assert _read(head + body) is not None


@FAST
@given(st.sampled_from(LINKS), st.lists(st.binary(max_size=300), max_size=20))
def test_random_frames_of_every_link_type(link: int, frames: list[bytes]) -> None:
    r = _read(pcap([(i, f) for i, f in enumerate(frames)], link))
    assert r is not None and r.counts.get("packets", 0) == len(frames)


@FAST
@given(st.sampled_from(["<", ">"]), st.sampled_from(LINKS), st.binary(max_size=3000))
def test_random_blocks_behind_a_pcapng_header(order: str, link: int, body: bytes) -> None:
    assert _read(shb(order) + idb(order, link) + body) is not None


def _payloads() -> st.SearchStrategy[bytes]:
    """Transport payloads that look enough like a name carrier to be dissected deeply."""
    return st.one_of(
        st.binary(max_size=400).map(lambda b: b"\x16\x03\x01" + b[:2] + b"\x01" + b[2:]),
        st.binary(max_size=1300).map(lambda b: b"\xc0\x00\x00\x00\x01\x08" + b),
        st.binary(max_size=1300).map(lambda b: b"\xd0\x6b\x33\x43\xcf\x08" + b),
        st.binary(max_size=200).map(lambda b: b"GET / HTTP/1.1\r\n" + b),
        st.binary(max_size=300).map(lambda b: b"\x00\x01\x01\x00\x00\x01" + b),  # DNS
    )


@FAST
@given(st.lists(st.tuples(st.sampled_from([53, 443, 80, 5353]), st.booleans(), _payloads()),
                min_size=1, max_size=12))  # fmt: skip
def test_shaped_payloads_reach_the_dissectors(items: list[tuple[int, bool, bytes]]) -> None:
    frames = []
    for i, (port, is_tcp, payload) in enumerate(items):
        l4 = tcp(40000, port, payload, seq=i * 7) if is_tcp else udp(40000, port, payload)
        frames.append((i, ether(ipv4("10.0.0.2", "10.0.0.1", 6 if is_tcp else 17, l4))))
    r = _read(pcap(frames, 1))
    assert r is not None and len(r.flows) >= 1


@cache
def _seeds() -> list[bytes]:
    from tests.packets.test_flows import scenario, write

    seeds = [write(scenario(), 1, "pcap-le-ns"), write(scenario(), 276, "pcapng-be")]
    if SHARED_CAPTURES.is_dir():
        for name in ("pcapdroid_two_flows.pcap", "apksherlock_capture.pcap",
                     "pcapdroid_invalid_or_unsupported.pcap"):  # fmt: skip
            seeds.append((SHARED_CAPTURES / name).read_bytes())
    return seeds


@FAST
@given(
    st.integers(min_value=0, max_value=4),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
             min_size=1, max_size=40),
    st.one_of(st.none(), st.integers(min_value=0)),
)  # fmt: skip
def test_mutated_captures(which: int, flips: list[tuple[int, int]], cut: int | None) -> None:
    seeds = _seeds()
    data = bytearray(seeds[which % len(seeds)])
    keep = 24 if data[:4] != b"\x0a\x0d\x0d\x0a" else 0  # leave a pcap header whole
    for pos, value in flips:
        data[keep + pos % (len(data) - keep)] = value
    if cut is not None:
        data = data[: max(keep, cut % len(data))]
    r = _read(bytes(data))
    if keep:
        assert r is not None  # still a capture: damage is counted, not raised


@FAST
@given(st.binary(max_size=600))
def test_name_parsers_raise_only_malformed(data: bytes) -> None:
    for parse in (parse_dns, parse_client_hello, client_hello_from_records,
                  parse_http_request, crypto_frames, parse_long_header):  # fmt: skip
        try:
            parse(data)  # type: ignore[operator]
        except MalformedError:
            pass
    stream = CryptoStream()
    try:
        stream.add(0, data)
        stream.client_hello()
    except MalformedError:
        pass


@FAST
@given(st.integers(min_value=0, max_value=1199), st.integers(min_value=1, max_value=255))
def test_a_damaged_quic_initial_is_counted(pos: int, xor: int) -> None:
    datagram = bytearray(quic_initials("fuzz.example")[0])
    datagram[pos] ^= xor
    frame = ether(ipv6("2001:db8::1", "2001:db8::2", 17, udp(1, 443, bytes(datagram))), 0x86DD)
    r = _read(pcap([(0, frame)], 1))
    assert r is not None
    found = set(r.flows["quic_sni"].dropna())
    assert found <= {"fuzz.example"}
    still_initial = not (pos == 0 and xor & 0xF0) and not (1 <= pos <= 4)
    if not found and still_initial:
        assert r.warnings, "a lost name must be explained by a warning"
    if 1 <= pos <= 4 and not found:
        version = int.from_bytes(datagram[1:5], "big")
        assert version == 0 or r.warnings["quic-unsupported-version"] == 1


def test_the_invalid_real_capture_is_survived(shared_captures: object) -> None:
    r = _read((SHARED_CAPTURES / "pcapdroid_invalid_or_unsupported.pcap").read_bytes())
    assert r is not None
    assert r.warnings["ip-fragment"] > 0 and r.warnings["truncated-ip-header"] == 1


@pytest.mark.parametrize("data", [epb("<", 0, 0, b"x"), b"\x0a\x0d\x0d\x0a" + b"\xff" * 40])
def test_pcapng_without_a_section_header(data: bytes) -> None:
    with pytest.raises(PcapError):
        read_capture(io.BytesIO(data))

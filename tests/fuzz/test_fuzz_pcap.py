"""pcap and pcapng (``auditor.packets.pcapfile`` through ``read_capture``, which also runs the
decoder and the name dissectors): random bytes, random records and blocks behind valid
headers, payloads shaped for the dissectors, and mutated real captures read in chunks of
random sizes. Only PcapError (not a capture) may escape; damage is counted in warnings.
The compiled record walk (``_scan.c``) and the Python walk must give the same records and
warnings for every input, cut into any chunk and read-piece sizes; the compiled decoder and
flow table (``_decode.c``, ``_flowtab.c``) the same flow, DNS and packet tables as the numpy
code they replace.

The builders and shaped payloads are those of ``tests/packets`` (its ``test_fuzz`` runs a
fixed small number of the same kinds of input); this module adds the real captures of
``/work/shared/captures`` and the long runs."""

from __future__ import annotations

import io
import struct
from functools import cache

import pytest
from hypothesis import example
from hypothesis import strategies as st

from auditor.packets import PcapError, decode, pcapfile, read_capture
from auditor.packets import flows as F
from auditor.packets.dns import DNS_PARSER, _parse_dns_python, parse_dns
from auditor.packets.flows import CaptureResult
from auditor.packets.http1 import parse_http_request
from auditor.packets.quic import crypto_frames, parse_long_header
from auditor.packets.tls import client_hello_from_records, parse_client_hello
from auditor.packets.wire import MalformedError
from tests.fuzz.helpers import fuzz, mutated, shared_captures
from tests.packets.helpers import (
    block,
    dns_query,
    dns_response,
    ether,
    idb,
    ipv4,
    pcap,
    rr,
    shb,
    svcb_rdata,
    tcp,
    udp,
)
from tests.packets.test_fuzz import LINKS, _payloads
from tests.packets.test_scan import records

try:
    from auditor.packets import _scan as compiled_walk
except ImportError:
    compiled_walk = None
COMPILED_TABLES = decode._compiled is not None and F._flowtab is not None

_chunks = st.sampled_from([64, 100, 4096, 65536])


def _read(data: bytes, chunk_size: int = 4096, keep: bool = True) -> CaptureResult | None:
    try:
        r = read_capture(io.BytesIO(data), chunk_size=chunk_size, workers=0, keep_packets=keep)
    except PcapError:
        return None
    if keep:
        assert r.counts.get("packets", 0) == len(r.packets)
    return r


@fuzz(st.binary(max_size=3000), _chunks, share=0.1)
def test_random_bytes(data: bytes, chunk_size: int) -> None:
    _read(data, chunk_size)


_MAGICS = [b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"]


@fuzz(
    st.sampled_from(_MAGICS),
    st.sampled_from(LINKS),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=3000),
    _chunks,
    share=0.1,
)
def test_random_records_behind_a_pcap_header(
    magic: bytes, link: int, snaplen: int, body: bytes, chunk_size: int
) -> None:
    order = "<" if magic[0] in (0xD4, 0x4D) else ">"
    head = magic + struct.pack(order + "HHiIII", 2, 4, 0, 0, snaplen, link)
    assert _read(head + body, chunk_size) is not None


_BLOCK_TYPES = [1, 2, 3, 4, 5, 6, 0xBAD, 0x40000BAD, 0x0A0D0D0A, 0, 0xFFFFFFFF]
_blocks = st.lists(
    st.tuples(
        st.sampled_from(_BLOCK_TYPES),
        st.binary(max_size=200),
        st.one_of(st.none(), st.sampled_from([0, 4, 11, 12, 13, 2**31, 2**32 - 1])),  # a lie
    ),
    max_size=8,
)


# if_tsresol 193 (2**-65 s) and a packet: OverflowError in the timestamp arithmetic
@example("<", 0, 193, None, [(2, b"", None)], 64)
@example(">", 1, 6, 2**62, [(6, b"\0" * 20, None)], 4096)  # if_tsoffset * 1e9 past int64
@fuzz(
    st.sampled_from(["<", ">"]),
    st.sampled_from(LINKS),
    st.one_of(st.none(), st.integers(0, 255)),
    st.one_of(
        st.none(),
        st.sampled_from([1, -1, 2**33, 2**62, -(2**63)]),
        st.integers(-(2**63), 2**63 - 1),
    ),
    _blocks,
    _chunks,
    share=0.15,
)
def test_random_blocks_behind_a_pcapng_header(
    order: str,
    link: int,
    tsresol: int | None,
    tsoffset: int | None,
    blocks: list[tuple[int, bytes, int | None]],
    chunk_size: int,
) -> None:
    body = b""
    for btype, content, length in blocks:
        raw = block(order, btype, content)
        if length is not None:
            raw = raw[:4] + struct.pack(order + "I", length) + raw[8:]
        body += raw
    head = shb(order) + idb(order, link, tsresol=tsresol, tsoffset=tsoffset)
    assert _read(head + body, chunk_size) is not None


@fuzz(
    st.lists(
        st.tuples(st.sampled_from([53, 443, 80, 5353]), st.booleans(), _payloads()),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
    share=0.2,
)
def test_shaped_payloads_reach_the_dissectors(
    items: list[tuple[int, bool, bytes]], keep: bool
) -> None:
    frames = []
    for i, (port, is_tcp, payload) in enumerate(items):
        l4 = tcp(40000, port, payload, seq=i * 7) if is_tcp else udp(40000, port, payload)
        frames.append((i, ether(ipv4("10.0.0.2", "10.0.0.1", 6 if is_tcp else 17, l4))))
    assert _read(pcap(frames, 1), keep=keep) is not None


@cache
def _real() -> list[bytes]:
    """The real captures, each cut to its first 48 KiB (a cut is damage worth having too)."""
    return [p.read_bytes()[: 48 * 1024] for p in shared_captures()]


@fuzz(st.data(), _chunks, st.booleans(), share=0.25)
def test_mutated_real_captures(data: st.DataObject, chunk_size: int, keep: bool) -> None:
    seeds = _real()
    if not seeds:
        pytest.skip("real captures not present at /work/shared/captures")
    raw = data.draw(mutated(seeds, keep=24), label="capture")
    assert _read(raw, chunk_size, keep) is not None  # the pcap header is intact


@fuzz(st.binary(max_size=600), share=0.05)
def test_name_parsers(data: bytes) -> None:
    for parse in (
        parse_dns,
        parse_client_hello,
        client_hello_from_records,
        parse_http_request,
        crypto_frames,
        parse_long_header,
    ):
        try:
            parse(data)
        except MalformedError:
            pass


@fuzz(
    st.data(),
    st.sampled_from([4096, 5000, 65536]),
    st.one_of(st.none(), st.integers(1, 70_000)),
    share=0.15,
)
def test_compiled_walk_agrees_with_the_python_walk(
    data: st.DataObject, chunk_size: int, piece: int | None
) -> None:
    if compiled_walk is None:
        pytest.skip("the compiled walk is not built")
    seeds = [*_real(), pcap(_frames_for_walk(), 1), pcap(_frames_for_walk(), 1, big_endian=True)]
    raw = data.draw(st.one_of(mutated(seeds, keep=24), st.binary(max_size=3000)), label="input")
    assert records(raw, chunk_size, True, piece) == records(raw, chunk_size, False, piece)


def _tables(data: bytes, chunk_size: int, compiled: bool) -> object:
    """Every table and count of a read, by the compiled decoder and flow table or by numpy."""
    saved = decode._compiled
    if not compiled:
        decode._compiled = None
    try:
        try:
            reader = pcapfile.CaptureReader(io.BytesIO(data), chunk_size=chunk_size)
        except PcapError as exc:
            return str(exc)
        decoder = decode.Decoder()
        analyzer = F.CaptureAnalyzer(compiled=compiled)
        for rb in reader:
            analyzer.feed(decoder.decode(rb))
        flows, dns, found = analyzer.finish()
        answers, names = F._answers_table(found), found.name_addrs()
        packets = analyzer.packets_frame(decoder.apps)
    finally:
        decode._compiled = saved
    frames = tuple(f.to_dict("list") for f in (flows, dns, answers, packets))
    dtypes = tuple(f.dtypes.astype(str).tolist() for f in (flows, dns, answers, packets))
    return frames, dtypes, names, dict(analyzer.warnings), dict(analyzer.counts), decoder.apps


@fuzz(st.data(), _chunks, share=0.15)
def test_compiled_decoder_and_flow_table_agree_with_numpy(
    data: st.DataObject, chunk_size: int
) -> None:
    if not COMPILED_TABLES:
        pytest.skip("the compiled decoder and flow table are not built")
    seeds = [*_real(), pcap(_frames_for_walk(), 1)]
    raw = data.draw(st.one_of(mutated(seeds, keep=24), st.binary(max_size=3000)), label="input")
    assert _tables(raw, chunk_size, True) == _tables(raw, chunk_size, False)


@fuzz(st.data(), share=0.05)
def test_compiled_dns_parser_agrees_with_python(data: st.DataObject) -> None:
    if DNS_PARSER != "compiled":
        pytest.skip("the compiled DNS parser is not built")
    seeds = _dns_messages()
    msg = data.draw(st.one_of(mutated(seeds, keep=12), st.binary(max_size=600)), label="message")
    results = []
    for parse in (parse_dns, _parse_dns_python):
        try:
            results.append(repr(parse(msg)))
        except MalformedError:
            results.append("MalformedError")
    assert results[0] == results[1]


@cache
def _dns_messages() -> list[bytes]:
    """The DNS payloads of the real captures, and a few built ones."""
    from auditor.packets import iter_packets

    out = [
        dns_response(7, "a.example", 1, [rr(b"\xc0\x0c", 5, b"\x01b\xc0\x0e"),
                                          rr(b"\xc0\x1b", 1, bytes(4))]),
        dns_response(8, "h.example", 65, [rr(b"\xc0\x0c", 65, svcb_rdata(
            1, "", [(4, bytes(8)), (6, bytes(16))]))]),
        dns_query(9, "q.example", 28),
    ]  # fmt: skip
    for path in shared_captures():
        for batch in iter_packets(path):
            for i in range(len(batch)):
                if batch.payload_len[i] and 53 in (batch.sport[i], batch.dport[i]):
                    out.append(batch.payload(i))
    return out


@cache
def _frames_for_walk() -> list[tuple[int, bytes]]:
    return [
        (i * 1000, ether(ipv4("10.0.0.2", "10.0.0.1", 17, udp(i, 53, b"q" * i)))) for i in range(60)
    ]

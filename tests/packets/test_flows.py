"""The flow table, DNS table and names of a capture.

One scenario (DNS, TLS with a ClientHello split and reordered, QUIC v1 and v2 Initials, HTTP,
DNS over TCP, a UDP flow that idles out, ICMP, a PCAPdroid uid) is written in every link type
and file format; the tables must come out the same from each, from any chunk size, and with or
without the worker process."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from auditor.packets import PcapError, iter_packets, read_capture
from auditor.packets import flows as F
from auditor.packets.quic import QUIC_V1, QUIC_V2
from tests.packets.helpers import (
    client_hello_body,
    dns_query,
    dns_response,
    epb,
    ether,
    idb,
    ip4,
    ipv4,
    ipv6,
    null,
    pcap,
    pcapdroid_trailer,
    quic_initials,
    rr,
    shb,
    sll,
    sll2,
    svcb_rdata,
    tcp,
    tls_records,
    udp,
)
from tests.packets.quic_encode import seal_initial

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
PHONE, PHONE6 = "10.0.0.2", "2001:db8::2"
RESOLVER = "10.0.0.1"
API, LATE, WEB, QUIC1, QUIC2 = (
    "93.184.216.34",
    "198.51.100.7",
    "203.0.113.80",
    "203.0.113.3",
    "203.0.113.4",
)
SYN, SYNACK, ACK, PSHACK, FINACK = 0x02, 0x12, 0x10, 0x18, 0x11

Packet = tuple[int, bytes]  # (ns since T0, IP packet)


def scenario() -> list[Packet]:
    p: list[Packet] = []
    t = 0

    def at(dt: float, pkt: bytes) -> None:
        nonlocal t
        t += int(dt * S)
        p.append((t, pkt))

    # a flow to LATE before any DNS answer names LATE: it stays unnamed
    at(0, ipv4(PHONE, LATE, 6, tcp(41000, 443, flags=SYN, seq=1)))
    at(0.01, ipv4(LATE, PHONE, 6, tcp(443, 41000, flags=SYNACK, seq=9, ack=2)))
    # DNS: api.example.com -> CNAME -> A API; late.example -> LATE; HTTPS hints
    q = dns_query(0x11, "api.example.com")
    at(0.1, ipv4(PHONE, RESOLVER, 17, udp(5000, 53, q)))
    answer = dns_response(0x11, "api.example.com", 1, [
        rr(b"\xc0\x0c", 5, b"\x04edge\x03cdn\xc0\x10"),
        rr(b"\xc0\x2d", 1, ip4(API)),
    ])  # fmt: skip
    at(0.01, ipv4(RESOLVER, PHONE, 17, udp(53, 5000, answer)))
    at(0.01, ipv4(PHONE, RESOLVER, 17, udp(5001, 53, dns_query(0x12, "late.example"))))
    at(0.01, ipv4(RESOLVER, PHONE, 17, udp(53, 5001, dns_response(0x12, "late.example", 1, [
        rr(b"\xc0\x0c", 1, ip4(LATE))]))))  # fmt: skip
    hints = svcb_rdata(1, "", [(4, ip4(QUIC2)), (6, bytes(15) + b"\x09")])  # target: the owner
    at(0.01, ipv4(RESOLVER, PHONE, 17, udp(53, 5002, dns_response(0x13, "h3.example", 65, [
        rr(b"\xc0\x0c", 65, hints)]))))  # fmt: skip
    # TLS to API: the ClientHello spans two segments; the second arrives first, then again
    hello = tls_records(client_hello_body("api.example.com", ["h2", "http/1.1"], padding=1600))
    cut = 1000
    at(0.1, ipv4(PHONE, API, 6, tcp(40000, 443, flags=SYN, seq=100)))
    at(0.01, ipv4(API, PHONE, 6, tcp(443, 40000, flags=SYNACK, seq=500, ack=101)))
    at(0.01, ipv4(PHONE, API, 6, tcp(40000, 443, flags=ACK, seq=101, ack=501)))
    at(0.01, ipv4(PHONE, API, 6, tcp(40000, 443, hello[cut:], flags=PSHACK, seq=101 + cut)))
    at(0.01, ipv4(PHONE, API, 6, tcp(40000, 443, hello[:cut], flags=ACK, seq=101)))
    at(0.01, ipv4(PHONE, API, 6, tcp(40000, 443, hello[cut:], flags=PSHACK, seq=101 + cut)))
    at(0.01, ipv4(API, PHONE, 6, tcp(443, 40000, b"\x16\x03\x03\x00\x02\x02\x00", seq=501)))
    at(0.01, ipv4(PHONE, API, 6, tcp(40000, 443, flags=FINACK, seq=101 + len(hello))))
    at(0.01, ipv4(API, PHONE, 6, tcp(443, 40000, flags=FINACK, seq=508)))
    # a second connection to API with no ClientHello (seen mid-stream): named by DNS
    at(0.01, ipv4(API, PHONE, 6, tcp(443, 40002, b"\x17\x03\x03\x00\x01x", seq=7)))
    # the late flow goes on after its name was answered: still not named by that answer
    at(0.01, ipv4(PHONE, LATE, 6, tcp(41000, 443, flags=ACK, seq=2)))
    # HTTP
    at(0.1, ipv4(PHONE, WEB, 6, tcp(40100, 80, flags=SYN, seq=1)))
    request = b"GET /ping HTTP/1.1\r\nHost: Web.Example:80\r\n\r\n"
    at(0.01, ipv4(PHONE, WEB, 6, tcp(40100, 80, request, seq=2)))
    # QUIC v1: ClientHello over two Initials sent in reverse order; the server answers
    for d in quic_initials("quic.example", QUIC_V1, parts=2, key_share=1300):
        at(0.01, ipv4(PHONE, QUIC1, 17, udp(50000, 443, d)))
    server = seal_initial(b"\x01\x02\x03\x04", b"\x09" * 8, QUIC_V1, 0, b"\x01")
    at(0.01, ipv4(QUIC1, PHONE, 17, udp(443, 50000, server)))
    # QUIC v2 over IPv6, on a port that is not 443
    for d in quic_initials("v2.example", QUIC_V2, dcid=b"\x55" * 12):
        at(0.01, ipv6(PHONE6, "2001:db8::443", 17, udp(50001, 8443, d)))
    # DNS over TCP, the query split over two segments
    tq = dns_query(0x21, "tcp.example", 28)
    framed = len(tq).to_bytes(2, "big") + tq
    at(0.1, ipv4(PHONE, RESOLVER, 6, tcp(40200, 53, framed[:7], seq=1)))
    at(0.01, ipv4(PHONE, RESOLVER, 6, tcp(40200, 53, framed[7:], seq=8)))
    # a UDP flow that is silent for more than the timeout, then resumes
    at(0.1, ipv4(PHONE, "192.0.2.9", 17, udp(6000, 123, b"ntp request")))
    at(200, ipv4(PHONE, "192.0.2.9", 17, udp(6000, 123, b"ntp again")))
    # ICMP
    at(0.01, ipv4(PHONE, RESOLVER, 1, b"\x08\x00\x00\x00\x00\x01\x00\x01"))
    return p


def _trailer(uid: int, app: str) -> bytes:
    return pcapdroid_trailer(uid, app)


WRAP: dict[int, Callable[[bytes], bytes]] = {
    1: lambda l3: ether(l3, 0x0800 if l3[0] >> 4 == 4 else 0x86DD),
    101: lambda l3: l3,
    113: lambda l3: sll(l3, 0x0800 if l3[0] >> 4 == 4 else 0x86DD),
    276: lambda l3: sll2(l3, 0x0800 if l3[0] >> 4 == 4 else 0x86DD),
    0: lambda l3: null(l3, 2 if l3[0] >> 4 == 4 else 30),
}


def write(packets: list[Packet], link: int = 1, fmt: str = "pcap-le-us") -> bytes:
    frames = [(T0 + t, WRAP[link](pkt)) for t, pkt in packets]
    if fmt.startswith("pcap-"):
        return pcap(frames, link, big_endian="-be-" in fmt, nano=fmt.endswith("-ns"))
    o = "<" if fmt == "pcapng-le" else ">"
    body = b"".join(epb(o, 0, ts // 1000, f) for ts, f in frames)
    return shb(o) + idb(o, link) + body


def read(data: bytes, **kw: object) -> F.CaptureResult:
    return read_capture(io.BytesIO(data), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def result() -> F.CaptureResult:
    return read(write(scenario()))


def _flow(r: F.CaptureResult, **match: object) -> pd.Series:
    rows = r.flows
    for k, v in match.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_tls_flow_with_a_split_reordered_client_hello(result: F.CaptureResult) -> None:
    f = _flow(result, **{F.SERVER_IP: API, F.CLIENT_PORT: 40000})
    assert (f[F.PROTO], f[F.CLIENT_IP], f[F.SERVER_PORT]) == ("tcp", PHONE, 443)
    assert (f[F.SNI], f[F.ALPN]) == ("api.example.com", "h2,http/1.1")
    assert (f[F.NAME], f[F.NAME_EVIDENCE]) == ("api.example.com", "tls-sni")
    assert (f[F.PACKETS_UP], f[F.PACKETS_DOWN]) == (6, 3)
    assert (f[F.SYN_SEEN], f[F.SYNACK_SEEN], f[F.ESTABLISHED], f[F.FIN_SEEN], f[F.RST_SEEN]) == (
        True, True, True, True, False)  # fmt: skip
    assert f[F.CLIENT_EVIDENCE] == "tcp-syn"
    assert f[F.DNS_NAME] == "api.example.com"
    up = [pkt for _, pkt in scenario() if pkt[12:16] == ip4(PHONE) and pkt[16:20] == ip4(API)]
    assert f[F.IP_BYTES_UP] == sum(len(pkt) for pkt in up)


def test_a_flow_without_sni_is_named_by_an_earlier_dns_answer(result: F.CaptureResult) -> None:
    f = _flow(result, **{F.CLIENT_PORT: 40002})
    assert (f[F.NAME], f[F.NAME_EVIDENCE]) == ("api.example.com", "dns-answer")
    assert pd.isna(f[F.SNI])
    assert (f[F.CLIENT_IP], f[F.SERVER_IP], f[F.CLIENT_EVIDENCE]) == (PHONE, API, "port")
    assert not f[F.SYN_SEEN] and not f[F.ESTABLISHED]


def test_a_dns_answer_after_the_flow_began_does_not_name_it(result: F.CaptureResult) -> None:
    f = _flow(result, **{F.SERVER_IP: LATE})
    assert (f[F.NAME], f[F.NAME_EVIDENCE]) == (LATE, "ip")
    assert pd.isna(f[F.DNS_NAME])
    assert (f[F.PACKETS_UP], f[F.PACKETS_DOWN]) == (2, 1)


def test_http_host(result: F.CaptureResult) -> None:
    f = _flow(result, **{F.SERVER_IP: WEB})
    assert (f[F.HTTP_HOST], f[F.NAME], f[F.NAME_EVIDENCE]) == (
        "Web.Example:80",
        "web.example",
        "http-host",
    )


def test_quic_v1_and_v2(result: F.CaptureResult) -> None:
    v1 = _flow(result, **{F.SERVER_IP: QUIC1})
    assert (v1[F.QUIC_SNI], v1[F.QUIC_ALPN], v1[F.NAME_EVIDENCE]) == (
        "quic.example",
        "h3",
        "quic-sni",
    )
    assert (v1[F.CLIENT_IP], v1[F.PACKETS_UP], v1[F.PACKETS_DOWN]) == (PHONE, 2, 1)
    assert v1[F.CLIENT_EVIDENCE] == "payload"
    v2 = _flow(result, **{F.SERVER_IP: "2001:db8::443"})
    assert (v2[F.QUIC_SNI], v2[F.IP_VERSION], v2[F.SERVER_PORT]) == ("v2.example", 6, 8443)
    assert v2[F.CLIENT_IP] == PHONE6


def test_dns_table(result: F.CaptureResult) -> None:
    dns = result.dns
    queries = dns[~dns[F.RESPONSE]]
    assert queries[F.QNAME].tolist() == ["api.example.com", "late.example", "tcp.example"]
    assert queries[F.QTYPE].tolist() == ["A", "A", "AAAA"]
    assert queries[F.TRANSPORT].tolist() == ["udp", "udp", "tcp"]
    first = dns.iloc[1]
    assert (first[F.CLIENT_IP], first[F.SERVER_IP], first[F.SERVER_PORT]) == (PHONE, RESOLVER, 53)
    assert (first[F.RCODE], first[F.DNS_ID], first[F.DNS_PROTOCOL]) == ("NOERROR", 0x11, "dns")
    assert [(n, t, v) for n, t, _ttl, v, _h in result.answers_of(1)] == [
        ("api.example.com", "CNAME", "edge.cdn.example.com"),
        ("edge.cdn.example.com", "A", API),
    ]
    assert result.answers_of(0) == []  # the question has none
    assert list(result.dns_answers.columns) == list(F.DNS_ANSWER_COLUMNS)
    assert str(dns[F.DNS_TS].iloc[0].tz) == "UTC"


def test_names_map(result: F.CaptureResult) -> None:
    assert result.names == {
        "api.example.com": (API,),
        "edge.cdn.example.com": (API,),
        "h3.example": (QUIC2, "::9"),
        "late.example": (LATE,),
    }


def test_udp_flows_idle_out_and_icmp_is_a_flow(result: F.CaptureResult) -> None:
    ntp = result.flows[result.flows[F.SERVER_PORT] == 123]
    assert len(ntp) == 2 and ntp[F.PACKETS_UP].tolist() == [1, 1]
    assert ntp[F.FIRST_SEEN].iloc[1] - ntp[F.LAST_SEEN].iloc[0] > pd.Timedelta(seconds=120)
    one = read(write(scenario()), udp_timeout=1000)
    assert len(one.flows[one.flows[F.SERVER_PORT] == 123]) == 1
    icmp = _flow(result, **{F.PROTO: "icmp"})
    assert (icmp[F.CLIENT_PORT], icmp[F.SERVER_IP]) == (0, RESOLVER)


def test_every_packet_is_accounted_for(result: F.CaptureResult) -> None:
    pk = result.packets
    assert len(pk) == len(scenario()) == result.counts["packets"]
    in_flows = int((pk[F.FLOW_ID] >= 0).sum())
    assert in_flows == int(result.flows[F.PACKETS_UP].sum() + result.flows[F.PACKETS_DOWN].sum())
    assert in_flows == len(pk)
    assert result.warnings == {}
    # flow ids follow the first packet of each flow
    firsts = pk.groupby(F.FLOW_ID)["packet"].min()
    assert firsts.is_monotonic_increasing and list(firsts.index) == list(range(len(result.flows)))


@pytest.mark.parametrize(
    ("link", "fmt"),
    [(1, "pcap-be-ns"), (101, "pcap-le-ns"), (113, "pcap-be-us"), (276, "pcapng-le"),
     (0, "pcapng-be"), (1, "pcapng-be")],
)  # fmt: skip
def test_every_link_type_and_format_gives_the_same_tables(
    result: F.CaptureResult, link: int, fmt: str
) -> None:
    other = read(write(scenario(), link, fmt))
    cols = [c for c in F.FLOW_COLUMNS if c != F.LINK_TYPE]
    pd.testing.assert_frame_equal(other.flows[cols], result.flows[cols])
    pd.testing.assert_frame_equal(other.dns, result.dns)
    assert other.names == result.names
    assert other.link_types == (link,)
    assert other.warnings == {}


@pytest.mark.parametrize("chunk", [4096, 9000])
def test_chunk_size_does_not_matter(result: F.CaptureResult, chunk: int) -> None:
    other = read(write(scenario()), chunk_size=chunk)
    pd.testing.assert_frame_equal(other.flows, result.flows)
    pd.testing.assert_frame_equal(other.dns, result.dns)
    pd.testing.assert_frame_equal(other.packets, result.packets)


def test_the_worker_process_gives_the_same_result(result: F.CaptureResult, tmp_path: Path) -> None:
    path = tmp_path / "s.pcap"
    path.write_bytes(write(scenario()))
    other = read_capture(path, workers=1, chunk_size=4096)
    pd.testing.assert_frame_equal(other.flows, result.flows)
    pd.testing.assert_frame_equal(other.dns, result.dns)
    assert other.names == result.names and other.warnings == result.warnings
    assert other.source == str(path)


def test_streaming_without_the_packet_table(result: F.CaptureResult) -> None:
    other = read(write(scenario()), keep_packets=False)
    assert len(other.packets) == 0
    pd.testing.assert_frame_equal(other.flows, result.flows)
    batches = list(iter_packets(io.BytesIO(write(scenario())), chunk_size=4096))
    assert sum(len(b) for b in batches) == len(scenario()) and len(batches) > 1


def test_pcapdroid_uid_and_app_reach_the_flows() -> None:
    frames = []
    for i, (uid, app) in enumerate([(10123, "com.example.app")] * 2 + [(1000, "android")]):
        l3 = ipv4(PHONE, API if uid > 1000 else LATE, 6, tcp(40000 + (uid == 1000), 443, b"x" * i))
        frames.append((T0 + i, ether(l3) + bytes(-(14 + len(l3)) % 4) + _trailer(uid, app)))
    r = read(pcap(frames))
    assert r.flows[[F.UID, F.APP]].astype(str).values.tolist() == [
        ["10123", "com.example.app"],
        ["1000", "android"],
    ]
    assert r.packets[F.APP].tolist() == ["com.example.app", "com.example.app", "android"]
    assert r.apps == ("com.example.app", "android")


def test_incomplete_and_broken_names_are_counted() -> None:
    hello = tls_records(client_hello_body("never.example", padding=2000))
    bad_quic = bytearray(quic_initials("x.example")[0])
    bad_quic[-1] ^= 1  # the AEAD tag no longer matches
    packets = [
        (0, ipv4(PHONE, API, 6, tcp(40000, 443, hello[:1200], flags=PSHACK, seq=1))),
        (1, ipv4(PHONE, QUIC1, 17, udp(50000, 443, bytes(bad_quic)))),
        (2, ipv4(PHONE, RESOLVER, 17, udp(5000, 53, b"\x00\x01" + b"\xff" * 12))),
        (3, ipv4(PHONE, QUIC2, 17, udp(50001, 443, b"\xc3\x1a\x2a\x3a\x4a" + bytes(40)))),
        (4, ipv4(PHONE, LATE, 6, tcp(1, 443, b"\x16\x03\x01\x00\x05\x02abcd"))),
    ]
    r = read(write(packets))
    assert r.warnings == {
        "tls-clienthello-incomplete": 1,
        "quic-initial-undecryptable": 1,
        "dns-malformed": 1,
        "quic-unsupported-version": 1,
    }
    assert r.flows[F.SNI].isna().all() and r.flows[F.QUIC_SNI].isna().all()


def test_comments_interfaces_and_format() -> None:
    data = (
        shb("<", comment="lab run 7")
        + idb("<", 1, name="eth0")
        + epb("<", 0, 5, ether(ipv4(PHONE, API, 6, tcp(1, 2))), comment="first")
    )
    r = read(data)
    assert r.format == "pcapng" and r.link_types == (1,)
    assert [c.text for c in r.comments] == ["lab run 7", "first"]
    assert r.interfaces[0].name == "eth0"


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(PcapError):
        read_capture(path)


def test_real_captures_read(shared_captures: Path) -> None:
    for path in sorted(shared_captures.glob("*.pcap")):
        r = read_capture(path)
        assert r.counts["packets"] == len(r.packets) > 0, path.name
        pk = r.packets
        assert int((pk[F.FLOW_ID] >= 0).sum()) == int(
            r.flows[F.PACKETS_UP].sum() + r.flows[F.PACKETS_DOWN].sum()
        )
        if path.name != "pcapdroid_invalid_or_unsupported.pcap":
            assert set(r.warnings) <= {"quic-unsupported-version"}, (path.name, r.warnings)


def test_a_name_worker_that_dies_is_an_error_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed mid-read (the OOM killer, say): the read fails saying so, and the reader thread
    and the process are gone."""
    import threading

    path = tmp_path / "s.pcap"
    path.write_bytes(write(scenario()))
    feed = F.CaptureAnalyzer.feed
    procs = []

    def feed_then_kill(self: F.CaptureAnalyzer, batch: object) -> None:
        feed(self, batch)  # type: ignore[arg-type]
        assert self._worker is not None
        procs.append(self._worker._proc)
        self._worker._proc.kill()
        self._worker._proc.wait()

    monkeypatch.setattr(F.CaptureAnalyzer, "feed", feed_then_kill)
    with pytest.raises(RuntimeError, match="name worker"):
        read_capture(path, workers=1, chunk_size=4096)
    assert procs and all(p.poll() is not None for p in procs)
    assert not [t for t in threading.enumerate() if t.name == "name-worker-reader"]


@pytest.mark.parametrize("first", ["b.example", "a.example"])
def test_answers_at_the_same_time_for_one_address_name_it_by_the_greatest_name(
    first: str,
) -> None:
    """Two answers (in one packet's time) give the same address: the flow takes the greatest
    name in text order, whichever came first; an address answered once takes its own."""
    other = "a.example" if first == "b.example" else "b.example"
    p: list[Packet] = []
    for i, name in enumerate((first, other)):
        p.append((S, ipv4(PHONE, RESOLVER, 17, udp(5000 + i, 53, dns_query(i, name)))))
    for i, name in enumerate((first, other)):
        ans = dns_response(i, name, 1, [rr(b"\xc0\x0c", 1, ip4(API))])
        p.append((2 * S, ipv4(RESOLVER, PHONE, 17, udp(53, 5000 + i, ans))))
    ans = dns_response(9, "c.example", 1, [rr(b"\xc0\x0c", 1, ip4(WEB))])
    p.append((2 * S, ipv4(RESOLVER, PHONE, 17, udp(53, 5009, ans))))
    p.append((3 * S, ipv4(PHONE, API, 6, tcp(40000, 443, flags=SYN, seq=1))))
    p.append((3 * S, ipv4(PHONE, WEB, 6, tcp(40001, 443, flags=SYN, seq=1))))
    r = read(write(p))
    assert _flow(r, **{F.SERVER_IP: API})[F.DNS_NAME] == "b.example"
    assert _flow(r, **{F.SERVER_IP: WEB})[F.DNS_NAME] == "c.example"

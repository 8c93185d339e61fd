"""The frame synthesis (vhandset.synth): read back by scapy and by tshark, checksums verified."""

from __future__ import annotations

import itertools
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinuxV2, Ether
from scapy.utils import rdpcap

from auditor.packets.pcapwrite import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from vhandset.network import Packet
from vhandset.synth import PacketSynth, internet_checksum, write_pcap

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

PHONE = "192.168.1.23"
SERVER = "198.18.0.7"
T0 = 1_700_000_000.25


def dns_query(name: str, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\x01\0\x01"


def conversation() -> list[Packet]:
    """A DNS exchange, a TLS-like TCP flow with a multi-segment request, a loopback flow, a flow
    first seen mid-way, and IPv6 UDP."""
    query = dns_query("tracking.miui.com")
    reply = query[:2] + b"\x81\x80" + query[4:]
    request = bytes(random.Random(1).getrandbits(8) for _ in range(4000))
    return [
        Packet(T0, "udp", PHONE, 40000, "10.0.0.53", 53, query),
        Packet(T0 + 0.01, "udp", "10.0.0.53", 53, PHONE, 40000, reply),
        Packet(T0 + 0.1, "tcp", PHONE, 40001, SERVER, 5222, b"", "S"),
        Packet(T0 + 0.2, "tcp", PHONE, 40001, SERVER, 5222, request),
        Packet(T0 + 0.3, "tcp", SERVER, 5222, PHONE, 40001, b"server says hi" * 3),
        Packet(T0 + 0.4, "tcp", PHONE, 40001, SERVER, 5222, b"bye"),
        Packet(T0 + 0.5, "tcp", PHONE, 40001, SERVER, 5222, b"", "F"),
        Packet(T0 + 0.6, "tcp", "127.0.0.1", 40002, "127.0.0.1", 8080, b"", "S"),
        Packet(T0 + 0.7, "tcp", "127.0.0.1", 40002, "127.0.0.1", 8080, b"GET / HTTP/1.1\r\n\r\n"),
        Packet(T0 + 0.8, "tcp", SERVER, 443, PHONE, 40003, b"mid-flow bytes"),
        Packet(T0 + 0.9, "tcp", PHONE, 40003, SERVER, 443, b"answer"),
        Packet(T0 + 1.0, "udp", "2001:db8::23", 40004, "2001:db8::53", 53, query),
    ]


@pytest.fixture(params=[LINKTYPE_LINUX_SLL2, LINKTYPE_ETHERNET, LINKTYPE_RAW])
def written(request, tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / f"c-{request.param}.pcap"
    write_pcap(path, conversation(), linktype=request.param, local=[PHONE])
    return path, request.param


def naive_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def test_internet_checksum_matches_rfc1071_and_a_plain_loop():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    rng = random.Random(7)
    for size in (0, 1, 2, 3, 19, 20, 1459, 1460, 65000):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        assert internet_checksum(data) == naive_checksum(data), size
        head, tail = (
            data[: size - size % 2 if size > 4 else 0],
            data[size - size % 2 if size > 4 else 0 :],
        )
        assert internet_checksum(head, tail) == naive_checksum(data)
    assert internet_checksum(b"\xff\xff") == 0
    assert internet_checksum(b"\0\0") == 0xFFFF


def test_scapy_reads_back_payloads_flags_and_valid_checksums(written):
    path, linktype = written
    pkts = rdpcap(str(path))
    layer = {LINKTYPE_LINUX_SLL2: CookedLinuxV2, LINKTYPE_ETHERNET: Ether}.get(linktype)
    if layer is not None:
        assert all(p.haslayer(layer) for p in pkts)
    # Checksums: scapy recomputes them when the fields are deleted; they must not change.
    for p in pkts:
        for lay in (IP, TCP, UDP):
            if p.haslayer(lay):
                fresh = p[lay].copy()
                del fresh.chksum
                if lay is IP:
                    rebuilt = IP(bytes(fresh))
                else:
                    outer = p[IP] if p.haslayer(IP) else p[IPv6]
                    clone = outer.copy()
                    del clone[lay].chksum
                    rebuilt = type(outer)(bytes(clone))[lay]
                assert rebuilt.chksum == p[lay].chksum, (lay.__name__, p.summary())

    flow = [p for p in pkts if p.haslayer(TCP) and 5222 in (p[TCP].sport, p[TCP].dport)]
    flags = [str(p[TCP].flags) for p in flow]
    assert flags[:3] == ["S", "SA", "A"]
    assert flags[-3:] == ["FA", "FA", "A"]
    up = b"".join(bytes(p[TCP].payload) for p in flow if p[TCP].dport == 5222)
    down = b"".join(bytes(p[TCP].payload) for p in flow if p[TCP].sport == 5222)
    assert up == conversation()[3].payload + b"bye"
    assert down == b"server says hi" * 3
    # Sequence numbers advance by the bytes sent; acks follow the other side.
    syn, synack = flow[0][TCP], flow[1][TCP]
    assert synack.ack == syn.seq + 1
    data_up = [p[TCP] for p in flow if p[TCP].dport == 5222 and p[TCP].payload]
    assert len(data_up) == 4  # 4000 bytes at MSS 1460 is 3 segments, and "bye"
    for a, b in itertools.pairwise(data_up):
        assert b.seq == a.seq + len(a.payload)
    reply = next(p[TCP] for p in flow if p[TCP].sport == 5222 and p[TCP].payload)
    assert reply.seq == synack.seq + 1
    assert reply.ack == data_up[-2].seq + len(data_up[-2].payload)
    assert all(p[TCP].flags & 0x10 for p in flow[1:])  # everything after the SYN carries ACK

    mid = [p[TCP] for p in pkts if p.haslayer(TCP) and 40003 in (p[TCP].sport, p[TCP].dport)]
    assert [bytes(t.payload) for t in mid] == [b"mid-flow bytes", b"answer"]
    assert mid[1].ack == mid[0].seq + len(mid[0].payload)
    assert any(p.haslayer(IPv6) and p.haslayer(UDP) for p in pkts)


def test_sll2_header_says_direction_interface_and_protocol(tmp_path: Path):
    path = tmp_path / "s.pcap"
    write_pcap(path, conversation(), local=[PHONE])
    pkts = rdpcap(str(path))
    query, reply = pkts[0][CookedLinuxV2], pkts[1][CookedLinuxV2]
    assert (query.pkttype, reply.pkttype) == (4, 0)  # PACKET_OUTGOING, PACKET_HOST
    assert query.proto == 0x0800 and query.lladdrtype == 1 and query.lladdrlen == 6
    loop = next(p for p in pkts if p.haslayer(TCP) and p[TCP].dport == 8080)[CookedLinuxV2]
    assert loop.lladdrtype == 772 and loop.ifindex == 1 and loop.pkttype == 0
    v6 = next(p for p in pkts if p.haslayer(IPv6))[CookedLinuxV2]
    assert v6.proto == 0x86DD


def test_same_input_same_bytes_and_snaplen_cuts(tmp_path: Path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    write_pcap(a, conversation())
    write_pcap(b, conversation())
    assert a.read_bytes() == b.read_bytes()
    write_pcap(c, conversation(), snaplen=60)
    pkts = rdpcap(str(c))
    assert all(len(bytes(p)) <= 60 for p in pkts)
    assert max(p.wirelen for p in pkts) > 60


def test_synth_rejects_what_it_cannot_frame():
    with pytest.raises(ValueError):
        PacketSynth(105)
    synth = PacketSynth()
    assert synth.frames(Packet(T0, "tcp", "not-an-ip", 1, PHONE, 2, b"x")) == []
    assert synth.frames(Packet(T0, "icmp", PHONE, 0, SERVER, 0, b"x")) == []
    assert synth.frames(Packet(T0, "tcp", PHONE, 1, SERVER, 2, b"")) == []


# ---- tshark ------------------------------------------------------------------------------------


def tshark(*args: str) -> str:
    assert TSHARK is not None
    done = subprocess.run([TSHARK, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


CHECKS = (
    "-o",
    "tcp.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    "-o",
    "ip.check_checksum:TRUE",
)
BAD = "tcp.checksum.status == 0 || udp.checksum.status == 0 || ip.checksum.status == 0"
GOOD = "tcp.checksum.status == 1 || udp.checksum.status == 1"


def follow_raw(path: Path, stream: int) -> tuple[bytes, bytes]:
    """The bytes each side sent in one TCP stream, as tshark reassembles them."""
    out = tshark("-r", str(path), "-q", "-z", f"follow,tcp,raw,{stream}")
    lines = out.split("Node 1:", 1)[1].splitlines()[1:]
    up, down = bytearray(), bytearray()
    for line in lines:
        if line.startswith("==="):
            break
        (down if line.startswith("\t") else up).extend(bytes.fromhex(line.strip()))
    return bytes(up), bytes(down)


@needs_tshark
def test_tshark_finds_no_bad_checksum_and_sees_a_corrupted_one(written, tmp_path: Path):
    path, _ = written
    frames = tshark("-r", str(path), "-T", "fields", "-e", "frame.number")
    assert len(frames.split()) == 20
    assert tshark("-r", str(path), *CHECKS, "-Y", BAD).strip() == ""
    good = tshark("-r", str(path), *CHECKS, "-Y", GOOD, "-T", "fields", "-e", "frame.number")
    assert len(good.split()) == 20
    # The check can fail: flip one payload byte of the first data segment.
    data = bytearray(path.read_bytes())
    at = data.index(conversation()[3].payload[:16])
    data[at] ^= 0xFF
    broken = tmp_path / "broken.pcap"
    broken.write_bytes(bytes(data))
    assert tshark("-r", str(broken), *CHECKS, "-Y", BAD).strip() != ""


@needs_tshark
def test_tshark_follows_tcp_streams_and_decodes_dns(written):
    path, _ = written
    conv = tshark("-r", str(path), "-q", "-z", "conv,tcp")
    assert f"{PHONE}:40001" in conv and f"{SERVER}:5222" in conv
    assert "127.0.0.1:40002" in conv
    stream = tshark("-r", str(path), "-Y", "tcp.port == 5222", "-T", "fields", "-e", "tcp.stream")
    up, down = follow_raw(path, int(stream.split()[0]))
    assert up == conversation()[3].payload + b"bye"
    assert down == b"server says hi" * 3
    names = tshark(
        "-r", str(path), "-Y", "dns.flags.response == 0", "-T", "fields", "-e", "dns.qry.name"
    )
    assert names.split() == ["tracking.miui.com", "tracking.miui.com"]
    analysis = tshark(
        "-r",
        str(path),
        "-Y",
        "tcp.analysis.flags && !tcp.analysis.window_update",
        "-T",
        "fields",
        "-e",
        "frame.number",
    )
    assert analysis.strip() == "", "tshark flags sequence problems"

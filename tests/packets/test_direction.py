"""Which side of a flow is the client (auditor.packets.flows, issue 14): decided by the
handshake, the payload, then the ports, and only last by the first packet seen.

On real captures, the truth is the side tshark shows sending each connection's SYN. A copy of
each capture keeps only what the servers sent after their SYN-ACK (what a capture that
started mid-way, or a server's late push, FIN or RST, shows first): auditor must still name
the SYN's sender as the client of every such flow, from the ports alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from auditor.packets import flows as F
from auditor.packets import read_capture
from tests.packets.helpers import SHARED_CAPTURES

DATA = Path(__file__).resolve().parents[1] / "data" / "names"
TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

Endpoint = tuple[str, int]


def syn_senders(path: Path) -> dict[frozenset[Endpoint], Endpoint]:
    """Per TCP connection (its two endpoints), the one tshark shows sending the SYN."""
    assert TSHARK is not None
    out = subprocess.run(
        [
            TSHARK,
            "-n",
            "-r",
            str(path),
            "-Y",
            "tcp.flags.syn==1 && tcp.flags.ack==0",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.dstport",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[frozenset[Endpoint], Endpoint] = {}
    for line in out.splitlines():
        a, a6, sp, b, b6, dp = line.split("\t")
        client, server = (a or a6, int(sp)), (b or b6, int(dp))
        found[frozenset({client, server})] = client
    return found


def servers_only(path: Path, clients: dict[frozenset[Endpoint], Endpoint], out: Path) -> int:
    """``path`` without the packets of the connections' clients and without SYN-ACKs
    (scapy reads and writes the file); returns how many packets are kept."""
    import scapy.layers.all  # noqa: F401 - registers the link types
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader, wrpcap

    keep = []
    with PcapReader(str(path)) as reader:
        for p in reader:
            ip = p.getlayer(IP) or p.getlayer(IPv6)
            tcp = p.getlayer(TCP)
            if ip is None or tcp is None or int(tcp.flags) & 0x02:
                continue
            client = clients.get(frozenset({(ip.src, tcp.sport), (ip.dst, tcp.dport)}))
            if client is not None and client != (ip.src, tcp.sport):
                keep.append(p)
    wrpcap(str(out), keep)
    return len(keep)


CAPTURES = [
    DATA / n for n in ("android.pcap", "whatsapp_login_chat.pcap", "threema.pcap", "xiaomi.pcap")
]
if SHARED_CAPTURES.is_dir():
    CAPTURES += sorted(SHARED_CAPTURES.glob("*.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_flows_seen_only_from_the_server_side(path: Path, tmp_path: Path) -> None:
    clients = syn_senders(path)
    if not clients:
        pytest.skip("no TCP handshake in this capture")
    cut = tmp_path / "servers.pcap"
    assert servers_only(path, clients, cut) > 0
    flows = read_capture(cut).flows
    checked = 0
    for _, f in flows.iterrows():
        key = frozenset({(f[F.CLIENT_IP], f[F.CLIENT_PORT]), (f[F.SERVER_IP], f[F.SERVER_PORT])})
        if key in clients:
            assert (f[F.CLIENT_IP], f[F.CLIENT_PORT]) == clients[key], f.to_dict()
            assert f[F.CLIENT_EVIDENCE] == "port"
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_the_whole_capture_agrees_with_the_syn(path: Path) -> None:
    clients = syn_senders(path)
    if not clients:
        pytest.skip("no TCP handshake in this capture")
    flows = read_capture(path).flows
    tcp = flows[flows[F.PROTO] == "tcp"]
    checked = 0
    for _, f in tcp.iterrows():
        key = frozenset({(f[F.CLIENT_IP], f[F.CLIENT_PORT]), (f[F.SERVER_IP], f[F.SERVER_PORT])})
        if key in clients:
            assert (f[F.CLIENT_IP], f[F.CLIENT_PORT]) == clients[key]
            checked += 1
    assert checked > 0


def _rule(
    port_a: int, port_b: int, *, syn_b: bool = False, hint: int = -1, first: int = 1
) -> tuple[int, str]:
    no = np.zeros(1, dtype=bool)
    client, evidence = F._orientation(
        no, np.array([syn_b]), no, no, np.array([hint]), np.array([port_a]), np.array([port_b]),
        np.array([first]),
    )  # fmt: skip
    return int(client[0]), F._CLIENT_EVIDENCE[int(evidence[0])]


def test_the_rules_in_their_order() -> None:
    assert _rule(443, 40000, syn_b=True) == (1, "tcp-syn")  # the handshake outranks ports
    assert _rule(40000, 50000, hint=0) == (0, "payload")
    assert _rule(40000, 443) == (0, "port")
    assert _rule(5228, 40000) == (1, "port")  # Firebase Cloud Messaging
    assert _rule(1024, 8080) == (0, "port")  # a service port against any other
    assert _rule(20000, 45000) == (1, "port")  # a registered port against an ephemeral one
    assert _rule(40000, 50000) == (1, "first-packet")  # nothing tells
    assert _rule(123, 123) == (1, "first-packet")

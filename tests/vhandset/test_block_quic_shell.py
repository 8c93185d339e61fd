"""The virtual handset's iptables/ip6tables and its QUIC Initial: the commands as the audit uses
them (through ``su``), their refusals, and the Initial checked against RFC 9001's own test
vector and read back by tshark."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vhandset.device import VirtualDevice
from vhandset.quic import client_initial, client_initial_keys

TSHARK = shutil.which("tshark")
RULE = "OUTPUT -p udp --dport 443 -j DROP"


@pytest.fixture(scope="module")
def dev() -> VirtualDevice:
    return VirtualDevice("xiaomi-mi10t")


def su(dev: VirtualDevice, cmd: str) -> tuple[int, str, str]:
    r = dev.run(f"su 0 sh -c '{cmd}'")
    return r.exit_code, r.out, r.err


def test_rules_are_added_checked_listed_and_deleted(dev: VirtualDevice) -> None:
    for binary in ("iptables", "ip6tables"):
        assert su(dev, f"{binary} -w -C {RULE}")[0] == 1
        assert su(dev, f"{binary} -w -I {RULE}")[0] == 0
        assert su(dev, f"{binary} -w -C {RULE}")[0] == 0
    code, out, _ = su(dev, "iptables -S OUTPUT")
    assert (code, out) == (0, "-P OUTPUT ACCEPT\n-A OUTPUT -p udp -m udp --dport 443 -j DROP\n")
    assert dev.netfilter.verdict("ipv4", "udp", 443) == "DROP"
    assert dev.netfilter.verdict("ipv4", "udp", 53) == "ACCEPT"
    assert dev.netfilter.verdict("ipv4", "tcp", 443) == "ACCEPT"
    for binary in ("iptables", "ip6tables"):
        assert su(dev, f"{binary} -w -D {RULE}")[0] == 0
        code, _, err = su(dev, f"{binary} -w -D {RULE}")
        assert code == 1 and "Bad rule" in err
    assert dev.netfilter.verdict("ipv6", "udp", 443) == "ACCEPT"


def test_without_root_iptables_refuses(dev: VirtualDevice) -> None:
    r = dev.run(f"iptables -w -I {RULE}")
    assert r.exit_code == 3 and "you must be root" in r.err
    assert dev.netfilter.verdict("ipv4", "udp", 443) == "ACCEPT"


def test_a_rule_iptables_cannot_read_is_refused(dev: VirtualDevice) -> None:
    code, _, err = su(dev, "iptables -I OUTPUT -p udp --dport 99999 -j DROP")
    assert code == 2 and "invalid port" in err
    code, _, err = su(dev, "iptables -I OUTPUT -p udp --dport 443 -j NOPE")
    assert code == 2 and "NOPE" in err
    assert dev.netfilter.rules == {"ipv4": [], "ipv6": []}


def test_the_initial_keys_are_rfc_9001s() -> None:
    # RFC 9001 appendix A.1: the client's Initial keys for DCID 0x8394c8f03e515708
    key, iv, hp = client_initial_keys(bytes.fromhex("8394c8f03e515708"))
    assert key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert hp.hex() == "9f50449e04a0e810283a1e9933adedd2"


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_decrypts_the_initial_and_reads_its_server_name(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.utils import wrpcap

    datagram = client_initial("android.clients.google.com")
    assert len(datagram) == 1200
    pcap = tmp_path / "quic.pcap"
    wrpcap(
        str(pcap), [IP(src="10.0.0.2", dst="198.18.0.1") / UDP(sport=40000, dport=443) / datagram]
    )
    assert TSHARK is not None
    done = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), "-T", "fields", "-e", "quic.version",
         "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.extensions_alpn_str"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["0x00000001", "android.clients.google.com", "h3"]

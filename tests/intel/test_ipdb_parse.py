"""``parse_ip`` reads canonical address text from its packed bytes; every answer must be the
one Python's own ``ipaddress`` parser gives (the reference here), for canonical text, other
spellings, IPv4-mapped and scoped IPv6, and values that are not addresses."""

from __future__ import annotations

import ipaddress
import random
import socket

from auditor.intel.ipdb import parse_ip


def _reference(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text) if text and len(text) <= 45 else None
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def test_parse_ip_gives_what_ipaddress_gives() -> None:
    rng = random.Random(14)
    values = ["1.2.3.4", "01.2.3.4", "256.1.1.1", "0.0.0.0", "255.255.255.255", "1.2.3"]
    values += ["::1", "::", "::ffff:1.2.3.4", "::ffff:102:304", "2A00::1", "[2a00::1]", ":::"]
    values += ["fe80::1%eth0", "1:0:0:4:5:6:7:8", "1::4:5:6:7:8", "0001::1", " 8.8.8.8 "]
    values += ["0:0:0:0:0:ffff:1.2.3.4", "2001:db8::", "1:0:0:0:0:0:0:1", "a.b.c.d", ""]
    for _ in range(2000):
        v = rng.getrandbits(128)
        if rng.random() < 0.5:  # runs of zero groups, where the :: may go
            v &= ~(((1 << rng.choice([16, 32, 48, 64])) - 1) << rng.choice([0, 16, 32, 48]))
        values.append(str(ipaddress.IPv6Address(v)))
        values.append(socket.inet_ntoa(rng.getrandbits(32).to_bytes(4, "big")))
    got = [(parse_ip(v), type(parse_ip(v))) for v in values]
    want = [(_reference(v), type(_reference(v))) for v in values]
    assert [(v, g, w) for v, g, w in zip(values, got, want, strict=True) if g != w] == []
    assert sum(g is not None for g, _ in got) > 4_000

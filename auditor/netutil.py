"""Small network helpers about this machine's loopback: whether an address is loopback, and
(for the demo and the benchmarks) a free port on it."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IPv4 or IPv6 address, bracketed or not, or a host name) names this
    machine's loopback: 127.0.0.0/8, ::1 or ``localhost``."""
    text = host.strip().strip("[]").rstrip(".").lower()
    if text == "localhost":
        return True
    if not (text.startswith("127.") or ":" in text):
        return False  # the cheap test first: loopback IPv4 text starts so, IPv6 has colons
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1, on every Python version
    return addr.is_loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

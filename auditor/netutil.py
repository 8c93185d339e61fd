"""Small network helpers about this machine's loopback: whether an address is loopback, and
(for the demo, the tests and the benchmarks) a free port and a request through the proxy."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IPv4 or IPv6 address, bracketed or not, or a host name) names this
    machine's loopback: 127.0.0.0/8, ::1 or ``localhost``."""
    text = host.strip().strip("[]").rstrip(".").lower()
    if text == "localhost":
        return True
    if not (text.startswith("127.") or ":" in text):
        return False  # the cheap test first: loopback IPv4 text starts so, IPv6 has colons
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proxied_request(
    proxy_port: int,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    context: ssl.SSLContext | None = None,
    sni: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request through the HTTP proxy on loopback (CONNECT for https)."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    path = u.path + (f"?{u.query}" if u.query else "") or "/"
    if u.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", proxy_port, timeout=timeout, context=context
        )
        conn.set_tunnel(host, port)
        if sni:
            conn._tunnel_host = sni  # type: ignore[attr-defined]  # SNI differs from the target
            conn._tunnel_port = port  # type: ignore[attr-defined]
    else:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=timeout)
        path = url
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()

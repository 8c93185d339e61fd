"""A request through the HTTP proxy on loopback, as a phone would send it (CONNECT for https):
what the proxy, addon and end-to-end tests send."""

from __future__ import annotations

import http.client
import ssl


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

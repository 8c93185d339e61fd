"""``auditor demo``: a whole capture on this machine alone.

Until the virtual handset drives it, the demo sends built-in test traffic (plain HTTP, HTTPS
through mitmproxy's CA, a client that pins and so refuses the CA, a gzip upload, a request to
an address where nothing listens) through a real mitmdump to origin servers on loopback,
closes the session and verifies it.
"""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditor.capture import ProxyOptions, ca_cert_path, run_capture
from auditor.offline.origin import OriginServer
from auditor.offline.pki import CertificateAuthority
from auditor.session import verify_session


def free_port() -> int:
    import socket

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


def demo_traffic(proxy_port: int, confdir: Path, http_port: int, https_port: int) -> list[str]:
    """The built-in test traffic. Returns one line per request, for the operator."""
    trusted = ssl.create_default_context(cafile=str(ca_cert_path(confdir)))
    pinned = ssl.create_default_context()  # trusts only the system store: refuses mitmproxy
    pinned.load_verify_locations(cadata=_unrelated_ca_pem())
    lines = []
    payload = gzip.compress(json.dumps({"event": "app_open", "ts": int(time.time())}).encode())
    for label, args, kwargs in [
        ("GET with a query", ("GET", f"http://localhost:{http_port}/api/v1/config?region=eu"), {}),
        (
            "POST gzip JSON",
            ("POST", f"http://localhost:{http_port}/stat/upload", payload),
            {"headers": {"Content-Encoding": "gzip", "Content-Type": "application/json"}},
        ),
        (
            "HTTPS through the CA",
            ("GET", f"https://localhost:{https_port}/v2/check?id=demo"),
            {"context": trusted},
        ),
        (
            "HTTPS from a pinning client",
            ("GET", f"https://localhost:{https_port}/pinned"),
            {"context": pinned},
        ),
        ("request to a closed port", ("GET", "http://localhost:1/unreachable"), {}),
    ]:
        try:
            status, _ = proxied_request(proxy_port, *args, **kwargs)  # type: ignore[arg-type]
            lines.append(f"{label}: HTTP {status}")
        except (OSError, http.client.HTTPException) as exc:
            lines.append(f"{label}: {type(exc).__name__}")
    return lines


def _unrelated_ca_pem() -> str:
    with tempfile.TemporaryDirectory() as d:
        return CertificateAuthority(Path(d), "unrelated pinning CA").cert_pem.decode()


def run_demo(out: Path, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = echo or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="auditor-demo-") as tmp:
        ca = CertificateAuthority(Path(tmp) / "offline-ca")
        confdir = Path(tmp) / "mitmproxy"
        with OriginServer() as plain, OriginServer(ca=ca) as tls:
            port = free_port()
            opts = ProxyOptions(
                port=port,
                confdir=confdir,
                extra={"ssl_verify_upstream_trusted_ca": str(ca.cert_path)},
            )
            stop = threading.Event()
            lines: list[str] = []

            def drive(elapsed: float, _counts: Any) -> None:
                if not lines and elapsed >= 0:
                    lines.extend(demo_traffic(port, confdir, plain.port, tls.port))
                    for line in lines:
                        say(f"  {line}")
                    stop.set()

            say(f"demo: mitmdump on 127.0.0.1:{port}, origins on {plain.port} and {tls.port}")
            res = run_capture(out, opts, notes="auditor demo", on_progress=drive, stop=stop)
    ver = verify_session(res.session)
    summary = res.manifest.get("summary", {})
    say(
        f"demo: {summary.get('flows', 0)} flows, {summary.get('tls_failed', 0)} TLS failures; "
        f"verify {'OK' if ver.ok else 'FAILED'}"
    )
    return {
        "session": str(res.session),
        "verified": ver.ok,
        "summary": summary,
        "requests": lines,
    }

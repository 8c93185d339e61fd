"""Origin servers on loopback that answer like the services a handset talks to.

One :class:`OriginServer` serves plain HTTP or HTTPS; with TLS it presents, for whatever SNI
the client sends, a certificate issued by the offline CA (:mod:`vhandset.offline.pki`).
"""

from __future__ import annotations

import gzip
import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vhandset.offline.pki import CertificateAuthority

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 64 * 1024 * 1024
MAX_GENERATED_BODY = 256 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "auditor-offline/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("origin: " + format, *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        if length < 0 or length > MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self) -> None:
        try:
            body = self._body()
        except ValueError:
            self._send(413, b"too large", "text/plain")
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        host = (self.headers.get("host") or "").split(":")[0]
        if url.path == "/large":
            size = min(int(query.get("size", ["1048576"])[0]), MAX_GENERATED_BODY)
            self._send(200, b"x" * size, "application/octet-stream")
            return
        if url.path == "/status":
            self._send(int(query.get("code", ["204"])[0]), b"", "text/plain")
            return
        reply = {
            "ok": True,
            "host": host,
            "method": self.command,
            "path": url.path,
            "received_bytes": len(body),
        }
        data = json.dumps(reply).encode()
        if "gzip" in (self.headers.get("accept-encoding") or ""):
            self._send(200, gzip.compress(data), "application/json", {"Content-Encoding": "gzip"})
        else:
            self._send(200, data, "application/json")

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer


class OriginServer:
    """A threaded HTTP(S) origin on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ca: CertificateAuthority | None = None
    ):
        self.ca = ca
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        if ca is not None:
            self.httpd.socket = self._tls_context(ca).wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @staticmethod
    def _tls_context(ca: CertificateAuthority) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = ca.leaf("localhost")
        ctx.load_cert_chain(cert, key)
        contexts: dict[str, ssl.SSLContext] = {}

        def pick(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
            if not name:
                return
            if name not in contexts:
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                c.load_cert_chain(*ca.leaf(name))
                contexts[name] = c
            sock.context = contexts[name]

        ctx.sni_callback = pick
        return ctx

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> OriginServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> OriginServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

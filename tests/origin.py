"""A quiet HTTP(S) origin on loopback for tests that need a real server behind a proxy:
handlers that log nothing, and a server run in a thread and stopped on the way out."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that writes no access log to stderr (it would clutter the tests'
    output); subclasses answer the methods they serve."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def answering(body: bytes) -> type[QuietHandler]:
    """A handler that answers every GET with 200 and ``body``."""

    class _Answer(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return _Answer


@contextlib.contextmanager
def serving(
    handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[http.server.ThreadingHTTPServer]:
    """``handler`` served on a free loopback port in a daemon thread (over TLS with ``tls``);
    shut down and closed on the way out."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()

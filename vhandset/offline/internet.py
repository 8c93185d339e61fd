"""The offline internet: one loopback listener that stands in for every server a handset calls.

On one port it takes whatever a client sends first:

- ``CONNECT host:port``, as an HTTP proxy client such as mitmdump in
  ``--mode upstream:http://127.0.0.1:PORT`` sends it: ``200 Connection established``, then TLS
  with a leaf certificate for the SNI (or the CONNECT host when there is none) issued by the
  offline CA (:mod:`vhandset.offline.pki`), or plain HTTP inside the tunnel;
- an absolute-form request (``GET http://host/path HTTP/1.1``), a proxy client's plain HTTP;
- an origin-form request with a ``Host`` header, or a TLS ClientHello (first byte 0x16), as a
  device without a proxy sends them.

Every request is answered by :func:`vhandset.offline.services.respond` as the named host would
answer it and logged, bounded, in memory (:meth:`OfflineInternet.requests`). Hostile input
(garbage, slowloris, oversize heads and bodies, failed handshakes) closes that one
connection, is logged in :meth:`OfflineInternet.failures`, and never the listener.

Long because: one listener's sniffing, proxying, TLS and limits share one connection's
state; the services' answers, the CA and DNS are already apart.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import http
import ipaddress
import logging
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from vhandset.clock import now_iso
from vhandset.offline.pki import CertificateAuthority
from vhandset.offline.services import (
    Catalogue,
    Response,
    default_catalogue,
    normalize_host,
    respond,
    valid_hostname,
)

log = logging.getLogger(__name__)

SERVER_NAME = "auditor-offline/1"
_TLS_HANDSHAKE = 0x16
_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_BODYLESS = frozenset({204, 304})


class Mode(StrEnum):
    """How a request reached the offline internet."""

    CONNECT = "connect"  # inside a CONNECT tunnel (a proxy client's HTTPS)
    PROXY = "proxy"  # absolute-form request (a proxy client's plain HTTP)
    DIRECT = "direct"  # origin-form or TLS straight away (a client without a proxy)


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps and timeouts that keep one connection from holding the server."""

    max_line: int = 8 * 1024  # request line, chunk-size line
    max_head: int = 64 * 1024  # request line and headers together
    max_headers: int = 100
    max_body: int = 16 * 1024 * 1024
    idle_timeout: float = 10.0  # silence allowed between bytes and between requests
    request_timeout: float = 30.0  # one whole request, head and body
    handshake_timeout: float = 10.0
    max_connections: int = 256
    max_requests: int = 1000  # per connection
    max_hosts: int = 10_000  # distinct certificate names issued


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and the answer it got."""

    time: str  # ISO 8601 UTC, when the request head was complete
    client: str  # "ip:port" of the peer (mitmdump, the handset)
    mode: Mode
    tls: bool
    sni: str | None
    host: str  # the host the request was answered as
    port: int
    method: str
    path: str  # with the query string
    request_size: int  # body bytes, after de-chunking
    status: int
    response_size: int  # body bytes as sent (gzip-encoded if it was)
    service: str  # the catalogue entry that answered
    duration_ms: float  # from the complete request to the answer ready to send


@dataclass(frozen=True, slots=True)
class Failure:
    """A connection or request that was refused or broke off."""

    time: str
    client: str
    stage: str  # "tls", "request", "connect", "limit", "internal"
    error: str
    sni: str | None = None


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Eof(Exception):
    """The peer closed, or went silent, before a request began: end quietly."""


@dataclass
class _Conn:
    client: str
    local: str
    mode: Mode = Mode.DIRECT
    tls: bool = False
    sni: str | None = None
    tunnel: tuple[str, int] | None = None


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    received: str = field(default_factory=now_iso)
    started: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


class _Stream:
    """Buffered reads with deadlines over a socket, in the clear or through TLS (MemoryBIO).

    TLS runs over memory BIOs so that bytes a client sent straight after CONNECT, already in
    the buffer, still reach the handshake.
    """

    def __init__(self, sock: socket.socket, idle: float):
        self.sock = sock
        self.idle = idle
        self.buf = bytearray()
        self.tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(min(self.idle, remaining))
        return self.sock.recv(65536)

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.sock.settimeout(self.idle)
            self.sock.sendall(data)

    def fill(self, deadline: float) -> bool:
        """Append more bytes to ``buf``; false at end of stream."""
        if self.tls is None:
            data = self._recv(deadline)
            self.buf += data
            return bool(data)
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                raw = self._recv(deadline)
                if not raw:
                    return False
                self._in.write(raw)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return False
            self._flush()
            self.buf += data
            return bool(data)

    def first_byte(self, deadline: float) -> int | None:
        """The next byte without consuming it; ``None`` at end of stream."""
        while not self.buf:
            if not self.fill(deadline):
                return None
        return self.buf[0]

    def read_until(self, delim: bytes, limit: int, deadline: float, status: int) -> bytes:
        """Up to and including ``delim``; an :class:`_HttpError` ``status`` past ``limit``."""
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                end = i + len(delim)
                if end > limit:
                    raise _HttpError(status, f"more than {limit} bytes")
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise _HttpError(status, f"more than {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill(deadline):
                raise _HttpError(400, "connection closed mid-request")

    def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self.fill(deadline):
                raise _HttpError(400, "connection closed mid-body")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def sendall(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.settimeout(self.idle)
            self.sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            n = self.tls.write(view[:65536])
            self._flush()
            view = view[n:]

    def start_tls(self, ctx: ssl.SSLContext, deadline: float) -> ssl.SSLObject:
        self._in.write(bytes(self.buf))
        self.buf.clear()
        tls = ctx.wrap_bio(self._in, self._out, server_side=True)
        self.tls = tls
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                raw = self._recv(deadline)
                if not raw:
                    raise ConnectionError("client closed during the TLS handshake") from None
                self._in.write(raw)
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()  # our alert, so the client learns why
                raise
        self._flush()
        return tls

    def close_tls(self) -> None:
        if self.tls is None:
            return
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.tls.unwrap()
        with contextlib.suppress(OSError):
            self._flush()
        self.tls = None

    def linger(self, seconds: float = 1.0, cap: int = 4 * 1024 * 1024) -> None:
        """Half-close and discard what the client still sends, so that it reads our answer.

        Closing with unread input makes the kernel reset the connection, and a reset can
        destroy the error response before the client reads it.
        """
        self.close_tls()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        deadline, drained = time.monotonic() + seconds, 0
        while drained < cap:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            drained += len(data)


class OfflineInternet:
    """The offline internet on ``host:port`` (loopback; port 0 picks a free one).

    Pass a :class:`CertificateAuthority`, or a directory to keep one in; with neither, a CA
    is made in a temporary directory that :meth:`stop` removes. One instance starts once.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ca: CertificateAuthority | None = None,
        ca_dir: Path | None = None,
        catalogue: Catalogue | None = None,
        limits: Limits | None = None,
        log_size: int = 10_000,
    ):
        self.host = host
        self._want_port = port
        self._tmp: str | None = None
        if ca is None:
            if ca_dir is None:
                self._tmp = tempfile.mkdtemp(prefix="auditor-offline-ca-")
                ca_dir = Path(self._tmp)
            ca = CertificateAuthority(ca_dir)
        self.ca = ca
        # Loaded now, so that a broken services.yaml fails here and not on the first request.
        self.catalogue = catalogue if catalogue is not None else default_catalogue()
        self.limits = limits or Limits()
        self._log: collections.deque[Exchange] = collections.deque(maxlen=log_size)
        self._failures: collections.deque[Failure] = collections.deque(maxlen=log_size)
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        self._ctx_lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._port = 0

    # --- public ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("OfflineInternet is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ca_cert_path(self) -> Path:
        return self.ca.cert_path

    def requests(self) -> list[Exchange]:
        with self._cond:
            return list(self._log)

    def failures(self) -> list[Failure]:
        with self._cond:
            return list(self._failures)

    def wait_for(
        self, predicate: Callable[[list[Exchange]], bool], timeout: float = 10.0
    ) -> list[Exchange]:
        """Wait until ``predicate(requests)`` holds or ``timeout`` passes; the requests then."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._log)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self._log)

    def start(self) -> OfflineInternet:
        if self._listener is not None or self._stopping.is_set():
            raise RuntimeError("OfflineInternet can be started once")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        if not _is_loopback(self.host):
            log.warning("the offline internet listens on %s, beyond loopback", self.host)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._want_port))
            sock.listen(128)
            sock.settimeout(0.2)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self._port = int(sock.getsockname()[1])
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="offline-internet-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("offline internet on %s (CA %s)", self.url, self.ca_cert_path)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; wait at most ``timeout`` for threads."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = len(self._conns)
        if stuck:
            log.warning("offline internet: %d connection threads still running at stop", stuck)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> OfflineInternet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- connections ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.warning("offline internet: accept failed: %s", exc)
                time.sleep(0.05)
                continue
            client = _fmt_addr(addr)
            with self._lock:
                full = len(self._conns) >= self.limits.max_connections
                if not full:
                    thread = threading.Thread(
                        target=self._run,
                        args=(sock, client),
                        name=f"offline-internet {client}",
                        daemon=True,
                    )
                    self._conns[sock] = thread
                    thread.start()
            if full:
                self._fail(client, "limit", f"over {self.limits.max_connections} connections")
                sock.close()

    def _run(self, sock: socket.socket, client: str) -> None:
        try:
            local = str(sock.getsockname()[0])
        except OSError:
            local = self.host
        conn = _Conn(client=client, local=local)
        stream = _Stream(sock, self.limits.idle_timeout)
        try:
            self._serve(stream, conn)
        except (_Eof, TimeoutError, ConnectionError):
            pass
        except OSError as exc:
            if not self._stopping.is_set():
                log.debug("offline internet: %s: %s", client, exc)
        except Exception as exc:  # a bug in one connection must not spread
            log.exception("offline internet: %s: unexpected error", client)
            self._fail(client, "internal", repr(exc), conn.sni)
        finally:
            stream.close_tls()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._conns.pop(sock, None)

    def _serve(self, stream: _Stream, conn: _Conn) -> None:
        first = stream.first_byte(time.monotonic() + self.limits.idle_timeout)
        if first is None:
            return
        if first == _TLS_HANDSHAKE:
            self._handshake(stream, conn, conn.local)
        served = 0
        while served < self.limits.max_requests and not self._stopping.is_set():
            try:
                req = self._read_request(stream)
            except _HttpError as exc:
                self._fail(conn.client, "request", f"{exc.status} {exc.message}", conn.sni)
                with contextlib.suppress(OSError, ssl.SSLError):
                    self._send_error(stream, exc.status, exc.message)
                    stream.linger()
                return
            if req is None:
                return
            served += 1
            if req.method == "CONNECT":
                if not self._open_tunnel(stream, conn, req):
                    return
                continue
            if not self._answer(stream, conn, req, last=served >= self.limits.max_requests):
                return

    def _handshake(self, stream: _Stream, conn: _Conn, default_host: str) -> None:
        ctx = self._context(default_host)
        try:
            tls = stream.start_tls(ctx, time.monotonic() + self.limits.handshake_timeout)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            sni = getattr(stream.tls, "auditor_sni", None)
            self._fail(conn.client, "tls", _describe(exc), sni)
            log.info("offline internet: TLS with %s failed (SNI %s): %s", conn.client, sni, exc)
            stream.tls = None
            raise _Eof from exc
        conn.tls = True
        conn.sni = getattr(tls, "auditor_sni", None)

    def _open_tunnel(self, stream: _Stream, conn: _Conn, req: _Request) -> bool:
        if conn.tls or conn.tunnel is not None:
            self._fail(conn.client, "connect", "CONNECT inside a tunnel", conn.sni)
            self._send_error(stream, 400, "CONNECT inside a tunnel")
            return False
        target = _split_authority(req.target, default_port=None)
        if target is None:
            self._fail(conn.client, "connect", f"bad CONNECT target {req.target[:100]!r}")
            self._send_error(stream, 400, "bad CONNECT target")
            return False
        if req.body:
            self._send_error(stream, 400, "CONNECT with a body")
            return False
        stream.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.tunnel = target
        conn.mode = Mode.CONNECT
        log.debug("offline internet: %s CONNECT %s:%d", conn.client, *target)
        first = stream.first_byte(time.monotonic() + self.limits.idle_timeout)
        if first is None:
            return False
        if first == _TLS_HANDSHAKE:
            self._handshake(stream, conn, target[0])
        return True

    # --- HTTP -----------------------------------------------------------------------------

    def _read_request(self, stream: _Stream) -> _Request | None:
        lim = self.limits
        try:
            while True:
                first = stream.first_byte(time.monotonic() + lim.idle_timeout)
                if first is None:
                    return None
                if first in (0x0D, 0x0A):  # stray CRLF between requests (RFC 9112, 2.2)
                    del stream.buf[:1]
                    continue
                break
        except TimeoutError:
            return None
        deadline = time.monotonic() + lim.request_timeout
        try:
            head = stream.read_until(b"\r\n\r\n", lim.max_head, deadline, 431)
        except TimeoutError:
            raise _HttpError(408, "request head not received in time") from None
        req = _parse_head(head, lim)
        try:
            req.body = self._read_body(stream, req, deadline)
        except TimeoutError:
            raise _HttpError(408, "request body not received in time") from None
        return req

    def _read_body(self, stream: _Stream, req: _Request, deadline: float) -> bytes:
        lim = self.limits
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te is not None and cl is not None:
            raise _HttpError(400, "both Transfer-Encoding and Content-Length")
        expect = (req.header("expect") or "").lower() == "100-continue"
        if te is not None:
            codings = [c.strip().lower() for c in te.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise _HttpError(501, f"transfer coding {te!r} not supported")
            if expect:
                stream.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            return self._read_chunked(stream, deadline)
        if cl is None:
            return b""
        values = {v.strip() for v in cl.split(",")}
        if len(values) != 1:
            raise _HttpError(400, "conflicting Content-Length values")
        value = values.pop()
        if not value.isdigit() or len(value) > 18:
            raise _HttpError(400, "bad Content-Length")
        n = int(value)
        if n > lim.max_body:
            raise _HttpError(413, f"body over {lim.max_body} bytes")
        if n and expect:
            stream.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return stream.read_exact(n, deadline)

    def _read_chunked(self, stream: _Stream, deadline: float) -> bytes:
        lim = self.limits
        parts: list[bytes] = []
        total = 0
        while True:
            line = stream.read_until(b"\r\n", lim.max_line, deadline, 400)[:-2]
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or not set(size_text) <= _HEX:
                raise _HttpError(400, "bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > lim.max_body:
                raise _HttpError(413, f"body over {lim.max_body} bytes")
            parts.append(stream.read_exact(size, deadline))
            if stream.read_exact(2, deadline) != b"\r\n":
                raise _HttpError(400, "chunk not followed by CRLF")
        trailer = 0
        while True:  # trailer fields, ignored
            line = stream.read_until(b"\r\n", lim.max_line, deadline, 431)
            if line == b"\r\n":
                return b"".join(parts)
            trailer += len(line)
            if trailer > lim.max_head:
                raise _HttpError(431, "trailer too large")

    def _answer(self, stream: _Stream, conn: _Conn, req: _Request, last: bool) -> bool:
        """Answer one request; whether the connection stays open."""
        target = _request_target(req, conn)
        if isinstance(target, _HttpError):
            self._fail(conn.client, "request", f"{target.status} {target.message}", conn.sni)
            self._send_error(stream, target.status, target.message)
            return False
        host, port, path, absolute = target
        mode = conn.mode if conn.tunnel is not None else (Mode.PROXY if absolute else Mode.DIRECT)
        headers = {k.lower(): v for k, v in req.headers}
        for k in headers:
            headers[k] = req.header(k) or ""
        try:
            resp = respond(host, req.method, path, headers, req.body, catalogue=self.catalogue)
        except Exception as exc:  # a bug in one answer must not cost the connection its reply
            log.exception("offline internet: no answer for %s %s%s", req.method, host, path[:200])
            self._fail(conn.client, "internal", repr(exc), conn.sni)
            resp = Response(500, (("Content-Type", "text/plain; charset=utf-8"),), b"error\n")
        keep = _keep_alive(req) and not last and not self._stopping.is_set()
        bodyless = req.method == "HEAD" or resp.status in _BODYLESS
        lines = [f"HTTP/1.1 {resp.status} {_phrase(resp.status)}"]
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        lines.append(f"Server: {SERVER_NAME}")
        lines.extend(f"{k}: {v}" for k, v in resp.headers)
        if resp.status not in _BODYLESS:
            lines.append(f"Content-Length: {len(resp.body)}")
        lines.append(f"Connection: {'keep-alive' if keep else 'close'}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        # Logged before sending, so a client that has its answer finds it in the log.
        entry = Exchange(
            time=req.received,
            client=conn.client,
            mode=mode,
            tls=conn.tls,
            sni=conn.sni,
            host=host,
            port=port,
            method=req.method,
            path=path,
            request_size=len(req.body),
            status=resp.status,
            response_size=0 if bodyless else len(resp.body),
            service=resp.service,
            duration_ms=round((time.monotonic() - req.started) * 1000, 3),
        )
        with self._cond:
            self._log.append(entry)
            self._cond.notify_all()
        log.info(
            "offline internet: %s %s %s%s -> %d %s (%d bytes in, tls=%s)",
            mode.value,
            req.method,
            host,
            path[:200],
            resp.status,
            resp.service,
            len(req.body),
            conn.tls,
        )
        stream.sendall(head if bodyless else head + resp.body)
        return keep

    def _send_error(self, stream: _Stream, status: int, message: str) -> None:
        body = f"{status} {_phrase(status)}: {message}\n".encode()
        head = (
            f"HTTP/1.1 {status} {_phrase(status)}\r\nServer: {SERVER_NAME}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        stream.sendall(head.encode() + body)

    # --- TLS contexts ---------------------------------------------------------------------

    def _context(self, host: str) -> ssl.SSLContext:
        """A server context presenting a leaf for ``host``, cached per name."""
        name = normalize_host(host)
        if not (valid_hostname(name) or _is_ip(name)):
            name = self.host
        with self._ctx_lock:
            ctx = self._contexts.get(name)
            if ctx is not None:
                return ctx
            if len(self._contexts) >= self.limits.max_hosts:
                name = self.host
                ctx = self._contexts.get(name)
                if ctx is not None:
                    return ctx
        cert, key = self.ca.leaf(name)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.sni_callback = self._on_sni
        with self._ctx_lock:
            return self._contexts.setdefault(name, ctx)

    def _on_sni(
        self, obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext
    ) -> int | None:
        if not name:
            return None
        setattr(obj, "auditor_sni", name)  # noqa: B010  # read back after the handshake
        try:
            obj.context = self._context(name)
        except Exception:  # a raise here would abort the handshake opaquely
            log.exception("offline internet: no certificate for SNI %r", name[:100])
        return None

    def _fail(self, client: str, stage: str, error: str, sni: str | None = None) -> None:
        entry = Failure(now_iso(), client, stage, error[:500], sni)
        with self._cond:
            self._failures.append(entry)
        log.info("offline internet: %s: %s failure: %s", client, stage, error[:200])


# --- helpers -----------------------------------------------------------------------------


def _parse_head(head: bytes, lim: Limits) -> _Request:
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    if len(request_line) > lim.max_line:
        raise _HttpError(414, "request line too long")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise _HttpError(400, "malformed request line")
    method_b, target_b, version_b = parts
    if not method_b or not set(method_b) <= _TOKEN_CHARS:
        raise _HttpError(400, "malformed method")
    if not target_b or any(c <= 0x20 or c >= 0x7F for c in target_b):
        raise _HttpError(400, "malformed request target")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version_b.startswith(b"HTTP/"):
            raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1")
        raise _HttpError(400, "malformed HTTP version")
    if len(lines) - 1 > lim.max_headers:
        raise _HttpError(431, f"more than {lim.max_headers} header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise _HttpError(400, "obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN_CHARS:
            raise _HttpError(400, "malformed header field")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise _HttpError(400, "control characters in a header value")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return _Request(
        method_b.decode("ascii"), target_b.decode("ascii"), version_b.decode("ascii"), headers
    )


def _request_target(req: _Request, conn: _Conn) -> tuple[str, int, str, bool] | _HttpError:
    """(host, port, path, absolute-form?) of a request, or the error to answer."""
    default_port = 443 if conn.tls else 80
    host_header = req.header("host")
    if req.target.startswith("/") or req.target == "*":
        path = req.target
        authority = _split_authority(host_header, default_port) if host_header else None
        if host_header and authority is None:
            return _HttpError(400, "bad Host header")
        if authority is not None:
            return authority[0], authority[1], path, False
        if conn.sni:
            return normalize_host(conn.sni), default_port, path, False
        if conn.tunnel is not None:
            return conn.tunnel[0], conn.tunnel[1], path, False
        return _HttpError(400, "no Host header")
    lowered = req.target[:8].lower()
    if lowered.startswith(("http://", "https://")):
        try:
            url = urlsplit(req.target)
            port = url.port or (443 if url.scheme.lower() == "https" else 80)
        except ValueError:
            return _HttpError(400, "bad absolute URL")
        host = normalize_host(url.hostname or "")
        if not host or not (valid_hostname(host) or _is_ip(host)):
            return _HttpError(400, "bad host in the absolute URL")
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return host, port, path, True
    return _HttpError(400, "unsupported request target")


def _split_authority(text: str | None, default_port: int | None) -> tuple[str, int] | None:
    """``host[:port]`` (or ``[v6]:port``) to (normalized host, port); None when malformed."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            return None
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else None)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
    if port_text is None:
        return None
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    elif default_port is None:
        return None
    else:
        port = default_port
    name = normalize_host(host) if not _is_ip(host) else host.lower()
    if not name or not (valid_hostname(name) or _is_ip(name)):
        return None
    return name, port


def _keep_alive(req: _Request) -> bool:
    tokens = {t.strip().lower() for t in (req.header("connection") or "").split(",")}
    if req.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"{type(exc).__name__}: {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fmt_addr(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host = addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"

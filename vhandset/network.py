"""The virtual handset's network stack: how its apps reach the (offline) internet.

Android's rules, applied to the device's own state:

- a global HTTP proxy (``settings global http_proxy``) on ``127.0.0.1:PORT`` means the device's
  own loopback, which on a USB phone reaches the host through ``adb reverse``: here, a
  device-initiated ADB stream ``OPEN("tcp:PORT")`` through the real adb server;
- ``10.0.2.2:PORT`` is the emulator's alias of the host's loopback: a direct connection;
- with no proxy, apps connect straight to the internet (the offline internet's port, standing
  for the address DNS gave);
- DNS over UDP and push channels on their own ports never use the proxy;
- Google's apps (:data:`QUIC_APPS`) try QUIC first for an https URL: a client Initial on UDP
  443 straight to the server, proxy or not. The offline internet speaks no QUIC, so no answer
  comes and the request goes on over TCP at once, as Chrome's network stack races the two;
  when the phone's OUTPUT chain drops UDP 443 (``iptables``, :mod:`.netfilter`) the Initial
  never leaves (``sendto`` fails with EPERM) and only the TCP request is seen.

HTTPS is real TLS. Apps verify certificates against the device's trust stores as they are at
that moment: system apps trust the system store (the conscrypt APEX store from Android 14),
ordinary apps the user store too, and a pinning app only the one CA it was built with.

While a connection is open its socket is listed in ``/proc/net/tcp*`` with the app's UID, and
what crosses it is kept in a bounded packet log (the source of ``tcpdump`` and of PCAPdroid on
the device), each transfer with the UID of the app whose socket it crossed.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mitmproxy import dns

from vhandset.android import global_http_proxy
from vhandset.quic import client_initial

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice

log = logging.getLogger(__name__)

TRUST_NONE = "none"  # cleartext only
TRUST_SYSTEM = "system"
TRUST_USER = "user"
TRUST_PINNED = "pinned"
KEEPALIVE = 5.0
# The double's QUIC speakers: Google's apps, whose network stack (Cronet, Chrome's) prefers QUIC
# to Google's servers; the studies dropped UDP 443 to make them fall back to TCP (Leith 2021).
QUIC_APPS = (
    "com.google.android.gms",
    "com.android.vending",
    "com.android.chrome",
    "com.google.android.youtube",
)


@dataclass(frozen=True, slots=True)
class Packet:
    """One logged transfer: a TCP payload chunk or a UDP datagram, as the device saw it.

    ``uid``: the app whose socket it crossed, as the kernel knows it (``/proc/net`` and
    ``getConnectionOwnerUid``); -1 when not known."""

    ts: float
    proto: str  # tcp | udp
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    flags: str = ""  # S (open), F (close), or "" for data
    uid: int = -1


class PacketLog:
    """The device's recent transfers, bounded; readers follow it by sequence number."""

    def __init__(self, limit: int = 200_000):
        self._packets: deque[Packet] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.seq = 0
        self.dropped = 0

    def add(self, p: Packet) -> None:
        with self._cond:
            if len(self._packets) == self._packets.maxlen:
                self.dropped += 1
            self._packets.append(p)
            self.seq += 1
            self._cond.notify_all()

    def snapshot(self) -> list[Packet]:
        with self._lock:
            return list(self._packets)

    def wait_beyond(self, seq: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.seq > seq, timeout)
            return self.seq

    def since(self, seq: int) -> tuple[list[Packet], int, int]:
        """The packets logged after ``seq``, the log's seq now, and how many of them the bound
        had already let go (a capture's "dropped by kernel")."""
        with self._lock:
            now = self.seq
            fresh = max(0, now - seq)
            kept = min(fresh, len(self._packets))
            packets = list(itertools.islice(reversed(self._packets), kept))
        packets.reverse()
        return packets, now, fresh - kept


@dataclass(frozen=True, slots=True)
class FetchResult:
    status: int
    body: bytes
    via: str  # reverse | emulator-host | direct


class TlsRejected(ConnectionError):
    """The app refused the server's certificate (as a pinning app or an untrusted CA would)."""


class DeviceNetwork:
    def __init__(
        self,
        device: VirtualDevice,
        internet: tuple[str, int],
        *,
        dns: tuple[str, int] | None = None,
        resolve: Callable[[str], list[str]] | None = None,
        pinned_ca: Path | None = None,
        packets: PacketLog | None = None,
    ):
        self.device = device
        self.internet = internet
        self.dns = dns
        self._resolve = resolve
        self.pinned_ca = pinned_ca
        self.packets = packets or PacketLog()
        self._ports = itertools.count(random.randint(35000, 45000))
        self.local_ip = device.profile.network.wlan_ipv4

    # ------------------------------------------------------------------------------ routing
    def proxy(self) -> tuple[str, int] | None:
        return global_http_proxy(self.device.get_setting("global", "http_proxy"))

    def resolve(self, host: str) -> str:
        if self._resolve:
            try:
                addrs = self._resolve(host)
            except Exception:  # noqa: BLE001 - a failed lookup is an unreachable host
                addrs = []
            v4 = [a for a in addrs if ":" not in a]
            if v4:
                return v4[0]
        return "198.18.0.1"

    def _connect(self, uid: int, host: str, port: int, *, use_proxy: bool) -> tuple[_Conn, str]:
        proxy = self.proxy() if use_proxy else None
        lport = next(self._ports)
        if proxy is not None:
            phost, pport = proxy
            if phost in ("127.0.0.1", "localhost", "::1"):
                sock = self.device.open_reverse(f"tcp:{pport}")
                if not isinstance(sock, socket.socket):
                    raise ConnectionRefusedError("no reverse tunnel")
                remote, via = ("127.0.0.1", pport), "reverse"
                local_ip = "127.0.0.1"
            elif phost == "10.0.2.2":
                sock = socket.create_connection(("127.0.0.1", pport), timeout=10)
                remote, via, local_ip = ("10.0.2.2", pport), "emulator-host", self.local_ip
            else:
                # A LAN proxy cannot be reached from a simulated phone; nothing leaves loopback.
                raise ConnectionRefusedError(f"proxy {phost}:{pport} is unreachable")
        else:
            sock = socket.create_connection(self.internet, timeout=10)
            remote, via, local_ip = (self.resolve(host), port), "direct", self.local_ip
        conn = _Conn(self, sock, uid, (local_ip, lport), remote)
        return conn, via

    # --------------------------------------------------------------------------------- HTTP
    def _context(self, trust: str, host: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if trust == TRUST_PINNED:
            if self.pinned_ca is None:
                raise ConnectionError("pinning app without its pinned CA")
            ctx.load_verify_locations(cafile=str(self.pinned_ca))
            return ctx
        pems = list(self.device.trusted_ca_files().values())
        if trust == TRUST_USER:
            pems += list(self.device.user_ca_files().values())
        loaded = 0
        for pem in pems:
            try:
                ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
                loaded += 1
            except (ssl.SSLError, ValueError):
                continue
        if not loaded:
            raise ConnectionError("empty trust store")
        return ctx

    def fetch(
        self,
        uid: int,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        trust: str = TRUST_SYSTEM,
        timeout: float = 15.0,
    ) -> FetchResult:
        u = urlsplit(url)
        host = u.hostname or ""
        tls = u.scheme == "https"
        if tls and trust == TRUST_NONE:
            raise ValueError("https needs a trust store")
        port = u.port or (443 if tls else 80)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        if tls and port == 443 and self.speaks_quic(uid):
            self.quic_attempt(uid, host)
        conn, via = self._connect(uid, host, port, use_proxy=True)
        try:
            sock: socket.socket = conn.sock
            sock.settimeout(timeout)
            proxied = via in ("reverse", "emulator-host")
            if tls:
                if proxied:
                    authority = f"{host}:{port}"
                    conn.send(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
                    head = conn.read_head()
                    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                        raise ConnectionError(f"proxy refused CONNECT: {head[:60]!r}")
                ctx = self._context(trust, host)
                try:
                    sock = conn.wrap_tls(ctx, host)
                except ssl.SSLCertVerificationError as exc:
                    raise TlsRejected(f"{host}: {exc.verify_message}") from None
                target = path
            else:
                target = url if proxied else path
                sock = conn.plain()  # type: ignore[assignment]
            hc = http.client.HTTPConnection(host, port, timeout=timeout)
            hc.sock = sock
            hdrs = {"Host": host if port in (80, 443) else f"{host}:{port}"}
            hdrs.update(headers or {})
            hc.request(method, target, body=body, headers=hdrs)
            resp = hc.getresponse()
            data = resp.read()
            return FetchResult(resp.status, data, via)
        finally:
            conn.close()

    # ---------------------------------------------------------------------- bypassing paths
    def speaks_quic(self, uid: int) -> bool:
        return any(self.device.package_uid(p) == uid for p in QUIC_APPS)

    def quic_attempt(self, uid: int, host: str) -> bool:
        """A QUIC client Initial to ``host``:443 over UDP, never through the proxy. Returns
        whether it left the phone (the packet filter may drop it)."""
        dst = self.resolve(host)
        family = "ipv6" if ":" in dst else "ipv4"
        tag = "cr_QuicStreamFactory"
        verdict = self.device.netfilter.verdict(family, "udp", 443)
        if verdict == "ACCEPT" and self.device.pcapdroid.blocks_quic:
            verdict = "DROP"  # PCAPdroid's VPN drops it (its block_quic setting)
        if verdict != "ACCEPT":
            why = "ERR_CONNECTION_REFUSED" if verdict == "REJECT" else "EPERM"
            self.device.log(
                tag, f"QUIC to {host}:443 failed ({why}); using TCP", priority="D", uid=uid
            )
            return False
        datagram = client_initial(host)
        lport = next(self._ports)
        handle = self.device.open_socket(uid, "udp", (self.local_ip, lport), (dst, 443), 7)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:  # into the offline internet, where nothing listens for it
                    s.sendto(datagram, self.internet)
                except OSError:
                    pass
            self.packets.add(
                Packet(time.time(), "udp", self.local_ip, lport, dst, 443, datagram, uid=uid)
            )
        finally:
            self.device.close_socket(handle)
        self.device.log(tag, f"no QUIC answer from {host}:443; using TCP", priority="D", uid=uid)
        return True

    def dns_query(self, uid: int, name: str) -> bytes | None:
        """A DNS query over UDP straight to the resolver (never through the proxy)."""
        if self.dns is None:
            return None
        try:
            query = _dns_query(name)
        except ValueError:  # an empty or overlong label: no resolver sends it
            return None
        lport = next(self._ports)
        resolver = ("10.0.0.53", 53)
        handle = self.device.open_socket(uid, "udp", (self.local_ip, lport), resolver, 7)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(query, self.dns)
                # Android 10+: the DnsResolver hands the socket to the asking app (fchown), so
                # the query is the app's own, as /proc/net and a VPN's owner lookup show it.
                self.packets.add(
                    Packet(time.time(), "udp", self.local_ip, lport, *resolver, query, uid=uid)
                )
                try:
                    reply, _ = s.recvfrom(4096)
                except TimeoutError:
                    return None
                self.packets.add(
                    Packet(time.time(), "udp", *resolver, self.local_ip, lport, reply, uid=uid)
                )
                return reply
        finally:
            self.device.close_socket(handle)

    def push(self, uid: int, host: str, port: int, hold: float = 2.0) -> bool:
        """A push channel on its own port: TLS straight to the server, proxy or not."""
        conn, _ = self._connect(uid, host, port, use_proxy=False)
        try:
            ctx = self._context(TRUST_SYSTEM, host)
            conn.sock.settimeout(10)
            conn.wrap_tls(ctx, host)
            conn.send(b"<stream:stream to='" + host.encode() + b"' version='1.0'>")
            time.sleep(hold)
            return True
        finally:
            conn.close()


class _Conn:
    """A device socket: registered in /proc/net while open, its bytes in the packet log."""

    def __init__(
        self,
        net: DeviceNetwork,
        sock: socket.socket,
        uid: int,
        local: tuple[str, int],
        remote: tuple[str, int],
    ):
        self.net = net
        self.raw = sock
        self.sock: socket.socket = sock
        self.local = local
        self.remote = remote
        self.uid = uid
        self.handle = net.device.open_socket(
            uid, "tcp6" if ":" in local[0] else "tcp", local, remote, "ESTABLISHED"
        )
        self._log(b"", out=True, flags="S")

    def _log(self, data: bytes, *, out: bool, flags: str = "") -> None:
        src, dst = (self.local, self.remote) if out else (self.remote, self.local)
        self.net.packets.add(
            Packet(time.time(), "tcp", src[0], src[1], dst[0], dst[1], data, flags, self.uid)
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self._log(data, out=True)

    def read_head(self) -> bytes:
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        self._log(buf, out=False)
        return buf

    def plain(self) -> _LoggingPlain:
        """The raw socket, with what crosses it logged (cleartext HTTP)."""
        wrapped = _LoggingPlain(self)
        self.sock = wrapped  # type: ignore[assignment]
        return wrapped

    def wrap_tls(self, ctx: ssl.SSLContext, host: str) -> socket.socket:
        """TLS over the raw socket; the ciphertext both ways goes to the packet log."""
        tls = _LoggingTls(self, ctx, host)
        self.sock = tls  # type: ignore[assignment]
        return tls  # type: ignore[return-value]

    def close(self) -> None:
        self._log(b"", out=True, flags="F")
        try:
            self.sock.close()
        finally:
            self.raw.close()
            # An HTTP client keeps an idle connection in its pool for a while (OkHttp: 5 min);
            # the socket stays in /proc/net for KEEPALIVE seconds, where the poller sees it.
            timer = threading.Timer(KEEPALIVE, self.net.device.close_socket, (self.handle,))
            timer.daemon = True
            timer.start()


class _LoggingPlain:
    """A socket-like view of a connection's raw socket that logs every chunk both ways."""

    def __init__(self, conn: _Conn):
        self.conn = conn
        self.raw = conn.raw

    def sendall(self, data: bytes) -> None:
        self.raw.sendall(data)
        self.conn._log(bytes(data), out=True)

    send = sendall

    def recv(self, n: int) -> bytes:
        data = self.raw.recv(n)
        if data:
            self.conn._log(data, out=False)
        return data

    def recv_into(self, buf: memoryview | bytearray, n: int = 0) -> int:
        data = self.recv(n or len(buf))
        buf[: len(data)] = data
        return len(data)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> object:
        return socket.SocketIO(self, mode.replace("b", ""))  # type: ignore[arg-type]

    def settimeout(self, t: float | None) -> None:
        self.raw.settimeout(t)

    def gettimeout(self) -> float | None:
        return self.raw.gettimeout()

    def setsockopt(self, *args: object) -> None:
        return None

    def close(self) -> None:
        return None  # the connection closes the raw socket

    def fileno(self) -> int:
        return self.raw.fileno()

    def _decref_socketios(self) -> None:
        return None


class _LoggingTls:
    """A socket-like TLS client over a memory BIO, so that every TLS record it sends and
    receives is logged as the packet it would be on the wire."""

    def __init__(self, conn: _Conn, ctx: ssl.SSLContext, host: str):
        self.conn = conn
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=host)
        self._timeout: float | None = conn.raw.gettimeout()
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self.conn.raw.sendall(data)
            self.conn._log(data, out=True)

    def _fill(self) -> None:
        data = self.conn.raw.recv(65536)
        if not data:
            self.inc.write_eof()
            raise ssl.SSLEOFError("connection closed during TLS")
        self.conn._log(data, out=False)
        self.inc.write(data)

    def sendall(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    send = sendall

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                try:
                    self._fill()
                except ssl.SSLEOFError:
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def recv_into(self, buf: memoryview | bytearray, n: int = 0) -> int:
        data = self.recv(n or len(buf))
        buf[: len(data)] = data
        return len(data)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> object:
        return socket.SocketIO(self, mode.replace("b", ""))  # type: ignore[arg-type]

    def settimeout(self, t: float | None) -> None:
        self._timeout = t
        self.conn.raw.settimeout(t)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setsockopt(self, *args: object) -> None:
        return None

    def close(self) -> None:
        try:
            self.obj.unwrap()
            self._flush()
        except (ssl.SSLError, OSError, ValueError):
            pass

    def fileno(self) -> int:
        return self.conn.raw.fileno()

    def _decref_socketios(self) -> None:
        return None


def _dns_query(name: str) -> bytes:
    """A recursive A query for ``name``, as the phone's resolver sends it (``mitmproxy.dns``)."""
    return dns.DNSMessage(
        id=random.randint(0, 0xFFFF),
        query=True,
        op_code=0,
        authoritative_answer=False,
        truncation=False,
        recursion_desired=True,
        recursion_available=False,
        reserved=0,
        response_code=0,
        questions=[dns.Question(name.rstrip("."), 1, 1)],  # A, IN
        answers=[],
        authorities=[],
        additionals=[],
    ).packed

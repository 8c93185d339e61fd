"""The device side of ADB over TCP: a virtual adbd that the real adb server talks to as to a phone.

:class:`AdbDaemon` listens on a TCP port. The adb server connects to it (``adb connect
127.0.0.1:PORT``, or by itself as ``emulator-5554`` when the port is 5555) and gets one transport
per connection: CNXN/AUTH handshake, then multiplexed streams, each service in its own thread.
Services: ``shell:``/``shell,v2,…:``/``exec:``, ``sync:``, ``reverse:``, ``root:``/``unroot:``,
``reboot:`` and ``reconnect``; anything else is refused with CLSE, as adbd refuses a failed OPEN.

The transport knows nothing of Android: it hands commands, files and reboots to a
:class:`~vhandset.interface.DeviceBackend`.

Long because: one transport's state machine (handshake, streams, their windows and
services) shares its locks and buffers; the wire format, sync and reverse are already apart.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Self

from vhandset.adb_reverse import ReverseTable
from vhandset.adb_sync import serve_sync
from vhandset.adb_wire import (
    A_VERSION,
    AUTH_TOKEN_SIZE,
    HEADER,
    MAX_PAYLOAD,
    MIN_PEER_PAYLOAD,
    AuthType,
    Command,
    Message,
    ProtocolError,
    ShellPacket,
    ShellPacketReader,
    ShellRequest,
    device_banner,
    pack_message,
    pack_shell_exit,
    pack_shell_packet,
    parse_shell_service,
    unpack_header,
)
from vhandset.interface import DeviceBackend, ReverseOpener, ShellProcess

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5555  # the port the adb server scans for emulators (as emulator-5554)
HANDSHAKE_TIMEOUT = 10.0  # a peer that sends no CNXN by then is not an adb server
OPEN_TIMEOUT = 10.0  # how long a reverse tunnel waits for the host to connect its end
MAX_STREAMS = 256  # per transport; a host that opens more is refused, not given threads
MAX_BUFFERED = 4 * MAX_PAYLOAD  # unread WRTE data a host may pile up before it is dropped
POLL_INTERVAL = 0.1  # how often the listener checks the backend (online, authorized)


class StreamClosed(Exception):
    """The stream, or its whole transport, is gone."""


class _Stream:
    """One multiplexed stream. Reader-thread methods feed it; a service thread reads and writes.

    Flow control as adbd: after each WRTE we wait for the host's OKAY, and we acknowledge each
    host WRTE only when the service has taken it, which is what throttles a fast ``push``.
    """

    def __init__(self, transport: _Transport, local_id: int, remote_id: int, name: str) -> None:
        self.transport = transport
        self.local_id = local_id
        self.remote_id = remote_id  # 0 while a device-initiated OPEN awaits the host's answer
        self.name = name
        self.closed_by_peer = False
        self._cond = threading.Condition()
        self._inbound: deque[bytes] = deque()
        self._buffered = 0
        self._can_send = remote_id != 0
        self._closed = False

    # --- called by the transport's reader thread

    def deliver(self, data: bytes) -> bool:
        """Queue host data; False when the host ignores flow control."""
        with self._cond:
            if self._closed:
                return True
            self._inbound.append(data)
            self._buffered += len(data)
            self._cond.notify_all()
            return self._buffered <= MAX_BUFFERED

    def acknowledge(self, remote_id: int) -> None:
        with self._cond:
            if self.remote_id == 0:
                self.remote_id = remote_id
            elif remote_id != self.remote_id:
                return
            self._can_send = True
            self._cond.notify_all()

    def peer_closed(self) -> None:
        with self._cond:
            if not self._closed:
                self.closed_by_peer = True
            self._closed = True
            self._cond.notify_all()

    # --- called by the service

    def read(self) -> bytes | None:
        """The next chunk the host wrote, or None once the stream is closed."""
        with self._cond:
            while not self._inbound and not self._closed:
                self._cond.wait()
            if not self._inbound:
                return None
            data = self._inbound.popleft()
            self._buffered -= len(data)
            acknowledge = not self._closed
        if acknowledge:
            self.transport.send(Command.OKAY, self.local_id, self.remote_id)
        return data

    def write(self, data: bytes) -> None:
        """Send ``data`` in WRTEs no larger than the negotiated payload, one OKAY at a time."""
        limit = self.transport.peer_payload
        view = memoryview(data)
        for start in range(0, len(view), limit):
            with self._cond:
                while not self._can_send and not self._closed:
                    self._cond.wait()
                if self._closed:
                    raise StreamClosed(self.name)
                self._can_send = False
            chunk = bytes(view[start : start + limit])
            if not self.transport.send(Command.WRTE, self.local_id, self.remote_id, chunk):
                raise StreamClosed(self.name)

    def wait_opened(self, timeout: float) -> bool:
        """For a device-initiated stream: True once the host answered OKAY."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.remote_id == 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return not self._closed

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self.transport.forget(self)
        if self.remote_id:
            self.transport.send(Command.CLSE, self.local_id, self.remote_id)


class _StreamChannel:
    """A stream as the sync service's byte channel: exact reads, writes batched into WRTEs."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._in = bytearray()
        self._out = bytearray()

    def read_exact(self, size: int) -> bytes:
        while len(self._in) < size:
            data = self._stream.read()
            if data is None:
                raise EOFError
            self._in += data
        result = bytes(self._in[:size])
        del self._in[:size]
        return result

    def write(self, data: bytes) -> None:
        self._out += data
        if len(self._out) >= self._stream.transport.peer_payload:
            self.flush()

    def flush(self) -> None:
        if self._out:
            data, self._out = bytes(self._out), bytearray()
            self._stream.write(data)


class _Once:
    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            action, self._action = self._action, None
        if action is not None:
            action()


# --- services ---------------------------------------------------------------------------

Service = Callable[[_Stream], None]


def _feed_stdin(stream: _Stream, close: _Once, process: ShellProcess, framed: bool) -> None:
    reader = ShellPacketReader() if framed else None
    try:
        while (data := stream.read()) is not None:
            if reader is None:
                process.feed_stdin(data)
                continue
            for kind, payload in reader.feed(data):
                if kind == ShellPacket.STDIN:
                    process.feed_stdin(payload)
                # CLOSE_STDIN and WINDOW_SIZE have no counterpart in ShellProcess.
    except ProtocolError as exc:
        logger.warning("%s: %s", stream.name, exc)
        stream.close()
    if stream.closed_by_peer:
        close()


def _serve_shell(backend: DeviceBackend, request: ShellRequest, stream: _Stream) -> None:
    process = backend.shell(request.command, pty=request.pty)
    close = _Once(process.close)
    stream.transport.daemon.spawn(
        f"{stream.name} stdin", _feed_stdin, stream, close, process, request.shell_protocol
    )
    try:
        for kind, data in process.chunks():
            if data:
                stream.write(pack_shell_packet(kind, data) if request.shell_protocol else data)
        if request.shell_protocol:
            code = process.exit_code
            stream.write(pack_shell_exit(0 if code is None else code))
    except StreamClosed:
        close()


def _serve_sync(backend: DeviceBackend, stream: _Stream) -> None:
    serve_sync(backend.fs, _StreamChannel(stream))


def _serve_reverse(transport: _Transport, request: str, stream: _Stream) -> None:
    stream.write(transport.reverse_request(request))


def _serve_root(daemon: AdbDaemon, unroot: bool, stream: _Stream) -> None:
    backend = daemon.backend
    restart, message = backend.adb_unroot() if unroot else backend.adb_root()
    stream.write(message.encode("utf-8"))
    stream.close()
    if restart:
        # adbd exits and init starts it again: every connection drops, the server reconnects.
        daemon.drop_transports("adbd restarting")


def _serve_reboot(daemon: AdbDaemon, target: str, stream: _Stream) -> None:
    daemon.backend.reboot(target)
    stream.close()
    daemon.drop_transports(f"rebooting {target or 'system'}")


def _serve_reconnect(transport: _Transport, stream: _Stream) -> None:
    stream.write(b"done")
    stream.close()
    transport.close()


def resolve_service(transport: _Transport, destination: str) -> Service | None:
    """The handler for an OPEN, or None to refuse it."""
    backend = transport.daemon.backend
    shell = parse_shell_service(destination)
    if shell is not None:
        # An interactive shell (no command) is beyond the simulated phone.
        return partial(_serve_shell, backend, shell) if shell.command else None
    if destination.startswith("sync:"):
        return partial(_serve_sync, backend)
    if destination.startswith("reverse:"):
        return partial(_serve_reverse, transport, destination[len("reverse:") :])
    if destination.startswith(("root:", "unroot:")):
        return partial(_serve_root, transport.daemon, destination.startswith("unroot:"))
    if destination.startswith("reboot:"):
        return partial(_serve_reboot, transport.daemon, destination[len("reboot:") :])
    if destination == "reconnect":
        return partial(_serve_reconnect, transport)
    return None


# --- reverse tunnels ------------------------------------------------------------------------


class _Bridge:
    """Pumps between a local socket and a stream; the socket is closed when both pumps end."""

    def __init__(self, sock: socket.socket, stream: _Stream) -> None:
        self.sock = sock
        self.stream = stream
        self._running = 2
        self._lock = threading.Lock()

    def socket_to_stream(self) -> None:
        try:
            while data := self.sock.recv(self.stream.transport.peer_payload):
                self.stream.write(data)
        except (OSError, StreamClosed):
            pass
        finally:
            self.stream.close()
            self._done()

    def stream_to_socket(self) -> None:
        try:
            while (data := self.stream.read()) is not None:
                self.sock.sendall(data)
        except OSError:
            pass
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.stream.close()
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self.sock.close()


class _TransportOpener:
    """The :class:`ReverseOpener` of one transport."""

    def __init__(self, transport: _Transport) -> None:
        self._transport = transport

    def open(self, device_spec: str) -> socket.socket:
        transport = self._transport
        host_spec = transport.reverse_target(device_spec)
        if host_spec is None:
            # adb 36 kills the whole server when a device opens an unregistered address.
            raise ConnectionRefusedError(f"no reverse forward registered for {device_spec}")
        stream = transport.open_stream(host_spec, OPEN_TIMEOUT)
        if stream is None:
            raise ConnectionRefusedError(f"host refused {host_spec} (reverse {device_spec})")
        ours, theirs = socket.socketpair()
        bridge = _Bridge(ours, stream)
        transport.daemon.spawn(f"{stream.name} out", bridge.socket_to_stream)
        transport.daemon.spawn(f"{stream.name} in", bridge.stream_to_socket)
        return theirs


# --- transport ------------------------------------------------------------------------------


class _Transport:
    """One connection from an adb server: handshake, then packets dispatched to streams."""

    def __init__(self, daemon: AdbDaemon, sock: socket.socket, name: str) -> None:
        self.daemon = daemon
        self.sock = sock
        self.name = name
        self.peer_payload = daemon.max_payload
        self.opener = _TransportOpener(self)
        self._reverse = ReverseTable(label=name)
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._next_id = 1
        self._handshaken = False
        self._awaiting_auth = False
        self._online = False
        self._closed = threading.Event()

    @property
    def online(self) -> bool:
        return self._online and not self._closed.is_set()

    # --- sending

    def send(self, command: Command, arg0: int, arg1: int, payload: bytes = b"") -> bool:
        data = pack_message(Message(command, arg0, arg1, payload))
        with self._send_lock:
            if self._closed.is_set():
                return False
            try:
                self.sock.sendall(data)
            except OSError as exc:
                logger.info("%s: send failed: %s", self.name, exc)
                self.close()
                return False
        return True

    def close(self) -> None:
        """Drop the connection; the reader thread then tears the transport down."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- reading

    def run(self) -> None:
        try:
            self.sock.settimeout(HANDSHAKE_TIMEOUT)
            while (message := self._read_message()) is not None:
                self._dispatch(message)
        except ProtocolError as exc:
            logger.warning("%s: dropping connection: %s", self.name, exc)
        except TimeoutError:
            logger.warning("%s: no CNXN within %.0f s, dropping", self.name, HANDSHAKE_TIMEOUT)
        except OSError as exc:
            if not self._closed.is_set():
                logger.info("%s: connection lost: %s", self.name, exc)
        except Exception:
            logger.exception("%s: transport failed", self.name)
        finally:
            self._teardown()

    def _recv_exact(self, size: int) -> bytes | None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = self.sock.recv_into(view[got:])
            if count == 0:
                return None
            got += count
        return bytes(buffer)

    def _read_message(self) -> Message | None:
        raw = self._recv_exact(HEADER.size)
        if raw is None:
            return None
        header = unpack_header(raw, self.daemon.max_payload)
        payload = self._recv_exact(header.data_length) if header.data_length else b""
        if payload is None:
            return None
        return Message(header.command, header.arg0, header.arg1, payload)

    def _dispatch(self, message: Message) -> None:
        command = message.command
        if not self._handshaken and command != Command.CNXN:
            raise ProtocolError(f"{command.name} before CNXN")
        if command == Command.CNXN:
            self._on_connect(message)
        elif command == Command.AUTH:
            self._on_auth(message)
        elif command == Command.OPEN:
            self._on_open(message)
        elif command == Command.OKAY:
            self._on_okay(message)
        elif command == Command.WRTE:
            self._on_write(message)
        elif command == Command.CLSE:
            self._on_close(message)
        else:
            raise ProtocolError(f"unexpected {command.name}")

    def _on_connect(self, message: Message) -> None:
        if message.arg1 < MIN_PEER_PAYLOAD:
            raise ProtocolError(f"peer max payload {message.arg1}")
        self.peer_payload = min(self.daemon.max_payload, message.arg1)
        self.sock.settimeout(None)
        self._handshaken = True
        if self._online:
            # A second CNXN restarts the session, as adbd's handle_new_connection does.
            self._close_streams()
            self._online = False
        if self.daemon.backend.authorized:
            self._go_online()
        else:
            self._awaiting_auth = True
            self._send_token()

    def _send_token(self) -> None:
        self.send(Command.AUTH, AuthType.TOKEN, 0, secrets.token_bytes(AUTH_TOKEN_SIZE))

    def _go_online(self) -> None:
        with self._lock:
            if self._online:
                return
            self._online = True
            self._awaiting_auth = False
        banner = device_banner(self.daemon.backend.banner_props())
        self.send(Command.CNXN, A_VERSION, self.peer_payload, banner)
        logger.info("%s: online (max payload %d)", self.name, self.peer_payload)
        self.daemon.transport_online(self)

    def poll_authorization(self) -> None:
        """Go online once the user "allows USB debugging" (the backend turns authorized)."""
        if self._awaiting_auth and self.daemon.backend.authorized:
            self._go_online()

    def _on_auth(self, message: Message) -> None:
        if not self._awaiting_auth:
            return
        if self.daemon.backend.authorized:
            self._go_online()
        elif message.arg0 == AuthType.SIGNATURE:
            # No key is ever accepted: a fresh token makes the server try its next key, then
            # send its public key, and list the device as unauthorized.
            self._send_token()
        elif message.arg0 != AuthType.RSAPUBLICKEY:
            logger.info("%s: ignoring AUTH type %d", self.name, message.arg0)

    def _allocate_id(self) -> int:
        while self._next_id == 0 or self._next_id in self._streams:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        local_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return local_id

    def _register(self, remote_id: int, name: str) -> _Stream | None:
        with self._lock:
            if len(self._streams) >= MAX_STREAMS:
                return None
            stream = _Stream(self, self._allocate_id(), remote_id, f"{self.name} {name}")
            self._streams[stream.local_id] = stream
            return stream

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            if self._streams.get(stream.local_id) is stream:
                del self._streams[stream.local_id]

    def _find(self, local_id: int) -> _Stream | None:
        with self._lock:
            return self._streams.get(local_id)

    def _on_open(self, message: Message) -> None:
        if not self.online or message.arg0 == 0:
            return
        destination = message.payload.rstrip(b"\0").decode("utf-8", "replace")
        service = resolve_service(self, destination) if message.arg1 == 0 else None
        stream = self._register(message.arg0, destination) if service is not None else None
        if service is None or stream is None:
            logger.info("%s: refusing service %r", self.name, destination)
            self.send(Command.CLSE, 0, message.arg0)
            return
        logger.debug("%s: open %r as stream %d", self.name, destination, stream.local_id)
        self.send(Command.OKAY, stream.local_id, stream.remote_id)
        self.daemon.spawn(stream.name, self._run_service, service, stream)

    def _run_service(self, service: Service, stream: _Stream) -> None:
        try:
            service(stream)
        except StreamClosed:
            pass
        except Exception:
            logger.exception("%s: service failed", stream.name)
        finally:
            stream.close()

    def _on_okay(self, message: Message) -> None:
        if not self.online or message.arg0 == 0 or message.arg1 == 0 or message.payload:
            return
        stream = self._find(message.arg1)
        if stream is None:
            # The host answered an OPEN we gave up on: close its end again.
            self.send(Command.CLSE, message.arg1, message.arg0)
            return
        stream.acknowledge(message.arg0)

    def _on_write(self, message: Message) -> None:
        if not self.online or message.arg0 == 0 or message.arg1 == 0:
            return
        stream = self._find(message.arg1)
        if stream is None or stream.remote_id != message.arg0:
            return
        if not stream.deliver(message.payload):
            raise ProtocolError(f"stream {stream.local_id}: host ignores flow control")

    def _on_close(self, message: Message) -> None:
        if not self.online or message.arg1 == 0:
            return
        stream = self._find(message.arg1)
        if stream is None or message.arg0 not in (0, stream.remote_id):
            return
        self.forget(stream)
        stream.peer_closed()

    def _close_streams(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream.peer_closed()

    def _teardown(self) -> None:
        self._closed.set()
        was_online = self._online
        self._online = False
        self._close_streams()
        try:
            self.sock.close()
        except OSError:
            pass
        logger.info("%s: disconnected", self.name)
        self.daemon.transport_gone(self, was_online)

    # --- device-initiated streams and the reverse table

    def open_stream(self, destination: str, timeout: float) -> _Stream | None:
        """OPEN a stream to the host (a reverse tunnel); None when refused or timed out."""
        if not self.online:
            return None
        stream = self._register(0, destination)
        if stream is None:
            return None
        if not self.send(Command.OPEN, stream.local_id, 0, destination.encode("utf-8") + b"\0"):
            stream.close()
            return None
        if not stream.wait_opened(timeout):
            stream.close()
            return None
        return stream

    def reverse_request(self, request: str) -> bytes:
        with self._lock:
            reply, changed = self._reverse.handle(request)
            table = dict(self._reverse.forwards)
        if changed:
            logger.info("%s: reverse table now %s", self.name, table)
            self.daemon.sync_backend()
        return reply

    def reverse_target(self, device_spec: str) -> str | None:
        with self._lock:
            return self._reverse.host_spec(device_spec)

    def reverse_table(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reverse.forwards)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- the daemon -----------------------------------------------------------------------------


class AdbDaemon:
    """A virtual adbd on a TCP port, serving ``backend`` to any adb server that connects.

    Example::

        with AdbDaemon(backend, port=0) as adbd:
            subprocess.run(["adb", "connect", adbd.address])
            adbd.serve_forever()  # until stop() or Ctrl-C

    ``port=5555`` lets a freshly started adb server find it by itself as ``emulator-5554``.
    """

    def __init__(
        self,
        backend: DeviceBackend,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        if not MIN_PEER_PAYLOAD <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in [{MIN_PEER_PAYLOAD}, {MAX_PAYLOAD}]")
        self.backend = backend
        self.host = host
        self.max_payload = max_payload
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._lock = threading.Lock()
        self._notify_lock = threading.RLock()
        self._transports: list[_Transport] = []
        self._online: list[_Transport] = []
        self._attached: _Transport | None = None
        self._reported: dict[str, str] | None = None
        self._threads: set[threading.Thread] = set()
        self._counter = 0
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._accept_thread: threading.Thread | None = None

    # --- lifecycle

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when constructed with ``port=0``)."""
        if self._port is None:
            raise RuntimeError("AdbDaemon is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as given to ``adb connect``."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("AdbDaemon already started")
        listener = socket.create_server((self.host, self._requested_port))
        listener.settimeout(POLL_INTERVAL)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"adbd accept {self.address}", daemon=True
        )
        self._accept_thread.start()
        logger.info("virtual adbd listening on %s", self.address)
        if not _is_loopback(self.host):
            logger.warning(
                "virtual adbd on %s is reachable from the network: whoever connects gets a "
                "shell on the simulated phone",
                self.address,
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, end the services, join their threads."""
        if self._listener is None or self._stopping.is_set():
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        self.drop_transports("stopping")
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
            remaining = deadline - time.monotonic()
            if not threads or remaining <= 0:
                break
            threads[0].join(remaining)
        if threads:
            logger.warning("%d adbd threads still running after stop", len(threads))
        self._stopped.set()
        logger.info("virtual adbd on %s stopped", self.address)

    def serve_forever(self) -> None:
        """Block until :meth:`stop` is called (from another thread or a signal handler)."""
        self._stopped.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._transports)

    def drop_transports(self, reason: str) -> None:
        with self._lock:
            transports = list(self._transports)
        if transports:
            logger.info("dropping %d connection(s): %s", len(transports), reason)
        for transport in transports:
            transport.close()

    def spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        """Run ``target`` in a tracked daemon thread that :meth:`stop` joins."""

        def run() -> None:
            try:
                target(*args)
            except Exception:
                logger.exception("%s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    # --- accepting

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            online = self._watch_backend()
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                logger.warning("accept failed: %s", exc)
                time.sleep(POLL_INTERVAL)
                continue
            if not online:  # sampled before accept() waited: the device may be back now
                online = self._watch_backend()
            if not online or self._stopping.is_set():
                logger.info("refusing %s while the device is offline", peer)
                conn.close()
                continue
            try:
                self._accept(conn, peer)
            except OSError as exc:
                logger.info("connection from %s lost at once: %s", peer, exc)
                conn.close()

    def _accept(self, conn: socket.socket, peer: object) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._counter += 1
            transport = _Transport(self, conn, f"host-{self._counter}")
            self._transports.append(transport)
        logger.info("%s: connection from %s", transport.name, peer)
        self.spawn(f"adbd {transport.name}", transport.run)

    def _watch_backend(self) -> bool:
        """Drop every connection while the device is offline; admit newly authorized ones."""
        try:
            online = self.backend.online
            if not online:
                self.drop_transports("device offline")
                return False
            with self._lock:
                transports = list(self._transports)
            for transport in transports:
                transport.poll_authorization()
            return True
        except Exception:
            logger.exception("backend check failed")
            return False

    # --- what the backend is told

    def transport_online(self, transport: _Transport) -> None:
        with self._lock:
            if transport in self._online:
                self._online.remove(transport)  # a second CNXN on the same connection
            self._online.append(transport)
        self.sync_backend()

    def transport_gone(self, transport: _Transport, was_online: bool) -> None:
        with self._lock:
            if transport in self._transports:
                self._transports.remove(transport)
            if transport in self._online:
                self._online.remove(transport)
        if was_online:
            self.sync_backend()

    def sync_backend(self) -> None:
        """Attach the newest live transport to the backend and report its reverse table."""
        with self._notify_lock:
            with self._lock:
                active = self._online[-1] if self._online else None
            table = active.reverse_table() if active is not None else {}
            if active is not self._attached:
                self._attached = active
                opener: ReverseOpener | None = active.opener if active is not None else None
                self.backend.attach_transport(opener)
            if table != self._reported:
                self._reported = table
                self.backend.reverse_changed(dict(table))

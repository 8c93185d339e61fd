"""PCAPdroid on the virtual handset: its control API and its packet exporters.

PCAPdroid (``com.emanuelef.remote_capture``) captures without root: it is a ``VpnService``, so
every packet an app sends or receives off the device crosses it. Other software drives it with
``am start -e action start|stop|get_status [-e SETTING VALUE]... -n
com.emanuelef.remote_capture/.activities.CaptureCtrl`` (PCAPdroid ``docs/app_api.md``). What
is modelled, and how it follows the app's source (emanuele-f/PCAPdroid):

- **what it sees**: every transfer in the device's packet log (:mod:`.network`) from the moment
  the capture starts, except loopback traffic, which never reaches a VPN (so nothing an app
  sends to a proxy at ``127.0.0.1`` behind ``adb reverse``). ``app_filter`` keeps the packets
  of that package's UID (several packages: comma-separated); a package that is not installed
  filters nothing, as ``AppsResolver.getUid`` then gives no UID.
- **export** (``pcap_dump_mode``): ``tcp_exporter`` connects to ``collector_ip_address:
  collector_port`` when the capture starts (``TCPDumper.startDumper``) as any socket of the
  phone would: ``127.0.0.1:P`` is the phone's own loopback, which reaches the host only through
  ``adb reverse tcp:P ...``; ``10.0.2.2`` is the emulator's alias of the host. The pcap header
  goes with the first packets, then records as they come. A failed connect or write ends the
  capture, as ``CaptureService.dumpWork`` does. ``udp_exporter`` sends the header and then one
  datagram per record (``UDPDumper``); the simulated phone shares the host's loopback for
  them (no adb tunnel carries UDP; a real phone needs the host's LAN address). ``none``
  captures without exporting. Other modes (``pcap_file``, ``http_server``) are refused.
  A collector outside the local networks is refused, as since 1.5.3.
- **records** (``pcap_dump.c``): snaplen 65535; raw IP (link type 101), or with
  ``pcapdroid_trailer`` / ``dump_extensions`` Ethernet with the per-packet trailer
  (:func:`vhandset.synth.pcapdroid_frame`). The packets keep the addresses the
  network stack logged (a real capture shows PCAPdroid's tun address, 10.215.173.1).
- **the trailer's app name**: PCAPdroid writes the app's label (``AppDescriptor.getName``);
  profiles carry no labels, so the package name is written (the lowest of a shared UID, as
  ``AppsResolver`` picks), and PCAPdroid's own names for the system UIDs it knows. An unknown
  UID gets an empty name.
- **DNS**: a query is its app's own (Android 10+ resolver hands its socket to the app).
- **consent**: a real phone asks the user before each request from ``adb shell`` (it has no
  calling package; 1.8.6+ can skip the prompt with an API key), and the first capture also
  needs the VPN prompt accepted. Here consent is taken as given.

The capture stops on ``action stop``, on a force-stop of the app and on reboot.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from auditor.packets.pcapwrite import LINKTYPE_ETHERNET, LINKTYPE_RAW, global_header, record
from vhandset.synth import PacketSynth, pcapdroid_frame

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice
    from vhandset.network import Packet

log = logging.getLogger(__name__)

PACKAGE = "com.emanuelef.remote_capture"
CTRL_ACTIVITY = f"{PACKAGE}.activities.CaptureCtrl"
SERVICE = f"{PACKAGE}/.CaptureService"
SNAPLEN = 65535
DEFAULT_COLLECTOR = ("127.0.0.1", 1234)
EXPORT_MODES = ("none", "udp_exporter", "tcp_exporter")
POLL = 0.2  # how often the capture looks at its stop flag while no packet comes
SEND_TIMEOUT = 10.0  # a collector that takes nothing for this long ends the capture
JOIN_TIMEOUT = 3.0
EMULATOR_HOST = "10.0.2.2"
# AppsResolver.initVirtualApps: UIDs PCAPdroid names itself, before asking the package manager
VIRTUAL_APPS = {
    0: "Root",
    1000: "Android",
    1013: "MediaServer",
    1020: "MulticastDNSResponder",
    1021: "GPS",
    1051: "netd",
    9999: "Nobody",
}


class SettingsError(ValueError):
    """A start request PCAPdroid refuses."""


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """The part of PCAPdroid's ``CaptureSettings`` (from a start intent's extras) modelled."""

    dump_mode: str
    collector: tuple[str, int]
    app_filter: tuple[str, ...] = ()
    trailer: bool = False
    block_quic: bool = False  # the block_quic extra is "always" (app_api.md, version code 73)

    @classmethod
    def from_extras(cls, extras: Mapping[str, str]) -> CaptureSettings:
        mode = extras.get("pcap_dump_mode", "none")
        if mode not in EXPORT_MODES:
            raise SettingsError(f"pcap_dump_mode {mode!r} is not modelled by the virtual handset")
        host = extras.get("collector_ip_address", DEFAULT_COLLECTOR[0])
        try:
            addr = ipaddress.ip_address(host)
            port = int(extras.get("collector_port", str(DEFAULT_COLLECTOR[1])))
        except ValueError:
            raise SettingsError(f"bad collector {host}:{extras.get('collector_port')}") from None
        if not 0 < port < 65536:
            raise SettingsError(f"bad collector port {port}")
        if mode != "none" and not (addr.is_private or addr.is_loopback or addr.is_link_local):
            # CaptureCtrl.checkRemoteServerNotAllowed (since 1.5.3)
            raise SettingsError(f"remote collector {host} not allowed")
        apps = tuple(a for a in extras.get("app_filter", "").split(",") if a)
        trailer = any(
            extras.get(k, "").lower() in ("true", "1")
            for k in ("pcapdroid_trailer", "dump_extensions")
        )
        # as Prefs.getBlockQuicMode reads it: "always", "to_decrypt" (no decryption is modelled,
        # so nothing to decrypt) or anything else, the old boolean included, as "never"
        block_quic = extras.get("block_quic", "") == "always"
        return cls(mode, (str(addr), port), apps, trailer, block_quic)


@dataclass(frozen=True, slots=True)
class CaptureStatus:
    """What ``get_status`` answers (and ``stop``: the capture's statistics)."""

    running: bool
    packets: int = 0
    bytes_dumped: int = 0
    error: str | None = None


# ---- exporters ---------------------------------------------------------------------------------


class _Exporter(Protocol):
    def send(self, header: bytes, records: list[bytes]) -> None: ...

    def close(self) -> None: ...


class _TcpExporter:
    """``TCPDumper``: one stream, the pcap header first."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(SEND_TIMEOUT)
        self._header_sent = False

    def send(self, header: bytes, records: list[bytes]) -> None:
        head = b"" if self._header_sent else header
        self.sock.sendall(head + b"".join(records))
        self._header_sent = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()


class _UdpExporter:
    """``UDPDumper``: the header in a datagram of its own, then one datagram per record.
    ``target`` None: the collector is on a network the simulated phone cannot reach."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._header_sent = False

    def send(self, header: bytes, records: list[bytes]) -> None:
        if self.target is None:
            return
        if not self._header_sent:
            self.sock.sendto(header, self.target)
            self._header_sent = True
        for rec in records:
            self.sock.sendto(rec, self.target)

    def close(self) -> None:
        self.sock.close()


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


# ---- the app -----------------------------------------------------------------------------------


class _Run:
    """One capture, from start to stop."""

    def __init__(self, settings: CaptureSettings, uids: frozenset[int] | None, seq: int) -> None:
        self.settings = settings
        self.uids = uids
        self.seq = seq
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.packets = 0
        self.bytes_dumped = 0
        self.error: str | None = None
        self.names: dict[int, str] = {}  # pd->uid2app: a UID's name is looked up once


class PcapdroidApp:
    """PCAPdroid's ``CaptureCtrl`` and ``CaptureService`` on one virtual handset."""

    def __init__(self, device: VirtualDevice) -> None:
        self.device = device
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._last = CaptureStatus(False)

    # -- state -------------------------------------------------------------------------------
    @property
    def installed(self) -> bool:
        state = self.device.packages.get(PACKAGE)
        return state is not None and state.installed

    @property
    def uid(self) -> int:
        return self.device.package_uid(PACKAGE) or 0

    @property
    def running(self) -> bool:
        with self._lock:
            run = self._run
        return run is not None and not run.stop.is_set() and run.error is None

    @property
    def settings(self) -> CaptureSettings | None:
        with self._lock:
            return self._run.settings if self._run is not None else None

    @property
    def blocks_quic(self) -> bool:
        """A capture runs with ``block_quic``: PCAPdroid's VPN drops QUIC datagrams."""
        settings = self.settings
        return self.running and settings is not None and settings.block_quic

    def status(self) -> CaptureStatus:
        with self._lock:
            run = self._run
        if run is None:
            return self._last
        return CaptureStatus(
            run.error is None and not run.stop.is_set(), run.packets, run.bytes_dumped, run.error
        )

    # -- the control API ---------------------------------------------------------------------
    def request(self, extras: Mapping[str, str], *, caller_uid: int, intent: str) -> bool:
        """``CaptureCtrl`` started with these extras; True when the request was carried out
        (the activity's ``RESULT_OK``)."""
        dev = self.device
        pid = dev.ensure_process(PACKAGE)
        dev.log("ActivityTaskManager", f"START u0 {{{intent}}} from uid {caller_uid}")
        action = extras.get("action")
        if action is None:
            self._log("CaptureCtrl", "no action provided", "E", pid)
            return False
        if action == "start":
            self._log("CaptureCtrl", "Starting capture, caller=null", "D", pid)
            try:
                settings = CaptureSettings.from_extras(extras)
            except SettingsError as exc:
                self._log("CaptureCtrl", str(exc), "W", pid)
                return False
            self.start(settings)
            return True
        if action == "stop":
            self._log("CaptureCtrl", "Stopping capture", "D", pid)
            self.stop()
            return True
        if action == "get_status":
            self._log("CaptureCtrl", "Returning status", "D", pid)
            return True
        self._log("CaptureCtrl", f"unknown action: {action}", "E", pid)
        return False

    def start(self, settings: CaptureSettings) -> None:
        """Start a capture (a running one is stopped first)."""
        self.stop()
        dev = self.device
        uids: frozenset[int] | None = None
        if settings.app_filter:
            found = {dev.package_uid(name) for name in settings.app_filter}
            uids = frozenset(u for u in found if u is not None) or None
        packet_log = dev.packet_log
        run = _Run(settings, uids, packet_log.seq if packet_log is not None else 0)
        thread = threading.Thread(target=self._capture, args=(run,), name="pcapdroid", daemon=True)
        run.thread = thread
        with self._lock:
            self._run = run
        dev.log("Vpn", f"Established by {PACKAGE} on tun0", uid=1000)
        thread.start()

    def stop(self, reason: str = "") -> CaptureStatus:
        """Stop the capture, if one runs; its last packets are exported first. Bounded."""
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return self._last
        run.stop.set()
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join(JOIN_TIMEOUT)
        self._last = CaptureStatus(False, run.packets, run.bytes_dumped, run.error)
        why = f" ({reason})" if reason else ""
        self.device.log("CaptureService", f"Capture stopped{why}", priority="D", uid=self.uid)
        return self._last

    # -- naming ------------------------------------------------------------------------------
    def app_name(self, uid: int) -> str:
        """What PCAPdroid writes in a trailer for ``uid`` (see the module docstring)."""
        if uid in VIRTUAL_APPS:
            return VIRTUAL_APPS[uid]
        with self.device.lock:
            names = sorted(
                name
                for name, st in self.device.packages.items()
                if st.installed and st.pkg.uid == uid
            )
        return names[0] if names else ""

    # -- the capture thread ------------------------------------------------------------------
    def _log(self, tag: str, message: str, priority: str, pid: int | None = None) -> None:
        self.device.log(tag, message, priority=priority, uid=self.uid, pid=pid)

    def _open(self, settings: CaptureSettings) -> _Exporter | None:
        host, port = settings.collector
        if settings.dump_mode == "none":
            return None
        reachable = _is_loopback(host) or host == EMULATOR_HOST
        if settings.dump_mode == "udp_exporter":
            return _UdpExporter(("127.0.0.1", port) if reachable else None)
        if _is_loopback(host):
            # the phone's own loopback: the host only through `adb reverse tcp:PORT`
            return _TcpExporter(self.device.open_reverse(f"tcp:{port}"))
        if host == EMULATOR_HOST:
            return _TcpExporter(socket.create_connection(("127.0.0.1", port), timeout=1.0))
        raise TimeoutError(f"failed to connect to /{host} (port {port}) after 1000ms")

    def _capture(self, run: _Run) -> None:
        dev = self.device
        settings = run.settings
        packet_log = dev.packet_log
        try:
            if packet_log is None:
                raise OSError("the VPN could not be established: no network")
            exporter = self._open(settings)
        except OSError as exc:
            self._fail(run, f"java.net.ConnectException: {exc}")
            return
        linktype = LINKTYPE_ETHERNET if settings.trailer else LINKTYPE_RAW
        header = global_header(linktype, snaplen=SNAPLEN)
        synth = PacketSynth(LINKTYPE_RAW, local=[dev.profile.network.wlan_ipv4])
        seq = run.seq
        try:
            while True:
                stopping = run.stop.is_set()  # once set: export what is already logged, end
                if not stopping and packet_log.wait_beyond(seq, POLL) == seq:
                    continue
                packets, seq, _ = packet_log.since(seq)
                records = self._records(run, synth, packets)
                if records and exporter is not None:
                    exporter.send(header, records)
                    run.bytes_dumped += sum(map(len, records))
                run.packets += len(records)
                if stopping:
                    break
        except OSError as exc:
            self._fail(run, f"java.net.SocketException: {exc}")
        finally:
            if exporter is not None:
                exporter.close()

    def _records(self, run: _Run, synth: PacketSynth, packets: list[Packet]) -> list[bytes]:
        out: list[bytes] = []
        for p in packets:
            if _is_loopback(p.src) or _is_loopback(p.dst):
                continue  # loopback never crosses the VPN
            if run.uids is not None and p.uid not in run.uids:
                continue
            name = run.names.get(p.uid)
            if name is None:
                name = run.names[p.uid] = self.app_name(p.uid)
            for ts, packet in synth.frames(p):
                frame = pcapdroid_frame(packet, p.uid, name) if run.settings.trailer else packet
                out.append(record(ts, frame, snaplen=SNAPLEN))
        return out

    def _fail(self, run: _Run, message: str) -> None:
        """As ``dumpWork`` on an IOException: report it and stop the capture."""
        run.error = message
        self._log("System.err", message, "W")
        self._log("CaptureService", "Stopping the capture: the dump failed", "E")
        with self._lock:
            if self._run is run:
                self._run = None
                self._last = CaptureStatus(False, run.packets, run.bytes_dumped, message)
        run.stop.set()


__all__ = [
    "CTRL_ACTIVITY",
    "PACKAGE",
    "SERVICE",
    "CaptureSettings",
    "CaptureStatus",
    "PcapdroidApp",
    "SettingsError",
]

"""PCAPdroid on the virtual handset: its control API through ``am start``, what its VPN sees,
its UDP and TCP exporters, the pcap it writes (header, records, trailer) and when it stops."""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP

from auditor.packets.live import PcapStream, header_info, parse_pcapdroid_trailer
from auditor.packets.pcapwrite import LINKTYPE_ETHERNET, LINKTYPE_RAW
from tests.vhandset.adb_fixtures import wait_until
from vhandset.device import VirtualDevice
from vhandset.network import Packet, PacketLog
from vhandset.pcapdroid import CaptureSettings, SettingsError
from vhandset.profiles import load_profile

CTRL = "com.emanuelef.remote_capture/.activities.CaptureCtrl"
PHONE = "192.168.178.44"  # oneplus-8t's wlan0
WHATSAPP = 10244
ODM = 10112  # net.oneplus.odm
GMS = 10135  # com.google.android.gms and com.google.android.gsf


def make(name: str = "oneplus-8t") -> VirtualDevice:
    profile = dataclasses.replace(load_profile(name), boot_seconds=0.15)
    dev = VirtualDevice(profile)
    dev.packet_log = PacketLog()
    return dev


@pytest.fixture
def phone() -> Iterator[VirtualDevice]:
    dev = make()
    yield dev
    dev.pcapdroid.stop()


def start(dev: VirtualDevice, **extras: str) -> str:
    args = " ".join(f"-e {k} {v}" for k, v in {"action": "start", **extras}.items())
    return dev.run(f"am start {args} -n {CTRL}").out


def stop(dev: VirtualDevice) -> None:
    dev.run(f"am start -e action stop -n {CTRL}")


def traffic(log: PacketLog) -> None:
    """An app's DNS query and answer, a TCP connection of WhatsApp, and loopback traffic (a
    proxy behind adb reverse), which a VPN never sees."""
    now = time.time()
    log.add(Packet(now, "udp", PHONE, 40000, "10.0.0.53", 53, b"\x12\x34query", uid=ODM))
    log.add(Packet(now, "udp", "10.0.0.53", 53, PHONE, 40000, b"\x12\x34answer", uid=ODM))
    log.add(Packet(now, "tcp", PHONE, 40001, "198.18.0.9", 443, b"", "S", uid=WHATSAPP))
    log.add(Packet(now, "tcp", PHONE, 40001, "198.18.0.9", 443, b"hello", uid=WHATSAPP))
    log.add(Packet(now, "tcp", "127.0.0.1", 40002, "127.0.0.1", 8080, b"", "S", uid=WHATSAPP))
    log.add(Packet(now, "tcp", "127.0.0.1", 40002, "127.0.0.1", 8080, b"CONNECT", uid=WHATSAPP))


class UdpCollector:
    """A real UDP socket on loopback, keeping each datagram as it came."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def udp() -> Iterator[UdpCollector]:
    collector = UdpCollector()
    yield collector
    collector.close()


def frames_of(records: list[bytes]) -> list[bytes]:
    out = []
    for rec in records:
        _, _, incl, orig = struct.unpack("<IIII", rec[:16])
        assert incl == orig == len(rec) - 16
        out.append(rec[16:])
    return out


def ip_of(frame: bytes) -> IP:
    """The IP packet of a trailer frame: Ethernet with zero MACs, then IP, padding, trailer."""
    assert frame[:12] == bytes(12) and frame[12:14] == b"\x08\x00"
    total = int.from_bytes(frame[16:18], "big")
    return IP(frame[14 : 14 + total])


# ---- the UDP exporter and the records ----------------------------------------------------------


def test_udp_export_with_trailer_names_each_packets_app(phone: VirtualDevice, udp: UdpCollector):
    log = phone.packet_log
    assert log is not None
    log.add(Packet(time.time(), "udp", PHONE, 39999, "10.0.0.53", 53, b"before", uid=ODM))
    out = start(
        phone,
        pcap_dump_mode="udp_exporter",
        collector_ip_address="127.0.0.1",
        collector_port=str(udp.port),
        pcapdroid_trailer="true",
    )
    assert out == f"Starting: Intent {{ cmp={CTRL} (has extras) }}\n"
    assert phone.pcapdroid.running
    traffic(log)
    # 2 datagrams, a SYN/SYN-ACK/ACK and the data segment; loopback left out; plus the header
    assert wait_until(lambda: len(udp.datagrams) >= 7, 5), udp.datagrams
    stop(phone)
    assert not phone.pcapdroid.running
    header, records = udp.datagrams[0], udp.datagrams[1:]
    assert len(header) == 24
    assert header_info(header) == ("<", 65535, LINKTYPE_ETHERNET)
    frames = frames_of(records)
    assert len(frames) == 6
    assert all(len(f) % 4 == 0 for f in frames), "padded before the trailer, as pcap_dump.c"
    trailers = [parse_pcapdroid_trailer(f) for f in frames]
    assert all(t is not None and t.fcs_ok for t in trailers)
    owners = [(t.uid, t.app) for t in trailers if t is not None]
    assert owners == [(ODM, "net.oneplus.odm")] * 2 + [(WHATSAPP, "com.whatsapp")] * 4
    packets = [ip_of(f) for f in frames]
    assert bytes(packets[0][UDP].payload) == b"\x12\x34query" and packets[0].src == PHONE
    assert bytes(packets[1][UDP].payload) == b"\x12\x34answer" and packets[1].dst == PHONE
    assert [str(p[TCP].flags) for p in packets[2:]] == ["S", "SA", "A", "PA"]
    assert bytes(packets[5][TCP].payload) == b"hello"
    # the IP and TCP checksums are right: scapy recomputes them from scratch
    for p in packets:
        fresh = IP(bytes(p))
        del fresh.chksum
        assert IP(bytes(fresh)).chksum == p.chksum
    assert b"before" not in b"".join(records) and b"CONNECT" not in b"".join(records)
    status = phone.pcapdroid.status()
    assert (status.running, status.packets, status.error) == (False, 6, None)
    assert status.bytes_dumped == sum(map(len, records))


def test_without_the_trailer_packets_are_raw_ip(phone: VirtualDevice, udp: UdpCollector):
    start(
        phone,
        pcap_dump_mode="udp_exporter",
        collector_ip_address="127.0.0.1",
        collector_port=str(udp.port),
    )
    log = phone.packet_log
    assert log is not None
    log.add(Packet(time.time(), "udp", PHONE, 40000, "10.0.0.53", 53, b"q", uid=ODM))
    assert wait_until(lambda: len(udp.datagrams) >= 2, 5)
    stop(phone)
    assert header_info(udp.datagrams[0])[2] == LINKTYPE_RAW
    (frame,) = frames_of(udp.datagrams[1:])
    assert parse_pcapdroid_trailer(frame) is None
    assert IP(frame)[UDP].dport == 53 and len(frame) == 20 + 8 + 1


def test_app_filter_keeps_one_apps_packets(phone: VirtualDevice, udp: UdpCollector):
    start(
        phone,
        pcap_dump_mode="udp_exporter",
        collector_ip_address="127.0.0.1",
        collector_port=str(udp.port),
        app_filter="com.whatsapp",
        dump_extensions="true",
    )
    log = phone.packet_log
    assert log is not None
    traffic(log)
    assert wait_until(lambda: len(udp.datagrams) >= 5, 5)
    stop(phone)
    trailers = [parse_pcapdroid_trailer(f) for f in frames_of(udp.datagrams[1:])]
    assert [t.uid for t in trailers if t is not None] == [WHATSAPP] * 4


def test_names_follow_pcapdroids_apps_resolver():
    dev = make()
    app = dev.pcapdroid
    assert app.app_name(1000) == "Android" and app.app_name(1051) == "netd"
    assert app.app_name(0) == "Root" and app.app_name(9999) == "Nobody"
    assert app.app_name(GMS) == "com.google.android.gms"  # the lowest name of a shared uid
    assert app.app_name(WHATSAPP) == "com.whatsapp"
    assert app.app_name(-1) == "" and app.app_name(10999) == ""
    # the trailer keeps 19 bytes of a name and a NUL
    assert len(app.app_name(GMS)) == 22


# ---- the TCP exporter --------------------------------------------------------------------------


class TableOpener:
    """The device's side of ``adb reverse``: device specs to host ports on loopback, as the
    adb transport resolves them (its end-to-end tests are in tests/packets)."""

    def __init__(self, table: dict[str, int]) -> None:
        self.table = table

    def open(self, device_spec: str) -> socket.socket:
        port = self.table.get(device_spec)
        if port is None:
            raise ConnectionRefusedError(f"no reverse forward registered for {device_spec}")
        return socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(5)
    yield sock
    sock.close()


def read_until_eof(conn: socket.socket, limit: float = 5.0) -> bytes:
    conn.settimeout(limit)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


def test_tcp_export_goes_through_the_reverse_tunnel(phone: VirtualDevice, listener: socket.socket):
    host_port = int(listener.getsockname()[1])
    phone.attach_transport(TableOpener({"tcp:5123": host_port}))
    start(
        phone,
        pcap_dump_mode="tcp_exporter",
        collector_ip_address="127.0.0.1",
        collector_port="5123",
        pcapdroid_trailer="true",
    )
    conn, _ = listener.accept()  # PCAPdroid connects when the capture starts
    with conn:
        conn.settimeout(0.5)
        with pytest.raises(TimeoutError):
            conn.recv(1)  # the header waits for the first packet, as TCPDumper's does
        log = phone.packet_log
        assert log is not None
        traffic(log)
        time.sleep(0.5)
        stop(phone)  # flushes, then closes: the collector sees the end of the stream
        data = read_until_eof(conn)
    stream = PcapStream()
    records = stream.feed(data)
    assert stream.header is not None and header_info(stream.header)[2] == LINKTYPE_ETHERNET
    assert stream.pending == 0 and len(records) == 6
    trailers = [parse_pcapdroid_trailer(f) for f in frames_of(records)]
    assert [t.uid for t in trailers if t is not None and t.fcs_ok] == [ODM] * 2 + [WHATSAPP] * 4


def test_tcp_export_without_a_reverse_fails_as_pcapdroid_does(phone: VirtualDevice):
    start(phone, pcap_dump_mode="tcp_exporter", collector_port="5123", pcapdroid_trailer="true")
    assert wait_until(lambda: phone.pcapdroid.status().error is not None, 3)
    assert not phone.pcapdroid.running
    assert "ConnectException" in (phone.pcapdroid.status().error or "")
    messages = [(e.tag, e.priority) for _, e in phone.log_entries()]
    assert ("System.err", "W") in messages and ("CaptureService", "E") in messages


def test_a_collector_that_goes_away_ends_the_capture(phone: VirtualDevice, listener: socket.socket):
    phone.attach_transport(TableOpener({"tcp:5123": int(listener.getsockname()[1])}))
    start(phone, pcap_dump_mode="tcp_exporter", collector_port="5123")
    conn, _ = listener.accept()
    conn.close()
    log = phone.packet_log
    assert log is not None

    def feed_until_stopped() -> bool:
        traffic(log)
        return not phone.pcapdroid.running

    assert wait_until(feed_until_stopped, 5, interval=0.2)
    assert "SocketException" in (phone.pcapdroid.status().error or "")


# ---- control -----------------------------------------------------------------------------------


def test_requests_pcapdroid_refuses(phone: VirtualDevice):
    start(phone, pcap_dump_mode="udp_exporter", collector_ip_address="8.8.8.8")
    start(phone, pcap_dump_mode="pcap_file", pcap_name="x.pcap")
    phone.run(f"am start -e pcap_dump_mode udp_exporter -n {CTRL}")
    phone.run(f"am start -e action frobnicate -n {CTRL}")
    assert not phone.pcapdroid.running
    said = [e.message for _, e in phone.log_entries() if e.tag == "CaptureCtrl"]
    assert "remote collector 8.8.8.8 not allowed" in said
    assert "pcap_dump_mode 'pcap_file' is not modelled by the virtual handset" in said
    assert "no action provided" in said and "unknown action: frobnicate" in said


def test_settings_from_extras():
    s = CaptureSettings.from_extras(
        {
            "pcap_dump_mode": "tcp_exporter",
            "collector_ip_address": "192.168.1.5",
            "collector_port": "5123",
            "app_filter": "com.a,com.b",
            "dump_extensions": "true",
        }
    )
    assert s == CaptureSettings("tcp_exporter", ("192.168.1.5", 5123), ("com.a", "com.b"), True)
    assert CaptureSettings.from_extras({}).dump_mode == "none"
    with pytest.raises(SettingsError):
        CaptureSettings.from_extras({"pcap_dump_mode": "udp_exporter", "collector_port": "0"})
    with pytest.raises(SettingsError):
        CaptureSettings.from_extras({"collector_ip_address": "collector.example"})


def test_not_installed_on_a_rooted_profile():
    xiaomi = make("xiaomi-mi10t")
    r = xiaomi.run(f"am start -e action start -n {CTRL}")
    assert "Error: Activity class {com.emanuelef.remote_capture/" in r.err
    assert not xiaomi.pcapdroid.running


def test_the_running_capture_shows_as_a_service_and_ends_with_a_force_stop(
    phone: VirtualDevice,
):
    foreground = phone.foreground
    start(phone, pcap_dump_mode="none")
    assert phone.pcapdroid.running
    assert phone.foreground == foreground, "CaptureCtrl finishes; the activity below stays"
    services = phone.run("dumpsys activity services com.emanuelef.remote_capture").out
    assert "* ServiceRecord{" in services and "com.emanuelef.remote_capture/.CaptureService" in (
        services
    )
    assert "(nothing)" in phone.run("dumpsys activity services com.whatsapp").out
    assert phone.run("pidof com.emanuelef.remote_capture").out.strip().isdigit()
    phone.run("am force-stop com.emanuelef.remote_capture")
    assert not phone.pcapdroid.running
    assert "(nothing)" in phone.run("dumpsys activity services").out


def test_a_reboot_ends_the_capture():
    dev = make()
    start(dev, pcap_dump_mode="none")
    assert dev.pcapdroid.running
    dev.reboot()
    assert not dev.pcapdroid.running
    assert dev.wait_online(5)
    assert not dev.pcapdroid.running


def test_a_second_start_replaces_the_capture(phone: VirtualDevice, udp: UdpCollector):
    start(phone, pcap_dump_mode="none")
    start(
        phone,
        pcap_dump_mode="udp_exporter",
        collector_ip_address="127.0.0.1",
        collector_port=str(udp.port),
    )
    settings = phone.pcapdroid.settings
    assert settings is not None and settings.dump_mode == "udp_exporter"
    assert sum(1 for t in threading.enumerate() if t.name == "pcapdroid") == 1


def test_trailer_crc_is_over_everything_before_it(phone: VirtualDevice, udp: UdpCollector):
    start(
        phone,
        pcap_dump_mode="udp_exporter",
        collector_ip_address="127.0.0.1",
        collector_port=str(udp.port),
        pcapdroid_trailer="true",
    )
    log = phone.packet_log
    assert log is not None
    log.add(Packet(time.time(), "udp", PHONE, 40000, "10.0.0.53", 53, b"odd", uid=GMS))
    assert wait_until(lambda: len(udp.datagrams) >= 2, 5)
    stop(phone)
    (frame,) = frames_of(udp.datagrams[1:])
    assert int.from_bytes(frame[-4:], "little") == zlib.crc32(frame[:-4])
    assert frame[-32:-28] == b"\x01\x07\x20\x21"
    assert frame[-24:-4] == b"com.google.android.\0"  # 19 bytes of the name, then NUL
    assert frame[14 + 31 : -32] == bytes(3)  # 14 + 20 + 8 + 3 = 45: 3 bytes pad it to 48


def test_block_quic_drops_the_initials_while_its_capture_runs(
    phone: VirtualDevice, udp: UdpCollector
) -> None:
    """``-e block_quic always`` (PCAPdroid's API, a string since version code 73): while that
    capture runs, an app's QUIC Initial does not leave the phone and the app says it falls back
    to TCP; before and after it, it does leave. The boolean of older versions blocks nothing
    now (read as ``never``)."""
    from auditor.packets.live import pcapdroid_start_command
    from vhandset.network import DeviceNetwork

    internet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where the Initials go
    internet.bind(("127.0.0.1", 0))
    try:
        net = DeviceNetwork(phone, internet.getsockname(), packets=PacketLog())
        assert net.quic_attempt(GMS, "www.google.com")  # no capture: it leaves
        command = pcapdroid_start_command(udp.port, block_quic=True)
        assert "-e block_quic always" in command
        phone.run(command)
        assert phone.pcapdroid.running and phone.pcapdroid.blocks_quic
        assert not net.quic_attempt(GMS, "www.google.com")
        assert "QUIC to www.google.com:443 failed (EPERM); using TCP" in phone.run("logcat -d").out
        stop(phone)
        assert not phone.pcapdroid.blocks_quic
        assert net.quic_attempt(GMS, "www.google.com")
        phone.run(pcapdroid_start_command(udp.port))  # without the extra: not blocked
        assert phone.pcapdroid.running and not phone.pcapdroid.blocks_quic
        assert net.quic_attempt(GMS, "www.google.com")
        stop(phone)
        phone.run(pcapdroid_start_command(udp.port).replace(" -n ", " -e block_quic true -n "))
        assert phone.pcapdroid.running and not phone.pcapdroid.blocks_quic
    finally:
        internet.close()

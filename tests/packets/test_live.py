"""Live capture: the stream parser and rotating files, the virtual handset's tcpdump, and the
three sources (tcpdump over a real adb server, a loopback interface, PCAPdroid's exporter)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import CookedLinuxV2
from scapy.utils import rdpcap

from auditor.device.handset import Handset
from auditor.errors import DeviceError
from auditor.packets.live import (
    TCPDUMP_ERR,
    AdbTcpdump,
    AppPackets,
    IfaceSniffer,
    PacketsSpec,
    PcapdroidCollector,
    PcapStream,
    PcapStreamError,
    RotatingPcap,
    TcpdumpSummary,
    parse_pcapdroid_trailer,
    parse_tcpdump_summary,
    parse_version,
    pcapdroid_start_command,
    pcapdroid_stop_command,
    pcapdroid_undo,
)
from auditor.packets.pcapwrite import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    global_header,
    record,
)
from tests.e2e.conftest import adb_server, make_world  # noqa: F401 - fixtures
from tests.vhandset.adb_fixtures import wait_until
from vhandset.device import VirtualDevice
from vhandset.interface import STDOUT
from vhandset.network import Packet, PacketLog
from vhandset.synth import pcapdroid_frame

# Sniffing loopback counts what the kernel dropped for the packet socket, and another test
# process's loopback traffic can fill it before its filter is attached: run alone
pytestmark = pytest.mark.serial

PHONE = "192.168.1.23"


def ipv4_udp(payload: bytes, sport: int = 40000, dport: int = 53) -> bytes:
    return bytes(IP(src=PHONE, dst="10.0.0.53") / UDP(sport=sport, dport=dport) / payload)


def records(n: int, *, linktype: int = LINKTYPE_RAW) -> list[bytes]:
    out = []
    for i in range(n):
        frame = ipv4_udp(f"packet {i}".encode())
        if linktype == LINKTYPE_ETHERNET:
            frame = bytes(12) + b"\x08\x00" + frame
        out.append(record(1_700_000_000 + i, frame))
    return out


# ---- parsing -----------------------------------------------------------------------------------


def test_pcap_stream_splits_records_from_chunks_of_any_size():
    data = global_header(LINKTYPE_RAW) + b"".join(records(5))
    for size in (1, 3, 16, 17, 1000):
        stream = PcapStream()
        got: list[bytes] = []
        for i in range(0, len(data), size):
            got += stream.feed(data[i : i + size])
        assert stream.header == global_header(LINKTYPE_RAW)
        assert got == records(5) and stream.pending == 0 and stream.records == 5


def test_pcap_stream_sets_aside_text_before_the_header_and_keeps_a_partial_record():
    stream = PcapStream()
    rec = records(2)
    got = stream.feed(b"tcpdump: listening on any\n" + global_header(LINKTYPE_RAW) + rec[0])
    got += stream.feed(rec[1][:20])
    assert got == rec[:1]
    assert stream.preamble == b"tcpdump: listening on any\n"
    assert stream.pending == 20


def test_pcap_stream_big_endian_and_garbage():
    header = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    rec = struct.pack(">IIII", 1, 2, 3, 3) + b"abc"
    stream = PcapStream()
    assert stream.feed(header + rec) == [rec]
    with pytest.raises(PcapStreamError):
        PcapStream().feed(b"no pcap here\n" * 400)
    broken = PcapStream()
    with pytest.raises(PcapStreamError):
        broken.feed(global_header(LINKTYPE_RAW) + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30))


def test_rotating_pcap_starts_each_file_with_the_header(tmp_path: Path):
    files = RotatingPcap(tmp_path, "adb-tcpdump", limit=200)
    files.begin(global_header(LINKTYPE_RAW))
    files.write(records(10))
    files.close()
    names = [p.name for p in files.paths]
    assert names[:2] == ["adb-tcpdump-001.pcap", "adb-tcpdump-002.pcap"] and len(names) > 2
    total = 0
    for path in files.paths:
        assert path.read_bytes()[:24] == global_header(LINKTYPE_RAW)
        assert path.stat().st_size <= 200 or len(rdpcap(str(path))) == 1
        total += len(rdpcap(str(path)))
    assert total == 10
    again = RotatingPcap(tmp_path, "adb-tcpdump")
    again.begin(global_header(LINKTYPE_RAW))
    again.close()
    assert again.paths[0].name == f"adb-tcpdump-{len(names) + 1:03d}.pcap"  # never overwrites


def test_tcpdump_statistics_parser():
    text = "3 packets captured\n3 packets received by filter\n7 packets dropped by kernel\n"
    assert parse_tcpdump_summary(text) == TcpdumpSummary(3, 7)
    assert parse_tcpdump_summary("tcpdump: listening on any\n3 packets captured") is None


# ---- PCAPdroid ---------------------------------------------------------------------------------


def trailer_frame(payload: bytes, uid: int, app: str) -> bytes:
    """A frame as PCAPdroid writes it with dump_extensions (pcap_dump.c, dump_packet_pcap)."""
    ip = ipv4_udp(payload)
    frame = bytes(12) + b"\x08\x00" + ip
    frame += bytes(-len(frame) % 4)
    frame += struct.pack("!Ii", 0x01072021, uid) + app.encode()[:20].ljust(20, b"\0")
    return frame + struct.pack("<I", zlib.crc32(frame))


def test_pcapdroid_trailer_parser():
    frame = trailer_frame(b"hello", 10123, "com.miui.analytics.long.name")
    t = parse_pcapdroid_trailer(frame)
    assert t is not None and (t.uid, t.app, t.fcs_ok) == (10123, "com.miui.analytics.l", True)
    bad = frame[:-1] + bytes([frame[-1] ^ 1])
    assert parse_pcapdroid_trailer(bad).fcs_ok is False  # type: ignore[union-attr]
    assert parse_pcapdroid_trailer(bytes(12) + b"\x08\x00" + ipv4_udp(b"x" * 40)) is None


def test_pcapdroid_frame_is_what_the_trailer_parser_reads():
    ip = ipv4_udp(b"hello")
    frame = pcapdroid_frame(ip, 10123, "com.miui.analytics.long.name")
    assert frame[:14] == bytes(12) + b"\x08\x00" and frame[14 : 14 + len(ip)] == ip
    assert len(frame) % 4 == 0 and len(frame) == 14 + len(ip) + 1 + 32  # 14 + 33 + 1 = 48
    t = parse_pcapdroid_trailer(frame)
    # strncpy(buf, name, 19): 19 bytes of the name and a NUL
    assert t is not None and (t.uid, t.app, t.fcs_ok) == (10123, "com.miui.analytics.", True)
    assert frame == trailer_frame(b"hello", 10123, "com.miui.analytics.")
    unknown = parse_pcapdroid_trailer(pcapdroid_frame(ip, -1, ""))
    assert unknown is not None and (unknown.uid, unknown.app) == (-1, "")
    v6 = pcapdroid_frame(b"\x60" + bytes(39), 0, "Root")
    assert v6[12:14] == b"\x86\xdd"


def test_pcapdroid_version_order():
    assert parse_version("1.8.6") == (1, 8, 6) >= (1, 8, 6)
    assert parse_version("1.8.10-beta") == (1, 8, 10) > (1, 8, 6)
    assert parse_version("1.7.2") < (1, 8, 6)
    assert parse_version("nightly") == ()


def test_pcapdroid_commands():
    assert pcapdroid_start_command(5123) == (
        "am start -e action start -e pcap_dump_mode udp_exporter -e collector_ip_address "
        "127.0.0.1 -e collector_port 5123 -e pcapdroid_trailer true -e dump_extensions true "
        "-n com.emanuelef.remote_capture/.activities.CaptureCtrl"
    )
    tcp = pcapdroid_start_command(5124, mode="tcp_exporter", app_filter="com.x", trailer=False)
    assert "-e pcap_dump_mode tcp_exporter" in tcp and "-e app_filter com.x" in tcp
    assert "trailer" not in tcp and "block_quic" not in tcp
    assert pcapdroid_start_command(5125, block_quic=True).endswith(
        "-e block_quic always -n com.emanuelef.remote_capture/.activities.CaptureCtrl"
    )
    assert pcapdroid_stop_command() == (
        "am start -e action stop -n com.emanuelef.remote_capture/.activities.CaptureCtrl"
    )
    with pytest.raises(ValueError):
        pcapdroid_start_command(1, mode="http_server")
    # the journal's undo of a capture: the stop request, as data (no shell text)
    assert pcapdroid_undo() == {
        "kind": "am_start",
        "component": "com.emanuelef.remote_capture/.activities.CaptureCtrl",
        "extras": {"action": "stop"},
    }


def test_packets_spec():
    assert PacketsSpec.parse("off") == PacketsSpec("off")
    assert PacketsSpec.parse("iface:wlan1") == PacketsSpec("iface", "wlan1")
    assert PacketsSpec.parse("adb-tcpdump").kind == "adb-tcpdump"
    for bad in ("iface:", "tcpdump", ""):
        with pytest.raises(ValueError):
            PacketsSpec.parse(bad)


def test_pcapdroid_udp_collector_writes_what_it_receives(tmp_path: Path):
    collector = PcapdroidCollector(0, tmp_path).start()
    try:
        frames = [trailer_frame(f"p{i}".encode(), 10100 + i % 2, f"app{i % 2}") for i in range(6)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(global_header(LINKTYPE_ETHERNET, snaplen=65535), collector.address)
            for i, frame in enumerate(frames):
                tx.sendto(record(1_700_000_000 + i, frame), collector.address)
            tx.sendto(record(1, frames[0])[:-3], collector.address)  # cut short: lost
            tx.sendto(b"junk", collector.address)
        assert wait_until(lambda: collector.stats.packets == 6 and collector.stats.lost == 2, 5)
    finally:
        stats = collector.stop()
    assert not stats.running and stats.files == ("packets/pcapdroid-001.pcap",)
    assert stats.apps == (AppPackets(10100, "app0", 3), AppPackets(10101, "app1", 3))
    data = (tmp_path / stats.files[0]).read_bytes()
    assert data[:24] == global_header(LINKTYPE_ETHERNET, snaplen=65535)
    pkts = rdpcap(str(tmp_path / stats.files[0]))
    assert [bytes(p[UDP].payload)[:2] for p in pkts] == [f"p{i}".encode() for i in range(6)]
    assert stats.bytes == sum(len(f) for f in frames)


def test_pcapdroid_udp_collector_late_start_assumes_the_header(tmp_path: Path):
    collector = PcapdroidCollector(0, tmp_path, trailer=False).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for rec in records(3):
                tx.sendto(rec, collector.address)
        assert wait_until(lambda: collector.stats.packets == 3, 5)
    finally:
        stats = collector.stop()
    path = tmp_path / stats.files[0]
    assert path.read_bytes()[:24] == global_header(LINKTYPE_RAW)
    assert [p[UDP].dport for p in rdpcap(str(path))] == [53, 53, 53]


def test_pcapdroid_tcp_collector_counts_a_cut_record_as_lost(tmp_path: Path):
    collector = PcapdroidCollector(0, tmp_path, transport="tcp").start()
    try:
        stream = global_header(LINKTYPE_RAW) + b"".join(records(4)) + records(1)[0][:30]
        with socket.create_connection(collector.address, timeout=5) as tx:
            for i in range(0, len(stream), 7):
                tx.sendall(stream[i : i + 7])
        assert wait_until(lambda: collector.stats.interruptions == 1, 5)
    finally:
        stats = collector.stop()
    assert (stats.packets, stats.lost) == (4, 1)
    assert len(rdpcap(str(tmp_path / stats.files[0]))) == 4


def test_pcapdroid_tcp_collector_an_expected_end_is_no_interruption(tmp_path: Path):
    collector = PcapdroidCollector(0, tmp_path, transport="tcp").start()
    try:
        assert not collector.wait_heard(0.2) and collector.wait_idle(0)
        with socket.create_connection(collector.address, timeout=5) as tx:
            assert collector.wait_heard(5)
            assert wait_until(lambda: not collector.wait_idle(0), 5)
            tx.sendall(global_header(LINKTYPE_RAW) + b"".join(records(2)))
            assert wait_until(lambda: collector.stats.packets == 2, 5)
            collector.expect_end()  # PCAPdroid was asked to stop: it flushes and closes
        assert collector.wait_idle(5)
    finally:
        stats = collector.stop()
    assert (stats.packets, stats.interruptions, stats.lost) == (2, 0, 0)
    assert collector.connections == 1


def test_a_full_disk_stops_the_collector_and_keeps_what_was_written(tmp_path: Path):
    """A file size limit (as a full disk): the write that does not fit fails with EFBIG, the
    capture stops and says why in ``disk_full`` (what the audit stops on), and the packets
    written before it are in the file, readable."""
    import errno
    import resource

    collector = PcapdroidCollector(0, tmp_path, transport="tcp").start()
    head, recs = global_header(LINKTYPE_RAW), records(40)
    fits = len(head) + sum(len(r) for r in recs[:5])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        with socket.create_connection(collector.address, timeout=5) as tx:
            tx.sendall(head + b"".join(recs[:5]))
            assert wait_until(lambda: collector.stats.packets == 5, 5)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fits + 10, hard))
            try:
                tx.sendall(b"".join(recs[5:]))
                assert wait_until(lambda: bool(collector.stats.disk_full), 5), collector.stats
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert wait_until(lambda: not collector.stats.running, 5)
    finally:
        stats = collector.stop()
    assert os.strerror(errno.EFBIG) in stats.disk_full and "packets/" in stats.disk_full
    assert stats.packets == 5 and stats.lost >= 1
    assert any("File too large" in e for e in stats.errors)
    assert len(rdpcap(str(tmp_path / stats.files[0]))) == 5
    assert (tmp_path / stats.files[0]).stat().st_size == fits  # no part of a 6th record
    # the audit's watcher sees it and stops the capture as for a full session disk
    from auditor.audit import AuditOptions, _Audit
    from auditor.device.scenario import load_scenario

    audit = _Audit(
        None,  # type: ignore[arg-type]  # the watcher's check needs no phone
        load_scenario("idle", {"duration": 1}),
        AuditOptions(serial="emulator-5554", scenario="idle", out=tmp_path),
        lambda p: None,
    )
    audit.packets = collector
    audit._packet_counts()
    assert audit.proxy_exit is not None and audit.stop.is_set()
    assert audit.proxy_exit.stopped_by == "disk_full"
    assert audit.proxy_exit.event == "session_write_failed"  # not mitmdump's recorder_failed
    assert audit.proxy_exit.data() == {"source": "packets", "disk_full": True}
    assert stats.disk_full in audit.proxy_exit.message and audit.prog.packets == 5


def test_collector_on_a_busy_port_is_a_clear_error(tmp_path: Path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(Exception, match="cannot listen for PCAPdroid"):
            PcapdroidCollector(taken.getsockname()[1], tmp_path).start()


# ---- a host interface --------------------------------------------------------------------------


@contextmanager
def _five_datagrams_sniffed(tmp_path: Path) -> Iterator[tuple[IfaceSniffer, socket.socket, int]]:
    """A loopback sniffer that has seen five datagrams; the sending socket and port stay open
    for more. The sniffer is stopped on the way out (its stats say what it kept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        sniffer = IfaceSniffer("lo", f"udp and port {port}", tmp_path).start()
        try:
            time.sleep(0.2)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for i in range(5):
                    tx.sendto(f"datagram {i}".encode(), ("127.0.0.1", port))
                assert wait_until(lambda: sniffer.stats.packets >= 5, 5), sniffer.stats
                yield sniffer, tx, port
        finally:
            sniffer.stop()


def _the_five(path: Path) -> None:
    pkts = rdpcap(str(path))
    assert [bytes(p[UDP].payload) for p in pkts] == [f"datagram {i}".encode() for i in range(5)]


@pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root")
def test_what_came_before_the_filter_is_not_the_capture_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of every packet capture's start, made to happen: the socket opens and, before
    its filter takes effect, other traffic fills its queue (a tiny receive buffer: the kernel
    counts drops). The capture keeps neither those packets nor their drops: only the five
    datagrams sent to it after it started (on a busy test machine this failed as dropped=71)."""
    from scapy.arch.linux import attach_filter
    from scapy.config import conf

    real = conf.L2socket

    def racing(iface: str, filter: str | None = None) -> object:
        sock = real(iface=iface)  # no filter yet: everything on the interface is queued
        sock.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            for _ in range(200):  # other traffic, to a port nobody listens on
                other.sendto(b"x" * 1000, ("127.0.0.1", 9))
        time.sleep(0.1)
        attach_filter(sock.ins, filter, iface)
        return sock

    monkeypatch.setattr(conf, "L2socket", racing)
    with _five_datagrams_sniffed(tmp_path) as (sniffer, _, _):
        time.sleep(0.2)
    stats = sniffer.stats
    assert stats.packets == 5 and stats.dropped == 0, stats
    _the_five(tmp_path / stats.files[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root")
def test_iface_sniffer_on_loopback(tmp_path: Path):
    with _five_datagrams_sniffed(tmp_path) as (sniffer, _, _):
        time.sleep(0.2)
    stats = sniffer.stats
    assert stats.packets == 5, "each loopback packet once, as tcpdump shows it"
    assert stats.files == ("packets/iface-lo-001.pcapng",) and not stats.running
    assert stats.dropped == 0 and stats.errors == ()
    _the_five(tmp_path / stats.files[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="packet sockets need root")
def test_iface_sniffer_on_a_full_disk_keeps_whole_packets(tmp_path: Path):
    """A file size limit (as a full disk) mid-capture: the packet that does not fit is taken
    back whole, the capture stops with ``disk_full``, and the file reads to the end."""
    import errno
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with _five_datagrams_sniffed(tmp_path) as (sniffer, tx, port):
        path = tmp_path / sniffer.stats.files[0]
        fits = path.stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (fits + 20, hard))  # not a packet
        try:
            tx.sendto(b"x" * 200, ("127.0.0.1", port))
            assert wait_until(lambda: bool(sniffer.stats.disk_full), 5), sniffer.stats
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    stats = sniffer.stats
    assert os.strerror(errno.EFBIG) in stats.disk_full
    assert stats.packets == 5 and stats.lost >= 1
    assert path.stat().st_size == fits  # no part of the packet that did not fit
    _the_five(path)


def test_iface_sniffer_bad_filter_is_a_clear_error(tmp_path: Path):
    with pytest.raises(Exception, match="lo"):
        IfaceSniffer("lo", "this is not bpf ((", tmp_path).start()


# ---- the virtual handset's tcpdump -------------------------------------------------------------


def collect(proc) -> tuple[Callable[[], bytes], Callable[[], bytes], threading.Event]:
    out: list[bytes] = []
    err: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        for fd, data in proc.chunks():
            (out if fd == STDOUT else err).append(data)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    return (lambda: b"".join(out)), (lambda: b"".join(err)), done


@pytest.fixture
def phone() -> VirtualDevice:
    dev = VirtualDevice("xiaomi-mi10t")
    dev.packet_log = PacketLog()
    return dev


def test_virtual_tcpdump_streams_sll2_from_the_moment_it_starts(phone: VirtualDevice):
    log = phone.packet_log
    assert log is not None
    log.add(Packet(time.time(), "udp", PHONE, 1, "10.0.0.53", 53, b"before"))
    proc = phone.shell("su -c 'tcpdump -i any -s 0 -n -p -U -w -'")
    out, err, done = collect(proc)
    assert wait_until(lambda: len(out()) >= 24, 3)
    assert out()[:24] == global_header(LINKTYPE_LINUX_SLL2)
    log.add(Packet(time.time(), "udp", PHONE, 40000, "10.0.0.53", 53, b"query"))
    log.add(Packet(time.time(), "tcp", PHONE, 40001, "198.18.0.9", 5222, b"", "S"))
    log.add(Packet(time.time(), "tcp", PHONE, 40001, "198.18.0.9", 5222, b"<stream>"))
    assert wait_until(lambda: len(PcapStream().feed(out())) == 5, 3)
    proc.close()
    assert done.wait(3)
    assert proc.exit_code == 129  # hung up, as a process whose stream closed
    recs = PcapStream().feed(out())
    frames = [r[16:] for r in recs]
    assert b"before" not in out()
    assert frames[0].endswith(b"query") and frames[0][:2] == b"\x08\x00"
    assert frames[4].endswith(b"<stream>")
    assert b"listening on any, link-type LINUX_SLL2" in err()


def test_virtual_tcpdump_without_root_and_other_refusals():
    huawei = VirtualDevice("huawei-p40")
    huawei.packet_log = PacketLog()
    r = huawei.run("tcpdump -i any -U -w -")
    assert r.exit_code == 1 and r.stdout == b""
    assert r.err == (
        "tcpdump: any: You don't have permission to capture on that device\n"
        "(socket: Operation not permitted)\n"
    )
    xiaomi = VirtualDevice("xiaomi-mi10t")
    assert "No such device" in xiaomi.run("su -c 'tcpdump -i eth9 -w -'").err
    assert "not up" in xiaomi.run("su -c 'tcpdump -i any -w -'").err  # no network wired
    assert xiaomi.run("tcpdump --version").out.startswith("tcpdump version 4.99")


def test_virtual_tcpdump_count_file_and_text(phone: VirtualDevice):
    log = phone.packet_log
    assert log is not None

    def feed() -> None:
        time.sleep(0.3)
        for i in range(4):
            log.add(Packet(time.time(), "udp", PHONE, 40000 + i, "10.0.0.53", 53, b"q"))

    threading.Thread(target=feed, daemon=True).start()
    r = phone.run("su -c 'tcpdump -i wlan0 -c 3 -w /data/local/tmp/t.pcap'", timeout=5)
    assert r.exit_code == 0 and "3 packets captured" in r.err
    data = phone.vfs.read("/data/local/tmp/t.pcap")
    assert data[:24] == global_header(LINKTYPE_ETHERNET) and len(PcapStream().feed(data)) == 3
    threading.Thread(target=feed, daemon=True).start()
    text = phone.run("su -c 'tcpdump -i any -n -c 2'", timeout=5).out.splitlines()
    assert len(text) == 2
    assert text[0].endswith(f" wlan0 Out IP {PHONE}.40000 > 10.0.0.53.53: UDP, length 1")


# ---- tcpdump over a real adb server ------------------------------------------------------------


def read_all(files: tuple[str, ...], session: Path) -> list:
    return [p for name in files for p in rdpcap(str(session / name))]


def test_adb_tcpdump_captures_dns_and_push_from_a_rooted_phone(make_world, tmp_path: Path):  # noqa: F811
    world, serial = make_world("xiaomi-mi10t", speed=4.0)
    handset = Handset(serial)
    cap = AdbTcpdump(handset, tmp_path).start()
    try:
        assert cap.command.startswith("su 0 sh -c ")
        world.traffic.burst("test")  # the push channel opens at once, not in 7 s
        assert wait_until(lambda: _has_push_and_dns(cap, tmp_path), 10), cap.stats
    finally:
        stats = cap.stop()
    assert not stats.running and stats.errors == ()
    assert stats.files == ("packets/adb-tcpdump-001.pcap",)
    pkts = read_all(stats.files, tmp_path)
    assert len(pkts) == stats.packets > 0
    assert stats.bytes == sum(len(bytes(p)) for p in pkts)
    assert all(p.haslayer(CookedLinuxV2) for p in pkts)
    dns = [p for p in pkts if p.haslayer(UDP) and 53 in (p[UDP].sport, p[UDP].dport)]
    push = [p for p in pkts if p.haslayer(TCP) and 5222 in (p[TCP].sport, p[TCP].dport)]
    assert dns and push
    assert any(str(p[TCP].flags) == "S" for p in push)
    assert any(p[IP].src == PHONE for p in dns)
    # tcpdump's own closing statistics, on the phone: what it captured either arrived or is
    # counted lost (in flight when the stream closed).
    summary = parse_tcpdump_summary(handset.su(f"cat {TCPDUMP_ERR}").stdout)
    assert summary == TcpdumpSummary(stats.packets + stats.lost, stats.dropped)
    assert stats.dropped == 0 and stats.lost <= 10


def _has_push_and_dns(cap: AdbTcpdump, session: Path) -> bool:
    stats = cap.stats
    if not stats.files or stats.packets == 0:
        return False
    pkts = read_all(stats.files, session)
    # a push connection already open when the capture began shows without its SYN: wait for
    # one the burst opened after (found under load, when the phone's boot-time one overlapped)
    ports = {p[TCP].dport for p in pkts if p.haslayer(TCP) and str(p[TCP].flags) == "S"} | {
        p[UDP].dport for p in pkts if p.haslayer(UDP)
    }
    return {53, 5222} <= ports


def test_adb_tcpdump_survives_the_device_going_away(
    make_world,  # noqa: F811
    adb_server,  # noqa: F811
    tmp_path: Path,
):
    world, serial = make_world("xiaomi-mi10t", speed=4.0)
    cap = AdbTcpdump(Handset(serial), tmp_path, retry_interval=0.2).start()
    try:
        world.traffic.burst("test")
        assert wait_until(lambda: cap.stats.packets > 0, 10)
        adb_server.text("disconnect", serial)
        assert wait_until(lambda: cap.stats.interruptions == 1, 10), cap.stats
        assert cap.stats.running  # still trying to reopen
    finally:
        started = time.monotonic()
        stats = cap.stop(timeout=3)
        assert time.monotonic() - started < 8
    assert not stats.running and stats.interruptions == 1
    assert any("stream ended" in e for e in stats.errors)
    assert len(read_all(stats.files, tmp_path)) == stats.packets


def test_adb_tcpdump_on_an_unrooted_phone_is_a_clear_error(make_world, tmp_path: Path):  # noqa: F811
    _, serial = make_world("huawei-p40")
    with pytest.raises(DeviceError, match="needs root"):
        AdbTcpdump(Handset(serial), tmp_path).start()
    assert not (tmp_path / "packets").exists() or not any((tmp_path / "packets").iterdir())

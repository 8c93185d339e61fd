"""Capture reading throughput: auditor.packets against scapy and tshark on the same file.

Sections (``python -m bench.packets [default] [dns] [memory]``; all by default): ``default``
is the mix below; ``dns`` the DNS-heavy mix of issue 14 (about 40% of packets DNS, an A and
an AAAA lookup with CNAME chains per session, then a short TLS connection or none), read
against tshark in the same run with the same targets; ``memory`` the peak RSS (VmHWM of a
fresh process per read) of 1M and 2M packets of each mix.

Target (packets issue): the full read (flow table, DNS table, TLS SNI, QUIC SNI) at least 12
times tshark's packets per second, and 500,000 packets/s or more on this 2-core machine; peak
memory flat in the file size.

A synthetic capture of about 1,000,000 packets is written with ``struct`` from per-session
templates (no scapy per packet): 256 sessions at a time, interleaved, each a DNS lookup and
then a TLS connection (a quarter with a ClientHello split over two segments), a QUIC v1/v2
connection (every Initial sealed with its own DCID), an HTTP/1 request or bare TCP data.
Ethernet and Linux SLL2 variants, and the Ethernet one as pcapng (EPBs). Measured in the
same run, each in a fresh process for its peak RSS: ``read_capture(keep_packets=False)``
(flows, DNS, names: the streaming path) and ``read_capture()`` (with the per-packet table);
scapy's ``PcapReader`` on a 20,000-packet
prefix, extrapolated; ``tshark -T fields`` with address, port, DNS, SNI and Host fields on the
whole file. The 2,000,000-packet file repeats the first with other client addresses, to show
how peak memory grows with the file. Files of 64 MiB or more write their flow and DNS tables
to disk as they are built (``read_capture(spill=None)``): the timed read includes reading
them back into pandas, and ``peak_rss_mib`` is the read's own peak (the tables on disk),
``peak_rss_with_tables_mib`` the peak once they are read back. ``compiled`` says which
compiled parts were used (``auditor/packets/_scan.c``, ``_decode.c``, ``_flowtab.c``, ``_dns.c``);
``ethernet_pps_uncompiled`` is the same read without any of them (``AUDITOR_PURE_PYTHON_SCAN=1``:
the Python walk and DNS parser, the numpy decoder and flow table), for comparison.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from auditor.packets import decode, flows, pcapfile
from auditor.packets.dns import DNS_PARSER
from auditor.packets.quic import INITIAL_TYPE, QUIC_V1, QUIC_V2
from tests.packets.quic_encode import crypto_frame, seal_initial

FOUND = ("flows", "dns_rows", "tls_sni", "quic_sni", "http_host")
PACKETS = 1_000_000
ACTIVE = 256
SCAPY_PREFIX = 20_000
SEED = 7
ROUNDS = 3

_REC = struct.Struct("<IIII")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ETH = {
    0: bytes.fromhex("0242ac1100020242ac1100030800"),
    1: bytes.fromhex("0242ac1100030242ac1100020800"),
}
_SLL2 = {
    0: bytes.fromhex("080000000000000f0001040602420aff0003") + b"\x00\x00",
    1: bytes.fromhex("080000000000000f0001000602420aff0002") + b"\x00\x00",
}
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
DATA = bytes(random.Random(1).getrandbits(8) for _ in range(4096))


def _hosts(rng: random.Random) -> list[str]:
    tlds = ("com", "net", "org", "cn", "io")
    return [f"api{i}.svc{rng.randrange(300)}.example.{tlds[i % 5]}" for i in range(2000)]


def _dns_query(ident: int, name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q + b"\x00\x01\x00\x01"


def _dns_answer(query: bytes, addr: bytes) -> bytes:
    head = struct.pack("!HHHHHH", struct.unpack_from("!H", query)[0], 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + addr
    return head + query[12:] + answer


def _dns_query_type(ident: int, name: str, qtype: int) -> bytes:
    q = _dns_query(ident, name)
    return q[:-4] + struct.pack("!HH", qtype, 1)


def _dns_cname_answer(query: bytes, target: str, addrs: list[bytes]) -> bytes:
    """A response as resolvers give it for a CDN name: a CNAME, then A or AAAA records of the
    target (compressed against it)."""
    qtype = struct.unpack_from("!H", query, len(query) - 4)[0]
    head = struct.pack(
        "!HHHHHH", struct.unpack_from("!H", query)[0], 0x8180, 1, 1 + len(addrs), 0, 0
    )
    tname = b"".join(bytes([len(p)]) + p.encode() for p in target.split(".")) + b"\x00"
    cname = b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c" + struct.pack("!H", len(tname))
    at = len(query) + len(cname)  # where the target name starts, for the pointers below
    out = head + query[12:] + cname + tname
    for a in addrs:
        out += struct.pack("!HHHIH", 0xC000 | at, qtype, 1, 60, len(a)) + a
    return out


def _client_hello(sni: str, big: bool) -> bytes:
    name = sni.encode()
    ext_sni = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    alpn = b"\x02h2\x08http/1.1"
    ext_alpn = struct.pack("!HHH", 16, len(alpn) + 2, len(alpn)) + alpn
    share = 1216 + 32 if big else 32  # a post-quantum key share makes it span two segments
    ext_ks = struct.pack("!HHHHH", 51, share + 6, share + 4, 0x11EC if big else 29, share)
    ext_ks += DATA[:share]
    ext_pad = struct.pack("!HH", 21, 180) + bytes(180)
    exts = ext_sni + ext_alpn + ext_ks + ext_pad
    body = (
        b"\x03\x03"
        + DATA[100:132]
        + b"\x20"
        + DATA[200:232]
        + b"\x00\x04\x13\x01\x13\x02\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


class _Conn:
    """IP packets of one connection, both directions, with TCP sequence numbers kept."""

    def __init__(self, client: bytes, server: bytes, cport: int, sport: int, proto: int) -> None:
        self.addr = ((client, server), (server, client))
        self.ports = ((cport, sport), (sport, cport))
        self.proto = proto
        self.seq = [1000, 5000]
        self.ident = 0

    def tcp(self, d: int, flags: int, payload: bytes = b"") -> tuple[int, bytes]:
        src, dst = self.addr[d]
        sp, dp = self.ports[d]
        self.ident = (self.ident + 1) & 0xFFFF
        ip = _IP4.pack(0x45, 0, 40 + len(payload), self.ident, 0x4000, 64, 6, 0, src, dst)
        tcp = _TCP.pack(sp, dp, self.seq[d], self.seq[1 - d], 0x50, flags, 65535, 0, 0)
        self.seq[d] = (self.seq[d] + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        return d, ip + tcp + payload

    def udp(self, d: int, payload: bytes) -> tuple[int, bytes]:
        src, dst = self.addr[d]
        sp, dp = self.ports[d]
        self.ident = (self.ident + 1) & 0xFFFF
        ip = _IP4.pack(0x45, 0, 28 + len(payload), self.ident, 0x4000, 64, 17, 0, src, dst)
        return d, ip + _UDP.pack(sp, dp, 8 + len(payload), 0) + payload


def _session(
    rng: random.Random, n: int, hosts: list[str], kinds: Counter[str], extra: int = 0
) -> Iterator[tuple[int, bytes]]:
    client = bytes([10, 1 + (n >> 16) % 200, (n >> 8) & 255, 2 + n % 250])
    server = bytes([23, (n * 7) & 255, (n * 13) & 255, 1 + n % 250])
    resolver = b"\x08\x08\x08\x08"
    host = hosts[n % len(hosts)]
    r = rng.random()
    kind = "tls" if r < 0.6 else "quic" if r < 0.75 else "http" if r < 0.85 else "tcp"
    kinds[kind] += 1
    if kind != "tcp":
        dns = _Conn(client, resolver, 20000 + n % 40000, 53, 17)
        q = _dns_query(n & 0xFFFF, host)
        yield dns.udp(0, q)
        yield dns.udp(1, _dns_answer(q, server))
    cport = 32768 + n % 28000
    if kind == "quic":
        c = _Conn(client, server, cport, 443, 17)
        version = QUIC_V2 if n % 10 == 0 else QUIC_V1
        dcid = rng.randbytes(8)
        frames = crypto_frame(0, _client_hello(host, False)[5:])
        yield c.udp(0, seal_initial(dcid, rng.randbytes(8), version, 0, frames))
        first = 0xC0 | (INITIAL_TYPE[version] << 4)
        yield c.udp(1, bytes([first]) + version.to_bytes(4, "big") + b"\x08" + DATA[:1100])
        for i in range(rng.randrange(10, 50) + extra):
            d = 1 if i % 3 else 0
            yield c.udp(d, b"\x40" + DATA[i % 64 : i % 64 + (1250 if d else 60)])
        return
    port = 80 if kind == "http" else 443
    c = _Conn(client, server, cport, port, 6)
    yield c.tcp(0, SYN)
    yield c.tcp(1, SYN | ACK)
    yield c.tcp(0, ACK)
    if kind == "tls":
        hello = _client_hello(host, big=n % 4 == 0)
        if len(hello) > 1400:
            yield c.tcp(0, ACK, hello[:1400])
            yield c.tcp(0, ACK | PSH, hello[1400:])
        else:
            yield c.tcp(0, ACK | PSH, hello)
        yield c.tcp(1, ACK | PSH, b"\x16\x03\x03\x00\x7a\x02" + DATA[:1300])
    elif kind == "http":
        yield c.tcp(0, ACK | PSH, f"GET /v1/x?id={n} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    for i in range(rng.randrange(8, 40) + extra):
        d = 1 if i % 3 else 0
        yield c.tcp(d, ACK | PSH, DATA[i % 64 : i % 64 + (1400 if d else 80)])
    yield c.tcp(0, FIN | ACK)
    yield c.tcp(1, FIN | ACK)
    yield c.tcp(0, ACK)


def _dns_session(
    rng: random.Random, n: int, hosts: list[str], kinds: Counter[str], extra: int = 0
) -> Iterator[tuple[int, bytes]]:
    """The DNS-heavy mix: an A and an AAAA lookup (CNAME chains, as CDNs answer), then a
    short TLS connection or none (a lookup whose answer is not used, or an NXDOMAIN)."""
    client = bytes([10, 1 + (n >> 16) % 200, (n >> 8) & 255, 2 + n % 250])
    server = bytes([23, (n * 7) & 255, (n * 13) & 255, 1 + n % 250])
    resolver = b"\x08\x08\x08\x08"
    host = hosts[n % len(hosts)]
    dns = _Conn(client, resolver, 20000 + n % 40000, 53, 17)
    target = f"e{n % 977}.cdn{n % 7}.example.net"
    v6 = b"\x20\x01\x0d\xb8" + server * 3
    r = rng.random()
    for qtype, addr in ((1, server), (28, v6)):
        q = _dns_query_type((n * 2 + qtype) & 0xFFFF, host, qtype)
        yield dns.udp(0, q)
        if r < 0.1:  # NXDOMAIN
            yield dns.udp(1, q[:2] + b"\x81\x83" + q[4:])
        else:
            yield dns.udp(1, _dns_cname_answer(q, target, [addr, addr[::-1]]))
    if r < 0.4:
        kinds["dns-only"] += 1
        return
    kinds["tls"] += 1
    c = _Conn(client, server, 32768 + n % 28000, 443, 6)
    yield c.tcp(0, SYN)
    yield c.tcp(1, SYN | ACK)
    yield c.tcp(0, ACK)
    yield c.tcp(0, ACK | PSH, _client_hello(host, big=False))
    yield c.tcp(1, ACK | PSH, b"\x16\x03\x03\x00\x7a\x02" + DATA[:1300])
    for i in range(rng.randrange(0, 3) + extra):
        yield c.tcp(1 if i % 2 else 0, ACK | PSH, DATA[i % 64 : i % 64 + 200])
    yield c.tcp(0, FIN | ACK)
    yield c.tcp(1, FIN | ACK)
    yield c.tcp(0, ACK)


MIXES = {"default": _session, "dns": _dns_session}


def write_capture(
    path: Path,
    packets: int,
    link: int,
    seed: int = SEED,
    mix: str = "default",
    *,
    sessions: int | None = None,
    extra: int = 0,
) -> dict[str, Any]:
    """A pcap of about ``packets`` packets, sessions interleaved; returns what it holds.
    ``sessions``: that many sessions instead, each run to its end (``packets`` is then
    ignored); ``extra``: more data packets in each connection that carries data."""
    session = MIXES[mix]
    rng = random.Random(seed)
    hosts = _hosts(rng)
    kinds: Counter[str] = Counter()
    heads = _ETH if link == 1 else _SLL2
    active: list[Iterator[tuple[int, bytes]]] = []
    n_sessions = 0
    written = 0
    t = 1_700_000_000.0
    out: list[bytes] = []
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link))
        while (written < packets) if sessions is None else (active or n_sessions < sessions):
            while len(active) < ACTIVE and (sessions is None or n_sessions < sessions):
                active.append(session(rng, n_sessions, hosts, kinds, extra))
                n_sessions += 1
            i = rng.randrange(len(active))
            item = next(active[i], None)
            if item is None:
                active[i] = active[-1]
                active.pop()
                continue
            d, ip = item
            frame = heads[d] + ip
            t += 0.0002
            sec = int(t)
            out.append(_REC.pack(sec, int((t - sec) * 1e6), len(frame), len(frame)) + frame)
            written += 1
            if len(out) >= 65536:
                fh.write(b"".join(out))
                out.clear()
        fh.write(b"".join(out))
    return {"packets": written, "sessions": n_sessions, "kinds": dict(kinds)}


def to_pcapng(src: Path, dst: Path) -> int:
    """``src`` (little-endian pcap, microseconds) as pcapng: a section header, one interface
    (link type and snap length of ``src``, default microsecond resolution) and an Enhanced
    Packet Block per record. Returns the packet count."""
    n = 0
    with open(src, "rb") as fh, open(dst, "wb") as out:
        head = fh.read(24)
        snaplen, link = struct.unpack_from("<II", head, 16)
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        out.write(struct.pack("<II", 0x0A0D0D0A, 12 + len(shb)) + shb + struct.pack("<I", 28))
        idb = struct.pack("<HHI", link, 0, snaplen)
        out.write(struct.pack("<II", 1, 12 + len(idb)) + idb + struct.pack("<I", 20))
        buf: list[bytes] = []
        while rec := fh.read(16):
            sec, usec, caplen, wirelen = struct.unpack("<IIII", rec)
            data = fh.read(caplen)
            ts = sec * 1_000_000 + usec
            pad = b"\0" * (-caplen % 4)
            length = 32 + caplen + len(pad)
            buf.append(
                struct.pack("<IIIIIII", 6, length, 0, ts >> 32, ts & 0xFFFFFFFF, caplen, wirelen)
                + data
                + pad
                + struct.pack("<I", length)
            )
            n += 1
            if len(buf) >= 65536:
                out.write(b"".join(buf))
                buf.clear()
        out.write(b"".join(buf))
    return n


def double(src: Path, dst: Path) -> int:
    """``src`` followed by itself with every client address moved (10.x → 11.x) and times
    shifted by a day, so the second half has flows of its own. Returns the packet count."""
    from auditor.packets.pcapfile import CaptureReader

    raw = np.fromfile(src, dtype=np.uint8)
    body = raw[24:].copy()
    with open(src, "rb") as fh:
        reader = CaptureReader(fh)
        offsets = np.concatenate([b.offset + b.data for b in reader]) - 24  # from the body
        link = reader.link_types[0]
    l3 = offsets + (14 if link == 1 else 20)
    for field in (12, 16):  # source and destination address, first byte
        at = l3 + field
        body[at] = np.where(body[at] == 10, 11, body[at])
    sec = offsets - 16  # record header: seconds first
    secs = body[sec[:, None] + np.arange(4)].copy().view("<u4")[:, 0] + np.uint32(86400)
    body[sec[:, None] + np.arange(4)] = secs.view(np.uint8).reshape(-1, 4)
    with open(dst, "wb") as fh:
        fh.write(raw.tobytes())
        fh.write(body.tobytes())
    return 2 * len(offsets)


def _hwm_mib(pid: int | str = "self") -> int:
    """Peak RSS of a process (VmHWM). Unlike ru_maxrss it starts afresh at exec, so a
    child does not report the peak of the process that forked it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return 0


class _ChildPeak:
    """Samples the peak RSS of this process's children (the name worker) while it runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        children = Path(f"/proc/self/task/{os.getpid()}/children")
        while not self._stop.wait(0.05):
            try:
                pids = children.read_text().split()
            except OSError:
                return
            for pid in pids:
                self.peak = max(self.peak, _hwm_mib(pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _measure(path: str, keep: bool, sample: bool = False) -> dict[str, Any]:
    from auditor.packets import read_capture

    children = _ChildPeak() if sample else None
    t = time.perf_counter()
    r = read_capture(path, keep_packets=keep)
    read_s = time.perf_counter() - t
    worker_peak = children.stop() if children is not None else 0
    peak = _hwm_mib()  # the read's own: a spilled read's tables are on disk still
    # what the read returns: the flow and DNS tables (pandas' deep count), in memory (read
    # back from disk by a spilled read: the time counts, and the peak is given apart)
    tables = sum(int(t.memory_usage(deep=True).sum()) for t in (r.flows, r.dns))
    dt = time.perf_counter() - t
    return {
        "seconds": dt,
        "seconds_read_only": read_s,
        "spilled": r.spilled,
        "peak_rss_with_tables_mib": _hwm_mib(),
        "packets": int(r.counts["packets"]),
        "flows": len(r.flows),
        "dns_rows": len(r.dns),
        "tls_sni": int(r.flows["sni"].notna().sum()),
        "quic_sni": int(r.flows["quic_sni"].notna().sum()),
        "http_host": int(r.flows["http_host"].notna().sum()),
        "peak_rss_mib": peak,
        "worker_peak_rss_mib": worker_peak,
        "tables_mib": round(tables / 2**20, 1),
        "warnings": dict(r.warnings),
    }


def _measure_stream(path: str) -> dict[str, Any]:
    """Only the streaming reader and decoder: what reading costs without any tables."""
    from auditor.packets import iter_packets

    t = time.perf_counter()
    n = sum(len(batch) for batch in iter_packets(path))
    return {
        "seconds": time.perf_counter() - t,
        "packets": n,
        "peak_rss_mib": _hwm_mib(),
    }


def _child(
    path: Path,
    keep: bool | None,
    sample: bool = False,
    uncompiled: bool = False,
) -> dict[str, Any]:
    mode = "stream" if keep is None else ("1" if keep else "0") + ("s" if sample else "")
    env = dict(os.environ)
    if uncompiled:
        env["AUDITOR_PURE_PYTHON_SCAN"] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "bench.packets", "--measure", str(path), mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
    )
    return dict(json.loads(out.stdout))


def _best(path: Path, keep: bool) -> dict[str, Any]:
    runs = [_child(path, keep) for _ in range(ROUNDS)]
    return min(runs, key=lambda r: float(r["seconds"]))


def _warm(path: Path) -> None:
    """Read a file once so that every timed read finds it in the page cache."""
    with open(path, "rb", buffering=0) as fh:
        while fh.read(1 << 24):
            pass


def _scapy(path: Path, tmp: Path) -> float:
    import scapy.layers.all  # noqa: F401 - registers Ethernet, SLL2, IP... for dissection
    from scapy.utils import PcapReader

    prefix = tmp / "prefix.pcap"
    with open(path, "rb") as src, open(prefix, "wb") as dst:
        dst.write(src.read(24))
        for _ in range(SCAPY_PREFIX):
            head = src.read(16)
            dst.write(head + src.read(struct.unpack("<I", head[8:12])[0]))
    t = time.perf_counter()
    n = 0
    with PcapReader(str(prefix)) as reader:
        for _pkt in reader:
            n += 1
    return n / (time.perf_counter() - t)


def _tshark(path: Path) -> float | None:
    exe = shutil.which("tshark")
    if exe is None:
        return None
    fields = ["frame.time_epoch", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
              "tcp.dstport", "udp.srcport", "udp.dstport", "dns.qry.name",
              "tls.handshake.extensions_server_name", "http.host"]  # fmt: skip
    args = [exe, "-r", str(path), "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    t = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def _pps_vs_tshark(path: Path) -> dict[str, Any]:
    """The streaming read (best of ROUNDS, each in a fresh process) against tshark on one
    file, in the same run."""
    _warm(path)
    best = _best(path, keep=False)
    n = best["packets"]
    pps = n / best["seconds"]
    out: dict[str, Any] = {
        "packets": n,
        "auditor_pps": round(pps),
        "found": {k: best[k] for k in FOUND},
        "warnings": best["warnings"],
        "peak_rss_mib": best["peak_rss_mib"],
    }
    tshark_s = _tshark(path)
    if tshark_s is not None:
        out["tshark_pps"] = round(n / tshark_s)
        out["ratio_vs_tshark"] = round(pps / (n / tshark_s), 1)
    out["targets"] = {
        "pps_500k": pps >= 500_000,
        "vs_tshark_12x": None if tshark_s is None else pps / (n / tshark_s) >= 12,
    }
    return out


def dns_heavy() -> dict[str, Any]:
    """The DNS-heavy mix (packets issue 14): about 40% of packets DNS (an A and an AAAA
    lookup per session, CNAME chains), short TLS connections or none, 1,000,000 packets."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dns.pcap"
        made = write_capture(path, PACKETS, 1, mix="dns")
        os.sync()
        out = {"generated": made, **_pps_vs_tshark(path)}
        out["dns_share"] = round(out["found"]["dns_rows"] / out["packets"], 2)
    return out


def memory() -> dict[str, Any]:
    """Peak RSS of a fresh process per read (``keep_packets=False``) of each mix: VmHWM, not
    ru_maxrss, which a child keeps from the process that forked it (here the one that just
    built the 2M file in memory). Two ways to double the file:

    - ``2M_same_flows``: the same number of sessions, each connection carrying more data
      packets, so the file is twice as long with as many flows and DNS rows: what grows
      here grows with the packets (the target: within 10%);
    - ``2M_twice_the_flows``: the 1M file twice (other client addresses, a day later), so
      it has twice the flows and DNS rows too: what grows is per flow or per DNS row, the
      tables the read returns (reported per flow and DNS row). ``tables_mib`` is the size
      of those tables (pandas' deep count), and ``tables_growth_twice_the_flows`` what the
      added rows alone add to the 1M peak: a read that returns its tables in memory grows at
      least that much, however it is built.

    ``worker_peak_rss_mib`` is the name worker's peak (sampled every few milliseconds), and
    ``peak_rss_with_worker_mib`` the sum of both processes' peaks (at most what the read
    held at once); the ``_with_worker`` growths are of that sum."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for mix in ("default", "dns"):
            one, two, long = (Path(d) / f"{mix}{k}.pcap" for k in ("1", "2", "long"))
            made = write_capture(one, PACKETS, 1, mix=mix)
            carriers = sum(v for k, v in made["kinds"].items() if k != "dns-only")
            extra = -(-PACKETS // max(carriers, 1))  # about a million packets more
            stretched = write_capture(long, 0, 1, mix=mix, sessions=made["sessions"], extra=extra)
            double(one, two)
            os.sync()
            # (the name worker's peak sampled too: a read's memory is both processes')
            r1, r2, rl = (_child(p, False, sample=True) for p in (one, two, long))
            for r in (r1, r2, rl):
                r["peak_rss_with_worker_mib"] = r["peak_rss_mib"] + r["worker_peak_rss_mib"]
            keys = (
                "peak_rss_mib",
                "worker_peak_rss_mib",
                "peak_rss_with_worker_mib",
                "peak_rss_with_tables_mib",
                "spilled",
                "tables_mib",
                "packets",
                "flows",
                "dns_rows",
            )
            grow2 = r2["peak_rss_mib"] - r1["peak_rss_mib"]
            more = (r2["flows"] - r1["flows"]) + (r2["dns_rows"] - r1["dns_rows"])
            out[mix] = {
                "1M": {k: r1[k] for k in keys},
                "2M_same_flows": {k: rl[k] for k in keys},
                "2M_twice_the_flows": {k: r2[k] for k in keys},
                "growth_same_flows": round(rl["peak_rss_mib"] / r1["peak_rss_mib"] - 1, 3),
                "growth_twice_the_flows": round(r2["peak_rss_mib"] / r1["peak_rss_mib"] - 1, 3),
                # the reading process and its name worker, each at its peak
                "growth_same_flows_with_worker": round(
                    rl["peak_rss_with_worker_mib"] / r1["peak_rss_with_worker_mib"] - 1, 3
                ),
                "growth_twice_the_flows_with_worker": round(
                    r2["peak_rss_with_worker_mib"] / r1["peak_rss_with_worker_mib"] - 1, 3
                ),
                # with the tables read back into pandas after the read (a consumer that
                # wants them whole; one that takes them piece by piece does not pay this)
                "growth_twice_the_flows_with_tables": round(
                    r2["peak_rss_with_tables_mib"] / r1["peak_rss_with_tables_mib"] - 1, 3
                ),
                "bytes_per_added_flow_or_dns_row": round(grow2 * 2**20 / max(more, 1)),
                # of the growth with twice the flows, what the returned tables themselves add
                "tables_growth_twice_the_flows": round(
                    (r2["tables_mib"] - r1["tables_mib"]) / r1["peak_rss_mib"], 3
                ),
                "extra_packets_per_connection": extra,
                "packets_same_flows_file": stretched["packets"],
            }
            out[mix]["targets"] = {
                "within_10pct_same_flows": out[mix]["growth_same_flows"] <= 0.10,
                "within_10pct_twice_the_flows": out[mix]["growth_twice_the_flows"] <= 0.10,
            }
            for f in (one, two, long):
                f.unlink()
    return out


def main(sections: list[str] | None = None) -> dict[str, Any]:
    """All sections (``python -m bench.packets``), or those named: ``default``, ``dns``,
    ``memory``."""
    wanted = set(sections or ("default", "dns", "memory"))
    out: dict[str, Any] = {}
    if "dns" in wanted:
        out["dns_heavy"] = dns_heavy()
    if "memory" in wanted:
        out["memory"] = memory()
    if "default" in wanted:
        out.update(_default_mix())
    print(json.dumps(out, indent=2))
    return out


def _default_mix() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        eth, sll2, eth2 = tmp / "eth.pcap", tmp / "sll2.pcap", tmp / "eth2.pcap"
        ng = tmp / "eth.pcapng"
        t = time.perf_counter()
        made = write_capture(eth, PACKETS, 1)
        write_capture(sll2, PACKETS, 276)
        n2 = double(eth, eth2)
        to_pcapng(eth, ng)
        out["generated"] = {**made, "seconds_for_all_files": round(time.perf_counter() - t, 1)}
        os.sync()  # no write-back of the new files while they are timed
        for f in (eth, sll2, eth2, ng):
            _warm(f)
        out["file_mib"] = round(eth.stat().st_size / 2**20)
        stream = _best(eth, keep=False)
        table = _best(eth, keep=True)
        sll = _best(sll2, keep=False)
        two = _best(eth2, keep=False)
        pcapng = _best(ng, keep=False)
        uncompiled = min(
            (_child(eth, False, uncompiled=True) for _ in range(ROUNDS)),
            key=lambda r: float(r["seconds"]),
        )
        reader_1m = _child(eth, None)
        reader_2m = _child(eth2, None)
        worker_1m = _child(eth, False, sample=True)["worker_peak_rss_mib"]
        worker_2m = _child(eth2, False, sample=True)["worker_peak_rss_mib"]
        n = stream["packets"]
        auditor_pps = n / stream["seconds"]
        scapy_pps = _scapy(eth, tmp)
        tshark_s = _tshark(eth)
        out["auditor"] = {
            "ethernet_pps": round(auditor_pps),
            "ethernet_with_packet_table_pps": round(n / table["seconds"]),
            "sll2_pps": round(sll["packets"] / sll["seconds"]),
            "pcapng_pps": round(pcapng["packets"] / pcapng["seconds"]),
            "compiled": {  # which parts ran compiled ("python"/"numpy": not built)
                "record_walk": pcapfile.SCANNER,
                "decoder": decode.DECODER,
                "flow_table": flows.FLOW_TABLE,
                "dns_parser": DNS_PARSER,
            },
            "ethernet_pps_uncompiled": round(uncompiled["packets"] / uncompiled["seconds"]),
            "seconds": round(stream["seconds"], 3),
            "found": {k: stream[k] for k in FOUND},
            "warnings": stream["warnings"],
        }
        out["scapy_pps_extrapolated"] = round(scapy_pps)
        out["ratio_vs_scapy"] = round(auditor_pps / scapy_pps, 1)
        if tshark_s is not None:
            out["tshark_pps"] = round(n / tshark_s)
            out["tshark_seconds"] = round(tshark_s, 1)
            out["ratio_vs_tshark"] = round(auditor_pps / (n / tshark_s), 1)
        out["peak_rss_mib"] = {
            "1M_streaming": stream["peak_rss_mib"],
            f"{n2 // 1_000_000}M_streaming": two["peak_rss_mib"],
            "1M_with_packet_table": table["peak_rss_mib"],
            "name_worker_1M": worker_1m,
            f"name_worker_{n2 // 1_000_000}M": worker_2m,
        }
        out["file_mib_2M"] = round(eth2.stat().st_size / 2**20)
        out["peak_rss_mib"]["reader_only_1M"] = reader_1m["peak_rss_mib"]
        out["peak_rss_mib"]["reader_only_2M"] = reader_2m["peak_rss_mib"]
        out["reader_only_pps"] = round(reader_1m["packets"] / reader_1m["seconds"])
        out["tables_1M_vs_2M"] = {
            "flows": [stream["flows"], two["flows"]],
            "dns_rows": [stream["dns_rows"], two["dns_rows"]],
            "pps": [round(n / stream["seconds"]), round(two["packets"] / two["seconds"])],
        }
        out["targets"] = {
            "pps_500k": auditor_pps >= 500_000,
            "pps_500k_pcapng": pcapng["packets"] / pcapng["seconds"] >= 500_000,
            "vs_tshark_12x": None if tshark_s is None else auditor_pps / (n / tshark_s) >= 12,
        }
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        if sys.argv[3] == "stream":
            print(json.dumps(_measure_stream(sys.argv[2])))
        else:
            mode = sys.argv[3]
            print(json.dumps(_measure(sys.argv[2], mode.startswith("1"), mode.endswith("s"))))
    else:
        main(sys.argv[1:])

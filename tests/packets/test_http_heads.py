"""HTTP/1 request heads split over TCP segments (auditor.packets.names and flows): the Host
of every request tshark reassembles, on real captures, and the bounds of the reassembly.

tshark (``-Y http.request``, out-of-order reassembly on) puts request heads back together
across segments; auditor must name the same flows with the same Host values. The captures are
nDPI's test captures (``tests/data/names/PROVENANCE.md``): ``http_ua_splitted_in_two_pkts``
holds 37 ad-tracking requests on one connection whose Host comes in a second segment."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from auditor.packets import flows as F
from auditor.packets import names as N
from auditor.packets import read_capture
from auditor.packets.http1 import HTTP_HEAD_CAP

DATA = Path(__file__).resolve().parents[1] / "data" / "names"
SPLIT = DATA / "http_ua_splitted_in_two_pkts.pcapng"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

Conn = tuple[str, int, str, int]  # client address and port, server address and port


def tshark_hosts(path: Path) -> dict[Conn, set[str]]:
    """Per connection, the Host values of the requests tshark reads (reassembled heads)."""
    assert TSHARK is not None
    fields = ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport"]
    args = [TSHARK, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path)]
    args += ["-Y", "http.request && tcp", "-T", "fields"]
    for f in [*fields, "http.host"]:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    hosts: dict[Conn, set[str]] = defaultdict(set)
    for line in out.splitlines():
        a, a6, sp, b, b6, dp, host = line.split("\t")
        if host:
            hosts[(a or a6, int(sp), b or b6, int(dp))].add(host)
    return dict(hosts)


def auditor_hosts(result: F.CaptureResult) -> dict[Conn, set[str]]:
    rows = result.flows[result.flows[F.HTTP_HOST].notna()]
    return {
        (
            str(r[F.CLIENT_IP]),
            int(r[F.CLIENT_PORT]),
            str(r[F.SERVER_IP]),
            int(r[F.SERVER_PORT]),
        ): set(r[F.HTTP_HOST].split(";"))
        for _, r in rows.iterrows()
    }


REAL = ["http_ua_splitted_in_two_pkts.pcapng", "http-lines-split.pcap",
        "crawler_false_positive.pcapng", "webdav.pcap", "android.pcap"]  # fmt: skip


@needs_tshark
@pytest.mark.parametrize("name", REAL)
def test_hosts_are_those_tshark_reassembles(name: str) -> None:
    expected = tshark_hosts(DATA / name)
    assert expected, "the capture has HTTP requests"
    got = auditor_hosts(read_capture(DATA / name))
    assert got == expected


def test_a_head_split_in_two_is_read_every_time_on_one_connection() -> None:
    r = read_capture(SPLIT)
    (hosts,) = auditor_hosts(r).values()
    assert hosts == {"va.origin.startappservice.com"}
    assert not r.warnings  # all 37 heads complete: none cut, none too large
    assert "http-prefix-not-a-request" not in r.counts


def test_the_worker_and_this_process_agree() -> None:
    here = read_capture(SPLIT, workers=0, chunk_size=4096)
    worker = read_capture(SPLIT, workers=1)
    assert auditor_hosts(here) == auditor_hosts(worker)
    assert here.warnings == worker.warnings


# ---------------------------------------------------------- a real head, segmented anew


def _first_request() -> tuple[bytes, bytes, bytes]:
    """The Ethernet+IP header bytes of the first request's segments (as scapy packets' raw
    layers are rebuilt) and the head itself, from the real capture (frames 3 and 4)."""
    import scapy.layers.all  # noqa: F401 - registers the link types
    from scapy.utils import rdpcap

    packets = rdpcap(str(SPLIT))
    head = bytes(packets[2]["TCP"].payload) + bytes(packets[3]["TCP"].payload)
    assert head.endswith(b"\r\n\r\n") and b"\r\nHost: va.origin" in head
    return bytes(packets[2]), bytes(packets[1]), head


def _segmented(head: bytes, size: int, *, shuffle: bool, drop: int | None = None) -> list[object]:
    """The head as segments of ``size`` bytes (scapy packets with the real connection's
    addresses and sequence numbers), reordered and with a retransmission when asked."""
    import scapy.layers.all  # noqa: F401
    from scapy.utils import rdpcap

    real = rdpcap(str(SPLIT))
    syn, synack, first = real[0], real[1], real[2]
    isn = first["TCP"].seq
    segs = []
    for i, off in enumerate(range(0, len(head), size)):
        if i == drop:
            continue
        p = first.copy()
        p["TCP"].seq = (isn + off) & 0xFFFFFFFF
        p["TCP"].remove_payload()
        p["TCP"].add_payload(head[off : off + size])
        del p["IP"].len, p["IP"].chksum, p["TCP"].chksum
        segs.append(p)
    if shuffle:  # neighbours swapped (the head's first segment comes second), or all
        if len(segs) > N.EARLY_SEGMENTS:
            for i in range(0, len(segs) - 1, 2):
                segs[i], segs[i + 1] = segs[i + 1], segs[i]
        else:
            random.Random(3).shuffle(segs)
        segs.insert(2, segs[0].copy())  # a retransmission
    return [syn, synack, *segs]


def _write(tmp_path: Path, packets: list[object]) -> Path:
    from scapy.utils import wrpcap

    path = tmp_path / "resegmented.pcap"
    wrpcap(str(path), packets)
    for i, p in enumerate(packets):  # increasing times (the shuffle is in file order)
        p.time = 1_600_000_000 + i * 0.001  # type: ignore[attr-defined]
    wrpcap(str(path), packets)
    return path


@pytest.mark.parametrize("size", [32, 200])
def test_a_real_head_in_small_reordered_segments(tmp_path: Path, size: int) -> None:
    head = _first_request()[2]
    path = _write(tmp_path, _segmented(head, size, shuffle=True))
    r = read_capture(path)
    assert list(auditor_hosts(r).values()) == [{"va.origin.startappservice.com"}]
    assert not r.warnings
    if TSHARK is not None:  # the same file, read by tshark
        assert auditor_hosts(r) == tshark_hosts(path)


def test_a_gap_before_the_host_line_names_nothing_and_is_counted(tmp_path: Path) -> None:
    head = _first_request()[2]
    at = head.index(b"\r\nHost:") // 64  # the segment that holds the Host line's start
    r = read_capture(_write(tmp_path, _segmented(head, 64, shuffle=False, drop=at)))
    assert auditor_hosts(r) == {}
    assert r.warnings["http-head-incomplete"] == 1


def test_a_head_beyond_the_cap_keeps_its_complete_lines_and_is_counted(tmp_path: Path) -> None:
    head = _first_request()[2]
    host_end = head.index(b"\r\n", head.index(b"\r\nHost:") + 2) + 2
    big = head[:host_end] + b"X-Pad: " + b"a" * HTTP_HEAD_CAP + b"\r\n\r\n"
    r = read_capture(_write(tmp_path, _segmented(big, 1400, shuffle=False)))
    assert list(auditor_hosts(r).values()) == [{"va.origin.startappservice.com"}]
    assert r.warnings["http-head-too-large"] == 1


# ------------------------------------------------------------------------- the collector


def _job(kinds: list[int], seqs: list[int], payloads: list[bytes], flow: int = 0) -> N.NameJob:
    import numpy as np

    n = len(kinds)
    return N.NameJob(
        kind=np.array(kinds, dtype=np.int8),
        flow=np.full(n, flow, dtype=np.int64),
        direction=np.zeros(n, dtype=np.int8),
        seq=np.array(seqs, dtype=np.int64),
        ts=np.zeros(n, dtype=np.int64),
        tcp=np.ones(n, dtype=bool),
        order=np.arange(n, dtype=np.int64),
        ends=np.cumsum([len(p) for p in payloads]),
        blob=b"".join(payloads),
        dns=np.full(n, -1, dtype=np.int64),
    )


def test_the_collector_reads_each_head_of_a_connection() -> None:
    a = b"GET /a HTTP/1.1\r\nHo"
    b = b"st: one.example\r\n\r\n"
    c = b"GET /b HTTP/1.1\r\nHost: two.example\r\n\r\n"
    m, h = N.KIND_HTTP_MORE, N.KIND_HTTP
    col = N.NameCollector()
    col.feed(_job([h, m, h], [100, 100 + len(a), 100 + len(a + b)], [a, b, c]))
    res = col.result()
    flows, joined, first = res.names[N.NAME_HTTP_HOST]
    assert (flows.tolist(), joined.tolist(), first.tolist()) == (
        [0],
        ["one.example;two.example"],
        ["one.example"],
    )
    assert col.heads_done == {0: 100}  # the first head (the second fitted in its segment)
    assert not res.warnings


def test_a_head_cut_inside_the_host_line_gives_no_host() -> None:
    col = N.NameCollector()
    col.feed(_job([N.KIND_HTTP], [7], [b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: trunc"]))
    res = col.result()
    assert N.NAME_HTTP_HOST not in res.names  # no flow has one
    assert res.warnings == {"http-head-incomplete": 1}

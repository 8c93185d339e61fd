"""How capture reading scales: pcapng sections, and peak memory against the packet count.

Targets (issue 14): reading a pcapng file costs the same per section whether it holds 4,096
or 65,536 sections (a section per packet, each with its own interface table; 65,536 of them
make 8.7 MB, which took 113 s); the peak memory of reading 2,000,000 packets is within 10% of
reading 1,000,000.

Sections: a file of N sections (SHB, IDB, one EPB of a DNS packet each) is read three ways,
each timed alone in this process: the record reader, reader and decoder, and
``read_capture(keep_packets=False)`` (flows, DNS, names). Reported per section, with the
65,536/4,096 ratio of the time per section (1.0 is linear).

Memory: ``bench.packets`` writes its 1,000,000-packet capture and doubles it (the second half
with client addresses of its own, so it has flows of its own). Each stage is read in a fresh
process for its peak RSS (VmHWM): the reader alone, reader and decoder, the whole
``read_capture(keep_packets=False)``. The stage where the 2M/1M ratio jumps is where memory
grows with the file. ``where`` lists, for the whole read, the source lines holding the most
memory when the read ends (tracemalloc), 1M against 2M.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.packets import _hwm_mib, double, write_capture

SECTIONS = (4096, 65536)
PACKETS = 1_000_000
_ROOT = Path(__file__).resolve().parents[1]


def _block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = len(body) + 12
    return btype.to_bytes(4, "little") + n.to_bytes(4, "little") + body + n.to_bytes(4, "little")


def sections_capture(n: int) -> bytes:
    """``n`` sections of one interface and one packet (a DNS query over Ethernet) each."""
    shb = _block(0x0A0D0D0A, bytes.fromhex("4d3c2b1a01000000ffffffffffffffff"))
    idb = _block(1, (1).to_bytes(2, "little") + bytes(2) + (0).to_bytes(4, "little"))
    query = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
    out = bytearray()
    for i in range(n):
        udp = (40000 + i % 20000).to_bytes(2, "big") + b"\x00\x35"
        udp += (8 + len(query)).to_bytes(2, "big") + b"\x00\x00" + query
        total = 20 + len(udp)
        ip = bytes.fromhex("4500") + total.to_bytes(2, "big") + bytes.fromhex("00004000401100")
        ip += b"\x00" + bytes([10, 0, i >> 8 & 255, i & 255]) + bytes([10, 0, 0, 53])
        frame = bytes.fromhex("0242ac1100020242ac1100030800") + ip + udp
        ts = 1_700_000_000_000_000 + i
        epb = (0).to_bytes(4, "little") + (ts >> 32).to_bytes(4, "little")
        epb += (ts & 0xFFFFFFFF).to_bytes(4, "little") + len(frame).to_bytes(4, "little") * 2
        out += shb + idb + _block(6, epb + frame)
    return bytes(out)


def _time_sections(data: bytes) -> dict[str, float]:
    from auditor.packets import read_capture
    from auditor.packets.decode import Decoder
    from auditor.packets.pcapfile import CaptureReader

    out: dict[str, float] = {}
    t = time.perf_counter()
    assert sum(len(b) for b in CaptureReader(io.BytesIO(data))) > 0
    out["reader_s"] = time.perf_counter() - t
    t = time.perf_counter()
    decoder = Decoder()
    assert sum(len(decoder.decode(b)) for b in CaptureReader(io.BytesIO(data))) > 0
    out["reader_decoder_s"] = time.perf_counter() - t
    t = time.perf_counter()
    read_capture(io.BytesIO(data), keep_packets=False)
    out["read_capture_s"] = time.perf_counter() - t
    return out


def sections() -> dict[str, Any]:
    runs: dict[int, dict[str, float]] = {}
    for n in SECTIONS:
        data = sections_capture(n)
        runs[n] = {"bytes": len(data), **_time_sections(data)}
    small, large = SECTIONS
    out: dict[str, Any] = {}
    for n, r in runs.items():
        out[str(n)] = {k: round(v, 3) for k, v in r.items()} | {
            k.replace("_s", "_us_per_section"): round(v / n * 1e6, 1)
            for k, v in r.items()
            if k.endswith("_s")
        }
    for k in ("reader_s", "reader_decoder_s", "read_capture_s"):
        per_small = runs[small][k] / small
        per_large = runs[large][k] / large
        out[f"{k[:-2]}_per_section_ratio"] = round(per_large / per_small, 2)
    return out


# ------------------------------------------------------------------------------- memory


def _stage(path: str, stage: str) -> dict[str, Any]:
    """One stage of reading ``path`` in this (fresh) process: its time and peak RSS."""
    from auditor.packets import read_capture
    from auditor.packets.decode import Decoder
    from auditor.packets.pcapfile import CaptureReader

    t = time.perf_counter()
    where: list[tuple[str, int]] = []
    if stage == "reader":
        with open(path, "rb") as fh:
            n = sum(len(b) for b in CaptureReader(fh))
    elif stage == "decoder":
        decoder = Decoder()
        with open(path, "rb") as fh:
            n = sum(len(decoder.decode(b)) for b in CaptureReader(fh))
    else:
        if stage == "where":
            tracemalloc.start(1)
        r = read_capture(path, keep_packets=False, workers=0)
        n = int(r.counts["packets"])
        if stage == "where":
            snap = tracemalloc.take_snapshot()
            top = snap.statistics("lineno")[:8]
            where = [(f"{s.traceback[0].filename.split('/auditor/')[-1]}:"
                      f"{s.traceback[0].lineno}", s.size // 1024) for s in top]  # fmt: skip
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return {"packets": n, "traced_peak_mib": peak >> 20, "top_kib": where}
    return {
        "packets": n,
        "seconds": round(time.perf_counter() - t, 2),
        "peak_rss_mib": _hwm_mib(),
    }


def _child(path: Path, stage: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.pcap_scale", "--stage", str(path), stage],
        capture_output=True,
        text=True,
        check=True,
        cwd=_ROOT,
    )
    return dict(json.loads(out.stdout))


def memory(where: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
        one = Path(tmp) / "1m.pcap"
        two = Path(tmp) / "2m.pcap"
        write_capture(one, PACKETS, 1)
        double(one, two)
        out: dict[str, Any] = {}
        for stage in ("reader", "decoder", "read_capture"):
            a, b = _child(one, stage), _child(two, stage)
            out[stage] = {
                "1m": a,
                "2m": b,
                "peak_ratio": round(b["peak_rss_mib"] / max(a["peak_rss_mib"], 1), 3),
            }
        if where:
            out["where"] = {"1m": _child(one, "where"), "2m": _child(two, "where")}
        return out


def main() -> dict[str, Any]:
    result = {"sections": sections(), "memory": memory()}
    print(json.dumps({"pcap_scale": result}, indent=2))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--stage":
        print(json.dumps(_stage(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) == 2 and sys.argv[1] == "--sections":
        print(json.dumps(sections(), indent=2))
    else:
        main()

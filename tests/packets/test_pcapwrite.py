"""The pcap writer: a classic pcap global header and records, as the format defines them."""

from __future__ import annotations

import struct
from pathlib import Path

from auditor.packets.pcapwrite import LINKTYPE_RAW, PcapWriter

T0 = 1_700_000_000.25


def test_global_header_and_records_are_classic_pcap(tmp_path: Path):
    path = tmp_path / "n.pcap"
    with open(path, "wb") as fh:
        w = PcapWriter(fh, LINKTYPE_RAW, nanos=True, snaplen=64)
        w.write(T0 + 0.000000123, bytes(100))
    data = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, snaplen, linktype) == (0xA1B23C4D, 2, 4, 64, LINKTYPE_RAW)
    sec, nsec, incl, orig = struct.unpack("<IIII", data[24:40])
    assert (sec, incl, orig) == (int(T0), 64, 100)
    assert abs(nsec - 250_000_123) <= 256  # a float epoch holds about a quarter microsecond
    assert len(data) == 24 + 16 + 64 and w.packets == 1 and w.bytes == len(data)

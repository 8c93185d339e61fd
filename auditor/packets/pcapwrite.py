"""A streaming writer of classic pcap: the file header and one record per frame.

Format: pcap(5) (``pcap-savefile``): a 24-byte global header, then per packet a 16-byte record
header. The frames the virtual handset synthesises from what its sockets carry are made in
``vhandset.synth``, which writes them with this module.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL2 = 276
LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL2)

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
DEFAULT_SNAPLEN = 262144  # tcpdump's default since 4.99
GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")

# ---- pcap framing ------------------------------------------------------------------------------


def global_header(linktype: int, *, nanos: bool = False, snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    """The 24-byte pcap file header (little-endian, version 2.4)."""
    return GLOBAL_HEADER.pack(MAGIC_NSEC if nanos else MAGIC_USEC, 2, 4, 0, 0, snaplen, linktype)


def record(
    ts: float, frame: bytes, *, nanos: bool = False, snaplen: int = DEFAULT_SNAPLEN
) -> bytes:
    """One pcap record: its header and the frame, cut to ``snaplen``."""
    if nanos:
        whole = round(ts * 1_000_000_000)
        sec, frac = divmod(whole, 1_000_000_000)
    else:
        whole = round(ts * 1_000_000)
        sec, frac = divmod(whole, 1_000_000)
    kept = frame[:snaplen]
    return RECORD_HEADER.pack(sec, frac, len(kept), len(frame)) + kept


class PcapWriter:
    """Writes pcap to a binary stream as packets come; the caller owns (and closes) it."""

    def __init__(
        self,
        out: BinaryIO,
        linktype: int,
        *,
        nanos: bool = False,
        snaplen: int = DEFAULT_SNAPLEN,
        header: bool = True,
    ) -> None:
        self.out = out
        self.linktype = linktype
        self.nanos = nanos
        self.snaplen = snaplen
        self.packets = 0
        self.bytes = 0
        if header:
            self._put(global_header(linktype, nanos=nanos, snaplen=snaplen))

    def _put(self, data: bytes) -> None:
        self.out.write(data)
        self.bytes += len(data)

    def write(self, ts: float, frame: bytes) -> None:
        self._put(record(ts, frame, nanos=self.nanos, snaplen=self.snaplen))
        self.packets += 1

    def write_frames(self, frames: Iterable[tuple[float, bytes]]) -> None:
        for ts, frame in frames:
            self.write(ts, frame)

    def flush(self) -> None:
        self.out.flush()


__all__ = [
    "DEFAULT_SNAPLEN",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "PcapWriter",
    "global_header",
    "record",
]

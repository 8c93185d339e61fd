"""Packet captures: reading, writing and live capture (pcap, pcapng).

Reading: records (:mod:`.pcapfile`), link and IP/TCP/UDP headers (:mod:`.decode`), names
(:mod:`.names`) and the flow table (:mod:`.flows`); writing and live capture are
:mod:`.pcapwrite` and :mod:`.live`.

>>> from auditor.packets import read_capture
>>> result = read_capture("capture.pcapng")   # doctest: +SKIP
>>> result.flows, result.dns, result.names, result.warnings   # doctest: +SKIP

``iter_packets(path)`` streams decoded batches for files of any size; ``read_capture(path,
keep_packets=False)`` builds flows, DNS and names without the per-packet table.

The names are imported on first use, so that a worker process that only parses names
(:mod:`auditor.packets.names`) does not load pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.packets.decode import Decoder, PacketBatch
    from auditor.packets.flows import (
        CaptureAnalyzer,
        CaptureResult,
        iter_packets,
        read_capture,
    )
    from auditor.packets.pcapfile import (
        CaptureReader,
        Comment,
        Interface,
        PcapError,
        RecordBatch,
    )

_WHERE = {
    "Decoder": "decode",
    "PacketBatch": "decode",
    "CaptureAnalyzer": "flows",
    "CaptureResult": "flows",
    "iter_packets": "flows",
    "read_capture": "flows",
    "CaptureReader": "pcapfile",
    "Comment": "pcapfile",
    "Interface": "pcapfile",
    "PcapError": "pcapfile",
    "RecordBatch": "pcapfile",
}
__all__ = [
    "CaptureAnalyzer",
    "CaptureReader",
    "CaptureResult",
    "Comment",
    "Decoder",
    "Interface",
    "PacketBatch",
    "PcapError",
    "RecordBatch",
    "iter_packets",
    "read_capture",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'auditor.packets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"auditor.packets.{module}"), name)

"""Which packets of a batch may carry a name, told from their first payload bytes, ports and
protocol: a DNS message, a TLS ClientHello or server flight, a QUIC Initial or Google QUIC
hello, an HTTP request head (a ``names.KIND_*`` each, 0 for none).

The reader asks it of every packet with a payload, so it runs as one compiled pass over the
batch (``_flowtab.name_kinds``); :func:`kinds_numpy` is its twin in numpy, what runs where the
compiled part is not built or ``AUDITOR_PURE_PYTHON_SCAN`` is set, and what the tests hold it
to. Both take their constants from here (ports, versions, methods): neither writes one out.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Final

import numpy as np

from auditor.packets import decode, names
from auditor.packets._compiled import load
from auditor.packets.decode import PacketBatch
from auditor.packets.http1 import HTTP_METHODS
from auditor.packets.quic import INITIAL_TYPE, QUIC_DRAFTS, QUIC_V1, QUIC_V2
from auditor.packets.tls import HANDSHAKE
from auditor.packets.tlscert import SERVER_HELLO

log = logging.getLogger(__name__)

_flowtab: ModuleType | None = load("_flowtab")
# a build of _flowtab from before name_kinds (an old editable install): numpy does it
COMPILED: Final = _flowtab is not None and hasattr(_flowtab, "name_kinds")
if _flowtab is not None and not COMPILED:
    log.warning("auditor/packets/_flowtab is an old build without name_kinds: reinstall auditor")

HTTP_PREFIXES: Final = np.array(
    [int.from_bytes((m + b" ")[:4], "big") for m in HTTP_METHODS], dtype=np.int64
)  # each method's first four bytes (with the space after a three-letter one)
_HTTP_FIRST: Final = np.zeros(256, dtype=bool)  # first bytes of the HTTP methods
_HTTP_FIRST[[m[0] for m in HTTP_METHODS]] = True
DNS_PORTS: Final = np.array(sorted(names.DNS_PORTS), dtype=np.int64)
# QUIC v1, v2, v2's Initial packet type, the first draft and the one after the last
QUIC_CONSTANTS: Final = np.array(
    [QUIC_V1, QUIC_V2, INITIAL_TYPE[QUIC_V2], QUIC_DRAFTS.start, QUIC_DRAFTS.stop],
    dtype=np.int64,
)
# the codes the compiled pass writes, in its order
KIND_CODES: Final = np.array(
    [names.KIND_HTTP, names.KIND_QUIC, names.KIND_TLS, names.KIND_TLS_SERVER, names.KIND_DNS],
    dtype=np.int8,
)


def name_kinds(
    pb: PacketBatch, idx: np.ndarray, compiled: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """What each packet ``idx`` of the batch may carry: the places in ``idx`` of those that
    may carry a name, and their kinds. ``compiled``: the compiled pass when it is built."""
    if compiled and COMPILED:
        assert _flowtab is not None
        kinds = np.empty(len(idx), dtype=np.int8)
        c = np.ascontiguousarray
        _flowtab.name_kinds(
            c(pb.payload_head, dtype=np.uint8),
            c(pb.payload_len, dtype=np.int64),
            c(pb.proto, dtype=np.int16),
            c(pb.sport, dtype=np.int32),
            c(pb.dport, dtype=np.int32),
            c(idx, dtype=np.int64),
            HTTP_PREFIXES,
            DNS_PORTS,
            QUIC_CONSTANTS,
            KIND_CODES,
            kinds,
        )
    else:
        kinds = kinds_numpy(pb, idx)
    maybe = np.flatnonzero(kinds)
    return maybe, kinds[maybe]


def _any_of(values: np.ndarray, wanted: object) -> np.ndarray:
    """``np.isin`` for a few wanted values (faster than it for so few)."""
    out = np.zeros(len(values), dtype=bool)
    for w in wanted:  # type: ignore[attr-defined]
        out |= values == w
    return out


def kinds_numpy(pb: PacketBatch, idx: np.ndarray) -> np.ndarray:
    """:func:`name_kinds`' kinds with numpy, for every packet of ``idx`` (0: none)."""
    proto = pb.proto[idx]
    sp, dp = pb.sport[idx], pb.dport[idx]
    plen = pb.payload_len[idx]
    tcp = proto == decode.PROTO_TCP
    udp = proto == decode.PROTO_UDP
    kind = np.zeros(len(idx), dtype=np.int8)
    # Only UDP and TCP to or from port 53 or starting like a TLS record or an HTTP method
    # can be any of the kinds below: the rest (most TCP data) is left out at once.
    b0 = pb.payload_head[idx, 0]
    maybe = np.flatnonzero(
        udp | (tcp & ((b0 == HANDSHAKE) | _HTTP_FIRST[b0] | (sp == 53) | (dp == 53)))
    )
    sp, dp, ln = sp[maybe], dp[maybe], plen[maybe]
    tcp_m, udp_m = tcp[maybe], udp[maybe]
    head = pb.payload_head[idx[maybe]].astype(np.int64)
    head[np.arange(head.shape[1]) >= ln[:, None]] = -1  # past the captured payload
    found = np.zeros(len(maybe), dtype=np.int8)
    dns = (udp_m & (_any_of(sp, DNS_PORTS) | _any_of(dp, DNS_PORTS)) & (ln >= 12)) | (
        tcp_m & ((sp == 53) | (dp == 53))
    )
    b0 = head[:, 0]
    tls = tcp_m & (b0 == HANDSHAKE) & (head[:, 1] == 3) & ((ln < 6) | (head[:, 5] == 1))
    version = (head[:, 1] << 24) | (head[:, 2] << 16) | (head[:, 3] << 8) | head[:, 4]
    ptype = (b0 >> 4) & 3
    long_header = udp_m & (ln >= 7) & ((b0 & 0xC0) == 0xC0)
    v1_like = (version == QUIC_V1) | ((version >= QUIC_DRAFTS.start) & (version < QUIC_DRAFTS.stop))
    initial = (v1_like & (ptype == 0)) | ((version == QUIC_V2) & (ptype == INITIAL_TYPE[QUIC_V2]))
    on_443 = (sp == 443) | (dp == 443)
    other_quic = on_443 & ~_any_of(version, (0, QUIC_V1, QUIC_V2))
    # Google QUIC's public header (Q0xx): no long-header bit, no IETF fixed bit, the
    # connection id flag set, the reset flag clear (auditor.packets.gquic)
    gquic_old = udp_m & on_443 & (ln >= 14) & ((b0 & 0xCA) == 0x08)
    first4 = (head[:, 0] << 24) | (head[:, 1] << 16) | (head[:, 2] << 8) | head[:, 3]
    found[tcp_m & (ln >= 4) & np.isin(first4, HTTP_PREFIXES)] = names.KIND_HTTP
    found[(long_header & (initial | other_quic)) | gquic_old] = names.KIND_QUIC
    found[tls] = names.KIND_TLS
    flight = tcp_m & (b0 == HANDSHAKE) & (head[:, 1] == 3) & (head[:, 2] <= 4)
    flight &= head[:, 5] == SERVER_HELLO
    found[flight] = names.KIND_TLS_SERVER
    found[dns] = names.KIND_DNS
    kind[maybe] = found
    return kind

# The compiled flow assignment (_flowtab.c); see flows.py.
from collections.abc import Buffer

class FlowTable:
    def __init__(self, timeout_ns: int, tcp_timeout_ns: int = ...) -> None: ...
    def assign(
        self,
        first: int,
        flowable: Buffer,
        ip_version: Buffer,
        src_hi: Buffer,
        src_lo: Buffer,
        dst_hi: Buffer,
        dst_lo: Buffer,
        proto: Buffer,
        sport: Buffer,
        dport: Buffer,
        ts_ns: Buffer,
        ip_bytes: Buffer,
        tcp_flags: Buffer,
        uid: Buffer,
        app: Buffer,
        link_type: Buffer,
        fid_out: Buffer,
        direction_out: Buffer,
        /,
    ) -> int: ...
    def columns(self) -> dict[str, bytes]: ...
    def expire(self, before_ns: int, /) -> dict[str, bytes] | None: ...
    def restore(self, columns: dict[str, bytes], /) -> int: ...

def address_texts(version: Buffer, hi: Buffer, lo: Buffer, /) -> list[str]: ...
def gather(buffer: Buffer, starts: Buffer, ends: Buffer, /) -> bytes: ...
def name_kinds(
    head: Buffer,
    payload_len: Buffer,
    proto: Buffer,
    sport: Buffer,
    dport: Buffer,
    rows: Buffer,
    http_prefixes: Buffer,
    dns_ports: Buffer,
    quic: Buffer,
    kinds: Buffer,
    out: Buffer,
    /,
) -> None: ...

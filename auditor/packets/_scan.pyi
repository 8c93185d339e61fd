# The compiled record walk (_scan.c); see pcapfile.py.
from collections.abc import Buffer

def scan_pcapng(buffer: Buffer, pos: int, end: int, big_endian: bool, /) -> tuple[bytes, int]: ...
def pcap_records(
    buffer: Buffer, pos: int, end: int, big_endian: bool, frac_ns: int, head: int, /
) -> tuple[int, bytearray, bytearray, bytearray, bytearray, bytearray]: ...
def pcapng_records(
    buffer: Buffer, pos: int, end: int, big_endian: bool, width: int, /
) -> tuple[bytes, int, bytes, bytes]: ...

# The compiled header decoder (_decode.c); see decode.py.
from collections.abc import Buffer

#: Names of the output columns, in the order decode() takes them in ``out``.
OUTPUTS: tuple[str, ...]
#: Names of the tallies, in the order decode() returns them.
TALLIES: tuple[str, ...]
#: Names of the kinds of frames without readable IP, in the order of decode.LINK_KINDS.
LINK_KINDS: tuple[str, ...]
#: Payload bytes per row of the ``payload_head`` output.
PAYLOAD_HEAD: int
#: The narrowest ``head`` decode() accepts (bytes per row).
MIN_HEAD: int

def decode(
    buf: Buffer,
    data: Buffer,
    caplen: Buffer,
    link_type: Buffer,
    head: Buffer,
    out: tuple[Buffer, ...],
    /,
) -> tuple[tuple[int, ...], list[bytes]]: ...

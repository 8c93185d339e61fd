"""HTTP/1 request line and ``Host`` header (a request head split over several TCP segments is
put back in order by :mod:`auditor.packets.names` first, up to :data:`HTTP_HEAD_CAP` bytes and
:data:`HTTP_HEAD_SEGMENTS` segments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from auditor.packets.wire import MalformedError

HTTP_METHODS: Final = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"CONNECT",
    b"PATCH",
    b"TRACE",
    # WebDAV (RFC 4918 9)
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
)
# A request head is read up to this many bytes (nginx's default for a whole head is 4 x 8 KiB,
# Apache's 100 fields of 8 KiB; tracking URLs run to several KiB) and this many segments.
HTTP_HEAD_CAP: Final = 32 * 1024
HTTP_HEAD_SEGMENTS: Final = 64
_MAX_HEAD: Final = HTTP_HEAD_CAP


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP/1 request head: ``host`` is the ``Host`` header as sent (port included),
    ``authority`` the host the request goes to (Host, else the target of CONNECT or of an
    absolute-form request), lower-cased and without port."""

    method: str
    target: str
    version: str
    host: str | None
    authority: str | None


def parse_http_request(payload: bytes | bytearray) -> HttpRequest:
    """The request line and Host header of an HTTP/1 request that ``payload`` starts with."""
    head = bytes(payload[:_MAX_HEAD])
    line_end = head.find(b"\r\n")
    line = head if line_end < 0 else head[:line_end]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in HTTP_METHODS or not parts[2].startswith(b"HTTP/1."):
        raise MalformedError("not an HTTP/1 request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    host: str | None = None
    if line_end >= 0:
        block_end = head.find(b"\r\n\r\n", line_end)
        block = head[line_end + 2 : block_end if block_end >= 0 else len(head)]
        for raw in block.split(b"\r\n"):
            name, sep, value = raw.partition(b":")
            if sep and name.strip().lower() == b"host":
                host = value.strip().decode("latin-1")
                break
    return HttpRequest(method, target, version, host, _authority(method, target, host))


def _authority(method: str, target: str, host: str | None) -> str | None:
    raw = host
    if not raw:
        if method == "CONNECT":
            raw = target
        elif "://" in target:
            raw = target.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if not raw:
        return None
    return strip_port(raw).lower()


def strip_port(hostport: str) -> str:
    """``example.org:8080`` → ``example.org``; ``[2001:db8::1]:443`` → ``2001:db8::1``."""
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else hostport
    if hostport.count(":") == 1:
        return hostport.split(":", 1)[0]
    return hostport

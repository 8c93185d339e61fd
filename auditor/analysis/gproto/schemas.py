"""The compiled message definitions and the endpoints whose request bodies follow them."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

DESCRIPTOR_SET = Path(__file__).with_name("schemas.desc")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Request bodies to ``host`` (or a subdomain when ``subdomains``) under ``path`` follow
    one of ``messages`` (full names, tried in order; the reading that leaves the fewest fields
    unknown wins)."""

    name: str
    host: str
    path: str
    messages: tuple[str, ...]
    citation: str
    subdomains: bool = False

    def matches(self, host: str, path: str) -> bool:
        host = host.lower().rstrip(".")
        if host != self.host and not (self.subdomains and host.endswith("." + self.host)):
            return False
        return path == self.path or path.startswith(self.path.rstrip("/") + "/")


_CLEARCUT = (
    "Clearcut LogRequest: field names from Google's google_cct.proto "
    "(firebase/firebase-android-sdk, transport/transport-backend-cct, Apache-2.0)"
)
_CHECKIN = (
    "Android check-in: field names from microG's checkin.proto "
    "(microg/GmsCore, play-services-core-proto, Apache-2.0)"
)
_MEASUREMENT = (
    "Firebase Analytics batch: field names from L. Haataja's app-measurement.proto "
    "(lari/firebase-ga4-app-measurement-protobuf, MIT)"
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "clearcut",
        "play.googleapis.com",
        "/log/batch",
        ("auditor.gproto.clearcut.LogRequest", "auditor.gproto.clearcut.BatchedLogRequest"),
        _CLEARCUT,
    ),
    Endpoint(
        "checkin",
        "android.clients.google.com",
        "/checkin",
        ("auditor.gproto.checkin.CheckinRequest",),
        _CHECKIN,
    ),
    Endpoint(
        "firebase-analytics",
        "app-measurement.com",
        "/a",
        ("auditor.gproto.measurement.Batch",),
        _MEASUREMENT,
        subdomains=True,  # region1.app-measurement.com
    ),
)


def endpoint_for(url: str | None) -> Endpoint | None:
    """The endpoint whose definition a request body sent to ``url`` follows, if any."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return None
    for ep in ENDPOINTS:
        if ep.matches(host, parts.path or "/"):
            return ep
    return None


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return pool


@functools.cache
def message_class(full_name: str) -> type[message.Message]:
    """The protobuf library's class for one message of ``schemas.desc``."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))

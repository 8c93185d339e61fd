# The compiled DNS message parser (_dns.c); see dns.parse_dns.
from collections.abc import Buffer

from auditor.packets.dns import DnsMessage, DnsResource
from auditor.packets.dnstables import DnsStore
from auditor.packets.wire import MalformedError

def setup(
    resource: type[DnsResource], message: type[DnsMessage], error: type[MalformedError], /
) -> None: ...
def parse(msg: Buffer, /) -> DnsMessage: ...
def collect(
    blob: Buffer, ends: Buffer, rows: Buffer, packet: Buffer, ts: Buffer, store: DnsStore, /
) -> tuple[bytes, int]: ...
def client_hello(handshake: Buffer, /) -> tuple[str | None, tuple[str, ...], int]: ...
def client_hellos(
    blob: Buffer, ends: Buffer, rows: Buffer, texts: dict[str, str], /
) -> tuple[bytes, list[str | None], list[str | None]]: ...

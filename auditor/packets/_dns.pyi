# The compiled DNS message parser (_dns.c); see names.parse_dns.
from collections.abc import Buffer

from auditor.packets.names import DnsMessage, DnsResource, MalformedError

def setup(
    resource: type[DnsResource], message: type[DnsMessage], error: type[MalformedError], /
) -> None: ...
def parse(msg: Buffer, /) -> DnsMessage: ...
def collect(
    blob: Buffer,
    ends: Buffer,
    rows: Buffer,
    packet: Buffer,
    ts: Buffer,
    numbers: bytearray,
    qnames: list[str],
    answers: list[tuple[DnsResource, ...]],
    name_addrs: dict[str, set[str]],
    answered: tuple[list[str], list[int], list[str]],
    /,
) -> tuple[bytes, int]: ...
def client_hello(handshake: Buffer, /) -> tuple[str | None, tuple[str, ...], int]: ...

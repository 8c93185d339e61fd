# The compiled DNS message parser (_dns.c); see names.parse_dns.
from collections.abc import Buffer

from auditor.packets.names import DnsMessage, DnsResource, MalformedError

def setup(
    resource: type[DnsResource], message: type[DnsMessage], error: type[MalformedError], /
) -> None: ...
def parse(msg: Buffer, /) -> DnsMessage: ...

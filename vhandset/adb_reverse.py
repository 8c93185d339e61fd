"""adbd's ``reverse:`` service as a pure table: requests in, the exact reply bytes out.

Replies follow adbd's ``handle_forward_request``: on the device a forward is answered ``OKAY``
(plus the resolved port as a protocol string for ``tcp:0``), a listing has *no* ``OKAY`` prefix,
and a failure is ``FAIL`` with a protocol string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vhandset.adb_wire import fail_reply, protocol_string

# tcp:0 resolves to a port of the device's own: a virtual one, since nothing listens on it.
_FIRST_DYNAMIC_PORT = 38000
_LAST_PORT = 65535
_MAX_LISTING = 0xFFFF  # list-forward's reply is one protocol string


def _tcp_port(spec: str) -> int | None:
    """The port of ``tcp:N``; None for other kinds of spec (``localabstract:…`` and such)."""
    if not spec.startswith("tcp:"):
        return None
    text = spec[len("tcp:") :]
    if not text.isdigit() or int(text) > _LAST_PORT:
        raise ValueError(spec)
    return int(text)


@dataclass
class ReverseTable:
    """One transport's reverse forwards: device spec -> host spec, in insertion order."""

    label: str  # the transport's name on the device, first column of ``--list``
    forwards: dict[str, str] = field(default_factory=dict)

    def handle(self, request: str) -> tuple[bytes, bool]:
        """Apply ``request`` (the service name after ``reverse:``); return (reply, changed)."""
        if request == "list-forward":
            return protocol_string(self.listing().encode("utf-8")), False
        if request == "killforward-all":
            changed = bool(self.forwards)
            self.forwards.clear()
            return b"OKAY", changed
        if request.startswith("killforward:"):
            spec = request[len("killforward:") :]
            if not spec or ";" in spec:
                return fail_reply(f"bad killforward: {spec}"), False
            if self.forwards.pop(spec, None) is None:
                return fail_reply(f"listener '{spec}' not found"), False
            return b"OKAY", True
        if request.startswith("forward:"):
            return self._forward(request[len("forward:") :])
        return fail_reply("not a reverse forwarding command"), False

    def _forward(self, body: str) -> tuple[bytes, bool]:
        norebind = body.startswith("norebind:")
        if norebind:
            body = body[len("norebind:") :]
        pieces = body.split(";")
        if len(pieces) != 2 or not pieces[0] or not pieces[1] or pieces[1].startswith("*"):
            return fail_reply(f"bad forward: {body}"), False
        requested, host_spec = pieces
        try:
            port = _tcp_port(requested)
        except ValueError:
            return fail_reply(f"cannot bind listener: invalid spec '{requested}'"), False
        if norebind and requested in self.forwards:
            return fail_reply("cannot rebind existing socket"), False
        if len(self.listing().encode("utf-8")) + len(body) + len(self.label) + 64 > _MAX_LISTING:
            # the listing is one protocol string (4 hex digits of length): past that the phone
            # could not even say what it forwards; refuse the new listener instead
            return fail_reply("cannot bind listener: too many reverse forwards"), False
        if port == 0:
            resolved = self._free_port()
            self.forwards[f"tcp:{resolved}"] = host_spec
            return b"OKAY" + protocol_string(str(resolved).encode("ascii")), True
        self.forwards[requested] = host_spec
        return b"OKAY", True

    def _free_port(self) -> int:
        taken = set(self.forwards)
        for port in range(_FIRST_DYNAMIC_PORT, _LAST_PORT + 1):
            if f"tcp:{port}" not in taken:
                return port
        raise RuntimeError("no free virtual port")

    def listing(self) -> str:
        """AOSP ``format_listeners``: ``<serial> <device-spec> <host-spec>\\n`` per forward."""
        return "".join(f"{self.label} {dev} {host}\n" for dev, host in self.forwards.items())

    def host_spec(self, device_spec: str) -> str | None:
        return self.forwards.get(device_spec)

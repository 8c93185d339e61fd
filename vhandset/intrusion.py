"""The virtual handset's intrusion log: what Android 16's Intrusion Logging would have kept of
the handset's own traffic, in the file format the phone's "Download and Decrypt" writes.

It is made from the handset's packet log (every transfer, with the UID of the app whose socket
it crossed, as the kernel knows it):

- each TCP open (a ``S`` packet) is a ``connect_event``: the app's package, the remote address
  and port, the time in milliseconds;
- each DNS query over UDP with its answer is a ``dns_event``: the package, the name asked, the
  A/AAAA addresses answered (at most 10, as Android logs them) and how many there were;
- a TCP open to an address the app got without a DNS packet (the handset resolves in-process
  on its direct route) is preceded by the ``dns_event`` the phone's resolver would have logged,
  when the name is known from the traffic plan.

Addresses are written as Java's ``InetAddress.toString()`` writes them (``/198.18.0.7``);
events are one compact JSON object per line under their type's key, with ``event_id`` counting
up from 0 (see ``docs/intrusion-logs.md`` for the format and its sources). This module is the
test double's: it does not use auditor's reader of the format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mitmproxy import dns

from vhandset.offline.dns import resolve
from vhandset.traffic import load_plan

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice
    from vhandset.network import Packet
    from vhandset.world import VirtualWorld

#: Where the phone's Settings app writes the decrypted logs (AndroidQF's ``DirOnDevice``).
DEVICE_DIR = "/sdcard/Download/Intrusion Logging"
#: Android logs at most this many addresses of a lookup (CTS NetworkLoggingTest).
MAX_ADDRESSES = 10


def plan_names(profile_id: str) -> dict[str, str]:
    """address -> host name for every host the profile's traffic plan calls, as the offline
    DNS answers it: the lookups an app on the direct route would have made."""
    names: dict[str, str] = {}
    for job in load_plan(profile_id).jobs:
        hosts = [*job.names]
        if job.host:
            hosts.append(job.host)
        if job.request is not None:
            hosts.append(urlsplit(job.request.url).hostname or "")
        for host in hosts:
            for addr in resolve(host) if host else []:
                names.setdefault(addr, host)
    return names


def intrusion_events(
    device: VirtualDevice, packets: Iterable[Packet], names: Mapping[str, str] = {}
) -> list[dict[str, Any]]:
    """The handset's DNS and connect events, in time order, as the JSON objects of the log."""
    # Android names a UID by PackageManager.getNameForUid: the package, or for a shared UID
    # "<sharedUserId>:<uid>" (android.uid.system:1000)
    packages: dict[int, str] = {}
    for name in sorted(device.packages):
        pkg = device.packages[name].pkg
        if pkg.shared_user:
            packages[pkg.uid] = f"{pkg.shared_user}:{pkg.uid}"
        else:
            packages.setdefault(pkg.uid, name)
    out: list[tuple[float, dict[str, Any]]] = []
    queries: dict[tuple[str, int], tuple[float, int, str]] = {}
    for p in packets:
        package = packages.get(p.uid, "")
        if p.proto == "tcp" and p.flags == "S":
            host = names.get(p.dst)
            if host:
                out.append((p.ts - 0.002, _dns(p.ts - 0.002, package, host, [p.dst], 1)))
            out.append((p.ts, _connect(p.ts, package, p.dst, p.dport)))
        elif p.proto == "udp" and p.dport == 53:
            queries[(p.src, p.sport)] = (p.ts, p.uid, package)
        elif p.proto == "udp" and p.sport == 53:
            asked = queries.pop((p.dst, p.dport), None)
            if asked is None:
                continue
            try:
                msg = dns.DNSMessage.unpack(p.payload)
            except Exception:  # noqa: BLE001, S112 - a reply the phone cannot read logs nothing
                continue
            if not msg.questions:
                continue
            addrs = [str(a.ipv4_address) for a in msg.answers if a.type == dns.types.A]
            addrs += [str(a.ipv6_address) for a in msg.answers if a.type == dns.types.AAAA]
            out.append((p.ts, _dns(p.ts, asked[2], msg.questions[0].name, addrs, len(addrs))))
    out.sort(key=lambda e: e[0])
    for n, (_, event) in enumerate(out):
        (body,) = event.values()
        body["event_id"] = n
    return [e for _, e in out]


def _dns(ts: float, package: str, host: str, addrs: list[str], count: int) -> dict[str, Any]:
    return {
        "dns_event": {
            "event_id": 0,
            "event_time": int(ts * 1000),
            "package_name": package,
            "hostname": host,
            "ip_addresses": [f"/{a}" for a in addrs[:MAX_ADDRESSES]],
            "ip_addresses_count": count,
        }
    }


def _connect(ts: float, package: str, ip: str, port: int) -> dict[str, Any]:
    return {
        "connect_event": {
            "event_id": 0,
            "event_time": int(ts * 1000),
            "package_name": package,
            "port": port,
            "ip_address": f"/{ip}",
        }
    }


def encode(events: Iterable[Mapping[str, Any]]) -> bytes:
    """Newline-delimited JSON, compact, as the phone's export writes it."""
    return b"".join(
        json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for e in events
    )


def write_intrusion_log(world: VirtualWorld) -> tuple[str, bytes]:
    """The log of everything the handset's packet log holds, written where the phone's Settings
    app writes it (so ``adb pull`` finds it, as AndroidQF does); returns (device path, bytes)."""
    device = world.device
    packets = device.packet_log.snapshot() if device.packet_log is not None else []
    data = encode(intrusion_events(device, packets, plan_names(device.profile.id)))
    path = f"{DEVICE_DIR}/{time.strftime('%Y-%m-%d', time.gmtime())}.txt"
    device.vfs.mkdir(DEVICE_DIR, parents=True)
    device.vfs.write(path, data, mode=0o660)
    return path, data


#: The page AndroidQF opens so that the owner downloads the logs (AndroidQF ``adb/adb.go``).
RETRIEVAL_ACTIVITY = (
    "com.google.android.gms",
    "com.google.android.gms.intrusiondetection.ui.retrieval.IntrusionDetectionRetrievalActivity",
)


def enable_intrusion_logging(world: VirtualWorld) -> None:
    """Make the handset behave as an Android 16 phone with Advanced Protection's Intrusion
    Logging on: ``settings get secure advanced_protection_mode`` answers 1 (AndroidQF's
    check), and opening the retrieval page (``am start -n <RETRIEVAL_ACTIVITY>``, as AndroidQF
    does) writes the log where the phone would, as if the owner had pressed "Download and
    Decrypt". The page is told by the device's ``launch`` event carrying ``activity``."""
    world.device.put_setting("secure", "advanced_protection_mode", "1", uid=1000)

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "launch" and (data.get("package"), data.get("activity")) == RETRIEVAL_ACTIVITY:
            write_intrusion_log(world)

    world.device.add_listener(on_event)

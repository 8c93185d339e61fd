"""``screencap``, ``tcpdump``, ``reboot``, ``id``, ``uname``, ``getenforce``, ``ps``,
``pidof``, ``kill``, ``ip`` and ``iptables``: the phone's system tools."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.png import raw_rgba, solid_png
from vhandset.profiles import (
    SuFlavor,
)
from vhandset.sh.command import Ctx
from vhandset.sh.streams import Cancelled
from vhandset.state import ProcInfo, user_name

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice
    from vhandset.network import Packet

log = logging.getLogger(__name__)

# ---- screen ----------------------------------------------------------------------------------


def _screen_colour(dev: VirtualDevice) -> tuple[int, int, int, int]:
    if not dev.screen_on:
        return (0, 0, 0, 255)
    digest = hashlib.sha256(dev.foreground[0].encode()).digest()
    return (digest[0], digest[1], digest[2], 255)


@ANDROID.command("screencap")
def _screencap(ctx: Ctx) -> int:
    dev = device_of(ctx)
    opts, rest = ctx.getopt("phd:")
    d = dev.profile.display
    width, height = max(1, d.width // 10), max(1, d.height // 10)
    colour = _screen_colour(dev)
    png = "p" in opts or (rest and rest[0].endswith(".png"))
    data = (
        solid_png(width, height, colour)
        if png
        else raw_rgba(width, height, colour, dev.profile.sdk)
    )
    if rest:
        try:
            ctx.fs.write(ctx.abspath(rest[0]), data, ctx.cred, mode=0o660)
        except OSError as exc:
            return ctx.error(f"Error opening file: {rest[0]} ({exc.strerror})")
        return 0
    ctx.out(data)
    return 0


# ---- packet capture --------------------------------------------------------------------------

TCPDUMP_VERSION = "tcpdump version 4.99.4\nlibpcap version 1.10.4 (with TPACKET_V3)\n"
TCPDUMP_IFACES = (
    "1.wlan0 [Up, Running, Wireless, Associated]\n"
    "2.any (Pseudo-device that captures on all interfaces) [Up, Running]\n"
    "3.lo [Up, Running, Loopback]\n"
)
WLAN_IFINDEX = 30  # as `ip addr` numbers wlan0
STDIO_BUFFER = 4096  # what tcpdump's stdio holds back without -U


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1"


def _tcpdump_line(p: Packet, iface: str, dev: VirtualDevice) -> str:
    when = dev.local_time(p.ts).strftime("%H:%M:%S.%f")
    loop = _is_loopback(p.src) and _is_loopback(p.dst)
    where = ""
    if iface == "any":
        out = not loop and p.src == dev.profile.network.wlan_ipv4
        where = f"{'lo' if loop else 'wlan0':<5} {'Out' if out else 'In':<3} "  # print-sll.c
    family = "IP6" if ":" in p.src else "IP"
    head = f"{when} {where}{family} {p.src}.{p.sport} > {p.dst}.{p.dport}:"
    if p.proto == "udp":
        return f"{head} UDP, length {len(p.payload)}\n"
    flags = "S" if "S" in p.flags else "F." if "F" in p.flags else "P."
    return f"{head} Flags [{flags}], length {len(p.payload)}\n"


@ANDROID.command("tcpdump")
def _tcpdump(ctx: Ctx) -> int:
    """tcpdump as on a rooted or userdebug image: it captures what the network stack logs
    (``VirtualDevice.packet_log``), from the moment it starts until it is stopped."""
    # Imported here: the packets package brings pandas, which the rest of the phone never needs.
    from auditor.packets.pcapwrite import (
        DEFAULT_SNAPLEN,
        LINKTYPE_ETHERNET,
        LINKTYPE_LINUX_SLL2,
        global_header,
        record,
    )
    from vhandset.synth import LinkIface, PacketSynth, mac_bytes

    dev = device_of(ctx)
    opts, rest = ctx.getopt("i:s:w:c:y:Z:B:C:W:G:nNpqUvlSKD", ("version", "help"))
    if "version" in opts or "help" in opts:
        ctx.out(TCPDUMP_VERSION)
        return 0
    if "D" in opts:
        ctx.out(TCPDUMP_IFACES)
        return 0
    iface = opts.get("i", "wlan0")
    if iface not in ("any", "wlan0", "lo"):
        return ctx.error(f"{iface}: No such device exists\n(SIOCGIFHWADDR: No such device)")
    if not ctx.cred.is_root:
        return ctx.error(
            f"{iface}: You don't have permission to capture on that device\n"
            "(socket: Operation not permitted)"
        )
    if rest:
        return ctx.error("filter expressions are not supported by this build")
    linktype = LINKTYPE_LINUX_SLL2 if iface == "any" else LINKTYPE_ETHERNET
    wanted_dlt = {"LINUX_SLL2": LINKTYPE_LINUX_SLL2, "EN10MB": LINKTYPE_ETHERNET}
    if "y" in opts and wanted_dlt.get(opts["y"].upper()) != linktype:
        return ctx.error(f"{opts['y']} is not one of the DLTs supported by this device")
    try:
        snaplen = int(opts.get("s") or 0) or DEFAULT_SNAPLEN  # -s 0: the default
        count = int(opts["c"]) if "c" in opts else None
    except ValueError:
        return ctx.error("invalid number")
    packet_log = dev.packet_log
    if packet_log is None:
        return ctx.error(f"{iface}: That device is not up")
    net = dev.profile.network
    gateway = net.gateway or net.wlan_ipv4
    synth = PacketSynth(
        linktype,
        local=[net.wlan_ipv4, "127.0.0.1"],
        iface=LinkIface("wlan0", WLAN_IFINDEX, mac_bytes(dev.profile.identifiers.wifi_mac)),
        gateway_mac=b"\x02" + hashlib.sha256(gateway.encode()).digest()[:5],
    )
    target = opts.get("w")
    binary = target is not None
    if target in (None, "-"):
        write: Callable[[bytes], None] = ctx.out
    else:
        path = ctx.abspath(target)
        try:
            ctx.fs.write(path, b"", ctx.cred, mode=0o644)
        except OSError as exc:
            return ctx.error(f"{target}: {exc.strerror}")

        def write(data: bytes) -> None:
            ctx.fs.write(path, data, ctx.cred, append=True)

    pending = bytearray(global_header(linktype, snaplen=snaplen) if binary else b"")
    names = {LINKTYPE_LINUX_SLL2: "LINUX_SLL2 (Linux cooked v2)", LINKTYPE_ETHERNET: "EN10MB"}
    ctx.err(
        f"tcpdump: listening on {iface}, link-type {names[linktype]}, "
        f"snapshot length {snaplen} bytes\n"
    )
    seq = packet_log.seq
    captured = dropped = 0
    try:
        while not ctx.cancelled() and (count is None or captured < count):
            if pending and ("U" in opts or len(pending) >= STDIO_BUFFER):
                write(bytes(pending))
                pending.clear()
            if packet_log.wait_beyond(seq, 0.2) == seq:
                continue
            packets, seq, lost = packet_log.since(seq)
            dropped += lost
            for p in packets:
                if count is not None and captured >= count:
                    break
                loop = _is_loopback(p.src) and _is_loopback(p.dst)
                if (iface == "lo" and not loop) or (iface == "wlan0" and loop):
                    continue
                if not binary:
                    pending += _tcpdump_line(p, iface, dev).encode()
                    captured += 1
                    continue
                for ts, frame in synth.frames(p):
                    if count is not None and captured >= count:
                        break
                    pending += record(ts, frame, snaplen=snaplen)
                    captured += 1
    finally:
        # As tcpdump's cleanup() on SIGPIPE/SIGINT/SIGTERM: flush, then the statistics.
        with contextlib.suppress(Cancelled, BrokenPipeError):
            if pending:
                write(bytes(pending))
        with contextlib.suppress(Cancelled, BrokenPipeError):
            ctx.err(
                f"{captured} packets captured\n{captured} packets received by filter\n"
                f"{dropped} packets dropped by kernel\n"
            )
    return 0


# ---- system ----------------------------------------------------------------------------------


@ANDROID.command("reboot")
def _reboot(ctx: Ctx) -> int:
    dev = device_of(ctx)
    target = ctx.args[0] if ctx.args and not ctx.args[0].startswith("-") else ""
    dev.reboot(target)
    ctx.shell.cancel.set()  # the phone goes down with the shell that asked it to
    raise Cancelled


@ANDROID.command("id", toybox=True)
def _id(ctx: Ctx) -> int:
    dev = device_of(ctx)
    cred = ctx.cred
    opts, _ = ctx.getopt("ugGnrZ")
    if "u" in opts:
        ctx.out(f"{user_name(cred.uid) if 'n' in opts else cred.uid}\n")
        return 0
    if "g" in opts:
        ctx.out(f"{user_name(cred.gid) if 'n' in opts else cred.gid}\n")
        return 0
    if cred.uid == 0:
        context = (
            "u:r:magisk:s0"
            if dev.profile.su is SuFlavor.MAGISK and not cred.groups
            else "u:r:su:s0"
        )
    elif cred.uid == 2000:
        context = "u:r:shell:s0"
    else:
        context = "u:r:untrusted_app:s0"
    groups = [cred.gid, *sorted(g for g in cred.groups if g != cred.gid)]
    text = (
        f"uid={cred.uid}({user_name(cred.uid)}) gid={cred.gid}({user_name(cred.gid)}) groups="
        + ",".join(f"{g}({user_name(g)})" for g in groups)
    )
    ctx.out(f"{text} context={context}\n")
    return 0


@ANDROID.command("whoami", toybox=True)
def _whoami(ctx: Ctx) -> int:
    ctx.out(user_name(ctx.cred.uid) + "\n")
    return 0


@ANDROID.command("uname", toybox=True)
def _uname(ctx: Ctx) -> int:
    k = device_of(ctx).profile.kernel
    opts, _ = ctx.getopt("asnrvmpio")
    fields = {
        "s": "Linux",
        "n": "localhost",
        "r": k.release,
        "v": k.version,
        "m": k.machine,
        "o": "Toybox",
    }
    if "a" in opts:
        keys = "snrvmo"
    else:
        keys = "".join(c for c in "snrvmo" if c in opts) or "s"
    ctx.out(" ".join(fields[c] for c in keys) + "\n")
    return 0


@ANDROID.command("getenforce", toybox=True)
def _getenforce(ctx: Ctx) -> int:
    ctx.out("Enforcing\n")
    return 0


PS_FIELDS = {
    "PID": (5, lambda p, d: str(p.pid)),
    "PPID": (5, lambda p, d: str(p.ppid)),
    "USER": (-12, lambda p, d: user_name(p.uid)),
    "UID": (5, lambda p, d: str(p.uid)),
    "VSZ": (7, lambda p, d: str(p.vsz)),
    "RSS": (6, lambda p, d: str(p.rss)),
    "WCHAN": (-10, lambda p, d: p.wchan),
    "ADDR": (10, lambda p, d: "0"),
    "S": (-1, lambda p, d: p.state),
    "NAME": (-27, lambda p, d: p.name),
    "CMD": (-27, lambda p, d: p.name),
    "CMDLINE": (-27, lambda p, d: p.name),
    "ARGS": (-27, lambda p, d: p.name),
    "COMM": (-15, lambda p, d: p.name.strip("[]")[:15]),
    "LABEL": (
        -30,
        lambda p, d: (
            "u:r:untrusted_app:s0"
            if p.uid >= 10000
            else "u:r:shell:s0"
            if p.uid == 2000
            else "u:r:init:s0"
        ),
    ),
}


@ANDROID.command("ps", toybox=True)
def _ps(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = list(ctx.args)
    show_all = False
    fields = ["USER", "PID", "PPID", "VSZ", "RSS", "WCHAN", "ADDR", "S", "NAME"]
    pids: set[int] = set()
    ppids: set[int] = set()
    names: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-A", "-e", "-ef", "-Af"):
            show_all = True
        elif arg in ("-o", "-O") and i + 1 < len(args):
            fields = [f.strip().upper().split("=")[0] for f in args[i + 1].split(",") if f.strip()]
            i += 1
        elif arg in ("-p", "-P") and i + 1 < len(args):
            target = pids if arg == "-p" else ppids
            target.update(int(x) for x in args[i + 1].split(",") if x.isdigit())
            show_all = True
            i += 1
        elif arg in ("-w", "-T", "-t", "-Z", "-f", "-l"):
            pass
        elif arg.startswith("-"):
            return ctx.error(f"Unknown option '{arg[1:]}' (see \"ps --help\")")
        else:
            names.append(arg)
        i += 1
    unknown = [f for f in fields if f not in PS_FIELDS]
    if unknown:
        return ctx.error(f"-o {unknown[0]}: unknown field")
    with dev.lock:
        procs = sorted(dev.processes.values(), key=lambda p: p.pid)
    rows = []
    for proc in procs:
        if pids and proc.pid not in pids and not ppids:
            continue
        if ppids and proc.ppid not in ppids and not (pids and proc.pid in pids):
            continue
        if not show_all and not pids and not ppids and not names and proc.uid != ctx.cred.uid:
            continue
        if names and proc.name not in names:
            continue
        rows.append(proc)
    ctx.out(_ps_table(fields, rows, dev))
    return 0


def _ps_table(fields: list[str], rows: list[ProcInfo], dev: VirtualDevice) -> str:
    def render(values: list[str]) -> str:
        out = []
        slack = 0
        for i, (name, value) in enumerate(zip(fields, values, strict=True)):
            width = PS_FIELDS[name][0]
            last = i == len(fields) - 1
            w = abs(width) - slack if not last else 0
            cell = value.ljust(max(w, 0)) if width < 0 else value.rjust(max(w, 0))
            slack = max(0, len(cell) - abs(width)) if not last else 0
            out.append(cell.rstrip() if last else cell)
        return " ".join(out)

    lines = [render(fields)]
    for proc in rows:
        lines.append(render([PS_FIELDS[f][1](proc, dev) for f in fields]))
    return "\n".join(lines) + "\n"


@ANDROID.command("pidof", toybox=True)
def _pidof(ctx: Ctx) -> int:
    dev = device_of(ctx)
    opts, names = ctx.getopt("sxo:")
    with dev.lock:
        found = [
            p.pid for p in sorted(dev.processes.values(), key=lambda p: -p.pid) if p.name in names
        ]
    if "s" in opts:
        found = found[:1]
    if not found:
        return 1
    ctx.out(" ".join(map(str, found)) + "\n")
    return 0


@ANDROID.command("kill", toybox=True)
def _kill(ctx: Ctx) -> int:
    dev = device_of(ctx)
    status = 0
    for arg in ctx.args:
        if arg.startswith("-"):
            continue
        with dev.lock:
            proc = dev.processes.get(int(arg)) if arg.isdigit() else None
            if proc is None:
                status = ctx.error(f"{arg}: No such process")
                continue
            if not ctx.cred.is_root and proc.uid != ctx.cred.uid:
                status = ctx.error(f"{arg}: Operation not permitted")
                continue
            del dev.processes[proc.pid]
    return status


@ANDROID.command("ip", toybox=False)
def _ip(ctx: Ctx) -> int:
    dev = device_of(ctx)
    net, mac = dev.profile.network, dev.profile.identifiers.wifi_mac
    iface = ipaddress.IPv4Interface(f"{net.wlan_ipv4}/{net.prefix}")
    wlan = (
        "30: wlan0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP group default "
        "qlen 3000\n"
        f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n"
        f"    inet {net.wlan_ipv4}/{net.prefix} brd {iface.network.broadcast_address} "
        "scope global wlan0\n"
        "       valid_lft forever preferred_lft forever\n"
    )
    lo = (
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default "
        "qlen 1000\n"
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        "    inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n"
    )
    words = [a for a in ctx.args if not a.startswith("-")]
    if words[:1] in (["addr"], ["a"], ["address"]):
        ctx.out(wlan if "wlan0" in words else lo + wlan)
        return 0
    if words[:1] == ["route"]:
        ctx.out(f"{iface.network} dev wlan0 proto kernel scope link src {net.wlan_ipv4}\n")
        return 0
    ctx.err("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n")
    return 255


@ANDROID.command("iptables", "ip6tables")
def _iptables(ctx: Ctx) -> int:
    status, out, err = device_of(ctx).netfilter.command(ctx.name, list(ctx.args), ctx.cred.is_root)
    ctx.out(out)
    ctx.err(err)
    return status

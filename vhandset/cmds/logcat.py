"""``logcat``: the log buffers, their formats (``-v``), filters and ``-d``/``-T``/follow modes."""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.sh.command import Ctx, UsageError
from vhandset.state import AID_NAMES, DEFAULT_BUFFERS, LOG_BUFFERS, PRIORITIES, LogEntry, user_name

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice

log = logging.getLogger(__name__)

# ---- logcat ----------------------------------------------------------------------------------


@dataclass(slots=True)
class LogFormat:
    style: str = "threadtime"
    epoch: bool = False
    monotonic: bool = False
    uid: bool = False
    usec: bool = False
    nsec: bool = False
    year: bool = False
    utc: bool = False
    zone: bool = False


def format_log_line(entry: LogEntry, fmt: LogFormat, dev: VirtualDevice) -> str:
    """One entry as ``android_log_formatLogLine`` prints it (liblog logprint.cpp)."""
    ts = entry.ts
    sec = int(ts)
    nsec = round((ts - sec) * 1e9)
    if fmt.epoch or fmt.monotonic:
        shown = sec - int(dev.boot_time) if fmt.monotonic else sec
        time_buf = f"{shown:6d}" if fmt.monotonic else f"{shown:19d}"
        when = None
    else:
        when = _dt.datetime.fromtimestamp(sec, _dt.UTC) if fmt.utc else dev.local_time(sec)
        time_buf = when.strftime("%Y-%m-%d %H:%M:%S" if fmt.year else "%m-%d %H:%M:%S")
    if fmt.nsec:
        time_buf += f".{nsec:09d}"
    elif fmt.usec:
        time_buf += f".{nsec // 1000:06d}"
    else:
        time_buf += f".{nsec // 1000000:03d}"
    if fmt.zone and when is not None:
        time_buf += " " + when.strftime("%z")
    uid = ""
    if fmt.uid:
        name = user_name(entry.uid)
        uid = f"{name:>5}:" if entry.uid in AID_NAMES and len(name) <= 5 else f"{entry.uid:5d}:"
    p, tag = entry.priority, entry.tag
    style = fmt.style
    if style == "threadtime":
        uid = uid.replace(":", " ", 1)
        prefix, suffix = f"{time_buf} {uid}{entry.pid:5d} {entry.tid:5d} {p} {tag:<8}: ", ""
    elif style == "time":
        prefix, suffix = f"{time_buf} {p}/{tag:<8}({uid}{entry.pid:5d}): ", ""
    elif style == "tag":
        prefix, suffix = f"{p}/{tag:<8}: ", ""
    elif style == "process":
        prefix, suffix = f"{p}({uid}{entry.pid:5d}) ", f"  ({tag})"
    elif style == "thread":
        prefix, suffix = f"{p}({uid}{entry.pid:5d}:{entry.tid:5d}) ", ""
    elif style == "raw":
        prefix, suffix = "", ""
    elif style == "long":
        return (
            f"[ {time_buf} {uid}{entry.pid:5d}:{entry.tid:5d} {p}/{tag:<8} ]\n{entry.message}\n\n"
        )
    else:
        prefix, suffix = f"{p}/{tag:<8}({uid}{entry.pid:5d}): ", ""
    return "".join(f"{prefix}{line}{suffix}\n" for line in entry.message.split("\n"))


def _log_filter(specs: list[str]) -> Callable[[LogEntry], bool]:
    rules: dict[str, int] = {}
    default = 0
    for spec in specs:
        tag, _, prio = spec.partition(":")
        level = PRIORITIES.index(prio.upper()[:1]) if prio else 0
        if tag == "*":
            default = level
        else:
            rules[tag] = level
    if not specs:
        return lambda e: True
    return lambda e: (
        PRIORITIES.index(e.priority) >= rules.get(e.tag, default) and rules.get(e.tag, default) < 6
    )


@ANDROID.command("logcat")
def _logcat(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = list(ctx.args)
    buffers: list[str] = []
    fmt = LogFormat()
    dump = clear = False
    tail: int | None = None
    follow_tail = False
    specs: list[str] = []
    pid_filter: int | None = None
    regex: re.Pattern[str] | None = None
    out_file: str | None = None
    i = 0

    def value() -> str:
        nonlocal i
        arg = args[i]
        if len(arg) > 2 and not arg.startswith("--"):
            return arg[2:]
        if "=" in arg and arg.startswith("--"):
            return arg.split("=", 1)[1]
        i += 1
        if i >= len(args):
            raise UsageError(f"option requires an argument -- '{arg.lstrip('-')}'")
        return args[i]

    while i < len(args):
        arg = args[i]
        if arg.startswith(("-b", "--buffer")):
            buffers += value().split(",")
        elif arg.startswith(("-v", "--format")):
            for word in value().split(","):
                word = word.strip()
                if word in (
                    "brief",
                    "process",
                    "tag",
                    "thread",
                    "raw",
                    "time",
                    "threadtime",
                    "long",
                ):
                    fmt.style = word
                elif word in ("epoch", "monotonic", "uid", "usec", "nsec", "year", "zone"):
                    setattr(fmt, word, True)
                elif word == "UTC":
                    fmt.utc = True
                elif word not in ("color", "printable", "descriptive"):
                    return ctx.error(f'Invalid parameter "{word}" to -v.')
        elif arg in ("-d", "--dump"):
            dump = True
        elif arg in ("-c", "--clear"):
            clear = True
        elif arg.startswith("-t") and not arg.startswith("--"):
            tail, dump = int(value()), True
        elif arg.startswith("-T"):
            tail, follow_tail = int(value()), True
        elif arg == "-s":
            specs.insert(0, "*:S")
        elif arg.startswith("--pid"):
            pid_filter = int(value())
        elif arg.startswith(("-e", "--regex")):
            regex = re.compile(value())
        elif arg.startswith("-f") or arg.startswith("--file"):
            out_file = ctx.abspath(value())
        elif arg in (
            "-D",
            "--dividers",
            "-B",
            "--binary",
            "-S",
            "--statistics",
            "-g",
            "--buffer-size",
        ):
            pass
        elif arg.startswith("-"):
            return ctx.error(f"invalid option -- '{arg.lstrip('-')[:1]}'")
        else:
            specs.append(arg)
        i += 1
    if "all" in buffers:
        wanted: tuple[str, ...] = LOG_BUFFERS
    elif "default" in buffers or not buffers:
        wanted = DEFAULT_BUFFERS + tuple(b for b in buffers if b != "default")
    else:
        wanted = tuple(buffers)
    if clear:
        with dev._log_cond:
            dev._logs[:] = [(s, e) for s, e in dev._logs if e.buffer not in wanted]
        return 0
    keep = _log_filter(specs)

    def wanted_entry(e: LogEntry) -> bool:
        return (
            e.buffer in wanted
            and keep(e)
            and (pid_filter is None or e.pid == pid_filter)
            and (regex is None or bool(regex.search(e.message)))
        )

    started: set[str] = set()

    def emit(entries: list[LogEntry]) -> None:
        text = []
        for e in entries:
            if e.buffer not in started:
                started.add(e.buffer)
                text.append(f"--------- beginning of {e.buffer}\n")
            text.append(format_log_line(e, fmt, dev))
        if not text:
            return
        data = "".join(text)
        if out_file:
            ctx.fs.write(out_file, data.encode(), ctx.cred, append=True, mode=0o666)
        else:
            ctx.out(data)

    snapshot = dev.log_entries()
    last = snapshot[-1][0] if snapshot else 0
    entries = sorted((e for _, e in snapshot if wanted_entry(e)), key=lambda e: e.ts)
    if tail is not None:
        entries = entries[-tail:] if tail else []
    emit(entries)
    if dump and not follow_tail:
        return 0
    while not ctx.cancelled():
        with dev._log_cond:
            if not dev._logs or dev._logs[-1][0] <= last:
                dev._log_cond.wait(0.1)
        fresh = dev.log_entries(last)
        if fresh:
            last = fresh[-1][0]
            emit([e for _, e in fresh if wanted_entry(e)])
    return 0

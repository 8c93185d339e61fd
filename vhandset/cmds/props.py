"""``getprop``, ``setprop`` and ``settings``: the phone's properties and settings provider."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.sh.command import Ctx

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# ---- properties ------------------------------------------------------------------------------


@ANDROID.command("getprop", toybox=True)
def _getprop(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = [a for a in ctx.args if not a.startswith("-")]
    with dev.lock:
        props = dict(dev.props)
    if not args:
        ctx.out("".join(f"[{k}]: [{props[k]}]\n" for k in sorted(props)))
        return 0
    value = props.get(args[0], "")
    ctx.out((value or (args[1] if len(args) > 1 else "")) + "\n")
    return 0


@ANDROID.command("setprop", toybox=True)
def _setprop(ctx: Ctx) -> int:
    dev = device_of(ctx)
    if len(ctx.args) != 2:
        return ctx.error("Needs 2 arguments")
    key, value = ctx.args
    allowed = ctx.cred.is_root or key.startswith(
        ("debug.", "log.tag", "persist.log.tag", "persist.debug.")
    )
    with dev.lock:
        if (key.startswith("ro.") and key in dev.props) or not allowed:
            return ctx.error(f"failed to set property '{key}' to '{value}'")
        dev.props[key] = value
        if key.startswith("persist."):
            dev._persist_props[key] = value
    return 0


# ---- settings --------------------------------------------------------------------------------

SETTINGS_HELP = """Settings provider (settings) commands:
  help
      Print this help text.
  get [--user <USER_ID> | current] NAMESPACE KEY
      Retrieve the current value of KEY.
  put [--user <USER_ID> | current] NAMESPACE KEY VALUE [TAG] [default]
      Change the contents of KEY to VALUE.
  delete [--user <USER_ID> | current] NAMESPACE KEY
      Delete the entry for KEY.
  list [--user <USER_ID> | current] NAMESPACE
      Print all defined keys.
      NAMESPACE is one of {system, secure, global}, case-insensitive
"""


@ANDROID.command("settings")
def settings_command(ctx: Ctx) -> int:
    """SettingsProvider's shell command: its messages and the -1 (255) it returns on errors."""
    dev = device_of(ctx)
    args = list(ctx.args)
    if not args or args[0] in ("help", "-h"):
        ctx.out(SETTINGS_HELP)
        return 0 if args else 255
    while args and args[0] in ("--user", "--lineage"):
        args = args[2:] if args[0] == "--user" else args[1:]
    verb = args[0].lower() if args else ""
    if verb not in ("get", "put", "delete", "list", "reset"):
        ctx.err(f"Invalid command: {args[0] if args else ''}\n")
        return 255
    if len(args) < 2:
        ctx.err("Bad arguments\n")
        return 255
    ns, rest = args[1].lower(), args[2:]
    if ns not in dev.settings:
        ctx.err(f"Invalid namespace '{args[1]}'\n")
        return 255
    wanted = {"get": (1, 1), "delete": (1, 1), "list": (0, 0), "put": (2, 4), "reset": (1, 2)}
    low, high = wanted[verb]
    if len(rest) < low:
        ctx.err("Bad arguments\n")
        return 255
    if len(rest) > high:
        ctx.err("Too many arguments\n")
        return 255
    if verb == "get":
        value = dev.get_setting(ns, rest[0])
        ctx.out(f"{value if value is not None else 'null'}\n")
    elif verb == "put":
        dev.put_setting(ns, rest[0], rest[1], uid=ctx.cred.uid)
    elif verb == "delete":
        ctx.out(f"Deleted {1 if dev.delete_setting(ns, rest[0]) else 0} rows\n")
    elif verb == "list":
        with dev.lock:
            items = sorted(f"{k}={v}" for k, v in dev.settings[ns].items())
        ctx.out("".join(f"{line}\n" for line in items))
    return 0

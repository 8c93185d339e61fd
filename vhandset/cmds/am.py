"""``am``, ``monkey`` and ``input``: intents, activities and key events."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.pcapdroid import CTRL_ACTIVITY as PCAPDROID_CTRL
from vhandset.pcapdroid import PACKAGE as PCAPDROID
from vhandset.profiles import (
    Package,
)
from vhandset.sh.command import Ctx

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# ---- activities ------------------------------------------------------------------------------


def safe_uri(uri: str) -> str:
    """``Uri.toSafeString``: http(s) URIs lose everything after the host."""
    m = re.match(r"(?i)(https?|ftp|rtsp)://([^/?#]*)", uri)
    if m:
        return f"{m.group(1)}://{m.group(2)}/..."
    return uri


def _parse_intent(args: list[str]) -> tuple[dict[str, str], list[str]]:
    intent: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    keyed = {
        "-a": "act",
        "-d": "dat",
        "-t": "typ",
        "-c": "cat",
        "-n": "cmp",
        "-f": "flg",
        "-p": "pkg",
    }
    value_opts = {
        "--user",
        "--es",
        "--ez",
        "--ei",
        "--el",
        "--ef",
        "--eu",
        "--ecn",
        "--esa",
        "--eia",
        "-e",
        "--receiver-permission",
        "-P",
        "--start-profiler",
        "--sampling",
        "-R",
        "--display",
        "--windowingMode",
        "--activityType",
        "--task",
    }
    while i < len(args):
        arg = args[i]
        if arg in keyed and i + 1 < len(args):
            intent[keyed[arg]] = args[i + 1]
            i += 2
        elif arg in value_opts:
            i += 3 if arg.startswith("--e") or arg == "-e" else 2
            if arg.startswith(("--e", "-e")):
                intent["extras"] = "1"
        elif arg.startswith("-"):
            i += 1
        else:
            rest.append(arg)
            i += 1
    return intent, rest


def _intent_extras(args: list[str]) -> dict[str, str]:
    """The extras of an ``am`` intent (``-e``/``--es``, ``--ez``, ``--ei``, ...), as strings."""
    extras: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-e", "--es", "--ez", "--ei", "--el", "--ef", "--eu") and i + 2 < len(args):
            extras[args[i + 1]] = args[i + 2]
            i += 3
        elif arg == "--esn" and i + 1 < len(args):
            extras[args[i + 1]] = ""
            i += 2
        else:
            i += 1
    return extras


def _intent_string(intent: Mapping[str, str]) -> str:
    parts = []
    if "act" in intent:
        parts.append(f"act={intent['act']}")
    if "cat" in intent:
        parts.append(f"cat=[{intent['cat']}]")
    if "dat" in intent:
        parts.append(f"dat={safe_uri(intent['dat'])}")
    if "typ" in intent:
        parts.append(f"typ={intent['typ']}")
    if "flg" in intent:
        parts.append(f"flg={intent['flg']}")
    if "pkg" in intent:
        parts.append(f"pkg={intent['pkg']}")
    if "cmp" in intent:
        parts.append(f"cmp={intent['cmp']}")
    if "extras" in intent:
        parts.append("(has extras)")
    return "Intent { " + " ".join(parts) + " }"


def _am_start(ctx: Ctx, args: list[str]) -> int:
    dev = device_of(ctx)
    intent, rest = _parse_intent(args)
    if rest and "dat" not in intent and "cmp" not in intent:
        intent["dat"] = rest[0]
    ctx.out(f"Starting: {_intent_string(intent)}\n")
    if "cmp" in intent:
        pkg, _, cls = intent["cmp"].partition("/")
        full = pkg + cls if cls.startswith(".") else cls
        state = dev.packages.get(pkg)
        if state is None or not state.installed or state.enabled in (2, 3, 4) or not cls:
            ctx.err(f"Error type 3\nError: Activity class {{{pkg}/{full}}} does not exist.\n")
            return 0
        if (pkg, full) == (PCAPDROID, PCAPDROID_CTRL):
            # a dialog-themed activity: it carries the request out and finishes, and the
            # activity below stays in front
            shown = _intent_string({**intent, "flg": "0x10000000"})[len("Intent { ") : -2]
            dev.pcapdroid.request(_intent_extras(args), caller_uid=ctx.cred.uid, intent=shown)
            return 0
        dev.launch(
            pkg,
            full,
            caller_uid=ctx.cred.uid,
            action=intent.get("act", "android.intent.action.MAIN"),
            category=intent.get("cat"),
            data=intent.get("dat"),
        )
        return 0
    action = intent.get("act", "")
    data = intent.get("dat", "")
    target: Package | None = None
    if action == "android.intent.action.VIEW" and re.match(r"(?i)https?://", data):
        state = dev.packages.get(intent.get("pkg") or dev.profile.browser)
        target = state.pkg if state and state.installed and state.enabled in (0, 1) else None
    elif intent.get("pkg"):
        state = dev.packages.get(intent["pkg"])
        target = state.pkg if state and state.pkg.launchable else None
    if target is None or not target.activity:
        ctx.err(f"Error: Activity not started, unable to resolve {_intent_string(intent)}\n")
        return 0
    dev.launch(
        target.name,
        target.activity,
        caller_uid=ctx.cred.uid,
        action=action or "android.intent.action.MAIN",
        category=intent.get("cat"),
        data=data or None,
    )
    return 0


def am_command(ctx: Ctx, args: list[str]) -> int:
    dev = device_of(ctx)
    if not args:
        ctx.out("Activity manager (activity) commands:\n  help\n      Print this help text.\n")
        return 0
    sub, rest = args[0], args[1:]
    if sub in ("start", "start-activity"):
        return _am_start(ctx, rest)
    if sub in ("force-stop", "kill", "stop-app"):
        names = [a for a in rest if not a.startswith("-") and not a.isdigit()]
        for name in names:
            dev.force_stop(name, caller_pid=ctx.shell.pid)
        return 0
    if sub == "broadcast":
        intent, _ = _parse_intent(rest)
        shown = dict(intent)
        shown["flg"] = "0x400000"
        ctx.out(f"Broadcasting: {_intent_string(shown)}\nBroadcast completed: result=0\n")
        if intent.get("act") == "android.intent.action.AIRPLANE_MODE":
            dev.log(
                "ActivityManager",
                "Broadcast AIRPLANE_MODE from uid " + str(ctx.cred.uid),
                priority="D",
            )
        return 0
    if sub == "get-current-user":
        ctx.out("0\n")
        return 0
    if sub == "stack" or sub == "task":
        return 0
    ctx.err(f"Unknown command: {sub}\n")
    return 255


@ANDROID.command("am")
def _am_cmd(ctx: Ctx) -> int:
    return am_command(ctx, ctx.args)


@ANDROID.command("monkey")
def _monkey(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = ctx.args
    for a in args:
        ctx.out(f"  bash arg: {a}\n")
    ctx.out(f"args: [{', '.join(args)}]\n" + "".join(f' arg: "{a}"\n' for a in args))
    pkgs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-p"]
    cats = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-c"]
    ctx.out("".join(f'data="{v}"\n' for v in pkgs + cats))
    target = None
    for name in pkgs:
        state = dev.packages.get(name)
        if (
            state
            and state.installed
            and state.enabled in (0, 1)
            and state.pkg.launchable
            and state.pkg.activity
        ):
            target = state.pkg
    if target is None or target.activity is None:
        ctx.err("** No activities found to run, monkey aborted.\n")
        return 251
    dev.launch(target.name, target.activity, caller_uid=ctx.cred.uid)
    ctx.out(
        "Events injected: 1\n"
        "## Network stats: elapsed time=22ms (0ms mobile, 0ms wifi, 22ms not connected)\n"
    )
    return 0


KEYCODES = {
    "HOME": 3,
    "BACK": 4,
    "POWER": 26,
    "WAKEUP": 224,
    "SLEEP": 223,
    "MENU": 82,
    "APP_SWITCH": 187,
    "ENTER": 66,
    "VOLUME_UP": 24,
    "VOLUME_DOWN": 25,
    "VOLUME_MUTE": 164,
}


@ANDROID.command("input")
def _input(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = list(ctx.args)
    if args and args[0] in (
        "touchscreen",
        "keyboard",
        "mouse",
        "trackball",
        "stylus",
        "dpad",
        "gamepad",
        "touchpad",
    ):
        args = args[1:]
    if args[:1] == ["-d"]:
        args = args[2:]
    if not args:
        ctx.err("Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]\n")
        return 1
    sub, rest = args[0], args[1:]
    need = {
        "tap": 2,
        "swipe": 4,
        "draganddrop": 4,
        "text": 1,
        "keyevent": 1,
        "press": 0,
        "roll": 2,
        "motionevent": 3,
        "keycombination": 2,
    }
    if sub not in need or len(rest) < need[sub]:
        ctx.err(
            f"Error: Unknown command: {sub}\n"
            if sub not in need
            else f"Error: Invalid arguments for command: {sub}\n"
        )
        return 1
    if sub == "keyevent":
        for key in [r for r in rest if r not in ("--longpress", "--doubletap")]:
            code = KEYCODES.get(key.removeprefix("KEYCODE_"), int(key) if key.isdigit() else -1)
            if code in (3, 4):
                dev.go_home()
            elif code == 26:
                if dev.screen_on:
                    dev.screen_on = False
                else:
                    dev.wake()
            elif code == 224:
                dev.wake()
            elif code == 223:
                dev.screen_on = False
    return 0

"""``su``, ``nsenter``, ``mount`` and ``umount``: root, mount namespaces and mounts."""

from __future__ import annotations

import logging
import re
import shlex
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.profiles import (
    SuFlavor,
)
from vhandset.sh.command import Ctx
from vhandset.sh.interp import Shell
from vhandset.sh.streams import dec

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# ---- root, mounts and namespaces -------------------------------------------------------------


@ANDROID.command("su", directory="/system/xbin")
def _su(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = list(ctx.args)
    if dev.profile.su is SuFlavor.AOSP:
        if args and args[0] in ("-h", "--help"):
            ctx.err(
                "usage: su [WHO [COMMAND...]]\n\n"
                "Switch to WHO (default 'root') and run the given COMMAND (default sh).\n\n"
                "WHO is a comma-separated list of user, group, and supplementary groups\n"
                "in that order.\n\n"
            )
            return 0
        uid = 0
        if args:
            who = args.pop(0).split(",")[0]
            found = dev.uid_of(who)
            if found is None and not who.isdigit():
                ctx.err(f"su: invalid uid/gid '{who}'\n")
                return 1
            uid = found if found is not None else int(who)
        return _run_as(ctx, uid, argv=args or None, script=None, su=False)
    command: str | None = None
    user = "root"
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--command"):
            command = " ".join(args)
            args = []
        elif arg in (
            "-",
            "-l",
            "--login",
            "-m",
            "-p",
            "--preserve-environment",
            "--mount-master",
            "-M",
        ):
            continue
        elif arg in ("-s", "--shell", "-Z", "--context", "-t", "--target"):
            args = args[1:]
        elif arg in ("-v", "--version"):
            ctx.out("26.4:MAGISKSU\n")
            return 0
        elif arg in ("-V",):
            ctx.out("26400\n")
            return 0
        elif arg.startswith("-"):
            ctx.err(f"su: invalid option -- '{arg.lstrip('-')}'\n")
            return 2
        else:
            user = arg
            if args:
                command = " ".join(shlex.quote(a) for a in args)
                args = []
    found = dev.uid_of(user)
    if found is None and not user.isdigit():
        ctx.err(f"su: unknown user {user}\n")
        return 1
    uid = found if found is not None else int(user)
    return _run_as(ctx, uid, argv=None, script=command, su=True)


def _run_as(ctx: Ctx, uid: int, *, argv: list[str] | None, script: str | None, su: bool) -> int:
    dev = device_of(ctx)
    cred = dev.cred_for(uid, su=su)
    env = {
        **ctx.env,
        **{k: v for k, v in dev.base_env(uid).items() if k in ("USER", "LOGNAME", "PATH")},
    }
    sub = Shell(
        dev,
        cred,
        ctx.shell.cancel,
        argv0="/system/bin/sh",
        env=env,
        cwd=ctx.shell.cwd,
        ppid=ctx.shell.pid,
    )
    try:
        if argv:
            return sub.execute(argv, ctx.fds)
        if script is None:
            script = dec(ctx.stdin.read_all())
        return sub.run_script(script, ctx.fds)
    finally:
        sub.close()


@ANDROID.command("nsenter", toybox=True)
def _nsenter(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = list(ctx.args)
    target: int | None = None
    ns_path: str | None = None
    while args:
        arg = args[0]
        if arg == "--":
            args.pop(0)
            break
        if not arg.startswith("-"):
            break
        args.pop(0)
        if arg in ("-t", "--target") and args:
            target = int(args.pop(0))
        elif arg.startswith("--target="):
            target = int(arg.split("=", 1)[1])
        elif arg.startswith("--mount=") or arg.startswith("-m/"):
            ns_path = arg.split("=", 1)[1] if "=" in arg else arg[2:]
        elif arg in (
            "-m",
            "--mount",
            "-a",
            "--all",
            "-n",
            "--net",
            "-p",
            "--pid",
            "-U",
            "-i",
            "-u",
            "-F",
        ):
            continue
        elif re.fullmatch(r"-t\d+", arg):
            target = int(arg[2:])
        else:
            return ctx.error(f"Unknown option '{arg.lstrip('-')}' (see \"nsenter --help\")")
    if ns_path is not None:
        m = re.fullmatch(r"/proc/(\d+)/ns/mnt", ns_path)
        if not m or int(m.group(1)) not in dev.processes:
            return ctx.error(f"{ns_path}: No such file or directory")
    elif target is not None and target not in dev.processes:
        return ctx.error(f"/proc/{target}/ns/mnt: No such file or directory")
    if not ctx.cred.is_root:
        return ctx.error("setns: Operation not permitted")
    if not args:
        return ctx.shell.execute(["sh"], ctx.fds)
    return ctx.shell.execute(args, ctx.fds)


@ANDROID.command("mount", toybox=True)
def _mount(ctx: Ctx) -> int:
    dev = device_of(ctx)
    fs = ctx.fs
    args = list(ctx.args)
    fstype = None
    options: list[str] = []
    operands: list[str] = []
    bind = False
    while args:
        arg = args.pop(0)
        if arg == "-t" and args:
            fstype = args.pop(0)
        elif arg == "-o" and args:
            options += args.pop(0).split(",")
        elif arg in ("--bind", "-B"):
            bind = True
        elif arg in ("-r",):
            options.append("ro")
        elif arg in ("-w",):
            options.append("rw")
        elif arg in ("-a", "-f", "-v", "-n"):
            continue
        else:
            operands.append(arg)
    if not operands and not fstype:
        ctx.out(
            "".join(
                f"{m.source} on {m.target} type {m.fstype} ({m.options})\n" for m in fs.mounts()
            )
        )
        return 0
    bind = bind or "bind" in options or "rbind" in options
    if "remount" in options:
        target = operands[-1] if operands else "/"
        path = ctx.abspath(target)
        ro = "ro" in options and "rw" not in options
        if path == "/system" and dev.profile.emulator_like:
            path = "/"
        if path not in {m.target for m in fs.mounts()}:
            return ctx.error(f"'{target}' not in /proc/mounts")
        if not ctx.cred.is_root:
            return ctx.error(f"'{target}': Operation not permitted")
        if path == "/" and not ro and not dev.profile.emulator_like:
            return ctx.error("'/dev/block/dm-0'->'/': Permission denied")
        try:
            fs.remount(path, ctx.cred, ro=ro)
        except OSError as exc:
            return ctx.error(f"'{target}': {exc.strerror}")
        return 0
    if len(operands) != 2:
        return ctx.error("Needs 2 arguments") if operands else 0
    source, target = operands
    src_path, tgt_path = ctx.abspath(source), ctx.abspath(target)
    try:
        if bind:
            fs.mount_bind(src_path, tgt_path, ctx.cred)
        elif fstype == "tmpfs" or source == "tmpfs":
            extra = ",".join(o for o in options if o.startswith(("mode=", "size=", "uid=", "gid=")))
            fs.mount_tmpfs(tgt_path, ctx.cred, source=source, options=extra)
        else:
            return ctx.error(f"'{source}'->'{target}': No such device")
    except OSError as exc:
        return ctx.error(f"'{source}'->'{target}': {exc.strerror}")
    dev.log("vold", f"mount {source} on {tgt_path}", priority="D", uid=0, pid=ctx.shell.pid)
    return 0


@ANDROID.command("umount", toybox=True)
def _umount(ctx: Ctx) -> int:
    operands = [a for a in ctx.args if not a.startswith("-")]
    if not operands:
        return ctx.error("Needs 1 argument")
    status = 0
    for target in operands:
        try:
            ctx.fs.umount(ctx.abspath(target), ctx.cred)
        except OSError as exc:
            status = ctx.error(f"{target}: {exc.strerror}")
    return status

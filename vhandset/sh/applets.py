"""Toybox and friends: the generic applets of the phone's ``/system/bin`` that work on files
(``cat``, ``ls``, ``cp``, ``mv``, ``rm``, ``chmod``, ``stat``, the hash sums...) and ``toybox``
and ``sh`` themselves, in the :data:`CORE` table; the text tools are in
:mod:`vhandset.sh.textutils`, the Android commands in :mod:`vhandset.cmds`."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import posixpath
import re
import stat as statmod
import time
from collections.abc import Callable, Iterator

from vhandset.sh.builtins import BUILTINS
from vhandset.sh.command import Command, CommandTable, Ctx, Handler, UsageError
from vhandset.sh.interp import Shell
from vhandset.sh.streams import EXIT_NOT_FOUND, UMASK, dec, is_number

log = logging.getLogger(__name__)


# ---- toybox and friends ----------------------------------------------------------------------

CORE = CommandTable()
PERM_CHARS = "rwxrwxrwx"


def mode_string(mode: int) -> str:
    kind = {
        statmod.S_IFDIR: "d",
        statmod.S_IFLNK: "l",
        statmod.S_IFCHR: "c",
        statmod.S_IFBLK: "b",
    }.get(statmod.S_IFMT(mode), "-")
    chars = [PERM_CHARS[i] if mode & (1 << (8 - i)) else "-" for i in range(9)]
    for bit, pos, on, off in (
        (statmod.S_ISUID, 2, "s", "S"),
        (statmod.S_ISGID, 5, "s", "S"),
        (statmod.S_ISVTX, 8, "t", "T"),
    ):
        if mode & bit:
            chars[pos] = on if chars[pos] == "x" else off
    return kind + "".join(chars)


for _name in ("echo", "printf", "true", "false", "test", "pwd"):
    CORE[_name] = Command(_name, BUILTINS[_name], toybox=True)


@CORE.command("toybox")
def _toybox(ctx: Ctx) -> int:
    if not ctx.args:
        names = sorted(n for n, c in ctx.system.commands.items() if c.toybox)
        ctx.out(" ".join(names) + "\n")
        return 0
    applet = ctx.args[0]
    command = ctx.system.commands.get(applet)
    if command is None or not command.toybox:
        return ctx.error(f"Unknown command {applet}")
    return command.run(Ctx(ctx.args, ctx.shell, ctx.fds, ctx.env))


@CORE.command("sh")
def _sh(ctx: Ctx) -> int:
    args = list(ctx.args)
    shell = ctx.shell
    if args and args[0] == "-c":
        if len(args) < 2:
            return ctx.error("-c: option requires an argument")
        script, rest = args[1], args[2:]
        argv0, params = (rest[0], rest[1:]) if rest else ("sh", [])
    elif args and not args[0].startswith("-"):
        try:
            script = dec(ctx.fs.read(ctx.abspath(args[0]), ctx.cred))
        except OSError as exc:
            ctx.err(f"sh: {args[0]}: {exc.strerror}\n")
            return EXIT_NOT_FOUND
        argv0, params = args[0], args[1:]
    else:
        script, argv0, params = dec(ctx.stdin.read_all()), "sh", []
    sub = Shell(
        ctx.system,
        shell.cred,
        shell.cancel,
        argv0=argv0,
        args=params,
        env=ctx.env,
        cwd=shell.cwd,
        ppid=shell.pid,
    )
    try:
        return sub.run_script(script, ctx.fds)
    finally:
        sub.close()


def read_inputs(ctx: Ctx, files: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(name, content) per operand, ``-`` or none meaning stdin; reports errors itself."""
    if not files:
        files = ["-"]
    for name in files:
        if name == "-":
            yield name, ctx.stdin.read_all()
            continue
        try:
            yield name, ctx.fs.read(ctx.abspath(name), ctx.cred)
        except OSError as exc:
            ctx.error(f"{name}: {exc.strerror}")
            yield name, None


@CORE.command("cat", toybox=True)
def _cat(ctx: Ctx) -> int:
    _, files = ctx.getopt("unvetA")
    status = 0
    for name in files or ["-"]:
        if name == "-":
            while chunk := ctx.stdin.chunk():
                ctx.out(chunk)
            continue
        try:
            ctx.out(ctx.fs.read(ctx.abspath(name), ctx.cred))
        except OSError as exc:
            status = ctx.oserror(name, exc)
    return status


def _owner(ctx: Ctx, uid: int, numeric: bool) -> str:
    return str(uid) if numeric else ctx.system.user_name(uid)


@CORE.command("ls", toybox=True)
def _ls(ctx: Ctx) -> int:
    opts, operands = ctx.getopt("laAd1nZsRhtrSFc")
    long = "l" in opts or "n" in opts
    show_all, almost = "a" in opts, "A" in opts
    status = 0
    files: list[tuple[str, str]] = []
    dirs: list[tuple[str, str]] = []
    for operand in operands or ["."]:
        path = ctx.abspath(operand)
        try:
            lst = ctx.fs.stat(path, ctx.cred, follow=False)
            if statmod.S_ISLNK(lst.mode) and long and not operand.endswith("/"):
                files.append((operand, path))  # ls -l shows a link named on the command line
                continue
            st = ctx.fs.stat(path, ctx.cred)
        except OSError as exc:
            try:
                ctx.fs.stat(path, ctx.cred, follow=False)
                files.append((operand, path))
                continue
            except OSError:
                pass
            status = ctx.oserror(operand, exc)
            continue
        if statmod.S_ISDIR(st.mode) and "d" not in opts:
            dirs.append((operand, path))
        else:
            files.append((operand, path))
    if files:
        _ls_print(ctx, [(shown, path) for shown, path in files], opts, long, total=False)
    for i, (shown, path) in enumerate(dirs):
        if len(dirs) > 1 or files:
            ctx.out(("\n" if files or i else "") + f"{shown}:\n")
        try:
            names = ctx.fs.listdir(path, ctx.cred)
        except OSError as exc:
            status = ctx.oserror(shown, exc)
            continue
        if show_all:
            names = [".", "..", *names]
        elif not almost:
            names = [n for n in names if not n.startswith(".")]
        canon = ctx.fs.resolve(path, ctx.cred)
        here = {".": canon, "..": posixpath.dirname(canon) or "/"}
        entries = [(n, here.get(n) or posixpath.join(path, n)) for n in names]
        _ls_print(ctx, entries, opts, long, total=True)
    return status


def _ls_print(
    ctx: Ctx, entries: list[tuple[str, str]], opts: dict[str, str], long: bool, total: bool
) -> None:
    if not long:
        for name, path in entries:
            if "Z" in opts:
                try:
                    label = ctx.fs.stat(path, ctx.cred, follow=False).label
                except OSError:
                    label = "?"
                ctx.out(f"{label} {name}\n")
            else:
                ctx.out(name + "\n")
        return
    rows = []
    blocks = 0
    for name, path in entries:
        try:
            st = ctx.fs.stat(path, ctx.cred, follow=False)
        except OSError:
            continue
        blocks += (st.size + 4095) // 4096 * 4 if not statmod.S_ISLNK(st.mode) else 0
        when = ctx.system.local_time(st.mtime).strftime("%Y-%m-%d %H:%M")
        shown = name + (f" -> {st.target}" if statmod.S_ISLNK(st.mode) else "")
        rows.append(
            (
                mode_string(st.mode),
                str(st.nlink),
                _owner(ctx, st.uid, "n" in opts),
                _owner(ctx, st.gid, "n" in opts),
                st.label,
                str(st.size),
                when,
                shown,
            )
        )
    if total:
        ctx.out(f"total {blocks}\n")
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        label = f" {r[4]:<{widths[4]}}" if "Z" in opts else ""
        ctx.out(
            f"{r[0]} {r[1]:>{widths[1]}} {r[2]:<{widths[2]}} {r[3]:<{widths[3]}}{label} "
            f"{r[5]:>{widths[5]}} {r[6]} {r[7]}\n"
        )


def _copy_tree(ctx: Ctx, src: str, dst: str, *, recursive: bool, preserve: bool) -> None:
    fs, cred = ctx.fs, ctx.cred
    st = fs.stat(src, cred)
    if statmod.S_ISDIR(st.mode):
        if not recursive:
            raise IsADirectoryError(21, "Is a directory", src)
        if not fs.exists(dst, cred):
            fs.mkdir(dst, cred, st.mode & 0o7777)
        for name in fs.listdir(src, cred):
            _copy_tree(
                ctx,
                posixpath.join(src, name),
                posixpath.join(dst, name),
                recursive=True,
                preserve=preserve,
            )
    else:
        data = fs.read(src, cred)
        fs.write(dst, data, cred, mode=st.mode & 0o777 & ~UMASK)
    if preserve:
        fs.utime(dst, st.mtime, cred)
        try:
            fs.chmod(dst, st.mode & 0o7777, cred)
            if cred.is_root:
                fs.chown(dst, st.uid, st.gid, cred)
                fs.chcon(dst, st.label, cred)
        except OSError:
            pass


@CORE.command("cp", toybox=True)
def _cp(ctx: Ctx) -> int:
    opts, operands = ctx.getopt("rRapfnvdPL")
    if len(operands) < 2:
        return ctx.error("Needs 2 arguments")
    *srcs, dst = operands
    dst_path = ctx.abspath(dst)
    dst_is_dir = ctx.fs.is_dir(dst_path, ctx.cred)
    if len(srcs) > 1 and not dst_is_dir:
        return ctx.error(f"'{dst}' not directory")
    status = 0
    recursive = bool({"r", "R", "a"} & opts.keys())
    for src in srcs:
        src_path = ctx.abspath(src)
        target = posixpath.join(dst_path, posixpath.basename(src_path)) if dst_is_dir else dst_path
        if not ctx.fs.exists(src_path, ctx.cred):
            status = ctx.error(f"bad '{src}': No such file or directory")
            continue
        try:
            if ctx.fs.is_dir(src_path, ctx.cred) and not recursive:
                status = ctx.error(f"Skipped dir '{src}'")
                continue
            _copy_tree(
                ctx, src_path, target, recursive=recursive, preserve=bool({"p", "a"} & opts.keys())
            )
        except OSError as exc:
            status = ctx.error(f"'{exc.filename or target}': {exc.strerror}")
    return status


@CORE.command("mv", toybox=True)
def _mv(ctx: Ctx) -> int:
    _, operands = ctx.getopt("fnvi")
    if len(operands) < 2:
        return ctx.error("Needs 2 arguments")
    *srcs, dst = operands
    dst_path = ctx.abspath(dst)
    dst_is_dir = ctx.fs.is_dir(dst_path, ctx.cred)
    status = 0
    for src in srcs:
        src_path = ctx.abspath(src)
        target = posixpath.join(dst_path, posixpath.basename(src_path)) if dst_is_dir else dst_path
        try:
            ctx.fs.rename(src_path, target, ctx.cred)
        except OSError as exc:
            if exc.errno == 18:  # EXDEV: copy then delete, as mv does across mounts
                try:
                    _copy_tree(ctx, src_path, target, recursive=True, preserve=True)
                    _remove(ctx, src_path, recursive=True)
                    continue
                except OSError as inner:
                    exc = inner
            status = ctx.error(
                f"'{src}': {exc.strerror}" if exc.errno == 2 else f"'{target}': {exc.strerror}"
            )
    return status


def _remove(ctx: Ctx, path: str, *, recursive: bool) -> None:
    fs, cred = ctx.fs, ctx.cred
    st = fs.stat(path, cred, follow=False)
    if statmod.S_ISDIR(st.mode):
        if not recursive:
            raise IsADirectoryError(21, "Is a directory", path)
        for name in fs.listdir(path, cred):
            _remove(ctx, posixpath.join(path, name), recursive=True)
        fs.rmdir(path, cred)
    else:
        fs.unlink(path, cred)


@CORE.command("rm", toybox=True)
def _rm(ctx: Ctx) -> int:
    opts, operands = ctx.getopt("rRfiv")
    force = "f" in opts
    if not operands and not force:
        return ctx.error("Needs 1 argument")
    status = 0
    for name in operands:
        try:
            _remove(ctx, ctx.abspath(name), recursive=bool({"r", "R"} & opts.keys()))
        except OSError as exc:
            if force and exc.errno == 2:
                continue
            status = ctx.oserror(name, exc)
    return status


@CORE.command("mkdir", toybox=True)
def _mkdir(ctx: Ctx) -> int:
    opts, operands = ctx.getopt("pm:vZ:")
    if not operands:
        return ctx.error("Needs 1 argument")
    mode = int(opts["m"], 8) if "m" in opts else 0o777 & ~UMASK
    status = 0
    for name in operands:
        try:
            ctx.fs.mkdir(ctx.abspath(name), ctx.cred, mode, parents="p" in opts)
            if "m" in opts:
                ctx.fs.chmod(ctx.abspath(name), mode, ctx.cred)
        except OSError as exc:
            status = ctx.oserror(name, exc, quote=True)
    return status


def parse_mode(spec: str, current: int) -> int:
    """An octal or symbolic (``u+x,go-w``) chmod mode applied to ``current``."""
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    mode = current & 0o7777
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*)", clause)
        if not m:
            raise ValueError(spec)
        who = m.group(1) or "a"
        perms = 0
        for ch in m.group(3):
            perms |= {"r": 0o444, "w": 0o222, "x": 0o111, "X": 0o111, "s": 0o6000, "t": 0o1000}[ch]
        mask = 0
        for ch in who:
            mask |= {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}[ch]
        perms &= mask
        if m.group(2) == "+":
            mode |= perms
        elif m.group(2) == "-":
            mode &= ~perms
        else:
            mode = (mode & ~mask) | perms
    return mode


def _each_path(ctx: Ctx, paths: list[str], recursive: bool) -> Iterator[str]:
    for name in paths:
        path = ctx.abspath(name)
        yield path
        if recursive and ctx.fs.is_dir(path, ctx.cred):
            stack = [path]
            while stack:
                cur = stack.pop()
                try:
                    names = ctx.fs.listdir(cur, ctx.cred)
                except OSError:
                    continue
                for child in names:
                    full = posixpath.join(cur, child)
                    yield full
                    if ctx.fs.is_dir(full, ctx.cred) and not statmod.S_ISLNK(
                        ctx.fs.stat(full, ctx.cred, follow=False).mode
                    ):
                        stack.append(full)


@CORE.command("chmod", toybox=True)
def _chmod(ctx: Ctx) -> int:
    args = list(ctx.args)
    recursive = False
    while args and args[0] in ("-R", "-f", "-v"):
        recursive = recursive or args.pop(0) == "-R"
    if len(args) < 2:
        return ctx.error("Needs 2 arguments")
    spec, targets = args[0], args[1:]
    status = 0
    for path in _each_path(ctx, targets, recursive):
        try:
            st = ctx.fs.stat(path, ctx.cred)
            try:
                mode = parse_mode(spec, st.mode)
            except ValueError:
                return ctx.error(f"Bad mode '{spec}'")
            ctx.fs.chmod(path, mode, ctx.cred)
        except OSError as exc:
            status = ctx.error(f"chmod '{path}' to {spec}: {exc.strerror}")
    return status


def _lookup_id(ctx: Ctx, name: str, what: str) -> int:
    if is_number(name):
        return int(name)
    uid = ctx.system.uid_of(name)
    if uid is None:
        raise UsageError(f"bad {what} '{name}'")
    return uid


@CORE.command("chown", "chgrp", toybox=True)
def _chown(ctx: Ctx) -> int:
    args = list(ctx.args)
    recursive = False
    while args and args[0] in ("-R", "-h", "-f", "-v", "-L", "-H", "-P"):
        recursive = recursive or args.pop(0) == "-R"
    if len(args) < 2:
        return ctx.error("Needs 2 arguments")
    spec, targets = args[0], args[1:]
    if ctx.name == "chgrp":
        uid, gid = -1, _lookup_id(ctx, spec, "group")
    else:
        user, _, group = spec.replace(".", ":").partition(":")
        uid = _lookup_id(ctx, user, "user") if user else -1
        gid = _lookup_id(ctx, group, "group") if group else -1
    status = 0
    for path in _each_path(ctx, targets, recursive):
        try:
            ctx.fs.chown(path, uid, gid, ctx.cred)
        except OSError as exc:
            status = ctx.error(f"'{path}': {exc.strerror}")
    return status


@CORE.command("chcon", toybox=True)
def _chcon(ctx: Ctx) -> int:
    args = list(ctx.args)
    recursive = False
    while args and args[0] in ("-R", "-h", "-v"):
        recursive = recursive or args.pop(0) == "-R"
    if len(args) < 2:
        return ctx.error("Needs 2 arguments")
    label, targets = args[0], args[1:]
    status = 0
    for path in _each_path(ctx, targets, recursive):
        try:
            ctx.fs.chcon(path, label, ctx.cred)
        except OSError as exc:
            status = ctx.error(f"'{path}' to {label}: {exc.strerror}")
    return status


@CORE.command("touch", toybox=True)
def _touch(ctx: Ctx) -> int:
    opts, files = ctx.getopt("acmd:t:r:h")
    when = int(time.time())
    if "t" in opts:
        try:
            stamp = _dt.datetime.strptime(opts["t"][:12], "%Y%m%d%H%M")
        except ValueError:
            return ctx.error(f"bad date '{opts['t']}'")
        when = int(stamp.replace(tzinfo=ctx.system.local_time(0).tzinfo).timestamp())
    elif "r" in opts:
        when = ctx.fs.stat(ctx.abspath(opts["r"]), ctx.cred).mtime
    status = 0
    for name in files:
        path = ctx.abspath(name)
        try:
            if ctx.fs.exists(path, ctx.cred):
                ctx.fs.utime(path, when, ctx.cred)
            elif "c" not in opts:
                ctx.fs.write(path, b"", ctx.cred, mode=0o666 & ~UMASK, mtime=when)
        except OSError as exc:
            status = ctx.oserror(f"'{name}'", exc)
    return status


def _hash_command(algorithm: str) -> Handler:
    def run(ctx: Ctx) -> int:
        _, files = ctx.getopt("bc")
        status = 0
        for name, data in read_inputs(ctx, files):
            if data is None:
                status = 1
                continue
            digest = hashlib.new(algorithm, data).hexdigest()
            ctx.out(f"{digest}  {name}\n")
        return status

    return run


for _algo in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512"):
    CORE[f"{_algo}sum"] = Command(f"{_algo}sum", _hash_command(_algo), toybox=True)


@CORE.command("stat", toybox=True)
def _stat(ctx: Ctx) -> int:
    opts, files = ctx.getopt("c:LfZt", ("format=",))
    fmt = opts.get("c") or opts.get("format")
    status = 0
    for name in files:
        path = ctx.abspath(name)
        try:
            st = ctx.fs.stat(path, ctx.cred, follow="L" in opts)
        except OSError as exc:
            status = ctx.error(f"'{name}': {exc.strerror}")
            continue
        if fmt is not None:
            ctx.out(_stat_format(ctx, fmt, name, st) + "\n")
            continue
        kind = (
            "directory"
            if statmod.S_ISDIR(st.mode)
            else "symbolic link"
            if statmod.S_ISLNK(st.mode)
            else "regular file"
            if st.size
            else "regular empty file"
        )
        shown = f"`{name}' -> `{st.target}'" if statmod.S_ISLNK(st.mode) else f"`{name}'"
        when = ctx.system.local_time(st.mtime).strftime("%Y-%m-%d %H:%M:%S.000000000")
        user, group = ctx.system.user_name(st.uid), ctx.system.user_name(st.gid)
        blocks = (st.size + 4095) // 4096 * 8
        ctx.out(
            f"  File: {shown}\n"
            f"  Size: {st.size}\t Blocks: {blocks}\t IO Blocks: 4096\t{kind}\n"
            f"Device: {st.dev:x}h/{st.dev}d\t Inode: {st.ino}\t Links: {st.nlink}\n"
            f"Access: ({st.mode & 0o7777:04o}/{mode_string(st.mode)})"
            f"\tUid: ({st.uid:5d}/{user:>8})\tGid: ({st.gid:5d}/{group:>8})\n"
            f"Access: {when}\nModify: {when}\nChange: {when}\n"
        )
    return status


def _stat_format(ctx: Ctx, fmt: str, name: str, st: object) -> str:
    from vhandset.vfs import StatResult

    assert isinstance(st, StatResult)
    values: dict[str, Callable[[], str]] = {
        "a": lambda: f"{st.mode & 0o7777:o}",
        "A": lambda: mode_string(st.mode),
        "b": lambda: str((st.size + 4095) // 4096 * 8),
        "C": lambda: st.label,
        "d": lambda: str(st.dev),
        "f": lambda: f"{st.mode:x}",
        "F": lambda: (
            "directory"
            if statmod.S_ISDIR(st.mode)
            else "symbolic link"
            if statmod.S_ISLNK(st.mode)
            else "regular file"
        ),
        "g": lambda: str(st.gid),
        "G": lambda: ctx.system.user_name(st.gid),
        "h": lambda: str(st.nlink),
        "i": lambda: str(st.ino),
        "n": lambda: name,
        "N": lambda: f"'{name}'" + (f" -> '{st.target}'" if st.target else ""),
        "s": lambda: str(st.size),
        "u": lambda: str(st.uid),
        "U": lambda: ctx.system.user_name(st.uid),
        "x": lambda: ctx.system.local_time(st.mtime).strftime("%Y-%m-%d %H:%M:%S.000000000"),
        "X": lambda: str(st.mtime),
        "y": lambda: ctx.system.local_time(st.mtime).strftime("%Y-%m-%d %H:%M:%S.000000000"),
        "Y": lambda: str(st.mtime),
        "z": lambda: ctx.system.local_time(st.mtime).strftime("%Y-%m-%d %H:%M:%S.000000000"),
        "Z": lambda: str(st.mtime),
        "%": lambda: "%",
    }
    return re.sub(
        r"%(.)", lambda m: values[m.group(1)]() if m.group(1) in values else m.group(0), fmt
    )

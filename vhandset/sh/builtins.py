"""The shell's builtins (``echo``, ``printf``, ``cd``, ``export``, ``read``, ``test``, ``exit``...),
registered in :data:`BUILTINS`, which the interpreter looks up before ``$PATH``."""

from __future__ import annotations

import logging
import re
import stat as statmod
from collections.abc import Callable

from vhandset.sh.command import Ctx, Handler
from vhandset.sh.streams import LoopControl, ShellExit, dec, is_number

log = logging.getLogger(__name__)


# ---- builtins --------------------------------------------------------------------------------

BUILTINS: dict[str, Handler] = {}


def builtin(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            BUILTINS[name] = fn
        return fn

    return register


_ECHO_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "e": "\x1b",
}


def expand_escapes(text: str, *, octal_prefix: str = "0") -> tuple[str, bool]:
    """Backslash escapes as mksh's echo/print interpret them; True when ``\\c`` stops output."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "c":
            return "".join(out), True
        if nxt in _ECHO_ESCAPES:
            out.append(_ECHO_ESCAPES[nxt])
            i += 2
        elif nxt == octal_prefix or (octal_prefix == "" and nxt in "01234567"):
            m = re.match(r"[0-7]{1,3}", text[i + 1 + len(octal_prefix) :])
            digits = m.group() if m else ""
            out.append(chr(int(digits or "0", 8)))
            i += 1 + len(octal_prefix) + len(digits)
        else:
            out.append("\\" + nxt)
            i += 2
    return "".join(out), False


@builtin("echo")
def _echo(ctx: Ctx) -> int:
    args = ctx.args
    newline, escapes = True, True
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for flag in args[0][1:]:
            if flag == "n":
                newline = False
            elif flag == "e":
                escapes = True
            else:
                escapes = False
        args = args[1:]
    text = " ".join(args)
    stop = False
    if escapes:
        text, stop = expand_escapes(text)
    ctx.out(text + ("\n" if newline and not stop else ""))
    return 0


@builtin("printf")
def _printf(ctx: Ctx) -> int:
    if not ctx.args:
        return ctx.error("needs 1 argument")
    fmt, args = ctx.args[0], list(ctx.args[1:])
    spec = re.compile(r"%([-+ #0]*\d*(?:\.\d+)?)([diouxXsbcf%])")
    out = []
    while True:
        consumed = False

        def conv(m: re.Match[str]) -> str:
            nonlocal consumed
            flags, kind = m.group(1), m.group(2)
            if kind == "%":
                return "%"
            consumed = True
            arg = args.pop(0) if args else ""
            if kind == "b":
                return expand_escapes(arg)[0]
            if kind == "s":
                return ("%" + flags + "s") % arg
            if kind == "c":
                return arg[:1]
            if kind == "f":
                return ("%" + flags + "f") % float(arg or 0)
            try:
                num = int(arg, 0) if arg else 0
            except ValueError:
                num = 0
            return ("%" + flags + ("d" if kind in "iu" else kind)) % num

        out.append(expand_escapes(spec.sub(conv, fmt), octal_prefix="")[0])
        if not args or not consumed:
            break
    ctx.out("".join(out))
    return 0


@builtin("true", ":")
def _true(ctx: Ctx) -> int:
    return 0


@builtin("false")
def _false(ctx: Ctx) -> int:
    return 1


@builtin("exit")
def _exit(ctx: Ctx) -> int:
    code = ctx.shell.status
    if ctx.args:
        try:
            code = int(ctx.args[0]) & 0xFF
        except ValueError:
            ctx.err(f"{ctx.shell.argv0}: exit: {ctx.args[0]}: bad number\n")
            code = 1
    raise ShellExit(code)


@builtin("break", "continue")
def _loopctl(ctx: Ctx) -> int:
    levels = int(ctx.args[0]) if ctx.args and is_number(ctx.args[0]) else 1
    raise LoopControl(ctx.argv[0], levels)


@builtin("cd")
def _cd(ctx: Ctx) -> int:
    target = ctx.args[0] if ctx.args else ctx.env.get("HOME", "/")
    if target == "-":
        target = ctx.env.get("OLDPWD", "/")
    path = ctx.abspath(target)
    try:
        st = ctx.fs.stat(path, ctx.cred)
    except OSError as exc:
        ctx.err(f"{ctx.shell.argv0}: cd: {path}: {exc.strerror}\n")
        return 2
    if not statmod.S_ISDIR(st.mode) or not ctx.fs.access(path, ctx.cred, 0o1):
        why = "Not a directory" if not statmod.S_ISDIR(st.mode) else "Permission denied"
        ctx.err(f"{ctx.shell.argv0}: cd: {path}: {why}\n")
        return 2
    ctx.shell.vars["OLDPWD"] = ctx.shell.cwd
    ctx.shell.cwd = ctx.fs.resolve(path, ctx.cred)
    ctx.shell.vars["PWD"] = ctx.shell.cwd
    return 0


@builtin("pwd")
def _pwd(ctx: Ctx) -> int:
    ctx.out(ctx.shell.cwd + "\n")
    return 0


@builtin("export")
def _export(ctx: Ctx) -> int:
    for arg in ctx.args:
        if "=" in arg:
            name, _, value = arg.partition("=")
            ctx.shell.vars[name] = value
    if not ctx.args:
        for name in sorted(ctx.shell.vars):
            ctx.out(f"export {name}={ctx.shell.vars[name]}\n")
    return 0


@builtin("unset")
def _unset(ctx: Ctx) -> int:
    for name in ctx.args:
        if not name.startswith("-"):
            ctx.shell.vars.pop(name, None)
    return 0


@builtin("shift")
def _shift(ctx: Ctx) -> int:
    n = int(ctx.args[0]) if ctx.args else 1
    if n > len(ctx.shell.args):
        return 1
    ctx.shell.args = ctx.shell.args[n:]
    return 0


@builtin("set")
def _set(ctx: Ctx) -> int:
    args = list(ctx.args)
    while args and args[0][:1] in "-+" and args[0] != "--":
        flag = args.pop(0)
        if flag in ("-o", "+o") and args:
            if args.pop(0) == "errexit":
                ctx.shell.errexit = flag == "-o"
        elif "e" in flag:
            ctx.shell.errexit = flag.startswith("-")
    if args and args[0] == "--":
        ctx.shell.args = args[1:]
    elif not ctx.args:
        for name in sorted(ctx.shell.vars):
            ctx.out(f"{name}={ctx.shell.vars[name]}\n")
    return 0


@builtin("wait")
def _wait(ctx: Ctx) -> int:
    return 0  # '&' runs commands in the foreground, so there is never anything to wait for


@builtin("read")
def _read(ctx: Ctx) -> int:
    names = [a for a in ctx.args if not a.startswith("-")] or ["REPLY"]
    line = b""
    while True:
        chunk = ctx.stdin.chunk()
        if not chunk:
            break
        nl = chunk.find(b"\n")
        if nl >= 0:
            line += chunk[:nl]
            ctx.stdin._pending = chunk[nl + 1 :]
            break
        line += chunk
    else:
        pass
    text = dec(line)
    pieces = text.split(None, len(names) - 1) if text else []
    for i, name in enumerate(names):
        ctx.shell.vars[name] = pieces[i] if i < len(pieces) else ""
    return 0 if line or text else 1


@builtin("test", "[")
def _test(ctx: Ctx) -> int:
    args = list(ctx.args)
    if ctx.argv[0] == "[":
        if not args or args[-1] != "]":
            return ctx.error("missing ]", 2)
        args = args[:-1]
    try:
        return 0 if _test_expr(ctx, args) else 1
    except ValueError as exc:
        ctx.err(f"{ctx.shell.argv0}: {ctx.argv[0]}: {exc}\n")
        return 2


def _test_expr(ctx: Ctx, args: list[str]) -> bool:
    if not args:
        return False
    for i, arg in enumerate(args):
        if arg == "-o" and 0 < i < len(args) - 1:
            return _test_expr(ctx, args[:i]) or _test_expr(ctx, args[i + 1 :])
    for i, arg in enumerate(args):
        if arg == "-a" and 0 < i < len(args) - 1:
            return _test_expr(ctx, args[:i]) and _test_expr(ctx, args[i + 1 :])
    if args[0] == "!":
        return not _test_expr(ctx, args[1:])
    if len(args) == 1:
        return args[0] != ""
    if len(args) == 2:
        op, operand = args
        if op == "-n":
            return operand != ""
        if op == "-z":
            return operand == ""
        path = ctx.abspath(operand)
        fs, cred = ctx.fs, ctx.cred
        try:
            st = fs.stat(path, cred, follow=op not in ("-L", "-h"))
        except OSError:
            return False
        checks: dict[str, Callable[[], bool]] = {
            "-e": lambda: True,
            "-f": lambda: statmod.S_ISREG(st.mode),
            "-d": lambda: statmod.S_ISDIR(st.mode),
            "-L": lambda: statmod.S_ISLNK(st.mode),
            "-h": lambda: statmod.S_ISLNK(st.mode),
            "-s": lambda: st.size > 0,
            "-r": lambda: fs.access(path, cred, 0o4),
            "-w": lambda: fs.access(path, cred, 0o2),
            "-x": lambda: fs.access(path, cred, 0o1),
        }
        if op not in checks:
            raise ValueError(f"{op}: unknown operator")
        return checks[op]()
    if len(args) == 3:
        a, op, b = args
        if op in ("=", "=="):
            return a == b
        if op == "!=":
            return a != b
        ints = {
            "-eq": int.__eq__,
            "-ne": int.__ne__,
            "-lt": int.__lt__,
            "-le": int.__le__,
            "-gt": int.__gt__,
            "-ge": int.__ge__,
        }
        if op in ints:
            try:
                return bool(ints[op](int(a), int(b)))
            except ValueError:
                bad = a if not is_number(a.lstrip("-")) else b
                raise ValueError(f"{bad}: bad number") from None
    raise ValueError("syntax error")

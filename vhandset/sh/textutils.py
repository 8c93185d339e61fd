"""Toybox's text tools on the phone: ``grep``, ``head``, ``wc``, ``cut``, ``sort``, ``uniq``,
``tr``, ``xargs``, and ``sleep``, ``which``, ``readlink``, ``yes``; registered in the
:data:`CORE` table of :mod:`vhandset.sh.applets`."""

from __future__ import annotations

import getopt
import logging
import re
import stat as statmod
from collections.abc import Callable, Iterator

from vhandset.sh.applets import CORE, read_inputs
from vhandset.sh.builtins import expand_escapes
from vhandset.sh.command import Ctx, UsageError
from vhandset.sh.streams import Fds, Reader, dec, enc

log = logging.getLogger(__name__)


def _grep_match(pattern: re.Pattern[str], line: str, opts: dict[str, str]) -> list[str]:
    if "o" in opts:
        return [m.group(0) for m in pattern.finditer(line) if m.group(0)]
    return [line] if pattern.search(line) else []


@CORE.command("grep", toybox=True)
def _grep(ctx: Ctx) -> int:
    rest = list(ctx.args)
    try:
        pairs, rest = getopt.gnu_getopt(rest, "viEFcqnowlhHse:m:A:B:C:")
    except getopt.GetoptError as exc:
        raise UsageError(f"Unknown option '{exc.opt}' (see \"grep --help\")") from exc
    opts: dict[str, str] = {}
    patterns = []
    for key, value in pairs:
        opts[key.lstrip("-")] = value
        if key == "-e":
            patterns.append(value)
    if not patterns:
        if not rest:
            ctx.err(
                "usage: grep [-EFHabcdhilnoqrsvwxZz] [-e REGEX]... [-f REGEXFILE] [-m MAX] "
                "[-ABC NUM]... [REGEX] [FILE...]\n"
            )
            return 2
        patterns, rest = [rest[0]], rest[1:]
    fixed = "F" in opts
    exprs = [re.escape(p) if fixed else _bre_to_python(p, "E" in opts) for p in patterns]
    if "w" in opts:
        exprs = [rf"\b(?:{e})\b" for e in exprs]
    try:
        pattern = re.compile("|".join(f"(?:{e})" for e in exprs), re.I if "i" in opts else 0)
    except re.error as exc:
        return ctx.error(f"bad regex '{patterns[0]}': {exc}", 2)
    limit = int(opts["m"]) if "m" in opts else None
    show_name = ("H" in opts or len(rest) > 1) and "h" not in opts
    matched_any = False
    status_err = False

    def scan(label: str, lines: Iterator[bytes]) -> None:
        nonlocal matched_any
        count = 0
        for num, raw in enumerate(lines, 1):
            line = dec(raw.rstrip(b"\n"))
            hits = _grep_match(pattern, line, opts)
            if bool(hits) == ("v" in opts):
                continue
            count += 1
            matched_any = True
            if "q" in opts:
                return
            if "l" in opts:
                ctx.out(label + "\n")
                return
            if "c" not in opts:
                prefix = (f"{label}:" if show_name else "") + (f"{num}:" if "n" in opts else "")
                for hit in hits if ("o" in opts and "v" not in opts) else [line]:
                    ctx.out(f"{prefix}{hit}\n")
            if limit is not None and count >= limit:
                break
        if "c" in opts:
            ctx.out((f"{label}:" if show_name else "") + f"{count}\n")

    for name in rest or ["-"]:
        if name == "-":
            scan("(standard input)", ctx.stdin.lines())
        else:
            try:
                data = ctx.fs.read(ctx.abspath(name), ctx.cred)
            except OSError as exc:
                if "s" not in opts:
                    ctx.error(f"{name}: {exc.strerror}")
                status_err = True
                continue
            scan(name, iter(data.splitlines(keepends=True)))
        if matched_any and "q" in opts:
            return 0
    if status_err and not matched_any:
        return 2
    return 0 if matched_any else 1


def _bre_to_python(pattern: str, extended: bool) -> str:
    """POSIX basic/extended regex to Python ``re`` (enough for what scripts grep for)."""
    classes = {
        "[:space:]": r"\s",
        "[:digit:]": r"\d",
        "[:alpha:]": "a-zA-Z",
        "[:alnum:]": "a-zA-Z0-9",
        "[:upper:]": "A-Z",
        "[:lower:]": "a-z",
        "[:xdigit:]": "0-9A-Fa-f",
        "[:punct:]": r"!-/:-@\[-`{-~",
    }
    for name, repl in classes.items():
        pattern = pattern.replace(name, repl)
    if extended:
        return pattern
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(nxt if nxt in "(){}|+?" else "\\" + nxt)
            i += 2
            continue
        out.append("\\" + ch if ch in "(){}|+?" else ch)
        i += 1
    return "".join(out)


def _count_opt(ctx: Ctx, default: int = 10) -> tuple[int, bool, list[str]]:
    """``-n N``/``-N``/``-c N`` of head and tail: (count, bytes?, files)."""
    args = list(ctx.args)
    count, use_bytes, files = default, False, []
    i = 0
    while i < len(args):
        arg = args[i]
        if re.fullmatch(r"-\d+", arg):
            count = int(arg[1:])
        elif arg in ("-n", "-c") and i + 1 < len(args):
            use_bytes = arg == "-c"
            count = int(args[i + 1].lstrip("+-") or 0)
            i += 1
        elif re.fullmatch(r"-[nc]\d+", arg):
            use_bytes = arg[1] == "c"
            count = int(arg[2:])
        elif arg in ("-q", "-v", "-f", "-F"):
            pass
        else:
            files.append(arg)
        i += 1
    return count, use_bytes, files


@CORE.command("head", toybox=True)
def _head(ctx: Ctx) -> int:
    count, use_bytes, files = _count_opt(ctx)
    status = 0
    for name in files or ["-"]:
        if name == "-":
            if use_bytes:
                ctx.out(ctx.stdin.read_all()[:count])
                continue
            left = count
            for line in ctx.stdin.lines():
                if left <= 0:
                    break
                ctx.out(line)
                left -= 1
            ctx.stdin.close()
            continue
        try:
            data = ctx.fs.read(ctx.abspath(name), ctx.cred)
        except OSError as exc:
            status = ctx.oserror(name, exc)
            continue
        ctx.out(data[:count] if use_bytes else b"".join(data.splitlines(keepends=True)[:count]))
    return status


@CORE.command("wc", toybox=True)
def _wc(ctx: Ctx) -> int:
    opts, files = ctx.getopt("lwcm")
    wanted = [k for k in "lwc" if k in opts or (k == "c" and "m" in opts)] or ["l", "w", "c"]
    status = 0
    totals = [0, 0, 0]
    results = []
    for name, data in read_inputs(ctx, files):
        if data is None:
            status = 1
            continue
        counts = [data.count(b"\n"), len(data.split()), len(data)]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        results.append((name, counts))
    if len(results) > 1:
        results.append(("total", totals))
    for name, counts in results:
        picked = [counts["lwc".index(k)] for k in wanted]
        text = (
            " ".join(str(c) for c in picked)
            if len(picked) == 1
            else " ".join(f"{c:7d}" for c in picked)
        )
        ctx.out(text + ("" if name == "-" else f" {name}") + "\n")
    return status


def _ranges(spec: str) -> Callable[[int], bool]:
    parts = []
    for piece in spec.split(","):
        if "-" in piece:
            lo, _, hi = piece.partition("-")
            parts.append((int(lo) if lo else 1, int(hi) if hi else 1 << 30))
        else:
            parts.append((int(piece), int(piece)))
    return lambda n: any(lo <= n <= hi for lo, hi in parts)


@CORE.command("cut", toybox=True)
def _cut(ctx: Ctx) -> int:
    opts, files = ctx.getopt("d:f:c:b:s")
    delim = opts.get("d", "\t")
    if "f" in opts:
        keep, mode = _ranges(opts["f"]), "f"
    elif "c" in opts or "b" in opts:
        keep, mode = _ranges(opts.get("c") or opts["b"]), "c"
    else:
        return ctx.error("Needs -fcb")
    status = 0
    for name in files or ["-"]:
        if name == "-":
            lines: Iterator[bytes] = ctx.stdin.lines()
        else:
            try:
                lines = iter(ctx.fs.read(ctx.abspath(name), ctx.cred).splitlines(keepends=True))
            except OSError as exc:
                status = ctx.oserror(name, exc)
                continue
        for raw in lines:
            line = dec(raw.rstrip(b"\n"))
            if mode == "c":
                ctx.out("".join(ch for i, ch in enumerate(line, 1) if keep(i)) + "\n")
            elif delim not in line:
                if "s" not in opts:
                    ctx.out(line + "\n")
            else:
                fields = line.split(delim)
                ctx.out(delim.join(f for i, f in enumerate(fields, 1) if keep(i)) + "\n")
    return status


@CORE.command("sort", toybox=True)
def _sort(ctx: Ctx) -> int:
    opts, files = ctx.getopt("rnuft:k:")
    lines: list[bytes] = []
    for _, data in read_inputs(ctx, files):
        if data is not None:
            lines.extend(data.splitlines())
    sep = opts.get("t")
    key_field = int(opts["k"].split(",")[0].split(".")[0]) if "k" in opts else None

    def key(line: bytes) -> tuple[float, str] | str:
        text = dec(line)
        if key_field is not None:
            fields = text.split(sep) if sep else text.split()
            text = fields[key_field - 1] if key_field <= len(fields) else ""
        if "f" in opts:
            text = text.lower()
        if "n" in opts:
            m = re.match(r"\s*-?\d+(\.\d+)?", text)
            return (float(m.group()) if m else 0.0, text)
        return text

    lines.sort(key=key, reverse="r" in opts)
    if "u" in opts:
        lines = list(dict.fromkeys(lines))
    ctx.out(b"".join(line + b"\n" for line in lines))
    return 0


@CORE.command("uniq", toybox=True)
def _uniq(ctx: Ctx) -> int:
    opts, files = ctx.getopt("cdu")
    data = b"".join(d for _, d in read_inputs(ctx, files[:1]) if d is not None)
    groups: list[list[bytes]] = []
    for line in data.splitlines():
        if groups and groups[-1][0] == line:
            groups[-1].append(line)
        else:
            groups.append([line])
    for group in groups:
        if ("d" in opts and len(group) < 2) or ("u" in opts and len(group) > 1):
            continue
        prefix = f"{len(group):7d} ".encode() if "c" in opts else b""
        ctx.out(prefix + group[0] + b"\n")
    return 0


_TR_CLASSES = {
    "[:space:]": " \t\n\r\v\f",
    "[:digit:]": "0123456789",
    "[:upper:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "[:lower:]": "abcdefghijklmnopqrstuvwxyz",
    "[:alpha:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "[:alnum:]": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "[:punct:]": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
}


def _tr_set(spec: str) -> str:
    for name, chars in _TR_CLASSES.items():
        spec = spec.replace(name, chars.replace("-", "\x00"))
    spec = expand_escapes(spec)[0]
    out: list[str] = []
    i = 0
    while i < len(spec):
        if i + 2 < len(spec) and spec[i + 1] == "-":
            out.extend(chr(c) for c in range(ord(spec[i]), ord(spec[i + 2]) + 1))
            i += 3
        else:
            out.append(spec[i])
            i += 1
    return "".join(out).replace("\x00", "-")


@CORE.command("tr", toybox=True)
def _tr(ctx: Ctx) -> int:
    opts, sets = ctx.getopt("dsc")
    if not sets:
        return ctx.error("Needs 1 argument")
    first = _tr_set(sets[0])
    text = dec(ctx.stdin.read_all())
    if "d" in opts:
        text = "".join(ch for ch in text if ch not in first)
    elif len(sets) > 1:
        second = _tr_set(sets[1])
        second = second + second[-1:] * (len(first) - len(second))
        text = text.translate(str.maketrans(first, second[: len(first)]))
    if "s" in opts:
        squeeze = _tr_set(sets[-1])
        text = re.sub("([" + re.escape(squeeze) + "])\\1+", r"\1", text)
    ctx.out(text)
    return 0


@CORE.command("xargs", toybox=True)
def _xargs(ctx: Ctx) -> int:
    args = list(ctx.args)
    per = 0
    replace = None
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "-n" and args:
            per = int(args.pop(0))
        elif opt.startswith("-n"):
            per = int(opt[2:])
        elif opt == "-I" and args:
            replace = args.pop(0)
        elif opt == "--":
            break
    command = args or ["echo"]
    items = dec(ctx.stdin.read_all()).split()
    if replace is not None:
        batches = [[item] for item in items]
    elif per:
        batches = [items[i : i + per] for i in range(0, len(items), per)]
    else:
        batches = [items] if items else [[]]
    status = 0
    for batch in batches:
        if replace is not None:
            argv = [a.replace(replace, batch[0]) for a in command]
        else:
            argv = [*command, *batch]
        rc = ctx.shell.execute(argv, Fds(Reader(None), ctx.fds.stdout, ctx.fds.stderr))
        if rc:
            status = 123 if rc < 126 else rc
    return status


@CORE.command("sleep", toybox=True)
def _sleep(ctx: Ctx) -> int:
    total = 0.0
    for arg in ctx.args:
        m = re.fullmatch(r"(\d*\.?\d+)([smhd]?)", arg)
        if not m:
            return ctx.error(f"bad number '{arg}'")
        total += float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    ctx.sleep(total)
    return 0


@CORE.command("which", toybox=True)
def _which(ctx: Ctx) -> int:
    _, names = ctx.getopt("a")
    status = 0
    for name in names:
        found = ctx.shell.find_program(name)
        if isinstance(found, int):
            status = 1
        else:
            ctx.out(found[0] + "\n")
    return status


@CORE.command("readlink", toybox=True)
def _readlink(ctx: Ctx) -> int:
    opts, names = ctx.getopt("fenmq")
    status = 0
    for name in names:
        path = ctx.abspath(name)
        try:
            if "f" in opts or "e" in opts:
                ctx.out(ctx.fs.resolve(path, ctx.cred) + "\n")
            else:
                st = ctx.fs.stat(path, ctx.cred, follow=False)
                if not statmod.S_ISLNK(st.mode):
                    status = 1
                    continue
                ctx.out(st.target + "\n")
        except OSError:
            status = 1
    return status


@CORE.command("yes", toybox=True)
def _yes(ctx: Ctx) -> int:
    line = enc((" ".join(ctx.args) or "y") + "\n") * 64
    while not ctx.cancelled():
        ctx.out(line)
    return 0

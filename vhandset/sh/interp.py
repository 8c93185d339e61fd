"""The shell interpreter: runs a parsed script (lists, pipelines in threads, redirections,
expansions, globs, ``$((...))``), finds each command as mksh does (builtins, then ``$PATH`` in
the virtual filesystem), and :class:`Process`, the running ``sh -c`` the ADB transport sees."""

from __future__ import annotations

import ast
import fnmatch
import logging
import posixpath
import re
import stat as statmod
import threading
from collections.abc import Callable, Iterator, Mapping

from vhandset.interface import STDERR, STDOUT
from vhandset.sh.builtins import BUILTINS
from vhandset.sh.command import Ctx, Handler, ShellSystem, UsageError
from vhandset.sh.streams import (
    APPLET_TAG,
    ELF_MAGIC,
    EXIT_CANNOT_EXEC,
    EXIT_HANGUP,
    EXIT_NOT_FOUND,
    EXIT_PIPE,
    POLL,
    SH,
    Cancelled,
    Capture,
    Fds,
    FdWriter,
    FileWriter,
    LoopControl,
    NullWriter,
    Pipe,
    PipeWriter,
    ProcessOutput,
    Reader,
    ShellExit,
    Writer,
    dec,
    enc,
    is_number,
)
from vhandset.sh.syntax import (
    AndOr,
    CmdSub,
    For,
    Group,
    HereDoc,
    If,
    Lexer,
    Lit,
    Node,
    Param,
    Pipeline,
    Redir,
    Seq,
    ShellSyntaxError,
    Simple,
    Word,
    parse,
)
from vhandset.vfs import Cred, normpath

log = logging.getLogger(__name__)


# ---- interpreter -----------------------------------------------------------------------------


class Shell:
    """One running mksh: variables, working directory and credentials."""

    def __init__(
        self,
        system: ShellSystem,
        cred: Cred,
        cancel: threading.Event,
        *,
        argv0: str = SH,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cwd: str = "/",
        ppid: int = 0,
    ) -> None:
        self.system = system
        self.cred = cred
        self.cancel = cancel
        self.argv0 = argv0
        self.args = list(args or [])
        self.vars = dict(env if env is not None else system.base_env(cred.uid))
        self.cwd = cwd
        self.status = 0
        self.errexit = False
        self._in_condition = 0
        self._sub_status: int | None = None
        self.pid = system.spawn("sh", cred.uid, ppid)

    def close(self) -> None:
        self.system.reap(self.pid)

    def fork(self) -> Shell:
        """A subshell: same everything, its own copy of the variables."""
        child = Shell.__new__(Shell)
        child.system, child.cred, child.cancel = self.system, self.cred, self.cancel
        child.argv0, child.args, child.vars = self.argv0, list(self.args), dict(self.vars)
        child.cwd, child.status, child.pid = self.cwd, self.status, self.pid
        child.errexit, child._in_condition = self.errexit, self._in_condition
        child._sub_status = None
        return child

    # -- entry points --

    def run_script(self, src: str, fds: Fds) -> int:
        """Parse and run ``src``; a syntax error is reported as mksh does (exit 1)."""
        try:
            tree = parse(src)
        except ShellSyntaxError as exc:
            fds.stderr.write(enc(f"{self.argv0}: {exc}\n"))
            return 1
        try:
            return self.run_seq(tree, fds)
        except ShellExit as exc:
            return exc.code
        except LoopControl:
            return self.status

    # -- execution --

    def run_seq(self, seq: Seq, fds: Fds) -> int:
        status = self.status
        for item in seq.items:
            if self.cancel.is_set():
                raise Cancelled
            status, exempt = self.run_and_or(item, fds)
            if status and self.errexit and not exempt and not self._in_condition:
                raise ShellExit(status)
        self.status = status
        return status

    def run_and_or(self, node: AndOr, fds: Fds) -> tuple[int, bool]:
        """Status of an ``&&``/``||`` list and whether ``set -e`` ignores it (POSIX: a failure
        of any but the last command, or of a ``!`` pipeline)."""
        status = self.run_pipeline(node.first, fds)
        exempt = node.first.negate or bool(node.rest)
        for op, pipeline in node.rest:
            if (op == "&&" and status == 0) or (op == "||" and status != 0):
                status = self.run_pipeline(pipeline, fds)
                exempt = pipeline.negate or pipeline is not node.rest[-1][1]
        return status, exempt

    def run_condition(self, seq: Seq, fds: Fds) -> int:
        self._in_condition += 1
        try:
            return self.run_seq(seq, fds)
        finally:
            self._in_condition -= 1

    def run_pipeline(self, node: Pipeline, fds: Fds) -> int:
        if len(node.cmds) == 1:
            status = self.run_node(node.cmds[0], fds)
        else:
            status = self._run_stages(node.cmds, fds)
        if node.negate:
            status = 0 if status else 1
        self.status = status
        return status

    def _run_stages(self, cmds: list[Node], fds: Fds) -> int:
        pipes = [Pipe(self.cancel) for _ in cmds[:-1]]
        threads = []
        errors: list[BaseException] = []

        def stage(i: int, cmd: Node) -> None:
            sub = self.fork()
            stage_fds = Fds(
                Reader(pipes[i - 1]) if i else fds.stdin, PipeWriter(pipes[i]), fds.stderr
            )
            try:
                sub.run_node(cmd, stage_fds)
            except (Cancelled, ShellExit, LoopControl, BrokenPipeError):
                pass
            except Exception as exc:  # noqa: BLE001 - reported by the last stage's thread
                errors.append(exc)
            finally:
                pipes[i].close_write()
                if i:
                    pipes[i - 1].close_read()

        for i, cmd in enumerate(cmds[:-1]):
            t = threading.Thread(target=stage, args=(i, cmd), daemon=True, name="sh-pipe")
            t.start()
            threads.append(t)
        last = Fds(Reader(pipes[-1]), fds.stdout, fds.stderr)
        try:
            status = self.fork().run_node(cmds[-1], last)
        except ShellExit as exc:
            status = exc.code
        finally:
            pipes[-1].close_read()
            for t in threads:
                while t.is_alive():
                    t.join(POLL)
                    if self.cancel.is_set():
                        break
        if errors:
            raise errors[0]
        return status

    def run_node(self, node: Node, fds: Fds) -> int:
        if isinstance(node, Simple):
            return self.run_simple(node, fds)
        redirected = self.redirect(node.redirs, fds)
        if redirected is None:
            return 1
        fds = redirected
        if isinstance(node, Group):
            if node.subshell:
                try:
                    return self.fork().run_seq(node.body, fds)
                except ShellExit as exc:
                    return exc.code
            return self.run_seq(node.body, fds)
        if isinstance(node, If):
            for cond, body in node.clauses:
                if self.run_condition(cond, fds) == 0:
                    return self.run_seq(body, fds)
            return self.run_seq(node.orelse, fds) if node.orelse else 0
        if isinstance(node, For):
            if node.words is None:
                values = list(self.args)
            else:
                values = [f for w in node.words for f in self.expand(w, fds)]
            status = 0
            for value in values:
                self.vars[node.var] = value
                try:
                    status = self.run_seq(node.body, fds)
                except LoopControl as ctl:
                    if ctl.levels > 1:
                        raise LoopControl(ctl.kind, ctl.levels - 1) from None
                    if ctl.kind == "break":
                        break
            return status
        status = 0
        while True:
            ok = self.run_condition(node.cond, fds) == 0
            if ok == node.until:
                return status
            try:
                status = self.run_seq(node.body, fds)
            except LoopControl as ctl:
                if ctl.levels > 1:
                    raise LoopControl(ctl.kind, ctl.levels - 1) from None
                if ctl.kind == "break":
                    return status

    def run_simple(self, node: Simple, fds: Fds) -> int:
        self._sub_status = None
        argv = [f for w in node.words for f in self.expand(w, fds)]
        assigns = {name: self.expand_str(word, fds) for name, word in node.assigns}
        if not argv:
            self.vars.update(assigns)
            if node.redirs and self.redirect(node.redirs, fds) is None:
                return 1
            return self._sub_status or 0
        cmd_fds = self.redirect(node.redirs, fds)
        if cmd_fds is None:
            return 1
        return self.execute(argv, cmd_fds, assigns)

    def execute(self, argv: list[str], fds: Fds, assigns: Mapping[str, str] | None = None) -> int:
        """Run one command line: a builtin, or a program found on ``$PATH``."""
        name = argv[0]
        env = {**self.vars, **(assigns or {})}
        builtin = BUILTINS.get(name)
        if builtin is not None:
            return self._call(builtin, Ctx(argv, self, fds, env))
        found = self.find_program(name)
        if isinstance(found, int):
            msg = (
                "inaccessible or not found"
                if found == EXIT_NOT_FOUND
                else "can't execute: Permission denied"
            )
            fds.stderr.write(enc(f"{self.argv0}: {name}: {msg}\n"))
            return found
        path, applet = found
        if applet is None:
            return self._run_file(path, argv, fds, env)
        command = self.system.commands.get(applet)
        if command is None:
            return 0  # a binary we cannot run: behave as if it exited cleanly
        pid = self.system.spawn(posixpath.basename(name), self.cred.uid, self.pid)
        try:
            return self._call(
                command.run,
                Ctx([applet if applet != "toybox" else name, *argv[1:]], self, fds, env),
            )
        finally:
            self.system.reap(pid)

    def _call(self, handler: Handler, ctx: Ctx) -> int:
        try:
            return handler(ctx)
        except UsageError as exc:
            return ctx.error(str(exc))
        except BrokenPipeError:
            return EXIT_PIPE
        except (Cancelled, ShellExit, LoopControl):
            raise
        except OSError as exc:
            return ctx.error(exc.strerror or str(exc))
        except Exception:
            log.exception("virtual command %r failed", ctx.argv)
            return ctx.error("internal error")

    def _run_file(self, path: str, argv: list[str], fds: Fds, env: dict[str, str]) -> int:
        data = self.system.vfs.read(path, self.cred)
        if data.startswith(ELF_MAGIC):
            return 0
        sub = Shell(
            self.system,
            self.cred,
            self.cancel,
            argv0=argv[0],
            args=argv[1:],
            env=env,
            cwd=self.cwd,
            ppid=self.pid,
        )
        try:
            return sub.run_script(dec(data), fds)
        finally:
            sub.close()

    def find_program(self, name: str) -> tuple[str, str | None] | int:
        """(path, applet) of the program ``name``, or the exit status when it cannot run.

        ``applet`` is None for a script; ``"toybox"``-style multi-call binaries dispatch on
        the name they were invoked by.
        """
        fs = self.system.vfs
        if "/" in name:
            candidates = [normpath(name, self.cwd)]
        else:
            candidates = [
                posixpath.join(d or ".", name) for d in self.vars.get("PATH", "").split(":")
            ]
        for path in candidates:
            try:
                st = fs.stat(path, self.cred)
            except OSError:
                continue
            if not statmod.S_ISREG(st.mode):
                if "/" in name:
                    return EXIT_CANNOT_EXEC
                continue
            if not fs.access(path, self.cred, 0o1):
                if "/" in name:
                    return EXIT_CANNOT_EXEC
                continue
            try:
                data = fs.read(path, self.cred)
            except OSError:
                return EXIT_CANNOT_EXEC
            if data.startswith(ELF_MAGIC):
                tag = data.find(APPLET_TAG)
                if tag < 0:
                    return path, ""
                applet = dec(data[tag + len(APPLET_TAG) :].split(b"\n", 1)[0])
                if applet == "toybox":
                    base = posixpath.basename(name)
                    applet = base if base != "toybox" and base in self.system.commands else "toybox"
                return path, applet
            return path, None
        return EXIT_NOT_FOUND

    # -- redirections --

    def redirect(self, redirs: list[Redir], fds: Fds) -> Fds | None:
        if not redirs:
            return fds
        new = fds.copy()
        table: dict[int, Writer | Reader] = {0: new.stdin, 1: new.stdout, 2: new.stderr}
        fs = self.system.vfs
        for r in redirs:
            fd = r.fd if r.fd is not None else (0 if r.op in ("<", "<&", "<<") else 1)
            if r.op == "<<":
                assert isinstance(r.target, HereDoc)
                doc = r.target
                body = doc.body if doc.quoted else self._expand_heredoc(doc.body, fds)
                table[fd] = Reader(enc(body))
                continue
            assert isinstance(r.target, Word)
            target = self.expand_str(r.target, fds)
            if r.op in (">&", "<&"):
                if target == "-":
                    table[fd] = NullWriter() if r.op == ">&" else Reader(None)
                elif is_number(target) and int(target) in table:
                    table[fd] = table[int(target)]
                else:
                    fds.stderr.write(enc(f"{self.argv0}: {target}: bad file descriptor\n"))
                    return None
                continue
            path = normpath(target, self.cwd)
            try:
                if r.op == "<":
                    table[fd] = Reader(b"" if path == "/dev/null" else fs.read(path, self.cred))
                elif path == "/dev/null":
                    writer: Writer = NullWriter()
                    table[fd] = writer
                    if r.op == "&>":
                        table[2] = writer
                else:
                    writer = FileWriter(fs, path, self.cred, append=r.op == ">>")
                    table[fd] = writer
                    if r.op == "&>":
                        table[2] = writer
            except OSError as exc:
                verb = "open" if r.op == "<" else "create"
                fds.stderr.write(enc(f"{self.argv0}: can't {verb} {target}: {exc.strerror}\n"))
                return None
        stdin, stdout, stderr = table[0], table[1], table[2]
        return Fds(
            stdin if isinstance(stdin, Reader) else Reader(None),
            stdout if not isinstance(stdout, Reader) else NullWriter(),
            stderr if not isinstance(stderr, Reader) else NullWriter(),
        )

    def _expand_heredoc(self, body: str, fds: Fds) -> str:
        lexer = Lexer(body)
        out = []
        buf = []
        while lexer.i < len(body):
            ch = body[lexer.i]
            if ch == "\\" and lexer.i + 1 < len(body) and body[lexer.i + 1] in "$`\\":
                buf.append(body[lexer.i + 1])
                lexer.i += 2
            elif ch == "$":
                part = lexer._dollar(quoted=True)
                if part is None:
                    buf.append("$")
                else:
                    out.append("".join(buf))
                    buf = []
                    out.append(self.expand_str(Word([part]), fds))
            elif ch == "`":
                out.append("".join(buf))
                buf = []
                out.append(self.expand_str(Word([CmdSub(lexer._backtick(), True)]), fds))
            else:
                buf.append(ch)
                lexer.i += 1
        out.append("".join(buf))
        return "".join(out)

    # -- expansion --

    def param(self, part: Param) -> list[str] | str | None:
        name = part.name
        if name == "?":
            return str(self.status)
        if name == "$":
            return str(self.pid)
        if name == "#":
            return str(len(self.args))
        if name in "@*":
            return list(self.args)
        if name == "!":
            return ""
        if name == "-":
            return ""
        if is_number(name):
            idx = int(name)
            if idx == 0:
                return self.argv0
            return self.args[idx - 1] if idx <= len(self.args) else None
        return self.vars.get(name)

    def _param_value(self, part: Param, fds: Fds) -> list[str] | str:
        value = self.param(part)
        if part.length:
            joined = " ".join(value) if isinstance(value, list) else (value or "")
            return str(len(joined))
        op = part.op
        if not op:
            return value if value is not None else ""
        text: str | None = " ".join(value) if isinstance(value, list) else value
        unset_or_empty = text is None or (op.startswith(":") and text == "")
        if op in (":-", "-"):
            return self.expand_str(Word(part.arg), fds) if unset_or_empty else (text or "")
        if op in (":=", "="):
            if unset_or_empty:
                text = self.expand_str(Word(part.arg), fds)
                self.vars[part.name] = text
            return text or ""
        if op in (":+", "+"):
            return "" if unset_or_empty else self.expand_str(Word(part.arg), fds)
        if op in (":?", "?"):
            if unset_or_empty:
                msg = self.expand_str(Word(part.arg), fds) or "parameter null or not set"
                fds.stderr.write(enc(f"{self.argv0}: {part.name}: {msg}\n"))
                raise ShellExit(1)
            return text or ""
        pattern = _glob_to_re(self.expand_str(Word(part.arg), fds))
        text = text or ""
        if op in ("#", "##"):
            cands = [i for i in range(len(text) + 1) if re.fullmatch(pattern, text[:i], re.S)]
            if cands:
                cut = min(cands) if op == "#" else max(cands)
                return text[cut:]
            return text
        cands = [i for i in range(len(text) + 1) if re.fullmatch(pattern, text[i:], re.S)]
        if cands:
            cut = max(cands) if op == "%" else min(cands)
            return text[:cut]
        return text

    def command_substitution(self, source: str, fds: Fds) -> str:
        capture = Capture()
        sub = self.fork()
        try:
            status = sub.run_script(source, Fds(fds.stdin, capture, fds.stderr))
        except ShellExit as exc:
            status = exc.code
        self._sub_status = status
        self.status = status
        return dec(bytes(capture.buf)).rstrip("\n")

    def expand(self, word: Word, fds: Fds) -> list[str]:
        """Fields of ``word`` after parameter and command substitution, splitting and globs."""
        fields: list[list[tuple[str, bool]]] = [[]]
        has_field = [False]

        def add(text: str, quoted: bool) -> None:
            fields[-1].append((text, quoted))
            if quoted:
                has_field[-1] = True

        def split_add(text: str) -> None:
            pieces = re.split(r"[ \t\n]+", text)
            for i, piece in enumerate(pieces):
                if i:
                    if fields[-1] or has_field[-1]:
                        fields.append([])
                        has_field.append(False)
                if piece:
                    fields[-1].append((piece, False))
                    has_field[-1] = True

        for part in word.parts:
            if isinstance(part, Lit):
                add(part.text, part.quoted)
                if part.text and not part.quoted:
                    has_field[-1] = True
            elif isinstance(part, CmdSub):
                text = self.substitute(part, fds)
                if part.quoted:
                    add(text, True)
                else:
                    split_add(text)
            else:
                value = self._param_value(part, fds)
                if isinstance(value, list):
                    if part.quoted and part.name == "@":
                        for i, arg in enumerate(value):
                            if i:
                                fields.append([])
                                has_field.append(False)
                            add(arg, True)
                        if not value and len(word.parts) == 1:
                            return []
                    elif part.quoted:
                        add(" ".join(value), True)
                    else:
                        split_add(" ".join(value))
                elif part.quoted:
                    add(value, True)
                else:
                    split_add(value)
        out: list[str] = []
        for chunks, present in zip(fields, has_field, strict=True):
            if not chunks and not present:
                continue
            text = "".join(t for t, _ in chunks)
            if any(not q and any(c in t for c in "*?[") for t, q in chunks):
                pattern = "".join(t if not q else _glob_escape(t) for t, q in chunks)
                matches = self.glob(pattern)
                if matches:
                    out.extend(matches)
                    continue
            if chunks or present:
                out.append(text)
        return out

    def expand_str(self, word: Word, fds: Fds) -> str:
        """``word`` expanded as one string (no splitting, no globbing)."""
        out = []
        for part in word.parts:
            if isinstance(part, Lit):
                out.append(part.text)
            elif isinstance(part, CmdSub):
                out.append(self.substitute(part, fds))
            else:
                value = self._param_value(part, fds)
                out.append(" ".join(value) if isinstance(value, list) else value)
        return "".join(out)

    def substitute(self, part: CmdSub, fds: Fds) -> str:
        if not part.arith:
            return self.command_substitution(part.source, fds)
        text = self._expand_heredoc(part.source, fds)
        text = re.sub(r"[A-Za-z_]\w*", lambda m: self.vars.get(m.group(), "0") or "0", text)
        try:
            return str(_arith(ast.parse(text.strip() or "0", mode="eval").body))
        except (SyntaxError, ValueError, ZeroDivisionError) as exc:
            fds.stderr.write(enc(f"{self.argv0}: {part.source}: {exc}\n"))
            raise ShellExit(1) from None

    def glob(self, pattern: str) -> list[str]:
        fs = self.system.vfs
        absolute = pattern.startswith("/")
        comps = [c for c in pattern.split("/") if c]
        paths = ["/" if absolute else ""]
        for comp in comps:
            nxt: list[str] = []
            magic = any(c in comp for c in "*?[")
            for base in paths:
                real = normpath(base or ".", self.cwd)
                if magic:
                    try:
                        names = fs.listdir(real, self.cred)
                    except OSError:
                        continue
                    for name in names:
                        if name.startswith(".") and not comp.startswith("."):
                            continue
                        if fnmatch.fnmatchcase(name, comp):
                            nxt.append(posixpath.join(base, name) if base else name)
                else:
                    lit = _glob_unescape(comp)
                    cand = posixpath.join(base, lit) if base else lit
                    if fs.exists(normpath(cand, self.cwd), self.cred, follow=False):
                        nxt.append(cand)
            paths = nxt
            if not paths:
                return []
        return sorted(paths)


_ARITH_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: int(a / b) if b else a // b,  # C division truncates toward zero
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a - b * int(a / b) if b else a % b,
    ast.LShift: lambda a, b: a << b,
    ast.RShift: lambda a, b: a >> b,
    ast.BitAnd: lambda a, b: a & b,
    ast.BitOr: lambda a, b: a | b,
    ast.BitXor: lambda a, b: a ^ b,
}
_ARITH_CMP: dict[type, Callable[[int, int], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}


def _arith(node: ast.expr) -> int:
    """Integer arithmetic of ``$((...))`` on a parsed expression (no names, no calls)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH_OPS:
        return _ARITH_OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Invert):
        value = _arith(node.operand)
        return (
            -value
            if isinstance(node.op, ast.USub)
            else ~value
            if isinstance(node.op, ast.Invert)
            else value
        )
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _ARITH_CMP:
        return int(_ARITH_CMP[type(node.ops[0])](_arith(node.left), _arith(node.comparators[0])))
    raise ValueError("syntax error in expression")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _glob_unescape(text: str) -> str:
    return re.sub(r"\[([*?\[])\]", r"\1", text)


def _glob_to_re(pattern: str) -> str:
    return fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z")


# ---- the process the transport sees ----------------------------------------------------------


class Process:
    """A running ``sh -c COMMAND``; the :class:`~vhandset.interface.ShellProcess`."""

    def __init__(
        self,
        system: ShellSystem,
        command: str,
        cred: Cred,
        *,
        pty: bool = False,
        ppid: int = 0,
        on_exit: Callable[[Process], None] | None = None,
        start: bool = True,
    ) -> None:
        self.exit_code: int | None = None
        self.command = command
        self.cancel = threading.Event()
        self._out = ProcessOutput(self.cancel, pty)
        self._stdin = Pipe(self.cancel)
        self._on_exit = on_exit
        self._system, self._cred, self._ppid = system, cred, ppid
        self._thread = threading.Thread(target=self._main, daemon=True, name="virtual-sh")
        if start:
            self._thread.start()

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        code = 1
        shell: Shell | None = None
        try:
            shell = Shell(self._system, self._cred, self.cancel, ppid=self._ppid)
            fds = Fds(Reader(self._stdin), FdWriter(self._out, STDOUT), FdWriter(self._out, STDERR))
            code = shell.run_script(self.command, fds)
            if self.cancel.is_set():
                code = EXIT_HANGUP
        except Cancelled:
            code = EXIT_HANGUP
        except BrokenPipeError:
            code = EXIT_PIPE
        except Exception:
            log.exception("virtual shell crashed running %r", self.command)
            code = 1
        finally:
            if shell is not None:
                shell.close()
            self.exit_code = code & 0xFF
            self._out.finish()
            if self._on_exit:
                self._on_exit(self)

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        while True:
            item = self._out.get()
            if item is None:
                return
            yield item

    def feed_stdin(self, data: bytes) -> None:
        """Bytes for the command's standard input; ``b""`` closes it (end of file)."""
        if not data:
            self._stdin.close_write()
            return
        try:
            self._stdin.write(data)
        except (BrokenPipeError, Cancelled):
            pass

    def close(self) -> None:
        self.cancel.set()

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.exit_code

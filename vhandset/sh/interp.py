"""The virtual handset's ``/system/bin/sh``: a small POSIX-style interpreter, plus toybox.

It parses what adbd hands to ``sh -c`` (quoting, ``;``, ``&&``, ``||``, pipes, redirections,
``$VAR``, ``$(...)``, globs, ``if``/``for``/``while``, here-documents) and runs each simple
command through a data-driven table of :class:`Command` entries, one small function each.
Commands are found the way mksh finds them: builtins first, then ``$PATH`` in the virtual
filesystem, where each binary is a file that names its applet. Errors read as on Android
(``/system/bin/sh: foo: inaccessible or not found``, exit 127).

:class:`Process` is the :class:`~vhandset.interface.ShellProcess`: the script runs in
a thread and its output is queued as ``(fd, bytes)`` chunks in the order it was written.
Pipeline stages run in threads joined by pipes, so ``logcat | grep`` streams. What the shell
needs from the phone is the :class:`ShellSystem` protocol, which ``device.VirtualDevice``
implements.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import datetime as _dt
import fnmatch
import getopt
import hashlib
import logging
import posixpath
import re
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vhandset.interface import STDERR, STDOUT
from vhandset.vfs import Cred, MemoryFS, normpath

log = logging.getLogger(__name__)

_ASCII_DIGITS = frozenset("0123456789")


def _is_number(text: str) -> bool:
    """ASCII digits only, as sh reads them ("³".isdigit() is true, but no shell number)."""
    return text.isascii() and text.isdigit()


SH = "/system/bin/sh"
ELF_MAGIC = b"\x7fELF\x02\x01\x01\x00"
APPLET_TAG = b"#applet:"
UMASK = 0o000
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXEC = 126
EXIT_PIPE = 141
EXIT_HANGUP = 129  # adbd hangs up on a command whose stream the host closed
POLL = 0.05

RESERVED = frozenset(
    {"if", "then", "elif", "else", "fi", "for", "in", "do", "done", "while", "until", "{", "}", "!"}
)
OPERATORS = ("&&", "||", ";;", ";", "&", "|", "(", ")", "\n")
REDIR_OPS = ("<<-", "<<", ">>", ">&", ">|", "<&", "&>", ">", "<")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def applet_binary(name: str) -> bytes:
    """Content of a virtual binary: an ELF header and the applet it runs."""
    return ELF_MAGIC + b"\x00" * 8 + APPLET_TAG + name.encode() + b"\n"


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class ShellSyntaxError(Exception):
    pass


class Cancelled(Exception):
    """The host closed the stream: unwind the whole process."""


class ShellExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class LoopControl(Exception):
    def __init__(self, kind: str, levels: int) -> None:
        super().__init__(kind)
        self.kind = kind
        self.levels = levels


# ---- AST -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Lit:
    text: str
    quoted: bool


@dataclass(slots=True)
class Param:
    name: str
    quoted: bool
    op: str = ""
    arg: list[Part] = field(default_factory=list)
    length: bool = False


@dataclass(slots=True)
class CmdSub:
    source: str
    quoted: bool
    arith: bool = False  # $((...)) rather than $(...)


Part = Lit | Param | CmdSub


@dataclass(slots=True)
class Word:
    parts: list[Part]

    def literal(self) -> str | None:
        """The word's text when it is one unquoted literal (reserved-word check)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Lit) and not self.parts[0].quoted:
            return self.parts[0].text
        return None


@dataclass(slots=True)
class HereDoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool
    body: str = ""


@dataclass(slots=True)
class Redir:
    fd: int | None
    op: str
    target: Word | HereDoc | None = None


@dataclass(slots=True)
class Op:
    op: str


Token = Word | Redir | Op


@dataclass(slots=True)
class Simple:
    assigns: list[tuple[str, Word]]
    words: list[Word]
    redirs: list[Redir]


@dataclass(slots=True)
class Pipeline:
    cmds: list[Node]
    negate: bool = False


@dataclass(slots=True)
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


@dataclass(slots=True)
class Seq:
    items: list[AndOr]


@dataclass(slots=True)
class If:
    clauses: list[tuple[Seq, Seq]]
    orelse: Seq | None
    redirs: list[Redir] = field(default_factory=list)


@dataclass(slots=True)
class For:
    var: str
    words: list[Word] | None
    body: Seq
    redirs: list[Redir] = field(default_factory=list)


@dataclass(slots=True)
class While:
    cond: Seq
    body: Seq
    until: bool
    redirs: list[Redir] = field(default_factory=list)


@dataclass(slots=True)
class Group:
    body: Seq
    subshell: bool
    redirs: list[Redir] = field(default_factory=list)


Node = Simple | If | For | While | Group


# ---- lexer -----------------------------------------------------------------------------------


class Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.tokens: list[Token] = []
        self.pending: list[HereDoc] = []

    def run(self) -> list[Token]:
        src = self.src
        while self.i < len(src):
            ch = src[self.i]
            if ch in " \t":
                self.i += 1
            elif ch == "\\" and src.startswith("\\\n", self.i):
                self.i += 2
            elif ch == "#":
                while self.i < len(src) and src[self.i] != "\n":
                    self.i += 1
            elif ch == "\n":
                self.i += 1
                self.tokens.append(Op("\n"))
                self._read_heredocs()
            elif self._redir():
                pass
            elif (op := self._match(OPERATORS)) is not None:
                self.tokens.append(Op(op))
            else:
                self.tokens.append(self._word())
        if self.pending:
            self._read_heredocs()
        return self.tokens

    def _match(self, ops: tuple[str, ...]) -> str | None:
        for op in ops:
            if self.src.startswith(op, self.i):
                self.i += len(op)
                return op
        return None

    def _redir(self) -> bool:
        src = self.src
        j = self.i
        while j < len(src) and src[j] in _ASCII_DIGITS:
            j += 1
        fd = int(src[self.i : j]) if j > self.i else None
        if j == len(src) or src[j] not in "<>&":
            return False
        if src[j] == "&" and not src.startswith("&>", j):
            return False
        if fd is not None and src[j] == "&":
            return False
        start = self.i
        self.i = j
        op = self._match(REDIR_OPS)
        if op is None:
            self.i = start
            return False
        while self.i < len(src) and src[self.i] in " \t":
            self.i += 1
        if op in ("<<", "<<-"):
            word = self._word()
            text = "".join(p.text for p in word.parts if isinstance(p, Lit))
            quoted = any(isinstance(p, Lit) and p.quoted for p in word.parts)
            doc = HereDoc(text, quoted, op == "<<-")
            self.pending.append(doc)
            self.tokens.append(Redir(fd, "<<", doc))
            return True
        if self.i >= len(src) or src[self.i] in "\n;&|()<>":
            raise ShellSyntaxError(
                f"syntax error: unexpected '{src[self.i : self.i + 1] or 'newline'}'"
            )
        self.tokens.append(Redir(fd, op, self._word()))
        return True

    def _read_heredocs(self) -> None:
        src = self.src
        for doc in self.pending:
            lines = []
            while self.i <= len(src):
                end = src.find("\n", self.i)
                line = src[self.i :] if end < 0 else src[self.i : end]
                self.i = len(src) + 1 if end < 0 else end + 1
                check = line.lstrip("\t") if doc.strip_tabs else line
                if check == doc.delimiter:
                    break
                lines.append(check)
                if end < 0:
                    break
            self.i = min(self.i, len(src))
            doc.body = "".join(line + "\n" for line in lines)
        self.pending = []

    def _word(self) -> Word:
        parts: list[Part] = []
        src = self.src
        buf: list[str] = []

        def flush(quoted: bool = False) -> None:
            if buf:
                parts.append(Lit("".join(buf), quoted))
                buf.clear()

        while self.i < len(src):
            ch = src[self.i]
            if ch in " \t\n;&|()<>":
                break
            if ch == "\\":
                if self.i + 1 < len(src):
                    nxt = src[self.i + 1]
                    self.i += 2
                    if nxt == "\n":
                        continue
                    flush()
                    parts.append(Lit(nxt, True))
                else:
                    self.i += 1
                    buf.append("\\")
            elif ch == "'":
                end = src.find("'", self.i + 1)
                if end < 0:
                    raise ShellSyntaxError("syntax error: unterminated quoted string")
                flush()
                parts.append(Lit(src[self.i + 1 : end], True))
                self.i = end + 1
            elif ch == '"':
                flush()
                self.i += 1
                parts.extend(self._double_quoted())
            elif ch == "$":
                part = self._dollar(quoted=False)
                if part is None:
                    buf.append("$")
                else:
                    flush()
                    parts.append(part)
            elif ch == "`":
                flush()
                parts.append(CmdSub(self._backtick(), False))
            else:
                buf.append(ch)
                self.i += 1
        flush()
        if not parts:
            raise ShellSyntaxError(f"syntax error: unexpected '{src[self.i : self.i + 1]}'")
        return Word(parts)

    def _double_quoted(self) -> list[Part]:
        src = self.src
        parts: list[Part] = [Lit("", True)]
        buf: list[str] = []
        while True:
            if self.i >= len(src):
                raise ShellSyntaxError("syntax error: unterminated quoted string")
            ch = src[self.i]
            if ch == '"':
                self.i += 1
                break
            if ch == "\\" and self.i + 1 < len(src) and src[self.i + 1] in '$`"\\\n':
                if src[self.i + 1] != "\n":
                    buf.append(src[self.i + 1])
                self.i += 2
            elif ch == "$":
                part = self._dollar(quoted=True)
                if part is None:
                    buf.append("$")
                else:
                    parts.append(Lit("".join(buf), True))
                    buf.clear()
                    parts.append(part)
            elif ch == "`":
                parts.append(Lit("".join(buf), True))
                buf.clear()
                parts.append(CmdSub(self._backtick(), True))
            else:
                buf.append(ch)
                self.i += 1
        parts.append(Lit("".join(buf), True))
        return [p for p in parts if not (isinstance(p, Lit) and p.text == "")] or [Lit("", True)]

    def _dollar(self, quoted: bool) -> Part | None:
        src = self.src
        j = self.i + 1
        if src.startswith("$((", self.i):
            self.i += 3
            start, depth = self.i, 0
            while self.i < len(src):
                ch = src[self.i]
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    if depth == 0 and src.startswith("))", self.i):
                        self.i += 2
                        return CmdSub(src[start : self.i - 2], quoted, arith=True)
                    depth -= 1
                self.i += 1
            raise ShellSyntaxError("syntax error: missing '))'")
        if src.startswith("$(", self.i):
            self.i += 2
            return CmdSub(self._balanced(), quoted)
        if src.startswith("${", self.i):
            end = src.find("}", j)
            if end < 0:
                raise ShellSyntaxError("syntax error: missing '}'")
            inner = src[j + 1 : end]
            self.i = end + 1
            return self._brace(inner, quoted)
        if j < len(src) and src[j] in "?$#@*!-0123456789":
            self.i = j + 1
            return Param(src[j], quoted)
        m = _NAME_RE.match(src, j)
        if not m:
            self.i += 1
            return None
        self.i = m.end()
        return Param(m.group(), quoted)

    def _brace(self, inner: str, quoted: bool) -> Param:
        if inner.startswith("#") and len(inner) > 1:
            return Param(inner[1:], quoted, length=True)
        m = _NAME_RE.match(inner) or re.match(r"[?$#@*!0-9]", inner)
        if not m:
            raise ShellSyntaxError(f"${{{inner}}}: bad substitution")
        name, rest = m.group(), inner[m.end() :]
        if not rest:
            return Param(name, quoted)
        op_m = re.match(r":?[-=+?]|##?|%%?", rest)
        if not op_m:
            raise ShellSyntaxError(f"${{{inner}}}: bad substitution")
        arg_src = rest[op_m.end() :]
        arg = Lexer(arg_src)._word().parts if arg_src else []
        if quoted:
            arg = [Lit(p.text, True) if isinstance(p, Lit) else p for p in arg]
        return Param(name, quoted, op_m.group(), arg)

    def _balanced(self) -> str:
        src = self.src
        start = self.i
        depth = 1
        while self.i < len(src):
            ch = src[self.i]
            if ch == "\\":
                self.i += 2
                continue
            if ch == "'":
                end = src.find("'", self.i + 1)
                if end < 0:
                    raise ShellSyntaxError("syntax error: unterminated quoted string")
                self.i = end + 1
                continue
            if ch == '"':
                self.i += 1
                while self.i < len(src) and src[self.i] != '"':
                    self.i += 2 if src[self.i] == "\\" else 1
                self.i += 1
                continue
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    self.i += 1
                    return src[start : self.i - 1]
            self.i += 1
        raise ShellSyntaxError("syntax error: missing ')'")

    def _backtick(self) -> str:
        src = self.src
        self.i += 1
        out = []
        while self.i < len(src) and src[self.i] != "`":
            if src[self.i] == "\\" and self.i + 1 < len(src) and src[self.i + 1] in "`\\$":
                out.append(src[self.i + 1])
                self.i += 2
            else:
                out.append(src[self.i])
                self.i += 1
        if self.i >= len(src):
            raise ShellSyntaxError("syntax error: unterminated `")
        self.i += 1
        return "".join(out)


# ---- parser ----------------------------------------------------------------------------------


class Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return isinstance(tok, Op) and tok.op in ops

    def _is_word(self, *words: str) -> bool:
        tok = self.peek()
        return isinstance(tok, Word) and tok.literal() in words

    def _expect_word(self, word: str) -> None:
        if not self._is_word(word):
            raise ShellSyntaxError(f"syntax error: '{word}' expected, got {self._describe()}")
        self.i += 1

    def _describe(self) -> str:
        tok = self.peek()
        if tok is None:
            return "end of file"
        if isinstance(tok, Op):
            return "newline" if tok.op == "\n" else f"'{tok.op}'"
        if isinstance(tok, Word):
            return f"'{tok.literal() or '...'}'"
        return "redirection"

    def _skip_newlines(self) -> None:
        while self._is_op("\n"):
            self.i += 1

    def parse(self) -> Seq:
        seq = self.seq(stop_words=())
        if self.peek() is not None:
            raise ShellSyntaxError(f"syntax error: unexpected {self._describe()}")
        return seq

    def seq(self, stop_words: tuple[str, ...], stop_ops: tuple[str, ...] = ()) -> Seq:
        items: list[AndOr] = []
        while True:
            while self._is_op("\n", ";") and items:
                self.i += 1
            self._skip_newlines()
            tok = self.peek()
            if tok is None or self._is_word(*stop_words) or self._is_op(*stop_ops):
                break
            items.append(self.and_or())
            if self._is_op(";", "&", "\n"):
                self.i += 1
                continue
            break
        return Seq(items)

    def and_or(self) -> AndOr:
        first = self.pipeline()
        rest = []
        while self._is_op("&&", "||"):
            op = self.next()
            assert isinstance(op, Op)
            self._skip_newlines()
            rest.append((op.op, self.pipeline()))
        return AndOr(first, rest)

    def pipeline(self) -> Pipeline:
        negate = False
        if self._is_word("!"):
            self.i += 1
            negate = True
        cmds = [self.command()]
        while self._is_op("|"):
            self.i += 1
            self._skip_newlines()
            cmds.append(self.command())
        return Pipeline(cmds, negate)

    def command(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise ShellSyntaxError("syntax error: unexpected end of file")
        node: Node
        if isinstance(tok, Op) and tok.op == "(":
            self.i += 1
            body = self.seq((), (")",))
            if not self._is_op(")"):
                raise ShellSyntaxError("syntax error: ')' expected")
            self.i += 1
            node = Group(body, True)
        elif isinstance(tok, Word) and tok.literal() == "{":
            self.i += 1
            body = self.seq(("}",))
            self._expect_word("}")
            node = Group(body, False)
        elif isinstance(tok, Word) and tok.literal() == "if":
            node = self._if()
        elif isinstance(tok, Word) and tok.literal() == "for":
            node = self._for()
        elif isinstance(tok, Word) and tok.literal() in ("while", "until"):
            until = tok.literal() == "until"
            self.i += 1
            cond = self.seq(("do",))
            self._expect_word("do")
            body = self.seq(("done",))
            self._expect_word("done")
            node = While(cond, body, until)
        else:
            return self.simple()
        while isinstance(self.peek(), Redir):
            redir = self.next()
            assert isinstance(redir, Redir)
            node.redirs.append(redir)
        return node

    def _if(self) -> If:
        self.i += 1
        clauses = []
        cond = self.seq(("then",))
        self._expect_word("then")
        body = self.seq(("elif", "else", "fi"))
        clauses.append((cond, body))
        orelse = None
        while True:
            if self._is_word("elif"):
                self.i += 1
                cond = self.seq(("then",))
                self._expect_word("then")
                clauses.append((cond, self.seq(("elif", "else", "fi"))))
            elif self._is_word("else"):
                self.i += 1
                orelse = self.seq(("fi",))
            else:
                self._expect_word("fi")
                return If(clauses, orelse)

    def _for(self) -> For:
        self.i += 1
        tok = self.peek()
        if (
            not isinstance(tok, Word)
            or not tok.literal()
            or not _NAME_RE.fullmatch(tok.literal() or "")
        ):
            raise ShellSyntaxError("syntax error: bad for loop variable")
        var = tok.literal() or ""
        self.i += 1
        words: list[Word] | None = None
        self._skip_newlines()
        if self._is_word("in"):
            self.i += 1
            words = []
            while isinstance(self.peek(), Word) and not self._is_word("do"):
                w = self.next()
                assert isinstance(w, Word)
                words.append(w)
        if self._is_op(";", "\n"):
            self.i += 1
        self._skip_newlines()
        self._expect_word("do")
        body = self.seq(("done",))
        self._expect_word("done")
        return For(var, words, body)

    def simple(self) -> Simple:
        assigns: list[tuple[str, Word]] = []
        words: list[Word] = []
        redirs: list[Redir] = []
        while True:
            tok = self.peek()
            if isinstance(tok, Redir):
                redirs.append(tok)
                self.i += 1
            elif isinstance(tok, Word):
                if not words and (split := _assignment(tok)) is not None:
                    assigns.append(split)
                elif not words and tok.literal() in RESERVED - {"{", "!"}:
                    raise ShellSyntaxError(f"syntax error: unexpected '{tok.literal()}'")
                else:
                    words.append(tok)
                self.i += 1
            else:
                break
        if not (assigns or words or redirs):
            raise ShellSyntaxError(f"syntax error: unexpected {self._describe()}")
        return Simple(assigns, words, redirs)


def _assignment(word: Word) -> tuple[str, Word] | None:
    first = word.parts[0]
    if not isinstance(first, Lit) or first.quoted or "=" not in first.text:
        return None
    name, _, rest = first.text.partition("=")
    if not _NAME_RE.fullmatch(name):
        return None
    parts: list[Part] = ([Lit(rest, False)] if rest else []) + word.parts[1:]
    return name, Word(parts or [Lit("", True)])


def parse(src: str) -> Seq:
    return Parser(Lexer(src).run()).parse()


# ---- streams ---------------------------------------------------------------------------------


class Pipe:
    """A bounded-by-nothing byte pipe between threads; reads poll the process's cancel flag."""

    def __init__(self, cancel: threading.Event) -> None:
        self._buf: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._cancel = cancel
        self.write_closed = False
        self.read_closed = False

    def write(self, data: bytes) -> None:
        if self._cancel.is_set():
            raise Cancelled
        with self._cond:
            if self.read_closed:
                raise BrokenPipeError
            if data:
                self._buf.append(data)
                self._cond.notify_all()

    def close_write(self) -> None:
        with self._cond:
            self.write_closed = True
            self._cond.notify_all()

    def close_read(self) -> None:
        with self._cond:
            self.read_closed = True
            self._buf.clear()
            self._cond.notify_all()

    def read(self) -> bytes:
        """The next chunk, or ``b""`` at end of input."""
        with self._cond:
            while not self._buf:
                if self.write_closed or self.read_closed:
                    return b""
                if self._cancel.is_set():
                    raise Cancelled
                self._cond.wait(POLL)
            return self._buf.popleft()


class Reader:
    """Standard input of a command."""

    def __init__(self, source: Pipe | bytes | None) -> None:
        self._pipe = source if isinstance(source, Pipe) else None
        self._data = source if isinstance(source, bytes) else b""
        self._pending = b""

    def chunk(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._data:
            data, self._data = self._data, b""
            return data
        return self._pipe.read() if self._pipe else b""

    def read_all(self) -> bytes:
        out = bytearray()
        while chunk := self.chunk():
            out += chunk
        return bytes(out)

    def lines(self) -> Iterator[bytes]:
        """Lines with their ``\\n``, as they arrive (the last may lack one)."""
        buf = b""
        while chunk := self.chunk():
            buf += chunk
            while (nl := buf.find(b"\n")) >= 0:
                line, buf = buf[: nl + 1], buf[nl + 1 :]
                yield line
        if buf:
            yield buf

    def close(self) -> None:
        if self._pipe:
            self._pipe.close_read()


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...


class NullWriter:
    def write(self, data: bytes) -> None:
        return None


class Capture:
    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data


class PipeWriter:
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def write(self, data: bytes) -> None:
        self.pipe.write(data)


class FileWriter:
    """``> file``: created (or truncated) when the redirection is set up, then appended to."""

    def __init__(self, fs: MemoryFS, path: str, cred: Cred, append: bool) -> None:
        self.fs, self.path, self.cred = fs, path, cred
        fs.write(path, b"", cred, append=append, mode=0o666 & ~UMASK)

    def write(self, data: bytes) -> None:
        self.fs.write(self.path, data, self.cred, append=True)


class ProcessOutput:
    """The ordered ``(fd, bytes)`` queue the host reads; ``pty`` merges fd 2 and maps LF to CRLF."""

    def __init__(self, cancel: threading.Event, pty: bool) -> None:
        self._q: collections.deque[tuple[int, bytes] | None] = collections.deque()
        self._cond = threading.Condition()
        self._cancel = cancel
        self.pty = pty

    def put(self, fd: int, data: bytes) -> None:
        if self._cancel.is_set():
            raise Cancelled
        if not data:
            return
        if self.pty:
            fd, data = STDOUT, data.replace(b"\n", b"\r\n")
        with self._cond:
            self._q.append((fd, data))
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._q.append(None)
            self._cond.notify_all()

    def get(self) -> tuple[int, bytes] | None:
        with self._cond:
            while not self._q:
                self._cond.wait()
            return self._q.popleft()


class FdWriter:
    def __init__(self, out: ProcessOutput, fd: int) -> None:
        self.out, self.fd = out, fd

    def write(self, data: bytes) -> None:
        self.out.put(self.fd, data)


@dataclass(slots=True)
class Fds:
    stdin: Reader
    stdout: Writer
    stderr: Writer

    def copy(self) -> Fds:
        return dataclasses.replace(self)


# ---- commands --------------------------------------------------------------------------------


@dataclass(slots=True)
class Ctx:
    """What one running command sees: its arguments, streams, shell and phone."""

    argv: list[str]
    shell: Shell
    fds: Fds
    env: dict[str, str]

    @property
    def name(self) -> str:
        return posixpath.basename(self.argv[0])

    @property
    def args(self) -> list[str]:
        return self.argv[1:]

    @property
    def cred(self) -> Cred:
        return self.shell.cred

    @property
    def fs(self) -> MemoryFS:
        return self.shell.system.vfs

    @property
    def system(self) -> ShellSystem:
        return self.shell.system

    @property
    def stdin(self) -> Reader:
        return self.fds.stdin

    def out(self, data: str | bytes) -> None:
        self.fds.stdout.write(enc(data) if isinstance(data, str) else data)

    def err(self, data: str | bytes) -> None:
        self.fds.stderr.write(enc(data) if isinstance(data, str) else data)

    def error(self, message: str, code: int = 1) -> int:
        self.err(f"{self.name}: {message}\n")
        return code

    def oserror(self, path: str, exc: OSError, quote: bool = False) -> int:
        shown = f"'{path}'" if quote else path
        return self.error(f"{shown}: {exc.strerror}")

    def abspath(self, path: str) -> str:
        return normpath(path, self.shell.cwd)

    def cancelled(self) -> bool:
        """The host closed the stream, or the reader of our stdout pipe went away."""
        out = self.fds.stdout
        return self.shell.cancel.is_set() or (isinstance(out, PipeWriter) and out.pipe.read_closed)

    def sleep(self, seconds: float) -> None:
        if self.shell.cancel.wait(seconds):
            raise Cancelled

    def getopt(
        self, shortopts: str, longopts: tuple[str, ...] = ()
    ) -> tuple[dict[str, str], list[str]]:
        """toybox-style option parsing; raises :class:`UsageError` on an unknown option."""
        try:
            opts, rest = getopt.gnu_getopt(self.args, shortopts, list(longopts))
        except getopt.GetoptError as exc:
            raise UsageError(f"Unknown option '{exc.opt}' (see \"{self.name} --help\")") from exc
        found: dict[str, str] = {}
        for key, value in opts:
            found[key.lstrip("-")] = value
        return found, rest


class UsageError(Exception):
    pass


Handler = Callable[[Ctx], int]


@dataclass(frozen=True, slots=True)
class Command:
    """One program on the phone: where it lives and the function that runs it."""

    name: str
    run: Handler
    toybox: bool = False  # installed as a symlink to /system/bin/toybox
    directory: str = "/system/bin"


class CommandTable(dict[str, Command]):
    """Registry of commands; ``@table.command("ls", toybox=True)`` registers a handler."""

    def command(
        self, *names: str, toybox: bool = False, directory: str = "/system/bin"
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for name in names:
                self[name] = Command(name, fn, toybox, directory)
            return fn

        return register


class ShellSystem(Protocol):
    """What the shell needs from the phone (``device.VirtualDevice`` provides it)."""

    @property
    def vfs(self) -> MemoryFS: ...

    @property
    def commands(self) -> Mapping[str, Command]: ...

    def cred_for(self, uid: int) -> Cred: ...

    def user_name(self, uid: int) -> str: ...

    def uid_of(self, name: str) -> int | None: ...

    def spawn(self, name: str, uid: int, ppid: int) -> int: ...

    def reap(self, pid: int) -> None: ...

    def base_env(self, uid: int) -> dict[str, str]: ...

    def local_time(self, epoch: float) -> _dt.datetime: ...


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
                elif _is_number(target) and int(target) in table:
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
        if _is_number(name):
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


def _unescape(text: str, *, octal_prefix: str = "0") -> tuple[str, bool]:
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
        text, stop = _unescape(text)
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
                return _unescape(arg)[0]
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

        out.append(_unescape(spec.sub(conv, fmt), octal_prefix="")[0])
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
    levels = int(ctx.args[0]) if ctx.args and _is_number(ctx.args[0]) else 1
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
                bad = a if not _is_number(a.lstrip("-")) else b
                raise ValueError(f"{bad}: bad number") from None
    raise ValueError("syntax error")


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


def _read_inputs(ctx: Ctx, files: list[str]) -> Iterator[tuple[str, bytes | None]]:
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
    if _is_number(name):
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
        for name, data in _read_inputs(ctx, files):
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
    for name, data in _read_inputs(ctx, files):
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
    for _, data in _read_inputs(ctx, files):
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
    data = b"".join(d for _, d in _read_inputs(ctx, files[:1]) if d is not None)
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
    spec = _unescape(spec)[0]
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

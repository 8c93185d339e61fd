"""The shell's lexer and parser: what adbd hands to ``sh -c`` as a tree of nodes (words with
their quoting, parameters and command substitutions, redirections and here-documents,
pipelines, ``&&``/``||`` lists, ``if``/``for``/``while``, groups)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from vhandset.sh.streams import ASCII_DIGITS

log = logging.getLogger(__name__)


RESERVED = frozenset(
    {"if", "then", "elif", "else", "fi", "for", "in", "do", "done", "while", "until", "{", "}", "!"}
)
OPERATORS = ("&&", "||", ";;", ";", "&", "|", "(", ")", "\n")
REDIR_OPS = ("<<-", "<<", ">>", ">&", ">|", "<&", "&>", ">", "<")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ShellSyntaxError(Exception):
    pass


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
        while j < len(src) and src[j] in ASCII_DIGITS:
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

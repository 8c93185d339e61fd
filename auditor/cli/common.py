"""What every ``auditor`` command shares: escaped output (every line goes through
:func:`echo` or :func:`emit_json`), one-line errors (:func:`handle_errors`), the custody log
(:func:`custody_logged`), and the option bundles and parameter types used by several commands.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import click

from auditor.analysis.escape import json_visible, visible
from auditor.errors import AuditorError

DEFAULT_CAPTURES = Path("captures")
DEFAULT_REPORTS = Path("reports")

# Everything the CLI prints goes through echo() or emit_json(): whatever came from a capture,
# a bundle, a session or a device reaches the terminal with its control characters (escape
# sequences, backspace, carriage return) and invisible characters shown as escapes, whether
# or not the output is a terminal (tests/test_cli.py holds every command to it).
# A value quoted in a line of output goes through terminal_line(), so that it cannot start
# a line of its own either.


def json_option[F: Callable[..., Any]](fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


def decrypt_option[F: Callable[..., Any]](fn: F) -> F:
    """``--decrypt FILE`` (``decrypt_rules``), read by :func:`_decrypt_rules`."""
    return click.option(
        "--decrypt",
        "decrypt_rules",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Rules file (YAML, docs/decrypt.md): vendor-encrypted bodies decrypted before "
        "the analysis.",
    )(fn)


def emit_json(obj: Any, *, ascii_only: bool = False) -> None:
    """JSON on standard output, every character that could steer a terminal written as a
    JSON escape (the document parses the same); ``ascii_only`` escapes all non-ASCII too."""
    emit_json_text(json.dumps(obj, indent=2, ensure_ascii=ascii_only, sort_keys=False))


def emit_json_text(doc: str) -> None:
    """A JSON document made elsewhere, on standard output as :func:`emit_json` writes one."""
    click.echo(json_visible(doc))


def terminal_text(text: Any) -> str:
    """Text bound for a terminal with every control character (escape sequences, bidi
    overrides) and invisible character shown as a visible escape; newlines and tabs kept."""
    return visible(text)


def terminal_line(text: Any, limit: int | None = None) -> str:
    """A value quoted in one line of output: as :func:`terminal_text`, newlines and tabs
    escaped too, cut at ``limit`` characters."""
    return visible(text, limit, one_line=True)


def echo(text: Any = "", err: bool = False, *, fit: bool = False) -> None:
    """The one way the CLI prints a line: through :func:`terminal_text`. With ``fit``, a
    line cut to the terminal's width when the output is one, so that it cannot wrap: every
    row then starts with the line's own beginning (auditor's words), never with the text
    it quotes."""
    line = terminal_text(text)
    stream = sys.stderr if err else sys.stdout
    if fit and stream.isatty():
        from rich.cells import cell_len, set_cell_size

        try:
            width = os.get_terminal_size(stream.fileno()).columns
        except (OSError, ValueError, io.UnsupportedOperation):
            width = 80
        if width > 2 and cell_len(line) >= width:
            line = set_cell_size(line, width - 2) + "…"
    click.echo(line, err=err)


def quoted_on_one_line(text: str, values: list[Any]) -> str:
    """``text`` (lines made elsewhere) with each of ``values`` it quotes escaped on one line:
    a newline in a quoted value must not start a line of its own."""
    multi = {str(v) for v in values if v is not None and any(c in str(v) for c in "\n\t")}
    for v in sorted(multi, key=len, reverse=True):
        text = text.replace(v, terminal_line(v))
    return text


def _strings(obj: Any) -> list[str]:
    """Every string in a JSON-like value."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in _strings(v)]
    return []


def fail(message: str, code: int = 1) -> None:
    # an error may quote a file's content or name (an archive member, a host): escaped
    echo(f"error: {terminal_line(message)}", err=True)
    sys.exit(code)


_DISK_FULL = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (a file size limit such as `ulimit -f`, or the file system's)",
    errno.EDQUOT: "disk quota exceeded",
}


def _file_written(exc: OSError) -> str | None:
    """The file a failed write was for: the exception's, else the innermost open-for-writing
    file object among the failing frames' variables (``f.write()`` names no file)."""
    if exc.filename is not None:
        return os.fsdecode(exc.filename)
    tb: TracebackType | None = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if not isinstance(value, io.IOBase):
                continue
            name, mode = getattr(value, "name", None), getattr(value, "mode", "")
            if isinstance(name, str | bytes | os.PathLike) and (
                not isinstance(mode, str) or any(c in mode for c in "wax+")
            ):
                return os.fsdecode(name)
    return None


def disk_full_message(exc: OSError) -> str | None:
    """One line for a write that failed for want of space, else None."""
    why = _DISK_FULL.get(exc.errno or 0)
    if why is None:
        return None
    name = exc.filename if isinstance(exc.filename, str) and exc.filename else None
    name = name or _file_written(exc)
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f"cannot write {name}" if name else "cannot write"
    advice = getattr(exc, "advice", None)  # (spilldir.SpillFull)
    more = f" ({advice})" if isinstance(advice, str) else ""
    return f"{where}: {why} ({code}){more}; free some space and run the command again"


def handle_errors[F: Callable[..., Any]](fn: F) -> F:
    """One clear line and a non-zero exit for the errors a user can act on."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AuditorError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as exc:
            message = disk_full_message(exc)
            if message is None:
                raise
            fail(message)
        return None

    return wrapper  # type: ignore[return-value]


class TerminalFormatter(logging.Formatter):
    """Log lines with the message on one line and every control character escaped: a log
    record may quote a capture (a host, a header)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return terminal_line(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return terminal_text(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return terminal_text(super().formatStack(stack_info))


def _escaped_excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """A traceback (of a bug) quotes the exception's message, which may quote a capture."""
    sys.stderr.write(terminal_text("".join(traceback.format_exception(kind, exc, tb))))


def _escaped_thread_hook(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    where = getattr(args.thread, "name", "?")
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    sys.stderr.write(terminal_text(f"Exception in thread {where}:\n{text}"))


# ------------------------------------------------------------------------------ custody log

_ARGV = "auditor.argv"
_CUSTODY_SESSIONS = "auditor.custody.sessions"
_CUSTODY_DETAILS = "auditor.custody.details"


class _AuditorGroup(click.Group):
    """Keeps the command line as it was given, for the custody log."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta.setdefault(_ARGV, list(args))
        return super().parse_args(ctx, args)


def _argv() -> list[str]:
    ctx = click.get_current_context(silent=True)
    args = ctx.meta.get(_ARGV) if ctx is not None else None
    return ["auditor", *(args if args is not None else sys.argv[1:])]


def custody_touch(*sessions: Path | str) -> None:
    """Name sessions the running command made or used, for its custody line."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta.setdefault(_CUSTODY_SESSIONS, []).extend(Path(s) for s in sessions)


def custody_note(**details: Any) -> None:
    """Add details (a bundle's hash, say) to the running command's custody line."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta.setdefault(_CUSTODY_DETAILS, {}).update(details)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


def _write_custody(params: tuple[str, ...], kwargs: dict[str, Any], code: int) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    paths: list[Path] = []
    for name in params:
        value = kwargs.get(name)
        if isinstance(value, tuple | list):
            paths += [Path(v) for v in value]
        elif value is not None:
            paths.append(Path(value))
    paths += ctx.meta.get(_CUSTODY_SESSIONS, [])
    if not paths:
        return
    names = []
    c: click.Context | None = ctx
    while c is not None and c.parent is not None:
        names.append(c.info_name or "")
        c = c.parent
    try:
        from auditor.evidence import custody

        warnings = custody.record(
            paths, " ".join(reversed(names)), _argv(), code, ctx.meta.get(_CUSTODY_DETAILS)
        )
    except Exception as exc:  # noqa: BLE001 - the log never fails the command
        warnings = [f"custody log not written: {exc}"]
    for w in warnings:
        echo(f"warning: {terminal_line(w)}", err=True)


def custody_logged[F: Callable[..., Any]](*params: str) -> Callable[[F], F]:
    """Once the command ends, append one line (argv, user, host, exit code) to the custody log
    of each session it touched: those its ``params`` name and those given to
    :func:`custody_touch`. Place it above :func:`handle_errors` so it sees the exit code."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            code = 0
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                code = _exit_code(exc)
                raise
            finally:
                _write_custody(params, kwargs, code)

        return wrapper  # type: ignore[return-value]

    return deco


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from auditor.timeutil import parse_duration

        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _decrypt_rules(path: Path | None) -> Any:
    """The rules of a ``--decrypt`` file (a bad file is one line, exit 1), or None."""
    if path is None:
        return None
    from auditor.analysis.decrypt import load_rules

    return load_rules(path)


def parse_identifiers(values: tuple[str, ...]) -> dict[str, str]:
    """``--identifier NAME=VALUE`` options as ``{name: value}``
    (:func:`auditor.analysis.identifiers.parse_identifier`)."""
    from auditor.analysis.identifiers import parse_identifier

    out = {}
    for v in values:
        try:
            name, value = parse_identifier(v)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}, e.g. imei=490154203237518") from None
        out[name] = value
    return out

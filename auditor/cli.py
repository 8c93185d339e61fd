"""The ``auditor`` command line. Commands parse arguments and call one function each.

Built on click: nested command groups (``auditor intel lookup``), reusable option bundles
(``--json``) as plain decorators, and ``CliRunner`` for in-process tests, as sqlite-utils does.
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
from typing import TYPE_CHECKING, Any

import click

from auditor import __version__
from auditor.analysis.escape import json_visible, visible
from auditor.errors import AuditorError

if TYPE_CHECKING:
    from auditor.evidence.bundle import BundleCheck
    from auditor.evidence.reanalyze import Reanalysis

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
    name = _file_written(exc)
    code = errno.errorcode.get(exc.errno or 0, "")
    where = f"cannot write {name}" if name else "cannot write"
    return f"{where}: {why} ({code}); free some space and run the command again"


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


@click.group(cls=_AuditorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="auditor")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """auditor: record and analyse the telemetry an Android handset sends.

    \b
    Try it on the built-in virtual handset:
        auditor demo
    Record a proxy session without a device, then check it:
        auditor capture --no-device --duration 60s
        auditor sessions
        auditor verify captures/<session-id>
    """
    import threading

    level = logging.WARNING - 10 * verbose
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=max(level, logging.DEBUG), handlers=[handler])
    if sys.excepthook is sys.__excepthook__:  # not when a test runner holds it
        sys.excepthook = _escaped_excepthook
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _escaped_thread_hook


# ------------------------------------------------------------------------------------- sessions


@main.command()
@click.argument(
    "directory", required=False, default=str(DEFAULT_CAPTURES), type=click.Path(path_type=Path)
)
@json_option
@handle_errors
def sessions(directory: Path, as_json: bool) -> None:
    """List the capture sessions in DIRECTORY (default: captures/).

    \b
    Example:
        auditor sessions
        auditor sessions ~/audits/mi10t --json
    """
    from auditor.session import list_sessions

    infos, warnings = list_sessions(directory)
    for w in warnings:
        echo(f"warning: {terminal_line(w)}", err=True)
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return
    if not infos:
        echo(f"no sessions in {terminal_line(directory)}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("id", "status", "device", "start (UTC)", "duration", "flows", "up", "down"):
        table.add_column(col, justify="right" if col in ("flows", "up", "down") else "left")
    for i in infos:
        table.add_row(  # a manifest is the session's word: escaped
            terminal_line(i.id),
            terminal_line(i.status),
            terminal_line(i.device),
            terminal_line((i.started_at or "-").replace("T", " ")[:19]),
            f"{i.duration_s:.0f}s" if i.duration_s is not None else "-",
            terminal_line(i.flows),
            human_bytes(i.bytes_up),
            human_bytes(i.bytes_down),
        )
    Console(markup=False, highlight=False).print(table)


# -------------------------------------------------------------------------------------- verify


@main.command()
@click.argument("session", metavar="SESSION|BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--pubkey",
    type=click.Path(path_type=Path),
    default=None,
    help="A bundle's signature must verify with this public key (KEYFILE.pub of keygen).",
)
@click.option(
    "--reanalyze",
    is_flag=True,
    help="Also analyse the bundle's session again and compare with its findings.json "
    "(byte for byte but for generated_at).",
)
@click.option("--policy", default=None, help="With --reanalyze: the policy, if not built in.")
@click.option("--intel", multiple=True, help="With --reanalyze: intel files the report used.")
@click.option(
    "--identifier", multiple=True, help="With --reanalyze: NAME=VALUE identifiers it was given."
)
@click.option(
    "--claims",
    type=click.Path(path_type=Path),
    default=None,
    help="With --reanalyze: the claims file it checked.",
)
@json_option
@custody_logged("session")
@handle_errors
def verify(
    session: Path,
    pubkey: Path | None,
    reanalyze: bool,
    policy: str | None,
    intel: tuple[str, ...],
    identifier: tuple[str, ...],
    claims: Path | None,
    as_json: bool,
) -> None:
    """Check every file of SESSION against the SHA-256 hashes in its manifest, or every
    member of an evidence BUNDLE against its bundle.json, its session against the session
    manifest, and its signature.

    Exits 0 when all files match; otherwise names each missing, changed or unlisted
    file and exits 1. Without --pubkey a bundle's signature is checked with the key it
    names and reported as self-asserted. With --reanalyze the bundle's session is analysed
    again with the inputs its report records, and the result must be its findings.json
    (exit 1 when it differs or cannot be checked, saying why).

    \b
    Example:
        auditor verify captures/20261128T101500Z-3f9a1c
        auditor verify 20261128T101500Z-3f9a1c.tar.gz --pubkey ~/.auditor/signing.key.pub
        auditor verify 20261128T101500Z-3f9a1c.tar.gz --reanalyze
    """
    if (policy or intel or identifier or claims) and not reanalyze:
        fail("--policy, --intel, --identifier and --claims go with --reanalyze")
    if session.is_file():
        _verify_bundle(
            session, pubkey, as_json, reanalyze, policy, intel, parse_identifiers(identifier),
            claims,
        )  # fmt: skip
        return
    if reanalyze:
        fail(f"--reanalyze checks a bundle's findings; {session} is not a bundle file")
    if pubkey is not None:
        fail(f"--pubkey checks a bundle's signature; {session} is not a bundle file")
    from auditor.session import verify_session

    res = verify_session(session)
    if as_json:
        emit_json(res.to_dict())
    else:
        # file names and messages quote the session: each escaped on its line; the verdict,
        # in auditor's words alone, comes last (a folder's name could wrap onto a row of its own)
        for rel in res.missing:
            echo(f"MISSING   {terminal_line(rel)}", fit=True)
        for rel in res.changed:
            echo(f"CHANGED   {terminal_line(rel)}", fit=True)
        for rel in res.unlisted:
            echo(f"UNLISTED  {terminal_line(rel)}", fit=True)
        for p in res.problems:
            echo(f"PROBLEM   {terminal_line(p)}", fit=True)
        for w in res.warnings:
            echo(f"WARNING   {terminal_line(w)}", fit=True)
        echo(f"session   {terminal_line(session)}", err=True, fit=True)
        echo(f"{'OK' if res.ok else 'FAILED'}: {res.checked} artifacts checked")
    if not res.ok:
        sys.exit(1)


def _verify_bundle(
    path: Path,
    pubkey: Path | None,
    as_json: bool,
    reanalyze: bool = False,
    policy: str | None = None,
    intel: tuple[str, ...] = (),
    identifiers: dict[str, str] | None = None,
    claims: Path | None = None,
) -> None:
    from auditor.evidence.bundle import verify_bundle
    from auditor.evidence.signing import load_public_key

    key = load_public_key(pubkey) if pubkey else None
    res = verify_bundle(path, key)
    again = None
    if reanalyze and res.ok:
        from auditor.evidence.reanalyze import reanalyze_bundle

        again = reanalyze_bundle(
            path, key, policy=policy, intel=intel, identifiers=identifiers, claims=claims
        )
        if again.check is not None:  # the bytes re-analysed: the file may have been swapped
            res = again.check
    if as_json:
        doc = res.to_dict()
        if reanalyze:
            doc["reanalysis"] = again.to_dict() if again is not None else None
        emit_json(doc)
    else:
        quoted, verdict = bundle_check_lines(res, again)
        for line in quoted:
            echo(line, fit=True)
        echo(verdict)
    if not res.ok or (again is not None and not again.ok):
        sys.exit(1)


# what of a bundle's own word is shown in the line that names it (the rest is in --json)
OPERATOR_SHOWN = 64


def bundle_check_lines(
    check: BundleCheck, again: Reanalysis | None = None
) -> tuple[list[str], str]:
    """What `verify` and `unbundle` print of a bundle check: the lines that quote the bundle
    (member names, problems, its session, creation time and operator, the signature's
    detail), each escaped on one line, then the verdict in auditor's own words alone.

    Printed in that order (the quoted lines cut to a terminal's width), nothing the bundle
    holds can move the cursor over the verdict, start a line of its own, or wrap onto a row
    of its own: the verdict names no path and quotes nothing (a bundle's file name is the
    sender's choice too)."""
    from auditor.evidence.bundle import format_check

    lines = format_check(check)
    own = ("SIGNATURE ", "OK:", "FAILED:")
    quoted = [terminal_line(line) for line in lines if not line.startswith(own)]
    if again is not None:
        from auditor.evidence.reanalyze import format_reanalysis

        quoted += [terminal_line(line) for line in format_reanalysis(again)]
    info = check.info or {}
    about = f"bundle    {terminal_line(check.path)}"
    if info.get("session_id") or info.get("operator"):
        about += (
            f" (session {terminal_line(info.get('session_id'), OPERATOR_SHOWN)}, bundled "
            f"{terminal_line(info.get('created_at'), 40)} by "
            f"{terminal_line(info.get('operator'), OPERATOR_SHOWN)})"
        )
    quoted.append(about)
    quoted += [terminal_line(line) for line in lines if line.startswith("SIGNATURE ")]
    ok = check.ok and (again is None or again.ok)
    sig = check.signature
    label = sig.status.value if sig.ok else sig.status.value.upper()
    verdict = f"{'OK' if ok else 'FAILED'}: {check.checked} files checked, signature {label}"
    if again is not None:
        verdict += f", {again.verdict}"
    return quoted, verdict


# ------------------------------------------------------------------------------------ evidence


def _passphrase(keyfile: Path, *, new: bool) -> bytes:
    """A key's passphrase: AUDITOR_KEY_PASSPHRASE, else asked on the terminal (twice for a
    new key); never an argument, which other users could read in the process list."""
    from auditor.evidence.signing import PASSPHRASE_ENV

    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        if not given:
            fail(f"{PASSPHRASE_ENV} is set but empty")
        return given.encode()
    if not sys.stdin.isatty():
        fail(f"{keyfile}: a passphrase is needed: set {PASSPHRASE_ENV} (no terminal to ask on)")
    text = click.prompt(
        f"passphrase for {keyfile}", hide_input=True, confirmation_prompt=new, err=True
    )
    if not text:
        fail("an empty passphrase encrypts nothing")
    return str(text).encode()


# --------------------------------------------------------------------------------------- close


@main.command("close")
@click.argument("session", type=click.Path(path_type=Path))
@click.option(
    "--by",
    default=None,
    help="Who seals it (a name for the custody log; default: the login user).",
)
@click.option("--reason", default="", help="Why it is sealed late (kept in the manifest).")
@json_option
@custody_logged()  # seal_late writes the session's own custody line
@handle_errors
def close(session: Path, by: str | None, reason: str, as_json: bool) -> None:
    """Seal a session its recorder left open (a crash, or mitmdump run with
    auditor_close_on_done=false): hash its files and close it as incomplete.

    The manifest and the custody log record that it was sealed late, when and by whom;
    `verify` then checks it as any other session. A session still being recorded, or
    already closed, is refused.

    \b
    Example:
        auditor close captures/20261128T101500Z-3f9a1c --reason "laptop lost power"
        auditor close captures/20261128T101500Z-3f9a1c --by "J. Doe" --json
    """
    from auditor.evidence.custody import login_user
    from auditor.session import seal_late

    sealed = seal_late(session, by=by or login_user(), reason=reason, argv=_argv())
    if as_json:
        emit_json(sealed.to_dict(), ascii_only=True)
        return
    d = sealed.to_dict()
    late = d.get("sealed_late") or {}
    for w in sealed.warnings:
        echo(f"warning: {terminal_line(w)}", err=True)
    echo(
        f"sealed {terminal_line(session)}: {d['artifacts']} file(s) hashed, status "
        f"{terminal_line(d['status'])} (left open; {terminal_line(d.get('stop_detail') or '')})"
    )
    echo(f"sealed late at {terminal_line(late.get('at'))} by {terminal_line(late.get('by'))}")


@main.command()
@click.option(
    "--out",
    "keyfile",
    required=True,
    type=click.Path(path_type=Path),
    help="Private key file to create (mode 0600); the public key goes to KEYFILE.pub.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt the private key with a passphrase (from AUDITOR_KEY_PASSPHRASE, else asked).",
)
@json_option
@handle_errors
def keygen(keyfile: Path, encrypt: bool, as_json: bool) -> None:
    """Make an Ed25519 key pair for signing evidence bundles; print its fingerprint.

    The private key (PEM, PKCS#8; encrypted with --encrypt) is created with mode 0600 and
    never overwrites a file; keep it off shared disks. Give KEYFILE.pub to whoever verifies.
    `auditor bundle --sign` asks for the passphrase of an encrypted key on a terminal, or
    reads it from AUDITOR_KEY_PASSPHRASE.

    \b
    Example:
        auditor keygen --out ~/.auditor/signing.key --encrypt
        auditor bundle captures/S1 --sign ~/.auditor/signing.key
    """
    from auditor.evidence.signing import generate_keypair

    passphrase = _passphrase(keyfile, new=True) if encrypt else None
    pair = generate_keypair(keyfile, passphrase)
    if as_json:
        emit_json(pair.to_dict())
    else:
        echo(f"private key {pair.private} (keep it secret)", err=True)
        echo(f"public key  {pair.public}", err=True)
        echo(pair.fingerprint)


@main.command()
@click.argument("session", type=click.Path(path_type=Path))
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="Also pack this report folder of the session (e.g. reports/<session-id>/).",
)
@click.option(
    "--sign",
    "keyfile",
    type=click.Path(path_type=Path),
    default=None,
    help="Sign bundle.json with this Ed25519 private key (see auditor keygen).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle file, .tar.gz, .tgz or .tar [default: reports/<session-id>.bundle.tar.gz].",
)
@click.option("--operator", default=None, help="Who makes the bundle [default: the login user].")
@json_option
@custody_logged("session")
@handle_errors
def bundle(
    session: Path,
    report: Path | None,
    keyfile: Path | None,
    out: Path | None,
    operator: str | None,
    as_json: bool,
) -> None:
    """Pack a closed session, optionally its report, into one evidence bundle.

    bundle.json in the archive lists the SHA-256 and size of every file, the versions of
    auditor and its dependencies, the knowledge base, the scenario, the device profile, the
    operator and the session's custody log; --sign adds an Ed25519 signature (bundle.sig).
    The session must verify. Check a bundle with `auditor verify BUNDLE`.

    \b
    Example:
        auditor bundle captures/S1 --report reports/S1 --sign ~/.auditor/signing.key
        auditor bundle captures/S1 --out /media/usb/S1.tar.gz --operator "J. Doe" --json
    """
    from auditor.evidence.bundle import build_bundle
    from auditor.evidence.signing import is_encrypted_key, load_private_key

    key = None
    if keyfile:
        secret = _passphrase(keyfile, new=False) if is_encrypted_key(keyfile) else None
        key = load_private_key(keyfile, secret)
    target = out or DEFAULT_REPORTS / f"{Path(session).name}.bundle.tar.gz"
    res = build_bundle(session, target, report=report, key=key, operator=operator, argv=_argv())
    custody_note(bundle=str(res.path), bundle_sha256=res.sha256, signed_by=res.signed_by)
    if as_json:
        emit_json(res.to_dict())
        return
    signed = f", signed by {res.signed_by}" if res.signed_by else ", not signed"
    echo(f"{res.files} files, {human_bytes(res.size)}{signed}", err=True)
    echo(f"sha256 {res.sha256}", err=True)
    echo(str(res.path))


@main.command()
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="New (or empty) folder that receives captures/<id>/ and reports/<id>/.",
)
@click.option(
    "--pubkey",
    type=click.Path(path_type=Path),
    default=None,
    help="The bundle's signature must verify with this public key.",
)
@click.option(
    "--force", is_flag=True, help="Unpack even if the bundle does not verify (to inspect it)."
)
@json_option
@custody_logged()
@handle_errors
def unbundle(bundle_file: Path, out: Path, pubkey: Path | None, force: bool, as_json: bool) -> None:
    """Unpack an evidence bundle safely, so its session can be analysed again.

    The bundle is checked as it is unpacked (as `auditor verify` does); nothing is kept
    unless it verifies. Links, absolute paths and '..' in the archive are refused.

    \b
    Example:
        auditor unbundle S1.tar.gz --out /tmp/case1 --pubkey signing.key.pub
        auditor analyze /tmp/case1/captures/S1 --out /tmp/case1/reanalysis
    """
    from auditor.evidence.bundle import unpack_bundle
    from auditor.evidence.signing import load_public_key

    key = load_public_key(pubkey) if pubkey else None
    res = unpack_bundle(bundle_file, out, trusted=key, force=force)
    if res.session is not None and res.unpacked:
        custody_touch(res.session)
        custody_note(bundle=str(bundle_file), verified=res.check.ok)
    if as_json:
        emit_json(res.to_dict())
    else:
        quoted, verdict = bundle_check_lines(res.check)
        for line in quoted:
            echo(line, err=True, fit=True)
        if not res.unpacked:
            echo(f"nothing unpacked to {terminal_line(out)}", err=True, fit=True)
        else:
            echo(terminal_line(res.session or res.out))
        echo(verdict, err=True)  # last: after everything that quotes the bundle
    if not res.check.ok:
        sys.exit(1)


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    default=str(DEFAULT_CAPTURES),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder that receives the session folder.",
)
@click.option(
    "--identifier",
    "identifiers",
    multiple=True,
    help="NAME=VALUE of a device identifier, kept in the manifest for the analyser "
    "(e.g. imei=490154203237518). Repeatable.",
)
@json_option
@custody_logged()
@handle_errors
def import_(
    files: tuple[Path, ...], out: Path, identifiers: tuple[str, ...], as_json: bool
) -> None:
    """Make a capture session from HAR files, mitmproxy flow files, packet captures or
    Android 16 intrusion logs (the OS's own DNS and connection log).

    The format is found from each file's content. Each file is copied into the session
    (original/) with its SHA-256; entries that cannot be read are skipped and counted,
    and the session's import events list them.

    \b
    Example:
        auditor import phone.har
        auditor import flows.mitm more.har --identifier imei=490154203237518
        auditor import phone.pcapng "Intrusion Logging"/2026-05-12.txt
        auditor verify captures/<session-id>
    """
    from auditor.imports.session import import_command

    res = import_command(files, out, identifiers, as_json)
    custody_touch(res["session"])
    if as_json:
        emit_json(res)
        return
    for w in res["warnings"]:
        echo(f"warning: {terminal_line(w)}", err=True)
    # the text quotes each file's name and creator (a HAR's log.creator): on their lines
    quoted = [f.get("name") for f in res["files"]]
    for f in res["files"]:
        creator = f.get("creator") or {}
        quoted += [creator.get("name"), creator.get("version")] if isinstance(creator, dict) else []
    echo(quoted_on_one_line(res["text"], quoted))


# ------------------------------------------------------------------------------------- capture


def proxy_options[F: Callable[..., Any]](fn: F) -> F:
    for opt in reversed(
        [
            click.option(
                "--listen-host",
                default="127.0.0.1",
                show_default=True,
                help="Address the proxy listens on. Anything but loopback is warned about.",
            ),
            click.option("--port", default=8080, show_default=True, help="Proxy port."),
            click.option(
                "--out",
                default=str(DEFAULT_CAPTURES),
                show_default=True,
                type=click.Path(path_type=Path),
                help="Folder that receives the session folder.",
            ),
            click.option(
                "--body-cap",
                default="64MiB",
                show_default=True,
                help="Bodies over this size are stored truncated and flagged (e.g. 1MiB).",
            ),
            click.option(
                "--confdir",
                type=click.Path(path_type=Path),
                default=None,
                help="mitmproxy's configuration folder holding its CA "
                "[default: ~/.auditor/mitmproxy].",
            ),
            click.option("--notes", default="", help="Operator notes kept in the manifest."),
        ]
    ):
        fn = opt(fn)
    return fn


def parse_size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6}
    units |= {"mib": 1024**2, "g": 10**9, "gb": 10**9, "gib": 1024**3}
    s = text.strip().lower()
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num) :].strip()
    try:
        value = int(float(num) * units[unit])
    except (KeyError, ValueError):
        raise click.BadParameter(f"not a size: {text!r} (use e.g. 65536, 512KiB, 64MiB)") from None
    if value <= 0:
        raise click.BadParameter("size must be positive")
    return value


@main.command()
@click.option(
    "--no-device",
    is_flag=True,
    help="Run the proxy only; point any client at it yourself.",
)
@proxy_options
@click.option("--duration", type=DURATION, default=None, help="Stop after e.g. 90s, 5m, 1h.")
@json_option
@custody_logged()
@handle_errors
def capture(
    no_device: bool,
    listen_host: str,
    port: int,
    out: Path,
    body_cap: str,
    confdir: Path | None,
    notes: str,
    duration: float | None,
    as_json: bool,
) -> None:
    """Record HTTP(S) through a real mitmdump into a new capture session.

    Stops on --duration, Ctrl-C or SIGTERM, then closes the session with the hashes of
    every file. Clients must trust mitmproxy's CA (mitmproxy-ca-cert.pem in --confdir)
    for HTTPS to be decrypted; otherwise their failed handshakes are recorded.

    \b
    Example:
        auditor capture --no-device --port 8080 --duration 5m
        curl -x http://127.0.0.1:8080 http://example.test/
    """
    from auditor.capture import DEFAULT_CONFDIR, ProxyOptions, StopSignal, run_capture

    if not no_device:
        fail("capture through a handset is `auditor audit`; use --no-device for the proxy alone")
    opts = ProxyOptions(
        listen_host=listen_host,
        port=port,
        confdir=confdir or DEFAULT_CONFDIR,
        body_cap=parse_size(body_cap),
    )
    _warn_listen(listen_host)
    progress = _progress_printer(duration, quiet=as_json)
    with StopSignal() as stop:
        echo(f"proxy on {listen_host}:{port}; Ctrl-C to stop", err=True)
        res = run_capture(
            out, opts, duration=duration, notes=notes, on_progress=progress, stop=stop.event
        )
    progress.close()
    custody_touch(res.session)
    summary = res.manifest.get("summary", {})
    if as_json:
        emit_json({"session": str(res.session), "stopped_by": res.stopped_by, **summary})
    else:
        echo(
            f"session {res.session} ({res.manifest['status']}, stopped by {res.stopped_by}): "
            f"{summary.get('flows', 0)} flows, {summary.get('tls_failed', 0)} TLS failures"
        )
    if res.stopped_by == "proxy_died":
        sys.exit(1)


def _warn_listen(host: str) -> None:
    from auditor.capture import warn_if_exposed

    msg = warn_if_exposed(host)
    if msg:
        echo(f"warning: {terminal_line(msg)}", err=True)


class _LiveLine:
    """One live status line on a terminal (stderr); nothing when not attached to one."""

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True, markup=False, highlight=False)
        self.quiet = quiet
        self.live: Any = None

    def show(self, text: str) -> None:
        from rich.live import Live
        from rich.text import Text

        shown = Text(terminal_line(text))  # a step's name, a phase: never a control character
        if self.live is None:
            self.live = Live(shown, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        else:
            self.live.update(shown)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


class _Progress(_LiveLine):
    def __init__(self, duration: float | None, quiet: bool):
        super().__init__(quiet)
        self.duration = duration

    def __call__(self, elapsed: float, counts: Any) -> None:
        if self.quiet or not self.console.is_terminal:
            return
        left = f" / {self.duration:.0f}s" if self.duration else ""
        self.show(
            f"capturing {elapsed:5.0f}s{left}  flows {counts.flows}  hosts {len(counts.hosts)}"
            f"  TLS failures {counts.tls_failed}  errors {counts.errors}"
        )


def _progress_printer(duration: float | None, quiet: bool) -> _Progress:
    return _Progress(duration, quiet)


# ------------------------------------------------------------------------------------- devices


def serial_option[F: Callable[..., Any]](fn: F) -> F:
    return click.option(
        "-s",
        "--serial",
        default=None,
        help="The device's serial (see `auditor devices`); optional when only one is online.",
    )(fn)


@main.command()
@json_option
@handle_errors
def devices(as_json: bool) -> None:
    """List the devices the adb server sees: serial, state, model and transport.

    The adb server's port is taken from ANDROID_ADB_SERVER_PORT (default 5037).

    \b
    Example:
        auditor devices
        ANDROID_ADB_SERVER_PORT=15037 auditor devices --json
    """
    from auditor.device.handset import list_devices

    devs = list_devices()
    if as_json:
        emit_json([d.to_dict() for d in devs])
        return
    if not devs:
        echo("no devices (plug a phone in, or start one with `auditor simulate`)")
        return
    for d in devs:
        # serial, state and model are the device's word: a hostile phone's
        cells = (d.serial, d.state, d.model or "-", d.transport)
        echo("\t".join(terminal_line(c) for c in cells))
        if d.hint:
            echo(f"  hint: {terminal_line(d.hint)}")


@main.command()
@serial_option
@click.option("--no-packages", is_flag=True, help="Skip the package list (faster).")
@json_option
@handle_errors
def profile(serial: str | None, no_packages: bool, as_json: bool) -> None:
    """Profile a handset: build, region, root, identifiers, packages, proxy and CA stores.

    Identifiers that cannot be read are listed as unavailable, with the reason.

    \b
    Example:
        auditor profile -s emulator-5554
        auditor profile -s 127.0.0.1:5555 --json > profile.json
    """
    from auditor.device.handset import Handset
    from auditor.device.profile import collect_profile

    p = collect_profile(Handset(serial), with_packages=not no_packages)
    if as_json:
        emit_json(p.to_dict())
        return
    rows = [
        ("device", f"{p.manufacturer} {p.model} ({p.device}), brand {p.brand}"),
        ("android", f"{p.android_release} (SDK {p.sdk}), {p.build_type}, patch {p.security_patch}"),
        ("fingerprint", p.fingerprint),
        (
            "region / locale",
            f"{p.region or 'unknown'}"
            + (f" (from {p.region_source})" if p.region_source else "")
            + f" / {p.locale or 'unknown'}",
        ),
        ("SIMs", _per_slot(p.sim_operators, p.sim_countries)),
        ("networks", _per_slot(p.network_operators, p.network_countries)),
        ("root", p.root_detail),
        ("global proxy", p.global_proxy or "none"),
        ("private DNS", f"{p.private_dns_mode or 'default'} {p.private_dns_specifier or ''}"),
        (
            "user CAs",
            ", ".join(p.user_ca_certs) if p.user_ca_certs else (p.user_ca_certs_reason or "none"),
        ),
        ("packages", f"{len(p.packages)} ({sum(x.system for x in p.packages)} system)"),
    ]
    for ident in p.identifiers:
        value = ident.value or f"unavailable: {ident.reason}"
        rows.append((ident.name, f"{value}  [{ident.source}]"))
    width = max(len(k) for k, _ in rows)
    # operator names come from the cell network, the rest from the phone: escaped
    for k, v in rows:
        echo(f"{k.ljust(width)}  {terminal_line(v)}")
    for w in p.warnings:
        echo(f"warning: {terminal_line(w)}", err=True)


def _per_slot(names: list[str], countries: list[str]) -> str:
    """The operators and countries the phone reported for its SIM slots (empty slots left
    out, so the two lists are not paired by position)."""
    if not names and not countries:
        return "none"
    return f"{', '.join(names) or '-'} (countries: {', '.join(countries) or '-'})"


@main.command()
@serial_option
@click.argument("session", required=False, type=click.Path(path_type=Path))
@click.option(
    "--captures",
    default=str(DEFAULT_CAPTURES),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to look for sessions with pending changes when SESSION is not given.",
)
@json_option
@custody_logged("session")
@handle_errors
def restore(serial: str | None, session: Path | None, captures: Path, as_json: bool) -> None:
    """Undo what an interrupted audit left on a device, from the session's restore journal.

    Every change auditor makes is journalled before it is made; this undoes what is still
    pending, newest first, and never undoes a change twice.

    \b
    Example:
        auditor restore -s emulator-5554
        auditor restore -s emulator-5554 captures/20261128T101500Z-3f9a1c
    """
    from auditor.device.handset import Handset
    from auditor.device.journal import RestoreJournal, find_pending
    from auditor.device.setup import restore_device

    if session is not None and not (session / "restore.jsonl").is_file():
        fail(f"{session}: no restore journal there (is it a session of `auditor audit`?)")
    h = Handset(serial)
    sessions = [session] if session else find_pending(captures, h.serial)
    custody_touch(*sessions)
    results: list[dict[str, Any]] = []
    ok = True
    for sess in sessions:
        journal = RestoreJournal.in_session(sess)
        report = restore_device(h, journal)
        ok = ok and report.ok
        results.append(
            {
                "session": str(sess),
                "undone": [c.what for c in report.undone],
                "failed": [{"change": c.what, "error": e} for c, e in report.failed],
            }
        )
    if as_json:
        emit_json({"serial": h.serial, "ok": ok, "sessions": results})
    else:
        if not sessions:
            echo(f"nothing to restore on {terminal_line(h.serial)}")
        for r in results:  # a journal and the device's answers are quoted: escaped
            echo(f"{terminal_line(r['session'])}: undid {len(r['undone'])} change(s)")
            for what in r["undone"]:
                echo(f"  undone  {terminal_line(what)}")
            for f in r["failed"]:
                echo(f"  FAILED  {terminal_line(f['change'])}: {terminal_line(f['error'])}")
    if not ok:
        sys.exit(1)


# ------------------------------------------------------------------------------------ simulate


@main.command()
@click.option(
    "--profile",
    "profile_name",
    default="xiaomi-mi10t",
    show_default=True,
    help="A shipped profile (xiaomi-mi10t, huawei-p40, oneplus-8t, pixel-android14) or a "
    "YAML file.",
)
@click.option("--port", default=5555, show_default=True, help="ADB port of the virtual handset.")
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--no-root", is_flag=True, help="No root, as on an unmodified phone.")
@click.option(
    "--unauthorized", is_flag=True, help="Show as unauthorized, as before the USB prompt."
)
@click.option("--no-traffic", is_flag=True, help="No background traffic from the system apps.")
@click.option("--connect/--no-connect", default=True, help="Run `adb connect` to it.")
@json_option
@handle_errors
def simulate(
    profile_name: str,
    port: int,
    listen_host: str,
    no_root: bool,
    unauthorized: bool,
    no_traffic: bool,
    connect: bool,
    as_json: bool,
) -> None:
    """Run a virtual handset that the real adb server and auditor talk to as to a phone.

    It speaks the device side of the ADB protocol on --port, makes the background
    traffic of its profile's system apps, and brings its own offline internet (an HTTP
    proxy that answers like the vendors' services, with its own CA, and a DNS server).
    On port 5555 the adb server also finds it by itself as emulator-5554.

    \b
    Example:
        auditor simulate --profile xiaomi-mi10t
        auditor simulate --profile pixel-android14 --port 5601 --no-root
    """
    import signal
    import threading

    from vhandset.errors import VhandsetError
    from vhandset.world import VirtualWorld

    _warn_listen(listen_host)
    try:
        world = VirtualWorld(
            profile_name,
            host=listen_host,
            port=port,
            root=False if no_root else None,
            unauthorized=unauthorized,
            traffic=not no_traffic,
        )
        world.start()
    except VhandsetError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {listen_host}:{port}: {exc.strerror or exc}")
    info = world.info()
    serial = info.adb_address
    if connect:
        from auditor.device.handset import client

        try:
            client().connect(info.adb_address, timeout=10)
        except Exception as exc:  # noqa: BLE001 - the handset runs anyway; say so
            echo(f"warning: adb connect {info.adb_address} failed: {terminal_line(exc)}", err=True)
    if as_json:
        emit_json({**info.to_dict(), "adb_serial": serial})
    else:
        echo(
            f"virtual {info.profile} on {info.adb_address} (adb serial {serial}); "
            f"offline internet {info.upstream}, DNS {info.dns}. Ctrl-C to stop.",
            err=True,
        )
    sys.stdout.flush()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    finally:
        world.stop()


# --------------------------------------------------------------------------------------- audit


@main.command()
@serial_option
@click.option(
    "--scenario",
    default="idle",
    show_default=True,
    help="A preset (idle, idle-after-boot, sim-insert, analytics-off, open-system-apps, "
    "browser-canary, reboot-and-idle; see docs/scenarios.md) or a YAML file.",
)
@click.option(
    "--duration",
    default=None,
    help="Sets the scenario's duration parameter, e.g. 45s, 5m, 1h.",
)
@click.option(
    "--route",
    type=click.Choice(["reverse", "lan", "emulator"]),
    default="reverse",
    show_default=True,
    help="How the phone reaches the proxy: adb reverse over USB, the LAN "
    "(needs --listen-host), or the emulator's 10.0.2.2.",
)
@click.option(
    "--ca",
    type=click.Choice(["auto", "system", "user", "none"]),
    default="auto",
    show_default=True,
    help="Where to install mitmproxy's CA: the system store needs root (system apps trust "
    "only that one); auto picks system when the device has root, else user.",
)
@click.option("--allow-shell", is_flag=True, help="Allow the scenario's shell steps.")
@click.option(
    "--keep-private-dns", is_flag=True, help="Leave Private DNS on (it bypasses the proxy)."
)
@click.option(
    "--reports",
    default=str(DEFAULT_REPORTS),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the analyser writes the report of the session.",
)
@click.option("--no-analyze", is_flag=True, help="Stop at the session; analyse it later.")
@click.option(
    "--block-quic/--no-block-quic",
    default=None,
    help="Drop UDP 443 on the phone so that apps fall back from QUIC to TCP through the proxy "
    "(iptables with root, undone at the end; PCAPdroid's own blocking with --packets "
    "pcapdroid)  [default: on when the phone has root]",
)
@click.option(
    "--keyed-pcapng/--no-keyed-pcapng",
    default=True,
    show_default=True,
    help="Beside each packet capture, a .pcapng with the TLS keys embedded (tls/), which "
    "Wireshark opens decrypted.",
)
@decrypt_option
@click.option(
    "--packets",
    default="auto",
    show_default=True,
    help="Packet capture beside the proxy: off, iface:NAME, adb-tcpdump, or auto "
    "(adb-tcpdump when the device has root and tcpdump).",
)
@click.option(
    "--upstream",
    metavar="URL",
    default=None,
    help="Forward through an upstream HTTP proxy (mitmproxy's upstream mode), e.g. a lab's "
    "corporate proxy: --upstream http://proxy.lan:3128.",
)
@click.option(
    "--upstream-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A CA file (PEM) that verifies the servers' certificates seen through --upstream "
    "(a proxy that intercepts TLS); copied into the session as upstream-ca.pem.",
)
@proxy_options
@json_option
@custody_logged()
@handle_errors
def audit(
    serial: str | None,
    scenario: str,
    duration: str | None,
    route: str,
    ca: str,
    allow_shell: bool,
    keep_private_dns: bool,
    reports: Path,
    no_analyze: bool,
    block_quic: bool | None,
    keyed_pcapng: bool,
    decrypt_rules: Path | None,
    packets: str,
    upstream: str | None,
    upstream_ca: Path | None,
    listen_host: str,
    port: int,
    out: Path,
    body_cap: str,
    confdir: Path | None,
    notes: str,
    as_json: bool,
) -> None:
    """Audit a handset: profile it, record it through mitmproxy while a scenario runs,
    restore it exactly as it was, and close a hashed session.

    Ctrl-C at any moment still restores the device and closes a verifiable session.

    \b
    Example:
        auditor audit -s emulator-5554 --scenario idle --duration 5m
        auditor audit -s 127.0.0.1:5555 --scenario open-system-apps --ca user
        auditor audit -s SERIAL --scenario analytics-off --duration 10m --decrypt rules.yaml
    """
    from auditor.audit import AuditOptions, run_audit
    from auditor.capture import DEFAULT_CONFDIR

    if duration is not None:
        DURATION.convert(duration, None, None)
    if route == "lan" and listen_host in ("127.0.0.1", "::1", "localhost"):
        fail("--route lan needs --listen-host set to an address the phone can reach")
    _warn_listen(listen_host)
    opts = AuditOptions(
        serial=serial,
        scenario=scenario,
        duration=duration,
        route=route,
        ca=ca,
        out=out,
        listen_host=listen_host,
        port=port,
        confdir=confdir or DEFAULT_CONFDIR,
        body_cap=parse_size(body_cap),
        allow_shell=allow_shell,
        private_dns_off=not keep_private_dns,
        notes=notes,
        packets=packets,
        block_quic=block_quic,
        keyed_pcapng=keyed_pcapng,
        upstream=upstream,
        upstream_ca=upstream_ca,
    )
    rules = _decrypt_rules(decrypt_rules)
    if packets != "auto":
        from auditor.packets.live import PacketsSpec

        try:
            PacketsSpec.parse(packets)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--packets") from None
    ui = _AuditProgress(quiet=as_json)
    try:
        res = run_audit(opts, ui)
    finally:
        ui.close()
    custody_touch(res.session)
    summary = res.manifest.get("summary", {})
    report = None
    if not no_analyze:
        from auditor.analysis.engine import report_session

        report = report_session(res.session, reports, decrypt=rules)
    if as_json:
        emit_json(
            {
                "session": str(res.session),
                "report": str(report / "report.html") if report else None,
                "status": res.status,
                "stopped_by": res.stopped_by,
                "restored": res.restored,
                "canary_seen": res.canary_seen,
                "notes": res.notes,
                **summary,
            }
        )
    else:
        for n in res.notes:
            echo(f"note: {terminal_line(n)}", err=True)
        echo(
            f"{summary.get('flows', 0)} flows, {summary.get('hosts', 0)} hosts, "
            f"{summary.get('tls_failed', 0)} TLS failures; device "
            f"{'restored' if res.restored else 'NOT restored: run auditor restore'}",
            err=True,
        )
        echo(f"session {res.session}", err=True)
        echo(str(report / "report.html") if report else str(res.session))
    if res.stopped_by == "signal":
        sys.exit(130)  # interrupted: the session is closed and the device restored
    if not res.restored or res.stopped_by in AUDIT_FAILURES:
        why = getattr(res, "detail", None) or res.stopped_by
        why, where = terminal_line(why), terminal_line(res.session)
        echo(f"error: the audit stopped early ({why}); session {where}", err=True)
        sys.exit(1)


# how an audit can end that must not look like success (the session is kept and closed)
AUDIT_FAILURES = frozenset(
    {"device_error", "device_lost", "proxy_died", "disk_full", "write_failed", "error"}
)


def _decrypt_rules(path: Path | None) -> Any:
    """The rules of a ``--decrypt`` file (a bad file is one line, exit 1), or None."""
    if path is None:
        return None
    from auditor.analysis.decrypt import load_rules

    return load_rules(path)


class _AuditProgress(_LiveLine):
    """The audit's phase, scenario step, time left and live counts."""

    def __init__(self, quiet: bool):
        super().__init__(quiet)
        self.last_phase = ""

    def __call__(self, p: Any) -> None:
        if self.quiet:
            return
        if p.phase.startswith("OPERATOR:") and p.phase != self.last_phase:
            # a step needs the operator's hands (sim_insert): a line of its own, kept on screen
            if self.live is not None:
                self.live.stop()
                self.live = None
            self.console.print(terminal_line(p.phase))
            self.last_phase = p.phase
            return
        if not self.console.is_terminal:
            if p.phase != self.last_phase:
                self.console.print(terminal_line(f"audit: {p.phase}"))
                self.last_phase = p.phase
            return
        left = f"  ~{max(0.0, p.planned - p.elapsed):.0f}s left" if p.planned else ""
        c = p.counts
        pk = getattr(p, "packets", None)
        packets = ""
        if pk is not None:
            packets = f"  packets {pk}"
            if p.packets_dropped:
                packets += f" ({p.packets_dropped} dropped or lost)"
        self.show(
            f"{p.phase}: step {p.step_index}/{p.steps} {p.step}{left}  |  flows {c.flows}  "
            f"hosts {len(c.hosts)}  TLS failures {c.tls_failed}{packets}"
        )


# ------------------------------------------------------------------------------------- analyze


def parse_identifiers(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise click.BadParameter(f"{v!r}: use NAME=VALUE, e.g. imei=490154203237518")
        out[name.strip()] = value.strip()
    return out


@main.command()
@click.argument("sessions", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder [default: reports/<session-id>/].",
)
@click.option(
    "--format",
    "formats",
    default="html,json,csv,md",
    show_default=True,
    help="Comma-separated: html, json, csv (and Parquet), md, pdf (printed by Chromium).",
)
@click.option("--policy", default="default", show_default=True, help="default, eu-gdpr or a file.")
@click.option(
    "--intel",
    multiple=True,
    help="More knowledge: auditor YAML, a STIX 2.1 bundle, a hosts file or an adblock list "
    "(LABEL=PATH to name it). Repeatable.",
)
@click.option(
    "--identifier",
    "identifier",
    multiple=True,
    help="NAME=VALUE of a device identifier to search for (for imports without a profile).",
)
@click.option("--claims", type=click.Path(path_type=Path), default=None, help="Claims to check.")
@decrypt_option
@click.option(
    "--redact",
    is_flag=True,
    help="Write a shareable report: identifiers, phone number, accounts and personal values "
    "replaced by stable placeholders such as ‹IMEI-1›, in every encoding.",
)
@click.option(
    "--redact-value",
    multiple=True,
    metavar="NAME=VALUE",
    help="With --redact: another value to hide (repeatable), e.g. name=Alice.",
)
@json_option
@custody_logged("sessions")
@handle_errors
def analyze(
    sessions: tuple[Path, ...],
    out: Path | None,
    formats: str,
    policy: str,
    intel: tuple[str, ...],
    identifier: tuple[str, ...],
    claims: Path | None,
    decrypt_rules: Path | None,
    redact: bool,
    redact_value: tuple[str, ...],
    as_json: bool,
) -> None:
    """Analyse capture sessions: who received what from the phone, on what evidence.

    Writes findings.json, report.html, flows.csv/flows.parquet, endpoints.csv and
    summary.md. Reads only the saved sessions; works offline.

    \b
    Example:
        auditor analyze captures/20261128T101500Z-3f9a1c
        auditor analyze captures/S1 --policy eu-gdpr --claims claims.yaml --json
        auditor analyze captures/S1 --identifier imei=490154203237518 --intel amnesty=ioc.stix2
        auditor analyze captures/S1 --redact --out reports/S1-public
        auditor analyze captures/S1 --decrypt docs/examples/decrypt-xiaomi-sim.yaml
    """
    import tempfile

    from auditor.analysis.claims import load_claims
    from auditor.analysis.engine import analyze as run_analysis
    from auditor.analysis.engine import write
    from auditor.analysis.policy import load_policy

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    from auditor.analysis.report import ALL_FORMATS

    bad = set(fmts) - set(ALL_FORMATS)
    if bad:
        fail(f"unknown format(s): {', '.join(sorted(bad))}")
    ids = parse_identifiers(identifier)
    rules = _decrypt_rules(decrypt_rules)
    if redact_value and not redact:
        fail("--redact-value needs --redact")
    extra = parse_identifiers(redact_value)
    default_name = Path(sessions[0]).name + ("-redacted" if redact else "")
    target = out or DEFAULT_REPORTS / default_name
    with tempfile.TemporaryDirectory(prefix="auditor-analyze-") as tmp:
        # redacted: the extracted artifacts (originals) stay out of the report folder
        art = Path(tmp) / "artifacts" if redact else target / "artifacts"
        result = run_analysis(
            list(sessions),
            policy=load_policy(policy),
            intel=[Path(i) if "=" not in i else i for i in intel],  # type: ignore[misc]
            identifiers=ids,
            claims=load_claims(claims) if claims else None,
            artifacts_dir=art,
            decrypt=rules,
        )
        if redact:
            from auditor.analysis.redact import redact_analysis, write_redacted

            paths, _ = write_redacted(result, target, fmts, artifacts_src=art, extra=extra)
            result = redact_analysis(result, extra)[0]  # what is printed is redacted too
        else:
            paths = write(result, target, fmts)
    doc = result.doc
    if as_json:
        emit_json(
            {
                "report": str(target),
                "files": [str(p) for p in paths],
                "findings": len(doc["findings"]),
                "by_severity": _by_severity(doc["findings"]),
                "claims": [{"claim": c["claim"], "verdict": c["verdict"]} for c in doc["claims"]],
                "rule_errors": doc["rule_errors"],
                "warnings": len(doc["warnings"]),
            }
        )
        return
    for f in doc["findings"][:15]:
        echo(f"{terminal_line(f['severity']):>8}  {terminal_line(f['title'])}")
    if len(doc["findings"]) > 15:
        echo(f"          ... and {len(doc['findings']) - 15} more")
    for c in doc["claims"]:
        claim, verdict, reason = (terminal_line(c[k]) for k in ("claim", "verdict", "reason"))
        echo(f"claim: {claim}: {verdict} ({reason})")
    for e in doc["rule_errors"]:
        rule, error = terminal_line(e["rule"]), terminal_line(e["error"])
        echo(f"warning: rule {rule} failed: {error}", err=True)
    if doc["warnings"]:
        echo(f"{len(doc['warnings'])} warning(s), listed in the report", err=True)
    echo(str(target / ("report.html" if "html" in fmts else "")))


@main.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for diff.json, diff.md, diff.html (default reports/diff-A-B).",
)
@click.option(
    "--format",
    "formats",
    default="html,json,md",
    show_default=True,
    help="Comma-separated: html, json, md.",
)
@click.option(
    "--policy",
    default="default",
    show_default=True,
    help="For a session that is analysed first: default, eu-gdpr or a file.",
)
@click.option(
    "--intel",
    multiple=True,
    help="For a session that is analysed first: more knowledge, as in `auditor analyze`.",
)
@click.option(
    "--identifier",
    "identifier",
    multiple=True,
    help="NAME=VALUE of a device identifier to search for in a session analysed first.",
)
@click.option(
    "--claims",
    type=click.Path(path_type=Path),
    default=None,
    help="Before/after claims to check against the diff (see docs/diff.md).",
)
@json_option
@custody_logged("a", "b")
@handle_errors
def diff(
    a: Path,
    b: Path,
    out: Path | None,
    formats: str,
    policy: str,
    intel: tuple[str, ...],
    identifier: tuple[str, ...],
    claims: Path | None,
    as_json: bool,
) -> None:
    """Compare two audits: what changed from A (before) to B (after).

    A and B are report folders (with findings.json) or sessions (analysed first, as
    `auditor analyze` does, into OUT/sides/). Shows recipients that appeared or
    disappeared, identifiers newly sent or no longer sent, rates per hour, beacons, hosts
    that moved country and findings by rule, each with its flows on both sides. A change
    resting on few flows, or an absence on a side that recorded too little, is marked.

    \b
    Example:
        auditor diff reports/S1 reports/S2
        auditor diff captures/S1 captures/S2 --out reports/S1-vs-S2 --format md
        auditor diff reports/S1 reports/S2 --claims after.yaml --json
    """
    from auditor.analysis.diff import diff_command, dumps

    result = diff_command(
        a,
        b,
        out,
        [f.strip() for f in formats.split(",") if f.strip()],
        as_json,
        policy=policy,
        identifiers=parse_identifiers(identifier),
        intel=intel,
        claims=claims,
    )
    if as_json:
        emit_json_text(dumps(result.doc).rstrip("\n"))  # diff.json as written, escaped
        return
    for line in result.lines:
        echo(terminal_line(line), fit=True)
    echo(f"report {terminal_line(result.out)}", err=True)


def _by_severity(findings: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in findings:
        out[f["severity"]] = out.get(f["severity"], 0) + 1
    return out


@main.group()
def intel() -> None:
    """The knowledge base of endpoints: organisations, countries, jurisdictions, sources."""


@intel.command("lookup")
@click.argument("targets", nargs=-1, required=True)
@click.option("--intel", "extra", multiple=True, help="More knowledge files (see analyze).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target, one per line.")
@handle_errors
def intel_lookup(targets: tuple[str, ...], extra: tuple[str, ...], as_json: bool) -> None:
    """Who received what is sent to each HOST or IP, with the evidence and source of every
    fact: the recipient (from evidence about the name), the hosting (network and country),
    state control and legal exposure. `-` reads one target per line from standard input.

    \b
    Example:
        auditor intel lookup tracking.miui.com
        auditor intel lookup sdk.umeng.com app-measurement.com 8.8.8.8 --json
        cut -d, -f1 hosts.csv | auditor intel lookup - --json > attributions.jsonl
    """
    from auditor.intel.kb import lookup_command

    wanted: list[str] = []
    for t in targets:
        if t == "-":
            wanted += [line.strip() for line in sys.stdin if line.strip()]
        else:
            wanted.append(t)
    for n, (data, text) in enumerate(lookup_command(wanted, list(extra), as_json)):
        if n and not as_json:
            echo("")
        if as_json:
            emit_json_text(text)
        else:  # the text quotes the target and the knowledge (an imported data set's words)
            echo(quoted_on_one_line(text, [wanted[n], *_strings(data)]))


@intel.command("import")
@click.argument("fmt", metavar="FORMAT")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Id to keep it under (default: the format's).")
@json_option
@handle_errors
def intel_import(fmt: str, path: Path, name: str | None, as_json: bool) -> None:
    """Import a copy of a tracker or ownership data set you downloaded; every later analysis
    and lookup uses it, and every report names it with its licence and SHA-256.

    FORMAT is one of the readers listed by `auditor intel datasets --formats`
    (v2fly, nextdns, adguard, ghostery, trackerradar, exodus, xray...).

    \b
    Example:
        auditor intel import ghostery trackerdb.json
        auditor intel import trackerradar tracker-radar-main.zip --name tracker-radar
    """
    from auditor.intel.datasets import import_dataset

    info = import_dataset(fmt, path, name=name)
    if as_json:
        emit_json(info.to_json(), ascii_only=True)
    else:
        echo(
            terminal_line(
                f"imported {info.id}: {info.entities} entities, {info.rules} rules, "
                f"{info.skipped} skipped, {info.warnings} warnings ({info.licence}, "
                f"sha256 {info.sha256})"
            )
        )


@intel.command("datasets")
@click.option("--formats", "show_formats", is_flag=True, help="List the import formats.")
@json_option
@handle_errors
def intel_datasets(show_formats: bool, as_json: bool) -> None:
    """The data sets every analysis uses: the bundled snapshots and your imports.

    \b
    Example:
        auditor intel datasets
        auditor intel datasets --formats
    """
    from auditor.intel.datasets import FORMATS, load_datasets

    if show_formats:
        names = sorted(FORMATS)
        if as_json:
            emit_json(names)
        else:
            echo("\n".join(names))
        return
    infos = [d.to_json() for d in load_datasets().datasets]
    if as_json:
        emit_json(infos, ascii_only=True)
        return
    for d in infos:
        where = "bundled" if d.get("bundled") else "imported"
        echo(
            terminal_line(
                f"{d['id']:<22} {where:<8} {d.get('version') or d.get('date') or '-':<22} "
                f"{d['entities']:>6} entities {d['rules']:>7} rules  {d['licence']}"
            )
        )


@intel.command("remove")
@click.argument("dataset_id")
@handle_errors
def intel_remove(dataset_id: str) -> None:
    """Remove an imported data set (bundled snapshots stay).

    \b
    Example:
        auditor intel remove ghostery-trackerdb
    """
    from auditor.intel.datasets import remove_dataset

    if not remove_dataset(dataset_id):
        fail(f"no imported data set {dataset_id!r} (see: auditor intel datasets)")
    echo(f"removed {terminal_line(dataset_id)}")


# ---------------------------------------------------------------------------------------- demo


@main.command()
@click.option(
    "--out", default=str(DEFAULT_CAPTURES), show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--profile",
    "profile_name",
    default="xiaomi-mi10t",
    show_default=True,
    help="Virtual handset profile.",
)
@click.option("--duration", default="60s", show_default=True, help="How long to record.")
@click.option(
    "--reports", default=str(DEFAULT_REPORTS), show_default=True, type=click.Path(path_type=Path)
)
@json_option
@custody_logged()
@handle_errors
def demo(out: Path, reports: Path, profile_name: str, duration: str, as_json: bool) -> None:
    """Audit the built-in virtual handset, end to end, on this machine alone.

    Starts the virtual handset and its offline internet, a private adb server, runs
    `auditor audit` on it, stops everything it started and prints the session's path.

    \b
    Example:
        auditor demo
        auditor demo --profile huawei-p40 --duration 30s --json
    """
    from auditor.demo import run_demo

    DURATION.convert(duration, None, None)
    ui = _AuditProgress(quiet=as_json)
    try:
        result = run_demo(
            out,
            reports=reports,
            profile=profile_name,
            duration=duration,
            echo=None if as_json else lambda m: echo(terminal_line(m), err=True),
            on_progress=ui,
        )
    finally:
        ui.close()
    custody_touch(result["session"])
    if as_json:
        emit_json(result)
    else:
        echo(f"session {result['session']}", err=True)
        echo(result["report"])
    if not (result["verified"] and result["restored"]):
        sys.exit(1)


# commands defined beside what they drive, which take this module's helpers: added to the
# module auditor.cli (run as `python -m auditor.cli`, this file is __main__ and hands over to
# that module, so that they import one auditor.cli, complete but for these lines)
if __name__ != "__main__":
    from auditor.campaign.cli import campaign
    from auditor.fleet import cli as fleet_cli

    main.add_command(campaign)
    main.add_command(fleet_cli.export_command)
    main.add_command(fleet_cli.fleet_group)

if __name__ == "__main__":  # pragma: no cover
    from auditor.cli import main as _main

    _main()

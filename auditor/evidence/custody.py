"""The chain-of-custody log: one JSON line per ``auditor`` command that touched a session.

``custody.jsonl`` lives in the session folder. Each line says when (UTC), who (login user and
host), with which auditor, which command with which arguments, and how it ended (exit code).
Each line also holds the SHA-256 of the line before it (``prev_sha256``; ``null`` on the first
line), so an edited or deleted line breaks the chain where it was.

The log is appended to after the session is closed, so it is not one of the manifest's
artifacts; ``auditor bundle`` hashes it, and the bundle then seals it. Writing it is best
effort: the CLI warns when it cannot and never fails a command for it.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor import __version__, jsonio
from auditor.evidence.signing import json_shape
from auditor.session.layout import CUSTODY, MANIFEST
from auditor.timeutil import now_iso

CUSTODY_SCHEMA_VERSION = 1
MAX_LOG_SIZE = 64 * 1024 * 1024
"""A custody log larger than this is not read back (checked or bundled) in full."""

# a line is 3 levels deep; deeper ones are refused, so that a bundle.json that copies the
# entries stays within what a verifier reads (jsonio.MAX_DEPTH)
MAX_LINE_DEPTH = 32
MAX_LINE = 1024 * 1024  # a line auditor writes is under 10 KB
MAX_LINE_VALUES = 10_000  # ... and some 30 JSON values
MAX_LOG_VALUES = 2_000_000  # 60,000 commands' lines
MAX_PROBLEMS = 100

_TAIL_WINDOW = 64 * 1024


def login_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return ""


def outcome_of(exit_code: int | None) -> str | None:
    if exit_code is None:
        return None
    return {0: "ok", 130: "interrupted"}.get(exit_code, "failed")


@dataclass(frozen=True, slots=True)
class CustodyEntry:
    """One line of ``custody.jsonl``; its JSON form is :meth:`to_dict` in this key order."""

    command: str
    argv: tuple[str, ...]
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    ts: str = field(default_factory=now_iso)
    user: str = field(default_factory=login_user)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    cwd: str = field(default_factory=_cwd)
    auditor_version: str = __version__

    def to_dict(self, prev_sha256: str | None = None) -> dict[str, Any]:
        return {
            "schema_version": CUSTODY_SCHEMA_VERSION,
            "ts": self.ts,
            "user": self.user,
            "host": self.host,
            "pid": self.pid,
            "auditor_version": self.auditor_version,
            "command": self.command,
            "argv": list(self.argv),
            "cwd": self.cwd,
            "exit_code": self.exit_code,
            "outcome": outcome_of(self.exit_code),
            "details": self.details,
            "prev_sha256": prev_sha256,
        }


def is_session(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def _last_line(fd: int, size: int) -> bytes | None:
    """The last line of the file (without its newline), read backwards from the end."""
    if size == 0:
        return None
    window = _TAIL_WINDOW
    while True:
        start = max(0, size - window)
        chunk = os.pread(fd, size - start, start)
        body = chunk[:-1] if chunk.endswith(b"\n") else chunk
        cut = body.rfind(b"\n")
        if cut >= 0:
            return body[cut + 1 :]
        if start == 0:
            return body
        window *= 4


def append(session: Path, entry: CustodyEntry) -> Path:
    """Append ``entry`` to ``session/custody.jsonl`` (created 0600), chained to the last line.

    An exclusive ``flock`` keeps two auditor processes from chaining to the same line."""
    path = Path(session) / CUSTODY
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        last = _last_line(fd, size)
        prev = hashlib.sha256(last).hexdigest() if last is not None else None
        line = json.dumps(entry.to_dict(prev), ensure_ascii=False, separators=(",", ":"))
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (b"\n" if torn else b"") + line.encode("utf-8") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    return path


def record(
    sessions: Iterable[Path],
    command: str,
    argv: Iterable[str],
    exit_code: int | None,
    details: dict[str, Any] | None = None,
) -> list[str]:
    """Append one entry to each of ``sessions`` that is a session folder; returns one warning
    per log that could not be written (the caller shows them and carries on)."""
    warnings = []
    entry = CustodyEntry(command, tuple(argv), exit_code, dict(details or {}))
    seen: set[Path] = set()
    for s in sessions:
        path = Path(s)
        key = path.resolve()
        if key in seen or not is_session(path):
            continue
        seen.add(key)
        try:
            append(path, entry)
        except OSError as exc:
            warnings.append(f"custody log of {path} not written: {exc.strerror or exc}")
    return warnings


def parse_log(data: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries of a custody log and its problems: unreadable lines and chain breaks.

    A line is read only when it is at most :data:`MAX_LINE` bytes and
    :data:`MAX_LINE_VALUES` JSON values, and the log only up to :data:`MAX_LOG_VALUES`
    values, so that a log of small hostile lines cannot take gigabytes to hold; the
    problems are named :data:`MAX_PROBLEMS` at most."""
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    prev_line: bytes | None = None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        problems.append(f"line {len(lines)} is truncated (no newline)")
    values = 0
    for n, raw in enumerate(lines, 1):
        why = None
        if len(raw) > MAX_LINE:
            why = f"line {n} is longer than {MAX_LINE} bytes; not read"
        else:
            depth, count = json_shape(raw)
            values += count
            if depth > MAX_LINE_DEPTH:
                why = f"line {n}: not usable JSON: nested more than {MAX_LINE_DEPTH} levels deep"
            elif count > MAX_LINE_VALUES:
                why = f"line {n} holds more than {MAX_LINE_VALUES} values; not read"
            elif values > MAX_LOG_VALUES:
                problems.append(f"lines {n} to {len(lines)} not read: the log is too large")
                break
        try:
            if why is not None:
                raise jsonio.JsonError(why)
            obj = jsonio.loads(raw, f"line {n}", max_depth=MAX_LINE_DEPTH)
        except jsonio.JsonError as exc:
            problems.append(why or (str(exc) if "nested" in str(exc) else f"line {n} is not JSON"))
            prev_line = raw
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {n} is not a JSON object")
            prev_line = raw
            continue
        want = hashlib.sha256(prev_line).hexdigest() if prev_line is not None else None
        if obj.get("prev_sha256") != want:
            problems.append(
                f"line {n} does not follow line {n - 1} (hash chain broken: a line was "
                "edited, removed or inserted)"
                if n > 1
                else "line 1 follows a line that is no longer there (hash chain broken)"
            )
        entries.append(obj)
        prev_line = raw
    if len(problems) > MAX_PROBLEMS:
        problems[MAX_PROBLEMS:] = [f"and {len(problems) - MAX_PROBLEMS} more problems"]
    return entries, problems


def read_log(path: Path) -> tuple[bytes, list[dict[str, Any]], list[str]]:
    """Bytes, entries and problems of the custody log at ``path`` (empty when absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return b"", [], []
    except OSError as exc:
        return b"", [], [f"unreadable: {exc.strerror or exc}"]
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return b"", [], ["not a regular file"]
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_LOG_SIZE + 1)
        except OSError as exc:
            return b"", [], [f"unreadable: {exc.strerror or exc}"]
    if len(data) > MAX_LOG_SIZE:
        return b"", [], [f"larger than {MAX_LOG_SIZE} bytes; not read"]
    entries, problems = parse_log(data)
    return data, entries, problems


def check_log(path: Path) -> list[str]:
    return read_log(path)[2]

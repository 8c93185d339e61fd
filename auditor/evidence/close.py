"""Sealing a session its recorder left open (``auditor close``): close it as incomplete, say
why and by whom in the manifest, and log it in the custody log."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.errors import SessionError
from auditor.evidence.custody import CustodyEntry, append, login_user
from auditor.records import EventRecord, HttpRecord
from auditor.session.layout import FLOWS, MANIFEST, STATUS_INCOMPLETE, STATUS_OPEN, sha256_file
from auditor.session.manifest import imported_files, read_manifest
from auditor.session.reader import Session
from auditor.session.writer import close_session
from auditor.timeutil import now_iso

STOPPED_LEFT_OPEN = "left_open"
"""``stopped_by`` of a session that its recorder never closed, sealed afterwards."""
MAX_SEALER_CHARS = 200
MAX_REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class LateSeal:
    """What :func:`seal_late` did: the session, its sealed manifest, whether the recorder's
    last word was a clean stop, and warnings (the custody log not written, a copy not whole)."""

    path: Path
    manifest: dict[str, Any]
    stopped_cleanly: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": str(self.path),
            "status": self.manifest.get("status"),
            "sealed_late": self.manifest.get("sealed_late"),
            "stop_detail": self.manifest.get("stop_detail"),
            "artifacts": len(self.manifest.get("artifacts") or []),
            "stopped_cleanly": self.stopped_cleanly,
            "warnings": list(self.warnings),
        }


def seal_late(path: Path | str, *, by: str, reason: str = "", argv: Sequence[str] = ()) -> LateSeal:
    """Seal a session its recorder left open (a crash, ``kill -9``, mitmdump run with
    ``auditor_close_on_done=false``): hash its artifacts and close it as ``incomplete``, with
    ``stopped_by: left_open``, why in ``stop_detail``, and ``sealed_late`` (when, by whom, the
    login user and host, the reason) in the manifest; then one line in the custody log
    (``command: close``, ``details.sealed_late``), with ``argv`` as the command line.

    ``by``: who seals it (a name, required, at most 200 characters; ``reason`` at most
    2,000). ``ended_at`` becomes the time of the last record, not the time of sealing. An
    imported file whose copy is not whole (the import was killed mid-copy) is kept and hashed,
    but no longer named as the import's original.

    Raises SessionError: not a session, an unreadable manifest, no ``by``, not open (already
    closed), still being recorded (a writer holds it), or a link or special file in it;
    SessionWriteError (a SessionError) when the manifest cannot be written: the session is
    then still open. A custody log that cannot be written is a warning, as in the CLI."""
    path = Path(path)
    who = by.strip()
    if not who:
        raise SessionError(f"{path}: say who seals the session (by)")
    if len(who) > MAX_SEALER_CHARS or len(reason) > MAX_REASON_CHARS:
        raise SessionError(
            f"{path}: 'by' is limited to {MAX_SEALER_CHARS} characters and the reason to "
            f"{MAX_REASON_CHARS}"
        )
    manifest = read_manifest(path)
    if manifest.get("status") != STATUS_OPEN:
        raise SessionError(f"{path} is already closed ({manifest.get('status')}); nothing to seal")
    with _sole_access(path):
        stop = _last_stop(Session(path))
        updates: dict[str, Any] = {}
        capture = manifest.get("capture")
        if isinstance(capture, dict) and _mark_partial_copies(path, capture):
            updates["capture"] = capture
        sealed = {
            "at": now_iso(),
            "by": who,
            "user": login_user(),
            "host": socket.gethostname(),
            "reason": reason,
        }
        closed = close_session(
            path,
            STATUS_INCOMPLETE,
            stopped_by=STOPPED_LEFT_OPEN,
            stop_detail=stop.detail,
            sealed_late=sealed,
            ended_at=stop.last_ts or manifest.get("started_at") or sealed["at"],
            **updates,
        )
    warnings = [
        f"{f['name']}: {f['not_copied']}"
        for f in imported_files(closed)
        if isinstance(f.get("not_copied"), str) and "name" in f
    ]
    warnings += _log_late_seal(path, closed, sealed, argv)
    return LateSeal(path, closed, stop.clean, tuple(warnings))


@contextlib.contextmanager
def _sole_access(path: Path) -> Iterator[None]:
    """Hold ``flows.jsonl`` exclusively: no writer (which holds it shared) has it open."""
    try:
        fd = os.open(path / FLOWS, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield  # nothing was ever recorded: no writer to wait for
        return
    except OSError as exc:
        raise SessionError(f"{path / FLOWS}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SessionError(
                f"{path} is still being recorded: a process (mitmdump's recorder, or the "
                "auditor command that runs it) has it open; stop that process first"
            ) from None
        yield
    finally:
        os.close(fd)  # also releases the lock


@dataclass(frozen=True, slots=True)
class _Stop:
    clean: bool
    detail: str
    last_ts: str | None


def _last_stop(sess: Session) -> _Stop:
    """How the recorder last stopped (its own events), and the time of the last record."""
    last_kind: str | None = None
    failure = ""
    last_ts: str | None = None
    for rec in sess.records():
        stamps: tuple[Any, ...]
        if isinstance(rec, HttpRecord):
            stamps = (rec.request_start, rec.request_end, rec.response_start, rec.response_end)
        else:
            stamps = (getattr(rec, "ts", None),)
        for ts in stamps:
            if isinstance(ts, str) and ts and (last_ts is None or ts > last_ts):
                last_ts = ts
        if isinstance(rec, EventRecord) and rec.kind.startswith("recorder_"):
            last_kind = rec.kind
            if rec.kind == "recorder_failed":
                failure = rec.message
    if last_kind == "recorder_stopped" and not failure:
        detail = (
            "left open: its recorder stopped cleanly but did not close it (mitmdump ran "
            "with auditor_close_on_done=false, or the auditor command running it died)"
        )
        return _Stop(True, detail, last_ts)
    if failure:
        detail = f"left open: its recorder stopped on a write failure ({failure[:300]})"
    else:
        detail = (
            "left open: no clean stop was recorded (the recorder or the auditor command "
            "running it was killed or crashed); flows in flight then are missing"
        )
    return _Stop(False, detail, last_ts)


def _mark_partial_copies(path: Path, capture: dict[str, Any]) -> bool:
    """An imported file whose copy under ``original/`` is not the file the import read (it
    was killed mid-copy) stays, hashed, but is no longer named as the import's original."""
    changed = False
    for f in imported_files({"capture": capture}):
        rel = f.get("original")
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            continue
        target = path / rel
        try:
            size = target.stat().st_size if target.is_file() else None
            whole = size == f.get("size") and sha256_file(target) == f.get("sha256")
        except OSError:
            size, whole = None, False
        if not whole:
            f["original"] = None
            held = "no copy" if size is None else f"a copy of {size} bytes"
            f["not_copied"] = (
                f"the import was cut short: {held} of the {f.get('size')} it read "
                f"({rel}, kept but not read as the original)"
            )
            changed = True
    return changed


def _log_late_seal(
    path: Path, manifest: dict[str, Any], sealed: dict[str, Any], argv: Sequence[str]
) -> list[str]:
    try:
        details = {
            "sealed_late": True,
            "by": sealed["by"],
            "reason": sealed["reason"],
            "status": manifest.get("status"),
            "stop_detail": manifest.get("stop_detail"),
            "manifest_sha256": sha256_file(path / MANIFEST),
        }
        append(path, CustodyEntry("close", tuple(argv), 0, details, ts=sealed["at"]))
    except OSError as exc:
        return [f"custody log of {path} not written: {exc.strerror or exc}"]
    return []

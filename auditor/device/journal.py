"""The restore journal: every change auditor makes to a handset, written down before it is made.

A journal is an append-only JSON-lines file in the session (``restore.jsonl``). Three kinds of
line:

    {"op": "change", "id": 3, "ts": ..., "serial": ..., "what": "...", "undo": {...}}
    {"op": "applied", "id": 3, "ts": ...}
    {"op": "undone", "id": 3, "ts": ..., "result": "ok" | "error: ..."}

``change`` is written and fsync'ed *before* the device is touched, so a crash between the two
still leaves a line to undo; undo actions are therefore written to be idempotent. Undoing walks
the changes in reverse order and appends ``undone`` after each, so a change already undone is
never undone twice, even across processes (``auditor restore`` after a crash).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.session.writer import SessionWriteError, append_line, write_error
from auditor.timeutil import now_iso

log = logging.getLogger(__name__)

JOURNAL = "restore.jsonl"


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    serial: str
    what: str
    undo: dict[str, Any]
    applied: bool = False
    undone: bool = False


@dataclass
class UndoReport:
    undone: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)
    # undone on the device, but the journal could not say so (its disk is full): undoing is
    # idempotent, so `auditor restore` would only undo them again
    unrecorded: list[Change] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


UndoFn = Callable[[dict[str, Any]], None]


class RestoreJournal:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def in_session(cls, session: Path) -> RestoreJournal:
        return cls(Path(session) / JOURNAL)

    def _append(self, obj: dict[str, Any]) -> None:
        """Append one line and fsync it. Raises SessionWriteError (the disk is full...), the
        journal then still ending on its last whole line."""
        line = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn last line (a crash mid-write) must not swallow this
            append_line(fd, line, self.path)
            os.fsync(fd)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        finally:
            os.close(fd)

    def _lines(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                log.warning("%s: line %d unreadable, skipped", self.path, n)
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def changes(self) -> list[Change]:
        by_id: dict[int, Change] = {}
        for obj in self._lines():
            op, cid = obj.get("op"), obj.get("id")
            if not isinstance(cid, int):
                continue
            if op == "change" and isinstance(obj.get("undo"), dict):
                by_id[cid] = Change(
                    cid, str(obj.get("serial", "")), str(obj.get("what", "")), obj["undo"]
                )
            elif op in ("applied", "undone") and cid in by_id:
                c = by_id[cid]
                by_id[cid] = Change(
                    c.id,
                    c.serial,
                    c.what,
                    c.undo,
                    applied=c.applied or op == "applied",
                    undone=c.undone or op == "undone",
                )
        return [by_id[k] for k in sorted(by_id)]

    def pending(self) -> list[Change]:
        """Changes not yet undone, newest first (the order to undo them in)."""
        return [c for c in reversed(self.changes()) if not c.undone]

    def record(self, serial: str, what: str, undo: dict[str, Any]) -> int:
        """Write a change down before making it. Returns its id."""
        ids = [c.id for c in self.changes()]
        cid = (max(ids) + 1) if ids else 1
        self._append(
            {
                "op": "change",
                "id": cid,
                "ts": now_iso(),
                "serial": serial,
                "what": what,
                "undo": undo,
            }
        )
        return cid

    def applied(self, cid: int) -> None:
        self._append({"op": "applied", "id": cid, "ts": now_iso()})

    def undo_all(self, undo: UndoFn, *, serial: str | None = None) -> UndoReport:
        """Undo every pending change (of ``serial`` if given), newest first. A failure is kept
        pending (to be retried by ``auditor restore``) and does not stop the others."""
        report = UndoReport()
        for change in self.pending():
            if serial is not None and change.serial != serial:
                continue
            try:
                undo(change.undo)
            except Exception as exc:  # noqa: BLE001 - keep undoing the others
                log.error("could not undo %s: %s", change.what, exc)
                report.failed.append((change, str(exc) or type(exc).__name__))
                continue
            report.undone.append(change)
            try:
                self._append({"op": "undone", "id": change.id, "ts": now_iso(), "result": "ok"})
            except SessionWriteError as exc:  # the device comes first: go on undoing
                log.error("undid %s, but cannot record it: %s", change.what, exc)
                report.unrecorded.append(change)
        return report


def find_pending(captures: Path, serial: str) -> list[Path]:
    """Sessions under ``captures`` whose journal still holds changes to ``serial``."""
    out: list[Path] = []
    if not captures.is_dir():
        return out
    for child in sorted(captures.iterdir()):
        j = child / JOURNAL
        if j.is_file() and any(c.serial == serial for c in RestoreJournal(j).pending()):
            out.append(child)
    return out

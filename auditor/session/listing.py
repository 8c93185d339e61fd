"""Listing the sessions under a folder (``auditor sessions``): one line each, an unreadable
session listed with the reason instead of hiding the others."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.errors import SessionError
from auditor.session.layout import MANIFEST, STATUS_OPEN
from auditor.session.manifest import drop_mistyped
from auditor.session.reader import Session
from auditor.timeutil import parse_iso

STATUS_UNREADABLE = "unreadable"
"""How ``auditor sessions`` lists a folder whose manifest cannot be read (SessionInfo.problem)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    path: str
    status: str
    device: str
    started_at: str | None
    duration_s: float | None
    flows: int
    tls_failed: int
    bytes_up: int
    bytes_down: int
    problem: str | None = None  # why the session could not be read (status "unreadable")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def unreadable(cls, path: Path, problem: str) -> SessionInfo:
        return cls(path.name, str(path), STATUS_UNREADABLE, "-", None, None, 0, 0, 0, 0, problem)


def describe_device(device: dict[str, Any]) -> str:
    if not device:
        return "-"
    label = " ".join(str(device[k]) for k in ("manufacturer", "model") if device.get(k))
    serial = device.get("serial")
    return f"{label} ({serial})" if label and serial else label or str(serial or "-")


def _count(summary: dict[str, Any], key: str) -> int:
    value = summary.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def session_info(path: Path) -> SessionInfo:
    """One line of ``auditor sessions``. SessionError when the manifest cannot be read; a
    section of the wrong type is read as absent (as analysis reads it)."""
    sess = Session(path)
    m = dict(sess.manifest)
    drop_mistyped(m)  # a section of the wrong type is read as absent
    summary = m.get("summary")
    if not isinstance(summary, dict) or m.get("status") == STATUS_OPEN:
        summary = sess.summary().to_dict()
    started = m.get("started_at") if isinstance(m.get("started_at"), str) else None
    try:
        duration = sess.duration_seconds()
        if duration is None and started:
            duration = time.time() - parse_iso(started)
    except (ValueError, TypeError, KeyError, AttributeError):
        duration = None  # a time that cannot be read: the duration is unknown, not an error
    return SessionInfo(
        id=str(m.get("session_id") or sess.path.name),
        path=str(sess.path),
        status=str(m.get("status", "?")),
        device=describe_device(m.get("device") or {}),
        started_at=started,
        duration_s=round(duration, 3) if duration is not None else None,
        flows=_count(summary, "flows"),
        tls_failed=_count(summary, "tls_failed"),
        bytes_up=_count(summary, "bytes_up"),
        bytes_down=_count(summary, "bytes_down"),
    )


def list_sessions(root: Path) -> tuple[list[SessionInfo], list[str]]:
    """Sessions under ``root``, oldest first, and one warning per session that cannot be read.
    Such a session is listed too, as ``unreadable`` with the reason (``problem``); one bad
    manifest never hides the others."""
    root = Path(root)
    if not root.is_dir():
        raise SessionError(f"{root}: no such folder")
    infos, warnings = [], []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not (child / MANIFEST).exists():
            continue
        try:
            infos.append(session_info(child))
        except Exception as exc:  # noqa: BLE001 - one session's damage must not hide the rest
            why = str(exc) if isinstance(exc, SessionError) else f"{type(exc).__name__}: {exc}"
            infos.append(SessionInfo.unreadable(child, why))
            warnings.append(why if isinstance(exc, SessionError) else f"{child}: {why}")
    infos.sort(key=lambda i: (i.started_at or "", i.id))
    return infos, warnings

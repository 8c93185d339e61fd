"""The session manifest: reading it (strictly, or leniently for analysis), the digest its
seal holds, and the section an import writes (``capture.import``)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, cast

from auditor import jsonio
from auditor.errors import SessionError
from auditor.fsutil import open_regular
from auditor.session.layout import MANIFEST
from auditor.timeutil import parse_iso

MAX_MANIFEST_BYTES = 256 * 1024 * 1024
"""A manifest larger than this is not read (one of a million artifacts is about 150 MB)."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The session's manifest. SessionError, with the reason, when there is none or it cannot
    be used (not JSON, nested deeper than any manifest auditor writes, not an object, text
    that is not Unicode)."""
    mpath = path / MANIFEST
    try:
        with open_regular(mpath) as fh:  # a FIFO or a device would hang or flood the reader
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise jsonio.JsonError(f"larger than {MAX_MANIFEST_BYTES} bytes")
        obj = jsonio.loads(data, str(mpath), expect=dict)
    except FileNotFoundError:
        raise SessionError(f"{path}: not a capture session (no {MANIFEST})") from None
    except jsonio.JsonError as exc:
        why = str(exc).removeprefix(f"{mpath}: ")
        raise SessionError(f"{mpath}: unreadable manifest: {why}") from None
    except OSError as exc:
        raise SessionError(f"{mpath}: unreadable manifest: {exc.strerror or exc}") from None
    if _SURROGATE.search(data) and not _is_unicode(obj):
        # json reads a lone surrogate (escaped, or as bytes); no manifest auditor writes holds
        # one, and it could be neither hashed for the seal nor written back
        raise SessionError(f"{mpath}: unreadable manifest: text with a lone surrogate")
    return cast(dict[str, Any], obj)


# a surrogate escaped (\\uD800-\\uDFFF) or in bytes json.loads lets through (ED A0-BF)
_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _is_unicode(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# The manifest's sections and their JSON types, as readers rely on them.
_MANIFEST_TYPES: dict[str, type] = {
    "device": dict,
    "scenario": dict,
    "capture": dict,
    "summary": dict,
    "artifacts": list,
    "versions": dict,
}


def read_manifest_lenient(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The manifest for analysis, whatever state it is in, and what could not be read of it.

    A missing manifest still raises SessionError (the folder is no session); an unreadable one
    gives a stand-in (``status: unknown``), and a section of the wrong type is left out."""
    problems: list[str] = []
    try:
        manifest = read_manifest(path)
    except SessionError as exc:
        if not (path / MANIFEST).exists():
            raise
        problems.append(f"{exc}; device, scenario and status are unknown")
        manifest = {"session_id": path.name, "status": "unknown"}
    return manifest, problems + drop_mistyped(manifest)


def drop_mistyped(manifest: dict[str, Any]) -> list[str]:
    """Take the sections of the wrong JSON type out of ``manifest``; say which."""
    problems = []
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            found, wanted = type(value).__name__, kind.__name__
            problems.append(f"{MANIFEST}: {key!r} is a {found}, not a {wanted}; left out")
            del manifest[key]
    return problems


SEAL = "seal"
SEAL_OVER = "this manifest without its seal, as JSON with sorted keys and no spaces (UTF-8)"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The SHA-256 the seal holds: it catches a manifest edited or damaged after the session
    closed. (It is no signature: whoever edits the manifest can recompute it; a signed bundle,
    ``auditor bundle --sign``, is what resists that.)"""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


#: The events ``auditor import`` writes about itself (auditor.imports.session).
IMPORT_EVENTS = frozenset({"import_started", "import", "import_failed"})


def imported_span(manifest: dict[str, Any]) -> tuple[str, str] | None:
    """The first and last time of an imported session's traffic (``capture.import``), or
    None for a live session or an import whose files held no time."""
    capture = manifest.get("capture")
    imp = capture.get("import") if isinstance(capture, dict) else None
    if not isinstance(imp, dict):
        return None
    first, last = imp.get("first_ts"), imp.get("last_ts")
    if not (isinstance(first, str) and isinstance(last, str)):
        return None
    try:
        parse_iso(first), parse_iso(last)
    except ValueError:
        return None
    return first, last


def imported_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of ``capture.import.files`` (an imported session), or none."""
    capture = manifest.get("capture")
    imp = capture.get("import") if isinstance(capture, dict) else None
    files = imp.get("files") if isinstance(imp, dict) else None
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []

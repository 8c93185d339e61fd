"""Verifying a closed session (``auditor verify``): every artifact's SHA-256 and size against
the manifest, the manifest against its seal, nothing unlisted, and the custody log's chain."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.evidence.custody import check_log
from auditor.session.layout import CUSTODY, MANIFEST, STATUS_OPEN, sha256_file, walk_folder
from auditor.session.manifest import SEAL, imported_files, manifest_digest, read_manifest

# files that may grow after the session is closed, and only at their end: `auditor restore`
# appends to the restore journal when it finishes a restore the audit could not
APPEND_ONLY = frozenset({"restore.jsonl"})


def _prefix_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyResult:
    path: Path
    ok: bool
    checked: int
    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # they do not fail the check (e.g. the custody log's)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": str(self.path),
            "ok": self.ok,
            "checked": self.checked,
            "missing": list(self.missing),
            "changed": list(self.changed),
            "unlisted": list(self.unlisted),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def verify_session(path: Path) -> VerifyResult:
    """Recompute every artifact's SHA-256 and size against the manifest.

    The custody log is not an artifact; a break in its hash chain is a warning."""
    path = Path(path)
    manifest = read_manifest(path)
    problems: list[str] = []
    if manifest.get("status") == STATUS_OPEN:
        problems.append("session was never closed: no artifact hashes to check")
    listed: dict[str, dict[str, Any]] = {}
    for art in manifest.get("artifacts") or []:
        if isinstance(art, dict) and isinstance(art.get("path"), str):
            listed[art["path"]] = art
        else:
            problems.append(f"malformed artifact entry: {art!r}")
    missing, changed = [], []
    warnings: list[str] = []
    seal = manifest.get(SEAL)
    if isinstance(seal, dict):
        if seal.get("sha256") != manifest_digest(manifest):
            changed.append(MANIFEST)  # edited or damaged after the session was closed
    elif manifest.get("status") != STATUS_OPEN:
        warnings.append(f"{MANIFEST}: no seal (closed by an older auditor); edits go unnoticed")
    for rel, art in sorted(listed.items()):
        fpath = path / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            problems.append(f"artifact path escapes the session: {rel}")
            continue
        if not fpath.is_file():
            missing.append(rel)
            continue
        size = fpath.stat().st_size
        if size == art.get("size") and sha256_file(fpath) == art.get("sha256"):
            continue
        recorded = art.get("size")
        if (
            rel in APPEND_ONLY
            and isinstance(recorded, int)
            and size > recorded
            and _prefix_sha256(fpath, recorded) == art.get("sha256")
        ):
            warnings.append(
                f"{rel}: {size - recorded} bytes appended after the session was closed "
                "(auditor restore); what was sealed is unchanged"
            )
            continue
        changed.append(rel)
    on_disk, odd = walk_folder(path)
    unlisted = [rel for rel in on_disk if rel not in listed]
    problems += odd
    problems += import_copy_problems(manifest, listed)
    ok = not (missing or changed or unlisted or problems)
    return VerifyResult(
        path,
        ok,
        len(listed),
        tuple(missing),
        tuple(changed),
        tuple(unlisted),
        tuple(problems),
        tuple(warnings + _custody_warnings(path)),
    )


def import_copy_problems(manifest: dict[str, Any], listed: dict[str, dict[str, Any]]) -> list[str]:
    """Imported files whose sealed copy is not the file the import read: the import recorded
    the source's size and SHA-256 before copying, and the copy under ``original/`` must be
    those bytes (a copy cut short by a full disk hashes to itself, never to the source)."""
    out = []
    for f in imported_files(manifest):
        rel = f.get("original")
        if not isinstance(rel, str):
            continue  # not copied (the import failed first): the manifest claims no copy
        art = listed.get(rel)
        want_size, want_sha = f.get("size"), f.get("sha256")
        if art is None:
            out.append(f"{rel}: the import recorded this copy, but it is not among the artifacts")
        elif art.get("size") != want_size or art.get("sha256") != want_sha:
            out.append(
                f"{rel}: not the file the import read ({want_size} bytes, SHA-256 "
                f"{str(want_sha)[:16]}...): the sealed copy has {art.get('size')} bytes; the "
                "import was cut short, or the copy was replaced"
            )
    return out


def _custody_warnings(path: Path) -> list[str]:
    return [f"{CUSTODY}: {w}" for w in check_log(path / CUSTODY)]

"""The layout of a capture session folder: its file names, its statuses, which of its files
are artifacts, and walking and hashing them.

Layout of ``captures/<session-id>/``::

    manifest.json   what, when, where, with which tools; the artifact hashes once closed
    flows.jsonl     one record per line (auditor.records), appended and flushed as it happens
    bodies/         content-addressed bodies (auditor.session.bodies)
    custody.jsonl   the chain-of-custody log (auditor.evidence.custody); no artifact
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from auditor.fsutil import open_regular

MANIFEST = "manifest.json"
FLOWS = "flows.jsonl"
BODIES = "bodies"
TLS_KEYLOG = "tls/keylog.txt"
"""mitmdump's TLS secrets (NSS key log), both sides of every connection it decrypted: they
decrypt the session's packet captures, so the file is as personal as the traffic."""
MANIFEST_SCHEMA_VERSION = 1

STATUS_OPEN = "open"
STATUS_COMPLETE = "complete"
STATUS_INCOMPLETE = "incomplete"

HASH_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The file's SHA-256. OSError for a file that is not regular (a FIFO or a device, even
    through a link), which would block or never end."""
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


CUSTODY = "custody.jsonl"
"""The chain-of-custody log (auditor.evidence.custody). It is appended to after the session
closes, so it is no artifact: the manifest never lists it and verify does not expect it."""


def is_artifact(rel: str) -> bool:
    """Whether a file at ``rel`` (relative, ``/``-separated) in a session folder is one of the
    artifacts the manifest hashes: every file but the manifest and the custody log. Dot-files
    too: a reader that lists a folder (``packets/``) would read them, so what is not hashed
    must be named by verify (one rule: nothing unhashed is read unnoticed)."""
    return rel not in (MANIFEST, CUSTODY)


def walk_folder(root: Path) -> tuple[list[str], list[str]]:
    """The artifacts under ``root`` (relative paths, sorted), and what a session must not
    hold: links (a linked folder is not walked, yet a reader listing it would follow it) and
    files that are not regular (a FIFO would hang whoever hashes or reads it)."""
    out: list[str] = []
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            try:
                st = os.lstat(full)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISLNK(st.st_mode):
                odd.append(f"{rel}: a symbolic link (a session holds files only)")
            elif stat.S_ISREG(st.st_mode):
                if is_artifact(rel):
                    out.append(rel)
            elif not stat.S_ISDIR(st.st_mode):
                odd.append(f"{rel}: not a regular file")
    return sorted(out), sorted(odd)

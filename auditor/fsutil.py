"""Owner-only folders: what auditor creates (sessions, reports, its home with the CA key and
the device locks) is readable by its owner only, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path


def private_mkdirs(path: Path | str) -> Path:
    """Create ``path`` and any missing parents with mode 0700 (the umask does not widen or
    narrow it). Folders that already exist are left as they are."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to change
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
    return path

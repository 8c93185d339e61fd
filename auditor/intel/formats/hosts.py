"""hosts files: ``0.0.0.0 host [host...]`` lines; each host matches exactly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from auditor.intel.ipdb import parse_ip
from auditor.intel.model import (
    IntelImportError,
    Source,
)
from auditor.intel.schema import (
    LOCAL_NAMES,
    IndicatorKind,
    IntelEntry,
    IntelFile,
    IntelFormat,
    Warnings,
    finish_file,
    normalise_host,
    safe_text,
    utf8_text,
)

log = logging.getLogger(__name__)

# --- hosts files --------------------------------------------------------------------------------


def parse_hosts(text: str, *, path: Path, label: str, source: Source, **_: Any) -> IntelFile:
    """``ADDRESS HOST [HOST...]`` lines (``0.0.0.0 tracker.example``); ``#`` starts a comment."""
    text = utf8_text(text)
    entries: list[IntelEntry] = []
    warnings = Warnings()
    ignored = 0
    content = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        content += 1
        parts = body.split()
        if len(parts) < 2 or parse_ip(parts[0]) is None:
            warnings.add(f"{path}:{lineno}: expected 'ADDRESS HOST...', got {safe_text(body)!r}")
            continue
        for name in parts[1:]:
            if name.lower() in LOCAL_NAMES:
                ignored += 1
                continue
            host = normalise_host(name)
            if host is None:
                warnings.add(f"{path}:{lineno}: not a host name: {safe_text(name)!r}")
                continue
            entries.append(
                IntelEntry(IndicatorKind.HOST, host, label, source, where=f"{path.name}:{lineno}")
            )
    if content and not entries and warnings.count:
        raise IntelImportError(f"{warnings.kept[0]} (no valid line in a hosts file)")
    return finish_file(path, label, IntelFormat.HOSTS, source, entries, warnings, ignored)

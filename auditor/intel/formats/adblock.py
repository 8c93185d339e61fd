"""adblock lists: ``||host^`` rules match the host and every host under it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from auditor.intel.model import (
    IntelImportError,
    Source,
)
from auditor.intel.schema import (
    ADBLOCK_RULE_RE,
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

# --- adblock lists ------------------------------------------------------------------------------


def parse_adblock(text: str, *, path: Path, label: str, source: Source, **_: Any) -> IntelFile:
    """Adblock-style ``||host^`` rules (options after ``$`` are kept as a note).

    Exception rules (``@@``), cosmetic rules (``##``) and path or regex rules are valid but say
    nothing about a whole host: they are counted as ignored.
    """
    text = utf8_text(text)
    entries: list[IntelEntry] = []
    warnings = Warnings()
    ignored = 0
    content = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        rule = line.strip()
        if not rule or rule.startswith("!") or (rule.startswith("[") and rule.endswith("]")):
            continue
        content += 1
        if rule.startswith("@@") or "##" in rule or "#@#" in rule or "#?#" in rule:
            ignored += 1
            continue
        match = ADBLOCK_RULE_RE.match(rule)
        if match is None:
            if rule.startswith("||"):
                warnings.add(f"{path}:{lineno}: unsupported or malformed rule {safe_text(rule)!r}")
            else:
                ignored += 1
            continue
        host = normalise_host(match.group(1))
        if host is None:
            warnings.add(f"{path}:{lineno}: not a host name in {safe_text(rule)!r}")
            continue
        options = match.group(2)
        entries.append(
            IntelEntry(
                IndicatorKind.DOMAIN,
                host,
                label,
                source,
                note=f"adblock options {options}" if options else None,
                where=f"{path.name}:{lineno}",
            )
        )
    if content and not entries and warnings.count:
        raise IntelImportError(f"{warnings.kept[0]} (no valid rule in an adblock list)")
    return finish_file(path, label, IntelFormat.ADBLOCK, source, entries, warnings, ignored)

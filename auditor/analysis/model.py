"""What the analyser concludes, defined once: severities, findings and their evidence, and
the result of one analysis run.

``findings.json`` is these records in their JSON form (``docs/findings.md``). Everything is
sorted and timestamps are ISO 8601 UTC, so the same input gives byte-identical output apart
from ``generated_at``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FINDINGS_SCHEMA_VERSION = 2


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One place in one flow that supports a finding."""

    flow_id: str
    location: str  # url | header | cookie | body | response
    detail: str  # header name, JSON path, form field, ...
    encoding: str  # the encoding chain, e.g. "gzip > json > md5-hex"
    identifier: str | None = None
    excerpt: str = ""  # a short, decoded excerpt (raw captured text: escape when shown)


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    title: str
    host: str
    organisation: str | None
    country: str | None
    identifiers: tuple[str, ...] = ()
    encodings: tuple[str, ...] = ()
    flow_ids: tuple[str, ...] = ()
    citations: tuple[str, ...] = ()
    description: str = ""
    evidence: tuple[Evidence, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable: the same rule, host and subject give the same id in every run."""
        key = "|".join((self.rule, self.host, ",".join(self.identifiers), self.title))
        return f"{self.rule}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def sort_key(self) -> tuple[Any, ...]:
        return (self.severity.rank, self.rule, self.host, self.identifiers, self.title)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity.value,
            "title": self.title,
            "host": self.host,
            "organisation": self.organisation,
            "country": self.country,
            "identifiers": list(self.identifiers),
            "encodings": list(self.encodings),
            "flow_ids": sorted(self.flow_ids),
            "citations": list(self.citations),
            "description": self.description,
            "evidence": [
                {
                    "flow_id": e.flow_id,
                    "location": e.location,
                    "detail": e.detail,
                    "encoding": e.encoding,
                    "identifier": e.identifier,
                    "excerpt": e.excerpt,
                }
                for e in sorted(
                    self.evidence, key=lambda e: (e.flow_id, e.location, e.detail, e.encoding)
                )
            ],
            "data": self.data,
        }


class Verdict(StrEnum):
    CONTRADICTED = "contradicted"
    SUPPORTED = "supported_by_this_capture"
    UNDETERMINED = "undetermined"


@dataclass(frozen=True, slots=True)
class ClaimResult:
    claim: str
    kind: str
    verdict: Verdict
    reason: str
    flow_ids: tuple[str, ...] = ()
    coverage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "flow_ids": sorted(self.flow_ids),
            "coverage": self.coverage,
        }


@dataclass(frozen=True, slots=True)
class RuleError:
    """A rule that raised, or emitted a finding without its evidence: the others still ran."""

    rule: str
    error: str


@dataclass
class Analysis:
    """One run of the analyser: the findings document, the flow table it read and the findings,
    with what went wrong on the way (rules that failed, warnings)."""

    doc: dict[str, Any]
    flows: pd.DataFrame
    findings: list[Finding]
    rule_errors: list[RuleError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # personal values the scanner found without being told (flow id -> (kind, value)); kept
    # so that a redacted report can remove them in every encoding (auditor.analysis.redact)
    personal: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

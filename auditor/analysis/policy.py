"""Policies: which data flows the analyser flags, and how severely (YAML data files).

Shipped: ``default`` (vendor and state-linked endpoints) and ``eu-gdpr`` (adds transfers to
countries without an EU adequacy decision). ``--policy FILE`` takes a user's own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from auditor.analysis.model import Severity
from auditor.errors import AuditorError

SEVERITY_KEYS = (
    "identifier_to_state_linked",
    "identifier_to_vendor",
    "identifier_to_other",
    "cleartext_identifier",
    "encrypted_upload",
    "keyword_list",
    "app_list",
    "transfer",
    "state_linked_contact",
    "beacon",
    "idle_traffic",
    "uninspected",
    "proxy_bypass",
)


class PolicyError(AuditorError):
    pass


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When timing makes a finding: a policy may tune these (``thresholds:`` in its YAML).

    A beacon needs ``beacon_min_contacts`` contacts (connections more than
    ``beacon_merge_s`` apart; a burst of parallel connections is one contact) spanning at
    least ``beacon_min_periods`` periods and ``beacon_min_span_s`` seconds, a period of at
    least ``beacon_min_period_s``, and intervals whose coefficient of variation is at most
    ``beacon_max_cv``. DNS lookups are never contacts: they are counted apart.
    """

    beacon_min_contacts: int = 6
    beacon_min_periods: float = 5.0
    beacon_min_span_s: float = 60.0
    beacon_min_period_s: float = 5.0
    beacon_max_cv: float = 0.35
    beacon_merge_s: float = 1.0

    @classmethod
    def from_mapping(cls, raw: Any, source: str) -> Thresholds:
        """From a policy's ``thresholds:`` mapping (``{beacon: {min_contacts: 6, ...}}``);
        :class:`PolicyError` names what is wrong."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise PolicyError(f"{source}: 'thresholds' must be a mapping")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for group, inner in raw.items():
            if not isinstance(inner, dict):
                raise PolicyError(f"{source}: thresholds.{group} must be a mapping")
            for key, value in inner.items():
                name = f"{group}_{key}"
                if name not in known:
                    raise PolicyError(f"{source}: unknown threshold {group}.{key}")
                kind = int if known[name].type in ("int", int) else float
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise PolicyError(f"{source}: threshold {group}.{key} must be a number >= 0")
                values[name] = kind(value)
        return replace(cls(), **values)


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    source: str
    sha256: str
    vendor: bool = True
    state_control: bool = True  # recipients owned or controlled by a state
    # headquarters countries whose laws (legal exposure) raise a finding, and why
    legal_exposure: frozenset[str] = frozenset()
    legal_exposure_reason: str = ""
    categories: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    no_eu_adequacy: bool = False
    severity: dict[str, Severity] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=lambda: Thresholds())

    @property
    def state_linked(self) -> bool:
        """Deprecated: the policy flags state control or some legal exposure."""
        return self.state_control or bool(self.legal_exposure)

    def sev(self, key: str) -> Severity:
        return self.severity.get(key, Severity.MEDIUM)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "vendor": self.vendor,
            "state_control": self.state_control,
            "legal_exposure": sorted(self.legal_exposure),
            "legal_exposure_reason": self.legal_exposure_reason,
            "state_linked": self.state_linked,
            "categories": sorted(self.categories),
            "countries": sorted(self.countries),
            "no_eu_adequacy": self.no_eu_adequacy,
            "severity": {k: v.value for k, v in sorted(self.severity.items())},
            "thresholds": {f.name: getattr(self.thresholds, f.name) for f in fields(Thresholds)},
        }


def parse_policy(text: str, source: str) -> Policy:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"{source}: a policy is a mapping")
    flag = doc.get("flag") or {}
    sev_raw = doc.get("severity") or {}
    if not isinstance(flag, dict) or not isinstance(sev_raw, dict):
        raise PolicyError(f"{source}: 'flag' and 'severity' must be mappings")
    unknown = set(sev_raw) - set(SEVERITY_KEYS)
    if unknown:
        raise PolicyError(f"{source}: unknown severity keys: {', '.join(sorted(unknown))}")
    severity = {}
    for key in SEVERITY_KEYS:
        value = sev_raw.get(key, "medium")
        try:
            severity[key] = Severity(str(value))
        except ValueError:
            raise PolicyError(
                f"{source}: severity {key}: {value!r} is not one of "
                + ", ".join(s.value for s in Severity)
            ) from None
    countries = flag.get("countries") or []
    if not isinstance(countries, list) or not all(
        isinstance(c, str) and len(c) == 2 for c in countries
    ):
        raise PolicyError(f"{source}: flag.countries must be ISO 3166 alpha-2 codes")
    # ``state_linked`` (before findings schema 2) meant state control, or the law of a
    # country obliging support of intelligence work, which the shipped data gives for CN only
    legacy = flag.get("state_linked")
    state_control = flag.get("state_control", True if legacy is None else bool(legacy))
    exposure = flag.get("legal_exposure", ["CN"] if legacy else [])
    if not isinstance(exposure, list) or not all(
        isinstance(c, str) and len(c) == 2 for c in exposure
    ):
        raise PolicyError(f"{source}: flag.legal_exposure must be ISO 3166 alpha-2 codes")
    reason = flag.get("legal_exposure_reason") or ""
    return Policy(
        name=str(doc.get("name") or Path(source).stem),
        description=str(doc.get("description") or ""),
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        vendor=bool(flag.get("vendor", True)),
        state_control=bool(state_control),
        legal_exposure=frozenset(c.upper() for c in exposure),
        legal_exposure_reason=str(reason),
        categories=frozenset(str(c) for c in flag.get("categories") or []),
        countries=frozenset(c.upper() for c in countries),
        no_eu_adequacy=bool(flag.get("no_eu_adequacy", False)),
        severity=severity,
        thresholds=Thresholds.from_mapping(doc.get("thresholds"), source),
    )


def load_policy(name_or_path: str | None = None) -> Policy:
    """A shipped policy by name (``default``, ``eu-gdpr``) or a YAML file."""
    name_or_path = name_or_path or "default"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            return parse_policy(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            raise PolicyError(f"{path}: {exc.strerror or exc}") from None
    res = resources.files("auditor") / "analysis" / "policies" / f"{name_or_path}.yaml"
    if not res.is_file():
        raise PolicyError(f"no policy {name_or_path!r}: shipped are default and eu-gdpr")
    return parse_policy(res.read_text(encoding="utf-8"), f"policy:{name_or_path}")

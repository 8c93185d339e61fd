"""Records of auditor's intelligence layer, defined once: sources, facts, organisations,
countries, mappings, IP facts and the attribution of an endpoint.

Every record is a frozen dataclass with a ``to_json()`` whose keys are the field names; the
knowledge base (``auditor/intel/data/*.yaml``) and user intel files are loaded into these.
Column names of the tables that :meth:`auditor.intel.kb.KnowledgeBase.classify_hosts` builds
are constants here, so code never spells them as bare strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from auditor.columns import (
    ASN,
    CATEGORIES,  # sorted, ";"-separated Category values
    HOST,
    MATCHED_BY,
    ORGANISATION,
    ORGANISATION_NAME,
    PARENT,
    SERVER_COUNTRY,
    SERVER_IP,
    STATE_LINKED,
)
from auditor.errors import AuditorError


class IntelError(AuditorError):
    """Base of the intel errors: the message names the file (and line) at fault."""


class KnowledgeBaseError(IntelError):
    """The built-in knowledge base (or an extra file given to it) is malformed."""


class IntelImportError(IntelError):
    """A user intel file (YAML, STIX 2.1, hosts, adblock list) cannot be imported."""


class Category(StrEnum):
    """What an organisation (or one of its hosts) does with what a handset sends it."""

    VENDOR_TELEMETRY = "vendor_telemetry"  # the handset maker's usage/analytics uploads
    VENDOR_SERVICES = "vendor_services"  # the maker's accounts, cloud, config, security apps
    VENDOR_ADVERTISING = "vendor_advertising"  # the maker's own ad system
    PUSH = "push"  # push-message channels
    UPDATE_FOTA = "update_fota"  # firmware/app updates over the air
    APP_STORE = "app_store"
    OS_PLATFORM = "os_platform"  # the OS platform itself (Google Play services check-in...)
    ANALYTICS_TRACKER = "analytics_tracker"  # third-party analytics/crash SDKs
    ADVERTISING = "advertising"  # third-party advertising
    CDN_CLOUD = "cdn_cloud"  # hosting: says where, not whose service
    CARRIER = "carrier"  # telecom operators
    APP_SERVICE = "app_service"  # an app (pre-installed or the user's) talking to its publisher


class MatchedBy(StrEnum):
    """How an attribution was reached, most specific first."""

    EXACT_HOST = "exact-host"
    PATTERN = "pattern"
    REGISTRABLE_DOMAIN = "registrable-domain"
    INTEL_IMPORT = "intel-import"
    DATASET = "dataset"
    CERTIFICATE = "certificate"
    CNAME = "cname"
    ASN = "asn"  # before schema 2 only: the AS never names the recipient now (see Basis)
    NONE = "none"


class Basis(StrEnum):
    """The rung of the evidence ladder that named the recipient, strongest first. The hosting
    network (the AS) is not a rung: it says where the server stands, never whose it is."""

    KB_HOST = "kb-host"  # an exact host (or host pattern) of the knowledge base
    KB_DOMAIN = "kb-domain"  # a registrable domain of the knowledge base
    INTEL = "intel-import"  # the user's own intel file
    DATASET = "dataset"  # an entry of a bundled or imported data set
    CERTIFICATE = "certificate"  # the server certificate's subject O=
    CNAME = "cname"  # a DNS CNAME chain that ends under a known name
    NONE = "none"


class Confidence(StrEnum):
    HIGH = "high"  # a cited mapping of the knowledge base
    MEDIUM = "medium"  # a data set or certificate that names a knowledge-base organisation
    LOW = "low"  # a data set or certificate naming an organisation the KB does not know
    NONE = "none"


class MappingKind(StrEnum):
    DOMAIN = "domain"  # a registrable domain and every host under it
    HOST = "host"  # one exact host name
    PATTERN = "pattern"  # a host pattern; "*" matches any characters, dots included
    ASN = "asn"  # an autonomous system, by number and/or AS-organisation name


@dataclass(frozen=True, slots=True)
class Source:
    """A checkable source: a study, law, register entry or the publisher's own page."""

    id: str
    title: str
    publisher: str
    year: int | None  # None only for user intel files that carry no date
    url: str
    accessed: str | None = None  # ISO date the URL was consulted, when recorded
    note: str | None = None  # e.g. "publisher's top-level page; the report is linked there"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "publisher": self.publisher,
            "year": self.year,
            "url": self.url,
            "accessed": self.accessed,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Fact:
    """One sourced statement. ``as_of`` dates it when the source's year is not precise enough."""

    statement: str
    source: Source
    as_of: str | None = None

    @property
    def date(self) -> str:
        """The date the fact holds as of: ``as_of``, else the source's year."""
        if self.as_of:
            return self.as_of
        return str(self.source.year) if self.source.year is not None else ""

    def to_json(self) -> dict[str, Any]:
        return {"statement": self.statement, "date": self.date, "source": self.source.to_json()}


@dataclass(frozen=True, slots=True)
class Organisation:
    id: str
    name: str
    parent: str | None  # id of the parent organisation in the knowledge base
    country: str  # headquarters, ISO 3166-1 alpha-2
    categories: tuple[Category, ...]
    jurisdiction: tuple[Fact, ...]  # organisation-specific legal facts (the country's are added)
    sources: tuple[Source, ...]  # what backs the name, headquarters and parent
    # ownership or documented control by a state (a state-owned carrier); empty: none recorded
    state_control: tuple[Fact, ...] = ()
    assessments: tuple[Fact, ...] = ()  # security-service or regulator assessments naming it
    manufacturers: tuple[str, ...] = ()  # Android ro.product.manufacturer values of its brands
    # other names it registers or trades under: a certificate's O=, a data set's entity name
    legal_names: tuple[str, ...] = ()
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "legal_names": list(self.legal_names),
            "manufacturers": list(self.manufacturers),
            "parent": self.parent,
            "country": self.country,
            "categories": [str(c) for c in self.categories],
            "state_control": [f.to_json() for f in self.state_control],
            "jurisdiction": [f.to_json() for f in self.jurisdiction],
            "assessments": [f.to_json() for f in self.assessments],
            "sources": [s.to_json() for s in self.sources],
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class CountryInfo:
    """A country's legal position for the EU/GDPR policy view, dated and sourced."""

    code: str
    name: str
    eu_eea: bool  # the GDPR applies directly
    adequacy: bool  # an EU adequacy decision (GDPR art. 45) covers it, see ``adequacy_scope``
    adequacy_scope: str | None
    adequacy_fact: Fact
    facts: tuple[Fact, ...]  # laws that reach organisations headquartered there
    # National law obliges organisations to support state intelligence work: a state-link
    # fact for every organisation headquartered there (the Belgian and Lithuanian argument).
    intelligence_obligation: bool = False

    @property
    def free_flow_from_eu(self) -> bool:
        """Personal data may go there from the EU without further safeguards."""
        return self.eu_eea or self.adequacy

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "eu_eea": self.eu_eea,
            "adequacy": self.adequacy,
            "adequacy_scope": self.adequacy_scope,
            "adequacy_fact": self.adequacy_fact.to_json(),
            "facts": [f.to_json() for f in self.facts],
        }


@dataclass(frozen=True, slots=True)
class Mapping:
    """A claim of the knowledge base: this domain/host/pattern/AS belongs to that organisation."""

    kind: MappingKind
    key: str  # the domain, host, pattern, or "AS<n>" / AS-organisation name
    organisation: str
    categories: tuple[Category, ...]  # empty: the organisation's categories
    source: Source
    note: str | None
    where: str  # file:line it was declared at
    # customers' services live under this name (a cloud's storage or CDN domain): it says
    # where the server stands, never who runs the service
    hosting: bool = False


@dataclass(frozen=True, slots=True)
class IpFacts:
    """What the offline IP databases say about one address."""

    ip: str
    country: str | None
    asn: int | None
    asn_org: str | None
    network: str | None
    reason: str | None  # why there is no country (private range, not in the database...)
    database: str | None  # the database that answered

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "country": self.country,
            "asn": self.asn,
            "asn_org": self.asn_org,
            "network": self.network,
            "reason": self.reason,
            "database": self.database,
        }


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """An IP database in use, for the report: its name, build date and origin."""

    name: str
    date: str | None
    kind: str  # "bundled" (geoip2fast) | "mmdb" (user-supplied MaxMind DB)
    path: str | None
    licence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "date": self.date,
            "kind": self.kind,
            "path": self.path,
            "licence": self.licence,
        }


@dataclass(frozen=True, slots=True)
class CertSubject:
    """The server's leaf certificate as a flow saw it: evidence about the name it serves."""

    org: str  # subject O=
    country: str | None  # subject C=
    cn: str | None
    names: tuple[str, ...]  # SAN DNS names
    issuer: str | None
    sha256: str | None
    seen_by: str | None = None  # "proxy" | "packets"


@dataclass(frozen=True, slots=True)
class NameEvidence:
    """What one rung of the ladder said about the name: which organisation, on what source."""

    basis: Basis
    organisation: str | None  # knowledge-base id, when the rung names a KB organisation
    name: str  # the organisation's name as this rung gives it
    country: str | None  # its headquarters, as this rung (or the KB) gives it
    matched: str  # the host, domain, rule, certificate or CNAME that matched
    source: Source
    confidence: Confidence
    detail: str | None = None  # e.g. "certificate issued to Xiaomi Inc., by DigiCert Inc"

    def to_json(self) -> dict[str, Any]:
        return {
            "basis": str(self.basis),
            "organisation": self.organisation,
            "name": self.name,
            "country": self.country,
            "matched": self.matched,
            "confidence": str(self.confidence),
            "detail": self.detail,
            "source": self.source.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Hosting:
    """Where the server stands: its network and country. Never, by itself, who received."""

    ip: str | None
    asn: int | None
    asn_org: str | None  # the AS organisation as the IP database names it
    organisation: str | None  # KB id of the network's organisation (AS mapping, CDN domain)
    organisation_name: str | None
    country: str | None  # the server's country
    basis: str | None  # "asn" | "asn-name" | "cdn-domain"
    source: Source | None
    same_family: bool = False  # the network belongs to the recipient's own family

    @property
    def label(self) -> str:
        """``Amazon.com, Inc. (AS16509, IE)``, as far as it is known."""
        who = self.organisation_name or self.asn_org or "unknown network"
        bits = [f"AS{self.asn}" if self.asn else None, self.country]
        inner = ", ".join(b for b in bits if b)
        return f"{who} ({inner})" if inner else who

    def to_json(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "asn": self.asn,
            "asn_org": self.asn_org,
            "organisation": self.organisation,
            "organisation_name": self.organisation_name,
            "country": self.country,
            "basis": self.basis,
            "source": self.source.to_json() if self.source else None,
            "same_family": self.same_family,
            "label": self.label,
        }


def _law_name(f: Fact) -> str | None:
    """A short name for the law a fact states: the statement's own head ("National
    Intelligence Law art. 7: ..."), else the source title's closing parenthesis ("... (FISA
    section 702)"); None for a fact that names no law that way (a warning citing the law)."""
    head, sep, _ = " ".join(f.statement.split()).partition(": ")  # "(2008:717)" is no head
    if sep and len(head) <= 80:
        return head
    title = f.source.title.strip()
    if title.endswith(")") and "(" in title:
        inner = title[title.rindex("(") + 1 : -1].strip()
        if 0 < len(inner) <= 40:
            return inner
    return None


@dataclass(frozen=True, slots=True)
class Exposure:
    """The laws of one country that can compel access to what the recipient holds, and why
    they reach it (``via``: its headquarters, a parent's, or where the server stands)."""

    country: str
    country_name: str
    via: str  # "headquarters" | "parent headquarters" | "server location"
    organisation: str | None  # whose headquarters (name), for the two headquarters cases
    facts: tuple[Fact, ...]
    intelligence_obligation: bool = False  # the law obliges support of intelligence work

    @property
    def basis(self) -> str:
        """The basis in words, never a bare yes: which law, and why it applies."""
        named = [n for n in (_law_name(f) for f in self.facts) if n]
        laws = "; ".join(dict.fromkeys(named or [f.source.title for f in self.facts]))
        where = f"{self.country_name} ({self.country})"
        if self.via == "server location":
            why = f"the server stands in {where}"
        elif self.via == "parent headquarters":
            why = f"applies to organisations headquartered in {where}, as its parent "
            why += f"{self.organisation} is"
        else:
            why = f"applies to organisations headquartered in {where}, as "
            why += f"{self.organisation} is"
        return f"{laws}: {why}"

    def to_json(self) -> dict[str, Any]:
        return {
            "country": self.country,
            "country_name": self.country_name,
            "via": self.via,
            "organisation": self.organisation,
            "intelligence_obligation": self.intelligence_obligation,
            "basis": self.basis,
            "facts": [f.to_json() for f in self.facts],
        }


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who received what a handset sent to ``host`` (and/or ``ip``), on what evidence.

    The recipient (``organisation``...) comes only from evidence about the name (``basis``,
    ``evidence``); ``hosting`` says where the server stands. ``state_linked`` and
    ``state_link`` are derived for one schema version (see docs/findings.md).
    """

    host: str | None
    ip: str | None
    organisation: str | None  # organisation id (a KB id, or "dataset:<set>:<entity>")
    organisation_name: str | None
    parent: str | None  # parent organisation id
    parent_name: str | None
    country: str | None  # the organisation's headquarters
    categories: tuple[Category, ...]
    state_control: tuple[Fact, ...]  # the recipient (or a parent) is owned/controlled by a state
    legal_exposure: tuple[Exposure, ...]
    jurisdiction: tuple[Fact, ...]
    assessments: tuple[Fact, ...]
    server_country: str | None
    server_country_reason: str | None
    server_country_adequacy: Fact | None  # EU/EEA membership or adequacy of the server country
    asn: int | None
    asn_org: str | None
    basis: Basis
    confidence: Confidence
    evidence: tuple[NameEvidence, ...]  # every rung that named an organisation, strongest first
    conflicts: tuple[NameEvidence, ...]  # rungs that named another organisation family
    hosting: Hosting | None
    matched: str | None  # the domain, pattern, rule, certificate or CNAME that matched
    labels: tuple[str, ...]  # user intel labels that flag this endpoint
    sources: tuple[Source, ...]
    note: str | None = None

    @property
    def matched_by(self) -> MatchedBy:
        """Deprecated name of ``basis`` (findings schema 2 only)."""
        if self.basis is Basis.KB_HOST and self.matched and "*" in self.matched:
            return MatchedBy.PATTERN
        return _MATCHED_BY[self.basis]

    @property
    def state_linked(self) -> bool:
        """Deprecated (findings schema 2 only): state control, or a headquarters law that
        obliges support of intelligence work."""
        return bool(self.state_control) or any(
            e.intelligence_obligation and e.via != "server location" for e in self.legal_exposure
        )

    @property
    def state_link(self) -> tuple[Fact, ...]:
        facts = list(self.state_control)
        for e in self.legal_exposure:
            if e.intelligence_obligation and e.via != "server location":
                facts.extend(e.facts)
        return tuple(dict.fromkeys(facts))

    def to_json(self) -> dict[str, Any]:
        adequacy = self.server_country_adequacy
        return {
            "host": self.host,
            "ip": self.ip,
            "organisation": self.organisation,
            "organisation_name": self.organisation_name,
            "parent": self.parent,
            "parent_name": self.parent_name,
            "country": self.country,
            "categories": [str(c) for c in self.categories],
            "basis": str(self.basis),
            "confidence": str(self.confidence),
            "evidence": [e.to_json() for e in self.evidence],
            "conflicts": [e.to_json() for e in self.conflicts],
            "hosting": self.hosting.to_json() if self.hosting else None,
            "state_control": [f.to_json() for f in self.state_control],
            "legal_exposure": [e.to_json() for e in self.legal_exposure],
            "state_linked": self.state_linked,
            "state_link": [f.to_json() for f in self.state_link],
            "jurisdiction": [f.to_json() for f in self.jurisdiction],
            "assessments": [f.to_json() for f in self.assessments],
            "server_country": self.server_country,
            "server_country_reason": self.server_country_reason,
            "server_country_adequacy": adequacy.to_json() if adequacy else None,
            "asn": self.asn,
            "asn_org": self.asn_org,
            "matched_by": str(self.matched_by),
            "matched": self.matched,
            "labels": list(self.labels),
            "sources": [s.to_json() for s in self.sources],
            "note": self.note,
        }


_MATCHED_BY: Final[dict[Basis, MatchedBy]] = {
    Basis.KB_HOST: MatchedBy.EXACT_HOST,
    Basis.KB_DOMAIN: MatchedBy.REGISTRABLE_DOMAIN,
    Basis.INTEL: MatchedBy.INTEL_IMPORT,
    Basis.DATASET: MatchedBy.DATASET,
    Basis.CERTIFICATE: MatchedBy.CERTIFICATE,
    Basis.CNAME: MatchedBy.CNAME,
    Basis.NONE: MatchedBy.NONE,
}


# Columns of the table classify_hosts() returns (index aligned with its input); the names it
# shares with the flow table come from auditor.columns.
ORG_COUNTRY: Final = "org_country"
MATCHED: Final = "matched"
LABELS: Final = "labels"  # sorted, ";"-separated user intel labels
ASN_ORG: Final = "asn_org"

BASIS: Final = "basis"
CONFIDENCE: Final = "confidence"
CONFLICT: Final = "conflict"
HOSTING_ORG: Final = "hosting_org"
HOSTING_NAME: Final = "hosting_name"
STATE_CONTROL: Final = "state_control"
LEGAL_EXPOSURE: Final = "legal_exposure"

CLASSIFY_COLUMNS: Final[tuple[str, ...]] = (
    HOST,
    ORGANISATION,
    ORGANISATION_NAME,
    PARENT,
    ORG_COUNTRY,
    CATEGORIES,
    STATE_LINKED,
    MATCHED_BY,
    MATCHED,
    LABELS,
    SERVER_IP,
    SERVER_COUNTRY,
    ASN,
    ASN_ORG,
    BASIS,
    CONFIDENCE,
    CONFLICT,
    HOSTING_ORG,
    HOSTING_NAME,
    STATE_CONTROL,
    LEGAL_EXPOSURE,
)

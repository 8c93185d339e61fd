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
    ASN = "asn"
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
    state_linked: bool  # owned/controlled by a state, or so designated by a government
    jurisdiction: tuple[Fact, ...]  # organisation-specific legal facts (the country's are added)
    state_link: tuple[Fact, ...]  # the evidence for (or about) ``state_linked``
    sources: tuple[Source, ...]  # what backs the name, headquarters and parent
    assessments: tuple[Fact, ...] = ()  # security-service or regulator assessments naming it
    manufacturers: tuple[str, ...] = ()  # Android ro.product.manufacturer values of its brands
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "manufacturers": list(self.manufacturers),
            "parent": self.parent,
            "country": self.country,
            "categories": [str(c) for c in self.categories],
            "state_linked": self.state_linked,
            "jurisdiction": [f.to_json() for f in self.jurisdiction],
            "state_link": [f.to_json() for f in self.state_link],
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
class Attribution:
    """Who received what a handset sent to ``host`` (and/or ``ip``), on what evidence."""

    host: str | None
    ip: str | None
    organisation: str | None  # organisation id
    organisation_name: str | None
    parent: str | None  # parent organisation id
    parent_name: str | None
    country: str | None  # the organisation's headquarters
    categories: tuple[Category, ...]
    state_linked: bool
    jurisdiction: tuple[Fact, ...]
    state_link: tuple[Fact, ...]
    assessments: tuple[Fact, ...]
    server_country: str | None
    server_country_reason: str | None
    server_country_adequacy: Fact | None  # EU/EEA membership or adequacy of the server country
    asn: int | None
    asn_org: str | None
    matched_by: MatchedBy
    matched: str | None  # the domain, pattern, AS or indicator that matched
    labels: tuple[str, ...]  # user intel labels that flag this endpoint
    sources: tuple[Source, ...]
    note: str | None = None

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
            "state_linked": self.state_linked,
            "jurisdiction": [f.to_json() for f in self.jurisdiction],
            "state_link": [f.to_json() for f in self.state_link],
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


# Columns of the table classify_hosts() returns (index aligned with its input); the names it
# shares with the flow table come from auditor.columns.
ORG_COUNTRY: Final = "org_country"
MATCHED: Final = "matched"
LABELS: Final = "labels"  # sorted, ";"-separated user intel labels
ASN_ORG: Final = "asn_org"

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
)

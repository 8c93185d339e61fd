"""The knowledge base: who owns which endpoint, where it is headquartered, under which law.

Long because: loading, validating and looking up share one structure's invariants (every
fact cites a source; a domain, host or AS is claimed once), and the flow-table lookup uses the
same indexes as the single lookup; split, each half would have to trust the other's checks.

``auditor/intel/data/`` holds the data (see docs/intel.md): ``sources.yaml`` (every source,
and the KB's ``version`` and ``updated`` date), ``jurisdictions.yaml`` (per country: EU/EEA
membership, EU adequacy, laws) and one file per organisation family with its organisations,
registrable domains, hosts or host patterns, and autonomous systems. :meth:`KnowledgeBase.load`
validates all of it (every organisation, mapping and fact must cite a known source; a domain,
host or AS is claimed once) and adds user intel files.

Lookups, most specific first: exact host > longest host pattern > registrable domain (public
suffix list from tldextract's bundled snapshot, offline) > user intel; for an address, the AS
of the server (by number from a user ``.mmdb``, else by the AS-organisation name in the bundled
GeoLite2 data) > user intel. :meth:`KnowledgeBase.classify_hosts` does the same over a whole
column, looking each distinct host up once.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor import columns
from auditor.intel import model as m
from auditor.intel import psl
from auditor.intel.index import IntelIndex, load_intel
from auditor.intel.ipdb import (
    NOT_AN_IP,
    FactsColumns,
    FactsRow,
    IpDatabase,
    default_ipdb,
    parse_ip,
)
from auditor.intel.lookalike import inspect_host, key_of_shown, shown_names
from auditor.intel.model import (
    Attribution,
    Basis,
    Category,
    CertSubject,
    Confidence,
    CountryInfo,
    Exposure,
    Fact,
    Hosting,
    IpFacts,
    KnowledgeBaseError,
    MappingKind,
    NameEvidence,
    Organisation,
    Source,
)
from auditor.intel.model import (
    Mapping as KbMapping,
)
from auditor.intel.schema import (
    IntelEntry,
    IntelFile,
    check_keys,
    line_of,
    load_yaml,
    normalise_host,
    normalise_pattern,
    parse_categories,
    parse_date,
    parse_facts,
    parse_organisation,
    parse_source,
    resolve_source,
    safe_text,
    text_field,
)
from auditor.intel.stamps import StampedCache

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from auditor.intel.datasets import DatasetIndex

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).with_name("data")
SOURCES_FILE = "sources.yaml"
JURISDICTIONS_FILE = "jurisdictions.yaml"

HOST_CACHE_LIMIT = 1_000_000
"""Distinct hosts remembered by lookup_host(); beyond this the cache is cleared."""

_ORG_FILE_KEYS = ("organisations", "domains", "hosts", "asns", "datasets")


# --- the public suffix list, offline ------------------------------------------------------------


@functools.cache
def psl_version() -> str:
    """Which public suffix list is in use (tldextract's bundled snapshot)."""
    from importlib.metadata import version

    return f"tldextract {version('tldextract')} bundled snapshot"


def registrable_domain(host: str) -> str | None:
    """The registrable domain of a normalised host (``a.b.example.co.uk`` -> ``example.co.uk``),
    from the ICANN section of the public suffix list (``d123.cloudfront.net`` ->
    ``cloudfront.net``)."""
    return psl.current().registrable_domain(host)


def private_suffix(host: str) -> str | None:
    """The suffix of the public suffix list's *private* section a host is under
    (``d1.cloudfront.net`` -> ``cloudfront.net``, ``x.s3.amazonaws.com`` ->
    ``s3.amazonaws.com``), else None. Names under such a suffix are run by the provider's
    customers: the provider is where they are hosted, not who runs them."""
    return psl.current().private_suffix(host)


# --- internal records -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pattern:
    pattern: str
    regex: re.Pattern[str]
    literal: int  # characters other than "*": the more, the more specific
    order: int
    mapping: KbMapping


@dataclass(frozen=True, slots=True)
class _Rung:
    """One rung's evidence, with what attribution needs beside it."""

    ev: NameEvidence
    categories: tuple[Category, ...]
    note: str | None
    family: str  # root KB organisation id, or the data set's / certificate's own name
    hosting: bool  # the evidence names where the server stands, not who runs the service
    entity_id: str | None = None  # a data set's entity that no KB organisation stands for
    dataset_id: str | None = None
    witness: bool = False  # shown as evidence, names no recipient


@dataclass(frozen=True, slots=True)
class _NameRungs:
    """What the rungs say about one name, strongest first; cached per host."""

    recipient: tuple[_Rung, ...]
    hosting: tuple[_Rung, ...]
    labels: tuple[str, ...]
    intel_sources: tuple[Source, ...]
    # the user's intel that flags the name without naming an organisation (a blocklist)
    flagged: str | None = None  # the indicator, "domain:tracker.example"
    flag_note: str | None = None
    # evidence shown but naming no recipient: a routing list's unreviewed entity, a
    # certificate read from packets (its chain unverified) or issued to an unknown name
    witness: tuple[_Rung, ...] = ()


_NO_NAME = _NameRungs((), (), (), ())

# a name as KnowledgeBase.lookup reads it (KnowledgeBase._named), or none
_Named = tuple[str, _NameRungs, tuple[_Rung, ...], tuple[_Rung, ...], tuple[_Rung, ...], str | None]
_INVALID: Any = ("", _NO_NAME, (), (), (), None)


def _flag(entries: Sequence[IntelEntry]) -> dict[str, Any]:
    if not entries:
        return {}
    e = entries[0]
    note = "; ".join(x for x in (e.name, ", ".join(e.tags), e.note) if x) or None
    return {"flagged": f"{e.kind}:{e.value}", "flag_note": note}


@dataclass(frozen=True, slots=True)
class _OrgView:
    """An organisation with its parent chain resolved, as attributions show it."""

    org: Organisation
    parent: Organisation | None
    root: str  # the id at the top of the parent chain: the organisation family
    state_control: tuple[Fact, ...]
    exposure: tuple[Exposure, ...]
    jurisdiction: tuple[Fact, ...]


@dataclass(frozen=True, slots=True)
class _Recipient:
    """What a name's rungs say of its recipient (:meth:`KnowledgeBase._recipient`)."""

    win: _Rung | None
    view: _OrgView | None
    org: Organisation | None
    org_id: str | None
    exposure: tuple[Exposure, ...]  # through headquarters
    exposure_countries: frozenset[str]
    conflicts: tuple[NameEvidence, ...]
    evidence: tuple[NameEvidence, ...]
    sources: tuple[Source, ...]  # before the hosting's
    root: str | None


def _dedupe_sources(items: Iterable[Source]) -> tuple[Source, ...]:
    seen: dict[str, Source] = {}
    for s in items:
        seen.setdefault(s.id, s)
    return tuple(seen.values())


def _dedupe_facts(items: Iterable[Fact]) -> tuple[Fact, ...]:
    seen: dict[tuple[str, str], Fact] = {}
    for f in items:
        seen.setdefault((f.statement, f.source.id), f)
    return tuple(seen.values())


def _hosting_only(org: Organisation) -> bool:
    """A hosting provider: an organisation whose only category is cdn_cloud."""
    return set(org.categories) == {Category.CDN_CLOUD}


def _under(domain: str, suffix: str) -> bool:
    """``domain`` is ``suffix`` or a parent of it: a rule at or above a private suffix."""
    return suffix == domain or suffix.endswith("." + domain)


def _foreign_id(r: _Rung) -> str:
    """The id of a recipient the knowledge base does not know: only an ownership database's
    entity names one (certificates and CNAMEs name KB organisations or none)."""
    return f"dataset:{r.dataset_id}:{r.entity_id}"


def _exact_name(name: str) -> str:
    """A legal name for comparison: case and punctuation ignored, every word kept ("Apple
    Pty Ltd" is not "Apple Inc.")."""
    return " ".join(re.sub(r"[^\w]+", " ", name.casefold()).split())


# Data-set formats whose entities are organisations by design (ownership databases): an
# entity no alias names may still name a recipient, with low confidence. The others are
# lists of a service's domains (routing lists, tracker signatures): evidence only.
OWNERSHIP_FORMATS: frozenset[str] = frozenset({"ghostery", "trackerradar", "adguard", "xray"})


def cert_covers(cert: CertSubject, host: str) -> bool:
    """The certificate names ``host`` (a SAN or the CN, ``*.`` covering one label and never
    standing at a public suffix)."""
    for name in (*cert.names, cert.cn or ""):
        n = name.strip().lower().rstrip(".")
        if not n:
            continue
        if n == host:
            return True
        if n.startswith("*.") and host.endswith(n[1:]) and "." not in host[: -len(n) + 1]:
            if registrable_domain(n[2:]) is not None:  # never "*.com", "*.co.uk"
                return True
    return False


def cert_source(cert: CertSubject) -> Source:
    digest = cert.sha256 or "unknown"
    return Source(
        id=f"cert:{digest[:16]}",
        title=f"TLS server certificate issued to {cert.org} ({cert.cn or '-'})",
        publisher=cert.issuer or "unknown issuer",
        year=None,
        url=f"urn:sha256:{digest}",
        note=f"seen in this capture ({cert.seen_by or 'proxy'}); subject C={cert.country or '-'}",
    )


def cert_from_columns(values: Mapping[str, Any]) -> CertSubject | None:
    org = values.get(columns.CERT_ORG)
    if not isinstance(org, str) or not org.strip():
        return None

    def text(key: str) -> str | None:
        v = values.get(key)
        return v if isinstance(v, str) and v else None

    names = text(columns.CERT_NAMES)
    return CertSubject(
        org=org,
        country=text(columns.CERT_COUNTRY),
        cn=text(columns.CERT_CN),
        names=tuple(x for x in (names or "").split(";") if x),
        issuer=text(columns.CERT_ISSUER),
        sha256=text(columns.CERT_SHA256),
        seen_by=text(columns.CERT_SOURCE),
    )


def dataset_source(info: Any) -> Source:
    """A data set as the source of an attribution: name, version, date, licence, SHA-256."""
    year = int(info.date[:4]) if isinstance(info.date, str) and info.date[:4].isdigit() else None
    version = f" {info.version}" if info.version else ""
    return Source(
        id=f"dataset:{info.id}",
        title=f"{info.name}{version}",
        publisher=info.name,
        year=year,
        url=info.url,
        accessed=info.date,
        note=f"data set, licence {info.licence}, sha256 {info.sha256}"
        + (" (bundled snapshot)" if info.bundled else " (imported by the user)"),
    )


# --- the knowledge base -------------------------------------------------------------------------


class KnowledgeBase:
    """Validated ownership, jurisdiction and AS data, plus user intel, with lookups.

    >>> kb = KnowledgeBase.load()
    >>> kb.lookup_host("tracking.miui.com").organisation
    'xiaomi'
    """

    def __init__(
        self,
        *,
        version: str,
        updated: str,
        sources: Mapping[str, Source],
        organisations: Mapping[str, Organisation],
        countries: Mapping[str, CountryInfo],
        mappings: Sequence[KbMapping],
        intel: Sequence[IntelFile] = (),
        ipdb: IpDatabase | None = None,
        datasets: DatasetIndex | None = None,
        aliases: Mapping[tuple[str, str], str | None] | None = None,
        hosting_aliases: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.version = version
        self.updated = updated
        self.sources = dict(sources)
        self.organisations = dict(organisations)
        self.countries = dict(countries)
        self.mappings = tuple(mappings)
        self.intel_files = tuple(intel)
        self._ipdb = ipdb
        self._datasets = datasets
        self._aliases = dict(aliases or {})
        self._hosting_aliases = frozenset(hosting_aliases)
        self._intel = IntelIndex(self.intel_files)
        self._exact: dict[str, KbMapping] = {}
        self._domains: dict[str, KbMapping] = {}
        self._patterns: dict[str, list[_Pattern]] = {}
        self._asn_numbers: dict[int, KbMapping] = {}
        self._asn_names: dict[str, KbMapping] = {}
        for i, mp in enumerate(self.mappings):
            if mp.kind is MappingKind.HOST:
                self._exact[mp.key] = mp
            elif mp.kind is MappingKind.DOMAIN:
                self._domains[mp.key] = mp
            elif mp.kind is MappingKind.PATTERN:
                rd = _pattern_domain(mp.key)
                if rd is None:  # validated at load; kept for KBs built by hand
                    raise KnowledgeBaseError(f"{mp.where}: pattern {mp.key!r} has no domain")
                regex = re.compile(re.escape(mp.key).replace(r"\*", ".*"))
                literal = len(mp.key.replace("*", ""))
                self._patterns.setdefault(rd, []).append(_Pattern(mp.key, regex, literal, i, mp))
            elif mp.kind is MappingKind.ASN:
                if mp.key.startswith("AS") and mp.key[2:].isdigit():
                    self._asn_numbers[int(mp.key[2:])] = mp
                else:
                    self._asn_names[mp.key.casefold()] = mp
        for plist in self._patterns.values():
            plist.sort(key=lambda p: (-p.literal, p.order))
        self._makers: dict[str, str] = {}
        for org in self.organisations.values():
            for maker in org.manufacturers:
                other = self._makers.setdefault(maker.casefold(), org.id)
                if other != org.id:
                    raise KnowledgeBaseError(
                        f"manufacturer {maker!r} is claimed by both {other!r} and {org.id!r}"
                    )
        self._org_names: dict[str, str] = {}
        for org in self.organisations.values():
            for name in (org.name, *org.legal_names):
                key = _exact_name(name)
                if key:
                    self._org_names.setdefault(key, org.id)
        self._host_cache: dict[str, _NameRungs] = {}
        self._named_cache: dict[tuple[Any, ...], _Named] = {}
        self._recipient_cache: dict[int, tuple[_NameRungs, _Recipient]] = {}
        self._org_cache: dict[str, _OrgView] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """For the compiled lookup index (auditor.intel.cache): no lock, caches or IP data."""
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_host_cache"] = {}
        state["_named_cache"] = {}
        state["_recipient_cache"] = {}
        state["_ipdb"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_named_cache", {})
        self.__dict__.setdefault("_recipient_cache", {})
        self._lock = threading.Lock()

    # --- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        extra: Sequence[str | Path] = (),
        *,
        data_dir: str | Path | None = None,
        mmdb: Sequence[str | Path] = (),
        ipdb: IpDatabase | None = None,
        datasets: DatasetIndex | bool | None = True,
    ) -> KnowledgeBase:
        """Load and validate the built-in data, then add user intel files.

        ``extra`` are intel files as ``label=path`` or paths (auditor YAML, STIX 2.1 JSON,
        hosts files, adblock lists); ``mmdb`` are MaxMind databases that take precedence over
        the bundled IP data; ``datasets``: the data sets to use (True: the bundled
        snapshots and the user's imports; False: none). Raises :class:`KnowledgeBaseError`
        or ``IntelImportError`` naming
        the file and line at fault.
        """
        base = _load_data(Path(data_dir) if data_dir is not None else DATA_DIR)
        intel = [load_intel(spec, sources=base["sources"]) for spec in extra]
        orgs = dict(base["organisations"])
        for f in intel:
            for org in f.organisations:
                if org.id in orgs:
                    raise KnowledgeBaseError(
                        f"{f.path}: organisation {org.id!r} is already in the knowledge base"
                    )
                orgs[org.id] = org
            for e in f.entries:
                if e.organisation is not None and e.organisation not in orgs:
                    raise KnowledgeBaseError(f"{e.where}: unknown organisation {e.organisation!r}")
        _check_parents(orgs, "user intel")
        if ipdb is None:
            ipdb = IpDatabase(mmdb) if mmdb else None
        if datasets is True:
            from auditor.intel.datasets import load_datasets

            datasets = load_datasets()
        return cls(
            version=base["version"],
            updated=base["updated"],
            sources=base["sources"],
            organisations=orgs,
            countries=base["countries"],
            mappings=base["mappings"],
            intel=intel,
            ipdb=ipdb,
            datasets=datasets or None,
            aliases=base["aliases"],
            hosting_aliases=base["hosting_aliases"],
        )

    @classmethod
    def default(cls) -> KnowledgeBase:
        """The built-in knowledge base with no user intel, loaded once per process and again
        once a file it was read from (its data, the bundled or the user's data sets) changes
        on disk."""
        return _DEFAULT.get()

    @property
    def ipdb(self) -> IpDatabase:
        return self._ipdb if self._ipdb is not None else default_ipdb()

    # --- plain accessors --------------------------------------------------------------------

    def organisation(self, org_id: str) -> Organisation | None:
        return self.organisations.get(org_id)

    def country(self, code: str | None) -> CountryInfo | None:
        return self.countries.get(code.upper()) if code else None

    def info(self, *, ip: bool = True) -> dict[str, Any]:
        """Version and provenance of everything a report's attributions rest on (``ip``:
        with the IP databases, which loads them)."""
        return {
            "kb_version": self.version,
            "kb_updated": self.updated,
            "public_suffix_list": psl_version(),
            "ip_databases": [d.to_json() for d in self.ipdb.databases()] if ip else [],
            "datasets": [d.to_json() for d in self.datasets()],
            "intel_files": [
                {
                    "label": f.label,
                    "path": f.path,
                    "format": str(f.format),
                    "sha256": f.sha256,
                    "entries": len(f.entries),
                    "warnings": f.warning_count,
                    "ignored": f.ignored,
                }
                for f in self.intel_files
            ],
        }

    def provenance(self, *, ip: bool = False) -> dict[str, Any]:
        """What a single answer rests on, in brief (``info`` has it all): the knowledge
        base's version and date, each data set's id, version and SHA-256, and the IP
        databases when an address was looked up."""
        out: dict[str, Any] = {
            "kb_version": self.version,
            "kb_updated": self.updated,
            "datasets": [
                {"id": d.id, "version": d.version, "date": d.date, "sha256": d.sha256}
                for d in self.datasets()
            ],
        }
        if ip:
            out["ip_databases"] = [d.name for d in self.ipdb.databases()]
        if self.intel_files:
            out["intel_files"] = [{"label": f.label, "sha256": f.sha256} for f in self.intel_files]
        return out

    def datasets(self) -> tuple[Any, ...]:
        """The data sets in use (bundled snapshots and the user's imports), each with its
        name, version or date, licence and SHA-256."""
        return tuple(self._datasets.datasets) if self._datasets is not None else ()

    def describe(self) -> dict[str, Any]:
        """Alias of :meth:`info` for a report's method section."""
        return self.info()

    def ip_database(self) -> list[dict[str, Any]]:
        """The IP databases in use (name, build date, kind, path, licence), in precedence order."""
        return [d.to_json() for d in self.ipdb.databases()]

    def adequacy(self) -> dict[str, bool]:
        """ISO country code -> personal data may go there from the EU without further
        safeguards (EU/EEA member, or covered by an adequacy decision). Countries absent from
        ``jurisdictions.yaml`` are absent here: the caller decides how to treat them."""
        return {code: c.free_flow_from_eu for code, c in sorted(self.countries.items())}

    def organisation_of_vendor(self, manufacturer: str) -> str | None:
        """The organisation id behind an Android ``ro.product.manufacturer`` value
        (``"Xiaomi"`` -> ``"xiaomi"``); a value that starts with a known brand and a space
        (``"TECNO MOBILE LIMITED"``) counts too."""
        text = " ".join(str(manufacturer or "").split()).casefold()
        if not text:
            return None
        hit = self._makers.get(text)
        if hit is None:
            hit = self._makers.get(text.split(" ", 1)[0])
        return hit

    def annotate(
        self,
        flows: pd.DataFrame,
        *,
        host_column: str | None = None,
        ip_column: str = columns.SERVER_IP,
    ) -> pd.DataFrame:
        """A copy of a flow table with the attribution columns of :mod:`auditor.columns`
        (the recipient: organisation id, parent id, headquarters country, ";"-joined
        categories, basis, confidence, conflict, state control, legal exposure; the hosting:
        server_country, asn, asn_org, hosting_org, hosting_name; the deprecated state_linked
        and matched_by) plus ``organisation_name``. Name evidence columns of the flow table
        (CERT_*, CNAMES), when present, are rungs of the ladder too.

        The host is taken from ``host_column``, else the first of ``name``, ``host`` and
        ``sni`` present; the address from ``ip_column`` when present. In that column a
        lookalike name (:mod:`auditor.intel.lookalike`: invisible characters, variant forms,
        mixed scripts) is replaced by its shown form, ``⚠ A-LABEL (reasons)``, which
        :meth:`lookup` reads back as the A-label.
        """
        import pandas as pd

        out = flows.copy(deep=False)  # copy-on-write: new columns never reach ``flows``
        for target, (categorical, values) in self.annotation_columns(
            flows, host_column=host_column, ip_column=ip_column
        ).items():
            out[target] = (
                pd.Series(values, index=out.index, dtype=object) if categorical else values
            )
        return show_lookalikes(out)

    def annotation_columns(
        self,
        flows: pd.DataFrame,
        *,
        host_column: str | None = None,
        ip_column: str = columns.SERVER_IP,
        spread: np.ndarray | None = None,
    ) -> dict[str, tuple[bool, np.ndarray]]:
        """The columns :meth:`annotate` adds, by name, each as (whether it is made of
        categories, its values: objects when it is). ``spread``: the rows of ``flows`` each
        row of the result takes (distinct rows annotated once, then spread to a table's
        rows: each column made objects once, at the table's length)."""
        import numpy as np
        import pandas as pd

        if host_column is None:
            host_column = next(
                (c for c in (columns.NAME, columns.HOST, columns.SNI) if c in flows.columns), ""
            )
        n = len(flows)
        hosts = (
            flows[host_column].reset_index(drop=True)
            if host_column in flows.columns
            else pd.Series([None] * n, dtype=object)
        )
        ips = flows[ip_column].reset_index(drop=True) if ip_column in flows.columns else None
        present = [c for c in columns.NAME_EVIDENCE_COLUMNS if c in flows.columns]
        evidence = flows[present].reset_index(drop=True) if present else None
        mapping = {
            columns.ORGANISATION: m.ORGANISATION,
            m.ORGANISATION_NAME: m.ORGANISATION_NAME,
            columns.PARENT: m.PARENT,
            columns.COUNTRY: m.ORG_COUNTRY,
            columns.CATEGORIES: m.CATEGORIES,
            columns.STATE_LINKED: m.STATE_LINKED,
            columns.SERVER_COUNTRY: m.SERVER_COUNTRY,
            columns.ASN: m.ASN,
            columns.MATCHED_BY: m.MATCHED_BY,
            columns.BASIS: m.BASIS,
            columns.CONFIDENCE: m.CONFIDENCE,
            columns.CONFLICT: m.CONFLICT,
            columns.HOSTING_ORG: m.HOSTING_ORG,
            columns.HOSTING_NAME: m.HOSTING_NAME,
            columns.ASN_ORG: m.ASN_ORG,
            columns.STATE_CONTROL: m.STATE_CONTROL,
            columns.LEGAL_EXPOSURE: m.LEGAL_EXPOSURE,
        }
        table = self.classify_hosts(
            hosts.astype(object),
            None if ips is None else ips.astype(object),
            evidence=evidence,
            wanted=set(mapping.values()),
        )
        made: dict[str, tuple[bool, np.ndarray]] = {}
        for target, col in mapping.items():
            values = table[col]
            if isinstance(values.dtype, pd.CategoricalDtype):
                # each category made an object once, missing (code -1) as None: no scan of
                # every row's object for NaN
                cats = np.empty(len(values.cat.categories) + 1, dtype=object)
                cats[:-1] = np.asarray(values.cat.categories, dtype=object)
                cats[-1] = None
                codes = values.cat.codes.to_numpy()
                made[target] = (True, cats[codes if spread is None else codes[spread]])
            else:
                raw = values.to_numpy()
                made[target] = (False, raw if spread is None else raw[spread])
        return made

    # --- lookups ----------------------------------------------------------------------------

    def lookup_host(self, host: str, *, cache: bool = True) -> Attribution:
        """Attribute a host name (an IP literal is looked up as an address). Never raises.
        ``cache=False`` looks the name up afresh (the naive baseline of the benchmark)."""
        return self.lookup(host, cache=cache)

    def lookup_ip(self, ip: str) -> Attribution:
        """An address alone names no recipient (only the user's own intel may); the IP
        databases give the hosting: the AS, its organisation and the server's country."""
        return self.lookup(None, ip)

    def lookup(
        self,
        host: str | None = None,
        ip: str | None = None,
        *,
        cert: CertSubject | None = None,
        cnames: Sequence[str] = (),
        cache: bool = True,
        known: IpFacts | None = None,
    ) -> Attribution:
        """Attribute a flow's endpoint: the name (with the server's certificate and the DNS
        CNAME chain, when known) decides the recipient; the address gives the hosting.
        ``known``: the facts of ``ip`` when the caller already looked them up in bulk."""
        facts = (known if known is not None else self.ipdb.lookup(ip)) if ip else None
        if host is None:
            if facts is None:
                return self._attribution(None, None, _NO_NAME, None)
            return self._attribution(None, facts.ip, self._ip_rungs(facts), facts)
        if isinstance(host, str) and (":" in host or host[:1].isdigit()):
            addr = parse_ip(host)
            if addr is not None:  # a flow named by its address: look the address up
                return self.lookup(None, ip or str(addr), known=known if ip else None)
        if cache:  # a flow table asks for one name many times (annotate, then endpoints)
            named = self._named_cached(host, cert, cnames)
        else:
            named = self._named(host, cert, cnames, cache=False)
        if named is _INVALID:
            rungs = self._ip_rungs(facts) if facts is not None else _NO_NAME
            return self._attribution(safe_text(host), facts.ip if facts else None, rungs, facts,
                                     note="not a valid host name")  # fmt: skip
        norm, rungs, extra, hosting, witness, note = named
        if facts is not None and self._intel and facts.reason != NOT_AN_IP:
            ip_intel = self._intel_ip(facts.ip)
        else:
            ip_intel = []
        merged = bool(extra or hosting or witness or ip_intel)
        if merged:
            rungs = _NameRungs(
                rungs.recipient + extra,
                rungs.hosting + hosting,
                tuple(sorted({*rungs.labels, *(e.label for e in ip_intel)})),
                _dedupe_sources((*rungs.intel_sources, *(e.source for e in ip_intel))),
                rungs.flagged or _flag(ip_intel).get("flagged"),
                rungs.flag_note or _flag(ip_intel).get("flag_note"),
                rungs.witness + witness,
            )
        return self._attribution(
            norm, facts.ip if facts else None, rungs, facts, note=note, shared=cache and not merged
        )

    def knows_nothing_of(
        self, host: str, cert: CertSubject | None = None, cnames: Sequence[str] = ()
    ) -> bool:
        """Whether :meth:`lookup` finds nothing of ``host`` and its evidence: no rung of the
        knowledge base, the data sets or the user's intel, and no valid-name problem. Such
        names are attributed alike at one address (apart from ``host`` and the lookalike
        ``note``): the recipient unknown, the hosting and legal exposure the address's. Reads
        the same cache as :meth:`lookup`, so a name a flow table looked up is not looked up
        again. ``host`` is a name (an address written as a name is not one)."""
        named = self._named_cached(host, cert, cnames)
        if named is _INVALID:
            return False
        _norm, rungs, extra, hosting, witness, _note = named
        return not (
            extra or hosting or witness or rungs.recipient or rungs.hosting or rungs.witness
            or rungs.labels or rungs.intel_sources or rungs.flagged or rungs.flag_note
        )  # fmt: skip

    def _named_cached(self, host: str, cert: CertSubject | None, cnames: Sequence[str]) -> _Named:
        """:meth:`_named`, once per name and evidence."""
        key = (host, cert, tuple(cnames))
        named = self._named_cache.get(key)
        if named is None:
            named = self._named(host, cert, cnames, cache=True)
            with self._lock:
                if len(self._named_cache) >= HOST_CACHE_LIMIT:
                    self._named_cache.clear()
                self._named_cache[key] = named
        return named

    def _named(
        self, host: str, cert: CertSubject | None, cnames: Sequence[str], *, cache: bool
    ) -> _Named:
        """What :meth:`lookup` reads of a name and its evidence, whatever the address: the
        name's key, its rungs, the rungs its certificate and CNAMEs add (recipient, hosting,
        witness) and its lookalike note; :data:`_INVALID` for a name that is none."""
        # a lookalike's shown form (annotate() puts it in the flow table) stands for its key
        name = inspect_host(host) or inspect_host(key_of_shown(host))
        if name is None:
            return _INVALID
        norm = name.key
        rungs = self._host_rungs(norm) if cache else self._name_rungs(norm)
        extra: list[_Rung] = []
        hosting: list[_Rung] = []
        witness: list[_Rung] = []
        if cert is not None:
            r = self._cert_rung(norm, cert)
            if r is not None:
                (hosting if r.hosting else witness if r.witness else extra).append(r)
        if cnames:
            for r in self._cname_rungs(norm, cnames):
                (hosting if r.hosting else extra).append(r)
        note = name.warning() if name.suspicious else None
        return norm, rungs, tuple(extra), tuple(hosting), tuple(witness), note

    # --- the rungs of the ladder ------------------------------------------------------------

    def _host_rungs(self, host: str) -> _NameRungs:
        hit = self._host_cache.get(host)
        if hit is None:
            hit = self._name_rungs(host)
            with self._lock:
                if len(self._host_cache) >= HOST_CACHE_LIMIT:
                    self._host_cache.clear()
                self._host_cache[host] = hit
        return hit

    def _name_rungs(self, host: str) -> _NameRungs:
        """What the knowledge base, the user's intel and the data sets say about a name."""
        recipient: list[_Rung] = []
        hosting: list[_Rung] = []
        private = private_suffix(host)
        mp = self._exact.get(host)
        basis = Basis.KB_HOST
        rd = registrable_domain(host)
        if mp is None and rd is not None:
            for p in self._patterns.get(rd, ()):
                if p.regex.fullmatch(host):
                    mp = p.mapping
                    break
        if mp is not None:
            r = self._kb_rung(mp, basis, host, exact=True)
            (hosting if r.hosting else recipient).append(r)
        dmp = self._domains.get(rd) if rd is not None else None
        if dmp is not None:
            r = self._kb_rung(dmp, Basis.KB_DOMAIN, host, exact=False, private=private)
            (hosting if r.hosting else recipient).append(r)
        intel = self._intel.match_host(host) if self._intel else []
        for e in intel:
            if e.organisation and e.organisation in self.organisations:
                recipient.append(self._intel_rung(e))
        # a KB domain marked as hosting shelters the name as a private suffix does: a data
        # set's rule at or above it (a company list holding its cloud's storage domain)
        # names the hosting too
        shelter = private
        for r in hosting:
            key = r.ev.matched
            if "*" not in key and (shelter is None or len(key) > len(shelter)):
                shelter = key
        witness: list[_Rung] = []
        if self._datasets is not None:
            for dm in self._datasets.match_host(host):
                dr = self._dataset_rung(dm, host, shelter)
                if dr is not None:
                    (hosting if dr.hosting else witness if dr.witness else recipient).append(dr)
        return _NameRungs(
            tuple(recipient),
            tuple(hosting),
            tuple(sorted({e.label for e in intel})),
            _dedupe_sources(e.source for e in intel),
            **_flag(intel),
            witness=tuple(witness),
        )

    def _ip_rungs(self, facts: IpFacts) -> _NameRungs:
        if not self._intel or facts.reason == NOT_AN_IP:
            return _NO_NAME
        intel = self._intel_ip(facts.ip)
        return _NameRungs(
            tuple(
                self._intel_rung(e)
                for e in intel
                if e.organisation and e.organisation in self.organisations
            ),
            (),
            tuple(sorted({e.label for e in intel})),
            _dedupe_sources(e.source for e in intel),
            **_flag(intel),
        )

    def _kb_rung(
        self,
        mp: KbMapping,
        basis: Basis,
        host: str,
        *,
        exact: bool,
        private: str | None = None,
    ) -> _Rung:
        org = self.organisations[mp.organisation]
        cats = mp.categories or org.categories
        # A hosting provider's domain (an organisation that is only cdn_cloud: AWS, Akamai,
        # Cloudflare...) and a public suffix list private suffix (d1.cloudfront.net) name
        # where the server stands, not who runs the service on it; an exact host of the
        # provider's own service (its API, its site) still names the provider.
        hosting = mp.hosting or (
            not exact and ((private is not None and _under(mp.key, private)) or _hosting_only(org))
        )
        ev = NameEvidence(
            basis=basis,
            organisation=org.id,
            name=org.name,
            country=org.country,
            matched=mp.key,
            source=mp.source,
            confidence=Confidence.HIGH,
        )
        return _Rung(ev, cats, mp.note, self._family(org.id), hosting)

    def _intel_rung(self, e: IntelEntry) -> _Rung:
        org = self.organisations[e.organisation or ""]
        ev = NameEvidence(
            basis=Basis.INTEL,
            organisation=org.id,
            name=org.name,
            country=org.country,
            matched=f"{e.kind}:{e.value}",
            source=e.source,
            confidence=Confidence.MEDIUM,
            detail=f"user intel {e.label}",
        )
        note = "; ".join(x for x in (e.name, ", ".join(e.tags), e.note) if x) or None
        return _Rung(ev, e.categories or org.categories, note, self._family(org.id), False)

    def _dataset_rung(self, dm: Any, host: str, private: str | None) -> _Rung | None:
        info, entity = dm.dataset, dm.entity
        domain = dm.rule.partition(":")[2] or dm.rule
        if not dm.exact and registrable_domain(domain) is None:
            return None  # a rule at a public suffix ("in.th") would claim a whole namespace
        # Only a reviewed alias makes a data-set entity a KB organisation (never its name: a
        # list called "alibaba" may hold an affiliate's domains); a veto (null) drops it.
        key = (info.id, entity.id)
        if key in self._aliases and self._aliases[key] is None:
            return None
        org_id = self._aliases.get(key)
        org = self.organisations.get(org_id) if org_id else None
        cats = tuple(dm.categories) or (org.categories if org else ())
        hosting = key in self._hosting_aliases or (
            not dm.exact
            and (
                (private is not None and _under(domain, private))
                or (org is not None and _hosting_only(org))
            )
        )
        witness = org is None and info.format not in OWNERSHIP_FORMATS
        ev = NameEvidence(
            basis=Basis.DATASET,
            organisation=org.id if org else None,
            name=org.name if org else entity.name,
            country=org.country if org else entity.country,
            matched=f"{info.id}: {dm.rule}",
            source=dataset_source(info),
            confidence=Confidence.MEDIUM if org else Confidence.LOW,
            detail=f"{info.name} entity {entity.name!r}"
            + (" (a list of a service's domains, no alias: names no recipient)" if witness else ""),
        )
        family = self._family(org.id) if org else f"{info.id}:{entity.id}"
        entity_id = None if org else entity.id
        return _Rung(ev, cats, None, family, hosting, entity_id, info.id, witness)

    def _cert_rung(self, host: str, cert: CertSubject) -> _Rung | None:
        """A certificate names the recipient only when it covers the host (a wildcard never
        at a public suffix), its subject O= is the name or a legal name of a KB organisation,
        and the proxy verified it (one read from packets is unverified: evidence only). On a
        name under a private suffix it is the platform's certificate: hosting."""
        name = " ".join((cert.org or "").split())
        if not name or not cert_covers(cert, host):
            return None
        org_id = self.org_by_name(name)
        org = self.organisations.get(org_id) if org_id else None
        issuer = f", by {cert.issuer}" if cert.issuer else ""
        unverified = cert.seen_by != "proxy"
        why = ""
        if org is None:
            why = " (not a name the knowledge base knows: names no recipient)"
        elif unverified:
            why = " (read from packets, its chain not verified: names no recipient)"
        ev = NameEvidence(
            basis=Basis.CERTIFICATE,
            organisation=org.id if org else None,
            name=org.name if org else name,
            country=org.country if org else cert.country,
            matched=f"certificate sha256:{cert.sha256 or '?'}",
            source=cert_source(cert),
            confidence=Confidence.MEDIUM if org and not unverified else Confidence.LOW,
            detail=f"certificate issued to {name}{issuer}{why}",
        )
        hosting = (org is not None and _hosting_only(org)) or private_suffix(host) is not None
        family = self._family(org.id) if org else f"cert:{_exact_name(name)}"
        witness = org is None or unverified
        return _Rung(ev, org.categories if org else (), None, family, hosting, witness=witness)

    def _cname_rungs(self, host: str, cnames: Sequence[str]) -> list[_Rung]:
        """A CNAME chain passes on only what the knowledge base (or a reviewed alias) says of
        a target: the first recipient that is not a cloud's, and the first hosting."""
        out: list[_Rung] = []
        chain = [c for c in (normalise_host(x) for x in cnames) if c and c != host]
        named = hosted = False
        for target in list(dict.fromkeys(chain))[:16]:
            found = self._host_rungs(target)
            picks = []
            if not named:
                known = [r for r in found.recipient if r.ev.organisation is not None]
                picks += known[:1]
                named = bool(known)
            if not hosted and found.hosting:
                picks.append(found.hosting[0])
                hosted = True
            for r in picks:
                ev = NameEvidence(
                    basis=Basis.CNAME,
                    organisation=r.ev.organisation,
                    name=r.ev.name,
                    country=r.ev.country,
                    matched=f"{host} CNAME {target}",
                    source=r.ev.source,
                    confidence=Confidence.MEDIUM,
                    detail=f"the DNS answer for {host} points to {target} ({r.ev.basis}: "
                    f"{r.ev.matched})",
                )
                out.append(_Rung(ev, r.categories, r.note, r.family, r.hosting))
            if named and hosted:
                break
        return out

    def _intel_ip(self, ip: str) -> list[IntelEntry]:
        try:
            return self._intel.match_ip(ip)
        except ValueError:
            return []

    def _family(self, org_id: str) -> str:
        view = self._org_view(org_id)
        return view.root if view else org_id

    def family(self, attribution: Attribution) -> str | None:
        """The recipient's organisation family: the KB id at the top of its parent chain
        (``google`` -> ``alphabet``), a foreign recipient's own id (a data-set entity, a
        certificate's subject), or None for an unknown operator."""
        org = attribution.organisation
        if org is None:
            return None
        return self._family(org) if org in self.organisations else org

    def org_by_name(self, name: str | None) -> str | None:
        """The KB organisation whose name or one of whose legal names is ``name``, compared
        without case or punctuation (every word counts: "Apple Pty Ltd" is not Apple Inc.)."""
        key = _exact_name(name or "")
        return self._org_names.get(key) if key else None

    def concerns(self, org_id: str) -> dict[str, Any]:
        """The basis in words of an organisation's state control (each fact with its source
        and date) and of its legal exposure, per headquarters country."""
        view = self._org_view(org_id)
        if view is None:
            return {}
        return {
            "state_control": [
                f"{' '.join(f.statement.split())} ({f.source.publisher}, {f.date})"
                for f in view.state_control
            ],
            "legal_exposure": {e.country: e.basis for e in view.exposure},
        }

    def hosting_of(self, facts: IpFacts) -> KbMapping | None:
        return self._network_of(facts.asn, facts.asn_org)

    def _network_of(self, asn: int | None, asn_org: str | None) -> KbMapping | None:
        mp = self._asn_numbers.get(asn) if asn is not None else None
        if mp is None and asn_org:
            mp = self._asn_names.get(asn_org.casefold())
        return mp

    # --- building attributions --------------------------------------------------------------

    def _org_view(self, org_id: str) -> _OrgView | None:
        view = self._org_cache.get(org_id)
        if view is not None:
            return view
        org = self.organisations.get(org_id)
        if org is None:
            return None
        chain = [org]
        while chain[-1].parent and len(chain) < 16:
            nxt = self.organisations.get(chain[-1].parent or "")
            if nxt is None or nxt in chain:
                break
            chain.append(nxt)
        facts: list[Fact] = []
        for o in chain:
            c = self.countries.get(o.country)
            if c is not None:
                facts.extend(c.facts)
        for o in chain:
            facts.extend(o.jurisdiction)
        exposures: list[Exposure] = []
        seen: set[str] = set()
        for i, o in enumerate(chain):
            c = self.countries.get(o.country)
            if c is None or not c.facts or c.code in seen:
                continue
            seen.add(c.code)
            exposures.append(
                Exposure(
                    country=c.code,
                    country_name=c.name,
                    via="headquarters" if i == 0 else "parent headquarters",
                    organisation=o.name,
                    facts=c.facts,
                    intelligence_obligation=c.intelligence_obligation,
                )
            )
        view = _OrgView(
            org=org,
            parent=chain[1] if len(chain) > 1 else None,
            root=chain[-1].id,
            state_control=_dedupe_facts(f for o in chain for f in o.state_control),
            exposure=tuple(exposures),
            jurisdiction=_dedupe_facts(facts),
        )
        self._org_cache[org_id] = view
        return view

    def exposure_of(self, country: str | None, via: str, who: str | None = None) -> Exposure | None:
        """The legal exposure through ``country`` (its laws that can compel access), if the
        knowledge base records any."""
        return self._exposure_of(country, via, who)

    def _exposure_of(self, country: str | None, via: str, who: str | None) -> Exposure | None:
        c = self.countries.get(country) if country else None
        if c is None or not c.facts:
            return None
        return Exposure(c.code, c.name, via, who, c.facts, c.intelligence_obligation)

    def _attribution(
        self,
        host: str | None,
        ip: str | None,
        rungs: _NameRungs,
        facts: IpFacts | None,
        *,
        note: str | None = None,
        shared: bool = False,
    ) -> Attribution:
        """``shared``: ``rungs`` is a name's own (kept in the host cache, not merged with a
        certificate's, CNAMEs' or an address's), so what it says is kept with it
        (:meth:`_recipient`): a flow table attributes each name once without its address
        and again with the address of each endpoint row."""
        if shared or rungs is _NO_NAME:
            hit = self._recipient_cache.get(id(rungs))
            if hit is None or hit[0] is not rungs:
                hit = (rungs, self._recipient(rungs))
                with self._lock:
                    if len(self._recipient_cache) >= HOST_CACHE_LIMIT:
                        self._recipient_cache.clear()
                    self._recipient_cache[id(rungs)] = hit
            r = hit[1]
        else:
            r = self._recipient(rungs)
        win = r.win
        server_country = facts.country if facts else None
        cinfo = self.countries.get(server_country) if server_country else None
        # legal exposure through a headquarters comes only from the knowledge base: a data
        # set's country or a certificate's C= is not evidence of where a company is based
        exposures = list(r.exposure)
        if server_country and server_country not in r.exposure_countries:
            e = self._exposure_of(server_country, "server location", None)
            if e is not None:
                exposures.append(e)
        hosting = self._hosting(ip, facts, rungs, r.root)
        sources = list(r.sources)
        if hosting is not None and hosting.source is not None:
            sources.append(hosting.source)
        notes = [note, win.note if win else rungs.flag_note]
        if win is None and hosting is not None and (hosting.organisation or hosting.asn_org):
            notes.append(f"unknown operator, hosted by {hosting.label}")
        view, org = r.view, r.org
        return Attribution(
            host=host,
            ip=ip,
            organisation=r.org_id,
            organisation_name=org.name if org else (win.ev.name if win else None),
            parent=view.parent.id if view and view.parent else None,
            parent_name=view.parent.name if view and view.parent else None,
            country=org.country if org else None,
            categories=(win.categories if win else ()) or (org.categories if org else ()),
            state_control=view.state_control if view else (),
            legal_exposure=tuple(exposures),
            jurisdiction=view.jurisdiction if view else (),
            assessments=org.assessments if org else (),
            server_country=server_country,
            server_country_reason=facts.reason if facts else None,
            server_country_adequacy=cinfo.adequacy_fact if cinfo else None,
            asn=facts.asn if facts else None,
            asn_org=facts.asn_org if facts else None,
            basis=win.ev.basis if win else Basis.NONE,
            confidence=win.ev.confidence if win else Confidence.NONE,
            evidence=r.evidence,
            conflicts=r.conflicts,
            hosting=hosting,
            matched=win.ev.matched if win else rungs.flagged,
            labels=rungs.labels,
            sources=_dedupe_sources(sources),
            note="; ".join(x for x in notes if x) or None,
        )

    def _recipient(self, rungs: _NameRungs) -> _Recipient:
        """What the rungs of a name say of its recipient, whatever the address."""
        win = rungs.recipient[0] if rungs.recipient else None
        view = self._org_view(win.ev.organisation) if win and win.ev.organisation else None
        org = view.org if view else None
        exposure = tuple(view.exposure) if view else ()
        # A conflict is a rung that names a knowledge-base organisation of another family:
        # two data-set entities the KB does not know (a list "aliyun" beside Alibaba) may be
        # the same company under two names, and are shown as evidence, not as a conflict.
        conflicts: list[NameEvidence] = []
        if win is not None:
            seen = {win.family}
            for r in rungs.recipient[1:]:
                if r.ev.organisation is not None and r.family not in seen:
                    seen.add(r.family)
                    conflicts.append(r.ev)
        if win is not None and org is None:
            org_id: str | None = _foreign_id(win)
        else:
            org_id = org.id if org else None
        evidence = tuple(dict.fromkeys(r.ev for r in (*rungs.recipient, *rungs.witness)))
        sources = [win.ev.source] if win else []
        sources += [e.source for e in conflicts]
        sources += list(org.sources if org else ())
        sources += list(rungs.intel_sources)
        return _Recipient(
            win, view, org, org_id, exposure, frozenset(e.country for e in exposure),
            tuple(conflicts), evidence, tuple(sources), view.root if view else None,
        )  # fmt: skip

    def _hosting(
        self, ip: str | None, facts: IpFacts | None, rungs: _NameRungs, root: str | None
    ) -> Hosting | None:
        mp = self.hosting_of(facts) if facts is not None else None
        by_name = rungs.hosting[0] if rungs.hosting else None
        if facts is None and by_name is None:
            return None
        org_id = mp.organisation if mp else (by_name.ev.organisation if by_name else None)
        org = self.organisations.get(org_id) if org_id else None
        if mp is not None:
            basis: str | None = (
                "asn" if mp.key.startswith("AS") and mp.key[2:].isdigit() else "asn-name"
            )
            source: Source | None = mp.source
        elif by_name is not None:
            basis, source = "cdn-domain", by_name.ev.source
        else:
            basis, source = None, None
        return Hosting(
            ip=ip,
            asn=facts.asn if facts else None,
            asn_org=facts.asn_org if facts else None,
            organisation=org.id if org else None,
            organisation_name=org.name if org else (by_name.ev.name if by_name else None),
            country=facts.country if facts else None,
            basis=basis,
            source=source,
            same_family=bool(org and root and self._family(org.id) == root),
        )

    # --- bulk ---------------------------------------------------------------------------------

    def classify_hosts(
        self,
        hosts: pd.Series | Sequence[str | None],
        ips: pd.Series | Sequence[str | None] | None = None,
        *,
        evidence: pd.DataFrame | None = None,
        wanted: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """Attribute a whole column of hosts (and, optionally, the matching server addresses
        and the name evidence of each flow: the CERT_* and CNAMES columns of ``evidence``).
        ``wanted``: only those columns of the result (all when None; the server address column of
        200,000 distinct addresses costs a tenth of a second that :meth:`annotate` never
        reads).

        Each distinct combination is looked up once and mapped back to the rows with integer
        codes, so the cost follows the number of distinct values, not of rows. The result has
        the columns of :data:`auditor.intel.model.CLASSIFY_COLUMNS` and the index of
        ``hosts``; text columns are categorical, ``asn`` is a nullable integer.
        """
        import numpy as np
        import pandas as pd

        hs = hosts if isinstance(hosts, pd.Series) else pd.Series(list(hosts), dtype=object)
        n = len(hs)
        arrays: list[np.ndarray] = [hs.to_numpy(dtype=object)]
        if ips is not None:
            ip_s = ips if isinstance(ips, pd.Series) else pd.Series(list(ips), dtype=object)
            if len(ip_s) != n:
                raise ValueError("hosts and ips must have the same length")
            arrays.append(ip_s.to_numpy(dtype=object))
        else:
            arrays.append(np.full(n, None, dtype=object))
        ev_cols = [
            c
            for c in columns.NAME_EVIDENCE_COLUMNS
            if evidence is not None and c in evidence.columns
        ]
        if evidence is not None and ev_cols and len(evidence) != n:
            raise ValueError("evidence must have one row per host")
        # a column with no value at all keys nothing (left out below anyway): not converted
        ev_cols = [c for c in ev_cols if evidence is not None and evidence[c].notna().any()]
        for name in ev_cols:
            assert evidence is not None
            arrays.append(evidence[name].to_numpy(dtype=object))
        # The address only matters through what the IP databases (and the user's intel) say
        # about it, and a host written as an address is looked up as that address: rows are
        # keyed on the host and those facts, so 100,000 flows to 100,000 addresses of one
        # network cost one attribution, not 100,000. Each row keeps its own address.
        host_col, ip_col = arrays[0], arrays[1]
        literal = _per_value(host_col, _ip_literal, canonical_v4=True)
        is_literal = np.asarray([x is not None for x in literal.tolist()], dtype=bool)
        own_ip = np.empty(n, dtype=object)
        own_ip[:] = [v if isinstance(v, str) and v else None for v in ip_col.tolist()]
        eff_ip = np.where(pd.isna(own_ip) & is_literal, literal, own_ip)
        ip_codes, ip_uniques = pd.factorize(eff_ip, use_na_sentinel=True)
        # (the network is never read: attribution keys on the AS, its organisation, and
        # the country)
        facts = self.ipdb.lookup_columns([str(ip) for ip in ip_uniques], networks=False)
        row_sig = np.append(self._facts_codes(facts), -1)[ip_codes]  # no address: -1
        key_host = host_col.copy()
        key_host[is_literal] = None
        # Without user intel on addresses, an attribution reads an address only for the
        # hosting (the KB's network of its AS): names are looked up without it, once per
        # name and evidence, and the hosting is joined on per row (_join_hosting)
        split = not self._intel
        key_columns = [key_host, np.zeros(n, dtype=np.int64) if split else row_sig, *arrays[2:]]
        # one mixed-radix code per row over all key columns, refactorized only when the radix
        # would overflow; an evidence column with no value at all is left out
        codes = np.zeros(n, dtype=np.int64)
        radix = 1
        kept_ev: list[str] = []
        kept: list[int] = []
        for j, col in enumerate(key_columns):
            vcodes, uniq = pd.factorize(col, use_na_sentinel=True)
            if j >= 2 and len(uniq) == 0:
                continue
            if j >= 2:
                kept_ev.append(ev_cols[j - 2])
                kept.append(j)
            width = len(uniq) + 1
            if radix * width >= 2**62:
                dense, seen = pd.factorize(codes)
                codes, radix = dense.astype(np.int64), len(seen)
            codes = codes * width + (vcodes.astype(np.int64) + 1)
            radix *= width
        codes = pd.factorize(codes)[0].astype(np.int64)
        # codes are dense (0..k-1) after the last factorize: one lookup per distinct code
        _, first = np.unique(codes, return_index=True)
        rows = [
            self._row(
                [key_host[i], None if split else eff_ip[i], *(key_columns[j][i] for j in kept)],
                kept_ev,
                None if split or ip_codes[i] < 0 else IpFacts(*(c[ip_codes[i]] for c in facts)),
            )
            for i in first.tolist()
        ]
        frame = _rows_to_frame(rows, codes, hs.index)
        # each row's own address, AS and AS organisation (and the hosting named by it)
        # (categories from the distinct addresses' facts, in the order the rows first reach
        # them: ip_codes number the addresses in that order)
        own_org = np.append(facts.asn_org, np.full(1, None, dtype=object))[ip_codes]
        if wanted is None or m.SERVER_IP in wanted:
            frame[m.SERVER_IP] = _categorical_of(facts.ip, ip_codes)
        asn = pd.array([*facts.asn.tolist(), None], dtype="Int64")
        frame[m.ASN] = asn.take(np.where(ip_codes < 0, len(facts.asn), ip_codes))
        frame[m.ASN_ORG] = _categorical_of(facts.asn_org, ip_codes)
        frame[m.SERVER_COUNTRY] = _categorical_of(facts.country, ip_codes)
        # legal exposure: the organisation's (per lookup), then the server's country's when
        # it is another country with laws on record (per row), as _attribution orders them
        ccodes, cuniq = pd.factorize(facts.country, use_na_sentinel=True)
        ccodes = np.append(ccodes, -1)[ip_codes]
        # per distinct (headquarters countries, server country): lookups share a few lists
        bases: dict[tuple[str, ...], int] = {}
        base_of = np.asarray([bases.setdefault(r[-1], len(bases)) for r in rows], dtype=np.int64)
        base_list = list(bases)
        pair, pairs = pd.factorize(base_of[codes] * (len(cuniq) + 1) + (ccodes + 1))
        exposure = np.empty(len(pairs), dtype=object)
        laws = [bool(c and self._exposure_of(c, "", None)) for c in cuniq.tolist()]
        for k, v in enumerate(pairs.tolist()):
            base, c = divmod(int(v), len(cuniq) + 1)
            parts = list(base_list[base])
            country = cuniq[c - 1] if c else None
            if country and country not in parts and laws[c - 1]:
                parts.append(f"server:{country}")
            exposure[k] = ";".join(parts) or None
        frame[m.LEGAL_EXPOSURE] = _categorical(exposure[pair])
        if split:
            by_as = self._join_hosting(frame, rows, codes, row_sig, facts, ip_codes)
        else:
            by_as = np.asarray([r[-2] for r in rows], dtype=bool)[codes]
        if by_as.any():
            names = frame[m.HOSTING_NAME].to_numpy(dtype=object)
            names[by_as] = own_org[by_as]
            names[pd.isna(names)] = None
            frame[m.HOSTING_NAME] = _categorical(names)
        if wanted is not None:
            return frame[[c for c in m.CLASSIFY_COLUMNS if c in wanted]]
        return frame

    def _join_hosting(
        self,
        frame: pd.DataFrame,
        rows: list[tuple[Any, ...]],
        codes: np.ndarray,
        row_sig: np.ndarray,
        facts: FactsColumns,
        ip_codes: np.ndarray,
    ) -> np.ndarray:
        """The hosting columns of rows looked up by name alone (:meth:`classify_hosts`), as
        :meth:`_hosting` makes them: the KB's network of the address's AS, else the hosting
        the name names (a cloud's domain); a row with an address and neither is hosted by its
        AS organisation. Returns which rows are (``by_as``)."""
        import numpy as np

        def objects(values: list[Any]) -> np.ndarray:
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out

        # by name: the hosting of each lookup without an address (None: the name names none)
        by_org = objects([r[17] for r in rows])[codes]
        by_name = objects([r[18] for r in rows])[codes]
        named = np.asarray([r[18] is not None or r[-2] for r in rows], dtype=bool)[codes]
        # by network: per distinct facts key, the KB mapping of its AS (kind 1: a known
        # organisation, 2: an organisation the KB does not hold)
        n_sig = int(row_sig.max()) + 1 if len(row_sig) else 0
        kind = np.zeros(n_sig + 1, dtype=np.int64)  # the last entry: no address
        net_org = np.full(n_sig + 1, None, dtype=object)
        net_name = np.full(n_sig + 1, None, dtype=object)
        has_ip = ip_codes >= 0
        sig_ip = np.full(n_sig, -1, dtype=np.int64)
        sig_ip[row_sig[has_ip][::-1]] = ip_codes[has_ip][::-1]
        for k, j in enumerate(sig_ip.tolist()):
            mp = self._network_of(facts.asn[j], facts.asn_org[j]) if j >= 0 else None
            if mp is None:
                continue
            org = self.organisations.get(mp.organisation)
            if org is None:
                kind[k] = 2
            else:
                kind[k], net_org[k], net_name[k] = 1, org.id, org.name
        sig = np.where(row_sig >= 0, row_sig, n_sig)
        mk = kind[sig]
        exists = has_ip | named
        none = np.asarray(None, dtype=object)
        org_col = np.where(mk == 1, net_org[sig], np.where(mk == 2, none, by_org))
        name_col = np.where(mk == 1, net_name[sig], by_name)
        org_col = np.where(exists, org_col, none)
        name_col = np.where(exists, name_col, none)
        frame[m.HOSTING_ORG] = _categorical(org_col)
        frame[m.HOSTING_NAME] = _categorical(name_col)
        empty = np.asarray([not v for v in name_col.tolist()], dtype=bool)
        return np.asarray(exists & empty, dtype=bool)

    def _facts_codes(self, facts: FactsColumns) -> np.ndarray:
        """One integer per address, equal where :meth:`_facts_key` is: computed once per
        distinct (AS, AS organisation, reason) when there is no user intel on addresses."""
        import numpy as np
        import pandas as pd

        n = len(facts.ip)
        if self._intel:
            keys = [self._facts_key(r) for r in zip(*(c.tolist() for c in facts), strict=True)]
            return np.asarray(pd.factorize(pd.Series(keys, dtype=object))[0], dtype=np.int64)
        combined = np.zeros(n, dtype=np.int64)
        for col in (facts.asn, facts.asn_org, facts.reason):
            vcodes, uniq = pd.factorize(col, use_na_sentinel=True)
            combined = combined * (len(uniq) + 1) + (vcodes + 1)
        dense, firsts = pd.factorize(combined)
        first_at = np.zeros(len(firsts), dtype=np.int64)
        first_at[dense[::-1]] = np.arange(n - 1, -1, -1)  # each code's first address
        rows = zip(*(c[first_at].tolist() for c in facts), strict=True)
        keys = [self._facts_key(r) for r in rows]
        kcodes = np.asarray(pd.factorize(pd.Series(keys, dtype=object))[0], dtype=np.int64)
        return kcodes[dense]

    def _facts_key(self, f: FactsRow) -> tuple[Any, ...]:
        """What an attribution reads of an address's facts (an :class:`IpFacts` as a tuple):
        its country, AS, AS organisation, reason, and the user's intel on it; not the
        address itself."""
        ip, _country, asn, asn_org, _network, reason, _database = f
        intel: tuple[int, ...] = ()
        if self._intel and reason != NOT_AN_IP:
            intel = tuple(id(e) for e in self._intel_ip(ip))
        # the AS and its organisation matter through the network the KB maps them to; their
        # own values are copied to each row (classify_hosts)
        network = self._network_of(asn, asn_org)
        # the server's country matters through the row's legal exposure, made per row too
        return (id(network) if network is not None else None, reason, intel)

    def _row(
        self, key: list[Any], ev_cols: list[str], known: IpFacts | None = None
    ) -> tuple[Any, ...]:
        host = key[0] if isinstance(key[0], str) and key[0] else None
        ip = key[1] if isinstance(key[1], str) and key[1] else None
        extra = dict(zip(ev_cols, key[2:], strict=True))
        cert = cert_from_columns(extra)
        cn = extra.get(columns.CNAMES)
        cnames = [x for x in cn.split(";") if x] if isinstance(cn, str) and cn else []
        if host or ip:
            a = self.lookup(host, ip, cert=cert, cnames=cnames, known=known if ip else None)
        else:
            a = self._attribution(None, None, _NO_NAME, None)
        h = a.hosting
        return (
            a.host,
            a.organisation,
            a.organisation_name,
            a.parent,
            a.country,
            ";".join(sorted(str(c) for c in a.categories)) or None,
            a.state_linked,
            str(a.matched_by),
            a.matched,
            ";".join(a.labels) or None,
            a.ip,
            a.server_country,
            a.asn,
            a.asn_org,
            str(a.basis),
            str(a.confidence),
            bool(a.conflicts),
            h.organisation if h else None,
            (h.organisation_name or h.asn_org) if h else None,
            bool(a.state_control),
            ";".join(
                e.country if e.via != "server location" else f"server:{e.country}"
                for e in a.legal_exposure
            )
            or None,
            # not columns: the hosting is named by the AS organisation of the address; the
            # legal exposure through the organisation (headquarters), without the server's
            h is not None and not h.organisation_name,
            tuple(e.country for e in a.legal_exposure if e.via != "server location"),
        )


def _ip_literal(host: Any) -> str | None:
    """The address a host written as an address stands for (as :meth:`KnowledgeBase.lookup`
    reads it), else None."""
    if isinstance(host, str) and (":" in host or host[:1].isdigit()):
        addr = parse_ip(host)
        if addr is not None:
            return str(addr)
    return None


def show_lookalikes(flows: pd.DataFrame) -> pd.DataFrame:
    """The table with every lookalike host name shown as its A-label behind a marker, in
    each column that holds a host (name, host, SNI) or a URL, so that findings, endpoints and
    the flow tables never show the lookalike itself (:meth:`KnowledgeBase.lookup` reads a
    shown form back as its key). Each distinct value is looked at once; a table without
    lookalikes is returned as it is."""
    from auditor.intel.lookalike import shown_url

    out = flows
    for col in (columns.NAME, columns.HOST, columns.SNI, columns.URL):
        if col not in flows.columns:
            continue
        values = flows[col].dropna().unique().tolist()
        shown: dict[object, object] = (
            {v: s for v in values if (s := shown_url(v)) != v}
            if col == columns.URL
            else dict(shown_names(values))
        )
        if shown:
            if out is flows:
                out = flows.copy(deep=False)
            out[col] = out[col].map(lambda v, m=shown: m.get(v, v))
    return out


def _per_value(values: np.ndarray, func: Any, *, canonical_v4: bool = False) -> np.ndarray:
    """``func`` of each value of an object array, once per distinct value (missing values
    give None). ``canonical_v4``: ``func`` gives canonical IPv4 text back as it is (found by
    Arrow, not asked)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    if canonical_v4:
        from auditor.intel.bulkip import address_kinds

        items = list(uniques)
        v4, _ = address_kinds(items)
        mapped[:-1] = [u if is_v4 else func(u) for u, is_v4 in zip(items, v4.tolist(), strict=True)]
    else:
        mapped[:-1] = [func(u) for u in uniques]
    mapped[-1] = None
    return mapped[codes]


def _categorical_of(values: np.ndarray, codes: np.ndarray) -> pd.Categorical:
    """:func:`_categorical` of ``values[codes]`` (code -1: missing), made from ``values``
    alone when every value is reached and ``codes`` number them in the order the rows first
    reach them (as ``pd.factorize`` numbers them): the categories come in the same order."""
    import numpy as np
    import pandas as pd

    vcodes, cats = pd.factorize(values, use_na_sentinel=True)
    row_codes = np.append(vcodes, -1)[codes]
    return pd.Categorical.from_codes(row_codes, categories=pd.Index(cats, dtype=object))


def _categorical(values: np.ndarray) -> pd.Categorical:
    import pandas as pd

    vcodes, cats = pd.factorize(values, use_na_sentinel=True)
    return pd.Categorical.from_codes(vcodes, categories=pd.Index(cats, dtype=object))


def _rows_to_frame(rows: list[tuple[Any, ...]], codes: np.ndarray, index: pd.Index) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    data: dict[str, Any] = {}
    for j, col in enumerate(m.CLASSIFY_COLUMNS):
        values = [r[j] for r in rows]
        if col in (m.STATE_LINKED, m.CONFLICT, m.STATE_CONTROL):
            data[col] = np.asarray(values, dtype=bool)[codes]
        elif col == m.ASN:
            arr = pd.array(values, dtype="Int64")
            data[col] = arr.take(codes)
        else:
            vcodes, cats = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
            data[col] = pd.Categorical.from_codes(vcodes[codes], categories=cats)
    return pd.DataFrame(data, index=index)


# --- loading and validating the data files ------------------------------------------------------


def _pattern_domain(pattern: str) -> str | None:
    """The registrable domain every host matching ``pattern`` is under, or None."""
    tail = pattern.rsplit("*", 1)[1].lstrip(".")
    if not tail or "." not in tail:
        return None
    rd = registrable_domain(tail)
    if rd is None or not (tail == rd or tail.endswith("." + rd)):
        return None
    return rd


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseError(f"{path}: cannot read: {exc}") from exc


def _default_files() -> list[Path]:
    """What :meth:`KnowledgeBase.default` reads: the data folder and the data sets."""
    from auditor.intel.dataset_store import dataset_files

    return [p for p in DATA_DIR.rglob("*") if p.is_file()] + dataset_files()


_DEFAULT = StampedCache(_default_files, lambda: KnowledgeBase.load())


def _load_data(data_dir: Path) -> dict[str, Any]:
    src_path = data_dir / SOURCES_FILE
    raw = load_yaml(_read(src_path), str(src_path), KnowledgeBaseError)
    if not isinstance(raw, Mapping):
        raise KnowledgeBaseError(f"{src_path}: a mapping with version, updated, sources")
    try:
        check_keys(raw, ("version", "updated", "sources"), SOURCES_FILE)
        version = text_field(raw, "version", required=True) or ""
        updated = parse_date(raw.get("updated"), "updated")
        if updated is None:
            raise ValueError("missing field 'updated'")
    except ValueError as exc:
        raise KnowledgeBaseError(f"{src_path}: {exc}") from None
    sources: dict[str, Source] = {}
    raw_sources = raw.get("sources")
    if not isinstance(raw_sources, Mapping) or not raw_sources:
        raise KnowledgeBaseError(f"{src_path}: `sources:` must be a non-empty mapping")
    for sid, sraw in raw_sources.items():
        if not isinstance(sid, str) or not re.match(r"^[a-z0-9][a-z0-9-]*$", sid):
            raise KnowledgeBaseError(f"{src_path}: source ids are lower-case slugs: {sid!r}")
        try:
            sources[sid] = parse_source(sid, sraw)
        except ValueError as exc:
            raise KnowledgeBaseError(f"{src_path}:{line_of(sraw)}: {exc}") from None
    countries = _load_countries(data_dir / JURISDICTIONS_FILE, sources)
    organisations: dict[str, Organisation] = {}
    mappings: list[KbMapping] = []
    org_files = sorted(
        p for p in data_dir.glob("*.yaml") if p.name not in (SOURCES_FILE, JURISDICTIONS_FILE)
    )
    if not org_files:
        raise KnowledgeBaseError(f"{data_dir}: no organisation files")
    pending: list[tuple[Path, Any]] = []
    for path in org_files:
        doc = load_yaml(_read(path), str(path), KnowledgeBaseError)
        if not isinstance(doc, Mapping):
            raise KnowledgeBaseError(f"{path}: a mapping with {', '.join(_ORG_FILE_KEYS)}")
        try:
            check_keys(doc, _ORG_FILE_KEYS, path.name)
        except ValueError as exc:
            raise KnowledgeBaseError(f"{path}: {exc}") from None
        org_items = doc.get("organisations") or []
        if not isinstance(org_items, list):
            raise KnowledgeBaseError(f"{path}: `organisations:` must be a list")
        for item in org_items:
            try:
                org = parse_organisation(item, sources)
            except ValueError as exc:
                raise KnowledgeBaseError(f"{path}:{line_of(item)}: {exc}") from None
            if org.id in organisations:
                raise KnowledgeBaseError(
                    f"{path}:{line_of(item)}: duplicate organisation {org.id!r}"
                )
            if org.country not in countries:
                raise KnowledgeBaseError(
                    f"{path}:{line_of(item)}: {org.id}: country {org.country} is not in "
                    f"{JURISDICTIONS_FILE}"
                )
            organisations[org.id] = org
        pending.append((path, doc))
    _check_parents(organisations, str(data_dir))
    claimed: dict[tuple[MappingKind | str, str], str] = {}
    for path, doc in pending:
        for kind_key in ("domains", "hosts", "asns"):
            items = doc.get(kind_key) or []
            if not isinstance(items, list):
                raise KnowledgeBaseError(f"{path}: `{kind_key}:` must be a list")
            for item in items:
                where = f"{path.name}:{line_of(item)}"
                try:
                    new = _mappings(kind_key, item, sources, organisations, where)
                except ValueError as exc:
                    raise KnowledgeBaseError(f"{path}:{line_of(item)}: {exc}") from None
                for mp in new:
                    slot = (
                        "asn-name" if mp.kind is MappingKind.ASN else mp.kind,
                        mp.key.casefold(),
                    )
                    if slot in claimed:
                        raise KnowledgeBaseError(
                            f"{path}:{line_of(item)}: {mp.kind} {mp.key!r} is already claimed "
                            f"at {claimed[slot]}"
                        )
                    claimed[slot] = where
                    mappings.append(mp)
    aliases: dict[tuple[str, str], str | None] = {}
    hosting_aliases: set[tuple[str, str]] = set()
    for path, doc in pending:
        items = doc.get("datasets") or []
        if not isinstance(items, list):
            raise KnowledgeBaseError(f"{path}: `datasets:` must be a list")
        for item in items:
            at = f"{path}:{line_of(item)}"
            if not isinstance(item, Mapping):
                raise KnowledgeBaseError(f"{at}: each of `datasets` is a mapping")
            try:
                check_keys(
                    item, ("dataset", "entity", "organisation", "hosting", "note"), "datasets"
                )
            except ValueError as exc:
                raise KnowledgeBaseError(f"{at}: {exc}") from None
            ds, entity, target = (item.get(k) for k in ("dataset", "entity", "organisation"))
            if not isinstance(ds, str) or not isinstance(entity, str) or not entity:
                raise KnowledgeBaseError(f"{at}: `dataset` and `entity` must be text")
            if target is None:  # a veto: this entity names no recipient (it mixes owners)
                if not text_field(item, "note"):
                    raise KnowledgeBaseError(f"{at}: `organisation: null` needs a `note` (why)")
            elif not isinstance(target, str) or target not in organisations:
                raise KnowledgeBaseError(f"{at}: unknown organisation {target!r}")
            if (ds, entity) in aliases:
                raise KnowledgeBaseError(f"{at}: {ds} entity {entity!r} is already aliased")
            if not isinstance(item.get("hosting", False), bool):
                raise KnowledgeBaseError(f"{at}: `hosting` must be true or false")
            aliases[(ds, entity)] = target
            if item.get("hosting") is True:
                hosting_aliases.add((ds, entity))
    return {
        "aliases": aliases,
        "hosting_aliases": hosting_aliases,
        "version": version,
        "updated": updated,
        "sources": sources,
        "organisations": organisations,
        "countries": countries,
        "mappings": mappings,
    }


def _check_parents(orgs: Mapping[str, Organisation], where: str) -> None:
    for org in orgs.values():
        seen = {org.id}
        cur = org
        while cur.parent is not None:
            nxt = orgs.get(cur.parent)
            if nxt is None:
                raise KnowledgeBaseError(f"{where}: {cur.id}: unknown parent {cur.parent!r}")
            if nxt.id in seen:
                raise KnowledgeBaseError(f"{where}: {org.id}: parent chain loops at {nxt.id!r}")
            seen.add(nxt.id)
            cur = nxt


def _mappings(
    kind_key: str,
    item: Any,
    sources: Mapping[str, Source],
    orgs: Mapping[str, Organisation],
    where: str,
) -> list[KbMapping]:
    if not isinstance(item, Mapping):
        raise ValueError(f"each of `{kind_key}` is a mapping")
    key_field = {"domains": "domain", "hosts": "host", "asns": "asn"}[kind_key]
    extra = ("names",) if kind_key == "asns" else ()
    check_keys(
        item,
        (key_field, "organisation", "categories", "source", "note", "hosting", *extra),
        kind_key,
    )
    hosting = item.get("hosting", False)
    if not isinstance(hosting, bool):
        raise ValueError("`hosting` must be true or false")
    org = item.get("organisation")
    if not isinstance(org, str) or org not in orgs:
        raise ValueError(f"unknown organisation {org!r}")
    source = resolve_source(item.get("source"), sources, None)
    categories = parse_categories(item.get("categories"), required=False)
    note = text_field(item, "note")
    if (
        kind_key != "asns"
        and "hosting" not in item
        and set(categories) == {Category.CDN_CLOUD}
        and not _hosting_only(orgs[org])
    ):
        raise ValueError(
            f"{item.get(key_field)!r} is a cdn_cloud name of {org!r}, which does more than "
            "hosting: say `hosting: true` (customers' services live under it) or `hosting: "
            "false` (only the organisation's own content)"
        )
    value = item.get(key_field)
    if kind_key == "domains":
        dom = normalise_host(value)
        if dom is None:
            raise ValueError(f"not a domain name: {value!r}")
        rd = registrable_domain(dom)
        if rd != dom:
            hint = f" (its registrable domain is {rd}; list the host under `hosts:`)" if rd else ""
            raise ValueError(f"{dom!r} is not a registrable domain{hint}")
        return [KbMapping(MappingKind.DOMAIN, dom, org, categories, source, note, where, hosting)]
    if kind_key == "hosts":
        if isinstance(value, str) and "*" in value:
            pat = normalise_pattern(value)
            if pat is None or _pattern_domain(pat) is None:
                raise ValueError(
                    f"bad host pattern {value!r}: '*' may not reach into the registrable domain"
                )
            return [
                KbMapping(MappingKind.PATTERN, pat, org, categories, source, note, where, hosting)
            ]
        host = normalise_host(value)
        if host is None or registrable_domain(host) is None:
            raise ValueError(f"not a host name: {value!r}")
        return [KbMapping(MappingKind.HOST, host, org, categories, source, note, where, hosting)]
    # asns: a number (or null) and the AS-organisation names it is published under
    names = item.get("names") or []
    if not isinstance(names, list) or not all(isinstance(x, str) and x.strip() for x in names):
        raise ValueError("`names` must be a list of AS-organisation names")
    out: list[KbMapping] = []
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**32:
            raise ValueError(f"`asn` must be an AS number, got {value!r}")
        out.append(KbMapping(MappingKind.ASN, f"AS{value}", org, categories, source, note, where))
    out.extend(
        KbMapping(MappingKind.ASN, " ".join(n.split()), org, categories, source, note, where)
        for n in names
    )
    if not out:
        raise ValueError("an AS entry needs `asn` or `names`")
    return out


def _load_countries(path: Path, sources: Mapping[str, Source]) -> dict[str, CountryInfo]:
    raw = load_yaml(_read(path), str(path), KnowledgeBaseError)
    if not isinstance(raw, Mapping):
        raise KnowledgeBaseError(f"{path}: a mapping with `countries:`")
    try:
        check_keys(
            raw,
            ("adequacy_source", "adequacy_as_of", "eu_eea_source", "eea_source", "countries"),
            JURISDICTIONS_FILE,
        )
        adequacy_src = resolve_source(raw.get("adequacy_source"), sources, None)
        adequacy_as_of = parse_date(raw.get("adequacy_as_of"), "adequacy_as_of")
        eu_src = resolve_source(raw.get("eu_eea_source"), sources, None)
        eea_src = resolve_source(raw.get("eea_source"), sources, None)
    except ValueError as exc:
        raise KnowledgeBaseError(f"{path}: {exc}") from None
    if adequacy_as_of is None:
        raise KnowledgeBaseError(f"{path}: `adequacy_as_of` (the date of the list) is required")
    items = raw.get("countries")
    if not isinstance(items, Mapping) or not items:
        raise KnowledgeBaseError(f"{path}: `countries:` must be a non-empty mapping")
    out: dict[str, CountryInfo] = {}
    for code, item in items.items():
        at = f"{path}:{line_of(item)}"
        if not isinstance(code, str) or not re.match(r"^[A-Z]{2}$", code):
            raise KnowledgeBaseError(f"{at}: {code!r} is not an ISO 3166-1 alpha-2 code")
        if not isinstance(item, Mapping):
            raise KnowledgeBaseError(f"{at}: {code}: a mapping with `name:`")
        try:
            check_keys(
                item,
                (
                    "name",
                    "eu_eea",
                    "eea_only",
                    "adequacy",
                    "adequacy_scope",
                    "adequacy_source",
                    "adequacy_as_of",
                    "facts",
                    "intelligence_obligation",
                ),
                code,
            )
            name = text_field(item, "name", required=True) or code
            eu_eea = item.get("eu_eea", False)
            adequacy = item.get("adequacy", False)
            if not isinstance(eu_eea, bool) or not isinstance(adequacy, bool):
                raise ValueError("`eu_eea` and `adequacy` must be true or false")
            if eu_eea and adequacy:
                raise ValueError("an EU/EEA member needs no adequacy decision")
            scope = text_field(item, "adequacy_scope")
            src = resolve_source(item.get("adequacy_source"), sources, adequacy_src)
            as_of = parse_date(item.get("adequacy_as_of"), "adequacy_as_of") or adequacy_as_of
            facts = parse_facts(item.get("facts"), "facts", sources, None)
        except ValueError as exc:
            raise KnowledgeBaseError(f"{at}: {code}: {exc}") from None
        if eu_eea:
            eea_only = item.get("eea_only") is True
            statement = (
                f"{name} is in the EEA (not the EU): the GDPR applies through the EEA Agreement."
                if eea_only
                else f"{name} is an EU member state: the GDPR applies directly."
            )
            fact = Fact(statement, eea_src if eea_only else eu_src, adequacy_as_of)
        elif adequacy:
            scope_text = f" ({scope})" if scope else ""
            fact = Fact(
                f"{name} is covered by an EU adequacy decision (GDPR art. 45){scope_text}.",
                src,
                as_of,
            )
        else:
            fact = Fact(f"{name} has no EU adequacy decision (GDPR art. 45).", src, as_of)
        obliged = item.get("intelligence_obligation", False) is True
        if obliged and not facts:
            raise KnowledgeBaseError(f"{at}: {code}: intelligence_obligation needs sourced facts")
        out[code] = CountryInfo(code, name, eu_eea, adequacy, scope, fact, facts, obliged)
    return out


# --- CLI hook ---------------------------------------------------------------------------------


def _fact_line(f: Fact) -> str:
    s = f.source
    year = f" {s.year}" if s.year is not None else ""
    return f"  - [{f.date}] {f.statement}\n    ({s.publisher},{year}: {s.title} <{s.url}>)"


def format_attribution(a: Attribution, kb: KnowledgeBase | None = None) -> str:
    """A human-readable account of one attribution: the recipient and the evidence about the
    name, then the hosting, then state control and legal exposure, every fact with its
    source and date."""
    lines = [f"target:        {a.host or a.ip}"]
    if a.organisation:
        hq = f", HQ {a.country}" if a.country else ""
        lines.append(f"recipient:     {a.organisation_name} [{a.organisation}]{hq}")
        if a.parent:
            lines.append(f"parent:        {a.parent_name} [{a.parent}]")
        lines.append(f"categories:    {', '.join(str(c) for c in a.categories) or '-'}")
    else:
        lines.append("recipient:     unknown operator")
    lines.append(f"basis:         {a.basis} ({a.confidence} confidence)")
    for ev in a.evidence:
        detail = f"; {ev.detail}" if ev.detail else ""
        lines.append(f"  - {ev.basis}: {ev.matched} -> {ev.name}{detail} [{ev.source.title}]")
    for ev in a.conflicts:
        lines.append(f"CONFLICT:      {ev.basis}: {ev.matched} -> {ev.name} [{ev.source.title}]")
    if a.labels:
        lines.append(f"intel labels:  {', '.join(a.labels)}")
    if a.hosting is not None:
        h = a.hosting
        where = a.server_country or (f"- ({a.server_country_reason})" if a.ip else "-")
        lines.append(f"hosted by:     {h.label}{' (same family)' if h.same_family else ''}")
        if a.ip:
            lines.append(f"server:        {a.ip} in {where}")
    elif a.ip:
        lines.append(f"server:        {a.ip}, {a.server_country_reason or 'not located'}")
    if a.note:
        lines.append(f"note:          {a.note}")
    if a.state_control:
        lines.append("state control:")
        lines.extend(_fact_line(f) for f in a.state_control)
    else:
        lines.append("state control: none recorded")
    for e in a.legal_exposure:
        lines.append(f"legal exposure ({e.via}): {e.basis}")
        lines.extend(_fact_line(f) for f in e.facts)
    if a.assessments:
        lines.append("assessments:")
        lines.extend(_fact_line(f) for f in a.assessments)
    if a.server_country_adequacy is not None:
        lines.append("server country (EU view):")
        lines.append(_fact_line(a.server_country_adequacy))
    if a.sources:
        lines.append("sources:")
        for s in a.sources:
            year = f", {s.year}" if s.year is not None else ""
            lines.append(f"  - {s.title} ({s.publisher}{year}) <{s.url}>")
    if kb is not None:
        lines.append(f"knowledge base {kb.version} (updated {kb.updated})")
        for d in kb.datasets():
            lines.append(f"data set {d.name} {d.version or d.date or ''} ({d.licence})")
        for f in kb.intel_files:
            lines.append(f"intel {f.summary()}")
    return "\n".join(lines)

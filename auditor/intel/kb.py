"""The knowledge base: who owns which endpoint, where it is headquartered, under which law.

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
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor import columns as C
from auditor.intel import model as m
from auditor.intel.index import IntelIndex, load_intel
from auditor.intel.ipdb import NOT_AN_IP, IpDatabase, default_ipdb, parse_ip
from auditor.intel.model import (
    Attribution,
    Category,
    CountryInfo,
    Fact,
    IpFacts,
    KnowledgeBaseError,
    MappingKind,
    MatchedBy,
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

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).with_name("data")
SOURCES_FILE = "sources.yaml"
JURISDICTIONS_FILE = "jurisdictions.yaml"

HOST_CACHE_LIMIT = 1_000_000
"""Distinct hosts remembered by lookup_host(); beyond this the cache is cleared."""

_ORG_FILE_KEYS = ("organisations", "domains", "hosts", "asns")


# --- the public suffix list, offline ------------------------------------------------------------


@functools.cache
def _tld_extractor() -> Any:
    import tldextract

    # No URLs and no cache dir: tldextract uses the PSL snapshot bundled in its wheel and
    # never touches the network or the disk.
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, include_psl_private_domains=False
    )


def psl_version() -> str:
    """Which public suffix list is in use (tldextract's bundled snapshot)."""
    import tldextract

    return f"tldextract {tldextract.__version__} bundled snapshot"


def registrable_domain(host: str) -> str | None:
    """The registrable domain of a normalised host (``a.b.example.co.uk`` -> ``example.co.uk``)."""
    ext = _tld_extractor()(host)
    if not ext.domain or not ext.suffix:
        return None
    return f"{ext.domain}.{ext.suffix}"


# --- internal match records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pattern:
    pattern: str
    regex: re.Pattern[str]
    literal: int  # characters other than "*": the more, the more specific
    order: int
    mapping: KbMapping


@dataclass(frozen=True, slots=True)
class _Match:
    """What a host or address matched, before the organisation's details are filled in."""

    organisation: str | None
    categories: tuple[Category, ...]
    matched_by: MatchedBy
    matched: str | None
    sources: tuple[Source, ...]
    labels: tuple[str, ...] = ()
    note: str | None = None


_NO_MATCH = _Match(None, (), MatchedBy.NONE, None, ())


@dataclass(frozen=True, slots=True)
class _OrgView:
    """An organisation with its parent chain resolved, as attributions show it."""

    org: Organisation
    parent: Organisation | None
    state_linked: bool
    state_link: tuple[Fact, ...]
    jurisdiction: tuple[Fact, ...]


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
    ) -> None:
        self.version = version
        self.updated = updated
        self.sources = dict(sources)
        self.organisations = dict(organisations)
        self.countries = dict(countries)
        self.mappings = tuple(mappings)
        self.intel_files = tuple(intel)
        self._ipdb = ipdb
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
        self._host_cache: dict[str, _Match] = {}
        self._org_cache: dict[str, _OrgView] = {}
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
    ) -> KnowledgeBase:
        """Load and validate the built-in data, then add user intel files.

        ``extra`` are intel files as ``label=path`` or paths (auditor YAML, STIX 2.1 JSON,
        hosts files, adblock lists); ``mmdb`` are MaxMind databases that take precedence over
        the bundled IP data. Raises :class:`KnowledgeBaseError` or ``IntelImportError`` naming
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
        return cls(
            version=base["version"],
            updated=base["updated"],
            sources=base["sources"],
            organisations=orgs,
            countries=base["countries"],
            mappings=base["mappings"],
            intel=intel,
            ipdb=ipdb,
        )

    @classmethod
    @functools.cache
    def default(cls) -> KnowledgeBase:
        """The built-in knowledge base with no user intel, loaded once per process."""
        return cls.load()

    @property
    def ipdb(self) -> IpDatabase:
        return self._ipdb if self._ipdb is not None else default_ipdb()

    # --- plain accessors --------------------------------------------------------------------

    def organisation(self, org_id: str) -> Organisation | None:
        return self.organisations.get(org_id)

    def country(self, code: str | None) -> CountryInfo | None:
        return self.countries.get(code.upper()) if code else None

    def info(self) -> dict[str, Any]:
        """Version and provenance of everything a report's attributions rest on."""
        return {
            "kb_version": self.version,
            "kb_updated": self.updated,
            "public_suffix_list": psl_version(),
            "ip_databases": [d.to_json() for d in self.ipdb.databases()],
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
        ip_column: str = C.SERVER_IP,
    ) -> pd.DataFrame:
        """A copy of a flow table with the attribution columns of :mod:`auditor.columns`
        (organisation id, parent id, headquarters country, ";"-joined categories,
        state_linked, server_country, asn, matched_by) plus ``organisation_name``.

        The host is taken from ``host_column``, else the first of ``name``, ``host`` and
        ``sni`` present; the address from ``ip_column`` when present.
        """
        out = flows.copy()
        if host_column is None:
            host_column = next((c for c in (C.NAME, C.HOST, C.SNI) if c in out.columns), "")
        n = len(out)
        hosts = (
            out[host_column].reset_index(drop=True)
            if host_column in out.columns
            else pd.Series([None] * n, dtype=object)
        )
        ips = out[ip_column].reset_index(drop=True) if ip_column in out.columns else None
        table = self.classify_hosts(
            hosts.astype(object), None if ips is None else ips.astype(object)
        )
        mapping = {
            C.ORGANISATION: m.ORGANISATION,
            m.ORGANISATION_NAME: m.ORGANISATION_NAME,
            C.PARENT: m.PARENT,
            C.COUNTRY: m.ORG_COUNTRY,
            C.CATEGORIES: m.CATEGORIES,
            C.STATE_LINKED: m.STATE_LINKED,
            C.SERVER_COUNTRY: m.SERVER_COUNTRY,
            C.ASN: m.ASN,
            C.MATCHED_BY: m.MATCHED_BY,
        }
        for target, col in mapping.items():
            values = table[col]
            if isinstance(values.dtype, pd.CategoricalDtype):
                arr = values.to_numpy(dtype=object)
                arr[pd.isna(arr)] = None
                out[target] = pd.Series(arr, index=out.index, dtype=object)
            else:
                out[target] = values.to_numpy()
        return out

    # --- lookups ----------------------------------------------------------------------------

    def lookup_host(self, host: str, *, cache: bool = True) -> Attribution:
        """Attribute a host name (an IP literal is looked up as an address). Never raises."""
        if isinstance(host, str) and (":" in host or host[:1].isdigit()):
            addr = parse_ip(host)
            if addr is not None:
                return self.lookup_ip(str(addr))
        norm = normalise_host(host)
        if norm is None:
            return self._attribution(
                safe_text(host), None, _NO_MATCH, None, note="not a valid host name"
            )
        match = self._host_match(norm) if cache else self._match_host(norm)
        return self._attribution(norm, None, match, None)

    def lookup_ip(self, ip: str) -> Attribution:
        """Attribute a server address by its AS; country and AS from the IP databases."""
        facts = self.ipdb.lookup(ip)
        match = self._match_ip(facts)
        return self._attribution(None, facts.ip, match, facts)

    def lookup(self, host: str | None = None, ip: str | None = None) -> Attribution:
        """Attribute a flow's endpoint: the host decides the organisation, the address adds
        the server's country and AS (and the organisation when the host says nothing)."""
        if host is None or host == "":
            return self.lookup_ip(ip) if ip else self._attribution(None, None, _NO_MATCH, None)
        if ip is None or ip == "":
            return self.lookup_host(host)
        facts = self.ipdb.lookup(ip)
        norm = normalise_host(host)
        hmatch = self._host_match(norm) if norm is not None else _NO_MATCH
        match = self._combine(hmatch, facts)
        shown = norm if norm is not None else safe_text(host)
        note = None if norm is not None else "not a valid host name"
        return self._attribution(shown, facts.ip, match, facts, note=note)

    def _combine(self, hmatch: _Match, facts: IpFacts) -> _Match:
        if hmatch.matched_by is not MatchedBy.NONE:
            extra = self._intel_ip(facts.ip) if self._intel and facts.reason != NOT_AN_IP else []
            if not extra:
                return hmatch
            return _Match(
                hmatch.organisation,
                hmatch.categories,
                hmatch.matched_by,
                hmatch.matched,
                _dedupe_sources((*hmatch.sources, *(e.source for e in extra))),
                tuple(sorted({*hmatch.labels, *(e.label for e in extra)})),
                hmatch.note,
            )
        return self._match_ip(facts)

    def _host_match(self, host: str) -> _Match:
        hit = self._host_cache.get(host)
        if hit is None:
            hit = self._match_host(host)
            with self._lock:
                if len(self._host_cache) >= HOST_CACHE_LIMIT:
                    self._host_cache.clear()
                self._host_cache[host] = hit
        return hit

    def _match_host(self, host: str) -> _Match:
        intel = self._intel.match_host(host) if self._intel else []
        labels = tuple(sorted({e.label for e in intel}))
        intel_sources = tuple(e.source for e in intel)
        mp = self._exact.get(host)
        by = MatchedBy.EXACT_HOST
        if mp is None:
            rd = registrable_domain(host)
            if rd is not None:
                for p in self._patterns.get(rd, ()):
                    if p.regex.fullmatch(host):
                        mp, by = p.mapping, MatchedBy.PATTERN
                        break
                if mp is None:
                    mp = self._domains.get(rd)
                    by = MatchedBy.REGISTRABLE_DOMAIN
        if mp is not None:
            return _Match(
                mp.organisation,
                mp.categories,
                by,
                mp.key,
                _dedupe_sources((mp.source, *intel_sources)),
                labels,
                mp.note,
            )
        if intel:
            return self._intel_match(intel, labels)
        return _NO_MATCH

    def _intel_match(self, entries: Sequence[IntelEntry], labels: tuple[str, ...]) -> _Match:
        best = next((e for e in entries if e.organisation), entries[0])
        return _Match(
            best.organisation,
            best.categories,
            MatchedBy.INTEL_IMPORT,
            f"{best.kind}:{best.value}",
            _dedupe_sources(e.source for e in entries),
            labels,
            "; ".join(x for x in (best.name, ", ".join(best.tags), best.note) if x) or None,
        )

    def _intel_ip(self, ip: str) -> list[IntelEntry]:
        try:
            return self._intel.match_ip(ip)
        except ValueError:
            return []

    def _match_ip(self, facts: IpFacts) -> _Match:
        intel = self._intel_ip(facts.ip) if self._intel and facts.reason != NOT_AN_IP else []
        labels = tuple(sorted({e.label for e in intel}))
        mp = None
        if facts.asn is not None:
            mp = self._asn_numbers.get(facts.asn)
        if mp is None and facts.asn_org:
            mp = self._asn_names.get(facts.asn_org.casefold())
        if mp is not None:
            return _Match(
                mp.organisation,
                mp.categories,
                MatchedBy.ASN,
                mp.key,
                _dedupe_sources((mp.source, *(e.source for e in intel))),
                labels,
                mp.note,
            )
        if intel:
            return self._intel_match(intel, labels)
        return _NO_MATCH

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
        view = _OrgView(
            org=org,
            parent=chain[1] if len(chain) > 1 else None,
            state_linked=any(o.state_linked for o in chain)
            or any(
                (c := self.countries.get(o.country)) is not None and c.intelligence_obligation
                for o in chain
            ),
            state_link=_dedupe_facts(
                [f for o in chain for f in o.state_link]
                + [
                    f
                    for o in chain
                    if (c := self.countries.get(o.country)) is not None
                    and c.intelligence_obligation
                    for f in c.facts
                ]
            ),
            jurisdiction=_dedupe_facts(facts),
        )
        self._org_cache[org_id] = view
        return view

    def _attribution(
        self,
        host: str | None,
        ip: str | None,
        match: _Match,
        facts: IpFacts | None,
        *,
        note: str | None = None,
    ) -> Attribution:
        view = self._org_view(match.organisation) if match.organisation else None
        server_country = facts.country if facts else None
        cinfo = self.countries.get(server_country) if server_country else None
        org = view.org if view else None
        return Attribution(
            host=host,
            ip=ip,
            organisation=org.id if org else None,
            organisation_name=org.name if org else None,
            parent=view.parent.id if view and view.parent else None,
            parent_name=view.parent.name if view and view.parent else None,
            country=org.country if org else None,
            categories=match.categories or (org.categories if org else ()),
            state_linked=view.state_linked if view else False,
            jurisdiction=view.jurisdiction if view else (),
            state_link=view.state_link if view else (),
            assessments=org.assessments if org else (),
            server_country=server_country,
            server_country_reason=facts.reason if facts else None,
            server_country_adequacy=cinfo.adequacy_fact if cinfo else None,
            asn=facts.asn if facts else None,
            asn_org=facts.asn_org if facts else None,
            matched_by=match.matched_by,
            matched=match.matched,
            labels=match.labels,
            sources=_dedupe_sources((*match.sources, *(org.sources if org else ()))),
            note="; ".join(x for x in (note, match.note) if x) or None,
        )

    # --- bulk ---------------------------------------------------------------------------------

    def classify_hosts(
        self,
        hosts: pd.Series | Sequence[str | None],
        ips: pd.Series | Sequence[str | None] | None = None,
    ) -> pd.DataFrame:
        """Attribute a whole column of hosts (and, optionally, the matching server addresses).

        Each distinct (host, address) pair is looked up once and mapped back to the rows with
        integer codes, so the cost follows the number of distinct values, not of rows. The
        result has the columns of :data:`auditor.intel.model.CLASSIFY_COLUMNS` and the index
        of ``hosts``; text columns are categorical, ``asn`` is a nullable integer.
        """
        hs = hosts if isinstance(hosts, pd.Series) else pd.Series(list(hosts), dtype=object)
        n = len(hs)
        hcodes, huniq = pd.factorize(hs, use_na_sentinel=True)
        if ips is None:
            pcodes = hcodes.astype(np.int64, copy=False)
            pairs: list[tuple[Any, Any]] = [(h, None) for h in huniq]
        else:
            ip_s = ips if isinstance(ips, pd.Series) else pd.Series(list(ips), dtype=object)
            if len(ip_s) != n:
                raise ValueError("hosts and ips must have the same length")
            icodes, iuniq = pd.factorize(ip_s.to_numpy(dtype=object), use_na_sentinel=True)
            combined = (hcodes.astype(np.int64) + 1) * (len(iuniq) + 1) + (icodes + 1)
            pcodes, puniq = pd.factorize(combined)
            width = len(iuniq) + 1
            pairs = [
                (
                    huniq[c // width - 1] if c // width else None,
                    iuniq[c % width - 1] if c % width else None,
                )
                for c in puniq.tolist()
            ]
        rows = [self._row(h, ip) for h, ip in pairs]
        rows.append(self._row(None, None))  # rows whose host was missing
        codes = np.where(pcodes < 0, len(rows) - 1, pcodes)
        return _rows_to_frame(rows, codes, hs.index)

    def _row(self, host: Any, ip: Any) -> tuple[Any, ...]:
        h = host if isinstance(host, str) else None
        i = ip if isinstance(ip, str) else None
        a = self.lookup(h, i) if (h or i) else self._attribution(None, None, _NO_MATCH, None)
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
        )


def _rows_to_frame(rows: list[tuple[Any, ...]], codes: np.ndarray, index: pd.Index) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for j, col in enumerate(m.CLASSIFY_COLUMNS):
        values = [r[j] for r in rows]
        if col == m.STATE_LINKED:
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
    return {
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
    check_keys(item, (key_field, "organisation", "categories", "source", "note", *extra), kind_key)
    org = item.get("organisation")
    if not isinstance(org, str) or org not in orgs:
        raise ValueError(f"unknown organisation {org!r}")
    source = resolve_source(item.get("source"), sources, None)
    categories = parse_categories(item.get("categories"), required=False)
    note = text_field(item, "note")
    value = item.get(key_field)
    if kind_key == "domains":
        dom = normalise_host(value)
        if dom is None:
            raise ValueError(f"not a domain name: {value!r}")
        rd = registrable_domain(dom)
        if rd != dom:
            hint = f" (its registrable domain is {rd}; list the host under `hosts:`)" if rd else ""
            raise ValueError(f"{dom!r} is not a registrable domain{hint}")
        return [KbMapping(MappingKind.DOMAIN, dom, org, categories, source, note, where)]
    if kind_key == "hosts":
        if isinstance(value, str) and "*" in value:
            pat = normalise_pattern(value)
            if pat is None or _pattern_domain(pat) is None:
                raise ValueError(
                    f"bad host pattern {value!r}: '*' may not reach into the registrable domain"
                )
            return [KbMapping(MappingKind.PATTERN, pat, org, categories, source, note, where)]
        host = normalise_host(value)
        if host is None or registrable_domain(host) is None:
            raise ValueError(f"not a host name: {value!r}")
        return [KbMapping(MappingKind.HOST, host, org, categories, source, note, where)]
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


def lookup_command(
    target: str, intel: Sequence[Path | str], as_json: bool
) -> tuple[dict[str, Any], str]:
    """``auditor intel lookup HOST|IP [--intel LABEL=FILE ...] [--json]``.

    Returns the JSON form of the attribution (with the knowledge base's provenance under
    ``kb``) and the text to print: the JSON itself with ``as_json``, else a human summary.
    """
    kb = KnowledgeBase.load(extra=list(intel)) if intel else KnowledgeBase.default()
    attribution = kb.lookup_host(target)
    data = attribution.to_json()
    data["kb"] = kb.info()
    if as_json:
        return data, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    return data, format_attribution(attribution, kb)


def _fact_line(f: Fact) -> str:
    s = f.source
    year = f" {s.year}" if s.year is not None else ""
    return f"  - [{f.date}] {f.statement}\n    ({s.publisher},{year}: {s.title} <{s.url}>)"


def format_attribution(a: Attribution, kb: KnowledgeBase | None = None) -> str:
    """A human-readable account of one attribution, every fact with its source and date."""
    lines = [f"target:        {a.host or a.ip}"]
    if a.organisation:
        lines.append(f"organisation:  {a.organisation_name} [{a.organisation}], HQ {a.country}")
        if a.parent:
            lines.append(f"parent:        {a.parent_name} [{a.parent}]")
        lines.append(f"categories:    {', '.join(str(c) for c in a.categories) or '-'}")
        lines.append(f"state-linked:  {'yes' if a.state_linked else 'no'}")
    else:
        lines.append("organisation:  unknown")
    matched = f" ({a.matched})" if a.matched else ""
    lines.append(f"matched by:    {a.matched_by}{matched}")
    if a.labels:
        lines.append(f"intel labels:  {', '.join(a.labels)}")
    if a.ip:
        where = a.server_country or f"- ({a.server_country_reason})"
        lines.append(
            f"server:        {a.ip} in {where}, AS {a.asn or '-'} {a.asn_org or ''}".rstrip()
        )
    if a.note:
        lines.append(f"note:          {a.note}")
    for title, facts in (
        ("state link", a.state_link),
        ("jurisdiction", a.jurisdiction),
        ("assessments", a.assessments),
    ):
        if facts:
            lines.append(f"{title}:")
            lines.extend(_fact_line(f) for f in facts)
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
        for f in kb.intel_files:
            lines.append(f"intel {f.summary()}")
    return "\n".join(lines)

"""The analyser's rules: each a small class with an id, a title, a severity key, a description
and a citation, and a ``check()`` that yields findings. Rules run isolated from each other: a
rule that fails is reported, and the others still run.

Long because: it is the rule registry, one small class per rule and ``default_rules()``
listing them, read in one place like mitmproxy's option table; each rule is short.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from auditor import columns
from auditor.analysis.model import Evidence, Finding, RuleError, Severity
from auditor.analysis.policy import Policy, Thresholds

log = logging.getLogger(__name__)

LEITH_2021 = (
    "H. Liu, P. Patras, D. J. Leith, 'Android Mobile OS Snooping By Samsung, Xiaomi, Huawei "
    "and Realme Handsets', Trinity College Dublin, 2021"
)
NCSC_2021 = (
    "National Cyber Security Centre of Lithuania, 'Assessment of cybersecurity of mobile "
    "devices supporting 5G technology sold in Lithuania', 2021"
)
VSSE_2022 = "Belgian State Security (VSSE), public warning on Chinese smartphone brands, 2022"
GDPR_45 = "Regulation (EU) 2016/679 (GDPR), Art. 44-45: transfers and adequacy decisions, 2016"


@dataclass(frozen=True, slots=True)
class Match:
    """An identifier found in a flow (from the payload scanner)."""

    identifier: str
    location: str
    detail: str
    encoding: str
    excerpt: str = ""


class Shape(tuple[str, str]):
    """A value shaped like personal data, found without being told (the pattern scanner).

    It is the pair ``(kind, value)`` that redaction and the claims read, and carries where it
    was found and its ``context``: what, beside its shape, says it is what it looks like
    (``name:imei`` a field or parameter named so, ``tac:...`` an allocated IMEI type code,
    ``device:imei`` the device profile's own value). Without context a shape is only a shape:
    a 15-digit ad correlator passes the Luhn check one time in ten.
    """

    location: str
    detail: str
    encoding: str
    context: tuple[str, ...]
    excerpt: str

    def __new__(
        cls,
        kind: str,
        value: str,
        location: str = "body",
        detail: str = "",
        encoding: str = "",
        context: tuple[str, ...] = (),
        excerpt: str = "",
    ) -> Shape:
        self = super().__new__(cls, (kind, value))
        self.location, self.detail, self.encoding = location, detail, encoding
        self.context, self.excerpt = tuple(context), excerpt
        return self

    @property
    def kind(self) -> str:
        return self[0]

    @property
    def value(self) -> str:
        return self[1]

    def __reduce__(self) -> Any:
        args = (*self, self.location, self.detail, self.encoding, self.context, self.excerpt)
        return (Shape, args)


@dataclass
class Context:
    flows: pd.DataFrame
    policy: Policy
    vendor: str | None  # the device's manufacturer, as the knowledge base names it
    matches: dict[str, list[Match]] = field(default_factory=dict)
    personal: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # kind, value
    characters: dict[str, dict[str, Any]] = field(default_factory=dict)  # request bodies
    keyword_lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    # organisation id -> the basis in words of its state control and legal exposure
    # (auditor.intel.kb.KnowledgeBase.concerns)
    concerns: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pos: dict[str, Any] | None = None
        self._basis_cache: dict[tuple[Any, ...], list[str]] = {}
        self._flag_cache: dict[tuple[Any, ...], bool] = {}

    def row(self, flow_id: str) -> pd.Series:
        """The flow's row, by an index built once (not a scan of the table per call)."""
        if self._pos is None:
            pos: dict[str, Any] = {}
            for fid, label in zip(self.flows[columns.FLOW_ID], self.flows.index, strict=True):
                pos.setdefault(fid, label)
            self._pos = pos
        return self.flows.loc[self._pos[flow_id]]

    def recipient_key(self, frame: pd.DataFrame) -> pd.Series:
        """Per row: the recipient's id ("" for an unknown operator). A finding names one
        recipient, so rules group flows by name *and* recipient."""
        if columns.ORGANISATION not in frame.columns:
            return pd.Series("", index=frame.index, dtype=object)
        org = frame[columns.ORGANISATION].astype(object)
        return org.where(org.notna(), "")

    def is_vendor(self, row: pd.Series) -> bool:
        if not self.vendor:
            return False
        v = self.vendor.lower()
        return any(
            isinstance(row.get(c), str) and row[c].lower() == v
            for c in (columns.ORGANISATION, columns.PARENT)
        )

    def state_basis(self, row: pd.Series) -> list[str]:
        """Why the policy treats this flow's recipient as state-linked, in words: its state
        control, or the law of a headquarters country the policy lists. Empty: it does not."""
        key = tuple(
            _plain(row.get(c))
            for c in (columns.ORGANISATION, columns.STATE_CONTROL, columns.LEGAL_EXPOSURE)
        )
        hit = self._basis_cache.get(key)
        if hit is None:
            hit = self._basis_cache[key] = self._state_basis(row)
        return hit

    def _state_basis(self, row: pd.Series) -> list[str]:
        p = self.policy
        org = row.get(columns.ORGANISATION)
        words = self.concerns.get(org, {}) if isinstance(org, str) else {}
        out: list[str] = []
        if p.state_control and bool(row.get(columns.STATE_CONTROL)):
            out += words.get("state_control") or ["owned or controlled by a state"]
        exposed = [
            c for c in str(row.get(columns.LEGAL_EXPOSURE) or "").split(";") if c and ":" not in c
        ]
        for country in exposed:
            if country in p.legal_exposure:
                text = (words.get("legal_exposure") or {}).get(country)
                out.append(text or f"the law of {country}, where it is headquartered")
        return out

    def flagged(self, row: pd.Series) -> bool:
        """Whether the policy flags the recipient of this flow."""
        key = tuple(
            _plain(row.get(c))
            for c in (columns.ORGANISATION, columns.PARENT, columns.CATEGORIES, columns.COUNTRY,
                      columns.STATE_CONTROL, columns.LEGAL_EXPOSURE)
        )  # fmt: skip
        hit = self._flag_cache.get(key)
        if hit is None:
            hit = self._flag_cache[key] = self._flagged(row)
        return hit

    def flagged_mask(self, frame: pd.DataFrame) -> np.ndarray:
        """:meth:`flagged` for every row of ``frame``, judged once per distinct recipient."""
        cols = [c for c in _FLAG_COLUMNS if c in frame.columns]
        if frame.empty or not cols:
            return np.zeros(len(frame), dtype=bool)
        codes = frame.groupby(cols, dropna=False, sort=False).ngroup().to_numpy()
        firsts = pd.Series(np.arange(len(frame))).groupby(codes, sort=True).first().to_numpy()
        sub = frame[cols].iloc[firsts]
        flags = np.fromiter((self.flagged(r) for r in _rows(sub)), dtype=bool, count=len(sub))
        return flags[codes]

    def _flagged(self, row: pd.Series) -> bool:
        p = self.policy
        cats = set(str(row.get(columns.CATEGORIES) or "").split(";")) - {""}
        return bool(
            (p.vendor and self.is_vendor(row))
            or self.state_basis(row)
            or (cats & p.categories)
            or (row.get(columns.COUNTRY) in p.countries)
        )


_FLAG_COLUMNS = (
    columns.ORGANISATION, columns.PARENT, columns.CATEGORIES, columns.COUNTRY,
    columns.STATE_CONTROL, columns.LEGAL_EXPOSURE,
)  # fmt: skip


def _plain(v: Any) -> Any:
    """A cell as a hashable plain value (NaN and NA as None)."""
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return str(v)


def _org(row: pd.Series) -> tuple[str | None, str | None]:
    org = row.get(columns.ORGANISATION_NAME) or row.get(columns.ORGANISATION)
    country = row.get(columns.COUNTRY)
    return (
        org if isinstance(org, str) and org else None,
        country if isinstance(country, str) and country else None,
    )


def _recipient(row: pd.Series) -> str:
    org = row.get(columns.ORGANISATION)
    return org if isinstance(org, str) else ""


def _rows(frame: pd.DataFrame) -> Iterator[pd.Series]:
    """Rows as Series for the policy checks, without iterrows' per-row dtype inference."""
    cols = list(frame.columns)
    for values in frame.itertuples(index=False, name=None):
        yield pd.Series(values, index=cols, dtype=object)


def _who(row: pd.Series) -> str:
    org, _country = _org(row)
    name = next(
        (str(v) for v in (_plain(row.get(columns.NAME)), _plain(row.get(columns.HOST))) if v), "?"
    )
    return f"{org} ({name})" if org else name


MAX_EVIDENCE = 20  # evidence items kept per finding (flow_ids lists them all)


def _text(v: Any) -> str:
    v = _plain(v)
    return "" if v is None else str(v)


_EVIDENCE_COLUMNS = (
    columns.FLOW_ID, columns.START, columns.TRANSPORT, columns.SCHEME, columns.SERVER_PORT,
    columns.SERVER_IP, columns.BYTES_UP, columns.NAME,
)  # fmt: skip


def _connection_evidence(grp: pd.DataFrame, note: str = "") -> tuple[Evidence, ...]:
    """The first flows of a group (by id) as evidence about the connections themselves: when,
    where to and how much went up. ``note`` is added to each (why the flow is cited)."""
    # only the columns read here are sorted and made dicts (a group of 35,000 flows with
    # its 60 columns took a tenth of a second)
    cols = [c for c in _EVIDENCE_COLUMNS if c in grp.columns]
    head = grp[cols].sort_values(columns.FLOW_ID).head(MAX_EVIDENCE)
    out = []
    for rec in head.to_dict("records"):
        start = _plain(rec.get(columns.START))
        when = start.isoformat() if isinstance(start, pd.Timestamp) else ""
        how = _text(rec.get(columns.TRANSPORT)) or _text(rec.get(columns.SCHEME)) or "?"
        port = _plain(rec.get(columns.SERVER_PORT))
        to = _text(rec.get(columns.SERVER_IP)) + (f":{int(port)}" if port is not None else "")
        up = _plain(rec.get(columns.BYTES_UP))
        words = f"{when} {how} to {to or '?'}, {int(up) if up is not None else '?'} bytes up"
        out.append(
            Evidence(
                str(rec[columns.FLOW_ID]),
                "connection",
                _text(rec.get(columns.NAME)),
                "",
                None,
                f"{words}; {note}" if note else words,
            )
        )
    return tuple(out)


def _match_evidence(
    items: list[tuple[str, Match]], ident: str | None = None
) -> tuple[Evidence, ...]:
    return tuple(
        Evidence(f, m.location, m.detail, m.encoding, ident or m.identifier, m.excerpt)
        for f, m in items[:MAX_EVIDENCE]
    )


class Rule:
    id: ClassVar[str]
    title: ClassVar[str]
    severity_key: ClassVar[str]
    description: ClassVar[str]
    citation: ClassVar[str]

    def check(self, ctx: Context) -> Iterator[Finding]:
        raise NotImplementedError

    def finding(self, ctx: Context, row: pd.Series, title: str, **kw: Any) -> Finding:
        org, country = _org(row)
        sev = kw.pop("severity", None) or ctx.policy.sev(self.severity_key)
        return Finding(
            rule=self.id,
            severity=sev,
            title=title,
            host=str(row.get(columns.NAME) or ""),
            organisation=org,
            country=country,
            citations=(self.citation,),
            description=self.description,
            **kw,
        )


class IdentifiersSent(Rule):
    """Device identifiers (IMEI, Android ID, serial, MAC, advertising ID...) leave the phone,
    in any encoding. Hardware identifiers cannot be reset by the user and link all activity to
    one handset; the TCD study found vendor system apps sending them while idle."""

    id = "identifier-sent"
    title = "Device identifiers sent"
    severity_key = "identifier_to_other"
    description = (
        "Device identifiers left the phone in this flow, in the encodings listed. Hardware "
        "identifiers (IMEI, serial, MAC) cannot be reset and tie all traffic to this handset."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        groups: dict[tuple[str, str, str], list[tuple[str, Match]]] = defaultdict(list)
        for flow_id, ms in ctx.matches.items():
            row = ctx.row(flow_id)
            for m in ms:
                gkey = (str(row.get(columns.NAME)), _recipient(row), m.identifier)
                groups[gkey].append((flow_id, m))
        for (_host, _to, ident), items in sorted(groups.items()):
            row = ctx.row(items[0][0])
            key = _identifier_key(ctx, row)
            basis = ctx.state_basis(row)
            encodings = tuple(sorted({m.encoding for _, m in items}))
            yield self.finding(
                ctx,
                row,
                f"{ident} sent to {_who(row)}",
                severity=ctx.policy.sev(key),
                identifiers=(ident,),
                encodings=encodings,
                flow_ids=tuple(sorted({f for f, _ in items})),
                evidence=_match_evidence(items, ident),
                data={
                    "flows": len({f for f, _ in items}),
                    "severity_basis": key,
                    **({"state_basis": basis} if basis else {}),
                },
            )


class CleartextIdentifiers(Rule):
    """Identifiers sent over plain HTTP can be read by anyone on the path."""

    id = "cleartext-identifier"
    title = "Identifiers over cleartext HTTP"
    severity_key = "cleartext_identifier"
    description = (
        "Device identifiers were sent without TLS: anyone on the network path can read them."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        by_host: dict[tuple[str, str], list[tuple[str, Match]]] = defaultdict(list)
        for flow_id, ms in sorted(ctx.matches.items()):
            row = ctx.row(flow_id)
            if row.get(columns.SCHEME) == "http":
                by_host[(str(row.get(columns.NAME)), _recipient(row))] += [(flow_id, m) for m in ms]
        for _host, items in sorted(by_host.items()):
            row = ctx.row(items[0][0])
            idents = tuple(sorted({m.identifier for _, m in items}))
            yield self.finding(
                ctx,
                row,
                f"{', '.join(idents)} sent over cleartext HTTP to {_who(row)}",
                identifiers=idents,
                encodings=tuple(sorted({m.encoding for _, m in items})),
                flow_ids=tuple(sorted({f for f, _ in items})),
                evidence=_match_evidence(items),
            )


class EncryptedUpload(Rule):
    """A high-entropy upload to a telemetry endpoint: content the auditor cannot read even
    after TLS interception, as the encrypted usage statistics the Lithuanian NCSC saw Xiaomi
    phones send to servers in Singapore."""

    id = "encrypted-upload"
    title = "Encrypted (opaque) upload to a telemetry endpoint"
    severity_key = "encrypted_upload"
    description = (
        "The request body is encrypted or random (high entropy, incompressible) inside TLS, "
        "after every layer auditor can undo was undone (content encodings, multipart parts, "
        "gzip/deflate/zstd parts, base64 values, protobuf strings): what it carries cannot be "
        "verified. The evidence names the opaque parts."
    )
    citation = NCSC_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        by_host: dict[tuple[str, str], list[str]] = defaultdict(list)
        for flow_id, ch in sorted(ctx.characters.items()):
            if ch.get("class") != "encrypted_or_random":
                continue
            row = ctx.row(flow_id)
            if ctx.flagged(row):
                by_host[(str(row.get(columns.NAME)), _recipient(row))].append(flow_id)
        for _host, flow_ids in sorted(by_host.items()):
            row = ctx.row(flow_ids[0])
            ents = [ctx.characters[f].get("entropy", 0.0) for f in flow_ids]
            evidence: list[Evidence] = []
            for f in flow_ids:
                ch = ctx.characters[f]
                parts = ch.get("opaque") or [
                    {
                        "path": "",
                        "encoding": "",
                        "size": ch.get("size"),
                        "entropy": ch.get("entropy"),
                    }
                ]
                for part in parts[:3]:
                    evidence.append(
                        Evidence(
                            f,
                            "body",
                            str(part.get("path") or ""),
                            str(part.get("encoding") or ""),
                            None,
                            f"{part.get('size')} opaque bytes, entropy {part.get('entropy')} "
                            "bits/byte",
                        )
                    )
            yield self.finding(
                ctx,
                row,
                f"Encrypted uploads to {_who(row)}",
                flow_ids=tuple(flow_ids),
                evidence=tuple(evidence[:MAX_EVIDENCE]),
                data={
                    "uploads": len(flow_ids),
                    "mean_entropy": round(statistics.mean(ents), 3),
                    "opaque_bytes": sum(
                        int(ctx.characters[f].get("opaque_bytes") or 0) for f in flow_ids
                    ),
                },
            )


class KeywordList(Rule):
    """A vendor endpoint delivers a keyword or blocklist: the MiAdBlacklistConfig pattern, a
    list of 449 censorship keywords downloaded by Xiaomi system apps (NCSC 2021)."""

    id = "keyword-list"
    title = "Keyword or blocklist downloaded from a vendor endpoint"
    severity_key = "keyword_list"
    description = (
        "A response carried a list of many short strings or a list named like a blacklist, "
        "keyword or filter: configuration that can censor or filter what the phone shows."
    )
    citation = NCSC_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        seen: set[tuple[str, str, str]] = set()
        for flow_id, kl in sorted(ctx.keyword_lists.items()):
            row = ctx.row(flow_id)
            key = (str(row.get(columns.NAME)), _recipient(row), str(kl.get("path")))
            if key in seen:
                continue
            seen.add(key)
            yield self.finding(
                ctx,
                row,
                f"List of {kl.get('count')} entries at {kl.get('path')} from {_who(row)}",
                flow_ids=(flow_id,),
                evidence=(
                    Evidence(
                        flow_id,
                        "response",
                        str(kl.get("path") or ""),
                        "json",
                        None,
                        ", ".join(str(x) for x in (kl.get("sample") or [])[:10])[:300],
                    ),
                ),
                data={k: kl[k] for k in ("path", "count", "sample", "artifact") if k in kl},
            )


class AppListSent(Rule):
    """The list of installed apps leaves the phone: it reveals religion, health, sexuality and
    politics through the apps a person uses (TCD 2021)."""

    id = "app-list"
    title = "Installed-app list sent"
    severity_key = "app_list"
    description = "A request carried many Android package names: the list of installed apps."
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        by_host: dict[tuple[str, str], list[str]] = defaultdict(list)
        for flow_id in sorted(ctx.app_lists):
            row = ctx.row(flow_id)
            by_host[(str(row.get(columns.NAME)), _recipient(row))].append(flow_id)
        for _host, flow_ids in sorted(by_host.items()):
            row = ctx.row(flow_ids[0])
            biggest = max((ctx.app_lists[f] for f in flow_ids), key=lambda a: a.get("count", 0))
            yield self.finding(
                ctx,
                row,
                f"{biggest.get('count')} package names sent to {_who(row)}",
                flow_ids=tuple(flow_ids),
                evidence=tuple(
                    Evidence(
                        f,
                        "body",
                        str(ctx.app_lists[f].get("path") or ""),
                        str(ctx.app_lists[f].get("encoding") or ""),
                        None,
                        f"{ctx.app_lists[f].get('count')} package names: "
                        + ", ".join(str(x) for x in (ctx.app_lists[f].get("sample") or [])[:10]),
                    )
                    for f in flow_ids[:MAX_EVIDENCE]
                ),
                data={k: biggest[k] for k in ("count", "sample") if k in biggest},
            )


class PersonalValues(Rule):
    """Personal values found without knowing them: IMEI-shaped numbers that pass the Luhn
    check, MAC addresses, Android-ID-shaped hex, GPS coordinates, phone numbers and e-mail
    addresses. A shape alone proves little (one 15-digit number in ten passes the Luhn check:
    ad correlators, timestamps with a counter), so only a value with context (a field or
    parameter that names it, an allocated IMEI type code, the device profile's own value)
    takes the policy's severity; a shape alone is reported as ``info``."""

    id = "personal-data"
    title = "Personal values sent"
    severity_key = "identifier_to_other"
    description = (
        "The request carried values shaped like personal data (an IMEI passing the Luhn check, "
        "a MAC address, coordinates, a phone number or an e-mail address). The context that "
        "names each (a field name, an IMEI type code, the device profile) is given; a value "
        "with no context is only shaped like one and is reported as info."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        groups: dict[tuple[str, str, bool], list[tuple[str, Shape]]] = defaultdict(list)
        for flow_id, values in sorted(ctx.personal.items()):
            row = ctx.row(flow_id)
            for v in values:
                shape = v if isinstance(v, Shape) else Shape(str(v[0]), str(v[1]))
                key = (str(row.get(columns.NAME)), _recipient(row), bool(shape.context))
                groups[key].append((flow_id, shape))
        for (_host, _to, named), items in sorted(groups.items()):
            row = ctx.row(items[0][0])
            if not ctx.flagged(row):
                continue
            kinds: dict[str, set[str]] = defaultdict(set)
            contexts: dict[str, set[str]] = defaultdict(set)
            for f, sh in items:
                kinds[sh.kind].add(f)
                contexts[sh.kind].update(sh.context)
            names = ", ".join(sorted(kinds))
            if named:
                said = "; ".join(sorted({c for cs in contexts.values() for c in cs}))
                title = f"{names} values sent to {_who(row)} ({said})"
                severity = ctx.policy.sev(_identifier_key(ctx, row))
            else:
                title = f"{names}-shaped values sent to {_who(row)} (shape only, no context)"
                severity = Severity.INFO
            yield self.finding(
                ctx,
                row,
                title,
                severity=severity,
                flow_ids=tuple(sorted({f for f, _ in items})),
                evidence=tuple(
                    Evidence(
                        f,
                        sh.location,
                        sh.detail,
                        sh.encoding,
                        sh.kind,
                        sh.excerpt or sh.value,
                    )
                    for f, sh in items[:MAX_EVIDENCE]
                ),
                data={
                    "kinds": {k: len(v) for k, v in sorted(kinds.items())},
                    "context": {k: sorted(v) for k, v in sorted(contexts.items())},
                    "shape_only": not named,
                },
            )


def _identifier_key(ctx: Context, row: pd.Series) -> str:
    if ctx.state_basis(row):
        return "identifier_to_state_linked"
    if ctx.is_vendor(row):
        return "identifier_to_vendor"
    return "identifier_to_other"


class StateLinkedContact(Rule):
    """Contact with an organisation that is owned or controlled by a state (a state-owned
    carrier), or that the law of its headquarters country can compel to support state
    intelligence work where the policy lists that country (the PRC National Intelligence Law,
    the basis of the Belgian and Lithuanian assessments). The finding says which, in words."""

    id = "state-linked-contact"
    title = "Contact with a state-controlled or legally exposed organisation"
    severity_key = "state_linked_contact"
    description = (
        "The phone exchanged traffic with an organisation that a state owns or controls, or "
        "that the law of its headquarters country can compel to give access; the basis is given."
    )
    citation = VSSE_2022

    def check(self, ctx: Context) -> Iterator[Finding]:
        df = ctx.flows
        if df.empty:
            return
        cols = [
            c
            for c in (columns.ORGANISATION, columns.STATE_CONTROL, columns.LEGAL_EXPOSURE)
            if c in df
        ]
        # the basis is judged once per distinct (organisation, control, exposure)
        codes = df.groupby(cols, dropna=False, sort=False).ngroup().to_numpy()
        firsts = pd.Series(np.arange(len(df))).groupby(codes, sort=True).first().to_numpy()
        bases = [ctx.state_basis(r) for r in _rows(df[cols].iloc[firsts])]
        mask = np.array([bool(b) for b in bases], dtype=bool)[codes]
        at = np.flatnonzero(mask)
        lcodes = codes[mask]
        # only the columns read below are gathered (the whole table is 80 columns)
        read = [columns.ORGANISATION_NAME, columns.FLOW_ID, columns.NAME, columns.BYTES_UP]
        read += [c for c in _EVIDENCE_COLUMNS if c in df.columns and c not in read]
        linked = df[[c for c in read if c in df.columns]].iloc[at]
        for org, pos in sorted(
            linked.groupby(columns.ORGANISATION_NAME, dropna=True).indices.items(),
            key=lambda g: str(g[0]),
        ):
            grp = linked.iloc[pos]
            row = df.iloc[int(at[pos[0]])]
            basis = list(dict.fromkeys(b for c in sorted(set(lcodes[pos])) for b in bases[c]))
            yield self.finding(
                ctx,
                row,
                f"{len(grp)} connection(s) to {org}: {basis[0]}",
                flow_ids=tuple(sorted(grp[columns.FLOW_ID].tolist())),
                evidence=_connection_evidence(grp, f"recipient {org}"),
                data={
                    # each distinct name once (a recipient's 30,000 flows are a few names)
                    "hosts": sorted(set(grp[columns.NAME].unique())),
                    "bytes_up": int(grp[columns.BYTES_UP].fillna(0).sum()),
                    "basis": basis,
                },
            )


class TransferWithoutAdequacy(Rule):
    """Under the EU/GDPR view: data sent to an organisation headquartered in a country without
    an EU adequacy decision."""

    id = "transfer-no-adequacy"
    title = "Transfer to a country without an EU adequacy decision"
    severity_key = "transfer"
    description = (
        "Data was sent to an organisation headquartered in a country without an EU adequacy "
        "decision (GDPR Art. 45); such transfers need other safeguards."
    )
    citation = GDPR_45

    def __init__(self, adequacy: dict[str, bool] | None = None):
        self.adequacy = adequacy or {}

    def check(self, ctx: Context) -> Iterator[Finding]:
        if not ctx.policy.no_eu_adequacy:
            return
        df = ctx.flows
        sent = df[(df[columns.RECORD_TYPE] == "http") & (df[columns.BYTES_UP].fillna(0) > 0)]
        for (org, country), grp in sorted(
            sent.groupby([columns.ORGANISATION_NAME, columns.COUNTRY], dropna=True),
            key=lambda g: str(g[0]),
        ):
            if self.adequacy.get(str(country), False):
                continue  # EU/EEA or an adequacy decision; a country unknown to the KB is not
            yield self.finding(
                ctx,
                grp.iloc[0],
                f"Data sent to {org} ({country}), no EU adequacy decision",
                flow_ids=tuple(sorted(grp[columns.FLOW_ID].tolist())),
                evidence=_connection_evidence(grp, f"recipient {org} ({country})"),
                data={"bytes_up": int(grp[columns.BYTES_UP].sum())},
            )


def _dns_mask(df: pd.DataFrame) -> np.ndarray:
    """DNS lookups (a query named, or port 53, 853 or 5353): not contacts with a recipient."""
    mask = np.zeros(len(df), dtype=bool)
    if columns.DNS_QUERIES in df.columns:
        q = df[columns.DNS_QUERIES]
        if isinstance(q.dtype, pd.StringDtype):  # compared by Arrow, no object per row
            mask |= (q.notna() & q.ne("")).fillna(False).to_numpy(dtype=bool)
        else:
            mask |= (q.notna() & (q.astype(object).where(q.notna(), "") != "")).to_numpy()
    if columns.SERVER_PORT in df.columns:
        port = pd.to_numeric(df[columns.SERVER_PORT], errors="coerce")
        mask |= port.isin((53, 853, 5353)).to_numpy()
    return mask


def _group_codes(ctx: Context, frame: pd.DataFrame) -> np.ndarray:
    """Per row: a code for its (name, recipient) group, the groups numbered in the order
    they first appear; a value is its text (``str``), a missing one "" (each distinct value
    made text once)."""
    names = _text_codes(frame[columns.NAME])
    recipients = _text_codes(ctx.recipient_key(frame))
    width = int(recipients.max(initial=0)) + 1
    return np.asarray(pd.factorize(names * width + recipients)[0], dtype=np.int64)


def _text_codes(column: pd.Series) -> np.ndarray:
    """Per row: a code for ``str`` of its value ("" where it has none), equal where the
    texts are."""
    codes, uniq = pd.factorize(column, use_na_sentinel=True)
    values = np.asarray(uniq, dtype=object).tolist()
    texts = [str(u) for u in values]
    if column.dtype == object:
        # factorize takes values that are equal in Python for one (0, 0.0 and False; 1, 1.0
        # and True), keeping the first it met, whose text is not theirs: the rows of a value
        # that is not a string have theirs made one by one (a name or a recipient is a string
        # but in a damaged or odd import, so these rows are few)
        odd = [i for i, u in enumerate(values) if not isinstance(u, str)]
        if odd:
            rows = np.flatnonzero(np.isin(codes, odd))
            codes = codes.copy()
            codes[rows] = len(texts) + np.arange(len(rows))
            texts += [str(v) for v in column.iloc[rows].tolist()]
    texts.append("")
    same = np.asarray(pd.factorize(np.asarray(texts, dtype=object))[0], dtype=np.int64)
    return same[codes]  # code -1 (no value) reads the last text: ""


class Beacon(Rule):
    """Periodic contact (a beacon): the endpoint is called on a schedule, not in answer to the
    user. Only a schedule seen long enough counts (``Thresholds``: by default 6 contacts over
    at least 5 periods and 60 s, a period of at least 5 s, intervals varying by at most 35%);
    the finding gives the contacts, the span and the period it rests on. DNS lookups are not
    contacts: those naming the host are counted apart."""

    id = "beacon"
    title = "Periodic beacon"
    severity_key = "beacon"
    description = (
        "Contacts with this endpoint recur at a regular interval over the span given (a burst "
        "of connections within a second is one contact; DNS lookups are not counted)."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        th = ctx.policy.thresholds
        df = ctx.flows
        if df.empty or columns.START not in df.columns:
            return
        start = pd.to_datetime(df[columns.START], utc=True, errors="coerce")
        keep = (start.notna().to_numpy()) & ~_dns_mask(df)
        if keep.sum() < th.beacon_min_contacts:
            return
        data = df.loc[keep, [c for c in (columns.NAME, columns.ORGANISATION) if c in df.columns]]
        at = np.flatnonzero(keep)
        t = start[keep].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
        codes = _group_codes(ctx, data)
        order = np.lexsort((t, codes))
        code_s, t_s = codes[order], t[order]
        first_of_group = np.r_[True, code_s[1:] != code_s[:-1]]
        gap = np.r_[np.inf, np.diff(t_s)]
        is_contact = first_of_group | (gap > th.beacon_merge_s)
        ccode, ct = code_s[is_contact], t_s[is_contact]
        n_groups = int(codes.max()) + 1
        contacts = np.bincount(ccode, minlength=n_groups)
        same = ccode[1:] == ccode[:-1]
        iv = pd.Series(np.diff(ct)[same])
        ivcode = ccode[1:][same]
        if iv.empty:
            return
        stats = iv.groupby(ivcode).agg(["median", "mean", "min", "max"])
        stats["std"] = iv.groupby(ivcode).std(ddof=0)
        firsts = pd.Series(ct).groupby(ccode).min()
        lasts = pd.Series(ct).groupby(ccode).max()
        stats["span"] = (lasts - firsts).reindex(stats.index)
        stats["contacts"] = contacts[stats.index.to_numpy()]
        med = stats["median"]
        cv = stats["std"] / med.where(med > 0)
        ok = (
            (stats["contacts"] >= th.beacon_min_contacts)
            & (stats["span"] >= th.beacon_min_span_s)
            & (med >= th.beacon_min_period_s)
            & ((stats["span"] / med.where(med > 0)).round() >= th.beacon_min_periods)
            & (cv <= th.beacon_max_cv)
        )
        candidates = stats[ok]
        if candidates.empty:
            return
        bounds = np.searchsorted(code_s, candidates.index.to_numpy())
        ends = np.searchsorted(code_s, candidates.index.to_numpy(), side="right")
        lookups = _dns_lookups(df)
        for (_code, st), lo, hi in zip(candidates.iterrows(), bounds, ends, strict=True):
            rows = df.iloc[at[order[lo:hi]]]
            row = rows.iloc[0]
            if not ctx.flagged(row):
                continue
            contact_rows = rows[is_contact[lo:hi]]
            span, period = float(st["span"]), float(st["median"])
            n = int(st["contacts"])
            name = _text(row.get(columns.NAME))
            dns_n = int(lookups.get(name, 0))
            times = t_s[lo:hi][is_contact[lo:hi]]
            evidence = tuple(
                Evidence(
                    str(fid),
                    "timing",
                    name,
                    "",
                    None,
                    f"contact {i + 1} of {n} at "
                    f"{pd.Timestamp(ts, unit='s', tz='UTC').isoformat()}"
                    + (f", {ts - times[i - 1]:.1f} s after the previous" if i else ""),
                )
                for i, (fid, ts) in enumerate(
                    zip(contact_rows[columns.FLOW_ID], times, strict=True)
                )
                if i < MAX_EVIDENCE
            )
            yield self.finding(
                ctx,
                row,
                f"{_who(row)} contacted every ~{period:.0f}s ({n} contacts over {span:.0f}s)",
                flow_ids=tuple(sorted(str(f) for f in rows[columns.FLOW_ID])),
                evidence=evidence,
                data={
                    "period_s": round(period, 1),
                    "contacts": n,
                    "flows": len(rows),
                    "span_s": round(span, 1),
                    "cv": round(float(st["std"]) / period, 2) if period else None,
                    "dns_lookups": dns_n,
                    "thresholds": {
                        "min_contacts": th.beacon_min_contacts,
                        "min_periods": th.beacon_min_periods,
                        "min_span_s": th.beacon_min_span_s,
                        "min_period_s": th.beacon_min_period_s,
                        "max_cv": th.beacon_max_cv,
                        "merge_s": th.beacon_merge_s,
                    },
                },
            )


def _dns_lookups(df: pd.DataFrame) -> dict[str, int]:
    """DNS lookups per name asked for (from the DNS flows' queries)."""
    if columns.DNS_QUERIES not in df.columns:
        return {}
    q = df[columns.DNS_QUERIES].dropna().astype(str)
    q = q[q != ""]
    if q.empty:
        return {}
    names = q.str.split(";").explode()
    return {str(k): int(v) for k, v in names[names != ""].value_counts().items()}


class IdleTraffic(Rule):
    """Traffic to flagged endpoints while the phone was left alone (idle steps)."""

    id = "idle-traffic"
    title = "Traffic while idle"
    severity_key = "idle_traffic"
    description = "Connections made during idle steps, with nobody using the phone."
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        df = ctx.flows
        if df.empty or columns.IDLE not in df.columns:
            return
        idle = df[
            df[columns.IDLE].astype(object).where(df[columns.IDLE].notna(), False).astype(bool)
        ]
        if idle.empty:
            return
        idle = idle[ctx.flagged_mask(idle)]
        if idle.empty:
            return
        codes = _group_codes(ctx, idle)
        order = np.argsort(codes, kind="stable")
        code_s = codes[order]
        starts = np.flatnonzero(np.r_[True, code_s[1:] != code_s[:-1]])
        ends = np.r_[starts[1:], len(code_s)]
        up = pd.to_numeric(idle[columns.BYTES_UP], errors="coerce").fillna(0).to_numpy()[order]
        for lo, hi in zip(starts, ends, strict=True):
            grp = idle.iloc[order[lo:hi]]
            row = grp.iloc[0]
            yield self.finding(
                ctx,
                row,
                f"{len(grp)} connection(s) to {_who(row)} while idle",
                flow_ids=tuple(sorted(str(f) for f in grp[columns.FLOW_ID])),
                evidence=_connection_evidence(grp, "during an idle step"),
                data={"bytes_up": int(up[lo:hi].sum())},
            )


class Uninspected(Rule):
    """Connections whose TLS the client refused to let the proxy open (certificate pinning or
    a CA the app does not trust): what they carry is unknown, and claims about them cannot be
    settled by this capture."""

    id = "uninspected"
    title = "Traffic that could not be inspected"
    severity_key = "uninspected"
    description = (
        "The client rejected the interception certificate (pinning, or the CA is not in the "
        "store the app trusts); the content of these connections is unknown."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        df = ctx.flows
        failed = df[df[columns.RECORD_TYPE] == "tls_failed"]
        keys = [failed[columns.NAME].astype(object).fillna("(no name)"), ctx.recipient_key(failed)]
        for _host, grp in sorted(failed.groupby(keys), key=lambda g: str(g[0])):
            yield self.finding(
                ctx,
                grp.iloc[0],
                f"{len(grp)} connection(s) to {_who(grp.iloc[0])} not decrypted",
                flow_ids=tuple(sorted(grp[columns.FLOW_ID].tolist())),
                evidence=tuple(
                    replace(e, excerpt=f"{e.excerpt}; {err}" if err else e.excerpt)
                    for e, err in zip(
                        _connection_evidence(grp, "TLS refused by the client"),
                        grp.sort_values(columns.FLOW_ID)[columns.ERROR]
                        .head(MAX_EVIDENCE)
                        .map(_text),
                        strict=True,
                    )
                ),
                data={"errors": sorted(set(grp[columns.ERROR].dropna().astype(str)))[:3]},
            )


class ProxyBypass(Rule):
    """Traffic that left the phone outside the interception proxy while it was set: DNS,
    QUIC, push channels, apps that ignore the proxy setting. Seen only in the packet capture,
    so its content is unknown; reported per app and recipient, with where it went and what
    DNS names it asked for."""

    id = "proxy-bypass"
    title = "Traffic that bypassed the proxy"
    severity_key = "proxy_bypass"
    description = (
        "These connections did not go through the interception proxy; the packet capture "
        "shows where they went, not what they carried. Claims about them cannot be settled by "
        "the proxy's records."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        df = ctx.flows
        if columns.BYPASS not in df.columns:
            return
        bypass = df[df[columns.BYPASS].fillna(False).astype(bool)]
        if bypass.empty:
            return
        app = bypass[columns.APPS].fillna("").astype(str).replace("", "(app unknown)")
        keys = [app, ctx.recipient_key(bypass)]
        for (name, _to), grp in sorted(bypass.groupby(keys), key=lambda g: str(g[0])):
            flagged = ctx.flagged_mask(grp)
            recipients = sorted(
                {str(o) for o in grp[columns.ORGANISATION_NAME].dropna()}
                if columns.ORGANISATION_NAME in grp
                else set()
            )
            # per app and recipient: a finding cites only flows that went to the recipient it
            # names (none for the unknown operators' flows)
            row = grp.iloc[0].copy()
            if len({str(h) for h in grp[columns.NAME]}) != 1 and columns.NAME in row.index:
                row[columns.NAME] = None
            queries = sorted(
                {q for v in grp[columns.DNS_QUERIES].dropna() for q in str(v).split(";") if q}
            )
            hosts = sorted({str(h) for h in grp[columns.NAME]})
            shown = ", ".join(hosts[:4]) + (f" and {len(hosts) - 4} more" if len(hosts) > 4 else "")
            yield self.finding(
                ctx,
                row,
                f"{len(grp)} connection(s) from {name} bypassed the proxy ({shown})",
                flow_ids=tuple(sorted(grp[columns.FLOW_ID].tolist())),
                evidence=_connection_evidence(grp, f"outside the proxy, app {name}"),
                data={
                    "app": name,
                    "hosts": hosts,
                    "transports": sorted({str(t) for t in grp[columns.TRANSPORT]}),
                    "ports": sorted({int(p) for p in grp[columns.SERVER_PORT].dropna()}),
                    "dns_queries": queries[:200],
                    "bytes_up": int(grp[columns.BYTES_UP].fillna(0).sum()),
                    "bytes_down": int(grp[columns.BYTES_DOWN].fillna(0).sum()),
                    "flagged_recipients": int(flagged.sum()),
                    "recipients": recipients,
                },
            )


def default_rules(adequacy: dict[str, bool] | None = None) -> list[Rule]:
    return [
        IdentifiersSent(),
        CleartextIdentifiers(),
        EncryptedUpload(),
        KeywordList(),
        AppListSent(),
        PersonalValues(),
        StateLinkedContact(),
        TransferWithoutAdequacy(adequacy),
        Beacon(),
        IdleTraffic(),
        Uninspected(),
        ProxyBypass(),
    ]


def run_rules(rules: list[Rule], ctx: Context) -> tuple[list[Finding], list[RuleError]]:
    """Every rule, each isolated from the others. A finding must point at its evidence: one
    without any evidence item, or citing a flow it does not list, is not emitted, and the rule
    is reported among the errors with how many it lost."""
    findings: list[Finding] = []
    errors: list[RuleError] = []
    for rule in rules:
        try:
            produced = list(rule.check(ctx))
        except Exception as exc:
            log.exception("rule %s failed", rule.id)
            errors.append(RuleError(rule.id, f"{type(exc).__name__}: {exc}"))
            continue
        kept = [f for f in produced if _has_evidence(f)]
        if len(kept) < len(produced):
            lost = len(produced) - len(kept)
            log.warning("rule %s: %d finding(s) without evidence dropped", rule.id, lost)
            errors.append(
                RuleError(rule.id, f"{lost} finding(s) without evidence were not reported")
            )
        findings.extend(kept)
    findings.sort(key=lambda f: f.sort_key())
    return findings, errors


def _has_evidence(f: Finding) -> bool:
    cited = set(f.flow_ids)
    return bool(f.evidence) and bool(cited) and all(e.flow_id in cited for e in f.evidence)


__all__ = [
    "Context",
    "Match",
    "Rule",
    "RuleError",
    "Severity",
    "Shape",
    "Thresholds",
    "default_rules",
    "run_rules",
]

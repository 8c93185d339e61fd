"""The analyser's rules: each a small class with an id, a title, a severity key, a description
and a citation, and a ``check()`` that yields findings. Rules run isolated from each other: a
rule that fails is reported, and the others still run.
"""

from __future__ import annotations

import itertools
import logging
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from auditor import columns as C
from auditor.analysis.model import Evidence, Finding, Severity
from auditor.analysis.policy import Policy

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
            for fid, label in zip(self.flows[C.FLOW_ID], self.flows.index, strict=True):
                pos.setdefault(fid, label)
            self._pos = pos
        return self.flows.loc[self._pos[flow_id]]

    def recipient_key(self, frame: pd.DataFrame) -> pd.Series:
        """Per row: the recipient's id ("" for an unknown operator). A finding names one
        recipient, so rules group flows by name *and* recipient."""
        if C.ORGANISATION not in frame.columns:
            return pd.Series("", index=frame.index, dtype=object)
        org = frame[C.ORGANISATION].astype(object)
        return org.where(org.notna(), "")

    def is_vendor(self, row: pd.Series) -> bool:
        if not self.vendor:
            return False
        v = self.vendor.lower()
        return any(
            isinstance(row.get(c), str) and row[c].lower() == v for c in (C.ORGANISATION, C.PARENT)
        )

    def state_basis(self, row: pd.Series) -> list[str]:
        """Why the policy treats this flow's recipient as state-linked, in words: its state
        control, or the law of a headquarters country the policy lists. Empty: it does not."""
        key = tuple(_plain(row.get(c)) for c in (C.ORGANISATION, C.STATE_CONTROL, C.LEGAL_EXPOSURE))
        hit = self._basis_cache.get(key)
        if hit is None:
            hit = self._basis_cache[key] = self._state_basis(row)
        return hit

    def _state_basis(self, row: pd.Series) -> list[str]:
        p = self.policy
        org = row.get(C.ORGANISATION)
        words = self.concerns.get(org, {}) if isinstance(org, str) else {}
        out: list[str] = []
        if p.state_control and bool(row.get(C.STATE_CONTROL)):
            out += words.get("state_control") or ["owned or controlled by a state"]
        exposed = [c for c in str(row.get(C.LEGAL_EXPOSURE) or "").split(";") if c and ":" not in c]
        for country in exposed:
            if country in p.legal_exposure:
                text = (words.get("legal_exposure") or {}).get(country)
                out.append(text or f"the law of {country}, where it is headquartered")
        return out

    def flagged(self, row: pd.Series) -> bool:
        """Whether the policy flags the recipient of this flow."""
        key = tuple(
            _plain(row.get(c))
            for c in (C.ORGANISATION, C.PARENT, C.CATEGORIES, C.COUNTRY, C.STATE_CONTROL,
                      C.LEGAL_EXPOSURE)
        )  # fmt: skip
        hit = self._flag_cache.get(key)
        if hit is None:
            hit = self._flag_cache[key] = self._flagged(row)
        return hit

    def _flagged(self, row: pd.Series) -> bool:
        p = self.policy
        cats = set(str(row.get(C.CATEGORIES) or "").split(";")) - {""}
        return bool(
            (p.vendor and self.is_vendor(row))
            or self.state_basis(row)
            or (cats & p.categories)
            or (row.get(C.COUNTRY) in p.countries)
        )


def _plain(v: Any) -> Any:
    """A cell as a hashable plain value (NaN and NA as None)."""
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return str(v)


def _org(row: pd.Series) -> tuple[str | None, str | None]:
    org = row.get(C.ORGANISATION_NAME) or row.get(C.ORGANISATION)
    country = row.get(C.COUNTRY)
    return (
        org if isinstance(org, str) and org else None,
        country if isinstance(country, str) and country else None,
    )


def _recipient(row: pd.Series) -> str:
    org = row.get(C.ORGANISATION)
    return org if isinstance(org, str) else ""


def _rows(frame: pd.DataFrame) -> Iterator[pd.Series]:
    """Rows as Series for the policy checks, without iterrows' per-row dtype inference."""
    cols = list(frame.columns)
    for values in frame.itertuples(index=False, name=None):
        yield pd.Series(values, index=cols, dtype=object)


def _who(row: pd.Series) -> str:
    org, _country = _org(row)
    name = next((str(v) for v in (_plain(row.get(C.NAME)), _plain(row.get(C.HOST))) if v), "?")
    return f"{org} ({name})" if org else name


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
            host=str(row.get(C.NAME) or ""),
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
                gkey = (str(row.get(C.NAME)), _recipient(row), m.identifier)
                groups[gkey].append((flow_id, m))
        for (_host, _to, ident), items in sorted(groups.items()):
            row = ctx.row(items[0][0])
            basis = ctx.state_basis(row)
            if basis:
                key = "identifier_to_state_linked"
            elif ctx.is_vendor(row):
                key = "identifier_to_vendor"
            else:
                key = "identifier_to_other"
            encodings = tuple(sorted({m.encoding for _, m in items}))
            yield self.finding(
                ctx,
                row,
                f"{ident} sent to {_who(row)}",
                severity=ctx.policy.sev(key),
                identifiers=(ident,),
                encodings=encodings,
                flow_ids=tuple(sorted({f for f, _ in items})),
                evidence=tuple(
                    Evidence(f, m.location, m.detail, m.encoding, ident, m.excerpt)
                    for f, m in items[:20]
                ),
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
            if row.get(C.SCHEME) == "http":
                by_host[(str(row.get(C.NAME)), _recipient(row))] += [(flow_id, m) for m in ms]
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
            )


class EncryptedUpload(Rule):
    """A high-entropy upload to a telemetry endpoint: content the auditor cannot read even
    after TLS interception, as the encrypted usage statistics the Lithuanian NCSC saw Xiaomi
    phones send to servers in Singapore."""

    id = "encrypted-upload"
    title = "Encrypted (opaque) upload to a telemetry endpoint"
    severity_key = "encrypted_upload"
    description = (
        "The request body is encrypted or random (high entropy, incompressible) inside TLS: what "
        "it carries cannot be verified."
    )
    citation = NCSC_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        by_host: dict[tuple[str, str], list[str]] = defaultdict(list)
        for flow_id, ch in sorted(ctx.characters.items()):
            if ch.get("class") != "encrypted_or_random":
                continue
            row = ctx.row(flow_id)
            if ctx.flagged(row):
                by_host[(str(row.get(C.NAME)), _recipient(row))].append(flow_id)
        for _host, flow_ids in sorted(by_host.items()):
            row = ctx.row(flow_ids[0])
            ents = [ctx.characters[f].get("entropy", 0.0) for f in flow_ids]
            yield self.finding(
                ctx,
                row,
                f"Encrypted uploads to {_who(row)}",
                flow_ids=tuple(flow_ids),
                data={"uploads": len(flow_ids), "mean_entropy": round(statistics.mean(ents), 3)},
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
            key = (str(row.get(C.NAME)), _recipient(row), str(kl.get("path")))
            if key in seen:
                continue
            seen.add(key)
            yield self.finding(
                ctx,
                row,
                f"List of {kl.get('count')} entries at {kl.get('path')} from {_who(row)}",
                flow_ids=(flow_id,),
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
            by_host[(str(row.get(C.NAME)), _recipient(row))].append(flow_id)
        for _host, flow_ids in sorted(by_host.items()):
            row = ctx.row(flow_ids[0])
            biggest = max((ctx.app_lists[f] for f in flow_ids), key=lambda a: a.get("count", 0))
            yield self.finding(
                ctx,
                row,
                f"{biggest.get('count')} package names sent to {_who(row)}",
                flow_ids=tuple(flow_ids),
                data={k: biggest[k] for k in ("count", "sample") if k in biggest},
            )


class PersonalValues(Rule):
    """Personal values found without knowing them: IMEI-shaped numbers that pass the Luhn
    check, MAC addresses, GPS coordinates, phone numbers and e-mail addresses."""

    id = "personal-data"
    title = "Personal values sent"
    severity_key = "identifier_to_other"
    description = (
        "The request carried values shaped like personal data (an IMEI passing the Luhn check, "
        "a MAC address, coordinates, a phone number or an e-mail address)."
    )
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        by_host: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        flows: dict[tuple[str, str], set[str]] = defaultdict(set)
        for flow_id, values in sorted(ctx.personal.items()):
            row = ctx.row(flow_id)
            host = (str(row.get(C.NAME)), _recipient(row))
            for kind, _value in values:
                by_host[host][kind].add(flow_id)
            flows[host].add(flow_id)
        for host, kinds in sorted(by_host.items()):
            row = ctx.row(sorted(flows[host])[0])
            if not ctx.flagged(row):
                continue
            yield self.finding(
                ctx,
                row,
                f"{', '.join(sorted(kinds))}-shaped values sent to {_who(row)}",
                flow_ids=tuple(sorted(flows[host])),
                data={"kinds": {k: len(v) for k, v in sorted(kinds.items())}},
            )


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
        cols = [c for c in (C.ORGANISATION, C.STATE_CONTROL, C.LEGAL_EXPOSURE) if c in df]
        keys = df[cols].astype(object).where(df[cols].notna(), None).apply(tuple, axis=1)
        bases = {k: ctx.state_basis(pd.Series(dict(zip(cols, k, strict=True)))) for k in set(keys)}
        linked = df[[bool(bases[k]) for k in keys]]
        for org, grp in sorted(
            linked.groupby(C.ORGANISATION_NAME, dropna=True), key=lambda g: str(g[0])
        ):
            row = grp.iloc[0]
            basis = list(dict.fromkeys(b for k in keys[grp.index] for b in bases[k]))
            yield self.finding(
                ctx,
                row,
                f"{len(grp)} connection(s) to {org}: {basis[0]}",
                flow_ids=tuple(sorted(grp[C.FLOW_ID])),
                data={
                    "hosts": sorted(set(grp[C.NAME])),
                    "bytes_up": int(grp[C.BYTES_UP].fillna(0).sum()),
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
        sent = df[(df[C.RECORD_TYPE] == "http") & (df[C.BYTES_UP].fillna(0) > 0)]
        for (org, country), grp in sorted(
            sent.groupby([C.ORGANISATION_NAME, C.COUNTRY], dropna=True), key=lambda g: str(g[0])
        ):
            if self.adequacy.get(str(country), False):
                continue  # EU/EEA or an adequacy decision; a country unknown to the KB is not
            yield self.finding(
                ctx,
                grp.iloc[0],
                f"Data sent to {org} ({country}), no EU adequacy decision",
                flow_ids=tuple(sorted(grp[C.FLOW_ID])),
                data={"bytes_up": int(grp[C.BYTES_UP].sum())},
            )


class Beacon(Rule):
    """Periodic contact (a beacon): the endpoint is called on a schedule, not in answer to the
    user; the estimated period is given."""

    id = "beacon"
    title = "Periodic beacon"
    severity_key = "beacon"
    description = "Requests to this endpoint recur at a regular interval."
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        df = ctx.flows.dropna(subset=[C.START])
        keys = [df[C.NAME], ctx.recipient_key(df)]
        for _host, grp in sorted(df.groupby(keys), key=lambda g: str(g[0])):
            if len(grp) < 3:
                continue
            row = grp.iloc[0]
            if not ctx.flagged(row):
                continue
            times = sorted(t.timestamp() for t in grp[C.START])
            gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 0.5]
            if len(gaps) < 2:
                continue
            med = statistics.median(gaps)
            spread = statistics.pstdev(gaps) / med if med else 1.0
            if spread > 0.5:
                continue
            yield self.finding(
                ctx,
                row,
                f"{_who(row)} contacted every ~{med:.0f}s",
                flow_ids=tuple(sorted(grp[C.FLOW_ID])),
                data={"period_s": round(med, 1), "contacts": len(grp), "cv": round(spread, 2)},
            )


class IdleTraffic(Rule):
    """Traffic to flagged endpoints while the phone was left alone (idle steps)."""

    id = "idle-traffic"
    title = "Traffic while idle"
    severity_key = "idle_traffic"
    description = "Connections made during idle steps, with nobody using the phone."
    citation = LEITH_2021

    def check(self, ctx: Context) -> Iterator[Finding]:
        df = ctx.flows
        idle = df[df[C.IDLE].fillna(False).astype(bool)]
        keys = [idle[C.NAME], ctx.recipient_key(idle)]
        for _host, grp in sorted(idle.groupby(keys), key=lambda g: str(g[0])):
            row = grp.iloc[0]
            if not ctx.flagged(row):
                continue
            yield self.finding(
                ctx,
                row,
                f"{len(grp)} connection(s) to {_who(row)} while idle",
                flow_ids=tuple(sorted(grp[C.FLOW_ID])),
                data={"bytes_up": int(grp[C.BYTES_UP].fillna(0).sum())},
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
        failed = df[df[C.RECORD_TYPE] == "tls_failed"]
        keys = [failed[C.NAME].astype(object).fillna("(no name)"), ctx.recipient_key(failed)]
        for _host, grp in sorted(failed.groupby(keys), key=lambda g: str(g[0])):
            yield self.finding(
                ctx,
                grp.iloc[0],
                f"{len(grp)} connection(s) to {_who(grp.iloc[0])} not decrypted",
                flow_ids=tuple(sorted(grp[C.FLOW_ID])),
                data={"errors": sorted(set(grp[C.ERROR].dropna().astype(str)))[:3]},
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
        if C.BYPASS not in df.columns:
            return
        bypass = df[df[C.BYPASS].fillna(False).astype(bool)]
        if bypass.empty:
            return
        app = bypass[C.APPS].fillna("").astype(str).replace("", "(app unknown)")
        keys = [app, ctx.recipient_key(bypass)]
        for (name, _to), grp in sorted(bypass.groupby(keys), key=lambda g: str(g[0])):
            flagged = [ctx.flagged(r) for r in _rows(grp)]
            recipients = sorted(
                {str(o) for o in grp[C.ORGANISATION_NAME].dropna()}
                if C.ORGANISATION_NAME in grp
                else set()
            )
            # per app and recipient: a finding cites only flows that went to the recipient it
            # names (none for the unknown operators' flows)
            row = grp.iloc[0].copy()
            if len({str(h) for h in grp[C.NAME]}) != 1 and C.NAME in row.index:
                row[C.NAME] = None
            queries = sorted(
                {q for v in grp[C.DNS_QUERIES].dropna() for q in str(v).split(";") if q}
            )
            hosts = sorted({str(h) for h in grp[C.NAME]})
            shown = ", ".join(hosts[:4]) + (f" and {len(hosts) - 4} more" if len(hosts) > 4 else "")
            yield self.finding(
                ctx,
                row,
                f"{len(grp)} connection(s) from {name} bypassed the proxy ({shown})",
                flow_ids=tuple(sorted(grp[C.FLOW_ID])),
                data={
                    "app": name,
                    "hosts": hosts,
                    "transports": sorted({str(t) for t in grp[C.TRANSPORT]}),
                    "ports": sorted({int(p) for p in grp[C.SERVER_PORT].dropna()}),
                    "dns_queries": queries[:200],
                    "bytes_up": int(grp[C.BYTES_UP].fillna(0).sum()),
                    "bytes_down": int(grp[C.BYTES_DOWN].fillna(0).sum()),
                    "flagged_recipients": int(sum(flagged)),
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


@dataclass(frozen=True, slots=True)
class RuleError:
    rule: str
    error: str


def run_rules(rules: list[Rule], ctx: Context) -> tuple[list[Finding], list[RuleError]]:
    findings: list[Finding] = []
    errors: list[RuleError] = []
    for rule in rules:
        try:
            findings.extend(rule.check(ctx))
        except Exception as exc:
            log.exception("rule %s failed", rule.id)
            errors.append(RuleError(rule.id, f"{type(exc).__name__}: {exc}"))
    findings.sort(key=lambda f: f.sort_key())
    return findings, errors


__all__ = ["Context", "Match", "Rule", "RuleError", "Severity", "default_rules", "run_rules"]

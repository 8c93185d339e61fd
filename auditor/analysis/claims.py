"""Checkable claims, for journalists and regulators who start from what a vendor says.

A claims file (YAML)::

    claims:
      - claim: Xiaomi receives no device identifiers when analytics is off
        kind: no_identifiers_to
        organisation: Xiaomi
      - claim: No personal data leaves the EU
        kind: no_personal_data_outside
        region: EU
      - claim: Nothing is sent to China
        kind: no_data_to
        country: CN
      - claim: The phone is silent when idle
        kind: no_idle_traffic
      - claim: No contact with the ad servers
        kind: no_contact
        hosts: [globalapi.ad.xiaomi.com, "*.ad.intl.xiaomi.com"]

Each gets a verdict: ``contradicted`` (with the flows that contradict it), ``supported by this
capture`` (saying what the capture covered: duration, scenario, the share of traffic that
could not be decrypted), or ``undetermined`` (traffic that could bear on it was not
decrypted, or the capture holds no traffic of the kind at all).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from auditor import columns
from auditor.analysis.model import ClaimResult, Verdict
from auditor.errors import AuditorError

EU = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()
)
EEA = EU | {"IS", "LI", "NO"}
REGIONS = {"EU": EU, "EEA": EEA}
KINDS = (
    "no_identifiers_to",
    "no_data_to",
    "no_personal_data_outside",
    "no_idle_traffic",
    "no_contact",
)


class ClaimsError(AuditorError):
    pass


@dataclass(frozen=True, slots=True)
class Claim:
    text: str
    kind: str
    organisation: str | None = None
    country: str | None = None
    region: str | None = None
    hosts: tuple[str, ...] = ()


def claim_items(path: Path, error: type[Exception] = ClaimsError) -> list[Any]:
    """The items of a claims file (a YAML list, or one under ``claims:``): the one reader of
    both claim languages (these and a diff's), raising ``error`` with the file's name."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: {exc}") from None
    items = doc.get("claims") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise error(f"{path}: expected a list of claims under 'claims:'")
    return items


def names_organisation(name: str, organisation: str) -> bool:
    """Whether an organisation's name (lower case) is the claim's organisation (lower case),
    or that name followed by more words ("xiaomi" names "xiaomi corporation")."""
    return bool(name) and (name == organisation or name.startswith(organisation + " "))


def load_claims(path: Path) -> list[Claim]:
    items = claim_items(path)
    out = []
    for i, raw in enumerate(items, 1):
        where = f"{path}: claim {i}"
        if not isinstance(raw, dict):
            raise ClaimsError(f"{where}: not a mapping")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ClaimsError(f"{where}: kind must be one of {', '.join(KINDS)}")
        c = Claim(
            text=str(raw.get("claim") or kind),
            kind=str(kind),
            organisation=raw.get("organisation"),
            country=(str(raw["country"]).upper() if raw.get("country") else None),
            region=(str(raw["region"]).upper() if raw.get("region") else None),
            hosts=tuple(str(h).lower() for h in raw.get("hosts") or ()),
        )
        if kind in ("no_identifiers_to", "no_data_to") and not (c.organisation or c.country):
            raise ClaimsError(f"{where}: give an organisation or a country")
        if kind == "no_personal_data_outside" and c.region not in REGIONS:
            raise ClaimsError(f"{where}: region must be one of {', '.join(REGIONS)}")
        if kind == "no_contact" and not c.hosts:
            raise ClaimsError(f"{where}: give the hosts")
        out.append(c)
    return out


def _matches_party(df: pd.DataFrame, claim: Claim) -> pd.Series:
    mask = pd.Series(False, index=df.index)
    if claim.organisation:
        org = claim.organisation.lower()
        for col in (columns.ORGANISATION, columns.PARENT, columns.ORGANISATION_NAME):
            if col in df:
                names = df[col].fillna("").astype(str).str.lower()
                mask |= names.eq(org) | names.str.startswith(org + " ")
    if claim.country:
        mask |= df[columns.COUNTRY].fillna("").eq(claim.country)
        mask |= df[columns.SERVER_COUNTRY].fillna("").eq(claim.country)
    return mask


def evaluate(
    claims: list[Claim],
    df: pd.DataFrame,
    identifiers_by_flow: dict[str, set[str]],
    personal_by_flow: set[str],
    coverage: dict[str, Any],
) -> list[ClaimResult]:
    """``df`` is the analysed flow table; ``identifiers_by_flow`` the identifier names found
    in each flow; ``personal_by_flow`` the flows with identifiers or personal values."""
    results = []
    is_http = df[columns.RECORD_TYPE].eq("http")
    undecrypted = df[columns.RECORD_TYPE].eq("tls_failed")
    sent = is_http & (df[columns.BYTES_UP].fillna(0) > 0)
    ids = df[columns.FLOW_ID]
    for claim in claims:
        verdict, reason, flows = Verdict.SUPPORTED, "", pd.Series(dtype=object)
        if claim.kind in ("no_identifiers_to", "no_data_to"):
            party = _matches_party(df, claim)
            if claim.kind == "no_identifiers_to":
                hit = party & ids.map(lambda f: bool(identifiers_by_flow.get(f)))
                what = "device identifiers"
            else:
                hit = party & sent
                what = "data"
            flows = ids[hit]
            who = claim.organisation or claim.country
            if hit.any():
                verdict = Verdict.CONTRADICTED
                reason = f"{len(flows)} flow(s) carried {what} to {who}"
            elif (party & undecrypted).any():
                verdict = Verdict.UNDETERMINED
                n = int((party & undecrypted).sum())
                reason = f"{n} connection(s) to {who} could not be decrypted"
            elif not party.any():
                reason = f"no traffic to {who} at all in this capture"
            else:
                reason = f"traffic to {who} was decrypted and carried no {what}"
        elif claim.kind == "no_personal_data_outside":
            region = REGIONS[claim.region or "EU"]
            hq = df[columns.COUNTRY].fillna("")
            srv = df[columns.SERVER_COUNTRY].fillna("")
            outside = (hq.ne("") & ~hq.isin(region)) | (srv.ne("") & ~srv.isin(region))
            hit = outside & ids.isin(personal_by_flow)
            flows = ids[hit]
            if hit.any():
                verdict = Verdict.CONTRADICTED
                reason = f"{len(flows)} flow(s) carried personal data outside the {claim.region}"
            elif (outside & undecrypted).any():
                verdict = Verdict.UNDETERMINED
                reason = "connections outside the region could not be decrypted"
            else:
                reason = f"no decrypted flow carried personal data outside the {claim.region}"
        elif claim.kind == "no_idle_traffic":
            idle = df[columns.IDLE].fillna(False).astype(bool)
            hit = idle & (is_http | undecrypted)
            flows = ids[hit]
            if not coverage.get("idle_seconds"):
                verdict, reason = Verdict.UNDETERMINED, "the scenario had no idle step"
            elif hit.any():
                verdict = Verdict.CONTRADICTED
                reason = f"{len(flows)} connection(s) during idle steps"
            else:
                reason = "no connection during idle steps"
        elif claim.kind == "no_contact":
            names = df[columns.NAME].fillna("")
            pats = claim.hosts
            hit = names.map(lambda n, pats=pats: any(fnmatch.fnmatch(n, h) for h in pats))
            flows = ids[hit]
            if hit.any():
                verdict = Verdict.CONTRADICTED
                reason = f"{len(flows)} connection(s) to the listed endpoints"
            else:
                reason = "no connection to the listed endpoints"
        results.append(
            ClaimResult(
                claim=claim.text,
                kind=claim.kind,
                verdict=verdict,
                reason=reason,
                flow_ids=tuple(sorted(str(f) for f in flows)),
                coverage=coverage,
            )
        )
    return results

from collections.abc import Iterator

import pandas as pd

from auditor import columns as C
from auditor.analysis.model import Finding, Severity
from auditor.analysis.policy import load_policy
from auditor.analysis.rules import (
    Beacon,
    Context,
    IdentifiersSent,
    Match,
    Rule,
    TransferWithoutAdequacy,
    default_rules,
    run_rules,
)

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def _flows(rows: list[dict]) -> pd.DataFrame:
    base = {
        C.FLOW_ID: "", C.RECORD_TYPE: "http", C.NAME: "", C.SCHEME: "https", C.START: T0,
        C.ORGANISATION: None, C.ORGANISATION_NAME: None, C.PARENT: None, C.COUNTRY: None,
        C.STATE_LINKED: False, C.STATE_CONTROL: False, C.LEGAL_EXPOSURE: None,
        C.CATEGORIES: "", C.BYTES_UP: 100, C.IDLE: False,
        C.ERROR: None, C.APPS: "",
    }  # fmt: skip
    return pd.DataFrame([{**base, **r} for r in rows])


XIAOMI = {C.ORGANISATION: "xiaomi", C.ORGANISATION_NAME: "Xiaomi Corporation",
          C.COUNTRY: "CN", C.STATE_LINKED: True, C.LEGAL_EXPOSURE: "CN",
          C.CATEGORIES: "vendor_telemetry"}  # fmt: skip
GOOGLE = {C.ORGANISATION: "google", C.ORGANISATION_NAME: "Google LLC", C.COUNTRY: "US",
          C.LEGAL_EXPOSURE: "US"}  # fmt: skip
CMCC = {C.ORGANISATION: "china-mobile", C.ORGANISATION_NAME: "China Mobile",
        C.COUNTRY: "CN", C.STATE_CONTROL: True, C.LEGAL_EXPOSURE: "CN;server:SG",
        C.CATEGORIES: "carrier"}  # fmt: skip


def _ctx(flows: pd.DataFrame, policy: str = "default", **kw) -> Context:
    return Context(flows=flows, policy=load_policy(policy), vendor="xiaomi", **kw)


def test_identifier_severity_follows_the_recipient() -> None:
    flows = _flows(
        [
            {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI},
            {C.FLOW_ID: "b", C.NAME: "android.clients.google.com", **GOOGLE},
        ]
    )
    m = Match("imei", "body", "$.imei", "gzip > json > plain")
    ctx = _ctx(flows, matches={"a": [m], "b": [m]})
    found = {f.host: f for f in IdentifiersSent().check(ctx)}
    assert found["tracking.miui.com"].severity is Severity.CRITICAL
    assert found["android.clients.google.com"].severity is Severity.MEDIUM
    assert found["tracking.miui.com"].flow_ids == ("a",)
    assert found["tracking.miui.com"].evidence[0].encoding == "gzip > json > plain"


def test_state_basis_is_in_words_and_follows_the_policy(tmp_path) -> None:
    """State control and the listed headquarters laws flag a recipient, each with its basis
    in words; US law is recorded but the default policy does not list it, a policy may."""
    from auditor.analysis.rules import StateLinkedContact

    flows = _flows(
        [
            {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI},
            {C.FLOW_ID: "b", C.NAME: "android.clients.google.com", **GOOGLE},
            {C.FLOW_ID: "c", C.NAME: "cmpassport.com", **CMCC},
        ]
    )
    concerns = {
        "xiaomi": {"legal_exposure": {"CN": "National Intelligence Law art. 7: applies ..."}},
        "china-mobile": {"state_control": ["a central SOE supervised by SASAC (SASAC, 2024)"]},
    }
    ctx = _ctx(flows, concerns=concerns)
    found = {f.organisation: f for f in StateLinkedContact().check(ctx)}
    assert set(found) == {"Xiaomi Corporation", "China Mobile"}
    assert found["China Mobile"].data["basis"] == [
        "a central SOE supervised by SASAC (SASAC, 2024)",
        "the law of CN, where it is headquartered",  # no words given for it: said plainly
    ]
    assert "National Intelligence Law art. 7" in found["Xiaomi Corporation"].title
    us = tmp_path / "us.yaml"
    us.write_text("name: us\nflag: {state_control: false, legal_exposure: [US]}\n")
    ctx = Context(flows=flows, policy=load_policy(str(us)), vendor=None, concerns=concerns)
    found = {f.organisation: f for f in StateLinkedContact().check(ctx)}
    assert set(found) == {"Google LLC"}
    assert "the law of US" in found["Google LLC"].data["basis"][0]


def test_legacy_state_linked_policy_means_control_and_the_prc_law(tmp_path) -> None:
    p = tmp_path / "old.yaml"
    p.write_text("name: old\nflag: {state_linked: true}\n")
    pol = load_policy(str(p))
    assert pol.state_control and pol.legal_exposure == frozenset({"CN"})
    p.write_text("name: old\nflag: {state_linked: false}\n")
    pol = load_policy(str(p))
    assert not pol.state_control and not pol.legal_exposure


def test_a_broken_rule_is_reported_and_the_others_still_run() -> None:
    class Broken(Rule):
        id = "broken"
        title = "x"
        severity_key = "beacon"
        description = "x"
        citation = "x"

        def check(self, ctx: Context) -> Iterator[Finding]:
            raise RuntimeError("boom")
            yield  # pragma: no cover

    flows = _flows([{C.FLOW_ID: "a", C.NAME: "tracking.miui.com", C.IDLE: True, **XIAOMI}])
    findings, errors = run_rules([Broken(), *default_rules()], _ctx(flows))
    assert [e.rule for e in errors] == ["broken"] and "boom" in errors[0].error
    assert {f.rule for f in findings} >= {"idle-traffic", "state-linked-contact"}


def test_beacon_period_is_estimated() -> None:
    rows = [
        {C.FLOW_ID: f"f{i}", C.NAME: "tracking.miui.com", C.START: T0 + pd.Timedelta(seconds=30 * i
         + (1 if i % 2 else 0)), **XIAOMI}
        for i in range(6)
    ]  # fmt: skip
    (f,) = list(Beacon().check(_ctx(_flows(rows))))
    assert 29 <= f.data["period_s"] <= 31 and f.data["contacts"] == 6
    jittery = [dict(r, **{C.START: T0 + pd.Timedelta(seconds=s)}) for r, s in
               zip(rows, [0, 1, 50, 52, 200, 201], strict=True)]  # fmt: skip
    assert list(Beacon().check(_ctx(_flows(jittery)))) == []


def test_transfers_without_adequacy_only_in_the_eu_view() -> None:
    flows = _flows(
        [
            {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI},
            {C.FLOW_ID: "b", C.NAME: "x.google.com", **GOOGLE},
            {C.FLOW_ID: "c", C.NAME: "x.example.de", C.ORGANISATION_NAME: "DeCo", C.COUNTRY: "DE"},
        ]
    )
    adequacy = {"CN": False, "US": True, "DE": False}
    assert list(TransferWithoutAdequacy(adequacy).check(_ctx(flows))) == []
    eu = list(TransferWithoutAdequacy(adequacy | {"DE": True}).check(_ctx(flows, "eu-gdpr")))
    assert [f.organisation for f in eu] == ["Xiaomi Corporation"]


def test_finding_ids_are_stable_and_output_sorted() -> None:
    flows = _flows([{C.FLOW_ID: "a", C.NAME: "tracking.miui.com", C.IDLE: True, **XIAOMI}])
    one, _ = run_rules(default_rules(), _ctx(flows))
    two, _ = run_rules(default_rules(), _ctx(flows))
    assert [f.to_dict() for f in one] == [f.to_dict() for f in two]
    assert [f.severity.rank for f in one] == sorted(f.severity.rank for f in one)

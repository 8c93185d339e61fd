from pathlib import Path

import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis.claims import ClaimsError, evaluate, load_claims
from auditor.analysis.model import Verdict


def _df(rows: list[dict]) -> pd.DataFrame:
    base = {
        C.FLOW_ID: "",
        C.RECORD_TYPE: "http",
        C.NAME: "",
        C.ORGANISATION: None,
        C.PARENT: None,
        C.COUNTRY: None,
        C.SERVER_COUNTRY: None,
        C.BYTES_UP: 100,
        C.IDLE: False,
    }
    return pd.DataFrame([{**base, **r} for r in rows])


FLOWS = _df(
    [
        {
            C.FLOW_ID: "a",
            C.NAME: "tracking.miui.com",
            C.ORGANISATION: "Xiaomi",
            C.COUNTRY: "CN",
            C.IDLE: True,
        },
        {C.FLOW_ID: "b", C.NAME: "www.google.com", C.ORGANISATION: "Google", C.COUNTRY: "US"},
        {
            C.FLOW_ID: "c",
            C.NAME: "metrics.hicloud.com",
            C.ORGANISATION: "Huawei",
            C.COUNTRY: "CN",
            C.RECORD_TYPE: "tls_failed",
            C.BYTES_UP: 0,
        },
        {C.FLOW_ID: "d", C.NAME: "eu.example", C.ORGANISATION: "EuCo", C.COUNTRY: "DE"},
    ]
)
COVERAGE = {"idle_seconds": 60, "not_decrypted_share": 0.25}


def _claims(tmp_path: Path, text: str):
    p = tmp_path / "claims.yaml"
    p.write_text(text)
    return load_claims(p)


def test_verdicts(tmp_path: Path) -> None:
    claims = _claims(
        tmp_path,
        """
claims:
  - {claim: Xiaomi gets no identifiers, kind: no_identifiers_to, organisation: Xiaomi}
  - {claim: Google gets no identifiers, kind: no_identifiers_to, organisation: Google}
  - {claim: Huawei gets no identifiers, kind: no_identifiers_to, organisation: Huawei}
  - {claim: Nothing to Samsung, kind: no_data_to, organisation: Samsung}
  - {claim: No personal data leaves the EU, kind: no_personal_data_outside, region: EU}
  - {claim: Silent when idle, kind: no_idle_traffic}
  - {claim: No ad servers, kind: no_contact, hosts: ["*.miui.com"]}
  - {claim: No contact with x, kind: no_contact, hosts: [x.example]}
""",
    )
    res = evaluate(claims, FLOWS, {"a": {"imei"}}, {"a"}, COVERAGE)
    got = {r.claim: (r.verdict, r.flow_ids) for r in res}
    assert got["Xiaomi gets no identifiers"] == (Verdict.CONTRADICTED, ("a",))
    assert got["Google gets no identifiers"][0] is Verdict.SUPPORTED
    assert got["Huawei gets no identifiers"][0] is Verdict.UNDETERMINED
    assert got["Nothing to Samsung"][0] is Verdict.SUPPORTED
    assert got["No personal data leaves the EU"] == (Verdict.CONTRADICTED, ("a",))
    assert got["Silent when idle"] == (Verdict.CONTRADICTED, ("a",))
    assert got["No ad servers"] == (Verdict.CONTRADICTED, ("a",))
    assert got["No contact with x"][0] is Verdict.SUPPORTED
    assert all(r.coverage == COVERAGE for r in res)


def test_no_idle_step_is_undetermined(tmp_path: Path) -> None:
    claims = _claims(tmp_path, "claims: [{kind: no_idle_traffic}]")
    (r,) = evaluate(claims, FLOWS, {}, set(), {"idle_seconds": 0})
    assert r.verdict is Verdict.UNDETERMINED


@pytest.mark.parametrize(
    "text,msg",
    [
        ("claims: []", "list of claims"),
        ("claims: [{kind: nonsense}]", "kind must be"),
        ("claims: [{kind: no_data_to}]", "organisation or a country"),
        ("claims: [{kind: no_personal_data_outside, region: Mars}]", "region"),
        ("claims: [{kind: no_contact}]", "hosts"),
        ("claims: [", "claims.yaml"),
    ],
)
def test_bad_claims(tmp_path: Path, text: str, msg: str) -> None:
    with pytest.raises(ClaimsError, match=msg):
        _claims(tmp_path, text)

from pathlib import Path

import pytest

from auditor.analysis.model import Severity
from auditor.analysis.policy import PolicyError, load_policy, parse_policy


def test_shipped_policies() -> None:
    d = load_policy("default")
    eu = load_policy("eu-gdpr")
    assert d.vendor and d.state_linked and not d.no_eu_adequacy
    assert eu.no_eu_adequacy
    assert d.sev("identifier_to_state_linked") is Severity.CRITICAL
    assert d.sha256 != eu.sha256 and d.to_dict()["name"] == "default"


def test_user_policy_file(tmp_path: Path) -> None:
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\nflag: {countries: [cn], vendor: false}\nseverity: {beacon: high}\n")
    pol = load_policy(str(p))
    assert pol.countries == {"CN"} and not pol.vendor and pol.sev("beacon") is Severity.HIGH


@pytest.mark.parametrize(
    "text,msg",
    [
        ("[1]", "mapping"),
        ("severity: {nope: high}", "unknown severity"),
        ("severity: {beacon: urgent}", "not one of"),
        ("flag: {countries: [China]}", "alpha-2"),
        ("a: [", "not valid YAML"),
    ],
)
def test_bad_policies(text: str, msg: str) -> None:
    with pytest.raises(PolicyError, match=msg):
        parse_policy(text, "bad.yaml")
    with pytest.raises(PolicyError, match="shipped"):
        load_policy("no-such-policy")

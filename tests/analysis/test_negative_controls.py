"""Negative and positive controls: real benign traffic must stay (nearly) quiet, and real
traffic that carries what a rule looks for must still give its finding.

The controls and their bounds are in tests/data/controls/PROVENANCE.md (read here, so a bound
and its reason live in one place); the shared captures are read from ../shared/captures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.analysis.engine import analyze
from auditor.analysis.model import Analysis, Severity
from auditor.imports.session import import_files

from ..conftest import SHARED_CAPTURES

CONTROLS = Path(__file__).resolve().parents[1] / "data" / "controls"
PROVENANCE = CONTROLS / "PROVENANCE.md"
CORRELATOR = "419772853168473"


def _bounds() -> dict[str, int]:
    """file name -> max findings above info, from the tables of PROVENANCE.md."""
    out: dict[str, int] = {}
    header: list[str] = []
    for line in PROVENANCE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not header:
            header = cells
            continue
        if set(cells[0]) <= {"-"} or "max above info" not in header:
            continue
        out[cells[0]] = int(cells[header.index("max above info")])
    return out


BOUNDS = _bounds()


def _analyse(path: Path, root: Path, identifiers: dict[str, str] | None = None) -> Analysis:
    res = import_files([path], root / "captures", identifiers=identifiers or {})
    return analyze([res.session])


def _above_info(a: Analysis) -> list[Any]:
    return [f for f in a.findings if f.severity is not Severity.INFO]


def _path(name: str) -> Path:
    return CONTROLS / name if (CONTROLS / name).exists() else SHARED_CAPTURES / name


def test_the_provenance_table_names_every_checked_in_control() -> None:
    har = {p.name for p in CONTROLS.glob("*.har")} - {"crashlytics_multipart_sealed.har"}
    assert har <= set(BOUNDS), har - set(BOUNDS)
    assert len(BOUNDS) >= 17  # 10 checked in (one a positive control) and 8 shared captures


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_control_gives_at_most_its_bound(name: str, tmp_path: Path) -> None:
    path = _path(name)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared captures are not on this machine)")
    a = _analyse(path, tmp_path)
    above = _above_info(a)
    assert len(above) <= BOUNDS[name], [(f.rule, f.title) for f in above]
    # every finding, info included, points at evidence in the flows it cites
    for f in a.findings:
        assert f.evidence and {e.flow_id for e in f.evidence} <= set(f.flow_ids), f.title
    assert not a.findings or not any("without evidence" in e.error for e in a.rule_errors)


def test_a_luhn_valid_correlator_is_only_a_shape(tmp_path: Path) -> None:
    a = _analyse(CONTROLS / "doubleclick_correlator.har", tmp_path)
    (f,) = [f for f in a.findings if f.rule == "personal-data"]
    assert f.severity is Severity.INFO and f.data["shape_only"] is True
    (ev,) = f.evidence
    assert (ev.location, ev.detail, ev.identifier) == ("url", "query:correlator", "imei")
    assert CORRELATOR in ev.excerpt


def test_the_same_correlator_as_the_device_imei_is_a_finding(tmp_path: Path) -> None:
    """Positive control: the value the profile gives as the device's IMEI is context."""
    a = _analyse(CONTROLS / "doubleclick_correlator.har", tmp_path, {"imei": CORRELATOR})
    rules = {f.rule: f for f in _above_info(a)}
    assert "imei" in rules["identifier-sent"].identifiers
    assert rules["personal-data"].data["context"] == {"imei": ["device:imei"]}


def test_a_gzip_part_of_a_multipart_upload_is_not_encrypted(tmp_path: Path) -> None:
    a = _analyse(CONTROLS / "crashlytics_multipart_gzip.har", tmp_path)
    assert not [f for f in a.findings if f.rule == "encrypted-upload"]


def test_an_opaque_part_of_a_multipart_upload_is_encrypted(tmp_path: Path) -> None:
    """Positive control: the same upload with a part nothing can decode."""
    a = _analyse(CONTROLS / "crashlytics_multipart_sealed.har", tmp_path)
    (f,) = [f for f in a.findings if f.rule == "encrypted-upload"]
    assert f.severity is not Severity.INFO
    assert {(e.detail, e.encoding) for e in f.evidence} == {("upload_file_minidump", "multipart")}


def test_an_account_in_a_real_protobuf_upload_is_found(tmp_path: Path) -> None:
    """Positive control on a real capture: Chrome-sync's upload (protobuf; the HAR keeps it
    decoded) carries the account's address; given as an identifier, it is found there."""
    a = _analyse(
        CONTROLS / "mitmproxy_diff_data.har", tmp_path, {"account": "stanleygvi@gmail.com"}
    )
    (f,) = [f for f in a.findings if f.rule == "identifier-sent"]
    assert f.severity is not Severity.INFO and f.host == "clients4.google.com"
    assert {e.location for e in f.evidence} == {"body"}
    assert all("stanleygvi@gmail.com" in e.excerpt for e in f.evidence)

"""Re-analysis of an evidence bundle: does its findings.json follow from its session?

``auditor verify BUNDLE --reanalyze`` unpacks the bundle (checking it as ``unbundle`` does) into
a temporary folder, analyses the session again with the inputs the bundled report records
(its policy, knowledge base and identifiers; what is not in the bundle, such as extra intel
files, a claims file or identifiers given on the command line, must be given again), and
compares the new findings.json with the bundled one, byte for byte but for ``generated_at``.

Each reason the comparison cannot be made (a knowledge base of another version, a policy file
that is not there, inputs that were not given) is said, never guessed around: a verifier must
know whether the findings were reproduced, differ, or could not be checked.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditor.errors import AuditorError

MAX_DIFFERENCES = 20
MAX_DEPTH = 32  # findings.json is a few levels deep; a bundle's may be anything
_GENERATED_AT = re.compile(rb'"generated_at": "[^"]*"')


@dataclass
class Reanalysis:
    """``status``: ``reproduced`` (byte-identical but for generated_at), ``differs`` (see
    ``differences``: JSON paths), or ``not_checked`` (see ``reasons``)."""

    status: str
    report: str = ""  # the bundled findings.json compared, as named in the bundle
    reasons: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    findings: tuple[int, int] = (0, 0)  # bundled, re-analysed

    @property
    def ok(self) -> bool:
        return self.status == "reproduced"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "report": self.report,
            "reasons": self.reasons,
            "differences": self.differences,
            "findings": {"bundled": self.findings[0], "reanalysed": self.findings[1]},
        }


def neutral(data: bytes) -> bytes:
    """findings.json without its one time of writing."""
    return _GENERATED_AT.sub(b'"generated_at": ""', data, count=1)


def differences(
    a: Any, b: Any, at: str = "$", out: list[str] | None = None, depth: int = 0
) -> list[str]:
    """JSON paths where ``a`` and ``b`` differ (at most :data:`MAX_DIFFERENCES`; below
    :data:`MAX_DEPTH` levels a difference is named by the deepest path reached)."""
    out = [] if out is None else out
    if len(out) >= MAX_DIFFERENCES:
        return out
    if depth >= MAX_DEPTH:
        try:
            differ = a != b
        except RecursionError:
            differ = True
        if differ:
            out.append(f"{at} (and below)")
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{at}.{k} ({'only re-analysed' if k not in a else 'only bundled'})")
            else:
                differences(a[k], b[k], f"{at}.{k}", out, depth + 1)
            if len(out) >= MAX_DIFFERENCES:
                break
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{at} ({len(a)} items bundled, {len(b)} re-analysed)")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            differences(x, y, f"{at}[{i}]", out, depth + 1)
            if len(out) >= MAX_DIFFERENCES:
                break
    else:
        try:
            differ = a != b or type(a) is not type(b)
        except RecursionError:
            differ = True
        if differ:
            out.append(at)
    return out


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object from a findings.json that may be anyone's: a dict, else empty."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _inputs(
    doc: dict[str, Any],
    policy: str | None,
    intel: list[str],
    claims: Path | None,
    reasons: list[str],
) -> str | None:
    """The policy to re-analyse with (name or path); problems go to ``reasons``."""
    from auditor.evidence.bundle import knowledge_base_info

    method = _obj(doc.get("method"))
    recorded = _obj(method.get("policy"))
    source = str(recorded.get("source") or "")
    chosen = policy
    if chosen is None:
        if source.startswith("policy:"):
            chosen = source.removeprefix("policy:")
        else:
            reasons.append(
                f"the report was made with the policy file {source or '(unnamed)'}, which is "
                "not in the bundle: give it with --policy"
            )
    kb = _obj(method.get("knowledge_base"))
    here = knowledge_base_info()["knowledge_base"]
    if kb.get("kb_version") != here.get("kb_version"):
        reasons.append(
            f"the report was made with knowledge base {kb.get('kb_version')!r}; this auditor "
            f"has {here.get('kb_version')!r}: re-analyse with the auditor version it names "
            f"({method.get('auditor_version')})"
        )
    then = [_obj(d).get("name") for d in _list(kb.get("ip_databases"))]
    now = [_obj(d).get("name") for d in _list(here.get("ip_databases"))]
    if then != now:
        reasons.append(f"the report was made with the IP databases {then}; this auditor has {now}")
    files = [_obj(f) for f in _list(kb.get("intel_files"))]
    if files and not intel:
        names = ", ".join(str(f.get("label") or f.get("path")) for f in files)
        reasons.append(f"the report used intel files not in the bundle ({names}): give --intel")
    if doc.get("claims") and claims is None:
        reasons.append("the report checked claims from a file not in the bundle: give --claims")
    return chosen


def reanalyze_bundle(
    path: Path,
    trusted: Ed25519PublicKey | None = None,
    *,
    policy: str | None = None,
    intel: tuple[str, ...] = (),
    identifiers: dict[str, str] | None = None,
    claims: Path | None = None,
) -> Reanalysis:
    """Unpack, analyse again, compare (see the module's doc)."""
    from auditor.analysis.claims import load_claims
    from auditor.analysis.engine import analyze, write
    from auditor.analysis.policy import load_policy
    from auditor.evidence.bundle import unpack_bundle

    with tempfile.TemporaryDirectory(prefix="auditor-reanalyze-") as tmp:
        res = unpack_bundle(path, Path(tmp) / "case", trusted=trusted)
        if not res.check.ok or not res.unpacked or res.session is None:
            return Reanalysis("not_checked", reasons=["the bundle does not verify"])
        found = sorted(res.report.glob("findings.json")) if res.report else []
        if not found:
            return Reanalysis("not_checked", reasons=["the bundle holds no findings.json"])
        bundled_path = found[0]
        report_name = bundled_path.relative_to(res.out).as_posix()
        bundled = bundled_path.read_bytes()
        try:
            doc = json.loads(bundled)
        except (ValueError, RecursionError) as exc:
            reason = f"findings.json is not JSON that can be read: {type(exc).__name__}: {exc}"
            return Reanalysis("not_checked", report_name, [reason[:300]])
        if not isinstance(doc, dict):
            return Reanalysis("not_checked", report_name, ["findings.json is not an object"])
        reasons: list[str] = []
        chosen = _inputs(doc, policy, list(intel), claims, reasons)
        if reasons or chosen is None:
            return Reanalysis("not_checked", report_name, reasons)
        try:
            result = analyze(
                [res.session],
                policy=load_policy(chosen),
                intel=[Path(i) if "=" not in i else i for i in intel],  # type: ignore[misc]
                identifiers=identifiers or {},
                claims=load_claims(claims) if claims else None,
                artifacts_dir=Path(tmp) / "again" / "artifacts",
            )
            write(result, Path(tmp) / "again", ["json"])
        except AuditorError as exc:
            return Reanalysis("not_checked", report_name, [f"the re-analysis failed: {exc}"])
        again = (Path(tmp) / "again" / "findings.json").read_bytes()
        counts = (len(_list(doc.get("findings"))), len(result.doc.get("findings") or []))
        if neutral(bundled) == neutral(again):
            return Reanalysis("reproduced", report_name, findings=counts)
        diff = differences(json.loads(neutral(bundled)), json.loads(neutral(again)))
        searched = {str(x) for x in _list(doc.get("identifiers_searched"))}
        missing = searched - set(result.doc.get("identifiers_searched") or [])
        notes = []
        if missing:
            notes.append(
                "the report searched for identifiers the session does not name "
                f"({', '.join(sorted(missing))}): give their values with --identifier"
            )
        return Reanalysis(
            "differs", report_name, notes, diff or ["(byte order only)"], findings=counts
        )


def format_reanalysis(r: Reanalysis) -> list[str]:
    if r.status == "reproduced":
        return [
            f"REPRODUCED {r.report}: the session gives the same findings.json again "
            f"({r.findings[1]} findings; only generated_at differs)"
        ]
    if r.status == "differs":
        lines = [
            f"DIFFERS   {r.report}: re-analysis gives {r.findings[1]} findings, the bundle "
            f"{r.findings[0]}; first differences:"
        ]
        lines += [f"          {d}" for d in r.differences]
        lines += [f"NOTE      {x}" for x in r.reasons]
        return lines
    return [f"NOT CHECKED {r.report or 'findings.json'}: {x}" for x in r.reasons]

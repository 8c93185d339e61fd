"""Re-analysis of an evidence bundle: does its report follow from its session?

``auditor verify BUNDLE --reanalyze`` unpacks the bundle (checking it as ``unbundle`` does) into
a temporary folder, analyses the session again with the inputs the bundled report records
(its policy, knowledge base and identifiers; what is not in the bundle, such as extra intel
files, a claims file or identifiers given on the command line, must be given again), and
renders every format the bundled report holds again from the new findings. Each file is then
compared with the bundled one byte for byte. The one thing two renderings of the same
findings legitimately differ in is the time of analysis, ``generated_at`` (in findings.json
and in report.html's heading): the new report is rendered with the bundled findings'
``generated_at``, which must be a UTC time, so nothing else is normalised.

Each reason a comparison cannot be made (a knowledge base of another version, a policy file
that is not there, inputs that were not given, a file auditor cannot render again) is said,
never guessed around, and names the file: a verifier must know which files were reproduced,
which differ, and which were not checked.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditor import jsonio
from auditor.errors import AuditorError

if TYPE_CHECKING:
    from auditor.evidence.bundle import BundleCheck, UnpackResult

MAX_DIFFERENCES = 20
MAX_DEPTH = 32  # findings.json is a few levels deep; a bundle's may be anything
_GENERATED_AT = re.compile(rb'"generated_at": "[^"]*"')
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
MAX_FINDINGS = 256 * 1024**2  # a findings.json read back into memory
PIECE = 1024**2

FINDINGS = "findings.json"
# what `auditor analyze` writes in a report folder, by the --format that writes it
RENDERED = {
    FINDINGS: "json",
    "summary.md": "md",
    "report.html": "html",
    "flows.csv": "csv",
    "flows.parquet": "parquet",
    "endpoints.csv": "csv",
}
ARTIFACTS = "artifacts"  # files the analysis extracts (keyword lists), compared too
NOT_RENDERED = {
    "report.pdf": "a PDF is printed by Chromium and is not made again byte for byte; "
    "compare it with report.html by eye, or bundle the report without it",
}


@dataclass
class Reanalysis:
    """What re-analysis found.

    ``status``: ``reproduced`` (every file of the bundled report compared, and each is what
    the session gives again), ``differs`` (findings.json or a rendered file differs: see
    ``differ`` and ``differences``), ``incomplete`` (all that was compared is the same, but
    ``not_checked`` names files that could not be compared), or ``not_checked`` (the findings
    could not be made again: see ``reasons``). ``report`` is the bundled findings.json, as
    named in the bundle; ``same``, ``differ`` and ``not_checked`` name report files the same
    way."""

    status: str
    report: str = ""
    reasons: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    findings: tuple[int, int] = (0, 0)  # bundled, re-analysed
    same: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)
    not_checked: dict[str, str] = field(default_factory=dict)  # file -> why not
    # the check of the bundle as it was read for the re-analysis (the file a verifier named
    # may have been replaced since an earlier check): print this one with the verdict
    check: BundleCheck | None = None

    @property
    def ok(self) -> bool:
        return self.status == "reproduced"

    @property
    def verdict(self) -> str:
        """A few words in auditor's own (no file name, nothing from the bundle) for the
        verdict line."""
        if self.status == "reproduced":
            return f"report reproduced ({len(self.same)} files the same)"
        if self.status == "differs":
            return f"report DIFFERS ({len(self.differ)} of {self.compared} files compared)"
        if self.status == "incomplete":
            return (
                f"report NOT CHECKED in full ({len(self.same)} files the same, "
                f"{len(self.not_checked)} not checked)"
            )
        return "report NOT CHECKED"

    @property
    def compared(self) -> int:
        return len(self.same) + len(self.differ)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "report": self.report,
            "reasons": self.reasons,
            "differences": self.differences,
            "findings": {"bundled": self.findings[0], "reanalysed": self.findings[1]},
            "same": self.same,
            "differ": self.differ,
            "not_checked": self.not_checked,
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


_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _shipped_policy(name: str) -> bool:
    from importlib import resources

    if not _POLICY_NAME.fullmatch(name):
        return False
    return (resources.files("auditor") / "analysis" / "policies" / f"{name}.yaml").is_file()


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
        name = source.removeprefix("policy:") if source.startswith("policy:") else None
        if name is not None and _shipped_policy(name):
            chosen = name
        else:
            # a report names its policy; only a policy shipped with auditor is taken from it
            # (a path there would make the verifier read any file: /dev/zero, a key)
            reasons.append(
                f"the report was made with the policy {source[:120]!r}, which is not a policy "
                "shipped with auditor and not in the bundle: give it with --policy"
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


def _report_files(folder: Path) -> list[str]:
    """Every file of the unpacked report folder, relative to it, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _formats(files: Iterable[str]) -> list[str]:
    return sorted({RENDERED[f] for f in files if f in RENDERED})


def _first_difference(a: Path, b: Path) -> str | None:
    """Where two files first differ (None when they do not), read in pieces and quoted
    from neither (both may be anyone's, and either may be large)."""
    sa, sb = a.stat().st_size, b.stat().st_size
    if sa != sb:
        return f"{sa} bytes bundled, {sb} rendered again"
    offset = lines = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(PIECE), fb.read(PIECE)
            if x != y:
                n = next(i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q)
                line = lines + x.count(b"\n", 0, n) + 1
                return f"from byte {offset + n} (line {line}); {sa} bytes each"
            if not x:
                return None
            offset += len(x)
            lines += x.count(b"\n")


def _tail(path: Path, n: int = 65536) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - n))
        return fh.read(n)


_WRITER = re.compile(rb"parquet-cpp-arrow version [0-9A-Za-z.+-]{1,40}")


def _parquet_writer(path: Path) -> str | None:
    """The library version a Parquet file names in its footer (looked for, not parsed)."""
    found = _WRITER.findall(_tail(path))
    return found[-1].decode("ascii") if found else None


def _unchecked(files: Iterable[str], why: str, root: str) -> dict[str, str]:
    return {f"{root}/{f}": why for f in files}


def reanalyze_bundle(
    path: Path,
    trusted: Ed25519PublicKey | None = None,
    *,
    policy: str | None = None,
    intel: tuple[str, ...] = (),
    identifiers: dict[str, str] | None = None,
    claims: Path | None = None,
) -> Reanalysis:
    """Unpack, analyse again, render again, compare (see the module's doc)."""
    from auditor.evidence.bundle import unpack_bundle

    with tempfile.TemporaryDirectory(prefix="auditor-reanalyze-") as tmp:
        res = unpack_bundle(path, Path(tmp) / "case", trusted=trusted)
        out = _reanalyze(res, Path(tmp), policy, intel, identifiers, claims)
        out.check = res.check
        return out


def _reanalyze(
    res: UnpackResult,
    tmp: Path,
    policy: str | None,
    intel: tuple[str, ...],
    identifiers: dict[str, str] | None,
    claims: Path | None,
) -> Reanalysis:
    from auditor.analysis.claims import load_claims
    from auditor.analysis.engine import analyze, write
    from auditor.analysis.policy import load_policy

    if not res.check.ok or not res.unpacked or res.session is None:
        return Reanalysis("not_checked", reasons=["the bundle does not verify"])
    if res.report is None:
        return Reanalysis("not_checked", reasons=["the bundle holds no report"])
    root = res.report.relative_to(res.out).as_posix()
    files = _report_files(res.report)
    report_name = f"{root}/{FINDINGS}"
    if FINDINGS not in files:
        why = "the bundle holds no findings.json to re-analyse from"
        return Reanalysis("not_checked", "", [why], not_checked=_unchecked(files, why, root))
    bundled = (res.report / FINDINGS).read_bytes()
    try:
        doc = jsonio.loads(bundled, FINDINGS, expect=dict)
    except jsonio.JsonError as exc:
        why = f"{str(exc)[:300]}"
        return Reanalysis(
            "not_checked", report_name, [why], not_checked=_unchecked(files, why, root)
        )
    reasons: list[str] = []
    chosen = _inputs(doc, policy, list(intel), claims, reasons)
    if doc.get("redaction") is not None:
        reasons.append(
            "the report is redacted: re-analysis makes the report with the original "
            "values, which cannot be compared with it byte for byte"
        )
    if reasons or chosen is None:
        why = "the findings could not be made again (above)"
        return Reanalysis(
            "not_checked", report_name, reasons, not_checked=_unchecked(files, why, root)
        )
    again = tmp / "again"
    try:
        result = analyze(
            [res.session],
            policy=load_policy(chosen),
            intel=[Path(i) if "=" not in i else i for i in intel],  # type: ignore[misc]
            identifiers=identifiers or {},
            claims=load_claims(claims) if claims else None,
            artifacts_dir=again / ARTIFACTS,
        )
        stamp = doc.get("generated_at")
        if isinstance(stamp, str) and _UTC_TIME.fullmatch(stamp):
            # the one thing two renderings of the same findings differ in
            result.doc["generated_at"] = stamp
        write(result, again, _formats(files))
    except AuditorError as exc:
        why = "the re-analysis failed (above)"
        return Reanalysis(
            "not_checked",
            report_name,
            [f"the re-analysis failed: {exc}"],
            not_checked=_unchecked(files, why, root),
        )
    return _compare(res.report, again, files, root, doc, result.doc)


def _compare(
    bundled_dir: Path,
    again_dir: Path,
    files: list[str],
    root: str,
    doc: dict[str, Any],
    new_doc: dict[str, Any],
) -> Reanalysis:
    out = Reanalysis("reproduced", f"{root}/{FINDINGS}")
    out.findings = (len(_list(doc.get("findings"))), len(_list(new_doc.get("findings"))))
    stamp = doc.get("generated_at")
    if not (isinstance(stamp, str) and _UTC_TIME.fullmatch(stamp)):
        out.differences.append("$.generated_at (not a time in UTC)")
    for rel in files:
        name = f"{root}/{rel}"
        if rel in NOT_RENDERED:
            out.not_checked[name] = NOT_RENDERED[rel]
            continue
        if rel not in RENDERED and not rel.startswith(f"{ARTIFACTS}/"):
            out.not_checked[name] = "not a file auditor analyze writes, so not made again"
            continue
        mine = again_dir / rel
        if not mine.is_file():
            out.differ.append(name)
            out.differences.append(f"{name}: the re-analysis does not make this file")
            continue
        theirs = bundled_dir / rel
        where = _first_difference(theirs, mine)
        if where is None and not (rel == FINDINGS and out.differences):
            out.same.append(name)
            continue
        if rel.endswith(".parquet") and (
            (by_them := _parquet_writer(theirs)) != (by_us := _parquet_writer(mine))
        ):
            out.not_checked[name] = (
                f"written by {by_them or 'an unknown writer'}; this auditor "
                f"writes {by_us}, whose bytes differ: compare flows.csv instead"
            )
            continue
        out.differ.append(name)
        if rel == FINDINGS and max(theirs.stat().st_size, mine.stat().st_size) <= MAX_FINDINGS:
            try:
                diff = differences(
                    jsonio.loads(neutral(theirs.read_bytes()), FINDINGS),
                    jsonio.loads(neutral(mine.read_bytes()), FINDINGS),
                )
            except jsonio.JsonError as exc:  # pragma: no cover - read once already
                diff = [str(exc)[:200]]
            out.differences += diff or ["(byte order only)"]
        else:
            out.differences.append(f"{name}: differs ({where or 'in generated_at'})")
    made = (
        sorted(
            p.relative_to(again_dir).as_posix()
            for p in (again_dir / ARTIFACTS).rglob("*")
            if p.is_file()
        )
        if (again_dir / ARTIFACTS).is_dir()
        else []
    )
    for rel in made:
        if rel not in files:
            out.reasons.append(
                f"{root}/{rel}: the re-analysis extracts it; the bundle does not hold it"
            )
    if out.differ:
        out.status = "differs"
        searched = {str(x) for x in _list(doc.get("identifiers_searched"))}
        missing = searched - {str(x) for x in _list(new_doc.get("identifiers_searched"))}
        if missing and f"{root}/{FINDINGS}" in out.differ:
            out.reasons.append(
                "the report searched for identifiers the session does not name "
                f"({', '.join(sorted(missing))}): give their values with --identifier"
            )
    elif out.not_checked:
        out.status = "incomplete"
    return out


def format_reanalysis(r: Reanalysis) -> list[str]:
    """One line per report file (SAME, DIFFERS, NOT CHECKED), the differences, notes, and
    last the outcome: REPRODUCED, NOT REPRODUCED or NOT CHECKED."""
    lines: list[str] = []
    if r.status == "not_checked" and not r.not_checked:
        return [f"NOT CHECKED {r.report or FINDINGS}: {x}" for x in r.reasons]
    for name in r.same:
        if name == r.report:
            how = (
                f"the session gives the same findings again ({r.findings[1]} findings; only "
                "generated_at differs)"
            )
        elif f"/{ARTIFACTS}/" in name:
            how = "extracted again by the re-analysis: the same, byte for byte"
        else:
            how = "rendered again from the re-analysed findings: the same, byte for byte"
        lines.append(f"SAME      {name}: {how}")
    for name in r.differ:
        if name == r.report:
            lines.append(
                f"DIFFERS   {name}: re-analysis gives {r.findings[1]} findings, the bundle "
                f"{r.findings[0]}"
            )
        else:
            lines.append(f"DIFFERS   {name}: not what the re-analysed findings render to")
    lines += [f"          {d}" for d in r.differences]
    if r.status == "not_checked":
        lines += [f"NOT CHECKED {r.report or FINDINGS}: {x}" for x in r.reasons]
    else:
        lines += [f"NOTE      {x}" for x in r.reasons]
    lines += [f"NOT CHECKED {name}: {why}" for name, why in r.not_checked.items()]
    compared = f"{r.compared} report files compared"
    if r.status == "reproduced":
        lines.append(f"REPRODUCED: {compared}, each the same as the session gives again")
    elif r.status == "differs":
        lines.append(f"NOT REPRODUCED: {compared}, {len(r.differ)} differ: {', '.join(r.differ)}")
    elif r.status == "incomplete":
        lines.append(
            f"NOT CHECKED in full: {compared} and the same; {len(r.not_checked)} not checked: "
            + ", ".join(r.not_checked)
        )
    else:
        lines.append("NOT CHECKED: the findings could not be made again; no report file compared")
    return lines

"""The commands that read saved sessions: ``analyze``, ``diff`` and ``intel``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from auditor.analysis.report import REPORT_FORMATS
from auditor.cli.common import (
    DEFAULT_REPORTS,
    _decrypt_rules,
    _strings,
    custody_logged,
    decrypt_option,
    echo,
    emit_json,
    emit_json_text,
    fail,
    handle_errors,
    json_option,
    parse_identifiers,
    quoted_on_one_line,
    terminal_line,
)

# ------------------------------------------------------------------------------------- analyze


@click.command()
@click.argument("sessions", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder [default: reports/<session-id>/].",
)
@click.option(
    "--format",
    "formats",
    default="html,json,csv,md",
    show_default=True,
    help="Comma-separated: "
    + ", ".join(f"{f.name} ({f.files})" for f in REPORT_FORMATS.values())
    + ".",
)
@click.option("--policy", default="default", show_default=True, help="default, eu-gdpr or a file.")
@click.option(
    "--intel",
    multiple=True,
    help="More knowledge: auditor YAML, a STIX 2.1 bundle, a hosts file or an adblock list "
    "(LABEL=PATH to name it). Repeatable.",
)
@click.option(
    "--identifier",
    "identifier",
    multiple=True,
    help="NAME=VALUE of a device identifier to search for (for imports without a profile).",
)
@click.option("--claims", type=click.Path(path_type=Path), default=None, help="Claims to check.")
@decrypt_option
@click.option(
    "--redact",
    is_flag=True,
    help="Write a shareable report: identifiers, phone number, accounts and personal values "
    "replaced by stable placeholders such as ‹IMEI-1›, in every encoding.",
)
@click.option(
    "--redact-value",
    multiple=True,
    metavar="NAME=VALUE",
    help="With --redact: another value to hide (repeatable), e.g. name=Alice.",
)
@json_option
@custody_logged("sessions")
@handle_errors
def analyze(
    sessions: tuple[Path, ...],
    out: Path | None,
    formats: str,
    policy: str,
    intel: tuple[str, ...],
    identifier: tuple[str, ...],
    claims: Path | None,
    decrypt_rules: Path | None,
    redact: bool,
    redact_value: tuple[str, ...],
    as_json: bool,
) -> None:
    """Analyse capture sessions: who received what from the phone, on what evidence.

    Writes findings.json, report.html, flows.csv/flows.parquet, endpoints.csv and
    summary.md. Reads only the saved sessions; works offline.

    \b
    Example:
        auditor analyze captures/20261128T101500Z-3f9a1c
        auditor analyze captures/S1 --policy eu-gdpr --claims claims.yaml --json
        auditor analyze captures/S1 --identifier imei=490154203237518 --intel amnesty=ioc.stix2
        auditor analyze captures/S1 --redact --out reports/S1-public
        auditor analyze captures/S1 --decrypt docs/examples/decrypt-xiaomi-sim.yaml
    """
    import tempfile

    from auditor.analysis.claims import load_claims
    from auditor.analysis.engine import analyze as run_analysis
    from auditor.analysis.engine import write
    from auditor.analysis.policy import load_policy

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    from auditor.analysis.report import ALL_FORMATS

    bad = set(fmts) - set(ALL_FORMATS)
    if bad:
        fail(f"unknown format(s): {', '.join(sorted(bad))}")
    ids = parse_identifiers(identifier)
    rules = _decrypt_rules(decrypt_rules)
    if redact_value and not redact:
        fail("--redact-value needs --redact")
    extra = parse_identifiers(redact_value)
    default_name = Path(sessions[0]).name + ("-redacted" if redact else "")
    target = out or DEFAULT_REPORTS / default_name
    with tempfile.TemporaryDirectory(prefix="auditor-analyze-") as tmp:
        # redacted: the extracted artifacts (originals) stay out of the report folder
        art = Path(tmp) / "artifacts" if redact else target / "artifacts"
        result = run_analysis(
            list(sessions),
            policy=load_policy(policy),
            intel=[Path(i) if "=" not in i else i for i in intel],  # type: ignore[misc]
            identifiers=ids,
            claims=load_claims(claims) if claims else None,
            artifacts_dir=art,
            decrypt=rules,
        )
        if redact:
            from auditor.analysis.redact import redact_analysis, write_redacted

            paths, _ = write_redacted(result, target, fmts, artifacts_src=art, extra=extra)
            result = redact_analysis(result, extra)[0]  # what is printed is redacted too
        else:
            paths = write(result, target, fmts)
    doc = result.doc
    if as_json:
        emit_json(
            {
                "report": str(target),
                "files": [str(p) for p in paths],
                "findings": len(doc["findings"]),
                "by_severity": _by_severity(doc["findings"]),
                "claims": [{"claim": c["claim"], "verdict": c["verdict"]} for c in doc["claims"]],
                "rule_errors": doc["rule_errors"],
                "warnings": len(doc["warnings"]),
            }
        )
        return
    for f in doc["findings"][:15]:
        echo(f"{terminal_line(f['severity']):>8}  {terminal_line(f['title'])}")
    if len(doc["findings"]) > 15:
        echo(f"          ... and {len(doc['findings']) - 15} more")
    for c in doc["claims"]:
        claim, verdict, reason = (terminal_line(c[k]) for k in ("claim", "verdict", "reason"))
        echo(f"claim: {claim}: {verdict} ({reason})")
    for e in doc["rule_errors"]:
        rule, error = terminal_line(e["rule"]), terminal_line(e["error"])
        echo(f"warning: rule {rule} failed: {error}", err=True)
    if doc["warnings"]:
        echo(f"{len(doc['warnings'])} warning(s), listed in the report", err=True)
    echo(str(target / ("report.html" if "html" in fmts else "")))


@click.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for diff.json, diff.md, diff.html (default reports/diff-A-B).",
)
@click.option(
    "--format",
    "formats",
    default="html,json,md",
    show_default=True,
    help="Comma-separated: html, json, md.",
)
@click.option(
    "--policy",
    default="default",
    show_default=True,
    help="For a session that is analysed first: default, eu-gdpr or a file.",
)
@click.option(
    "--intel",
    multiple=True,
    help="For a session that is analysed first: more knowledge, as in `auditor analyze`.",
)
@click.option(
    "--identifier",
    "identifier",
    multiple=True,
    help="NAME=VALUE of a device identifier to search for in a session analysed first.",
)
@click.option(
    "--claims",
    type=click.Path(path_type=Path),
    default=None,
    help="Before/after claims to check against the diff (see docs/diff.md).",
)
@json_option
@custody_logged("a", "b")
@handle_errors
def diff(
    a: Path,
    b: Path,
    out: Path | None,
    formats: str,
    policy: str,
    intel: tuple[str, ...],
    identifier: tuple[str, ...],
    claims: Path | None,
    as_json: bool,
) -> None:
    """Compare two audits: what changed from A (before) to B (after).

    A and B are report folders (with findings.json) or sessions (analysed first, as
    `auditor analyze` does, into OUT/sides/). Shows recipients that appeared or
    disappeared, identifiers newly sent or no longer sent, rates per hour, beacons, hosts
    that moved country and findings by rule, each with its flows on both sides. A change
    resting on few flows, or an absence on a side that recorded too little, is marked.

    \b
    Example:
        auditor diff reports/S1 reports/S2
        auditor diff captures/S1 captures/S2 --out reports/S1-vs-S2 --format md
        auditor diff reports/S1 reports/S2 --claims after.yaml --json
    """
    from auditor.analysis.diff import diff_command, dumps

    result = diff_command(
        a,
        b,
        out,
        [f.strip() for f in formats.split(",") if f.strip()],
        as_json,
        policy=policy,
        identifiers=parse_identifiers(identifier),
        intel=intel,
        claims=claims,
    )
    if as_json:
        emit_json_text(dumps(result.doc).rstrip("\n"))  # diff.json as written, escaped
        return
    for line in result.lines:
        echo(terminal_line(line), fit=True)
    echo(f"report {terminal_line(result.out)}", err=True)


def _by_severity(findings: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in findings:
        out[f["severity"]] = out.get(f["severity"], 0) + 1
    return out


@click.group()
def intel() -> None:
    """The knowledge base of endpoints: organisations, countries, jurisdictions, sources."""


@intel.command("lookup")
@click.argument("targets", nargs=-1, required=True)
@click.option("--intel", "extra", multiple=True, help="More knowledge files (see analyze).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per target, one per line.")
@handle_errors
def intel_lookup(targets: tuple[str, ...], extra: tuple[str, ...], as_json: bool) -> None:
    """Who received what is sent to each HOST or IP, with the evidence and source of every
    fact: the recipient (from evidence about the name), the hosting (network and country),
    state control and legal exposure. `-` reads one target per line from standard input.

    \b
    Example:
        auditor intel lookup tracking.miui.com
        auditor intel lookup sdk.umeng.com app-measurement.com 8.8.8.8 --json
        cut -d, -f1 hosts.csv | auditor intel lookup - --json > attributions.jsonl
    """
    from auditor.intel.cache import lookup_command

    wanted: list[str] = []
    for t in targets:
        if t == "-":
            wanted += [line.strip() for line in sys.stdin if line.strip()]
        else:
            wanted.append(t)
    for n, (data, text) in enumerate(lookup_command(wanted, list(extra), as_json)):
        if n and not as_json:
            echo("")
        if as_json:
            emit_json_text(text)
        else:  # the text quotes the target and the knowledge (an imported data set's words)
            echo(quoted_on_one_line(text, [wanted[n], *_strings(data)]))


@intel.command("import")
@click.argument("fmt", metavar="FORMAT")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Id to keep it under (default: the format's).")
@json_option
@handle_errors
def intel_import(fmt: str, path: Path, name: str | None, as_json: bool) -> None:
    """Import a copy of a tracker or ownership data set you downloaded; every later analysis
    and lookup uses it, and every report names it with its licence and SHA-256.

    FORMAT is one of the readers listed by `auditor intel datasets --formats`
    (v2fly, nextdns, adguard, ghostery, trackerradar, exodus, xray...).

    \b
    Example:
        auditor intel import ghostery trackerdb.json
        auditor intel import trackerradar tracker-radar-main.zip --name tracker-radar
    """
    from auditor.intel.datasets import import_dataset

    info = import_dataset(fmt, path, name=name)
    if as_json:
        emit_json(info.to_json(), ascii_only=True)
    else:
        echo(
            terminal_line(
                f"imported {info.id}: {info.entities} entities, {info.rules} rules, "
                f"{info.skipped} skipped, {info.warnings} warnings ({info.licence}, "
                f"sha256 {info.sha256})"
            )
        )


@intel.command("datasets")
@click.option("--formats", "show_formats", is_flag=True, help="List the import formats.")
@json_option
@handle_errors
def intel_datasets(show_formats: bool, as_json: bool) -> None:
    """The data sets every analysis uses: the bundled snapshots and your imports.

    \b
    Example:
        auditor intel datasets
        auditor intel datasets --formats
    """
    from auditor.intel.datasets import FORMATS, load_datasets

    if show_formats:
        names = sorted(FORMATS)
        if as_json:
            emit_json(names)
        else:
            echo("\n".join(names))
        return
    infos = [d.to_json() for d in load_datasets().datasets]
    if as_json:
        emit_json(infos, ascii_only=True)
        return
    for d in infos:
        where = "bundled" if d.get("bundled") else "imported"
        echo(
            terminal_line(
                f"{d['id']:<22} {where:<8} {d.get('version') or d.get('date') or '-':<22} "
                f"{d['entities']:>6} entities {d['rules']:>7} rules  {d['licence']}"
            )
        )


@intel.command("remove")
@click.argument("dataset_id")
@handle_errors
def intel_remove(dataset_id: str) -> None:
    """Remove an imported data set (bundled snapshots stay).

    \b
    Example:
        auditor intel remove ghostery-trackerdb
    """
    from auditor.intel.datasets import remove_dataset

    if not remove_dataset(dataset_id):
        fail(f"no imported data set {dataset_id!r} (see: auditor intel datasets)")
    echo(f"removed {terminal_line(dataset_id)}")

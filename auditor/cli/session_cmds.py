"""The commands about sessions and evidence: ``sessions``, ``verify``, ``close``, ``keygen``,
``bundle``, ``unbundle`` and ``import``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from auditor.cli.common import (
    DEFAULT_CAPTURES,
    DEFAULT_REPORTS,
    _argv,
    custody_logged,
    custody_note,
    custody_touch,
    echo,
    emit_json,
    fail,
    handle_errors,
    human_bytes,
    json_option,
    parse_identifiers,
    quoted_on_one_line,
    terminal_line,
)

if TYPE_CHECKING:
    from auditor.evidence.bundle import BundleCheck
    from auditor.evidence.reanalyze import Reanalysis

# ------------------------------------------------------------------------------------- sessions


@click.command()
@click.argument(
    "directory", required=False, default=str(DEFAULT_CAPTURES), type=click.Path(path_type=Path)
)
@json_option
@handle_errors
def sessions(directory: Path, as_json: bool) -> None:
    """List the capture sessions in DIRECTORY (default: captures/).

    \b
    Example:
        auditor sessions
        auditor sessions ~/audits/mi10t --json
    """
    from auditor.session.listing import list_sessions

    infos, warnings = list_sessions(directory)
    for w in warnings:
        echo(f"warning: {terminal_line(w)}", err=True)
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return
    if not infos:
        echo(f"no sessions in {terminal_line(directory)}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("id", "status", "device", "start (UTC)", "duration", "flows", "up", "down"):
        table.add_column(col, justify="right" if col in ("flows", "up", "down") else "left")
    for i in infos:
        table.add_row(  # a manifest is the session's word: escaped
            terminal_line(i.id),
            terminal_line(i.status),
            terminal_line(i.device),
            terminal_line((i.started_at or "-").replace("T", " ")[:19]),
            f"{i.duration_s:.0f}s" if i.duration_s is not None else "-",
            terminal_line(i.flows),
            human_bytes(i.bytes_up),
            human_bytes(i.bytes_down),
        )
    Console(markup=False, highlight=False).print(table)


# -------------------------------------------------------------------------------------- verify


@click.command()
@click.argument("session", metavar="SESSION|BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--pubkey",
    type=click.Path(path_type=Path),
    default=None,
    help="A bundle's signature must verify with this public key (KEYFILE.pub of keygen).",
)
@click.option(
    "--reanalyze",
    is_flag=True,
    help="Also analyse the bundle's session again and compare with its findings.json "
    "(byte for byte but for generated_at).",
)
@click.option("--policy", default=None, help="With --reanalyze: the policy, if not built in.")
@click.option("--intel", multiple=True, help="With --reanalyze: intel files the report used.")
@click.option(
    "--identifier", multiple=True, help="With --reanalyze: NAME=VALUE identifiers it was given."
)
@click.option(
    "--claims",
    type=click.Path(path_type=Path),
    default=None,
    help="With --reanalyze: the claims file it checked.",
)
@json_option
@custody_logged("session")
@handle_errors
def verify(
    session: Path,
    pubkey: Path | None,
    reanalyze: bool,
    policy: str | None,
    intel: tuple[str, ...],
    identifier: tuple[str, ...],
    claims: Path | None,
    as_json: bool,
) -> None:
    """Check every file of SESSION against the SHA-256 hashes in its manifest, or every
    member of an evidence BUNDLE against its bundle.json, its session against the session
    manifest, and its signature.

    Exits 0 when all files match; otherwise names each missing, changed or unlisted
    file and exits 1. Without --pubkey a bundle's signature is checked with the key it
    names and reported as self-asserted. With --reanalyze the bundle's session is analysed
    again with the inputs its report records, and the result must be its findings.json
    (exit 1 when it differs or cannot be checked, saying why).

    \b
    Example:
        auditor verify captures/20261128T101500Z-3f9a1c
        auditor verify 20261128T101500Z-3f9a1c.tar.gz --pubkey ~/.auditor/signing.key.pub
        auditor verify 20261128T101500Z-3f9a1c.tar.gz --reanalyze
    """
    if (policy or intel or identifier or claims) and not reanalyze:
        fail("--policy, --intel, --identifier and --claims go with --reanalyze")
    if session.is_file():
        _verify_bundle(
            session, pubkey, as_json, reanalyze, policy, intel, parse_identifiers(identifier),
            claims,
        )  # fmt: skip
        return
    if reanalyze:
        fail(f"--reanalyze checks a bundle's findings; {session} is not a bundle file")
    if pubkey is not None:
        fail(f"--pubkey checks a bundle's signature; {session} is not a bundle file")
    from auditor.evidence.verify import verify_session

    res = verify_session(session)
    if as_json:
        emit_json(res.to_dict())
    else:
        # file names and messages quote the session: each escaped on its line; the verdict,
        # in auditor's words alone, comes last (a folder's name could wrap onto a row of its own)
        for rel in res.missing:
            echo(f"MISSING   {terminal_line(rel)}", fit=True)
        for rel in res.changed:
            echo(f"CHANGED   {terminal_line(rel)}", fit=True)
        for rel in res.unlisted:
            echo(f"UNLISTED  {terminal_line(rel)}", fit=True)
        for p in res.problems:
            echo(f"PROBLEM   {terminal_line(p)}", fit=True)
        for w in res.warnings:
            echo(f"WARNING   {terminal_line(w)}", fit=True)
        echo(f"session   {terminal_line(session)}", err=True, fit=True)
        echo(f"{'OK' if res.ok else 'FAILED'}: {res.checked} artifacts checked")
    if not res.ok:
        sys.exit(1)


def _verify_bundle(
    path: Path,
    pubkey: Path | None,
    as_json: bool,
    reanalyze: bool = False,
    policy: str | None = None,
    intel: tuple[str, ...] = (),
    identifiers: dict[str, str] | None = None,
    claims: Path | None = None,
) -> None:
    from auditor.evidence.bundle import verify_bundle
    from auditor.evidence.signing import load_public_key

    key = load_public_key(pubkey) if pubkey else None
    res = verify_bundle(path, key)
    again = None
    if reanalyze and res.ok:
        from auditor.evidence.reanalyze import reanalyze_bundle

        again = reanalyze_bundle(
            path, key, policy=policy, intel=intel, identifiers=identifiers, claims=claims
        )
        if again.check is not None:  # the bytes re-analysed: the file may have been swapped
            res = again.check
    if as_json:
        doc = res.to_dict()
        if reanalyze:
            doc["reanalysis"] = again.to_dict() if again is not None else None
        emit_json(doc)
    else:
        quoted, verdict = bundle_check_lines(res, again)
        for line in quoted:
            echo(line, fit=True)
        echo(verdict)
    if not res.ok or (again is not None and not again.ok):
        sys.exit(1)


# what of a bundle's own word is shown in the line that names it (the rest is in --json)
OPERATOR_SHOWN = 64


def bundle_check_lines(
    check: BundleCheck, again: Reanalysis | None = None
) -> tuple[list[str], str]:
    """What `verify` and `unbundle` print of a bundle check: the lines that quote the bundle
    (member names, problems, its session, creation time and operator, the signature's
    detail), each escaped on one line, then the verdict in auditor's own words alone.

    Printed in that order (the quoted lines cut to a terminal's width), nothing the bundle
    holds can move the cursor over the verdict, start a line of its own, or wrap onto a row
    of its own: the verdict names no path and quotes nothing (a bundle's file name is the
    sender's choice too)."""
    from auditor.evidence.bundle import format_check

    lines = format_check(check)
    own = ("SIGNATURE ", "OK:", "FAILED:")
    quoted = [terminal_line(line) for line in lines if not line.startswith(own)]
    if again is not None:
        from auditor.evidence.reanalyze import format_reanalysis

        quoted += [terminal_line(line) for line in format_reanalysis(again)]
    info = check.info or {}
    about = f"bundle    {terminal_line(check.path)}"
    if info.get("session_id") or info.get("operator"):
        about += (
            f" (session {terminal_line(info.get('session_id'), OPERATOR_SHOWN)}, bundled "
            f"{terminal_line(info.get('created_at'), 40)} by "
            f"{terminal_line(info.get('operator'), OPERATOR_SHOWN)})"
        )
    quoted.append(about)
    quoted += [terminal_line(line) for line in lines if line.startswith("SIGNATURE ")]
    ok = check.ok and (again is None or again.ok)
    sig = check.signature
    label = sig.status.value if sig.ok else sig.status.value.upper()
    verdict = f"{'OK' if ok else 'FAILED'}: {check.checked} files checked, signature {label}"
    if again is not None:
        verdict += f", {again.verdict}"
    return quoted, verdict


# ------------------------------------------------------------------------------------ evidence


def _passphrase(keyfile: Path, *, new: bool) -> bytes:
    """A key's passphrase: AUDITOR_KEY_PASSPHRASE, else asked on the terminal (twice for a
    new key); never an argument, which other users could read in the process list."""
    from auditor.evidence.signing import PASSPHRASE_ENV

    given = os.environ.get(PASSPHRASE_ENV)
    if given is not None:
        if not given:
            fail(f"{PASSPHRASE_ENV} is set but empty")
        return given.encode()
    if not sys.stdin.isatty():
        fail(f"{keyfile}: a passphrase is needed: set {PASSPHRASE_ENV} (no terminal to ask on)")
    text = click.prompt(
        f"passphrase for {keyfile}", hide_input=True, confirmation_prompt=new, err=True
    )
    if not text:
        fail("an empty passphrase encrypts nothing")
    return str(text).encode()


# --------------------------------------------------------------------------------------- close


@click.command("close")
@click.argument("session", type=click.Path(path_type=Path))
@click.option(
    "--by",
    default=None,
    help="Who seals it (a name for the custody log; default: the login user).",
)
@click.option("--reason", default="", help="Why it is sealed late (kept in the manifest).")
@json_option
@custody_logged()  # seal_late writes the session's own custody line
@handle_errors
def close(session: Path, by: str | None, reason: str, as_json: bool) -> None:
    """Seal a session its recorder left open (a crash, or mitmdump run with
    auditor_close_on_done=false): hash its files and close it as incomplete.

    The manifest and the custody log record that it was sealed late, when and by whom;
    `verify` then checks it as any other session. A session still being recorded, or
    already closed, is refused.

    \b
    Example:
        auditor close captures/20261128T101500Z-3f9a1c --reason "laptop lost power"
        auditor close captures/20261128T101500Z-3f9a1c --by "J. Doe" --json
    """
    from auditor.evidence.close import seal_late
    from auditor.evidence.custody import login_user

    sealed = seal_late(session, by=by or login_user(), reason=reason, argv=_argv())
    if as_json:
        emit_json(sealed.to_dict(), ascii_only=True)
        return
    d = sealed.to_dict()
    late = d.get("sealed_late") or {}
    for w in sealed.warnings:
        echo(f"warning: {terminal_line(w)}", err=True)
    echo(
        f"sealed {terminal_line(session)}: {d['artifacts']} file(s) hashed, status "
        f"{terminal_line(d['status'])} (left open; {terminal_line(d.get('stop_detail') or '')})"
    )
    echo(f"sealed late at {terminal_line(late.get('at'))} by {terminal_line(late.get('by'))}")


@click.command()
@click.option(
    "--out",
    "keyfile",
    required=True,
    type=click.Path(path_type=Path),
    help="Private key file to create (mode 0600); the public key goes to KEYFILE.pub.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt the private key with a passphrase (from AUDITOR_KEY_PASSPHRASE, else asked).",
)
@json_option
@handle_errors
def keygen(keyfile: Path, encrypt: bool, as_json: bool) -> None:
    """Make an Ed25519 key pair for signing evidence bundles; print its fingerprint.

    The private key (PEM, PKCS#8; encrypted with --encrypt) is created with mode 0600 and
    never overwrites a file; keep it off shared disks. Give KEYFILE.pub to whoever verifies.
    `auditor bundle --sign` asks for the passphrase of an encrypted key on a terminal, or
    reads it from AUDITOR_KEY_PASSPHRASE.

    \b
    Example:
        auditor keygen --out ~/.auditor/signing.key --encrypt
        auditor bundle captures/S1 --sign ~/.auditor/signing.key
    """
    from auditor.evidence.signing import generate_keypair

    passphrase = _passphrase(keyfile, new=True) if encrypt else None
    pair = generate_keypair(keyfile, passphrase)
    if as_json:
        emit_json(pair.to_dict())
    else:
        echo(f"private key {pair.private} (keep it secret)", err=True)
        echo(f"public key  {pair.public}", err=True)
        echo(pair.fingerprint)


@click.command()
@click.argument("session", type=click.Path(path_type=Path))
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="Also pack this report folder of the session (e.g. reports/<session-id>/).",
)
@click.option(
    "--sign",
    "keyfile",
    type=click.Path(path_type=Path),
    default=None,
    help="Sign bundle.json with this Ed25519 private key (see auditor keygen).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Bundle file, .tar.gz, .tgz or .tar [default: reports/<session-id>.bundle.tar.gz].",
)
@click.option("--operator", default=None, help="Who makes the bundle [default: the login user].")
@json_option
@custody_logged("session")
@handle_errors
def bundle(
    session: Path,
    report: Path | None,
    keyfile: Path | None,
    out: Path | None,
    operator: str | None,
    as_json: bool,
) -> None:
    """Pack a closed session, optionally its report, into one evidence bundle.

    bundle.json in the archive lists the SHA-256 and size of every file, the versions of
    auditor and its dependencies, the knowledge base, the scenario, the device profile, the
    operator and the session's custody log; --sign adds an Ed25519 signature (bundle.sig).
    The session must verify. Check a bundle with `auditor verify BUNDLE`.

    \b
    Example:
        auditor bundle captures/S1 --report reports/S1 --sign ~/.auditor/signing.key
        auditor bundle captures/S1 --out /media/usb/S1.tar.gz --operator "J. Doe" --json
    """
    from auditor.evidence.bundle import build_bundle
    from auditor.evidence.signing import is_encrypted_key, load_private_key

    key = None
    if keyfile:
        secret = _passphrase(keyfile, new=False) if is_encrypted_key(keyfile) else None
        key = load_private_key(keyfile, secret)
    target = out or DEFAULT_REPORTS / f"{Path(session).name}.bundle.tar.gz"
    res = build_bundle(session, target, report=report, key=key, operator=operator, argv=_argv())
    custody_note(bundle=str(res.path), bundle_sha256=res.sha256, signed_by=res.signed_by)
    if as_json:
        emit_json(res.to_dict())
        return
    signed = f", signed by {res.signed_by}" if res.signed_by else ", not signed"
    echo(f"{res.files} files, {human_bytes(res.size)}{signed}", err=True)
    echo(f"sha256 {res.sha256}", err=True)
    echo(str(res.path))


@click.command()
@click.argument("bundle_file", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="New (or empty) folder that receives captures/<id>/ and reports/<id>/.",
)
@click.option(
    "--pubkey",
    type=click.Path(path_type=Path),
    default=None,
    help="The bundle's signature must verify with this public key.",
)
@click.option(
    "--force", is_flag=True, help="Unpack even if the bundle does not verify (to inspect it)."
)
@json_option
@custody_logged()
@handle_errors
def unbundle(bundle_file: Path, out: Path, pubkey: Path | None, force: bool, as_json: bool) -> None:
    """Unpack an evidence bundle safely, so its session can be analysed again.

    The bundle is checked as it is unpacked (as `auditor verify` does); nothing is kept
    unless it verifies. Links, absolute paths and '..' in the archive are refused.

    \b
    Example:
        auditor unbundle S1.tar.gz --out /tmp/case1 --pubkey signing.key.pub
        auditor analyze /tmp/case1/captures/S1 --out /tmp/case1/reanalysis
    """
    from auditor.evidence.bundle import unpack_bundle
    from auditor.evidence.signing import load_public_key

    key = load_public_key(pubkey) if pubkey else None
    res = unpack_bundle(bundle_file, out, trusted=key, force=force)
    if res.session is not None and res.unpacked:
        custody_touch(res.session)
        custody_note(bundle=str(bundle_file), verified=res.check.ok)
    if as_json:
        emit_json(res.to_dict())
    else:
        quoted, verdict = bundle_check_lines(res.check)
        for line in quoted:
            echo(line, err=True, fit=True)
        if not res.unpacked:
            echo(f"nothing unpacked to {terminal_line(out)}", err=True, fit=True)
        else:
            echo(terminal_line(res.session or res.out))
        echo(verdict, err=True)  # last: after everything that quotes the bundle
    if not res.check.ok:
        sys.exit(1)


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    default=str(DEFAULT_CAPTURES),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder that receives the session folder.",
)
@click.option(
    "--identifier",
    "identifiers",
    multiple=True,
    help="NAME=VALUE of a device identifier, kept in the manifest for the analyser "
    "(e.g. imei=490154203237518). Repeatable.",
)
@json_option
@custody_logged()
@handle_errors
def import_(
    files: tuple[Path, ...], out: Path, identifiers: tuple[str, ...], as_json: bool
) -> None:
    """Make a capture session from HAR files, mitmproxy flow files, packet captures or
    Android 16 intrusion logs (the OS's own DNS and connection log).

    The format is found from each file's content. Each file is copied into the session
    (original/) with its SHA-256; entries that cannot be read are skipped and counted,
    and the session's import events list them.

    \b
    Example:
        auditor import phone.har
        auditor import flows.mitm more.har --identifier imei=490154203237518
        auditor import phone.pcapng "Intrusion Logging"/2026-05-12.txt
        auditor verify captures/<session-id>
    """
    from auditor.imports.session import import_command

    res = import_command(files, out, identifiers, as_json)
    custody_touch(res["session"])
    if as_json:
        emit_json(res)
        return
    for w in res["warnings"]:
        echo(f"warning: {terminal_line(w)}", err=True)
    # the text quotes each file's name and creator (a HAR's log.creator): on their lines
    quoted = [f.get("name") for f in res["files"]]
    for f in res["files"]:
        creator = f.get("creator") or {}
        quoted += [creator.get("name"), creator.get("version")] if isinstance(creator, dict) else []
    echo(quoted_on_one_line(res["text"], quoted))

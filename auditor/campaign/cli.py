"""``auditor campaign``: the command. It parses the options and calls
:func:`auditor.campaign.run.run_campaign`; ``auditor.cli`` adds it to the main group.

The helpers of ``auditor.cli.common`` (escaped output, one-line errors, the custody log) are
taken when the command runs, not when this module is imported: importing them imports the
package ``auditor.cli``, which imports this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from auditor.proxy.upstreamopts import upstream_options

DEFAULT_CAMPAIGNS = Path("campaigns")


def _duration(value: str | None) -> str | None:
    from auditor.timeutil import parse_duration

    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


@click.command("campaign")
@click.option(
    "-s",
    "--serial",
    "serials",
    multiple=True,
    help="A handset to audit (see `auditor devices`); repeat for each one.",
)
@click.option("--all", "all_devices", is_flag=True, help="Every handset online on the adb server.")
@click.option(
    "--scenario",
    required=True,
    help="A preset (idle, idle-after-boot, analytics-off, open-system-apps, browser-canary, "
    "reboot-and-idle; docs/scenarios.md) or a YAML file; the same one runs on every handset.",
)
@click.option(
    "--duration",
    default=None,
    callback=lambda ctx, param, value: _duration(value),
    help="The scenario's duration parameter, e.g. 45s, 5m.",
)
@click.option(
    "--out",
    default=str(DEFAULT_CAMPAIGNS),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder that receives the campaign folder.",
)
@click.option(
    "--packets",
    default="auto",
    show_default=True,
    help="Packet capture for each handset: off, adb-tcpdump, or auto (adb-tcpdump where the "
    "handset has root and tcpdump).",
)
@click.option(
    "--ca",
    type=click.Choice(["auto", "system", "user", "none"]),
    default="auto",
    show_default=True,
    help="Where to install mitmproxy's CA on each handset (as `auditor audit --ca`).",
)
@click.option("--allow-shell", is_flag=True, help="Allow the scenario's shell steps.")
@upstream_options
@click.option(
    "--restore-wait",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds to wait for an unplugged handset to come back, to restore it.",
)
@click.option(
    "--confdir",
    type=click.Path(path_type=Path),
    default=None,
    help="mitmproxy's configuration folder holding its CA [default: ~/.auditor/mitmproxy].",
)
@click.option(
    "--no-analyze", is_flag=True, help="Stop at the sessions: no reports, no matrix cells."
)
@click.option("--notes", default="", help="Operator notes kept in every session's manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def campaign(**kw: Any) -> None:
    """Audit several handsets at once with one scenario, then compare them in one matrix.

    Each handset gets its own audit process, proxy port, reverse tunnel, lock, packet capture
    and restore journal. One handset failing or being unplugged ends its own audit (its
    device restored, or the restore command given) and never the others. The campaign
    folder holds campaign.json, the sessions, their reports, and the matrix handset x
    recipient in report.html, matrix.json and summary.md.

    \b
    Example:
        auditor campaign --all --scenario idle --duration 10m
        auditor campaign -s emulator-5554 -s 127.0.0.1:5601 --scenario idle --duration 5m --json
    """
    from auditor.cli import common as base

    run = base.custody_logged()(base.handle_errors(_campaign))
    run(**kw)


def _campaign(
    serials: tuple[str, ...],
    all_devices: bool,
    scenario: str,
    duration: str | None,
    out: Path,
    packets: str,
    ca: str,
    allow_shell: bool,
    upstream: str | None,
    upstream_ca: Path | None,
    restore_wait: float,
    confdir: Path | None,
    no_analyze: bool,
    notes: str,
    as_json: bool,
) -> None:
    from auditor.campaign.run import CampaignOptions, Event, run_campaign
    from auditor.cli import common as base

    if packets not in ("auto", "off", "adb-tcpdump"):
        # one interface or one PCAPdroid exporter cannot be shared by several handsets
        raise click.BadParameter("use auto, off or adb-tcpdump", param_hint="'--packets'")
    opts = CampaignOptions(
        serials=list(serials),
        all_devices=all_devices,
        scenario=scenario,
        duration=duration,
        out=out,
        confdir=confdir,
        packets=packets,
        ca=ca,
        allow_shell=allow_shell,
        upstream=upstream,
        upstream_ca=upstream_ca,
        restore_wait=restore_wait,
        notes=notes,
        analyze=not no_analyze,
    )

    def show(e: Event) -> None:
        if as_json:
            return
        who = f"[{e.serial}] " if e.serial else "campaign: "
        base.echo(base.terminal_line(who + e.message), err=True)

    res = run_campaign(opts, show)
    base.custody_touch(
        *(res.folder / h["session"] for h in res.manifest["handsets"] if h["session"])
    )
    outcomes = res.outcomes
    if as_json:
        base.emit_json(
            {
                "campaign": str(res.folder),
                "report": str(res.folder / "report.html"),
                "files": [str(p) for p in res.files],
                "seconds": res.seconds,
                "status": res.manifest["status"],
                "handsets": res.manifest["handsets"],
                "recipients": len(res.matrix["recipients"]),
                "warnings": res.matrix["warnings"],
            }
        )
    else:
        counts = ", ".join(f"{n} {k}" for k, n in res.manifest["outcomes"].items())
        base.echo(
            f"{len(outcomes)} handset(s): {counts}; {len(res.matrix['recipients'])} "
            f"recipient(s); {res.seconds:.0f}s",
            err=True,
        )
        base.echo(str(res.folder / "report.html"))
    if res.manifest["status"] == "interrupted":
        sys.exit(130)
    if any(o != "complete" for o in outcomes.values()):
        bad = ", ".join(f"{s} {o}" for s, o in sorted(outcomes.items()) if o != "complete")
        base.echo(f"error: not every audit completed ({base.terminal_line(bad)})", err=True)
        sys.exit(1)

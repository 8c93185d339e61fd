"""``auditor demo``: an audit of the built-in virtual handset, start to report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from auditor.cli.common import (
    DEFAULT_CAPTURES,
    DEFAULT_REPORTS,
    DURATION,
    custody_logged,
    custody_touch,
    echo,
    emit_json,
    handle_errors,
    json_option,
    terminal_line,
)
from auditor.cli.device_cmds import _AuditProgress


@click.command()
@click.option(
    "--out", default=str(DEFAULT_CAPTURES), show_default=True, type=click.Path(path_type=Path)
)
@click.option(
    "--profile",
    "profile_name",
    default="xiaomi-mi10t",
    show_default=True,
    help="Virtual handset profile.",
)
@click.option("--duration", default="60s", show_default=True, help="How long to record.")
@click.option(
    "--reports", default=str(DEFAULT_REPORTS), show_default=True, type=click.Path(path_type=Path)
)
@json_option
@custody_logged()
@handle_errors
def demo(out: Path, reports: Path, profile_name: str, duration: str, as_json: bool) -> None:
    """Audit the built-in virtual handset, end to end, on this machine alone.

    Starts the virtual handset and its offline internet, a private adb server, runs
    `auditor audit` on it, stops everything it started and prints the session's path.

    \b
    Example:
        auditor demo
        auditor demo --profile huawei-p40 --duration 30s --json
    """
    from auditor.demo import run_demo

    DURATION.convert(duration, None, None)
    ui = _AuditProgress(quiet=as_json)
    try:
        result = run_demo(
            out,
            reports=reports,
            profile=profile_name,
            duration=duration,
            echo=None if as_json else lambda m: echo(terminal_line(m), err=True),
            on_progress=ui,
        )
    finally:
        ui.close()
    custody_touch(result["session"])
    if as_json:
        emit_json(result)
    else:
        echo(f"session {result['session']}", err=True)
        echo(result["report"])
    if not (result["verified"] and result["restored"]):
        sys.exit(1)

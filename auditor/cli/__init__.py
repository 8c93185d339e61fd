"""The ``auditor`` command line. Commands parse arguments and call one function each.

Built on click: nested command groups (``auditor intel lookup``), reusable option bundles
(``--json``) as plain decorators, and ``CliRunner`` for in-process tests, as sqlite-utils does.
"""

from __future__ import annotations

import logging
import sys

import click

from auditor import __version__
from auditor.campaign.cli import campaign
from auditor.cli import analysis_cmds, demo_cmds, device_cmds, session_cmds
from auditor.cli.common import (
    TerminalFormatter,
    _AuditorGroup,
    _escaped_excepthook,
    _escaped_thread_hook,
)
from auditor.fleet import cli as fleet_cli


@click.group(cls=_AuditorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="auditor")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """auditor: record and analyse the telemetry an Android handset sends.

    \b
    Try it on the built-in virtual handset:
        auditor demo
    Record a proxy session without a device, then check it:
        auditor capture --no-device --duration 60s
        auditor sessions
        auditor verify captures/<session-id>
    """
    import threading

    level = logging.WARNING - 10 * verbose
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=max(level, logging.DEBUG), handlers=[handler])
    if sys.excepthook is sys.__excepthook__:  # not when a test runner holds it
        sys.excepthook = _escaped_excepthook
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _escaped_thread_hook


# The commands, by the module that defines them. campaign and fleet are defined beside what
# they drive; they take the helpers of auditor.cli.common when they run.
COMMANDS: tuple[click.Command, ...] = (
    session_cmds.sessions,
    session_cmds.verify,
    session_cmds.close,
    session_cmds.keygen,
    session_cmds.bundle,
    session_cmds.unbundle,
    session_cmds.import_,
    device_cmds.capture,
    device_cmds.devices,
    device_cmds.profile,
    device_cmds.restore,
    device_cmds.simulate,
    device_cmds.audit,
    analysis_cmds.analyze,
    analysis_cmds.diff,
    analysis_cmds.intel,
    demo_cmds.demo,
    campaign,
    fleet_cli.export_command,
    fleet_cli.fleet_group,
)
for _command in COMMANDS:
    main.add_command(_command)

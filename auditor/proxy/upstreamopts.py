"""The command-line options of an upstream proxy, ``--upstream`` and ``--upstream-ca``, the
same for ``auditor audit`` and ``auditor campaign``. Outside the package ``auditor.cli``,
which imports the campaign's command: the campaign's module takes them from here without
importing that package first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def upstream_options[F: Callable[..., Any]](fn: F) -> F:
    """``--upstream URL`` and ``--upstream-ca FILE`` (``upstream``, ``upstream_ca``), the same
    for ``auditor audit`` and ``auditor campaign`` (each checks the URL as mitmproxy's
    upstream mode takes it)."""
    fn = click.option(
        "--upstream-ca",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A CA file (PEM) that verifies the servers' certificates seen through --upstream "
        "(a proxy that intercepts TLS); copied into the session as upstream-ca.pem.",
    )(fn)
    return click.option(
        "--upstream",
        metavar="URL",
        default=None,
        help="Forward through an upstream HTTP proxy (mitmproxy's upstream mode), e.g. a lab's "
        "corporate proxy: --upstream http://proxy.lan:3128. A campaign gives it to every "
        "handset's proxy.",
    )(fn)

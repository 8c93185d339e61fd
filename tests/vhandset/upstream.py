"""How a test audits a virtual handset: as a lab audits a phone behind an upstream proxy.

The handset's offline internet is that proxy: ``auditor audit --upstream URL --upstream-ca
FILE`` (or the same two :class:`~auditor.audit.AuditOptions` fields) send mitmdump there, as
``auditor demo`` does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vhandset.world import VirtualWorld


def upstream_of(world: VirtualWorld) -> dict[str, Any]:
    """The ``AuditOptions`` fields that forward to ``world``'s offline internet."""
    return {"upstream": world.internet.url, "upstream_ca": world.internet.ca_cert_path}


def upstream_args(world: VirtualWorld) -> list[str]:
    """The same as ``auditor audit`` options."""
    return ["--upstream", world.internet.url, "--upstream-ca", str(world.internet.ca_cert_path)]

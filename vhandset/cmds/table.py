"""The table of the phone's Android commands (:data:`ANDROID`), and the device a command runs on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from vhandset.sh.command import CommandTable, Ctx

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice

log = logging.getLogger(__name__)

# ==== the Android commands ====================================================================

ANDROID = CommandTable()


def device_of(ctx: Ctx) -> VirtualDevice:
    """The phone a command runs on: the shell's system is always the :class:`VirtualDevice`
    (typed here only, so that the commands need not import the device that holds them)."""
    return cast("VirtualDevice", ctx.system)

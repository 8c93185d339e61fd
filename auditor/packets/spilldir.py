"""Where a read writes what it keeps on disk (see :mod:`auditor.packets.spill`): its own
module, with no heavy imports, for the name worker's pipe too."""

from __future__ import annotations

import os
from typing import Final

#: Where the files go: ``AUDITOR_SPILL_DIR`` when set, else the system's temporary folder
SPILL_DIR_ENV: Final = "AUDITOR_SPILL_DIR"


def spill_dir() -> str | None:
    return os.environ.get(SPILL_DIR_ENV) or None

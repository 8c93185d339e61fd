"""Which compiled parts of the capture reader are in use.

Each of ``_scan``, ``_decode``, ``_flowtab`` and ``_dns`` (C, built at install when a compiler
is there; see ``setup.py``) has a twin in Python or numpy that gives the same results. The
twin runs when the compiled module was not built, or when ``AUDITOR_PURE_PYTHON_SCAN`` is set
(for comparison, and as the reference the tests hold the compiled code to)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str) -> ModuleType | None:
    """``auditor.packets.<name>``, or None when it is not built or is switched off."""
    if os.environ.get("AUDITOR_PURE_PYTHON_SCAN"):
        return None
    try:
        return importlib.import_module(f"auditor.packets.{name}")
    except ImportError:  # not built (no compiler at install)
        return None

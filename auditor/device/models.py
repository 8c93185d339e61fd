"""Transition shim: ``auditor.device.models`` is now :mod:`auditor.device.model` (the name the
analysis and intel layers use). Only ``auditor/analysis/flowtable.py``, owned elsewhere in
issue 16, still imports it; delete this file once it imports ``auditor.device.model``."""

from __future__ import annotations

from auditor.device.model import socket_has_owner as socket_has_owner

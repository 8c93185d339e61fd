"""Times as the virtual handset and its offline internet write and read them: ISO 8601 UTC
timestamps in their logs, and the durations of a traffic plan (``45s``, ``5m``, ``250ms``)."""

from __future__ import annotations

import datetime as _dt
import re
import time

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def now_iso() -> str:
    """Now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    return _dt.datetime.fromtimestamp(time.time(), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_duration(text: str) -> float:
    """``45s``, ``5m``, ``1h``, ``1m30s``, ``250ms`` or plain seconds (``90``) to seconds."""
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        parts = _PART.findall(s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise ValueError(f"not a duration: {text!r} (use e.g. 45s, 5m, 1h)") from None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value

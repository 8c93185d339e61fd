"""Timestamps as auditor writes them: ISO 8601, UTC, microseconds, a trailing ``Z``."""

from __future__ import annotations

import datetime as _dt
import time

_UTC = _dt.UTC


def iso(ts: float | None) -> str | None:
    """Epoch seconds to ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``None`` stays ``None``)."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return iso(time.time())  # type: ignore[return-value]


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso`; accepts any ISO 8601 form with an offset or ``Z``."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``45s``, ``5m``, ``1h``, ``1m30s``, ``250ms`` or plain seconds (``90``) to seconds."""
    import re

    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    try:
        value = float(s)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise ValueError(f"not a duration: {text!r} (use e.g. 45s, 5m, 1h)") from None
        value = sum(float(n) * _UNITS[u] for n, u in parts)
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value


def seconds_text(x: float) -> str:
    """Seconds as plain digits (no exponent), to a tenth: ``12.5 s``, ``3 s``."""
    return f"{x:.1f}".removesuffix(".0") + " s"

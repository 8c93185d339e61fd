"""Shared fixtures: free loopback ports, temporary sessions, a real mitmdump."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "captures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def shared_captures() -> Path:
    if not SHARED_CAPTURES.is_dir():
        pytest.skip(f"real captures not present at {SHARED_CAPTURES} (../shared/captures)")
    return SHARED_CAPTURES


@pytest.fixture
def session_dir(tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "captures"
    out.mkdir()
    yield out

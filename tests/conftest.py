"""Shared fixtures: free loopback ports, temporary sessions, a real mitmdump."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "captures"


@pytest.fixture(scope="session", autouse=True)
def _private_user_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's own data sets and lookup index: each run gets
    empty ones (environment variables, so the processes tests start inherit them)."""
    saved = {k: os.environ.get(k) for k in ("AUDITOR_DATA_DIR", "AUDITOR_CACHE_DIR")}
    os.environ["AUDITOR_DATA_DIR"] = str(tmp_path_factory.mktemp("auditor-data"))
    os.environ["AUDITOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("auditor-cache"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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

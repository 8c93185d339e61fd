"""Fixtures for whole runs: a private adb server, and virtual handsets connected to it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vhandset.adb_fixtures import AdbServer, running_adb_server
from vhandset.world import VirtualWorld


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    """A real adb server on a port of its own; auditor (and its CLI in subprocesses) use it
    through ANDROID_ADB_SERVER_PORT. Killed, by PID if need be, at the end of the module."""
    with running_adb_server(tmp_path_factory.mktemp("adb")) as server:
        old = os.environ.get("ANDROID_ADB_SERVER_PORT")
        os.environ["ANDROID_ADB_SERVER_PORT"] = str(server.port)
        try:
            yield server
        finally:
            if old is None:
                os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
            else:
                os.environ["ANDROID_ADB_SERVER_PORT"] = old


WorldFactory = Callable[..., tuple[VirtualWorld, str]]


@pytest.fixture
def make_world(adb_server: AdbServer) -> Iterator[WorldFactory]:
    """Start a virtual handset (and its offline internet), `adb connect` it, and return it
    with its serial. Everything is stopped and disconnected at the end of the test."""
    worlds: list[tuple[VirtualWorld, str]] = []

    def make(profile: str = "xiaomi-mi10t", *, state: str = "device", **kw: object):
        world = VirtualWorld(profile, port=0, **kw).start()  # type: ignore[arg-type]
        serial = world.info().adb_address
        worlds.append((world, serial))
        adb_server.text("connect", serial)
        assert adb_server.wait_state(serial, state, 15), adb_server.states()
        return world, serial

    yield make
    for world, serial in worlds:
        adb_server.text("disconnect", serial)
        world.stop()


@pytest.fixture
def captures(tmp_path: Path) -> Path:
    out = tmp_path / "captures"
    out.mkdir()
    return out

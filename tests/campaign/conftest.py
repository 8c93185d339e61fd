"""Fixtures for campaigns: a real adb server, and virtual handsets each running as a process
of its own (``auditor simulate``), so that one can be killed by its PID as when a phone is
unplugged or dies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.vhandset.adb_fixtures import AdbServer, pid_alive, running_adb_server, wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Phone:
    """A virtual handset in its own process, attached to the module's adb server."""

    profile: str
    serial: str  # its adb address, as the adb server names it
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    upstream: str = ""  # its offline internet, as an upstream proxy, and that proxy's CA
    upstream_ca: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """Unplugged: the process ends at once, its ADB daemon and offline internet with it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_phone(server: AdbServer, profile: str, workdir: Path) -> Phone:
    err = open(workdir / f"simulate-{profile}.log", "wb")
    argv = ["simulate", "--profile", profile, "--port", "0", "--no-connect", "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor.cli", *argv],
        cwd=REPO,
        env={**os.environ, "ANDROID_ADB_SERVER_PORT": str(server.port)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=err,
    )
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:  # the JSON document, then nothing until the process ends
        lines.append(raw.decode())
        if raw.rstrip() == b"}":
            break
    info = json.loads("".join(lines))
    phone = Phone(profile, info["adb_address"], proc, err, info["upstream"], info["ca"])
    server.text("connect", phone.serial)
    assert server.wait_state(phone.serial, "device", 20), server.states()
    return phone


def stop_phone(server: AdbServer, phone: Phone) -> None:
    server.text("disconnect", phone.serial)
    if phone.proc.poll() is None:
        phone.proc.send_signal(signal.SIGTERM)
        try:
            phone.proc.wait(10)
        except subprocess.TimeoutExpired:
            phone.kill()
    assert not pid_alive(phone.pid)
    phone.stderr.close()


@pytest.fixture(scope="module")
def adb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    """A real adb server on a port of its own, for this module; auditor and the processes it
    starts find it through ANDROID_ADB_SERVER_PORT."""
    with running_adb_server(tmp_path_factory.mktemp("adb")) as server:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
            yield server


@pytest.fixture(scope="module")
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The audit processes' HOME: their device locks (~/.auditor/locks) are the test's."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        yield home


def wait_file(path: Path, timeout: float) -> bool:
    return wait_until(path.exists, timeout, 0.1)


def no_process_left(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False

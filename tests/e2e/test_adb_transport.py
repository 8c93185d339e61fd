"""The virtual adbd against the real adb server (platform-tools 36), its CLI and adbutils.

One isolated adb server serves the module; each test gets a fresh device and daemon on an
ephemeral port and ``adb connect``s it. Nothing here mocks the server.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import adbutils
import pytest

from tests.vhandset.adb_backend import SCREENCAP_PNG, FakeDevice
from tests.vhandset.adb_fixtures import (
    ADB,
    AdbServer,
    connect,
    port_is_free,
    running_adb_server,
    running_daemon,
    wait_until,
)
from vhandset.adb import AdbDaemon

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.access(ADB, os.X_OK), reason="no adb binary in adbutils"),
]

FIVE_MIB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdbServer]:
    with running_adb_server(tmp_path_factory.mktemp("adb-server")) as server:
        yield server


@pytest.fixture
def device() -> Iterator[FakeDevice]:
    device = FakeDevice(boot_seconds=1.0)
    yield device
    device.cancel_timers()


@pytest.fixture
def daemon(device: FakeDevice) -> Iterator[AdbDaemon]:
    with running_daemon(device) as daemon:
        yield daemon


@pytest.fixture
def serial(server: AdbServer, daemon: AdbDaemon) -> Iterator[str]:
    serial = connect(server, daemon)
    yield serial
    server.adb("disconnect", serial)


@pytest.fixture
def handset(server: AdbServer, serial: str) -> adbutils.AdbDevice:
    return server.client().device(serial)


def test_connect_lists_model_and_product(server: AdbServer, serial: str) -> None:
    listing = server.text("devices", "-l")
    line = next(row for row in listing.splitlines() if row.startswith(serial))
    assert "device product:sim_oriole model:Pixel_6_Sim device:oriole" in line
    assert serial in [d.serial for d in server.client().device_list()]
    assert server.text("-s", serial, "features").split() == ["shell_v2", "cmd", "stat_v2", "ls_v2"]


def test_cli_shell_uses_v2_with_stdout_stderr_and_exit_code(
    server: AdbServer, serial: str, device: FakeDevice
) -> None:
    done = server.adb("-s", serial, "shell", "getprop ro.product.model; echo oops >&2; exit 3")
    assert (done.stdout, done.stderr, done.returncode) == (b"Pixel 6 Sim\n", b"oops\n", 3)
    assert device.processes[-1].pty is False


def test_adbutils_shell_and_shell2(handset: adbutils.AdbDevice) -> None:
    assert handset.shell("getprop ro.product.model") == "Pixel 6 Sim"
    v1 = handset.shell2("cat /nope")
    assert v1.returncode == 1 and "No such file or directory" in v1.output
    ok = handset.shell2("echo fine")
    assert (ok.returncode, ok.output) == (0, "fine\n")
    v2 = handset.shell2("echo out; echo err >&2; false", v2=True)
    assert (v2.returncode, v2.stdout, v2.stderr) == (1, "out\n", "err\n")


def test_exec_out_is_byte_exact(server: AdbServer, serial: str, device: FakeDevice) -> None:
    assert server.adb("-s", serial, "exec-out", "screencap", "-p").stdout == SCREENCAP_PNG
    blob = bytes(range(256)) * 64 + b"\r\n\n\r" * 1000
    device.fs.put("/data/local/tmp/blob", blob)
    assert server.adb("-s", serial, "exec-out", "cat /data/local/tmp/blob").stdout == blob


def test_push_pull_via_adbutils_sync(
    handset: adbutils.AdbDevice, device: FakeDevice, tmp_path: Path
) -> None:
    blob = os.urandom(FIVE_MIB)
    assert handset.sync.push(blob, "/data/local/tmp/up.bin", mode=0o644) == FIVE_MIB
    assert device.fs.read("/data/local/tmp/up.bin") == blob
    info = handset.sync.stat("/data/local/tmp/up.bin")
    assert info.size == FIVE_MIB and stat.S_ISREG(info.mode) and stat.S_IMODE(info.mode) == 0o644
    assert stat.S_ISDIR(handset.sync.stat("/data/local/tmp").mode)
    assert handset.sync.stat("/no/such").mode == 0
    assert "up.bin" in [entry.path for entry in handset.sync.list("/data/local/tmp")]
    assert handset.sync.pull("/data/local/tmp/up.bin", tmp_path / "down.bin") == FIVE_MIB
    assert (tmp_path / "down.bin").read_bytes() == blob


def test_push_pull_via_cli(
    server: AdbServer, serial: str, device: FakeDevice, tmp_path: Path
) -> None:
    blob = os.urandom(FIVE_MIB)
    (tmp_path / "up.bin").write_bytes(blob)
    pushed = server.adb("-s", serial, "push", str(tmp_path / "up.bin"), "/sdcard/up.bin")
    assert pushed.returncode == 0, pushed.stderr
    assert device.fs.read("/sdcard/up.bin") == blob
    pulled = server.adb("-s", serial, "pull", "/sdcard/up.bin", str(tmp_path / "down.bin"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "down.bin").read_bytes() == blob
    refused = server.adb("-s", serial, "push", str(tmp_path / "up.bin"), "/system/up.bin")
    assert refused.returncode == 1 and b"Read-only file system" in refused.stderr
    missing = server.adb("-s", serial, "pull", "/sdcard/none", str(tmp_path / "none"))
    assert missing.returncode == 1 and b"No such file or directory" in missing.stderr


class UppercaseServer:
    """A real TCP server on 127.0.0.1 that answers every read in upper case."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_reverse_tunnel_round_trip(server: AdbServer, serial: str, device: FakeDevice) -> None:
    upper = UppercaseServer()
    try:
        done = server.adb("-s", serial, "reverse", "tcp:8080", f"tcp:{upper.port}")
        assert done.returncode == 0, done.stderr
        listing = server.text("-s", serial, "reverse", "--list")
        assert f"tcp:8080 tcp:{upper.port}" in listing
        assert device.reverse_tables[-1] == {"tcp:8080": f"tcp:{upper.port}"}
        opener = device.opener
        assert opener is not None

        tunnel = opener.open("tcp:8080")
        tunnel.settimeout(10)
        payload = os.urandom(2_000_000).replace(b"\0", b"x").lower()
        sender = threading.Thread(target=tunnel.sendall, args=(payload,), daemon=True)
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            chunk = tunnel.recv(1 << 20)
            assert chunk, "tunnel closed early"
            received += chunk
        assert bytes(received) == payload.upper()
        sender.join(5)
        tunnel.close()

        with pytest.raises(ConnectionRefusedError):
            opener.open("tcp:9999")  # unregistered: refused here, never sent to the server
        assert server.text("-s", serial, "reverse", "--remove", "tcp:8080") == ""
        assert server.text("-s", serial, "reverse", "--list").strip() == ""
        assert device.reverse_tables[-1] == {}
        with pytest.raises(ConnectionRefusedError):
            opener.open("tcp:8080")
        assert server.alive() and server.states()[serial] == "device"
    finally:
        upper.close()


def test_reverse_via_adbutils(handset: adbutils.AdbDevice, device: FakeDevice) -> None:
    handset.reverse("tcp:7001", "tcp:7002")
    assert [(r.remote, r.local) for r in handset.reverse_list()] == [("tcp:7001", "tcp:7002")]
    handset.reverse_remove_all()
    assert handset.reverse_list() == []
    assert device.reverse_tables[-2:] == [{"tcp:7001": "tcp:7002"}, {}]


def test_streaming_command_closed_by_host_ends(
    handset: adbutils.AdbDevice, device: FakeDevice
) -> None:
    connection = handset.shell("logcat", stream=True)
    assert b"I Sim: line 0" in connection.read(200)
    connection.close()
    process = device.processes[-1]
    assert process.closed.wait(3), "the backend's close() was not called"
    assert process.finished.wait(3), "the streaming command did not end"


def test_cli_streaming_command_killed_by_user(
    server: AdbServer, serial: str, device: FakeDevice
) -> None:
    proc = subprocess.Popen(
        [ADB, "-P", str(server.port), "-s", serial, "shell", "logcat"],
        env=server.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert b"I Sim: line" in proc.stdout.read(60)
    finally:
        proc.terminate()
        proc.wait(10)
    assert device.processes[-1].finished.wait(3)


def test_unauthorized_device(server: AdbServer) -> None:
    device = FakeDevice(authorized=False)
    with running_daemon(device) as daemon:
        out = server.text("connect", daemon.address)
        assert "failed to authenticate" in out
        assert server.wait_state(daemon.address, "unauthorized"), server.states()
        assert "unauthorized" in server.text("devices")
        server.adb("disconnect", daemon.address)


def test_garbage_does_not_crash_the_daemon(server: AdbServer, daemon: AdbDaemon) -> None:
    for junk in (b"\x00" * 24, b"CNXN" + os.urandom(200), b"host:version\n" * 50):
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
            sock.sendall(junk)
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
    serial = connect(server, daemon)
    try:
        assert server.text("-s", serial, "shell", "echo alive") == "alive\n"
    finally:
        server.adb("disconnect", serial)


def test_reboot_goes_offline_and_comes_back(
    server: AdbServer, serial: str, device: FakeDevice
) -> None:
    started = time.monotonic()
    server.adb("-s", serial, "reboot", "bootloader")
    assert device.reboots == ["bootloader"]
    assert wait_until(lambda: server.states().get(serial) != "device", 5, 0.02)
    assert server.wait_state(serial, "device", timeout=15), server.states()
    assert time.monotonic() - started >= device.boot_seconds
    assert server.text("-s", serial, "shell", "getprop sys.boot_completed") == "1\n"


def test_root_restarts_adbd_and_the_server_reconnects(
    server: AdbServer, serial: str, device: FakeDevice
) -> None:
    assert server.text("-s", serial, "root") == "restarting adbd as root\n"
    assert server.wait_state(serial, "device", timeout=10)
    assert server.text("-s", serial, "shell", "id") == "uid=0(root)\n"
    assert server.text("-s", serial, "root") == "adbd is already running as root\n"
    assert server.text("-s", serial, "unroot") == "restarting adbd as non root\n"
    assert server.wait_state(serial, "device", timeout=10)
    assert server.text("-s", serial, "shell", "id") == "uid=2000(shell)\n"


def test_emulator_port_is_discovered_without_connect(tmp_path: Path) -> None:
    if not port_is_free(5555) or not port_is_free(5554):
        pytest.skip("port 5555 or 5554 is in use")
    device = FakeDevice()
    with (
        running_daemon(device, port=5555),
        running_adb_server(tmp_path, scan_emulators=True) as server,
    ):
        assert server.wait_state("emulator-5554", "device", timeout=10), server.states()
        out = server.text("-s", "emulator-5554", "shell", "getprop ro.product.device")
        assert out == "oriole\n"

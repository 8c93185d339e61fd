"""auditor.device.setup against a virtual handset through a real adb server.

Every check reads the virtual handset's own state (its settings table, its reverse table, its
mount table and files), never what the controller believes it did. The signal tests run the
setup in a child process, as ``auditor audit`` does, and signal or kill it by PID.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.device.handset import Handset
from auditor.device.journal import JOURNAL, RestoreJournal
from auditor.device.parsers import subject_hash_old
from auditor.device.profile import APEX_CA_DIR, SYSTEM_CA_DIR, USER_CA_DIR
from auditor.device.setup import STAGING, USER_CA_DOWNLOAD, CaptureSetup, restore_device
from auditor.errors import DeviceError
from tests.e2e.conftest import WorldFactory, adb_server, captures, make_world
from tests.vhandset.adb_fixtures import AdbServer, free_port
from vhandset.offline.pki import CertificateAuthority
from vhandset.world import VirtualWorld

__all__ = ["adb_server", "captures", "make_world"]  # fixtures, used by name

pytestmark = pytest.mark.e2e

DOWNLOADS = "/sdcard/Download"
LOCAL_TMP = "/data/local/tmp"
HELPER_TIMEOUT = 30.0

# Run in a child process: set the handset up, say "ready", then wait to be signalled or killed.
HOLD_SETUP = """\
import sys, time
from pathlib import Path
from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.setup import CaptureSetup, sigterm_raises

serial, session, port, ca, pem = sys.argv[1:6]
setup = CaptureSetup(
    Handset(serial),
    RestoreJournal.in_session(Path(session)),
    proxy_port=int(port),
    ca=ca,
    ca_pem=Path(pem).read_bytes(),
)
with sigterm_raises(), setup:
    print("ready", flush=True)
    time.sleep(60)
print("slept through", flush=True)
"""


@dataclasses.dataclass(frozen=True)
class DeviceState:
    settings: dict[str, dict[str, str]]
    reverse: dict[str, str]
    mounts: str
    user_cas: list[str]
    downloads: list[str]
    local_tmp: list[str]


def device_state(world: VirtualWorld) -> DeviceState:
    """The handset's own state, read from the simulator, not through auditor."""
    dev = world.device
    return DeviceState(
        settings={ns: dict(values) for ns, values in dev.settings.items()},
        reverse=dict(dev.reverse),
        mounts=dev.run("cat /proc/mounts").stdout.decode(),
        user_cas=sorted(dev.vfs.listdir(USER_CA_DIR)),
        downloads=sorted(dev.vfs.listdir(DOWNLOADS)),
        local_tmp=sorted(dev.vfs.listdir(LOCAL_TMP)),
    )


def mounted_on(state: DeviceState, path: str) -> list[str]:
    return [line for line in state.mounts.splitlines() if line.split()[1:2] == [path]]


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return CertificateAuthority(
        tmp_path_factory.mktemp("mitm-ca"), name="auditor test interception CA"
    ).cert_pem


@pytest.fixture
def ca_name(ca_pem: bytes) -> str:
    return f"{subject_hash_old(ca_pem)}.0"


@pytest.fixture
def proxy_port() -> int:
    return free_port()


# ------------------------------------------------------------------------------- in process


def test_normal_end_sets_everything_up_and_restores_exactly(
    make_world: WorldFactory,
    adb_server: AdbServer,
    tmp_path: Path,
    ca_pem: bytes,
    ca_name: str,
    proxy_port: int,
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    dev = world.device
    before = device_state(world)
    assert f"{SYSTEM_CA_DIR}/{ca_name}" not in dev.trusted_ca_files()
    journal = RestoreJournal.in_session(tmp_path)

    with CaptureSetup(
        Handset(serial), journal, proxy_port=proxy_port, ca="system", ca_pem=ca_pem
    ) as setup:
        during = device_state(world)
        assert during.settings["global"]["http_proxy"] == f"127.0.0.1:{proxy_port}"
        assert during.settings["global"]["private_dns_mode"] == "off"
        assert during.reverse == {f"tcp:{proxy_port}": f"tcp:{proxy_port}"}
        listed = adb_server.text("-s", serial, "reverse", "--list")
        assert f"tcp:{proxy_port} tcp:{proxy_port}" in listed
        assert [m.split()[2] for m in mounted_on(during, SYSTEM_CA_DIR)] == ["tmpfs"]
        assert dev.vfs.read(f"{SYSTEM_CA_DIR}/{ca_name}") == ca_pem
        assert dev.trusted_ca_files()[f"{SYSTEM_CA_DIR}/{ca_name}"] == ca_pem
        # the store under the tmpfs still holds the image's certificates
        assert len(dev.trusted_ca_files()) > 1
        assert during.downloads == [Path(USER_CA_DOWNLOAD).name]
        assert setup.notes == []
        assert all(c.applied for c in journal.changes())

    assert device_state(world) == before
    assert f"{SYSTEM_CA_DIR}/{ca_name}" not in dev.trusted_ca_files()
    assert journal.pending() == []


def test_restore_puts_back_what_was_there_not_a_default(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    h = Handset(serial)
    h.setting_put("global", "http_proxy", "10.9.8.7:3128")
    h.setting_put("global", "private_dns_mode", "hostname")
    h.reverse(f"tcp:{proxy_port}", "tcp:9999")
    before = device_state(world)

    with CaptureSetup(
        h, RestoreJournal.in_session(tmp_path), proxy_port=proxy_port, ca="none", ca_pem=ca_pem
    ):
        assert world.device.reverse == {f"tcp:{proxy_port}": f"tcp:{proxy_port}"}
        assert world.device.settings["global"]["http_proxy"] == f"127.0.0.1:{proxy_port}"

    assert device_state(world) == before
    assert before.reverse == {f"tcp:{proxy_port}": "tcp:9999"}
    assert before.settings["global"]["http_proxy"] == "10.9.8.7:3128"


def test_exception_in_the_block_restores_and_propagates(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    journal = RestoreJournal.in_session(tmp_path)

    class Boom(Exception):
        pass

    with (
        pytest.raises(Boom),
        CaptureSetup(Handset(serial), journal, proxy_port=proxy_port, ca="system", ca_pem=ca_pem),
    ):
        assert mounted_on(device_state(world), SYSTEM_CA_DIR)
        raise Boom

    assert device_state(world) == before
    assert journal.changes() and journal.pending() == []


def test_user_ca_on_a_rooted_phone_goes_into_the_user_store_and_out_again(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, ca_name: str, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    with CaptureSetup(
        Handset(serial),
        RestoreJournal.in_session(tmp_path),
        proxy_port=proxy_port,
        ca="user",
        ca_pem=ca_pem,
    ):
        assert world.device.user_ca_files() == {f"{USER_CA_DIR}/{ca_name}": ca_pem}
        assert mounted_on(device_state(world), SYSTEM_CA_DIR) == []
    assert world.device.user_ca_files() == {}
    assert device_state(world) == before


def test_user_ca_on_an_unrooted_phone_is_only_offered_in_downloads(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("huawei-p40", traffic=False)
    before = device_state(world)
    with CaptureSetup(
        Handset(serial),
        RestoreJournal.in_session(tmp_path),
        proxy_port=proxy_port,
        ca="user",
        ca_pem=ca_pem,
    ) as setup:
        assert world.device.vfs.read(USER_CA_DOWNLOAD) == ca_pem
        assert world.device.user_ca_files() == {}
        assert len(setup.notes) == 1
        assert USER_CA_DOWNLOAD in setup.notes[0] and "Install a certificate" in setup.notes[0]
    assert device_state(world) == before


def test_system_ca_without_root_fails_and_leaves_nothing_behind(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("huawei-p40", traffic=False)
    before = device_state(world)
    journal = RestoreJournal.in_session(tmp_path)
    setup = CaptureSetup(
        Handset(serial), journal, proxy_port=proxy_port, ca="system", ca_pem=ca_pem
    )
    with pytest.raises(DeviceError, match="needs root"), setup:
        pytest.fail("the block must not run")
    assert device_state(world) == before
    # The CA goes in first, so the failure comes before the proxy is touched; what was done
    # (the certificate pushed to Downloads) was journalled, and the restore undid it.
    assert len(journal.changes()) >= 1 and journal.pending() == []
    assert not any("http_proxy" in c.what for c in journal.changes())


def test_android_14_binds_the_ca_over_the_apex_store(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, ca_name: str, proxy_port: int
) -> None:
    world, serial = make_world("pixel-android14", traffic=False)
    dev = world.device
    before = device_state(world)
    assert before.settings["global"]["private_dns_mode"] == "opportunistic"
    apex_file = f"{APEX_CA_DIR}/{ca_name}"
    assert apex_file not in dev.trusted_ca_files()

    with CaptureSetup(
        Handset(serial),
        RestoreJournal.in_session(tmp_path),
        proxy_port=proxy_port,
        ca="system",
        ca_pem=ca_pem,
    ) as setup:
        during = device_state(world)
        assert mounted_on(during, APEX_CA_DIR)
        assert mounted_on(during, SYSTEM_CA_DIR)
        assert dev.trusted_ca_files()[apex_file] == ca_pem
        assert any("Android 14" in n for n in setup.notes)

    assert apex_file not in dev.trusted_ca_files()
    assert device_state(world) == before  # private DNS back to opportunistic, too


def test_reboot_mid_capture_then_reapply_and_restore(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, ca_name: str, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    h = Handset(serial)
    setup = CaptureSetup(
        h, RestoreJournal.in_session(tmp_path), proxy_port=proxy_port, ca="system", ca_pem=ca_pem
    )
    with setup:
        h.reboot(timeout=30)
        after_boot = device_state(world)
        assert after_boot.reverse == {} and mounted_on(after_boot, SYSTEM_CA_DIR) == []
        assert after_boot.settings["global"]["http_proxy"] == f"127.0.0.1:{proxy_port}"
        setup.reapply_after_reboot()
        assert world.device.reverse == {f"tcp:{proxy_port}": f"tcp:{proxy_port}"}
        assert f"{SYSTEM_CA_DIR}/{ca_name}" in world.device.trusted_ca_files()
    assert device_state(world) == before


def test_lan_route_points_the_proxy_at_the_host_without_a_reverse(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("huawei-p40", traffic=False)
    before = device_state(world)
    with CaptureSetup(
        Handset(serial),
        RestoreJournal.in_session(tmp_path),
        proxy_host="192.168.0.23",
        proxy_port=proxy_port,
        route="lan",
        ca="none",
        ca_pem=ca_pem,
    ):
        assert world.device.settings["global"]["http_proxy"] == f"192.168.0.23:{proxy_port}"
        assert world.device.reverse == {}
        assert world.device.vfs.listdir(DOWNLOADS) == []
    assert device_state(world) == before


@pytest.mark.parametrize(("name", "store"), [("xiaomi-mi10t", "system"), ("huawei-p40", "user")])
def test_ca_auto_picks_the_system_store_with_root_else_the_user_one(
    make_world: WorldFactory,
    tmp_path: Path,
    ca_pem: bytes,
    ca_name: str,
    proxy_port: int,
    name: str,
    store: str,
) -> None:
    world, serial = make_world(name, traffic=False)
    before = device_state(world)
    with CaptureSetup(
        Handset(serial),
        RestoreJournal.in_session(tmp_path),
        proxy_port=proxy_port,
        ca="auto",
        ca_pem=ca_pem,
    ) as setup:
        assert setup.ca == store
        assert f"--ca auto: installing the CA in the {store} store" in setup.notes
        trusted = f"{SYSTEM_CA_DIR}/{ca_name}" in world.device.trusted_ca_files()
        assert trusted is (store == "system")
    assert device_state(world) == before


def test_a_ca_already_in_the_user_store_is_left_there(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, ca_name: str, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    mine = f"{USER_CA_DIR}/{ca_name}"
    world.device.vfs.write(mine, ca_pem, mode=0o644)  # the user installed it themselves
    before = device_state(world)
    with CaptureSetup(
        Handset(serial),
        RestoreJournal.in_session(tmp_path),
        proxy_port=proxy_port,
        ca="user",
        ca_pem=ca_pem,
    ) as setup:
        assert any("already holds" in n for n in setup.notes)
    assert world.device.user_ca_files() == {mine: ca_pem}
    assert device_state(world) == before


def test_a_system_store_already_mounted_over_is_refused_and_left_alone(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    h = Handset(serial)
    h.su(f"mount -t tmpfs tmpfs {SYSTEM_CA_DIR}").check()  # another tool's leftover
    before = device_state(world)
    assert mounted_on(before, SYSTEM_CA_DIR)
    setup = CaptureSetup(
        h, RestoreJournal.in_session(tmp_path), proxy_port=proxy_port, ca="system", ca_pem=ca_pem
    )
    with pytest.raises(DeviceError, match="already mounted over"), setup:
        pytest.fail("the block must not run")
    assert device_state(world) == before


# ----------------------------------------------------------------------- in a child process


def auditor_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor.cli", *args],
        cwd=cwd,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def hold_setup(tmp_path: Path, ca_pem: bytes) -> Iterator[Any]:
    """Start the helper; returns (process, session). Killed by PID at the end if still alive."""
    script = tmp_path / "hold_setup.py"
    script.write_text(HOLD_SETUP)
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ca_pem)
    procs: list[subprocess.Popen[bytes]] = []

    def start(serial: str, session: Path, port: int, ca: str = "system") -> subprocess.Popen[bytes]:
        session.mkdir(parents=True, exist_ok=True)
        err = open(tmp_path / f"helper-{len(procs)}.err", "wb")
        proc = subprocess.Popen(
            [sys.executable, str(script), serial, str(session), str(port), ca, str(pem)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=dict(os.environ),
            cwd=tmp_path,
        )
        err.close()
        procs.append(proc)
        _wait_ready(proc, tmp_path / f"helper-{len(procs) - 1}.err")
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[bytes], err: Path) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + HELPER_TIMEOUT
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"ready\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"helper not ready in {HELPER_TIMEOUT}s: {err.read_text()}")
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(10)
                pytest.fail(f"helper exited {proc.returncode}: {err.read_text()}")
            buf += chunk


def _journal_lines(session: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (session / JOURNAL).read_text().splitlines()]


@pytest.mark.parametrize(
    ("sig", "raised"), [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "Interrupted")]
)
def test_a_signal_in_the_block_restores_the_device(
    make_world: WorldFactory,
    hold_setup: Any,
    tmp_path: Path,
    proxy_port: int,
    sig: signal.Signals,
    raised: str,
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    session = tmp_path / "captures" / "s1"
    proc = hold_setup(serial, session, proxy_port)
    during = device_state(world)
    assert during.settings["global"]["http_proxy"] == f"127.0.0.1:{proxy_port}"
    assert mounted_on(during, SYSTEM_CA_DIR)

    os.kill(proc.pid, sig)
    proc.wait(HELPER_TIMEOUT)

    assert proc.returncode != 0
    assert proc.stdout is not None and b"slept through" not in proc.stdout.read()
    assert raised in (tmp_path / "helper-0.err").read_text()
    assert device_state(world) == before
    assert RestoreJournal.in_session(session).pending() == []


def _slow_command(world: VirtualWorld, name: str, delay: float) -> threading.Event:
    """Make one command on the virtual handset take ``delay`` seconds; the event is set when it
    starts. Gives a signal a window that lands inside the restore for certain."""
    original = world.device.commands[name]
    started = threading.Event()

    def run(ctx: Any) -> int:
        started.set()
        time.sleep(delay)
        return original.run(ctx)

    world.device.commands[name] = dataclasses.replace(original, run=run)
    return started


def test_signals_during_the_restore_do_not_leave_it_half_done(
    make_world: WorldFactory, hold_setup: Any, tmp_path: Path, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    session = tmp_path / "captures" / "s1"
    proc = hold_setup(serial, session, proxy_port)
    # the first undo of the restore is the unmount of the tmpfs over the CA store
    unmounting = _slow_command(world, "umount", 1.0)

    os.kill(proc.pid, signal.SIGINT)
    assert unmounting.wait(HELPER_TIMEOUT), "the restore never started"
    os.kill(proc.pid, signal.SIGINT)  # a second Ctrl-C, impatient
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(HELPER_TIMEOUT)

    assert proc.returncode != 0
    assert device_state(world) == before
    assert RestoreJournal.in_session(session).pending() == []


NORMAL_END = """\
import sys, time
from pathlib import Path
from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.setup import CaptureSetup, sigterm_raises

serial, session, port, ca, pem = sys.argv[1:6]
setup = CaptureSetup(
    Handset(serial),
    RestoreJournal.in_session(Path(session)),
    proxy_port=int(port),
    ca=ca,
    ca_pem=Path(pem).read_bytes(),
)
with sigterm_raises():
    with setup:
        print("ready", flush=True)
        sys.stdin.readline()
    print("went on after the restore", flush=True)
    time.sleep(1.5)
"""


def test_a_signal_held_during_the_restore_is_acted_on_after_it(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    script, pem = tmp_path / "normal_end.py", tmp_path / "ca.pem"
    script.write_text(NORMAL_END)
    pem.write_bytes(ca_pem)
    err = tmp_path / "helper.err"
    with open(err, "wb") as err_fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                serial,
                str(tmp_path),
                str(proxy_port),
                "system",
                str(pem),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_fh,
            env=dict(os.environ),
            cwd=tmp_path,
        )
    try:
        _wait_ready(proc, err)
        unmounting = _slow_command(world, "umount", 1.0)
        assert proc.stdin is not None
        proc.stdin.write(b"\n")  # end the block normally: the restore starts
        proc.stdin.close()
        assert unmounting.wait(HELPER_TIMEOUT), "the restore never started"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(HELPER_TIMEOUT)
        assert device_state(world) == before  # the restore itself was not cut short
        assert proc.stdout is not None
        went_on = b"went on" in proc.stdout.read()
        assert proc.returncode != 0 and not went_on
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_kill_9_leaves_the_device_set_up_and_auditor_restore_undoes_it_once(
    make_world: WorldFactory, hold_setup: Any, tmp_path: Path, captures: Path, proxy_port: int
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = device_state(world)
    session = captures / "20261128T101500Z-killed"
    proc = hold_setup(serial, session, proxy_port)

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(HELPER_TIMEOUT)

    assert proc.returncode == -signal.SIGKILL
    left = device_state(world)
    assert left.settings["global"]["http_proxy"] == f"127.0.0.1:{proxy_port}"
    assert left.reverse == {f"tcp:{proxy_port}": f"tcp:{proxy_port}"}
    assert mounted_on(left, SYSTEM_CA_DIR)
    assert world.device.vfs.listdir(STAGING)
    pending = RestoreJournal.in_session(session).pending()
    assert len(pending) == 6

    first = auditor_cli("restore", "-s", serial, str(session), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"{session}: undid {len(pending)} change(s)" in first.stdout
    assert first.stdout.count("  undone  ") == len(pending)
    assert device_state(world) == before

    again = auditor_cli("restore", "-s", serial, str(session), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "serial": serial,
        "ok": True,
        "sessions": [{"session": str(session), "undone": [], "failed": []}],
    }
    found = auditor_cli("restore", "-s", serial, "--captures", str(captures), cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == f"nothing to restore on {serial}"
    assert device_state(world) == before

    undone = [x["id"] for x in _journal_lines(session) if x["op"] == "undone"]
    assert sorted(undone) == sorted(c.id for c in pending)  # each once, never twice


def test_auditor_restore_finds_the_pending_session_by_itself(
    make_world: WorldFactory, hold_setup: Any, tmp_path: Path, captures: Path, proxy_port: int
) -> None:
    world, serial = make_world("huawei-p40", traffic=False)
    before = device_state(world)
    session = captures / "20261128T101600Z-killed"
    proc = hold_setup(serial, session, proxy_port, "user")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(HELPER_TIMEOUT)
    assert world.device.vfs.read(USER_CA_DOWNLOAD)

    done = auditor_cli("restore", "-s", serial, "--captures", str(captures), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{session}: undid 4 change(s)" in done.stdout
    assert device_state(world) == before


def test_auditor_restore_of_a_missing_session_is_an_error(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    _, serial = make_world("xiaomi-mi10t", traffic=False)
    missing = tmp_path / "captures" / "no-such-session"
    done = auditor_cli("restore", "-s", serial, str(missing), cwd=tmp_path)
    assert done.returncode != 0
    assert str(missing) in done.stderr


def test_restore_device_is_idempotent_in_process(
    make_world: WorldFactory, tmp_path: Path, ca_pem: bytes, proxy_port: int
) -> None:
    world, serial = make_world("pixel-android14", traffic=False)
    before = device_state(world)
    h = Handset(serial)
    journal = RestoreJournal.in_session(tmp_path)
    CaptureSetup(h, journal, proxy_port=proxy_port, ca="system", ca_pem=ca_pem).apply()
    assert device_state(world) != before
    first = restore_device(h, journal)
    assert first.ok and len(first.undone) == len(journal.changes())
    assert device_state(world) == before
    second = restore_device(h, journal)
    assert second.ok and second.undone == []
    assert device_state(world) == before

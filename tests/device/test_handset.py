"""auditor.device.handset: the pure helpers, then a virtual handset through a real adb server."""

from __future__ import annotations

import os
import threading
import time

import pytest

from auditor.device.handset import (
    STATE_HINTS,
    DeviceListing,
    Handset,
    ShellResult,
    list_devices,
    transport_of,
)
from auditor.device.profile import imei_calls
from auditor.errors import DeviceError
from tests.e2e.conftest import WorldFactory, adb_server, make_world
from tests.vhandset.adb_fixtures import AdbServer, wait_until

__all__ = ["adb_server", "make_world"]  # fixtures, used by name

FIVE_MIB = 5 * 1024 * 1024
SHELL_PKG = "s16 com.android.shell"


# ------------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("serial", "transport"),
    [
        ("emulator-5554", "emulator"),
        ("127.0.0.1:5555", "tcp"),
        ("192.168.1.20:37123", "tcp"),
        ("localhost:5555", "tcp"),
        ("[::1]:5555", "tcp"),
        ("R58M12ABCDE", "usb"),
        ("3f9a2c71", "usb"),
        ("odd:name", "usb"),
    ],
)
def test_transport_of(serial: str, transport: str) -> None:
    assert transport_of(serial) == transport


def test_transport_of_wireless_debugging_serial_is_tcp() -> None:
    assert transport_of("adb-5C061JEA327610-bo0E0q._adb-tls-connect._tcp") == "tcp"


def test_every_state_hint_says_what_to_do() -> None:
    assert {"unauthorized", "offline", "no permissions"} <= set(STATE_HINTS)
    for state, hint in STATE_HINTS.items():
        assert hint.strip() and "\n" not in hint, state
    assert "Allow USB debugging" in STATE_HINTS["unauthorized"]


def test_device_listing_to_dict_has_every_field() -> None:
    listing = DeviceListing("127.0.0.1:5555", "device", "Pixel 7", "panther", "tcp", 3, None)
    assert listing.to_dict() == {
        "serial": "127.0.0.1:5555",
        "state": "device",
        "model": "Pixel 7",
        "product": "panther",
        "transport": "tcp",
        "transport_id": 3,
        "hint": None,
    }


def test_shell_result_check_passes_on_success() -> None:
    ok = ShellResult("true", 0, "", "")
    assert ok.ok and ok.check() is ok


def test_shell_result_check_names_the_command_status_and_last_stderr_line() -> None:
    r = ShellResult("ls /nope", 1, "", "warning: first\nls: /nope: No such file or directory\n")
    assert not r.ok
    with pytest.raises(DeviceError) as err:
        r.check()
    assert str(err.value) == "`ls /nope` failed (1): ls: /nope: No such file or directory"


def test_shell_result_check_falls_back_to_stdout_and_to_nothing() -> None:
    # Over shell v1 the error text arrives in stdout.
    with pytest.raises(DeviceError, match=r"^`cmd x` failed \(255\): Error: bad$"):
        ShellResult("cmd x", 255, "Error: bad\n", "").check()
    with pytest.raises(DeviceError) as err:
        ShellResult("false", 1, "", "").check()
    assert str(err.value) == "`false` failed (1): "


@pytest.mark.parametrize("sdk", [None, 23, 28])
def test_imei_calls_before_android_10_try_the_plain_call_first(sdk: int | None) -> None:
    assert imei_calls(sdk) == [
        "service call iphonesubinfo 1",
        f"service call iphonesubinfo 1 {SHELL_PKG}",
    ]


@pytest.mark.parametrize("sdk", [29, 30, 34])
def test_imei_calls_from_android_10_always_pass_the_calling_package(sdk: int) -> None:
    calls = imei_calls(sdk)
    assert calls == [
        f"service call iphonesubinfo 1 {SHELL_PKG}",
        f"service call iphonesubinfo 4 i32 0 {SHELL_PKG}",
    ]
    assert all(c.endswith(SHELL_PKG) for c in calls)


# --------------------------------------------------- a virtual handset through the adb server


@pytest.mark.e2e
def test_listing_and_handset_of_an_unauthorized_device_give_the_hint(
    make_world: WorldFactory,
) -> None:
    _, serial = make_world(state="unauthorized", unauthorized=True, traffic=False)
    listing = {d.serial: d for d in list_devices()}[serial]
    assert (listing.state, listing.transport) == ("unauthorized", "tcp")
    assert listing.hint == STATE_HINTS["unauthorized"]
    with pytest.raises(DeviceError) as err:
        Handset(serial)
    assert str(err.value) == f"device {serial} is unauthorized: {STATE_HINTS['unauthorized']}"


@pytest.mark.e2e
def test_handset_of_an_absent_serial_says_not_connected(adb_server: AdbServer) -> None:
    with pytest.raises(DeviceError, match=r"device 127\.0\.0\.1:1 is not connected"):
        Handset("127.0.0.1:1")


@pytest.mark.e2e
def test_listing_of_an_online_device(make_world: WorldFactory) -> None:
    world, serial = make_world(traffic=False)
    listing = {d.serial: d for d in list_devices()}[serial]
    props = world.device.profile.props
    assert (listing.state, listing.transport, listing.hint) == ("device", "tcp", None)
    assert listing.model == props["ro.product.model"].replace(" ", "_")
    assert listing.product == props["ro.product.name"]
    assert isinstance(listing.transport_id, int)


@pytest.mark.e2e
def test_shell_keeps_stdout_stderr_and_status_apart(make_world: WorldFactory) -> None:
    world, serial = make_world(traffic=False)
    h = Handset(serial)
    r = h.sh("getprop ro.product.model; echo oops >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (
        3,
        world.device.profile.props["ro.product.model"] + "\n",
        "oops\n",
    )
    with pytest.raises(DeviceError, match=r"^`cat /no/such` failed \(1\): .*No such file"):
        h.sh("cat /no/such").check()


@pytest.mark.e2e
def test_root_is_found_by_su_and_refused_without_it(make_world: WorldFactory) -> None:
    _, rooted = make_world("xiaomi-mi10t", traffic=False)
    h = Handset(rooted)
    assert h.root_method() == "su"
    assert h.su("id -u").stdout.strip() == "0"
    assert h.sh("id -u").stdout.strip() == "2000"
    _, plain = make_world("huawei-p40", traffic=False)
    p = Handset(plain)
    assert p.root_method() is None
    with pytest.raises(DeviceError, match="needs root"):
        p.su("id -u")


@pytest.mark.e2e
def test_push_and_pull_5_mib_byte_exact(make_world: WorldFactory) -> None:
    world, serial = make_world(traffic=False)
    h = Handset(serial)
    blob = os.urandom(FIVE_MIB)
    remote = "/data/local/tmp/auditor-roundtrip.bin"
    h.push_bytes(blob, remote)
    assert world.device.vfs.read(remote) == blob  # what the phone holds, not what we sent
    assert h.pull_bytes(remote) == blob
    assert h.sh(f"wc -c < {remote}").stdout.strip() == str(FIVE_MIB)
    with pytest.raises(DeviceError, match="/data/local/tmp/none"):
        h.pull_bytes("/data/local/tmp/none")


@pytest.mark.e2e
def test_settings_and_reverse_reach_the_device(make_world: WorldFactory) -> None:
    world, serial = make_world(traffic=False)
    h = Handset(serial)
    assert h.setting_get("global", "http_proxy") is None
    h.setting_put("global", "http_proxy", "127.0.0.1:8099")
    assert world.device.settings["global"]["http_proxy"] == "127.0.0.1:8099"
    assert h.setting_get("global", "http_proxy") == "127.0.0.1:8099"
    h.setting_put("global", "http_proxy", None)
    assert "http_proxy" not in world.device.settings["global"]

    h.reverse("tcp:18099", "tcp:18100")
    assert world.device.reverse == {"tcp:18099": "tcp:18100"}
    assert h.reverse_list() == {"tcp:18099": "tcp:18100"}
    h.reverse_remove("tcp:18099")
    h.reverse_remove("tcp:18099")  # already gone: nothing to do, no error
    assert world.device.reverse == {} and h.reverse_list() == {}


@pytest.mark.e2e
def test_reboot_returns_after_boot_completed_drops_tmpfs_keeps_settings(
    make_world: WorldFactory,
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    dev = world.device
    h = Handset(serial)
    h.su("mkdir -p /data/local/tmp/mnt && mount -t tmpfs tmpfs /data/local/tmp/mnt").check()
    assert " /data/local/tmp/mnt tmpfs " in dev.run("cat /proc/mounts").stdout.decode()
    h.setting_put("global", "auditor_persist", "kept")
    boots = dev.boot_count

    started = time.monotonic()
    took = h.reboot(timeout=30)

    assert dev.boot_count == boots + 1
    assert dev.props.get("sys.boot_completed") == "1"
    assert 0 < took <= time.monotonic() - started + 0.01
    assert took >= dev.profile.boot_seconds  # it did wait for the boot, not just return
    mounts = dev.run("cat /proc/mounts").stdout.decode()
    assert "/data/local/tmp/mnt" not in mounts
    assert dev.settings["global"]["auditor_persist"] == "kept"
    assert h.getprop("sys.boot_completed") == "1"
    assert h.setting_get("global", "auditor_persist") == "kept"


@pytest.mark.e2e
def test_without_a_serial_the_only_online_device_is_chosen(
    adb_server: AdbServer, make_world: WorldFactory
) -> None:
    assert wait_until(lambda: adb_server.states() == {}, 5.0), adb_server.states()
    _, locked = make_world(state="unauthorized", unauthorized=True, traffic=False)
    _, first = make_world("huawei-p40", traffic=False)
    assert Handset().serial == first  # the unauthorized one is not a candidate
    _, second = make_world("oneplus-8t", traffic=False)
    with pytest.raises(DeviceError, match="choose one with -s SERIAL") as err:
        Handset()
    for serial, state in ((locked, "unauthorized"), (first, "device"), (second, "device")):
        assert f"{serial} ({state})" in str(err.value)


@pytest.mark.e2e
def test_a_device_lost_mid_command_is_a_device_error(
    adb_server: AdbServer, make_world: WorldFactory
) -> None:
    _, serial = make_world(traffic=False)
    h = Handset(serial)
    unplug = threading.Timer(0.5, adb_server.text, ("disconnect", serial))
    unplug.start()
    try:
        with pytest.raises(DeviceError, match=serial):
            h.sh("sleep 5; echo done", timeout=10)
    finally:
        unplug.join(10)

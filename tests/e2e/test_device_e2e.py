"""The auditor CLI and the adb CLI driving the virtual handset through a real adb server.

The virtual handset is reached only as a phone would be: ``adb connect``, then the adb server.
What auditor reports is compared with the profile the handset was built from, and what the adb
CLI does is checked on the handset's own state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import WorldFactory
from tests.vhandset.adb_fixtures import AdbServer, free_port
from vhandset.profiles import list_profiles

pytestmark = pytest.mark.e2e

PROFILES = ["huawei-p40", "oneplus-8t", "pixel-android14", "xiaomi-mi10t"]
ROOTED = {"xiaomi-mi10t": True, "pixel-android14": True, "huawei-p40": False, "oneplus-8t": False}


def auditor_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``auditor ...`` in a child process, with the fixture's ANDROID_ADB_SERVER_PORT."""
    return subprocess.run(
        [sys.executable, "-m", "auditor.cli", *args],
        cwd=cwd,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def profile_json(serial: str) -> dict[str, Any]:
    done = auditor_cli("profile", "-s", serial, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_shipped_profiles_are_the_ones_tested() -> None:
    assert sorted(list_profiles()) == PROFILES


# ------------------------------------------------------------------------------------ devices


def test_devices_lists_the_virtual_handset(adb_server: AdbServer, make_world: WorldFactory) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    model = world.device.profile.props["ro.product.model"]

    done = auditor_cli("devices", "--json")
    assert done.returncode == 0, done.stderr
    listed = {d["serial"]: d for d in json.loads(done.stdout)}
    assert listed[serial]["state"] == "device"
    assert listed[serial]["model"] == model
    assert listed[serial]["transport"] == "tcp"
    assert listed[serial]["hint"] is None

    table = auditor_cli("devices")
    assert f"{serial}\tdevice\t{model}\ttcp" in table.stdout.splitlines()

    adb_line = next(
        line for line in adb_server.text("devices", "-l").splitlines() if line.startswith(serial)
    )
    assert adb_line.split()[1] == "device"
    assert f"model:{model}" in adb_line.split()


def test_an_unauthorized_handset_is_listed_with_a_hint_and_refused(
    make_world: WorldFactory,
) -> None:
    _, serial = make_world("xiaomi-mi10t", state="unauthorized", unauthorized=True, traffic=False)

    table = auditor_cli("devices")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    row = lines.index(next(line for line in lines if line.startswith(serial)))
    assert lines[row].split("\t")[1] == "unauthorized"
    assert lines[row + 1].startswith("  hint: ") and "Allow USB debugging" in lines[row + 1]

    done = auditor_cli("profile", "-s", serial)
    assert done.returncode != 0
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: device {serial} is unauthorized")


@pytest.mark.parametrize(
    "command", [["profile"], ["restore"], ["audit", "--scenario", "idle", "--ca", "none"]]
)
def test_a_serial_that_is_not_connected_is_a_clear_error(
    adb_server: AdbServer, tmp_path: Path, command: list[str]
) -> None:
    absent = f"127.0.0.1:{free_port()}"
    out = tmp_path / "captures"
    extra = ["--out", str(out)] if command[0] == "audit" else []
    done = auditor_cli(command[0], "-s", absent, *command[1:], *extra, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"error: device {absent} is not connected (see `auditor devices`)\n"
    assert not out.exists()


# ------------------------------------------------------------------------------------ profile


@pytest.mark.parametrize("name", PROFILES)
def test_profile_matches_the_handsets_profile_file(make_world: WorldFactory, name: str) -> None:
    world, serial = make_world(name, traffic=False)
    spec = world.device.profile
    p = profile_json(serial)

    assert p["serial"] == serial
    assert p["manufacturer"] == spec.props["ro.product.manufacturer"]
    assert p["model"] == spec.props["ro.product.model"]
    assert p["sdk"] == int(spec.props["ro.build.version.sdk"])
    assert p["virtual"] is True
    assert p["warnings"] == []

    assert (p["root"] is not None) is ROOTED[name] is spec.rooted
    ids = {i["name"]: i for i in p["identifiers"]}
    assert ids["android_id"]["value"] == spec.identifiers.android_id
    assert ids["serial"]["value"] == spec.identifiers.serial
    if p["root"]:
        assert ids["imei"]["value"] == spec.identifiers.imei
        assert ids["imei"]["source"].endswith("(as root)")
    else:
        assert spec.sdk >= 29
        assert ids["imei"]["value"] is None and ids["imei"]["reason"]
    for ident in p["identifiers"]:
        # read exactly, or unavailable with a reason: never anything in between
        if ident["value"] is None:
            assert ident["reason"], ident
        else:
            assert ident["value"] == getattr(spec.identifiers, ident["name"]), ident

    assert len(p["packages"]) == len(spec.packages)
    assert {x["name"]: x["uid"] for x in p["packages"]} == {x.name: x.uid for x in spec.packages}
    assert {x["name"] for x in p["packages"] if x["system"]} == {
        x.name for x in spec.packages if x.system
    }


def test_profile_without_root_reports_the_imei_unavailable_never_guessed(
    make_world: WorldFactory,
) -> None:
    world, serial = make_world("xiaomi-mi10t", root=False, traffic=False)
    imei = world.device.profile.identifiers.imei
    done = auditor_cli("profile", "-s", serial, "--json")
    assert done.returncode == 0, done.stderr
    p = json.loads(done.stdout)
    assert p["root"] is None
    ids = {i["name"]: i for i in p["identifiers"]}
    assert ids["imei"]["value"] is None
    assert "no root" in ids["imei"]["reason"]
    assert imei not in done.stdout
    assert ids["advertising_id"]["value"] is None and ids["advertising_id"]["reason"]
    assert ids["android_id"]["value"] == world.device.profile.identifiers.android_id
    assert p["user_ca_certs"] is None and p["user_ca_certs_reason"]

    table = auditor_cli("profile", "-s", serial)
    assert table.returncode == 0, table.stderr
    imei_row = next(line for line in table.stdout.splitlines() if line.startswith("imei"))
    assert "unavailable: " in imei_row


# -------------------------------------------------------------------------- the adb CLI alone


def test_the_adb_cli_shell_push_pull_and_reverse(
    adb_server: AdbServer, make_world: WorldFactory, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    dev = world.device

    def adb(*args: str) -> subprocess.CompletedProcess[bytes]:
        done = adb_server.adb("-s", serial, *args)
        assert done.returncode == 0, done.stderr
        return done

    model = adb("shell", "getprop", "ro.product.model").stdout.decode().strip()
    assert model == dev.profile.props["ro.product.model"]

    blob = os.urandom(1024 * 1024 + 17)
    (tmp_path / "up.bin").write_bytes(blob)
    adb("push", str(tmp_path / "up.bin"), "/data/local/tmp/up.bin")
    assert dev.vfs.read("/data/local/tmp/up.bin") == blob
    adb("pull", "/data/local/tmp/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == blob

    a, b = free_port(), free_port()
    adb("reverse", f"tcp:{a}", f"tcp:{b}")
    assert f"tcp:{a} tcp:{b}" in adb("reverse", "--list").stdout.decode()
    assert dev.reverse == {f"tcp:{a}": f"tcp:{b}"}
    adb("reverse", "--remove", f"tcp:{a}")
    assert f"tcp:{a}" not in adb("reverse", "--list").stdout.decode()
    assert dev.reverse == {}


# -------------------------------------------------------------------------------- scenarios


BAD_SCENARIO = """\
name: bad
description: the third step does not exist
steps:
  - idle: 1s
  - launch: com.android.settings
  - dance: {speed: 3}
"""

SHELL_SCENARIO = """\
name: with-shell
steps:
  - idle: 1s
  - shell: settings put global http_proxy 10.6.6.6:66
"""


def _untouched(world: Any) -> tuple[Any, ...]:
    dev = world.device
    return (
        {ns: dict(v) for ns, v in dev.settings.items()},
        dict(dev.reverse),
        dev.run("cat /proc/mounts").stdout,
    )


def test_audit_with_a_malformed_scenario_stops_before_anything(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = _untouched(world)
    bad = tmp_path / "BAD.yaml"
    bad.write_text(BAD_SCENARIO)
    out = tmp_path / "captures"

    done = auditor_cli("audit", "-s", serial, "--scenario", str(bad), "--out", str(out))

    assert done.returncode != 0
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: {bad}:6: step 3: unknown step 'dance'")
    assert not out.exists() or list(out.iterdir()) == []
    assert _untouched(world) == before


def test_audit_refuses_a_shell_step_without_allow_shell(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    before = _untouched(world)
    scenario = tmp_path / "shell.yaml"
    scenario.write_text(SHELL_SCENARIO)
    out = tmp_path / "captures"

    done = auditor_cli("audit", "-s", serial, "--scenario", str(scenario), "--out", str(out))

    assert done.returncode != 0
    assert done.stderr.startswith(f"error: {scenario}:4: step 2 (shell)")
    assert "--allow-shell" in done.stderr
    assert not out.exists() or list(out.iterdir()) == []
    assert _untouched(world) == before
    assert "http_proxy" not in world.device.settings["global"]

"""What auditor builds from real phones' command outputs (issue 14).

Every sample here was printed by a real handset; tests/device/samples/README.md says where
each comes from. The expected values were read by hand from the sample, at the line cited,
not from auditor's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.analysis.flowtable import SocketIndex
from auditor.device import parsers as p
from auditor.device.model import SocketState
from auditor.device.monitor import has_owner, snapshot_rows
from auditor.device.profile import (
    build_packages,
    country_code,
    device_locale,
    device_region,
    installed_and_factory,
    slot_countries,
    slot_values,
)

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


# --- Updated system apps: the installed version, not the factory one --------------------------

GMS = "com.google.android.gms"


def test_updated_play_services_keeps_the_installed_version() -> None:
    """madb's `dumpsys package com.google.android.gms` of an arm64 phone: the update in
    `Packages:` (line 16: versionName=11.0.62 (448-160311229), line 15: versionCode=11062448)
    comes before the factory copy in `Hidden system packages:` (lines 636-637: 9.0.83,
    9083448). The old profile kept the last block, the factory one."""
    dump = sample("dumpsys_package_gms_updated.txt")
    listing = f"package:/data/app/{GMS}-1/base.apk=" + GMS  # codePath of line 10
    (gms,) = build_packages(listing, f"package:{GMS}\n", dump)
    assert (gms.version_name, gms.version_code) == ("11.0.62 (448-160311229)", 11062448)
    assert (gms.factory_version_name, gms.factory_version_code) == (
        "9.0.83 (448-121911109)",
        9083448,
    )
    assert gms.updated_system_app and gms.system
    assert gms.uid == 10010  # userId=10010 (line 7), pm gave no uid
    assert gms.apk_path == f"/data/app/{GMS}-1/base.apk"


def test_the_order_of_the_two_sections_does_not_matter() -> None:
    """Some releases print `Hidden system packages:` first; the same two real blocks, swapped."""
    lines = sample("dumpsys_package_gms_updated.txt").splitlines(keepends=True)
    hidden_at = lines.index("Hidden system packages:\n")
    shared_at = lines.index("Shared users:\n")
    swapped = "".join(lines[hidden_at:shared_at] + lines[:hidden_at] + lines[shared_at:])
    details = p.parse_dumpsys_package(swapped).items
    assert [d.hidden_system for d in details] == [True, False]
    installed, factory = installed_and_factory(details)[GMS]
    assert installed is not None and installed.version_code == 11062448
    assert factory is not None and factory.version_code == 9083448
    (gms,) = build_packages(f"package:{GMS}", "", swapped)
    assert (gms.version_code, gms.factory_version_code) == (11062448, 9083448)


def test_a_system_app_never_updated_has_no_factory_version() -> None:
    dump = sample("dumpsys_package_gms_updated.txt")
    only_installed = dump.split("Hidden system packages:")[0]
    (gms,) = build_packages(f"package:{GMS}", "", only_installed)
    assert gms.factory_version_code is None and gms.factory_version_name is None
    # pkgFlags=[ SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA UPDATED_SYSTEM_APP ] (line 38)
    assert gms.updated_system_app and gms.system


# --- Android 10's APEX session line ------------------------------------------------------------


def test_android10_apex_session_line_is_not_an_unreadable_line() -> None:
    """MVT's androidqf dumpsys of a Samsung on Android 10: `  APEX session state:` (line 143)
    follows the last package. It used to count as one skipped, unreadable line."""
    raw = (SAMPLES / "androidqf_dumpsys_android10.txt").read_bytes()  # holds binary ABX bytes
    result = p.parse_dumpsys_package(raw)
    assert result.skipped == 0 and result.warnings == ()
    # lines 91 and 121, versionName at lines 101 and 130
    assert [(d.name, d.version_name) for d in result.items] == [
        ("com.samsung.android.provider.filterprovider", "5.0.07"),
        ("com.sec.android.app.DataCreate", "1.0"),
    ]


def test_an_indented_header_ends_the_package_but_later_sections_still_count() -> None:
    text = (
        "Packages:\n"
        "  Package [com.a] (1):\n"
        "    versionName=2.0\n"
        "  APEX session state:\n"
        "    session 7: staged=true\n"
        "  Hidden system packages:\n"
        "  Package [com.a] (2):\n"
        "    versionName=1.0\n"
    )
    result = p.parse_dumpsys_package(text)
    assert [(d.version_name, d.hidden_system) for d in result.items] == [
        ("2.0", False),
        ("1.0", True),
    ]
    assert result.skipped == 0


# --- TIME_WAIT sockets own no flow ------------------------------------------------------------


def _poll(**tables: str) -> str:
    return "".join(f"--auditor-proc-net--{name}\n{text}" for name, text in tables.items())


def test_time_wait_rows_of_a_real_phone_are_kept_apart_and_own_no_flow(tmp_path: Path) -> None:
    """/proc/net tables printed by xCrash on a phone (iqiyi/xCrash#65): tcp6 row 143 is a
    TIME_WAIT (st 06) of 192.168.0.100:52930 (`6400A8C0:CEC2`) with uid 0 and inode 0."""
    out = _poll(
        tcp=sample("proc_net_tcp_xcrash65.txt"),
        tcp6=sample("proc_net_tcp6_xcrash65.txt"),
        udp=sample("proc_net_udp_xcrash65.txt"),
    )
    owned, ownerless = snapshot_rows(out)
    assert ownerless == [
        ["tcp6", "192.168.0.100", 52930, "116.136.135.138", 443, "TIME_WAIT", 0, 0]
    ]
    assert len(owned) == 9 + 8  # tcp rows 0-8, the eight udp rows
    assert all(row[6] != 0 for row in owned)
    # tcp row 7: 127.0.0.1:45568 (B200) -> 127.0.0.1:50001 (C351), uid 10019, inode 23315778
    assert ["tcp", "127.0.0.1", 45568, "127.0.0.1", 50001, "ESTABLISHED", 10019, 23315778] in owned

    # What the analyser reads back: the TIME_WAIT port gives no owner, not root.
    snap = {"ts": "2026-01-01T00:00:00Z", "entries": owned, "ownerless": ownerless}
    path = tmp_path / "sockets.jsonl"
    path.write_text(json.dumps(snap) + "\n")
    index = SocketIndex.load(path)
    ts = index.times[0]
    assert index.by_port(ts, 52930) is None
    assert index.by_port(ts, 45568) == 10019
    # the same line as the old poller wrote it (the row among the entries): the analyser
    # skips it there too, where it used to give the flow to uid 0
    path.write_text(json.dumps({"ts": snap["ts"], "entries": owned + ownerless}) + "\n")
    assert SocketIndex.load(path).by_port(ts, 52930) is None
    assert SocketIndex.load(path).by_port(ts, 45568) == 10019


def test_time_wait_does_not_take_the_port_from_the_live_socket() -> None:
    """A port reused while its old connection lingers in TIME_WAIT: the live row keeps it."""
    live = sample("proc_net_tcp_xcrash65.txt").splitlines()[8]  # row 7, uid 10019
    time_wait = (
        "  9: 0100007F:B200 0100007F:C351 06 00000000:00000000 03:000014F5 00000000"
        "     0        0 0 3 0000000000000000"
    )
    owned, ownerless = snapshot_rows(_poll(tcp=f"{live}\n{time_wait}\n"))
    assert [(r[2], r[6]) for r in owned] == [(45568, 10019)]
    assert [(r[2], r[5]) for r in ownerless] == [(45568, "TIME_WAIT")]


@pytest.mark.parametrize(
    ("state", "uid", "inode", "owned"),
    [
        (0x06, 0, 0, False),  # TIME_WAIT, as the kernel prints it
        (0x06, 10019, 5, False),  # TIME_WAIT whatever the row says
        (0x05, 0, 0, False),  # FIN_WAIT2 orphan, no uid left (kernel before sk_uid)
        (0x05, 10019, 0, True),  # orphan that kept its uid
        (0x0C, 10019, 0, True),  # NEW_SYN_RECV: the listener's uid
        (0x0A, 0, 4242, True),  # root's own listener
    ],
)
def test_has_owner(state: int, uid: int, inode: int, owned: bool) -> None:
    row = (
        f"  0: 0100007F:B200 0100007F:C351 {state:02X} 00000000:00000000 00:00000000 00000000"
        f" {uid:5d}        0 {inode} 1 0000000000000000"
    )
    (entry,) = p.parse_proc_net(row, "tcp").items
    assert entry.state_code == state
    assert has_owner(entry) is owned
    if state == 0x06:
        assert entry.state is SocketState.TIME_WAIT


# --- Dual SIM: one operator and one country per SIM, one region ------------------------------


def test_pixel8_dual_sim_android16() -> None:
    """A Pixel 8 (Android 16) with two SIMs, openwrt1/TurboIMS getprop.txt. Lines 3-4 and 7-8:
    networks `China Telecom,China Unicom` in `cn,cn`, SIMs `中国电信,GLOBE` from `cn,ph`. The
    old profile's region was the raw `cn,cn`, its operator `中国电信,GLOBE`."""
    result = p.parse_getprop(sample("getprop_pixel8_dualsim.txt"))
    props = result.items
    assert result.skipped == 0
    assert props["persist.sys.boot.reason.history"].count("\n") == 1  # the two-line value
    warnings: list[str] = []
    assert device_region(props, warnings) == ("CN", "gsm.operator.iso-country")
    assert slot_values(props, "gsm.sim.operator.alpha") == ["中国电信", "GLOBE"]
    assert slot_countries(props, "gsm.sim.operator.iso-country", warnings) == ["CN", "PH"]
    assert slot_values(props, "gsm.operator.alpha") == ["China Telecom", "China Unicom"]
    assert slot_countries(props, "gsm.operator.iso-country", warnings) == ["CN", "CN"]
    assert device_locale(props) == "zh-Hans-CN"  # persist.sys.locale, line 15
    assert warnings == []


def test_kitkat_mediatek_dual_sim_keeps_the_second_slot_and_the_old_locale() -> None:
    """A MediaTek dual-SIM handset on Android 4.4.2 (mohammaddehnavi/huawei_g700 getprop.txt):
    slot 2 lives in `<key>.2` properties (`IR-MCI`), and the locale in persist.sys.language `en`
    and persist.sys.country `US` (lines 18 and 16). The old profile had the locale empty and
    the operator `Irancell` only."""
    props = p.parse_getprop(sample("getprop_kitkat_mtk_dualsim.txt")).items
    assert device_locale(props) == "en-US"
    assert slot_values(props, "gsm.sim.operator.alpha") == ["Irancell", "IR-MCI"]
    assert slot_countries(props, "gsm.sim.operator.iso-country", []) == ["IR", "IR"]
    assert device_region(props) == ("CN", "ro.miui.region")  # line 27, the ROM's region


@pytest.mark.parametrize(
    ("props", "operators", "countries", "region"),
    [
        # the values issue 14 quotes from its phones
        (
            {"gsm.operator.iso-country": "in,in", "gsm.operator.alpha": "Jio 4G,Jio 4G"},
            ["Jio 4G", "Jio 4G"],
            ["IN", "IN"],
            "IN",
        ),
        (
            {"gsm.operator.iso-country": "ca,", "gsm.operator.alpha": "Freedom,"},
            ["Freedom"],
            ["CA"],
            "CA",
        ),
        (
            {"gsm.operator.iso-country": ",kr", "gsm.operator.alpha": ",SK Telecom"},
            ["SK Telecom"],
            ["KR"],
            "KR",
        ),
        ({"gsm.operator.iso-country": "in,us"}, [], ["IN", "US"], None),  # slots disagree
        ({"gsm.operator.iso-country": ","}, [], [], None),
        ({"gsm.operator.iso-country": "india,"}, [], [], None),  # malformed: dropped
    ],
)
def test_slots_from_comma_joined_properties(
    props: dict[str, str], operators: list[str], countries: list[str], region: str | None
) -> None:
    warnings: list[str] = []
    assert slot_values(props, "gsm.operator.alpha") == operators
    assert slot_countries(props, "gsm.operator.iso-country", warnings) == countries
    assert device_region(props)[0] == region
    assert len(warnings) == ("india" in props["gsm.operator.iso-country"])


def test_region_is_validated_and_falls_back_to_the_sims() -> None:
    warnings: list[str] = []
    props = {
        "ro.miui.region": "GLOBAL",
        "persist.sys.country": "gb",
        "gsm.operator.iso-country": "fr",
    }
    assert device_region(props, warnings) == ("GB", "persist.sys.country")
    assert warnings == ["getprop ro.miui.region: 'GLOBAL' is not a country code, ignored"]
    props = {"gsm.operator.iso-country": "fr,de", "gsm.sim.operator.iso-country": "de,"}
    assert device_region(props) == ("DE", "gsm.sim.operator.iso-country")
    assert device_region({}) == (None, None)
    assert [country_code(v) for v in ("us", " US ", "u", "usa", "1a", "ÜS")] == [
        "US",
        "US",
        None,
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("props", "locale"),
    [
        ({"persist.sys.locale": "fr-FR", "persist.sys.language": "en"}, "fr-FR"),
        ({"persist.sys.language": "pt", "persist.sys.country": "BR"}, "pt-BR"),
        ({"persist.sys.language": "sr", "persist.sys.localevar": "Latn"}, "sr-Latn"),
        ({"ro.product.locale": "de-DE", "ro.product.locale.language": "en"}, "de-DE"),
        ({"ro.product.locale.language": "ru", "ro.product.locale.region": "RU"}, "ru-RU"),
        ({"ro.product.locale.region": "RU"}, ""),
        ({}, ""),
    ],
)
def test_locale_in_android_runtime_order(props: dict[str, str], locale: str) -> None:
    assert device_locale(props) == locale


def test_the_profile_of_the_pixel8_holds_lists_and_one_region() -> None:
    from auditor.device.profile import DeviceProfile, apply_telephony

    props = p.parse_getprop(sample("getprop_pixel8_dualsim.txt")).items
    profile = DeviceProfile(
        serial="x",
        collected_at="2026-01-01T00:00:00Z",
        manufacturer=props["ro.product.manufacturer"],
        brand=props["ro.product.brand"],
        model=props["ro.product.model"],
        device=props["ro.product.device"],
        android_release=props["ro.build.version.release"],
        sdk=36,
        fingerprint=props["ro.build.fingerprint"],
        security_patch=props["ro.build.version.security_patch"],
        build_type=props["ro.build.type"],
        region=None,
        locale=device_locale(props),
        virtual=False,
        root=None,
        root_detail="",
    )
    apply_telephony(profile, props)
    d = profile.to_dict()
    assert (d["region"], d["region_source"]) == ("CN", "gsm.operator.iso-country")
    assert d["sim_operators"] == ["中国电信", "GLOBE"] and d["sim_countries"] == ["CN", "PH"]
    assert d["network_operators"] == ["China Telecom", "China Unicom"]
    assert d["network_countries"] == ["CN", "CN"]
    assert profile.warnings == []
    json.dumps(d, ensure_ascii=False)  # the manifest's form


def test_the_poller_writes_the_ownerless_rows_apart(tmp_path: Path) -> None:
    """SocketPoller.snapshot on the same real tables, through a handset double that answers
    the poller's one shell command."""
    from types import SimpleNamespace
    from typing import Any, cast

    from auditor.device.monitor import PROC_NET, SocketPoller

    tables = {
        "tcp": sample("proc_net_tcp_xcrash65.txt"),
        "tcp6": sample("proc_net_tcp6_xcrash65.txt"),
        "udp": sample("proc_net_udp_xcrash65.txt"),
        "udp6": "",
    }
    commands: list[str] = []

    def sh(cmd: str, timeout: float = 0) -> SimpleNamespace:
        commands.append(cmd)
        return SimpleNamespace(stdout=_poll(**{name: tables[name] for name in PROC_NET}))

    poller = SocketPoller(cast(Any, SimpleNamespace(sh=sh)), tmp_path)
    snap = poller.snapshot()
    assert len(commands) == 1 and all(f"/proc/net/{name}" in commands[0] for name in PROC_NET)
    assert isinstance(snap["entries"], list) and len(snap["entries"]) == 17
    assert snap["ownerless"] == [
        ["tcp6", "192.168.0.100", 52930, "116.136.135.138", 443, "TIME_WAIT", 0, 0]
    ]

"""Shipped device profiles load, validate and look like the phones they describe."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from vhandset.profiles import (
    PROFILE_DIR,
    ProfileError,
    SuFlavor,
    list_profiles,
    load_profile,
    luhn_valid,
)

SHIPPED = list_profiles()


def luhn_ok(number: str) -> bool:
    """An independent Luhn check: double every second digit from the right."""
    digits = [int(c) for c in number]
    checksum = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        checksum += d
    return checksum % 10 == 0


def test_the_four_profiles_ship():
    assert SHIPPED == ["huawei-p40", "oneplus-8t", "pixel-android14", "xiaomi-mi10t"]


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_loads_with_valid_identifiers(name):
    profile = load_profile(name)
    ids = profile.identifiers
    for imei in filter(None, (ids.imei, ids.imei2)):
        assert re.fullmatch(r"\d{15}", imei)
        assert luhn_ok(imei), imei
    assert re.fullmatch(r"[0-9a-f]{16}", ids.android_id)
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", ids.wifi_mac)
    assert "synthetic" in profile.source.lower() or "invented" in profile.source.lower()


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_has_required_props(name):
    props = load_profile(name).props
    for key in (
        "ro.product.brand",
        "ro.product.manufacturer",
        "ro.product.model",
        "ro.product.name",
        "ro.product.device",
        "ro.product.locale",
        "ro.build.fingerprint",
        "ro.build.type",
        "ro.build.version.release",
        "ro.build.version.sdk",
        "ro.build.version.security_patch",
        "ro.boot.serialno",
        "persist.sys.timezone",
        "gsm.sim.operator.alpha",
        "gsm.sim.operator.numeric",
        "gsm.operator.iso-country",
    ):
        assert props.get(key), key
    assert props["ro.auditor.virtual"] == "1"
    release, sdk = props["ro.build.version.release"], int(props["ro.build.version.sdk"])
    assert {29: "10", 30: "11", 34: "14"}[sdk] == release
    # the fingerprint names the same release and build type as the separate properties
    fingerprint = props["ro.build.fingerprint"]
    assert f":{release}/" in fingerprint
    assert fingerprint.endswith(f":{props['ro.build.type']}/{props['ro.build.tags']}")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", props["ro.build.version.security_patch"])


@pytest.mark.parametrize("name", SHIPPED)
def test_app_uids_are_unique_and_shared_users_consistent(name):
    profile = load_profile(name)
    owners: dict[int, set[str]] = defaultdict(set)
    for pkg in profile.packages:
        owners[pkg.uid].add(pkg.shared_user or pkg.name)
        assert pkg.uid >= 10000 or pkg.shared_user, pkg.name
    clashes = {uid: who for uid, who in owners.items() if len(who) > 1}
    assert not clashes
    names = [p.name for p in profile.packages]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", SHIPPED)
def test_apk_paths_follow_the_android_version(name):
    profile = load_profile(name)
    for pkg in profile.packages:
        assert pkg.path.endswith(".apk")
        if pkg.path.startswith("/data/app/"):
            if profile.sdk >= 30:
                assert re.fullmatch(
                    rf"/data/app/~~[\w=-]+/{re.escape(pkg.name)}-[\w=-]+/base\.apk", pkg.path
                )
            else:
                assert re.fullmatch(rf"/data/app/{re.escape(pkg.name)}-[\w=-]+/base\.apk", pkg.path)
        if pkg.launchable:
            assert pkg.activity and pkg.component and pkg.component.startswith(pkg.name + "/")


def test_xiaomi_is_a_rooted_user_build_with_miui_telemetry_packages():
    profile = load_profile("xiaomi-mi10t")
    assert profile.props["ro.product.model"] == "M2007J3SG"
    assert profile.props["ro.product.device"] == "apollo"
    assert profile.sdk == 29
    assert profile.build_type == "user"
    assert profile.su is SuFlavor.MAGISK and not profile.adb_root
    installed = {p.name for p in profile.packages}
    assert {
        "com.miui.analytics",
        "com.miui.msa.global",
        "com.xiaomi.xmsf",
        "com.miui.daemon",
        "com.miui.securitycenter",
        "com.android.browser",
        "com.miui.cloudservice",
        "com.xiaomi.discover",
        "com.miui.weather2",
        "com.google.android.gms",
        "com.android.vending",
        "com.android.chrome",
    } <= installed
    assert any(not p.system for p in profile.packages)


def test_huawei_has_no_google_services():
    profile = load_profile("huawei-p40")
    names = {p.name for p in profile.packages}
    assert not any(n.startswith("com.google.") for n in names)
    assert sum(n.startswith("com.huawei.") for n in names) >= 5
    assert profile.props["ro.product.model"] == "ANA-NX9"
    assert not profile.rooted


def test_oneplus_is_android_11():
    profile = load_profile("oneplus-8t")
    assert profile.props["ro.product.model"] == "KB2003"
    assert profile.sdk == 30


def test_pixel_is_userdebug_with_adb_root():
    profile = load_profile("pixel-android14")
    assert profile.sdk == 34
    assert profile.build_type == "userdebug"
    assert profile.props["ro.debuggable"] == "1"
    assert profile.adb_root and profile.su is SuFlavor.AOSP
    assert profile.su_path == "/system/xbin/su"


def test_luhn():
    assert luhn_valid("490154203237518")
    assert not luhn_valid("490154203237519")
    assert not luhn_valid("49015420323751x")


def test_with_root_adds_and_removes_su():
    huawei = load_profile("huawei-p40")
    assert huawei.with_root(True).su is SuFlavor.MAGISK
    assert load_profile("xiaomi-mi10t").with_root(False).su_path is None


def test_unknown_profile_names_the_shipped_ones():
    with pytest.raises(ProfileError, match="xiaomi-mi10t"):
        load_profile("nokia-3310")


def _broken_copy(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((PROFILE_DIR / "xiaomi-mi10t.yaml").read_text())
    edit(raw)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_bad_imei_is_refused(tmp_path):
    def edit(raw):
        raw["identifiers"]["imei"] = "864132058957348"

    with pytest.raises(ProfileError, match="Luhn"):
        load_profile(_broken_copy(tmp_path, edit))


def test_a_uid_clash_is_refused(tmp_path):
    def edit(raw):
        raw["packages"][-1]["uid"] = raw["packages"][-2]["uid"]

    with pytest.raises(ProfileError, match="already belongs"):
        load_profile(_broken_copy(tmp_path, edit))


def test_adb_root_on_a_user_build_is_refused(tmp_path):
    def edit(raw):
        raw["adb_root"] = True

    with pytest.raises(ProfileError, match="userdebug"):
        load_profile(_broken_copy(tmp_path, edit))


def test_a_missing_property_is_refused(tmp_path):
    def edit(raw):
        del raw["props"]["ro.build.fingerprint"]

    with pytest.raises(ProfileError, match=r"ro\.build\.fingerprint"):
        load_profile(_broken_copy(tmp_path, edit))

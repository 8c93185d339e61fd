"""The simulated phone: Android command formats, state that changes as on a phone, the
DeviceBackend contract, and adbutils' own parsers run against it."""

from __future__ import annotations

import dataclasses
import datetime
import errno
import ipaddress
import re
import struct
import threading
import time
import zlib

import pytest
from adbutils._utils import list2cmdline
from adbutils.shell import ShellExtension

from vhandset.android import subject_hash_old
from vhandset.device import VirtualDevice
from vhandset.interface import STDOUT, DeviceBackend
from vhandset.profiles import CaSpec, load_profile
from vhandset.state import parcel_dump, synthetic_ca

FAST_BOOT = 0.15


def make(name: str, **kwargs) -> VirtualDevice:
    profile = dataclasses.replace(load_profile(name), boot_seconds=FAST_BOOT)
    return VirtualDevice(profile, **kwargs)


@pytest.fixture
def xiaomi() -> VirtualDevice:
    return make("xiaomi-mi10t")


@pytest.fixture
def pixel() -> VirtualDevice:
    return make("pixel-android14")


@pytest.fixture
def huawei() -> VirtualDevice:
    return make("huawei-p40")


def reboot_and_wait(dev: VirtualDevice) -> None:
    dev.reboot()
    assert not dev.online
    assert dev.wait_online(5)


class AdbutilsView(ShellExtension):
    """adbutils' shell helpers (app_info, app_current, ...) over the virtual device."""

    def __init__(self, dev: VirtualDevice) -> None:
        self.dev = dev

    def shell(self, cmdargs, **_: object) -> str:
        if isinstance(cmdargs, list | tuple):
            cmdargs = list2cmdline(cmdargs)
        result = self.dev.run(cmdargs)
        return (result.stdout + result.stderr).decode().rstrip()

    @property
    def sync(self):
        raise NotImplementedError


# ---- the DeviceBackend contract --------------------------------------------------------------


def test_is_a_device_backend(xiaomi):
    backend: DeviceBackend = xiaomi
    assert backend.serial == "3f9a2c71"
    assert backend.online and backend.authorized
    assert backend.banner_props() == {
        "ro.product.name": "apollo_eea",
        "ro.product.model": "M2007J3SG",
        "ro.product.device": "apollo",
    }


def test_serial_override_and_unauthorized_mode():
    dev = make("oneplus-8t", serial="emulator-5554", unauthorized=True)
    assert dev.serial == "emulator-5554"
    assert not dev.authorized
    assert dev.run("getprop ro.serialno").out == "emulator-5554\n"
    dev.authorize()
    assert dev.authorized


def test_reverse_table_and_transport_are_kept(xiaomi):
    xiaomi.reverse_changed({"tcp:8080": "tcp:8080"})
    assert xiaomi.reverse == {"tcp:8080": "tcp:8080"}
    with pytest.raises(ConnectionRefusedError):
        xiaomi.open_reverse("tcp:8080")

    class Opener:
        def open(self, device_spec: str):
            return ("opened", device_spec)

    xiaomi.attach_transport(Opener())
    assert xiaomi.open_reverse("tcp:8080") == ("opened", "tcp:8080")


# ---- root ------------------------------------------------------------------------------------


def test_adb_root_is_refused_on_a_production_build(xiaomi):
    assert xiaomi.adb_root() == (False, "adbd cannot run as root in production builds\n")
    assert xiaomi.adb_unroot() == (False, "adbd not running as root\n")
    assert xiaomi.run("id -u").out == "2000\n"


def test_adb_root_on_userdebug_runs_shells_as_root(pixel):
    assert pixel.run("id -u").out == "2000\n"
    assert pixel.adb_root() == (True, "restarting adbd as root\n")
    assert pixel.adb_root() == (False, "adbd is already running as root\n")
    assert pixel.run("id").out.startswith("uid=0(root) gid=0(root)")
    assert pixel.run("getprop service.adb.root").out == "1\n"
    assert pixel.fs.listdir("/data/misc/user/0/cacerts-added") == []
    assert pixel.adb_unroot() == (True, "restarting adbd as non root\n")
    assert pixel.run("whoami").out == "shell\n"
    assert pixel.fs.listdir("/data/misc/user/0/cacerts-added") is None


def test_magisk_su_forms(xiaomi):
    assert (
        xiaomi.run("su -c id").out
        == "uid=0(root) gid=0(root) groups=0(root) context=u:r:magisk:s0\n"
    )
    assert xiaomi.run("su 0 id -u").out == "0\n"
    assert xiaomi.run("su root sh -c 'whoami; id -u'").out == "root\n0\n"
    assert xiaomi.run("echo 'id -u' | su").out == "0\n"
    assert xiaomi.run("which su").out == "/sbin/su\n"


def test_aosp_su_has_no_dash_c(pixel):
    assert pixel.run("su 0 id -u").out == "0\n"
    assert pixel.run("su root sh -c 'id -u'").out == "0\n"
    result = pixel.run("su -c id")
    assert (result.exit_code, result.err) == (1, "su: invalid uid/gid '-c'\n")


def test_su_is_missing_on_an_unrooted_phone(huawei):
    result = huawei.run("su -c id; echo X4EXIT:$?")
    assert result.err == "/system/bin/sh: su: inaccessible or not found\n"
    assert result.out == "X4EXIT:127\n"


def test_root_override_installs_or_removes_su():
    assert make("huawei-p40", root=True).run("su -c 'id -u'").out == "0\n"
    oneplus = make("oneplus-8t", root=True)  # Android 11: Magisk's su sits in /system/bin
    assert oneplus.run("which su; su -c 'id -u'").out == "/system/bin/su\n0\n"
    assert make("xiaomi-mi10t", root=False).run("su -c id").exit_code == 127


# ---- settings --------------------------------------------------------------------------------


def test_settings_persist_across_reboot(xiaomi):
    assert xiaomi.run("settings get global http_proxy").out == "null\n"
    xiaomi.run("settings put global http_proxy 192.168.1.10:8080")
    xiaomi.run("settings put secure private_thing 1; settings put system font_scale 1.3")
    assert xiaomi.run("settings get global http_proxy").out == "192.168.1.10:8080\n"
    reboot_and_wait(xiaomi)
    assert xiaomi.run("settings get global http_proxy").out == "192.168.1.10:8080\n"
    assert xiaomi.run("settings get system font_scale").out == "1.3\n"
    assert xiaomi.run("settings delete global http_proxy").out == "Deleted 1 rows\n"
    assert xiaomi.run("settings delete global http_proxy").out == "Deleted 0 rows\n"
    assert xiaomi.run("settings get global http_proxy").out == "null\n"


def test_settings_list_is_sorted_key_value_lines(xiaomi):
    xiaomi.run("settings put global private_dns_mode hostname")
    lines = xiaomi.run("settings list global").out.splitlines()
    assert lines == sorted(lines)
    assert all(re.fullmatch(r"[\w.]+=.*", line) for line in lines)
    assert "private_dns_mode=hostname" in lines
    assert xiaomi.run("settings get secure android_id").out == "5093efbfa90f7649\n"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("settings get nonsense key", "Invalid namespace 'nonsense'\n"),
        ("settings fetch global key", "Invalid command: fetch\n"),
        ("settings get global", "Bad arguments\n"),
        ("settings get global a b", "Too many arguments\n"),
    ],
)
def test_settings_errors_as_settings_provider_prints_them(xiaomi, command, message):
    result = xiaomi.run(command)
    assert (result.exit_code, result.out, result.err) == (255, "", message)


def test_airplane_mode(xiaomi):
    assert xiaomi.run("cmd connectivity airplane-mode").out == "disabled\n"
    xiaomi.run("cmd connectivity airplane-mode enable")
    assert xiaomi.run("settings get global airplane_mode_on").out == "1\n"
    assert xiaomi.run("cmd connectivity airplane-mode").out == "enabled\n"
    result = xiaomi.run(
        "settings put global airplane_mode_on 0; "
        "am broadcast -a android.intent.action.AIRPLANE_MODE --ez state false"
    )
    assert result.out == (
        "Broadcasting: Intent { act=android.intent.action.AIRPLANE_MODE flg=0x400000"
        " (has extras) }\n"
        "Broadcast completed: result=0\n"
    )
    assert xiaomi.run("cmd connectivity airplane-mode").out == "disabled\n"


# ---- properties ------------------------------------------------------------------------------


def test_getprop_lists_sorted_bracketed_pairs(xiaomi):
    lines = xiaomi.run("getprop").out.splitlines()
    pairs = [re.fullmatch(r"\[([^\]]+)\]: \[(.*)\]", line) for line in lines]
    assert all(pairs)
    keys = [m.group(1) for m in pairs if m]
    assert keys == sorted(keys)
    props = {m.group(1): m.group(2) for m in pairs if m}
    assert props["ro.product.model"] == "M2007J3SG"
    assert props["sys.boot_completed"] == "1"
    assert props["ro.auditor.virtual"] == "1"
    assert xiaomi.run("getprop ro.miui.ui.version.name").out == "V12\n"
    assert xiaomi.run("getprop no.such.prop").out == "\n"


def test_setprop(xiaomi):
    result = xiaomi.run("setprop ro.product.model X; echo X4EXIT:$?")
    assert result.err == "setprop: failed to set property 'ro.product.model' to 'X'\n"
    assert result.out == "X4EXIT:1\n"
    xiaomi.run("setprop debug.auditor 1; su -c 'setprop persist.auditor.mark yes'")
    assert xiaomi.run("getprop debug.auditor").out == "1\n"
    reboot_and_wait(xiaomi)
    assert xiaomi.run("getprop debug.auditor").out == "\n"
    assert xiaomi.run("getprop persist.auditor.mark").out == "yes\n"


# ---- packages --------------------------------------------------------------------------------

# AOSP PackageManagerShellCommand.runListPackages: "package:" [sourceDir "="] name
# [" versionCode:" N] ["  installer=" NAME] [" uid:" UID]
LIST_LINE = re.compile(
    r"package:(?P<path>/\S+\.apk)=(?P<name>[\w.]+)(?: versionCode:(?P<vc>\d+))?"
    r"  installer=(?P<installer>[\w.]+) uid:(?P<uid>\d+)"
)


def test_pm_list_packages_matches_aosp_format(pixel):
    lines = pixel.run("pm list packages -f -i -U --show-versioncode").out.splitlines()
    parsed = [LIST_LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    rows = {m.group("name"): m for m in parsed if m}
    chrome = rows["com.android.chrome"]
    assert chrome.group("path").startswith("/data/app/~~") and chrome.group("path").endswith(
        "/base.apk"
    )
    assert chrome.group("installer") == "com.android.vending"
    assert chrome.group("uid") == "10159"
    assert rows["android"].group("installer") == "null"
    assert pixel.run("pm list packages com.whatsapp").out == "package:com.whatsapp\n"
    assert pixel.run("cmd package list packages -3").out == pixel.run("pm list packages -3").out


def test_pm_list_filters(xiaomi):
    third = xiaomi.run("pm list packages -3").out.splitlines()
    assert third == ["package:com.whatsapp", "package:com.spotify.music"]
    system = xiaomi.run("pm list packages -s").out.splitlines()
    assert "package:com.miui.analytics" in system and "package:com.whatsapp" not in system
    result = xiaomi.run("pm list packages -q")
    assert (result.exit_code, result.err) == (255, "Error: Unknown option: -q\n")


def test_pm_path(xiaomi):
    assert xiaomi.run("pm path com.miui.analytics").out == (
        "package:/system/app/AnalyticsCore/AnalyticsCore.apk\n"
    )
    missing = xiaomi.run("pm path com.example.none")
    assert (missing.exit_code, missing.out) == (1, "")
    assert xiaomi.fs.read("/system/app/AnalyticsCore/AnalyticsCore.apk").startswith(b"PK")


def test_dumpsys_package_fields(xiaomi):
    text = xiaomi.run("dumpsys package com.android.chrome").out
    assert "Packages:\n  Package [com.android.chrome] (" in text
    fields = dict(
        re.findall(r"^\s+(userId|versionName|codePath|installerPackageName)=(.*)$", text, re.M)
    )
    assert fields == {
        "userId": "10146",
        "versionName": "86.0.4240.185",
        "codePath": "/data/app/com.android.chrome-Vn2sLq8xT0eR5kJw7pYb3g==",
        "installerPackageName": "com.android.vending",
    }
    assert re.search(r"^    versionCode=424018537 minSdk=24 targetSdk=30$", text, re.M)
    assert (
        "pkgFlags=[ SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA UPDATED_SYSTEM_APP ALLOW_BACKUP ]" in text
    )
    first = re.search(r"firstInstallTime=(.*)", text)
    assert first and datetime.datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S")


def test_adbutils_parses_package_and_foreground_info(xiaomi):
    view = AdbutilsView(xiaomi)
    info = view.app_info("com.whatsapp")
    assert info is not None
    assert (info.version_name, info.version_code) == ("2.20.206.24", 452279)
    assert info.path == "/data/app/com.whatsapp-Hc9Pz1Xy4Tq2Lm6Rn8Vd0w==/base.apk"
    assert info.flags == ["HAS_CODE", "ALLOW_CLEAR_USER_DATA", "ALLOW_BACKUP"]
    assert info.first_install_time.year == 2020 and info.signature
    assert view.app_info("com.example.none") is None
    assert "com.miui.analytics" in view.list_packages()
    view.app_start("com.whatsapp")
    current = view.app_current()
    assert (current.package, current.activity) == ("com.whatsapp", ".Main")
    view.app_stop("com.whatsapp")
    assert view.app_current().package == "com.miui.home"
    assert view.getprop("ro.product.device") == "apollo"
    assert tuple(view.window_size()) == (1080, 2400)
    assert view.rotation() == 0
    assert view.wlan_ip() == "192.168.1.23"
    assert view.battery().level == 85
    assert view.is_screen_on()


def test_disable_user_and_uninstall_for_user_zero(xiaomi):
    assert xiaomi.run("pm disable-user --user 0 com.miui.analytics").out == (
        "Package com.miui.analytics new state: disabled-user\n"
    )
    assert "com.miui.analytics" in xiaomi.run("pm list packages -d").out
    assert xiaomi.run("pm uninstall --user 0 com.miui.msa.global").out == "Success\n"
    assert "com.miui.msa.global" not in xiaomi.run("pm list packages").out
    assert "com.miui.msa.global" in xiaomi.run("pm list packages -u").out
    assert (
        xiaomi.run("pm uninstall com.miui.daemon").out == "Failure [DELETE_FAILED_INTERNAL_ERROR]\n"
    )


# ---- activities ------------------------------------------------------------------------------


def test_resolve_activity_brief(xiaomi):
    assert xiaomi.run("cmd package resolve-activity --brief com.android.chrome").out == (
        "priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=true\n"
        "com.android.chrome/com.google.android.apps.chrome.Main\n"
    )
    assert xiaomi.run("cmd package resolve-activity --brief com.miui.analytics").out == (
        "No activity found\n"
    )


def test_am_start_view_opens_the_browser(xiaomi):
    result = xiaomi.run("am start -a android.intent.action.VIEW -d 'https://example.com/a?b=c'")
    assert (
        result.out
        == "Starting: Intent { act=android.intent.action.VIEW dat=https://example.com/... }\n"
    )
    assert xiaomi.foreground == ("com.android.browser", "com.android.browser.BrowserActivity")
    window = xiaomi.run("dumpsys window windows").out
    assert re.search(
        r"mCurrentFocus=Window\{\w+ u0 com\.android\.browser/\.BrowserActivity\}", window
    )
    activities = xiaomi.run("dumpsys activity activities").out
    assert re.search(
        r"mResumedActivity: ActivityRecord\{\w+ u0 com\.android\.browser/\.BrowserActivity t\d+\}",
        activities,
    )
    assert xiaomi.run("pidof com.android.browser").out.strip().isdigit()


def test_am_start_component_and_errors(xiaomi):
    ok = xiaomi.run("am start -n com.whatsapp/.Main")
    assert ok.out == "Starting: Intent { cmp=com.whatsapp/.Main }\n"
    bad = xiaomi.run("am start -n com.example.none/.Main")
    assert (
        bad.err == "Error type 3\n"
        "Error: Activity class {com.example.none/com.example.none.Main} does not exist.\n"
    )
    xiaomi.run("input keyevent KEYCODE_HOME")
    assert xiaomi.foreground[0] == "com.miui.home"


def test_monkey_launches_and_logs(xiaomi):
    result = xiaomi.run("monkey -p com.spotify.music -c android.intent.category.LAUNCHER 1")
    lines = result.out.splitlines()
    assert lines[0] == "  bash arg: -p"
    assert "args: [-p, com.spotify.music, -c, android.intent.category.LAUNCHER, 1]" in lines
    assert lines[-2] == "Events injected: 1"
    assert xiaomi.foreground[0] == "com.spotify.music"
    log = xiaomi.run("logcat -d -s ActivityManager").out
    assert re.search(
        r"Start proc \d+:com\.spotify\.music/u0a232 "
        r"for activity \{com\.spotify\.music/\.MainActivity\}",
        log,
    )
    missing = xiaomi.run("monkey -p com.miui.analytics -c android.intent.category.LAUNCHER 1")
    assert missing.exit_code == 251 and "No activities found" in missing.err


def test_input_commands(xiaomi):
    for command in (
        "input tap 100 200",
        "input swipe 1 2 3 4 100",
        "input text hello",
        "input keyevent 26",
    ):
        assert xiaomi.run(command).exit_code == 0
    assert not xiaomi.screen_on
    assert xiaomi.run("input frob").exit_code == 1


# ---- IMEI over binder ------------------------------------------------------------------------


def parcel_bytes(dump: str) -> bytes:
    """Decode ``service call`` output back to the reply bytes (32-bit little-endian words)."""
    body = dump.split("Parcel(", 1)[1]
    words = []
    for line in body.splitlines():
        line = re.sub(r"^\s*0x[0-9a-f]+: ", "", line)
        words += re.findall(r"\b[0-9a-f]{8}\b", line.split("'")[0])
    return b"".join(struct.pack("<I", int(w, 16)) for w in words)


def read_string16(reply: bytes, offset: int) -> str:
    (length,) = struct.unpack_from("<i", reply, offset)
    return reply[offset + 4 : offset + 4 + 2 * length].decode("utf-16-le")


def test_imei_needs_privileges_from_android_10(xiaomi):
    shell = xiaomi.run("service call iphonesubinfo 1").out
    reply = parcel_bytes(shell)
    assert struct.unpack_from("<i", reply)[0] == -1  # EX_SECURITY
    assert read_string16(reply, 4) == (
        "getDeviceId: The user 2000 does not meet the requirements to access device identifiers."
    )
    rooted = parcel_bytes(xiaomi.run("su -c 'service call iphonesubinfo 1'").out)
    assert struct.unpack_from("<i", rooted)[0] == 0
    assert read_string16(rooted, 4) == "864132058957347"
    second = parcel_bytes(xiaomi.run("su -c 'service call iphonesubinfo 3 i32 1'").out)
    assert read_string16(second, 4) == "864132057603900"


def test_imei_dump_works_with_the_cut_idiom(xiaomi):
    text = xiaomi.run(
        "su -c \"service call iphonesubinfo 1 | cut -c 52-66 | tr -d '.[:space:]'\""
    ).out
    assert text == "864132058957347"


def test_parcel_dump_layout():
    assert parcel_dump(bytes(4)) == "Parcel(00000000    '....')"
    assert parcel_dump(bytes(4) + b"\xff" * 4) == "Parcel(00000000 ffffffff   '........')"
    imei = struct.pack("<ii", 0, 15) + "353225112874561".encode("utf-16-le") + bytes(2)
    assert parcel_dump(imei) == (
        "Parcel(\n"
        "  0x00000000: 00000000 0000000f 00350033 00320033 '........3.5.3.2.'\n"
        "  0x00000010: 00350032 00310031 00380032 00340037 '2.5.1.1.2.8.7.4.'\n"
        "  0x00000020: 00360035 00000031                   '5.6.1...        ')"
    )


def test_imei_transaction_codes_follow_the_sdk(pixel, huawei):
    pixel.adb_root()
    # Android 11 inserted getDeviceIdWithFeature at 2, so getImeiForSubscriber moved to 5
    assert read_string16(parcel_bytes(pixel.run("service call iphonesubinfo 5 i32 1").out), 4) == (
        "353225112874561"
    )
    assert "The uid 2000" in parcel_bytes(
        make("pixel-android14").run("service call iphonesubinfo 1").out
    ).decode("utf-16-le", "ignore")
    assert huawei.run("service list").out.startswith(
        "Found 22 services:\n0\tSurfaceFlinger: [android.ui.ISurfaceComposer]\n"
    )


# ---- /proc/net -------------------------------------------------------------------------------


def decode_proc_net(text: str) -> list[dict[str, object]]:
    """A small independent reader of /proc/net/{tcp,tcp6,udp,udp6}."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        local, remote, state, uid, inode = fields[1], fields[2], fields[3], fields[7], fields[9]

        def endpoint(value: str) -> tuple[str, int]:
            addr, port = value.split(":")
            raw = b"".join(
                struct.pack("<I", int(addr[i : i + 8], 16)) for i in range(0, len(addr), 8)
            )
            return str(ipaddress.ip_address(raw)), int(port, 16)

        rows.append(
            {
                "local": endpoint(local),
                "remote": endpoint(remote),
                "state": int(state, 16),
                "uid": int(uid),
                "inode": int(inode),
            }
        )
    return rows


def test_proc_net_tcp_round_trip(xiaomi):
    uid = xiaomi.package_uid("com.whatsapp")
    handle = xiaomi.open_socket(uid, "tcp", "192.168.1.23:40001", ("157.240.0.60", 443))
    text = xiaomi.run("cat /proc/net/tcp").out
    lines = text.split("\n")
    assert lines[0] == (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode"
    ).ljust(149)
    assert all(len(line) == 149 for line in lines if line)
    assert re.match(
        r"   0: 1701A8C0:9C41 3C00F09D:01BB 01 00000000:00000000 00:00000000 00000000 10231 ",
        lines[1],
    )
    [row] = decode_proc_net(text)
    assert row["local"] == ("192.168.1.23", 40001)
    assert row["remote"] == ("157.240.0.60", 443)
    assert (row["state"], row["uid"]) == (1, uid)
    xiaomi.close_socket(handle)
    assert decode_proc_net(xiaomi.run("cat /proc/net/tcp").out) == []


def test_proc_net_tcp6_shows_the_profile_sockets_with_package_uids(xiaomi):
    rows = decode_proc_net(xiaomi.fs.read("/proc/net/tcp6").decode())
    by_uid = {row["uid"]: row for row in rows}
    xmsf = by_uid[xiaomi.package_uid("com.xiaomi.xmsf")]
    assert xmsf["local"] == ("::ffff:c0a8:117", 41634)
    assert xmsf["remote"] == ("::ffff:cb00:710a", 5222)
    header = xiaomi.fs.read("/proc/net/tcp6").decode().splitlines()[0]
    assert header.startswith("  sl  local_address                         remote_address")


def test_proc_net_udp_and_listen_states(pixel):
    pixel.open_socket(10283, "udp", "0.0.0.0:5353", "0.0.0.0:0", "CLOSE")
    pixel.open_socket(10283, "tcp6", "[::]:8081", "[::]:0", "LISTEN")
    udp = pixel.run("cat /proc/net/udp").out
    assert udp.startswith("   sl  local_address rem_address")  # kernel 5.10 header
    assert [r["local"] for r in decode_proc_net(udp)] == [("0.0.0.0", 5353)]
    listen = [r for r in decode_proc_net(pixel.run("cat /proc/net/tcp6").out) if r["state"] == 0x0A]
    assert listen and listen[0]["local"] == ("::", 8081)
    assert make("oneplus-8t").run("head -n 1 /proc/net/udp").out.startswith("  sl  local_address")


# ---- CA stores, mounts and reboot ------------------------------------------------------------

MITM_PEM = synthetic_ca(CaSpec("mitmproxy", "mitmproxy"))[1]


def test_synthetic_cas_are_deterministic_and_named_by_subject_hash():
    name, data = synthetic_ca(CaSpec("ISRG Root X1", "Internet Security Research Group"))
    assert synthetic_ca(CaSpec("ISRG Root X1", "Internet Security Research Group")) == (name, data)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(data)
    assert name == f"{subject_hash_old(cert)}.0"
    assert (
        cert.subject.rfc4514_string() == "CN=ISRG Root X1,O=Internet Security Research Group,C=US"
    )


def test_system_ca_store_is_read_only_for_shell(xiaomi):
    result = xiaomi.run(
        "cp /data/local/tmp/x /system/etc/security/cacerts/; touch /system/etc/security/cacerts/x.0"
    )
    assert "Read-only file system" in result.err
    with pytest.raises(OSError) as caught:
        xiaomi.fs.write("/system/etc/security/cacerts/c8750f0d.0", MITM_PEM, 0o100644, 0)
    assert caught.value.errno == errno.EROFS
    with pytest.raises(PermissionError):
        xiaomi.fs.read("/data/misc/user/0/cacerts-added/x.0")


def test_ca_install_through_tmpfs_is_lost_on_reboot(xiaomi):
    xiaomi.fs.write("/data/local/tmp/c8750f0d.0", MITM_PEM, 0o100644, int(time.time()))
    before = set(xiaomi.trusted_ca_files())
    script = (
        "mkdir -m 700 /data/local/tmp/ca-copy && "
        "cp /system/etc/security/cacerts/* /data/local/tmp/ca-copy/ && "
        "mount -t tmpfs tmpfs /system/etc/security/cacerts && "
        "mv /data/local/tmp/ca-copy/* /system/etc/security/cacerts/ && "
        "cp /data/local/tmp/c8750f0d.0 /system/etc/security/cacerts/ && "
        "chown root:root /system/etc/security/cacerts/* && "
        "chmod 644 /system/etc/security/cacerts/* && "
        "chcon u:object_r:system_file:s0 /system/etc/security/cacerts/*"
    )
    result = xiaomi.run(f"su -c '{script}'; echo X4EXIT:$?")
    assert result.out == "X4EXIT:0\n", result.err
    after = xiaomi.trusted_ca_files()
    assert set(after) == before | {"/system/etc/security/cacerts/c8750f0d.0"}
    assert after["/system/etc/security/cacerts/c8750f0d.0"] == MITM_PEM
    assert xiaomi.run("ls -l /system/etc/security/cacerts/c8750f0d.0").out.startswith(
        "-rw-r--r-- 1 root root "
    )
    mounts = xiaomi.run("mount").out
    assert "tmpfs on /system/etc/security/cacerts type tmpfs (rw,seclabel,relatime)\n" in mounts
    assert (
        "tmpfs /system/etc/security/cacerts tmpfs rw,seclabel,relatime 0 0\n"
        in xiaomi.run("cat /proc/mounts").out
    )
    reboot_and_wait(xiaomi)
    assert set(xiaomi.trusted_ca_files()) == before
    assert "cacerts" not in xiaomi.run("mount").out
    assert xiaomi.fs.stat("/data/local/tmp/c8750f0d.0") is not None  # /data survives


def test_mount_needs_root(xiaomi):
    result = xiaomi.run("mount -t tmpfs tmpfs /system/etc/security/cacerts")
    assert result.err == "mount: 'tmpfs'->'/system/etc/security/cacerts': Operation not permitted\n"
    assert xiaomi.run("umount /system/etc/security/cacerts").exit_code == 1
    assert (
        xiaomi.run("su -c 'mount -o rw,remount /'").err
        == "mount: '/dev/block/dm-0'->'/': Permission denied\n"
    )


def test_android14_apex_store_through_nsenter_bind_mounts(pixel):
    pixel.fs.write("/data/local/tmp/c8750f0d.0", MITM_PEM, 0o100644, int(time.time()))
    assert all(
        path.startswith("/apex/com.android.conscrypt/cacerts/") for path in pixel.trusted_ca_files()
    )
    assert pixel.adb_root()[0]
    script = """
    mkdir -p -m 700 /data/local/tmp/tmp-ca-copy
    cp /apex/com.android.conscrypt/cacerts/* /data/local/tmp/tmp-ca-copy/
    mount -t tmpfs tmpfs /system/etc/security/cacerts
    mv /data/local/tmp/tmp-ca-copy/* /system/etc/security/cacerts/
    cp /data/local/tmp/c8750f0d.0 /system/etc/security/cacerts/
    chown root:root /system/etc/security/cacerts/*
    chmod 644 /system/etc/security/cacerts/*
    chcon u:object_r:system_file:s0 /system/etc/security/cacerts/*
    ZYGOTE_PID=$(pidof zygote || true)
    ZYGOTE64_PID=$(pidof zygote64 || true)
    for Z_PID in "$ZYGOTE_PID" "$ZYGOTE64_PID"; do
        if [ -n "$Z_PID" ]; then
            nsenter --mount=/proc/$Z_PID/ns/mnt -- \\
                /bin/mount --bind /system/etc/security/cacerts /apex/com.android.conscrypt/cacerts
        fi
    done
    APP_PIDS=$(echo "$ZYGOTE_PID $ZYGOTE64_PID" | xargs -n1 ps -o 'PID' -P | grep -v PID)
    for PID in $APP_PIDS; do
        nsenter --mount=/proc/$PID/ns/mnt -- \\
            /bin/mount --bind /system/etc/security/cacerts /apex/com.android.conscrypt/cacerts &
    done
    wait
    rm -r /data/local/tmp/tmp-ca-copy
    echo "System certificate injected"
    """
    result = pixel.run(script)
    assert (result.out, result.err) == ("System certificate injected\n", "")
    trusted = pixel.trusted_ca_files()
    assert trusted["/apex/com.android.conscrypt/cacerts/c8750f0d.0"] == MITM_PEM
    assert len(trusted) == len(load_profile("pixel-android14").system_cas) + 1
    reboot_and_wait(pixel)
    assert "/apex/com.android.conscrypt/cacerts/c8750f0d.0" not in pixel.trusted_ca_files()
    assert pixel.run("id -u").out == "2000\n"  # adbd is not root after a reboot


def test_nsenter_checks_the_target(pixel):
    pixel.adb_root()
    assert pixel.run("nsenter --mount=/proc/99999/ns/mnt -- id").err == (
        "nsenter: /proc/99999/ns/mnt: No such file or directory\n"
    )
    assert pixel.run("nsenter -t 1 -m -- id -u").out == "0\n"


def test_emulator_like_profile_can_remount_system(pixel):
    assert pixel.run("touch /system/x").exit_code == 1
    pixel.adb_root()
    assert pixel.run("mount -o rw,remount /system && touch /system/x && echo ok").out == "ok\n"
    reboot_and_wait(pixel)
    pixel.adb_root()
    assert "Read-only file system" in pixel.run("touch /system/y").err


# ---- sync-facing filesystem ------------------------------------------------------------------


def test_device_fs_for_the_sync_service(xiaomi):
    fs = xiaomi.fs
    fs.write("/sdcard/Download/deep/new.bin", b"\x00\x01", 0o100644, 1_700_000_000)
    st = fs.stat("/sdcard/Download/deep/new.bin")
    assert st is not None and st.size == 2 and st.mtime == 1_700_000_000
    assert st.mode == 0o100660  # sdcardfs forces the mode, as on the phone
    assert fs.stat("/sdcard") is not None and fs.stat("/sdcard").mode & 0o170000 == 0o040000
    entries = dict(fs.listdir("/"))
    assert entries["sdcard"].mode & 0o170000 == 0o120000  # listed as the link itself
    assert fs.listdir("/data") is None
    assert fs.stat("/nope") is None
    with pytest.raises(FileNotFoundError):
        fs.read("/sdcard/nope")
    with pytest.raises(IsADirectoryError):
        fs.read("/sdcard")


# ---- logcat ----------------------------------------------------------------------------------


# liblog: "%19lld.%03ld" epoch, "%5s" uid name or number, "%5d %5d" pid tid, priority, "%-8s: "
EPOCH_UID_LINE = re.compile(r" +\d{10}\.\d{3} [ \w]{5} [ \d]{5} [ \d]{5} [VDIWEF] \S.{7,}?: .*")


def test_logcat_dump_epoch_uid_format(xiaomi):
    text = xiaomi.run("logcat -d -b all -v epoch,uid").out
    lines = text.splitlines()
    assert "--------- beginning of main" in lines and "--------- beginning of kernel" in lines
    entries = [line for line in lines if not line.startswith("---------")]
    assert entries and all(EPOCH_UID_LINE.fullmatch(line) for line in entries), entries[:3]
    assert any(
        re.search(
            r"^ +\d+\.\d{3}  1000 {2}1480  1480 I SystemServer: "
            r"Entered the Android system server!$",
            line,
        )
        for line in entries
    )
    assert any(
        "  root     0     0 I init    : init first stage started!" in line for line in entries
    )
    stamps = [float(line.split()[0]) for line in entries]
    assert stamps == sorted(stamps)


def test_logcat_threadtime_default_and_clear(xiaomi):
    xiaomi.log("AuditTag", "hello", priority="W", uid=10231, pid=4242, tid=4243)
    line = xiaomi.run("logcat -d -s AuditTag").out.splitlines()[-1]
    assert re.fullmatch(r"\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}  4242  4243 W AuditTag: hello", line)
    assert xiaomi.run("logcat -c").exit_code == 0
    assert xiaomi.run("logcat -d").out == ""


def test_logcat_streams_until_closed(xiaomi):
    proc = xiaomi.shell("logcat -v brief AuditTag:I *:S")
    got: list[bytes] = []
    finished = threading.Event()

    def read() -> None:
        for fd, data in proc.chunks():
            if fd == STDOUT:
                got.append(data)
        finished.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.1)
    xiaomi.log("AuditTag", "first", pid=77)
    xiaomi.log("Other", "hidden")
    xiaomi.log("AuditTag", "second", pid=77)
    deadline = time.monotonic() + 2
    while b"".join(got).count(b"AuditTag") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not finished.is_set()
    proc.close()
    assert finished.wait(1.0)
    text = b"".join(got).decode()
    assert "I/AuditTag(   77): first\nI/AuditTag(   77): second\n" in text
    assert "hidden" not in text


def test_settings_and_launches_are_logged(xiaomi):
    xiaomi.run("settings put global http_proxy 10.0.0.2:8080; am start -n com.whatsapp/.Main")
    log = xiaomi.run("logcat -d").out
    assert "http_proxy=10.0.0.2:8080" in log
    assert (
        "START u0 {act=android.intent.action.MAIN flg=0x10000000 cmp=com.whatsapp/.Main}"
        " from uid 2000" in log
    )


# ---- screencap -------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def test_screencap_is_a_valid_png(xiaomi):
    data = xiaomi.run("screencap -p").stdout
    chunks = png_chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour) == (108, 240, 8, 6)
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == height * (1 + 4 * width)
    before = pixels[1:5]
    xiaomi.run("am start -n com.whatsapp/.Main; screencap -p /sdcard/shot.png")
    after = zlib.decompress(png_chunks(xiaomi.fs.read("/sdcard/shot.png"))[1][1])[1:5]
    assert before != after


def test_screencap_over_a_pty_is_corrupted_as_on_a_phone(xiaomi):
    data = b"".join(d for _, d in xiaomi.shell("screencap -p", pty=True).chunks())
    assert data.startswith(b"\x89PNG\r\r\n")


# ---- processes, reboot -----------------------------------------------------------------------


def test_ps_and_pidof(xiaomi):
    text = xiaomi.run("ps -A").out
    header, *rows = text.splitlines()
    assert header.split() == ["USER", "PID", "PPID", "VSZ", "RSS", "WCHAN", "ADDR", "S", "NAME"]
    names = {row.split()[-1]: row.split() for row in rows}
    assert names["init"][:3] == ["root", "1", "0"]
    assert names["system_server"][0] == "system"
    assert names["com.xiaomi.xmsf"][0] == "u0_a115"
    zygote = xiaomi.run("pidof zygote64").out.strip()
    assert names["zygote64"][1] == zygote
    assert xiaomi.run("ps -o PID,NAME -p 1").out == "  PID NAME\n    1 init\n"


def test_reboot_from_the_shell(xiaomi):
    xiaomi.run("su -c 'mount -t tmpfs tmpfs /mnt'")
    assert "/mnt" in xiaomi.run("mount").out
    proc = xiaomi.shell("reboot")
    list(proc.chunks())
    assert not xiaomi.online
    assert xiaomi.run("getprop sys.boot_completed").out == "\n"
    assert xiaomi.wait_online(5)
    assert xiaomi.run("getprop sys.boot_completed").out == "1\n"
    assert " /mnt " not in xiaomi.run("mount").out
    assert xiaomi.boot_count == 2
    assert "Entered the Android system server!" in xiaomi.run("logcat -d -b all").out


def test_reboot_ends_streaming_shells(xiaomi):
    proc = xiaomi.shell("logcat")
    done = threading.Event()
    threading.Thread(target=lambda: (list(proc.chunks()), done.set()), daemon=True).start()
    xiaomi.reboot()
    assert done.wait(1.0)
    assert xiaomi.wait_online(5)


def test_uname_and_misc(huawei):
    assert huawei.run("uname -r").out == "4.14.116\n"
    assert huawei.run("uname -a").out.endswith(" aarch64 Toybox\n")
    assert huawei.run("wm size").out == "Physical size: 1080x2340\n"
    assert huawei.run("getenforce").out == "Enforcing\n"
    assert huawei.run("cat /sys/class/net/wlan0/address").out == "2c:97:b1:9e:84:27\n"

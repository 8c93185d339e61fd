"""Tests of auditor.device.parsers on the real-format samples in tests/device/samples/."""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.device import parsers as p
from auditor.device.model import (
    SOCKET_STATE_BY_CODE,
    LogLevel,
    NetProto,
    PermissionKind,
    PrivateDnsMode,
    SocketState,
)
from tests.certs import self_signed

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


# --- getprop ----------------------------------------------------------------------------------


def test_getprop_sample() -> None:
    result = p.parse_getprop(sample("getprop.txt"))
    props = result.items
    assert len(props) == 23
    assert props["ro.build.version.sdk"] == "34"
    assert props["persist.sys.timezone"] == "Europe/Berlin"
    assert props["ro.build.fingerprint"].startswith("google/sdk_gphone64_x86_64/")
    assert props["ro.vendor.build.security_patch"] == ""
    assert result.skipped == 0  # the blank line is not junk


def test_getprop_value_may_contain_brackets_and_trailing_space() -> None:
    text = "[a.b]: [x]y]\n[c]: [[nested]]\n[d]: [v]   \n[e]: []: [odd]\n"
    props = p.parse_getprop(text).items
    assert props == {"a.b": "x]y", "c": "[nested]", "d": "v", "e": "]: [odd"}


def test_getprop_multi_line_value() -> None:
    text = "[persist.x]: [line one\nline two\n]\n[ro.next]: [1]\n"
    result = p.parse_getprop(text)
    assert result.items == {"persist.x": "line one\nline two\n", "ro.next": "1"}
    assert result.skipped == 0


def test_getprop_unclosed_value_is_skipped_not_swallowing_the_next() -> None:
    result = p.parse_getprop("[broken]: [no end\n[ok]: [1]\n[tail]: [also no end")
    assert result.items == {"ok": "1"}
    assert result.skipped == 2
    assert result.warnings[0].startswith("[broken]")


def test_getprop_junk_crlf_bytes_and_duplicates() -> None:
    text = b"WARNING: linker: unused DT entry\r\n[k]: [1]\r\n[k]: [2]\r\n[]: [x]\r\nno brackets\r\n"
    result = p.parse_getprop(text)
    assert result.items == {"k": "2"}
    assert result.skipped == 3
    assert p.parse_getprop("").items == {}
    assert p.parse_getprop("").skipped == 0


# --- pm list packages -------------------------------------------------------------------------


def test_pm_list_packages_sample() -> None:
    result = p.parse_pm_list_packages(sample("pm_list_packages_fiU.txt"))
    assert result.skipped == 0
    by_name = {e.name: e for e in result.items}
    assert list(by_name) == [
        "com.example.tracker",
        "com.android.shell",
        "android",
        "com.android.chrome",
        "org.mozilla.firefox",
        "com.android.dreams.basic",
    ]
    tracker = by_name["com.example.tracker"]
    assert tracker.apk_path == (
        "/data/app/~~x7hQmVXyZrX3cZpI4iZTiA==/com.example.tracker-0pQ1k8vB6nY5nU2m9aFhJg==/base.apk"
    )
    assert tracker.installer == "com.android.vending"
    assert tracker.uids == (10123,)
    assert tracker.uid == 10123
    assert by_name["com.android.shell"].installer is None  # "installer=null"
    assert by_name["org.mozilla.firefox"].uids == (10211, 1010211)  # two Android users


def test_pm_list_packages_flag_subsets() -> None:
    text = (
        "package:com.a\n"
        "package:com.b versionCode:42 stopped=true  installer=null\n"
        "package:/system/app/x=y/X.apk=com.c versionCode:-1 uid:1000\n"
        "package:com.d uid:10001\n"
    )
    entries = p.parse_pm_list_packages(text).items
    assert [(e.name, e.apk_path, e.uids, e.version_code, e.stopped) for e in entries] == [
        ("com.a", None, (), None, None),
        ("com.b", None, (), 42, True),
        ("com.c", "/system/app/x=y/X.apk", (1000,), -1, None),
        ("com.d", None, (10001,), None, None),
    ]
    assert entries[0].uid is None


def test_pm_list_packages_junk() -> None:
    text = (
        "Error: Unknown option: -x\n"
        "package:\n"
        "package:=com.a\n"
        "package:/data/app/base.apk=\n"
        "package:not a name\n"
        "\n"
        "package:com.ok\n"
    )
    result = p.parse_pm_list_packages(text)
    assert [e.name for e in result.items] == ["com.ok"]
    assert result.skipped == 5
    assert p.parse_pm_list_packages("").items == []


# --- dumpsys package --------------------------------------------------------------------------


def test_dumpsys_package_userid_layout() -> None:
    result = p.parse_dumpsys_package(sample("dumpsys_package_userid.txt"))
    assert result.skipped == 0
    assert [(d.name, d.hidden_system) for d in result.items] == [
        ("com.example.watchface", False),
        ("com.android.providers.settings", False),
        ("com.example.watchface", True),
    ]
    app = result.items[0]
    assert app.app_id == 10057
    assert app.version_code == 20
    assert (app.min_sdk, app.target_sdk) == (27, 34)
    assert app.version_name == "1.0.16"
    assert app.code_path is not None and app.code_path.endswith("fNrHlgqJDWTgDoY2Akzmgw==")
    assert app.first_install_time == "2009-01-01 01:00:00"
    assert app.last_update_time == "2025-07-04 01:16:34"
    assert app.installer == "com.android.vending"
    assert app.pkg_flags == ("SYSTEM", "HAS_CODE", "ALLOW_CLEAR_USER_DATA", "UPDATED_SYSTEM_APP",
                             "ALLOW_BACKUP")  # fmt: skip
    assert app.is_system and app.is_updated_system_app
    assert "VENDOR" in app.private_flags
    assert app.requested_permissions == (
        "android.permission.WAKE_LOCK",
        "com.google.android.wearable.permission.RECEIVE_COMPLICATION_DATA",
        "android.permission.ACCESS_NETWORK_STATE",
        "android.permission.READ_SMS",
        "com.example.watchface.DYNAMIC_RECEIVER_NOT_EXPORTED_PERMISSION",
    )
    assert app.declared_permissions == (
        "com.example.watchface.DYNAMIC_RECEIVER_NOT_EXPORTED_PERMISSION",
    )
    install = [x for x in app.permissions if x.kind is PermissionKind.INSTALL]
    runtime = [x for x in app.permissions if x.kind is PermissionKind.RUNTIME]
    assert [x.name for x in install] == [
        "android.permission.ACCESS_NETWORK_STATE",
        "com.example.watchface.DYNAMIC_RECEIVER_NOT_EXPORTED_PERMISSION",
        "android.permission.WAKE_LOCK",
    ]
    assert all(x.granted is True and x.user_id is None for x in install)
    sms = next(x for x in runtime if x.name == "android.permission.READ_SMS")
    assert sms.granted is False
    assert sms.user_id == 0
    assert sms.flags == ("USER_SENSITIVE_WHEN_GRANTED", "RESTRICTION_UPGRADE_EXEMPT")
    assert app.granted_permissions() == {
        "android.permission.ACCESS_NETWORK_STATE",
        "com.example.watchface.DYNAMIC_RECEIVER_NOT_EXPORTED_PERMISSION",
        "android.permission.WAKE_LOCK",
        "com.google.android.wearable.permission.RECEIVE_COMPLICATION_DATA",
    }
    assert [(u.user_id, u.installed, u.stopped, u.enabled) for u in app.users] == [
        (0, True, False, 0)
    ]

    settings_provider = result.items[1]
    assert settings_provider.app_id == 1000
    assert settings_provider.shared_user == "android.uid.system"
    assert settings_provider.installer is None
    assert settings_provider.permissions == ()
    assert settings_provider.data_dir == "/data/user_de/0/com.android.providers.settings"

    factory = result.items[2]
    assert factory.code_path == "/vendor/app/com.example.watchface"
    assert factory.version_code == 15
    assert factory.requested_permissions == ("android.permission.WAKE_LOCK",)


def test_dumpsys_package_appid_layout_in_a_bugreport_section() -> None:
    result = p.parse_dumpsys_package(sample("dumpsys_package_appid.txt"))
    assert result.skipped == 0
    assert [d.name for d in result.items] == ["com.example.tracker"]
    app = result.items[0]
    assert app.app_id == 10123
    assert (app.version_code, app.min_sdk, app.target_sdk) == (4210, 26, 35)
    assert app.first_install_time == "2025-09-01 08:30:05"  # from the User 0 block
    assert app.installer == "com.android.vending"
    assert app.fields["installerPackageUid"] == "10155"
    assert app.fields["originatingPackageName"] == "null"
    assert not app.is_system
    assert [(u.user_id, u.installed, u.first_install_time) for u in app.users] == [
        (0, True, "2025-09-01 08:30:05"),
        (10, False, "1970-01-01 01:00:00"),
    ]
    fine = [x for x in app.permissions if x.name == "android.permission.ACCESS_FINE_LOCATION"]
    assert [(x.user_id, x.granted) for x in fine] == [(0, True), (10, False)]
    assert fine[0].flags == (
        "USER_SET",
        "USER_SENSITIVE_WHEN_GRANTED",
        "USER_SENSITIVE_WHEN_DENIED",
    )
    granted = app.granted_permissions(0)
    assert "android.permission.ACCESS_FINE_LOCATION" in granted
    assert "android.permission.INTERNET" in granted
    assert "android.permission.READ_PHONE_STATE" not in granted
    assert "android.permission.ACCESS_FINE_LOCATION" not in app.granted_permissions(10)


def test_dumpsys_package_block_without_section_header_and_junk() -> None:
    text = (
        "  Package [com.a] (1f):\n"
        "    userId=10001\n"
        "    versionCode=3 targetSdk=22\n"
        "    installerPackageName=null\n"
        "    pkgFlags=[ HAS_CODE ]\n"
        "Packages:\n"
        "  stray line at the package level\n"
        "  Package [com.b] (2e):\n"
        "    appId=not-a-number\n"
        "    versionCode=abc\n"
        "    no equals sign here\n"
        "Shared users:\n"
        "  Package [com.not.a.package] (3d):\n"
    )
    result = p.parse_dumpsys_package(text)
    assert [d.name for d in result.items] == ["com.a", "com.b"]
    a, b = result.items
    assert (a.app_id, a.version_code, a.target_sdk, a.min_sdk, a.installer) == (
        10001,
        3,
        22,
        None,
        None,
    )
    assert (b.app_id, b.version_code) == (None, None)
    assert result.skipped == 1
    assert p.parse_dumpsys_package("").items == []


# --- /proc/net --------------------------------------------------------------------------------


def test_proc_net_tcp_sample() -> None:
    result = p.parse_proc_net(sample("proc_net_tcp.txt"), "tcp")
    assert result.skipped == 0  # header line
    rows = result.items
    assert len(rows) == 6
    adb = rows[0]
    assert adb.proto is NetProto.TCP
    assert (adb.local_ip, adb.local_port) == (ipaddress.ip_address("127.0.0.1"), 5037)
    assert (adb.state, adb.state_code, adb.uid, adb.inode) == (SocketState.LISTEN, 10, 2000, 21734)
    est = rows[2]
    assert (str(est.local_ip), est.local_port) == ("10.0.2.16", 43812)
    assert (str(est.remote_ip), est.remote_port) == ("142.250.74.100", 443)
    assert (est.state, est.uid, est.inode, est.rx_queue) == (
        SocketState.ESTABLISHED,
        10123,
        331245,
        0x1F,
    )
    assert (rows[4].state, rows[4].tx_queue) == (SocketState.SYN_SENT, 1)
    time_wait = rows[5]
    assert (time_wait.state, time_wait.uid, time_wait.inode) == (SocketState.TIME_WAIT, 0, 0)


def test_proc_net_tcp6_sample_with_mapped_addresses() -> None:
    rows = p.parse_proc_net(sample("proc_net_tcp6.txt"), NetProto.TCP6).items
    v6 = ipaddress.IPv6Address
    assert [(r.local_ip, r.local_port, r.state) for r in rows] == [
        (v6("::"), 8080, SocketState.LISTEN),
        (v6("::ffff:10.0.2.16"), 35744, SocketState.ESTABLISHED),
        (v6("2001:db8:1:2::16"), 47118, SocketState.CLOSE_WAIT),
        (v6("::1"), 37100, SocketState.ESTABLISHED),
    ]
    mapped = rows[1]
    assert mapped.remote_ip == ipaddress.IPv6Address("::ffff:142.250.74.110")
    assert mapped.remote_ip_unmapped == ipaddress.IPv4Address("142.250.74.110")
    assert mapped.local_ip_unmapped == ipaddress.IPv4Address("10.0.2.16")
    assert rows[2].remote_ip == ipaddress.IPv6Address("2001:db8:ffff::443")
    assert rows[2].remote_ip_unmapped == rows[2].remote_ip
    assert (rows[1].uid, rows[1].inode) == (10145, 331902)


def test_proc_net_udp_samples() -> None:
    udp = p.parse_proc_net(sample("proc_net_udp.txt"), "udp")
    assert udp.skipped == 0
    assert [(r.local_port, r.state, r.uid) for r in udp.items] == [
        (68, SocketState.CLOSE, 1014),
        (39127, SocketState.ESTABLISHED, 1051),
        (5353, SocketState.CLOSE, 10087),
    ]
    assert (str(udp.items[1].remote_ip), udp.items[1].remote_port) == ("8.8.8.8", 53)
    udp6 = p.parse_proc_net(sample("proc_net_udp6.txt"), "udp6")
    assert [(str(r.remote_ip_unmapped), r.remote_port, r.uid) for r in udp6.items] == [
        ("::", 0, 1000),
        ("142.250.74.99", 443, 10123),
    ]
    assert all(r.proto is NetProto.UDP6 for r in udp6.items)


def test_proc_net_unknown_state_junk_and_truncation() -> None:
    good = sample("proc_net_tcp.txt").splitlines()[3]  # row 2, ESTABLISHED
    unknown = good.replace(" 01 ", " 0D ", 1)
    text = "\n".join(
        [
            "  sl  local_address rem_address   st tx_queue rx_queue",
            good,
            unknown,
            good[:60],  # a read cut short
            "   9: 0100007F:13AD 00000000000000000000000000000000:0000 0A 00000000:00000000 "
            "00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0",
            "cat: /proc/net/tcp: Permission denied",
            "",
        ]
    )
    result = p.parse_proc_net(text, "tcp")
    assert [(r.state, r.state_code) for r in result.items] == [
        (SocketState.ESTABLISHED, 1),
        (SocketState.UNKNOWN, 13),
    ]
    assert result.skipped == 3
    assert p.parse_proc_net("", "tcp6").items == []
    with pytest.raises(ValueError):
        p.parse_proc_net("", "raw")  # type: ignore[arg-type]


def test_socket_state_codes_cover_the_kernel_enum() -> None:
    assert sorted(SOCKET_STATE_BY_CODE) == list(range(1, 13))
    assert SOCKET_STATE_BY_CODE[0x0A] is SocketState.LISTEN
    assert SOCKET_STATE_BY_CODE[0x0B] is SocketState.CLOSING
    assert SOCKET_STATE_BY_CODE[0x0C] is SocketState.NEW_SYN_RECV


def _proc_hex(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """How the kernel prints an address on a little-endian machine."""
    b = ip.packed
    return "".join(f"{int.from_bytes(b[i : i + 4], 'little'):08X}" for i in range(0, len(b), 4))


def _proc_row(
    slot: int,
    local: Any,
    lport: int,
    remote: Any,
    rport: int,
    state: int,
    tx: int,
    rx: int,
    uid: int,
    inode: int,
) -> str:
    # The printf format of net/ipv4/tcp_ipv4.c get_tcp4_sock(), kept as the kernel writes it;
    # tcp6 only widens the addresses.
    return (
        "%4d: %s:%04X %s:%04X %02X %08X:%08X %02X:%08X %08X %5u %8d %u %d %s %u %u %u %u %d"  # noqa: UP031
        % (slot, _proc_hex(local), lport, _proc_hex(remote), rport, state, tx, rx, 0, 0, 0,
           uid, 0, inode, 1, "0000000000000000", 20, 4, 30, 10, -1)
    )  # fmt: skip


_u32 = st.integers(0, 2**32 - 1)


@settings(max_examples=300, deadline=None)
@given(
    v6=st.booleans(),
    data=st.data(),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    state=st.sampled_from(sorted(SOCKET_STATE_BY_CODE)),
    uid=_u32,
    inode=st.integers(0, 2**64 - 1),
    queues=st.tuples(_u32, _u32),
)
def test_proc_net_row_round_trips(
    v6: bool,
    data: st.DataObject,
    ports: tuple[int, int],
    state: int,
    uid: int,
    inode: int,
    queues: tuple[int, int],
) -> None:
    addresses = st.ip_addresses(v=6) if v6 else st.ip_addresses(v=4)
    local, remote = data.draw(addresses), data.draw(addresses)
    row = _proc_row(0, local, ports[0], remote, ports[1], state, *queues, uid, inode)
    result = p.parse_proc_net(row, "tcp6" if v6 else "tcp")
    assert result.skipped == 0
    [entry] = result.items
    assert (entry.local_ip, entry.local_port) == (local, ports[0])
    assert (entry.remote_ip, entry.remote_port) == (remote, ports[1])
    assert entry.state is SOCKET_STATE_BY_CODE[state]
    assert (entry.uid, entry.inode, entry.tx_queue, entry.rx_queue) == (uid, inode, *queues)


def test_proc_net_large_table_single_pass() -> None:
    rows = [
        _proc_row(i, ipaddress.IPv6Address(f"::ffff:10.0.{i % 250}.{i % 200}"), 40000 + i,
                  ipaddress.IPv6Address("2001:db8::1"), 443, 1, 0, 0, 10000 + i, 100000 + i)
        for i in range(5000)
    ]  # fmt: skip
    result = p.parse_proc_net("\n".join(rows), "tcp6")
    assert len(result.items) == 5000
    assert result.items[-1].uid == 14999
    assert str(result.items[7].local_ip_unmapped) == "10.0.7.7"


# --- settings ---------------------------------------------------------------------------------


def test_settings_list_sample() -> None:
    result = p.parse_settings_list(sample("settings_global.txt"))
    assert result.skipped == 0
    assert result.items["adb_enabled"] == "1"
    assert result.items["captive_portal_https_url"] == "https://www.google.com/generate_204"
    assert len(result.items) == 17


def test_settings_list_values_with_equals_empty_values_and_junk() -> None:
    text = (
        "url=https://x.example/?a=1&b=2\n"
        "empty=\n"
        "=novalue\n"
        "key with space=1\n"
        "just text\n"
        "\r\n"
        "crlf=yes\r\n"
    )
    result = p.parse_settings_list(text)
    assert result.items == {"url": "https://x.example/?a=1&b=2", "empty": "", "crlf": "yes"}
    assert result.skipped == 3


@pytest.mark.parametrize(
    ("output", "value"),
    [
        ("null\n", None),
        ("null", None),
        ("", None),
        ("1\n", "1"),
        ("1\r\n", "1"),
        ("\n", ""),
        (" spaced \n", " spaced "),
        ("a=b\n", "a=b"),
        (b"hostname\n", "hostname"),
    ],
)
def test_settings_get(output: str | bytes, value: str | None) -> None:
    assert p.parse_settings_get(output) == value


# --- service call parcels ---------------------------------------------------------------------


def test_parcel_imei() -> None:
    text = sample("service_call_iphonesubinfo_imei.txt")
    reply = p.parse_service_call_parcel(text)
    assert reply.ok
    assert reply.status == 0
    assert reply.text == "490154203237518"
    assert reply.words[:2] == (0, 15)
    assert p.imei_from_parcel(text) == "490154203237518"
    assert p.luhn_valid("490154203237518")


def test_parcel_security_exception() -> None:
    text = sample("service_call_iphonesubinfo_denied.txt")
    reply = p.parse_service_call_parcel(text)
    assert not reply.ok
    assert reply.status == -1
    assert reply.text == (
        "getDeviceId: The user 2000 does not meet the requirements to access device identifiers."
    )
    assert reply.error is not None and reply.error.startswith("SecurityException: getDeviceId")
    assert p.imei_from_parcel(text) is None


def test_parcel_verbatim_replies() -> None:
    bt = p.parse_service_call_parcel(sample("service_call_bluetooth_denied.txt"))
    assert bt.status == -1
    assert bt.text == (
        "Need BLUETOOTH ADMIN permission: Neither user 2000 nor current process has "
        "android.permission.BLUETOOTH_ADMIN."
    )
    true = p.parse_service_call_parcel(sample("service_call_bool_true.txt"))
    assert (true.ok, true.words, true.text) == (True, (0, 1), None)
    void = p.parse_service_call_parcel(sample("service_call_void.txt"))
    assert (void.ok, void.words, void.text) == (True, (0,), None)


@pytest.mark.parametrize(
    "text",
    [
        'Result: Parcel(Error: 0xffffffffffffffb6 "Bad message")',
        "Result: Parcel(NULL)",
        "service: Service iphonesubinfo does not exist",
        "",
        "Result: Parcel(\n)",
    ],
)
def test_parcel_failures(text: str) -> None:
    reply = p.parse_service_call_parcel(text)
    assert reply.status is None
    assert not reply.ok
    assert reply.error
    assert p.imei_from_parcel(text) is None


def test_parcel_error_message_is_kept() -> None:
    reply = p.parse_service_call_parcel('Result: Parcel(Error: 0xffffffb6 "Not a data message")')
    assert reply.error == "Not a data message (0xffffffb6)"


def _parcel_dump(data: bytes) -> str:
    """libbinder's Parcel::print + HexDump layout for a reply of more than 16 bytes."""
    lines = ["Result: Parcel("]
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        words = [struct.unpack("<I", chunk[i : i + 4])[0] for i in range(0, len(chunk), 4)]
        hexcol = " ".join(f"{w:08x}" for w in words).ljust(36)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk).ljust(16)
        lines.append(f"  0x{off:08x}: {hexcol}'{text}'")
    lines[-1] += ")"
    return "\n".join(lines) + "\n"


def _string16_reply(status: int, value: str, header: bytes = b"") -> bytes:
    units = value.encode("utf-16-le")
    data = header + struct.pack("<ii", status, len(units) // 2) + units + b"\0\0"
    return data + b"\0" * (-len(data) % 4)


def test_parcel_strictmode_reply_header_is_skipped() -> None:
    # EX_HAS_STRICTMODE_REPLY_HEADER, a header of 8 bytes (its size word and one more), then
    # the return value without a status word of its own.
    header = struct.pack("<iii", -128, 8, 0)
    units = "358240051111110".encode("utf-16-le")
    data = header + struct.pack("<i", 15) + units + b"\0\0"
    reply = p.parse_service_call_parcel(_parcel_dump(data))
    assert (reply.status, reply.text) == (0, "358240051111110")


@pytest.mark.parametrize("value", ["1234567890123", "35824005111111A", "12345678901234567", ""])
def test_imei_rejects_wrong_lengths_and_letters(value: str) -> None:
    assert p.imei_from_parcel(_parcel_dump(_string16_reply(0, value + "    "))) is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0xD7FF), max_size=60))
def test_parcel_string16_round_trips(value: str) -> None:
    reply = p.parse_service_call_parcel(_parcel_dump(_string16_reply(0, value)))
    assert reply.ok
    assert reply.text == value


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789", min_size=14, max_size=16))
def test_imei_round_trips(digits: str) -> None:
    assert p.imei_from_parcel(_parcel_dump(_string16_reply(0, digits))) == digits


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("490154203237518", True),
        ("490154203237517", False),
        ("353626072090389", True),
        ("79927398713", True),
        ("0", True),
        ("", False),
        ("4901542032375l8", False),
        ("٤٩٠", False),  # non-ASCII digits
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert p.luhn_valid(digits) is valid


# --- CA store ---------------------------------------------------------------------------------


def test_ca_store_ls_l_sample() -> None:
    result = p.parse_ca_store_listing(sample("cacerts_ls_l.txt"))
    assert result.skipped == 0  # "total 2408"
    assert [(c.name, c.subject_hash, c.index, c.size) for c in result.items[:2]] == [
        ("00673b5b.0", "00673b5b", 0, 4767),
        ("02756ea4.0", "02756ea4", 0, 7195),
    ]
    assert len(result.items) == 6


def test_ca_store_plain_ls_sample() -> None:
    result = p.parse_ca_store_listing(sample("cacerts_ls.txt"))
    assert [c.name for c in result.items] == [
        "00673b5b.0",
        "02756ea4.0",
        "02b73561.0",
        "03f2b8cf.0",
        "04f60c28.0",
        "052e396b.0",
    ]
    assert all(c.size is None for c in result.items)


def test_ca_store_other_listing_forms_and_junk() -> None:
    text = (
        "total 24\n"
        "drwxr-xr-x  2 system system 4096 2024-03-01 10:00 .\n"
        "drwxr-xr-x  5 system system 4096 2024-03-01 10:00 ..\n"
        "-rw-r--r--  1 system system 1476 2024-03-01 10:00 c8750f0d.0\n"
        "-rw-r--r--  1 system system 1480 2024-03-01 10:01 c8750f0d.1\n"
        "-rw-r--r-- 1 root root u:object_r:system_security_cacerts_file:s0 2135 2009-01-01 08:00 "
        "9a5ba575.0\n"
        "lrwxrwxrwx 1 root root 42 2009-01-01 08:00 1df5a75f.0 -> /apex/x/1df5a75f.0\n"
        "00673b5b.0  02756ea4.0\t02b73561.0\n"
        "/system/etc/security/cacerts/03f2b8cf.0\n"
        "ls: /data/misc/user/0/cacerts-added: No such file or directory\n"
        "-rw-r--r-- 1 root root 12 2009-01-01 08:00 README.txt\n"
        "C8750F0D.0\n"
    )
    result = p.parse_ca_store_listing(text)
    assert [(c.name, c.index, c.size) for c in result.items] == [
        ("c8750f0d.0", 0, 1476),
        ("c8750f0d.1", 1, 1480),
        ("9a5ba575.0", 0, 2135),
        ("1df5a75f.0", 0, 42),
        ("00673b5b.0", 0, None),
        ("02756ea4.0", 0, None),
        ("02b73561.0", 0, None),
        ("03f2b8cf.0", 0, None),
    ]
    assert result.skipped == 3
    assert p.parse_ca_store_listing("").items == []


def test_subject_hash_old_of_the_mitmproxy_ca() -> None:
    # mitmproxy's CA (CN=mitmproxy, O=mitmproxy) is installed on Android as c8750f0d.0; the
    # hash depends on the subject alone, so a fresh key gives the same name.
    cert, _ = self_signed(
        x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "mitmproxy"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mitmproxy"),
            ]
        )
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert p.subject_hash_old(pem) == "c8750f0d"
    assert p.subject_hash_old(der) == "c8750f0d"
    # Android's cacerts files hold the PEM block followed by `openssl x509 -text` output.
    assert p.subject_hash_old(pem.decode() + "Certificate:\n    Data:\n") == "c8750f0d"


def test_subject_hash_old_names_a_real_android_system_ca() -> None:
    # ISRG Root X1 is /system/etc/security/cacerts/6187b673.0 on Android 7.1.1 and later
    pem = (SAMPLES / "isrg-root-x1.pem").read_bytes()
    assert p.subject_hash_old(pem) == "6187b673"
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert p.subject_hash_old(der) == "6187b673"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
@pytest.mark.parametrize(
    "name",
    [
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auditor test CA")]),
        x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                x509.NameAttribute(
                    NameOID.ORGANIZATION_NAME,
                    "Prüfstelle GmbH",
                    _type=x509.name._ASN1Type.BMPString,
                ),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, "Root R7", _type=x509.name._ASN1Type.PrintableString
                ),
            ]
        ),
    ],
)
def test_subject_hash_old_matches_openssl(name: x509.Name, tmp_path: Path) -> None:
    cert, _ = self_signed(name)
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    expected = subprocess.run(
        ["openssl", "x509", "-subject_hash_old", "-noout", "-in", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert p.subject_hash_old(path.read_bytes()) == expected
    assert len(expected) == 8


@pytest.mark.parametrize("data", [b"", b"not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_subject_hash_old_rejects_non_certificates(data: bytes | str) -> None:
    with pytest.raises(ValueError):
        p.subject_hash_old(data)


# --- logcat -----------------------------------------------------------------------------------


def test_logcat_sample() -> None:
    result = p.parse_logcat(sample("logcat_epoch_uid.txt"))
    assert result.skipped == 0  # the "--------- beginning of" markers
    lines = result.items
    assert [(x.uid, x.uid_name, x.pid, x.tid, x.level, x.tag) for x in lines] == [
        (1000, "1000", 1234, 1250, LogLevel.INFO, "ActivityManager"),
        (10123, "10123", 5321, 5321, LogLevel.DEBUG, "OkHttp"),
        (2000, "shell", 4321, 4321, LogLevel.INFO, "AndroidRuntime"),
        (0, "root", 612, 612, LogLevel.WARN, "auditd"),
        (10005, "u0_a5", 2210, 2240, LogLevel.ERROR, "chatty"),
    ]
    assert lines[0].timestamp == pytest.approx(1700000000.123)
    assert lines[1].message == "--> POST https://telemetry.example.com/v1/events"
    assert lines[3].message.startswith("avc: denied { read } for name=")


def test_logcat_line_forms() -> None:
    no_uid = p.parse_logcat_epoch_uid("   1700000000.000123  1234  1250 V Tag: a: b: c")
    assert no_uid is not None
    assert (no_uid.uid, no_uid.uid_name, no_uid.pid, no_uid.tid) == (None, None, 1234, 1250)
    assert (no_uid.tag, no_uid.message) == ("Tag", "a: b: c")
    assert no_uid.timestamp == pytest.approx(1700000000.000123)
    empty = p.parse_logcat_epoch_uid("1700000000.123  1000  1  2 F         :")
    assert empty is not None
    assert (empty.level, empty.tag, empty.message) == (LogLevel.FATAL, "", "")
    assert p.parse_logcat_epoch_uid(b"1700000000.123 system  1  2 I T: m\r\n") is not None


@pytest.mark.parametrize(
    "line",
    [
        "--------- beginning of main",
        "",
        "11-14 22:13:20.123  1000  1234  1250 I Tag: threadtime, not epoch",
        "1700000000.123  1000  1234  1250 X Tag: bad level",
        "1700000000.123  1000 I Tag: pid only",
        "1700000000.123  1000  1234  1250 I Tag no colon",
        "1700000000.123  1000  1234  1250 I Tag: two\nlines",
    ],
)
def test_logcat_rejects(line: str) -> None:
    assert p.parse_logcat_epoch_uid(line) is None


@pytest.mark.parametrize(
    ("name", "uid"),
    [
        ("0", 0),
        ("10123", 10123),
        ("root", 0),
        ("system", 1000),
        ("shell", 2000),
        ("nobody", 9999),
        ("u0_a123", 10123),
        ("u0_a5", 10005),
        ("u10_a5", 1010005),
        ("app_42", 10042),
        ("u0_i3", None),
        ("u0_a99999", None),
        ("someone", None),
        ("٤٢", None),
    ],
)
def test_uid_from_name(name: str, uid: int | None) -> None:
    assert p.uid_from_name(name) == uid


# --- foreground activity ----------------------------------------------------------------------


def test_resumed_activity_android_12_layout() -> None:
    ref = p.parse_dumpsys_activity_resumed(sample("dumpsys_activity_activities.txt"))
    assert ref is not None
    assert (ref.package, ref.class_name, ref.user_id) == (
        "com.example.tracker",
        "com.example.tracker.MainActivity",
        0,
    )
    assert ref.component == "com.example.tracker/.MainActivity"


def test_resumed_activity_prefers_the_global_line() -> None:
    text = (
        "    topResumedActivity=ActivityRecord{1 u0 com.other/.Pip t3}\n"
        "  ResumedActivity: ActivityRecord{2 u10 com.focused/com.focused.ui.Main t9}\n"
    )
    ref = p.parse_dumpsys_activity_resumed(text)
    assert ref is not None
    assert (ref.component, ref.user_id) == ("com.focused/.ui.Main", 10)
    only_top = "\n".join(
        line
        for line in sample("dumpsys_activity_activities.txt").splitlines()
        if "ResumedActivity:" not in line
    )
    ref = p.parse_dumpsys_activity_resumed(only_top)
    assert ref is not None and ref.package == "com.example.tracker"


def test_resumed_activity_legacy_layout() -> None:
    text = sample("dumpsys_activity_activities_legacy.txt")
    ref = p.parse_dumpsys_activity_resumed(text)
    assert ref is not None and ref.component == "com.example.tracker/.MainActivity"
    focused_only = "\n".join(x for x in text.splitlines() if "mResumedActivity" not in x)
    ref = p.parse_dumpsys_activity_resumed(focused_only)
    assert ref is not None and ref.package == "com.example.tracker"


def test_resumed_activity_absent() -> None:
    assert p.parse_dumpsys_activity_resumed("") is None
    assert p.parse_dumpsys_activity_resumed("  mResumedActivity: null\n") is None
    assert p.parse_dumpsys_activity_resumed("  Resumed: ActivityRecord{malformed}\n") is None


def test_window_focus() -> None:
    ref = p.parse_dumpsys_window_focus(sample("dumpsys_window.txt"))
    assert ref is not None
    assert (ref.package, ref.class_name, ref.user_id) == (
        "com.example.tracker",
        "com.example.tracker.MainActivity",
        0,
    )
    other_package = p.parse_dumpsys_window_focus(
        "  mCurrentFocus=Window{5b5d6ea u10 com.x/com.y.Main}\n"
    )
    assert other_package is not None
    assert (other_package.component, other_package.user_id) == ("com.x/com.y.Main", 10)


def test_window_focus_falls_back_to_the_focused_app_or_none() -> None:
    text = (
        "  mCurrentFocus=Window{1b9f0c4 u0 NotificationShade}\n"
        "  mFocusedApp=ActivityRecord{9a4f0d1 u0 com.example.tracker/.MainActivity t12}\n"
    )
    ref = p.parse_dumpsys_window_focus(text)
    assert ref is not None and ref.class_name == "com.example.tracker.MainActivity"
    assert p.parse_dumpsys_window_focus("  mCurrentFocus=Window{1b9f0c4 u0 StatusBar}\n") is None
    assert p.parse_dumpsys_window_focus("  mCurrentFocus=null\n  mFocusedApp=null\n") is None


# --- private DNS and proxy --------------------------------------------------------------------


def test_private_dns_from_the_sample() -> None:
    settings_ = p.parse_settings_list(sample("settings_global.txt")).items
    dns = p.parse_private_dns(settings_)
    assert (dns.mode, dns.hostname, dns.explicit, dns.raw_mode) == (
        PrivateDnsMode.HOSTNAME,
        "dns.example.net",
        True,
        None,
    )
    assert p.parse_global_proxy(settings_["http_proxy"]) == ("192.168.1.20", 8080)
    assert p.global_proxy_from_settings(settings_) == ("192.168.1.20", 8080)


@pytest.mark.parametrize(
    ("settings_", "mode", "hostname", "explicit"),
    [
        ({}, PrivateDnsMode.OPPORTUNISTIC, None, False),
        ({"private_dns_mode": "null"}, PrivateDnsMode.OPPORTUNISTIC, None, False),
        ({"private_dns_default_mode": "off"}, PrivateDnsMode.OFF, None, False),
        (
            {"private_dns_mode": "off", "private_dns_specifier": "dns.example"},
            PrivateDnsMode.OFF,
            None,
            True,
        ),
        ({"private_dns_mode": "hostname"}, PrivateDnsMode.HOSTNAME, None, True),
        ({"private_dns_mode": "opportunistic"}, PrivateDnsMode.OPPORTUNISTIC, None, True),
    ],
)
def test_private_dns_modes(
    settings_: dict[str, str], mode: PrivateDnsMode, hostname: str | None, explicit: bool
) -> None:
    dns = p.parse_private_dns(settings_)
    assert (dns.mode, dns.hostname, dns.explicit) == (mode, hostname, explicit)


def test_private_dns_unknown_mode_is_kept() -> None:
    dns = p.parse_private_dns({"private_dns_mode": "predefined"})
    assert (dns.mode, dns.raw_mode) == (PrivateDnsMode.UNKNOWN, "predefined")


@pytest.mark.parametrize(
    ("value", "proxy"),
    [
        ("192.168.1.20:8080", ("192.168.1.20", 8080)),
        ("proxy.lan:3128\n", ("proxy.lan", 3128)),
        ("proxy.lan", ("proxy.lan", 8080)),
        ("proxy.lan:", ("proxy.lan", 8080)),
        (b"10.0.2.2:8000", ("10.0.2.2", 8000)),
        (":0", None),
        ("null", None),
        ("", None),
        (None, None),
        ("host:0", None),
        ("host:http", None),
        ("host:70000", None),
        ("host: 80", None),
    ],
)
def test_global_proxy(value: str | bytes | None, proxy: tuple[str, int] | None) -> None:
    assert p.parse_global_proxy(value) == proxy


def test_global_proxy_device_policy_settings_win() -> None:
    settings_ = {
        "global_http_proxy_host": "policy.example",
        "global_http_proxy_port": "3128",
        "http_proxy": "other:8080",
    }
    assert p.global_proxy_from_settings(settings_) == ("policy.example", 3128)
    assert p.global_proxy_from_settings({"global_http_proxy_host": "h"}) is None
    assert p.global_proxy_from_settings({}) is None


# --- no parser crashes on junk ----------------------------------------------------------------

_TEXT_PARSERS: dict[str, Callable[[Any], object]] = {
    "getprop": p.parse_getprop,
    "pm": p.parse_pm_list_packages,
    "dumpsys_package": p.parse_dumpsys_package,
    "tcp": lambda t: p.parse_proc_net(t, "tcp"),
    "udp6": lambda t: p.parse_proc_net(t, "udp6"),
    "settings_list": p.parse_settings_list,
    "settings_get": p.parse_settings_get,
    "parcel": p.parse_service_call_parcel,
    "imei": p.imei_from_parcel,
    "ca_store": p.parse_ca_store_listing,
    "logcat_line": p.parse_logcat_epoch_uid,
    "logcat": p.parse_logcat,
    "activity": p.parse_dumpsys_activity_resumed,
    "window": p.parse_dumpsys_window_focus,
    "proxy": p.parse_global_proxy,
    "uid_name": lambda t: p.uid_from_name(t.decode("utf-8", "replace") if isinstance(t, bytes)
                                          else t),
    "luhn": lambda t: p.luhn_valid(t if isinstance(t, str) else t.decode("latin-1")),
}  # fmt: skip

_SAMPLE_LINES = sorted(
    {line for path in SAMPLES.glob("*.txt") for line in path.read_text().splitlines()}
)
_FRAGMENTS = ["[", "]: [", "]", "package:", "=", ":", "'", ")", "Parcel(", "0x00000000: ",
              "ffffffff", "00000000", "  ", "    ", "      ", "User 0:", "\t", "\r", "\x00",
              "Package [a] (1):", "->", "uid:", "Window{1 u0 a/b}"]  # fmt: skip


@st.composite
def _near_miss_text(draw: st.DrawFn) -> str:
    """Lines of the real samples, cut, joined and sprinkled with the formats' punctuation."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from(_SAMPLE_LINES).flatmap(
                    lambda line: st.integers(0, len(line)).map(lambda n: line[:n])
                ),
                st.sampled_from(_FRAGMENTS),
                st.text(max_size=8),
            ),
            max_size=30,
        )
    )
    seps = draw(st.lists(st.sampled_from(["", "\n", " ", "\r\n"]), min_size=len(pieces),
                         max_size=len(pieces)))  # fmt: skip
    return "".join(piece + sep for piece, sep in zip(pieces, seps, strict=True))


@pytest.mark.parametrize("name", sorted(_TEXT_PARSERS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(), _near_miss_text(), st.binary()))
def test_no_parser_raises_on_random_text(name: str, text: str | bytes) -> None:
    _TEXT_PARSERS[name](text)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["private_dns_mode", "private_dns_specifier",
                                        "private_dns_default_mode", "http_proxy",
                                        "global_http_proxy_host", "global_http_proxy_port"]),
                       st.text()))  # fmt: skip
def test_settings_helpers_accept_any_values(settings_: dict[str, str]) -> None:
    p.parse_private_dns(settings_)
    p.global_proxy_from_settings(settings_)

"""The device profile: who the handset is, what it runs, and the identifiers it could leak.

Stored in the session manifest; its identifiers are what the analyser later searches the
traffic for. An identifier that cannot be read is recorded as unavailable with the reason;
nothing is ever guessed.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from auditor.device import parsers
from auditor.device.handset import Handset
from auditor.errors import DeviceError
from auditor.timeutil import now_iso

log = logging.getLogger(__name__)

USER_CA_DIR = "/data/misc/user/0/cacerts-added"
SYSTEM_CA_DIR = "/system/etc/security/cacerts"
APEX_CA_DIR = "/apex/com.android.conscrypt/cacerts"
ADID_PREFS = "/data/data/com.google.android.gms/shared_prefs/adid_settings.xml"


@dataclass(frozen=True, slots=True)
class Identifier:
    name: str
    value: str | None
    source: str  # the command or file it was read from
    reason: str | None = None  # why it is unavailable


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    uid: int | None
    version_name: str | None
    version_code: int | None
    installer: str | None
    system: bool
    apk_path: str | None


@dataclass
class DeviceProfile:
    serial: str
    collected_at: str
    manufacturer: str
    brand: str
    model: str
    device: str
    android_release: str
    sdk: int | None
    fingerprint: str
    security_patch: str
    build_type: str
    region: str
    locale: str
    sim_operator: str
    virtual: bool
    root: str | None
    root_detail: str
    identifiers: list[Identifier] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)
    global_proxy: str | None = None
    private_dns_mode: str | None = None
    private_dns_specifier: str | None = None
    user_ca_certs: list[str] | None = None
    user_ca_certs_reason: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["packages"] = sorted(d["packages"], key=lambda p: p["name"])
        return d

    def identifier_values(self) -> dict[str, str]:
        """name -> value for every identifier that was read."""
        return {i.name: i.value for i in self.identifiers if i.value}

    def uid_map(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for p in self.packages:
            if p.uid is not None:
                out.setdefault(p.uid, []).append(p.name)
        return out


# The `service call iphonesubinfo` transaction that returns the IMEI moved between releases,
# and from Android 10 it needs a privileged caller (root) and the calling package.
def imei_calls(sdk: int | None) -> list[str]:
    pkg = "s16 com.android.shell"
    calls = ["service call iphonesubinfo 1", f"service call iphonesubinfo 1 {pkg}"]
    if sdk is not None and sdk >= 29:
        calls = [f"service call iphonesubinfo 1 {pkg}", f"service call iphonesubinfo 4 i32 0 {pkg}"]
    return calls


def _try(profile: DeviceProfile, what: str, fn: Callable[[], Any]) -> Any:
    """Run one part of the profile; a failure becomes a warning, and the rest goes on."""
    try:
        return fn()
    except DeviceError as exc:
        profile.warnings.append(f"{what}: {exc}")
        log.warning("profile: %s: %s", what, exc)
        return None


def collect_profile(h: Handset, *, with_packages: bool = True) -> DeviceProfile:
    props = parsers.parse_getprop(h.sh("getprop").check().stdout).items
    sdk_text = props.get("ro.build.version.sdk", "")
    root = h.root_method()
    p = DeviceProfile(
        serial=h.serial,
        collected_at=now_iso(),
        manufacturer=props.get("ro.product.manufacturer", ""),
        brand=props.get("ro.product.brand", ""),
        model=props.get("ro.product.model", ""),
        device=props.get("ro.product.device", ""),
        android_release=props.get("ro.build.version.release", ""),
        sdk=int(sdk_text) if sdk_text.isdigit() else None,
        fingerprint=props.get("ro.build.fingerprint", ""),
        security_patch=props.get("ro.build.version.security_patch", ""),
        build_type=props.get("ro.build.type", ""),
        region=(
            props.get("ro.miui.region")
            or props.get("ro.product.locale.region")
            or props.get("persist.sys.country")
            or props.get("gsm.operator.iso-country", "")
        ),
        locale=props.get("persist.sys.locale") or props.get("ro.product.locale", ""),
        sim_operator=props.get("gsm.sim.operator.alpha") or props.get("gsm.operator.alpha", ""),
        virtual=props.get("ro.auditor.virtual") == "1",
        root=root,
        root_detail={
            "adbd": "adbd runs as root (adb root accepted)",
            "su": "su works (adbd itself is not root)",
            None: "no root: adbd is not root and su is absent or refused",
        }[root],
        properties=props,
    )
    p.identifiers = _identifiers(h, p, props)
    if with_packages:
        p.packages = _try(p, "packages", lambda: _packages(h)) or []
    p.global_proxy = _try(p, "proxy", lambda: h.setting_get("global", "http_proxy"))
    p.private_dns_mode = _try(p, "private DNS", lambda: h.setting_get("global", "private_dns_mode"))
    p.private_dns_specifier = _try(
        p, "private DNS", lambda: h.setting_get("global", "private_dns_specifier")
    )
    if root:
        listing = _try(p, "user CA store", lambda: h.su(f"ls {USER_CA_DIR}"))
        if listing is not None and listing.ok:
            p.user_ca_certs = sorted(
                c.name for c in parsers.parse_ca_store_listing(listing.stdout).items
            )
        elif listing is not None:
            p.user_ca_certs = []  # the folder does not exist until a user CA is added
    else:
        p.user_ca_certs_reason = f"{USER_CA_DIR} is readable by root only"
    return p


def _identifiers(h: Handset, p: DeviceProfile, props: dict[str, str]) -> list[Identifier]:
    ids: list[Identifier] = []

    def add(name: str, value: str | None, source: str, reason: str | None = None) -> None:
        value = (value or "").strip() or None
        ids.append(Identifier(name, value, source, None if value else reason or "empty"))

    aid = _try(p, "android_id", lambda: h.setting_get("secure", "android_id"))
    add("android_id", aid, "settings get secure android_id", "not set")

    serial = props.get("ro.serialno") or props.get("ro.boot.serialno")
    src = "getprop ro.serialno" if props.get("ro.serialno") else "getprop ro.boot.serialno"
    if not serial and p.root:
        r = _try(p, "serial", lambda: h.su("getprop ro.serialno"))
        serial = r.stdout.strip() if r is not None and r.ok else None
        src = "su: getprop ro.serialno"
    add("serial", serial, src, "ro.serialno is hidden from the shell user since Android 8")

    imei, imei_src, imei_reason = None, "service call iphonesubinfo", "no answer"
    for call in imei_calls(p.sdk):
        r = _try(p, "imei", partial(h.su if p.root else h.sh, call))
        if r is None:
            continue
        parsed = parsers.parse_service_call_parcel(r.stdout)
        value = parsers.imei_from_parcel(r.stdout)
        if value:
            imei, imei_src = value, call + (" (as root)" if p.root else "")
            break
        imei_reason = parsed.error or "the parcel held no IMEI"
    if imei is None and not p.root and p.sdk is not None and p.sdk >= 29:
        imei_reason = "Android 10+ gives the IMEI to privileged callers only, and there is no root"
    add("imei", imei, imei_src, imei_reason)

    mac, mac_src, mac_reason = None, "cat /sys/class/net/wlan0/address", "no wlan0"
    r = _try(p, "wifi_mac", lambda: h.sh("cat /sys/class/net/wlan0/address"))
    if r is not None and r.ok and re.fullmatch(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", r.stdout.strip()):
        mac = r.stdout.strip()
    elif p.root:
        r = _try(p, "wifi_mac", lambda: h.su("cat /sys/class/net/wlan0/address"))
        if r is not None and r.ok and r.stdout.strip():
            mac, mac_src = r.stdout.strip(), "su: cat /sys/class/net/wlan0/address"
    else:
        mac_reason = "unreadable without root on this release"
    add("wifi_mac", mac, mac_src, mac_reason)

    if p.root:
        r = _try(p, "advertising_id", lambda: h.su(f"cat {shlex.quote(ADID_PREFS)}"))
        m = re.search(r'name="adid_key">([0-9a-fA-F-]{36})<', r.stdout) if r is not None else None
        add(
            "advertising_id",
            m.group(1) if m else None,
            f"su: cat {ADID_PREFS}",
            "no Google advertising ID on this device (no GMS, or not created yet)",
        )
    else:
        add("advertising_id", None, ADID_PREFS, "needs root to read Google Play services' data")
    return ids


def _packages(h: Handset) -> list[Package]:
    listing = parsers.parse_pm_list_packages(h.sh("pm list packages -U -f -i").check().stdout).items
    system = {
        e.name for e in parsers.parse_pm_list_packages(h.sh("pm list packages -s").stdout).items
    }
    details = {
        d.name: d
        for d in parsers.parse_dumpsys_package(h.sh("dumpsys package", timeout=120).stdout).items
    }
    out = []
    for e in listing:
        d = details.get(e.name)
        out.append(
            Package(
                name=e.name,
                uid=e.uid if e.uid is not None else (d.app_id if d else None),
                version_name=d.version_name if d else None,
                version_code=d.version_code if d else e.version_code,
                installer=e.installer or (d.installer if d else None),
                system=e.name in system or bool(d and "SYSTEM" in d.pkg_flags),
                apk_path=e.apk_path,
            )
        )
    return sorted(out, key=lambda pkg: pkg.name)

"""The device profile: who the handset is, what it runs, and the identifiers it could leak.

Stored in the session manifest; its identifiers are what the analyser later searches the
traffic for. An identifier that cannot be read is recorded as unavailable with the reason;
nothing is ever guessed.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from auditor.device import parsers
from auditor.device.handset import Handset
from auditor.device.model import PackageDetails
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
    """An installed package. For a system app updated since the factory image, ``version_*``
    is the installed update's and ``factory_version_*`` the copy on the system image."""

    name: str
    uid: int | None
    version_name: str | None
    version_code: int | None
    installer: str | None
    system: bool
    apk_path: str | None
    updated_system_app: bool = False
    factory_version_name: str | None = None
    factory_version_code: int | None = None


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
    region: str | None  # one upper-case ISO 3166 code, or None when unknown or ambiguous
    locale: str
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
    region_source: str | None = None  # the property the region was read from
    # One entry per SIM slot that holds a value (empty slots dropped), slot order.
    sim_operators: list[str] = field(default_factory=list)
    sim_countries: list[str] = field(default_factory=list)
    network_operators: list[str] = field(default_factory=list)
    network_countries: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["packages"] = sorted(d["packages"], key=lambda p: p["name"])
        return d

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
        region=None,
        locale=device_locale(props),
        virtual=props.get("ro.auditor.virtual") == "1",
        root=root,
        root_detail={
            "adbd": "adbd runs as root (adb root accepted)",
            "su": "su works (adbd itself is not root)",
            None: "no root: adbd is not root and su is absent or refused",
        }[root],
        properties=props,
    )
    apply_telephony(p, props)
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
    return build_packages(
        h.sh("pm list packages -U -f -i").check().stdout,
        h.sh("pm list packages -s").stdout,
        h.sh("dumpsys package", timeout=120).stdout,
    )


def installed_and_factory(
    details: Iterable[PackageDetails],
) -> dict[str, tuple[PackageDetails | None, PackageDetails | None]]:
    """name -> (the installed copy, the factory copy of an updated system app).

    ``dumpsys package`` lists an updated system app twice, the update in ``Packages:`` and
    the system image's copy in ``Hidden system packages:``; which comes last depends on the
    dump, so the two are told apart by their section, never by their order. The first block
    of each kind counts.
    """
    out: dict[str, tuple[PackageDetails | None, PackageDetails | None]] = {}
    for d in details:
        installed, factory = out.get(d.name, (None, None))
        if d.hidden_system:
            factory = factory or d
        else:
            installed = installed or d
        out[d.name] = (installed, factory)
    return out


def build_packages(listing_text: str, system_text: str, dumpsys_text: str) -> list[Package]:
    """The package list from ``pm list packages -U -f -i``, ``pm list packages -s`` and
    ``dumpsys package``, sorted by name."""
    listing = parsers.parse_pm_list_packages(listing_text).items
    system = {e.name for e in parsers.parse_pm_list_packages(system_text).items}
    pairs = installed_and_factory(parsers.parse_dumpsys_package(dumpsys_text).items)
    out = []
    for e in listing:
        d, factory = pairs.get(e.name, (None, None))
        either = d or factory
        out.append(
            Package(
                name=e.name,
                uid=e.uid if e.uid is not None else (either.app_id if either else None),
                version_name=d.version_name if d else None,
                version_code=d.version_code if d else e.version_code,
                installer=e.installer or (d.installer if d else None),
                system=e.name in system or bool(d and d.is_system) or factory is not None,
                apk_path=e.apk_path,
                updated_system_app=factory is not None or bool(d and d.is_updated_system_app),
                factory_version_name=factory.version_name if factory else None,
                factory_version_code=factory.version_code if factory else None,
            )
        )
    return sorted(out, key=lambda pkg: pkg.name)


# --- Region, locale and SIMs ------------------------------------------------------------------

_COUNTRY = re.compile(r"[A-Za-z]{2}", re.ASCII)
_SLOT_KEY = re.compile(r"\.([2-9])")
# Where the region is read from, most specific first: a vendor's region setting, the build's
# default locale region, the user's locale country up to Android 5.1. The SIM and network
# countries come after these, and only when every slot agrees.
REGION_PROPERTIES = ("ro.miui.region", "ro.product.locale.region", "persist.sys.country")
REGION_SLOT_PROPERTIES = ("gsm.operator.iso-country", "gsm.sim.operator.iso-country")


def country_code(value: str) -> str | None:
    """An ISO 3166-1 alpha-2 code as Android stores it (``in``, ``US``), upper-cased;
    ``None`` for anything that is not two ASCII letters."""
    value = value.strip()
    return value.upper() if _COUNTRY.fullmatch(value) else None


def slot_values(props: Mapping[str, str], key: str) -> list[str]:
    """The per-SIM values of a telephony property, in slot order, empty slots dropped.

    Android keeps one value per SIM slot in one property, joined by commas
    (``TelephonyManager.setTelephonyProperty``): ``in,in``, ``ca,`` with an empty second
    slot, ``,SK Telecom`` with an empty first. Older MediaTek dual-SIM builds keep the second
    slot in a property of its own, ``<key>.2``.
    """
    values = props.get(key, "").split(",")
    extra = sorted(
        (int(m.group(1)), v)
        for k, v in props.items()
        if k.startswith(key) and (m := _SLOT_KEY.fullmatch(k, len(key))) is not None
    )
    values += [v for _, v in extra]
    return [v.strip() for v in values if v.strip()]


def slot_countries(props: Mapping[str, str], key: str, warnings: list[str]) -> list[str]:
    """The well-formed country codes of :func:`slot_values`; a malformed one is dropped and
    noted in ``warnings``."""
    codes = []
    for value in slot_values(props, key):
        code = country_code(value)
        if code is None:
            warnings.append(f"getprop {key}: {value!r} is not a country code, ignored")
        else:
            codes.append(code)
    return codes


def device_region(
    props: Mapping[str, str], warnings: list[str] | None = None
) -> tuple[str | None, str | None]:
    """(region, the property it came from): the first well-formed of
    :data:`REGION_PROPERTIES`, else the country every SIM slot's network (then every SIM)
    agrees on; ``(None, None)`` when there is none or the slots disagree."""
    notes: list[str] = [] if warnings is None else warnings
    for key in REGION_PROPERTIES:
        value = props.get(key, "").strip()
        code = country_code(value)
        if code is not None:
            return code, key
        if value:
            notes.append(f"getprop {key}: {value!r} is not a country code, ignored")
    for key in REGION_SLOT_PROPERTIES:
        codes = set(slot_countries(props, key, []))  # noted by apply_telephony
        if len(codes) == 1:
            return codes.pop(), key
    return None, None


def device_locale(props: Mapping[str, str]) -> str:
    """The system locale as a BCP 47 tag, read in the order ``AndroidRuntime::readLocale``
    reads it: ``persist.sys.locale`` (Android 6 on), ``persist.sys.language`` with
    ``persist.sys.country`` and ``persist.sys.localevar`` (up to Android 5.1),
    ``ro.product.locale``, then ``ro.product.locale.language`` with
    ``ro.product.locale.region``. ``""`` when none is set (Android would assume en-US; the
    profile does not guess)."""

    def get(key: str) -> str:
        return props.get(key, "").strip()

    if get("persist.sys.locale"):
        return get("persist.sys.locale")
    if get("persist.sys.language"):
        parts = [get("persist.sys.language"), get("persist.sys.country")]
        return "-".join(x for x in [*parts, get("persist.sys.localevar")] if x)
    if get("ro.product.locale"):
        return get("ro.product.locale")
    parts = [get("ro.product.locale.language"), get("ro.product.locale.region")]
    return "-".join(x for x in parts if x) if parts[0] else ""


def apply_telephony(p: DeviceProfile, props: Mapping[str, str]) -> None:
    """Sets the profile's region and its per-SIM operators and countries from ``getprop``."""
    p.region, p.region_source = device_region(props, p.warnings)
    p.sim_operators = slot_values(props, "gsm.sim.operator.alpha")
    p.network_operators = slot_values(props, "gsm.operator.alpha")
    p.sim_countries = slot_countries(props, "gsm.sim.operator.iso-country", p.warnings)
    p.network_countries = slot_countries(props, "gsm.operator.iso-country", p.warnings)

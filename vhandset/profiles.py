"""Device profiles of the virtual handset: typed data loaded from ``profiles/*.yaml``.

A profile describes one phone as the host sees it over ADB: its build properties, installed
packages, identifiers, settings and network state. The values are synthetic (each file says so
in ``source``); only their shapes follow real devices. :func:`load_profile` validates a file
so that a broken profile fails at load time with one clear message, not mid-session.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from vhandset.errors import VhandsetError

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).with_name("profiles")

REQUIRED_PROPS = (
    "ro.product.brand",
    "ro.product.manufacturer",
    "ro.product.model",
    "ro.product.name",
    "ro.product.device",
    "ro.product.locale",
    "ro.build.id",
    "ro.build.type",
    "ro.build.tags",
    "ro.build.fingerprint",
    "ro.build.version.release",
    "ro.build.version.sdk",
    "ro.build.version.security_patch",
    "ro.boot.serialno",
    "ro.serialno",
    "persist.sys.timezone",
    "gsm.sim.operator.alpha",
    "gsm.sim.operator.numeric",
    "gsm.operator.iso-country",
    "ro.auditor.virtual",
)

SETTINGS_NAMESPACES = ("global", "secure", "system")
_PACKAGE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_HEX16_RE = re.compile(r"^[0-9a-f]{16}$")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ProfileError(VhandsetError):
    """A device profile is missing or malformed."""


class SuFlavor(StrEnum):
    """Which ``su`` binary a rooted profile ships (their command lines differ)."""

    NONE = "none"
    MAGISK = "magisk"  # su [-c CMD] [USER [CMD...]]
    AOSP = "aosp"  # userdebug /system/xbin/su: su [WHO [COMMAND...]]


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    version_name: str
    version_code: int
    uid: int
    path: str  # APK path as `pm path` prints it
    system: bool
    installer: str | None = None
    launchable: bool = False
    activity: str | None = None  # launcher activity class, required when launchable
    shared_user: str | None = None
    min_sdk: int = 21
    target_sdk: int = 29
    first_install: int = 1230768000  # epoch seconds; system apps carry the image date
    last_update: int = 1230768000
    updated_system: bool = False  # a system app updated from a store (path under /data/app)
    persistent: bool = False  # a process is running from boot

    @property
    def component(self) -> str | None:
        """The launcher component in ``flattenToShortString`` form (``pkg/.Act`` or ``pkg/cls``)."""
        if not self.activity:
            return None
        cls = self.activity
        if cls.startswith(self.name + "."):
            cls = cls[len(self.name) :]
        return f"{self.name}/{cls}"


@dataclass(frozen=True, slots=True)
class Identifiers:
    android_id: str
    serial: str
    imei: str
    wifi_mac: str
    advertising_id: str | None = None
    imei2: str | None = None
    meid: str | None = None
    phone_number: str | None = None
    google_account: str | None = None


@dataclass(frozen=True, slots=True)
class Kernel:
    release: str
    version: str
    machine: str = "aarch64"


@dataclass(frozen=True, slots=True)
class Display:
    width: int
    height: int
    density: int


@dataclass(frozen=True, slots=True)
class Network:
    wlan_ipv4: str
    prefix: int = 24
    gateway: str | None = None


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """An idle socket the profile shows in ``/proc/net/*`` from boot."""

    package: str
    proto: str  # tcp, tcp6, udp, udp6
    local: str  # "addr:port" or "[v6addr]:port"
    remote: str
    state: str = "ESTABLISHED"


@dataclass(frozen=True, slots=True)
class CaSpec:
    """Subject of a synthetic root CA shipped in the system trust store."""

    common_name: str
    organization: str
    country: str = "US"


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    id: str
    name: str
    source: str
    vendor: str
    region: str
    locale: str
    timezone: str
    su: SuFlavor
    adb_root: bool
    emulator_like: bool
    boot_seconds: float
    kernel: Kernel
    display: Display
    network: Network
    launcher: str  # component, e.g. com.miui.home/.launcher.Launcher
    browser: str  # package that handles VIEW of http(s) URLs
    identifiers: Identifiers
    props: Mapping[str, str]
    packages: tuple[Package, ...]
    settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    sockets: tuple[SocketSpec, ...] = ()
    system_cas: tuple[CaSpec, ...] = ()
    notes: str = ""

    @property
    def rooted(self) -> bool:
        return self.su is not SuFlavor.NONE

    @property
    def sdk(self) -> int:
        return int(self.props["ro.build.version.sdk"])

    @property
    def build_type(self) -> str:
        return self.props["ro.build.type"]

    @property
    def su_path(self) -> str | None:
        if self.su is SuFlavor.MAGISK:
            # Android 10 still has /sbin on PATH; later Magisk mounts su into /system/bin
            return "/sbin/su" if self.sdk <= 29 else "/system/bin/su"
        if self.su is SuFlavor.AOSP:
            return "/system/xbin/su"
        return None

    def package(self, name: str) -> Package | None:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        return None

    def with_root(self, rooted: bool) -> DeviceProfile:
        """This profile with ``su`` added (Magisk-style) or removed."""
        if rooted == self.rooted:
            return self
        return dataclasses.replace(self, su=SuFlavor.MAGISK if rooted else SuFlavor.NONE)


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` passes the Luhn check that IMEIs carry in their last digit."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def list_profiles() -> list[str]:
    """Names of the profiles shipped with auditor, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load and validate a profile by shipped name (``xiaomi-mi10t``) or by file path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"no device profile {str(name_or_path)!r}; shipped: {', '.join(list_profiles())}"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping")
    try:
        profile = _build(raw, default_id=path.stem)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    problems = validate(profile)
    if problems:
        raise ProfileError(f"{path}: " + "; ".join(problems))
    return profile


def _req(raw: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in raw:
        raise KeyError(f"missing field {key!r}")
    value = raw[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise TypeError(f"field {key!r} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _str_map(raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TypeError(f"{what} must be a mapping")
    return {str(k): _scalar(v) for k, v in raw.items()}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _build(raw: Mapping[str, Any], default_id: str) -> DeviceProfile:
    ids = _req(raw, "identifiers", dict)
    identifiers = Identifiers(
        android_id=str(ids["android_id"]),
        serial=str(ids["serial"]),
        imei=str(ids["imei"]),
        wifi_mac=str(ids["wifi_mac"]).lower(),
        advertising_id=_opt_str(ids.get("advertising_id")),
        imei2=_opt_str(ids.get("imei2")),
        meid=_opt_str(ids.get("meid")),
        phone_number=_opt_str(ids.get("phone_number")),
        google_account=_opt_str(ids.get("google_account")),
    )
    props = _str_map(_req(raw, "props", dict), "props")
    props.setdefault("ro.serialno", identifiers.serial)
    props.setdefault("ro.boot.serialno", identifiers.serial)
    props.setdefault("persist.sys.timezone", str(raw.get("timezone", "GMT")))
    props["ro.auditor.virtual"] = "1"
    packages = tuple(_package(p) for p in _req(raw, "packages", list))
    settings = {ns: _str_map(v, f"settings.{ns}") for ns, v in (raw.get("settings") or {}).items()}
    kernel = _req(raw, "kernel", dict)
    display = _req(raw, "display", dict)
    network = _req(raw, "network", dict)
    return DeviceProfile(
        id=str(raw.get("id", default_id)),
        name=_req(raw, "name", str),
        source=_req(raw, "source", str).strip(),
        notes=str(raw.get("notes", "")).strip(),
        vendor=_req(raw, "vendor", str),
        region=_req(raw, "region", str),
        locale=_req(raw, "locale", str),
        timezone=_req(raw, "timezone", str),
        su=SuFlavor(str(raw.get("su", "none"))),
        adb_root=bool(raw.get("adb_root", False)),
        emulator_like=bool(raw.get("emulator_like", False)),
        boot_seconds=float(raw.get("boot_seconds", 2.0)),
        kernel=Kernel(
            release=str(kernel["release"]),
            version=str(kernel["version"]),
            machine=str(kernel.get("machine", "aarch64")),
        ),
        display=Display(int(display["width"]), int(display["height"]), int(display["density"])),
        network=Network(
            wlan_ipv4=str(network["wlan_ipv4"]),
            prefix=int(network.get("prefix", 24)),
            gateway=_opt_str(network.get("gateway")),
        ),
        launcher=_req(raw, "launcher", str),
        browser=_req(raw, "browser", str),
        identifiers=identifiers,
        props=props,
        packages=packages,
        settings=settings,
        sockets=tuple(
            SocketSpec(
                package=str(s["package"]),
                proto=str(s["proto"]),
                local=str(s["local"]),
                remote=str(s["remote"]),
                state=str(s.get("state", "ESTABLISHED")),
            )
            for s in raw.get("sockets") or ()
        ),
        system_cas=tuple(
            CaSpec(
                common_name=str(c["cn"]),
                organization=str(c["o"]),
                country=str(c.get("c", "US")),
            )
            for c in raw.get("system_cas") or ()
        ),
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _package(raw: Mapping[str, Any]) -> Package:
    if not isinstance(raw, dict):
        raise TypeError("each package is a mapping")
    first = int(raw.get("first_install", 1230768000))
    return Package(
        name=str(raw["name"]),
        version_name=str(raw["version_name"]),
        version_code=int(raw["version_code"]),
        uid=int(raw["uid"]),
        path=str(raw["path"]),
        system=bool(raw.get("system", False)),
        installer=_opt_str(raw.get("installer")),
        launchable=bool(raw.get("launchable", False)),
        activity=_opt_str(raw.get("activity")),
        shared_user=_opt_str(raw.get("shared_user")),
        min_sdk=int(raw.get("min_sdk", 21)),
        target_sdk=int(raw.get("target_sdk", 29)),
        first_install=first,
        last_update=int(raw.get("last_update", first)),
        updated_system=bool(raw.get("updated_system", False)),
        persistent=bool(raw.get("persistent", False)),
    )


def validate(profile: DeviceProfile) -> list[str]:
    """Every problem found in ``profile``; empty when it is usable."""
    problems: list[str] = []
    missing = [p for p in REQUIRED_PROPS if not profile.props.get(p)]
    if missing:
        problems.append(f"missing props: {', '.join(missing)}")
    if not profile.props.get("ro.build.version.sdk", "").isdigit():
        problems.append("ro.build.version.sdk must be a number")
    ids = profile.identifiers
    for label, imei in (("imei", ids.imei), ("imei2", ids.imei2)):
        if imei is not None and not (len(imei) == 15 and luhn_valid(imei)):
            problems.append(f"{label} {imei!r} is not 15 digits with a valid Luhn check digit")
    if not _HEX16_RE.match(ids.android_id):
        problems.append("android_id must be 16 lower-case hex digits")
    if not _MAC_RE.match(ids.wifi_mac):
        problems.append("wifi_mac must look like aa:bb:cc:dd:ee:ff")
    if ids.advertising_id is not None and not _UUID_RE.match(ids.advertising_id):
        problems.append("advertising_id must be a lower-case UUID")
    if ids.meid is not None and not re.fullmatch(r"[0-9A-F]{14}", ids.meid):
        problems.append("meid must be 14 upper-case hex digits")
    if profile.props.get("ro.serialno") != ids.serial:
        problems.append("ro.serialno must equal identifiers.serial")
    if profile.adb_root and profile.build_type == "user":
        problems.append("adb_root needs a userdebug or eng build (ro.build.type)")
    try:
        ipaddress.IPv4Address(profile.network.wlan_ipv4)
    except ValueError:
        problems.append("network.wlan_ipv4 is not an IPv4 address")
    problems.extend(_package_problems(profile))
    if profile.su is SuFlavor.AOSP and profile.build_type == "user":
        problems.append("the AOSP su binary only exists on userdebug/eng builds")
    for ns in profile.settings:
        if ns not in SETTINGS_NAMESPACES:
            problems.append(f"unknown settings namespace {ns!r}")
    return problems


def _package_problems(profile: DeviceProfile) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    by_uid: dict[int, str] = {}
    shared: dict[str, int] = {}
    for pkg in profile.packages:
        if pkg.name in seen:
            problems.append(f"package {pkg.name} listed twice")
        seen.add(pkg.name)
        if not _PACKAGE_RE.match(pkg.name):
            problems.append(f"bad package name {pkg.name!r}")
        if not pkg.path.startswith("/") or not pkg.path.endswith(".apk"):
            problems.append(f"{pkg.name}: path must be an absolute .apk path")
        if pkg.launchable and not pkg.activity:
            problems.append(f"{pkg.name}: a launchable package needs an activity")
        if pkg.shared_user:
            if shared.setdefault(pkg.shared_user, pkg.uid) != pkg.uid:
                problems.append(f"{pkg.name}: shared user {pkg.shared_user} has two uids")
            continue
        if pkg.uid < 10000:
            problems.append(f"{pkg.name}: uid {pkg.uid} < 10000 needs a shared_user")
        other = by_uid.setdefault(pkg.uid, pkg.name)
        if other != pkg.name:
            problems.append(f"{pkg.name}: uid {pkg.uid} already belongs to {other}")
    for user, uid in shared.items():
        if uid in by_uid:
            problems.append(f"shared user {user} uid {uid} also used by {by_uid[uid]}")
    for name in (profile.browser, profile.launcher.split("/")[0]):
        if profile.package(name) is None:
            problems.append(f"{name} is referenced but not installed")
    for sock in profile.sockets:
        if profile.package(sock.package) is None:
            problems.append(f"socket owner {sock.package} is not installed")
        if sock.proto not in ("tcp", "tcp6", "udp", "udp6"):
            problems.append(f"socket proto {sock.proto!r} unknown")
    return problems

"""``pm``: the package manager's shell command (``list packages``, ``dump``, ``path``,
``grant``/``revoke``, ``resolve-activity``...), in AOSP's output formats."""

from __future__ import annotations

import functools
import logging
import posixpath
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.profiles import (
    Package,
)
from vhandset.sh.command import Ctx, UsageError
from vhandset.state import LAUNCHER_CATEGORY, PackageState, stable_hex

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# ---- packages --------------------------------------------------------------------------------


def _pkg_flags(pkg: Package) -> str:
    flags = []
    if pkg.system:
        flags.append("SYSTEM")
    flags.append("HAS_CODE")
    if pkg.persistent and pkg.system:
        flags.append("PERSISTENT")
    flags.append("ALLOW_CLEAR_USER_DATA")
    if pkg.updated_system:
        flags.append("UPDATED_SYSTEM_APP")
    flags.append("ALLOW_BACKUP")
    return "[ " + " ".join(flags) + " ]"


def _visible(state: PackageState, opts: set[str], filt: str | None, uid: int | None) -> bool:
    pkg = state.pkg
    if not state.installed and "-u" not in opts:
        return False
    enabled = state.enabled in (0, 1)
    return not (
        (filt and filt not in pkg.name)
        or ("-d" in opts and enabled)
        or ("-e" in opts and not enabled)
        or ("-s" in opts and not pkg.system)
        or ("-3" in opts and pkg.system)
        or (uid is not None and pkg.uid != uid)
        or "--apex-only" in opts
    )


def _pm_list_packages(ctx: Ctx, args: list[str]) -> int:
    dev = device_of(ctx)
    opts: set[str] = set()
    filt = None
    uid = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--user", "--uid"):
            if arg == "--uid" and i + 1 < len(args):
                uid = int(args[i + 1])
            i += 2
            continue
        if arg.startswith("-"):
            if arg not in (
                "-f",
                "-d",
                "-e",
                "-s",
                "-3",
                "-i",
                "-l",
                "-u",
                "-U",
                "-a",
                "--show-versioncode",
                "--apex-only",
                "--show-stopped",
            ):
                ctx.err(f"Error: Unknown option: {arg}\n")
                return 255
            opts.add(arg)
        else:
            filt = arg
        i += 1
    with dev.lock:
        states = list(dev.packages.values())
    for state in states:
        if not _visible(state, opts, filt, uid):
            continue
        pkg = state.pkg
        line = "package:"
        if "-f" in opts:
            line += f"{pkg.path}="
        line += pkg.name
        if "--show-versioncode" in opts:
            line += f" versionCode:{pkg.version_code}"
        if "-i" in opts:
            line += f"  installer={pkg.installer or 'null'}"
        if "-U" in opts:
            line += f" uid:{pkg.uid}"
        ctx.out(line + "\n")
    return 0


def pm_dump(ctx: Ctx, name: str) -> int:
    dev = device_of(ctx)
    with dev.lock:
        state = dev.packages.get(name)
    if state is None:
        return 0
    pkg, sdk = state.pkg, dev.profile.sdk
    fmt = "%Y-%m-%d %H:%M:%S"
    when = {
        k: dev.local_time(v).strftime(fmt)
        for k, v in (("first", pkg.first_install), ("last", pkg.last_update))
    }
    code_path = (
        pkg.path if pkg.path.startswith("/system/framework/") else posixpath.dirname(pkg.path)
    )
    h = functools.partial(stable_hex, pkg.name)
    out = []
    if pkg.launchable and pkg.component:
        out += [
            "Activity Resolver Table:",
            "  Non-Data Actions:",
            "      android.intent.action.MAIN:",
            f"        {h('act')} {pkg.component} filter {h('filter')}",
            '          Action: "android.intent.action.MAIN"',
            f'          Category: "{LAUNCHER_CATEGORY}"',
            "",
        ]
    out += [
        "Key Set Manager:",
        f"  [{pkg.name}]",
        f"      Signing KeySets: {int(h('ks'), 16) % 90 + 3}",
        "",
        "Packages:",
        f"  Package [{pkg.name}] ({h('ps')}):",
        f"    userId={pkg.uid}",
    ]
    if pkg.shared_user:
        out.append(f"    sharedUser=SharedUserSetting{{{h('su')} {pkg.shared_user}/{pkg.uid}}}")
    out += [
        f"    pkg=Package{{{h('pkg')} {pkg.name}}}",
        f"    codePath={code_path}",
        f"    resourcePath={code_path}",
        f"    legacyNativeLibraryDir={code_path}/lib",
        "    primaryCpuAbi=arm64-v8a"
        if not pkg.system or pkg.updated_system
        else "    primaryCpuAbi=null",
        "    secondaryCpuAbi=null",
        f"    versionCode={pkg.version_code} minSdk={pkg.min_sdk} targetSdk={pkg.target_sdk}",
        f"    versionName={pkg.version_name}",
        "    splits=[base]",
        "    apkSigningVersion=2",
        f"    applicationInfo=ApplicationInfo{{{h('ai')} {pkg.name}}}",
        f"    flags={_pkg_flags(pkg)}",
    ]
    priv = "/priv-app/" in pkg.path or pkg.shared_user == "android.uid.system"
    private = [
        "PRIVATE_FLAG_ACTIVITIES_RESIZE_MODE_RESIZEABLE_VIA_SDK_VERSION",
        "ALLOW_AUDIO_PLAYBACK_CAPTURE",
    ]
    if priv:
        private.append("PRIVILEGED")
    out += [
        "    privateFlags=[ " + " ".join(private) + " ]",
        f"    dataDir=/data/user/0/{pkg.name}",
        "    supportsScreens=[small, medium, large, xlarge, resizeable, anyDensity]",
        f"    timeStamp={when['last']}",
        f"    firstInstallTime={when['first']}",
        f"    lastUpdateTime={when['last']}",
    ]
    if pkg.installer:
        out.append(f"    installerPackageName={pkg.installer}")
    out += [
        f"    signatures=PackageSignatures{{{h('sig')} version:2, "
        f"signatures:[{stable_hex(pkg.name, 'cert', length=8)}], past signatures:[]}}",
        "    installPermissionsFixed=true",
        f"    pkgFlags={_pkg_flags(pkg)}",
    ]
    distraction = " distractionFlags=0" if sdk >= 30 else ""
    out.append(
        f"    User 0: ceDataInode={int(h('inode'), 16) % 900000 + 100000} "
        f"installed={str(state.installed).lower()} "
        f"hidden=false suspended=false{distraction} stopped={str(state.stopped).lower()} "
        f"notLaunched=false enabled={state.enabled} instant=false virtual=false"
    )
    ctx.out("\n".join(out) + "\n")
    return 0


def _require_pkg(ctx: Ctx, args: list[str]) -> tuple[PackageState | None, str]:
    names = [a for a in args if not a.startswith("-") and not a.isdigit()]
    if not names:
        raise UsageError("Error: package name not specified")
    dev = device_of(ctx)
    name = names[-1]
    return dev.packages.get(name), name


def pm_command(ctx: Ctx, args: list[str]) -> int:
    dev = device_of(ctx)
    if not args:
        ctx.out("Package manager (package) commands:\n  help\n    Print this help text.\n")
        return 0
    sub, rest = args[0], args[1:]
    if sub == "list":
        if rest and rest[0] == "packages":
            return _pm_list_packages(ctx, rest[1:])
        if rest and rest[0] == "users":
            ctx.out("Users:\n\tUserInfo{0:Owner:c13} running\n")
            return 0
        if rest and rest[0] == "features":
            ctx.out(
                "feature:android.hardware.telephony\nfeature:android.hardware.wifi\nfeature:reqGlEsVersion=0x30002\n"
            )
            return 0
        ctx.err(f"Error: unknown list type '{rest[0] if rest else ''}'\n")
        return 255
    if sub == "path":
        state, _ = _require_pkg(ctx, rest)
        if state is None or not state.installed:
            return 1
        ctx.out(f"package:{state.pkg.path}\n")
        return 0
    if sub == "dump":
        _, name = _require_pkg(ctx, rest)
        return pm_dump(ctx, name)
    if sub == "resolve-activity":
        return _resolve_activity(ctx, rest)
    if sub in ("clear", "grant", "revoke", "trim-caches", "set-permission-enforced"):
        if sub == "clear":
            state, name = _require_pkg(ctx, rest)
            if state is None:
                ctx.out("Failed\n")
                return 1
            dev.force_stop(name)
            ctx.out("Success\n")
        return 0
    if sub in ("disable-user", "disable", "enable", "default-state", "disable-until-used"):
        state, name = _require_pkg(ctx, rest)
        if state is None:
            ctx.err(
                f"Exception occurred while executing '{sub}':\n"
                f"java.lang.IllegalArgumentException: Unknown package: {name}\n"
            )
            return 255
        new = {
            "enable": 1,
            "disable": 2,
            "disable-user": 3,
            "default-state": 0,
            "disable-until-used": 4,
        }[sub]
        if sub == "disable" and not ctx.cred.is_root:
            ctx.err(
                "Exception occurred while executing 'disable':\njava.lang.SecurityException: "
                f"Shell cannot change component state for {name} to 2\n"
            )
            return 255
        with dev.lock:
            state.enabled = new
        if new in (2, 3, 4):
            dev.force_stop(name)
        label = {
            0: "default",
            1: "enabled",
            2: "disabled",
            3: "disabled-user",
            4: "disabled-until-used",
        }[new]
        ctx.out(f"Package {name} new state: {label}\n")
        return 0
    if sub == "uninstall":
        state, name = _require_pkg(ctx, rest)
        if state is None or not state.installed:
            ctx.out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n")
            return 1
        if state.pkg.system and "--user" not in rest:
            ctx.out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n")
            return 1
        with dev.lock:
            if state.pkg.system or "--user" in rest:
                state.installed = False
            else:
                del dev.packages[name]
        dev.force_stop(name)
        ctx.out("Success\n")
        return 0
    if sub == "install-existing":
        state, name = _require_pkg(ctx, rest)
        if state is None:
            ctx.out("Failure [INSTALL_FAILED_INVALID_URI]\n")
            return 1
        with dev.lock:
            state.installed = True
        ctx.out(f"Package {name} installed for user: 0\n")
        return 0
    if sub == "install":
        ctx.out("Failure [INSTALL_FAILED_INVALID_APK: the virtual handset does not install APKs]\n")
        return 1
    ctx.err(f"Unknown command: {sub}\n")
    return 255


def _resolve_activity(ctx: Ctx, args: list[str]) -> int:
    dev = device_of(ctx)
    brief = "--brief" in args
    names = [a for a in args if not a.startswith("-")]
    skip = {
        args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "-a", "--user", "--components")
    }
    names = [n for n in names if n not in skip]
    state = dev.packages.get(names[-1]) if names else None
    if (
        state is None
        or not state.pkg.launchable
        or not state.installed
        or state.enabled in (2, 3, 4)
        or not state.pkg.component
    ):
        ctx.out("No activity found\n")
        return 0
    pkg = state.pkg
    if brief:
        ctx.out(
            "priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=true\n"
            f"{pkg.name}/{pkg.activity}\n"
        )
    else:
        ctx.out(
            "  priority=0 preferredOrder=0 match=0x108000 specificIndex=-1 isDefault=true\n"
            f"  ActivityInfo:\n    name={pkg.activity}\n    packageName={pkg.name}\n"
            "    enabled=true exported=true directBootAware=false\n"
        )
    return 0


@ANDROID.command("pm")
def _pm_cmd(ctx: Ctx) -> int:
    return pm_command(ctx, ctx.args)

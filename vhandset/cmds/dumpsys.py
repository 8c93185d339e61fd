"""``dumpsys`` (activity, services, window, package...), ``cmd`` and ``wm``: the system
services' shell front-ends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vhandset.cmds.am import am_command
from vhandset.cmds.pm import pm_command, pm_dump
from vhandset.cmds.props import settings_command
from vhandset.cmds.service import SERVICES
from vhandset.cmds.table import ANDROID, device_of
from vhandset.pcapdroid import PACKAGE as PCAPDROID
from vhandset.pcapdroid import SERVICE as PCAPDROID_SERVICE
from vhandset.sh.command import Ctx
from vhandset.state import stable_hex, user_name

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice

log = logging.getLogger(__name__)


def _activity_record(dev: VirtualDevice) -> str:
    pkg, cls = dev.foreground
    short = dev._short(pkg, cls)
    return f"ActivityRecord{{{stable_hex(short, dev._task_id)} u0 {short} t{dev._task_id}}}"


def _dumpsys_activity(dev: VirtualDevice, args: list[str]) -> str:
    with dev.lock:
        pkg, cls = dev.foreground
        record = _activity_record(dev)
        proc = dev._process_of(pkg)
        short = dev._short(pkg, cls)
        task = dev._task_id
    if args and args[0] == "top":
        pid = proc.pid if proc else 0
        token = stable_hex(short, task)
        return f"TASK {pkg} id={task} userId=0\n  ACTIVITY {short} {token} pid={pid}\n"
    if args and args[0] in ("services", "s"):
        return _dumpsys_services(dev, args[1:])
    if args and args[0] in ("processes", "p"):
        with dev.lock:
            procs = sorted(dev.processes.values(), key=lambda p: p.pid)
        lines = [
            "ACTIVITY MANAGER RUNNING PROCESSES (dumpsys activity processes)",
            "  All known processes:",
        ]
        lines += [
            f"  *APP* UID {p.uid} ProcessRecord{{{stable_hex(p.pid)} "
            f"{p.pid}:{p.name}/{user_name(p.uid).replace('_', '')}}}"
            for p in procs
            if p.uid >= 10000 or p.name == "system_server"
        ]
        return "\n".join(lines) + "\n"
    return (
        "ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)\n"
        "Display #0 (activities from top to bottom):\n\n"
        f"  Stack #{task}: type=standard mode=fullscreen\n"
        "  isSleeping=false\n"
        "  mBounds=Rect(0, 0 - 0, 0)\n"
        f"    Task id #{task}\n"
        f"    * TaskRecord{{{stable_hex('task', task)} #{task} A={pkg} U=0 StackId={task} sz=1}}\n"
        f"      affinity={pkg}\n"
        f"      realActivity={short}\n"
        f"        * Hist #0: {record}\n"
        f"          packageName={pkg} processName={pkg}\n"
        f"          launchedFromUid=2000 launchedFromPackage=null userId=0\n\n"
        f"    mResumedActivity: {record}\n\n"
        f"  ResumedActivity: {record}\n"
    )


def _dumpsys_services(dev: VirtualDevice, args: list[str]) -> str:
    """``dumpsys activity services [PACKAGE]``: the running services the phone models (a
    capture's VPN service)."""
    head = "ACTIVITY MANAGER SERVICES (dumpsys activity services)\n"
    wanted = [a for a in args if not a.startswith("-")]
    if not dev.pcapdroid.running or (wanted and wanted[0] not in (PCAPDROID, PCAPDROID_SERVICE)):
        return head + "  (nothing)\n"
    with dev.lock:
        proc = dev._process_of(PCAPDROID)
        uid = dev.packages[PCAPDROID].pkg.uid
    pid = proc.pid if proc else 0
    record = f"ServiceRecord{{{stable_hex('svc', PCAPDROID_SERVICE)} u0 {PCAPDROID_SERVICE}}}"
    return (
        head
        + "  User 0 active services:\n"
        + f"  * {record}\n"
        + f"    intent={{cmp={PCAPDROID_SERVICE}}}\n"
        + f"    packageName={PCAPDROID}\n"
        + f"    processName={PCAPDROID}\n"
        + "    permission=android.permission.BIND_VPN_SERVICE\n"
        + f"    app=ProcessRecord{{{stable_hex(pid)} {pid}:{PCAPDROID}/"
        + f"{user_name(uid).replace('_', '')}}}\n"
        + "    isForeground=true foregroundId=1 types=0x00000000\n"
    )


def _dumpsys_window(dev: VirtualDevice) -> str:
    with dev.lock:
        pkg, cls = dev.foreground
        short = dev._short(pkg, cls)
        record = _activity_record(dev)
        sdk = dev.profile.sdk
        owner = dev.packages[pkg].pkg.uid if pkg in dev.packages else 1000
    win = f"Window{{{stable_hex('win', short)} u0 {short}}}"
    focused = (
        f"AppWindowToken{{{stable_hex('awt', short)} "
        f"token=Token{{{stable_hex('tok', short)} {record}}}}}"
        if sdk <= 29
        else record
    )
    return (
        "WINDOW MANAGER WINDOWS (dumpsys window windows)\n"
        f"  Window #0 {win}:\n"
        "    mDisplayId=0 rootTaskId=1 mSession=Session{2a4c5d1 1480:1000} "
        "mClient=android.os.BinderProxy@7b3a9f2\n"
        f"    mOwnerUid={owner} showForAllUsers=false package={pkg} appop=NONE\n"
        "    mHasSurface=true isReadyForDisplay()=true mWindowRemovalAllowed=false\n\n"
        f"  mCurrentFocus={win}\n"
        f"  mFocusedApp={focused}\n"
    )


def _dumpsys_package(ctx: Ctx, args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    dev = device_of(ctx)
    if names and names[0] not in ("packages", "p"):
        return pm_dump(ctx, names[0])
    for name in list(dev.packages):
        pm_dump(ctx, name)
    return 0


@ANDROID.command("dumpsys")
def _dumpsys(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = list(ctx.args)
    if not args or args == ["-l"]:
        ctx.out("Currently running services:\n" + "".join(f"  {name}\n" for name, _ in SERVICES))
        return 0
    service, rest = args[0], args[1:]
    p = dev.profile
    if service == "package":
        return _dumpsys_package(ctx, rest)
    if service == "activity":
        ctx.out(_dumpsys_activity(dev, rest))
    elif service == "window":
        ctx.out(_dumpsys_window(dev))
    elif service == "battery":
        ctx.out(
            "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
            "  Wireless powered: false\n  Max charging current: 500000\n"
            "  Max charging voltage: 5000000\n  Charge counter: 3210000\n  status: 2\n"
            "  health: 2\n  present: true\n  level: 85\n  scale: 100\n  voltage: 4211\n"
            "  temperature: 284\n  technology: Li-ion\n"
        )
    elif service == "power":
        on = "true" if dev.screen_on else "false"
        ctx.out(
            "POWER MANAGER (dumpsys power)\n\nPower Manager State:\n"
            f"  mWakefulness={'Awake' if dev.screen_on else 'Asleep'}\n"
            f"  mHoldingDisplaySuspendBlocker={on}\n  mHoldingWakeLockSuspendBlocker=false\n"
        )
    elif service == "display":
        w, h = p.display.width, p.display.height
        ctx.out(
            "DISPLAY MANAGER (dumpsys display)\n"
            "  mViewports=[DisplayViewport{type=INTERNAL, valid=true, isActive=true, "
            "displayId=0, uniqueId='local:4619827259835644672', physicalPort=0, orientation=0, "
            f"logicalFrame=Rect(0, 0 - {w}, {h}), physicalFrame=Rect(0, 0 - {w}, {h}), "
            f"deviceWidth={w}, deviceHeight={h}}}]\n"
        )
    elif service == "SurfaceFlinger" and "--display-id" in rest:
        ctx.out(
            "Display 4619827259835644672 (HWC display 0): port=0 pnpId=QCM "
            f'displayName="{p.props.get("ro.product.model", "")}"\n'
        )
    elif service in dict(SERVICES):
        ctx.out(f"{service} state: (no details in the virtual handset)\n")
    else:
        ctx.err(f"Can't find service: {service}\n")
    return 0


# ---- cmd -------------------------------------------------------------------------------------


@ANDROID.command("cmd")
def _cmd(ctx: Ctx) -> int:
    dev = device_of(ctx)
    if not ctx.args:
        ctx.err(
            "cmd: No service specified; use -l to list all running services. "
            "Use -w to start and wait for a service.\n"
        )
        return 20
    if ctx.args[0] == "-l":
        ctx.out("Currently running services:\n" + "".join(f"  {name}\n" for name, _ in SERVICES))
        return 0
    service, rest = ctx.args[0], list(ctx.args[1:])
    if service == "package":
        return pm_command(ctx, rest)
    if service == "activity":
        return am_command(ctx, rest)
    if service == "settings":
        return settings_command(Ctx(["settings", *rest], ctx.shell, ctx.fds, ctx.env))
    if service == "connectivity":
        if rest[:1] == ["airplane-mode"]:
            if len(rest) == 1:
                ctx.out(
                    "enabled\n"
                    if dev.get_setting("global", "airplane_mode_on") == "1"
                    else "disabled\n"
                )
                return 0
            if rest[1] in ("enable", "disable"):
                dev.put_setting(
                    "global",
                    "airplane_mode_on",
                    "1" if rest[1] == "enable" else "0",
                    uid=ctx.cred.uid,
                )
                return 0
        ctx.err(f"Unknown command: {' '.join(rest)}\n")
        return 255
    if service in dict(SERVICES):
        return 0
    ctx.err(f"cmd: Can't find service: {service}\n")
    return 20


@ANDROID.command("wm")
def _wm(ctx: Ctx) -> int:
    d = device_of(ctx).profile.display
    if ctx.args[:1] == ["size"]:
        ctx.out(f"Physical size: {d.width}x{d.height}\n")
    elif ctx.args[:1] == ["density"]:
        ctx.out(f"Physical density: {d.density}\n")
    return 0

"""``service call``: binder calls to the phone's services (``iphonesubinfo``...), answered as
parcels."""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from vhandset.cmds.table import ANDROID, device_of
from vhandset.sh.command import Ctx, UsageError
from vhandset.state import parcel_dump, parcel_string16
from vhandset.vfs import (
    Cred,
)

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice

log = logging.getLogger(__name__)

# ---- binder services -------------------------------------------------------------------------

SERVICES: tuple[tuple[str, str], ...] = (
    ("SurfaceFlinger", "android.ui.ISurfaceComposer"),
    ("account", "android.accounts.IAccountManager"),
    ("activity", "android.app.IActivityManager"),
    ("activity_task", "android.app.IActivityTaskManager"),
    ("appops", "com.android.internal.app.IAppOpsService"),
    ("battery", ""),
    ("clipboard", "android.content.IClipboard"),
    ("connectivity", "android.net.IConnectivityManager"),
    ("display", "android.hardware.display.IDisplayManager"),
    ("input", "android.hardware.input.IInputManager"),
    ("iphonesubinfo", "com.android.internal.telephony.IPhoneSubInfo"),
    ("isub", "com.android.internal.telephony.ISub"),
    ("location", "android.location.ILocationManager"),
    ("netstats", "android.net.INetworkStatsService"),
    ("notification", "android.app.INotificationManager"),
    ("package", "android.content.pm.IPackageManager"),
    ("phone", "com.android.internal.telephony.ITelephony"),
    ("power", "android.os.IPowerManager"),
    ("settings", ""),
    ("statusbar", "com.android.internal.statusbar.IStatusBarService"),
    ("wifi", "android.net.wifi.IWifiManager"),
    ("window", "android.view.IWindowManager"),
)

# IPhoneSubInfo transaction codes (AIDL declaration order) that return an identifier.
IPHONESUBINFO: dict[int, dict[int, tuple[str, str, str]]] = {
    29: {
        1: ("getDeviceId", "getDeviceId", "imei"),
        3: ("getDeviceIdForPhone", "getDeviceId", "imei_for_phone"),
        4: ("getImeiForSubscriber", "getImei", "imei"),
        12: ("getLine1Number", "getLine1Number", "line1"),
    },
    30: {
        1: ("getDeviceId", "getDeviceId", "imei"),
        2: ("getDeviceIdWithFeature", "getDeviceId", "imei"),
        4: ("getDeviceIdForPhone", "getDeviceId", "imei_for_phone"),
        5: ("getImeiForSubscriber", "getImei", "imei"),
        15: ("getLine1Number", "getLine1Number", "line1"),
    },
}


def _parse_call_args(args: list[str]) -> list[int | str]:
    values: list[int | str] = []
    i = 0
    while i < len(args):
        kind = args[i]
        if kind in ("i32", "i64") and i + 1 < len(args):
            values.append(int(args[i + 1], 0))
            i += 2
        elif kind in ("s16", "f", "d") and i + 1 < len(args):
            values.append(args[i + 1])
            i += 2
        elif kind == "null":
            values.append("")
            i += 1
        else:
            raise UsageError(f"service: unknown option {kind}")
    return values


def _iphonesubinfo(dev: VirtualDevice, code: int, args: list[int | str], cred: Cred) -> bytes:
    sdk = dev.profile.sdk
    table = IPHONESUBINFO[29 if sdk <= 29 else 30]
    entry = table.get(code)
    if entry is None:
        return struct.pack("<i", 0) + parcel_string16(None)
    _, label, what = entry
    ids = dev.profile.identifiers
    if what == "line1":
        return struct.pack("<i", 0) + parcel_string16(ids.phone_number)
    if sdk >= 29 and not cred.is_root:
        who = "uid" if sdk >= 33 else "user"
        message = (
            f"{label}: The {who} {cred.uid} does not meet the requirements"
            " to access device identifiers."
        )
        return struct.pack("<i", -1) + parcel_string16(message) + struct.pack("<i", 0)
    value = ids.imei
    if what == "imei_for_phone" and args and isinstance(args[0], int) and args[0] == 1:
        value = ids.imei2 or ids.imei
    return struct.pack("<i", 0) + parcel_string16(value)


@ANDROID.command("service")
def _service(ctx: Ctx) -> int:
    dev = device_of(ctx)
    args = ctx.args
    if not args or args[0] in ("-h", "-?"):
        ctx.err(
            "Usage: service [-h|-?]\n"
            "       service list\n"
            "       service check SERVICE\n"
            "       service call SERVICE CODE [i32 N | i64 N | f N | d N | s16 STR | null "
            "| fd f | nfd n | afd f ] ...\n"
        )
        return 0
    known = dict(SERVICES)
    if args[0] == "list":
        ctx.out(
            f"Found {len(SERVICES)} services:\n"
            + "".join(f"{i}\t{n}: [{iface}]\n" for i, (n, iface) in enumerate(SERVICES))
        )
        return 0
    if args[0] == "check" and len(args) > 1:
        ctx.out(f"Service {args[1]}: {'found' if args[1] in known else 'not found'}\n")
        return 0
    if args[0] == "call" and len(args) >= 3:
        name = args[1]
        if name not in known:
            ctx.err(f"service: Service {name} does not exist\n")
            return 10
        code = int(args[2], 0)
        values = _parse_call_args(args[3:])
        if name == "iphonesubinfo":
            reply = _iphonesubinfo(dev, code, values, ctx.cred)
        else:
            reply = struct.pack("<i", 0)
        ctx.out(f"Result: {parcel_dump(reply)}\n")
        return 0
    ctx.err(f"service: Unknown command {args[0]}\n")
    return 10

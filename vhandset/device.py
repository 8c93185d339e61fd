"""The simulated Android phone: :class:`VirtualDevice` implements ``interface.DeviceBackend``.

A device is built from a :class:`~vhandset.profiles.DeviceProfile`. It owns the
state a phone keeps (properties, settings, packages, processes, sockets, mounts, the log
buffers, the foreground activity) under one lock, builds its image and boots. The records it
keeps are in :mod:`vhandset.state`; the Android commands that read and change them (``pm``,
``am``, ``settings``, ``getprop``, ``dumpsys``, ``service call``, ``logcat``, ``screencap``,
``mount``, ``su``, ...) in :mod:`vhandset.cmds`, whose output follows AOSP's formats so that
host-side parsers and adbutils work on this device and on a real one alike.

The generic shell and toybox live in :mod:`vhandset.sh`, the filesystem in
:mod:`vhandset.vfs`, and PCAPdroid (started by ``am start`` of its ``CaptureCtrl``) in
:mod:`vhandset.pcapdroid`.

Long because: one phone's state under one lock, its image build and its boot belong
together; its commands are already in :mod:`vhandset.cmds`, its records in :mod:`vhandset.state`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import logging
import posixpath
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vhandset.cmds import ANDROID
from vhandset.cmds.am import safe_uri
from vhandset.interface import STDERR, STDOUT, DeviceBackend, ReverseOpener
from vhandset.netfilter import Netfilter
from vhandset.pcapdroid import PACKAGE as PCAPDROID
from vhandset.pcapdroid import PcapdroidApp
from vhandset.profiles import (
    DeviceProfile,
    SuFlavor,
    load_profile,
)
from vhandset.sh import textutils  # noqa: F401 - fills CORE with the text tools
from vhandset.sh.applets import CORE
from vhandset.sh.command import Command
from vhandset.sh.interp import Process
from vhandset.sh.streams import applet_binary
from vhandset.state import (
    AID_BY_NAME,
    EMPTY_ZIP,
    KERNEL_BOOT_SECONDS,
    LAUNCHER_CATEGORY,
    PATH_Q,
    PATH_R,
    PROC_NET_HEADERS,
    SHELL_GROUPS,
    LogEntry,
    PackageState,
    ProcInfo,
    ShellResult,
    Socket,
    TcpState,
    hex_addr,
    kernel_at_least,
    parse_endpoint,
    synthetic_ca,
    tz_of,
    user_name,
    uuid_from,
)
from vhandset.vfs import (
    AID_SDCARD_RW,
    KERNEL,
    Cred,
    DeviceFS,
    MemoryFS,
)

if TYPE_CHECKING:
    from vhandset.network import PacketLog

log = logging.getLogger(__name__)

# ---- the device ------------------------------------------------------------------------------


class VirtualDevice:
    """A simulated Android phone. See :class:`~vhandset.interface.DeviceBackend`."""

    def __init__(
        self,
        profile: DeviceProfile | str | Path,
        *,
        root: bool | None = None,
        unauthorized: bool = False,
        serial: str | None = None,
    ) -> None:
        if not isinstance(profile, DeviceProfile):
            profile = load_profile(profile)
        if root is not None:
            profile = profile.with_root(root)
        self.profile = profile
        self.lock = threading.RLock()
        self._log_cond = threading.Condition()
        self._serial = serial or profile.identifiers.serial
        self._authorized = not unauthorized
        self._online = True
        self.adbd_root = False
        self.boot_count = 0
        self.boot_time = time.time()
        self.vfs = MemoryFS(self.lock)
        self._fs_view = DeviceFS(self.vfs, self._adbd_cred)
        self.commands: dict[str, Command] = {**CORE, **ANDROID}
        self.props: dict[str, str] = {}
        self._persist_props: dict[str, str] = {}
        self.settings: dict[str, dict[str, str]] = {
            ns: dict(profile.settings.get(ns, {})) for ns in ("global", "secure", "system")
        }
        self.settings["secure"]["android_id"] = profile.identifiers.android_id
        self.packages: dict[str, PackageState] = {p.name: PackageState(p) for p in profile.packages}
        self.processes: dict[int, ProcInfo] = {}
        self._pids = itertools.count(1)
        self._logs: list[tuple[int, LogEntry]] = []
        self._log_seq = itertools.count(1)
        self.sockets: dict[int, Socket] = {}
        self.packet_log: PacketLog | None = None  # what tcpdump sees; the network stack's log
        self.netfilter = Netfilter()  # iptables/ip6tables: what the network stack may send
        self.sim_present = True  # the SIM tray: a card in it (the profile's), or none
        self._handles = itertools.count(1)
        self._inodes = itertools.count(43210)
        self.foreground: tuple[str, str] = ("", "")
        self.screen_on = True
        self._task_ids = itertools.count(100)
        self._task_id = 0
        self.reverse: dict[str, str] = {}
        self._opener: ReverseOpener | None = None
        self._live: set[Process] = set()
        self._boot_timer: threading.Timer | None = None
        self._adbd_pid = 0
        self._system_server_pid = 0
        self._zygote64 = 0
        self._zygotes: list[int] = []
        self._boot_id = ""
        self._tz = tz_of(profile.timezone)
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.pcapdroid = PcapdroidApp(self)  # its capture, when the profile installs it
        self._build_image()
        self._boot()

    # ---- DeviceBackend ---------------------------------------------------------------------

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def online(self) -> bool:
        return self._online

    @property
    def authorized(self) -> bool:
        return self._authorized

    def authorize(self) -> None:
        """The user taps "Allow" on the RSA key prompt."""
        self._authorized = True

    def banner_props(self) -> dict[str, str]:
        return {
            k: self.props[k] for k in ("ro.product.name", "ro.product.model", "ro.product.device")
        }

    @property
    def fs(self) -> DeviceFS:
        return self._fs_view

    def shell(self, command: str, *, pty: bool = False) -> Process:
        if not command:
            raise ValueError("the virtual handset has no interactive shell; pass a command")
        proc = Process(
            self,
            command,
            self._adbd_cred(),
            pty=pty,
            ppid=self._adbd_pid,
            on_exit=self._exited,
            start=False,
        )
        with self.lock:
            self._live.add(proc)
        proc.start()
        return proc

    def adb_root(self) -> tuple[bool, str]:
        with self.lock:
            if not self.profile.adb_root or self.props.get("ro.debuggable") != "1":
                return False, "adbd cannot run as root in production builds\n"
            if self.adbd_root:
                return False, "adbd is already running as root\n"
            self.adbd_root = True
            self.props["service.adb.root"] = "1"
            self._restart_adbd()
            return True, "restarting adbd as root\n"

    def adb_unroot(self) -> tuple[bool, str]:
        with self.lock:
            if not self.adbd_root:
                return False, "adbd not running as root\n"
            self.adbd_root = False
            self.props["service.adb.root"] = "0"
            self._restart_adbd()
            return True, "restarting adbd as non root\n"

    def reboot(self, target: str = "") -> None:
        if self._online:
            self.pcapdroid.stop("reboot")  # a VPN service does not outlive the boot
        with self.lock:
            if not self._online:
                return
            self._online = False
            live = list(self._live)
            self.props.pop("sys.boot_completed", None)
            self.props.pop("dev.bootcomplete", None)
            self.props["sys.powerctl"] = "reboot," + target if target else "reboot"
        self.log("ActivityManager", f"Shutting down for reboot{',' + target if target else ''}")
        for proc in live:
            proc.close()
        timer = threading.Timer(self.profile.boot_seconds, self._finish_reboot)
        timer.daemon = True
        self._boot_timer = timer
        timer.start()

    def attach_transport(self, opener: ReverseOpener | None) -> None:
        with self.lock:
            self._opener = opener

    def reverse_changed(self, forwards: dict[str, str]) -> None:
        with self.lock:
            self.reverse = dict(forwards)

    # ---- more public API -------------------------------------------------------------------

    def run(self, command: str, *, timeout: float = 10.0) -> ShellResult:
        """Run ``command`` like ``adb shell`` and collect its output."""
        proc = self.shell(command)
        chunks: list[tuple[int, bytes]] = []
        done = threading.Event()

        def collect() -> None:
            chunks.extend(proc.chunks())
            done.set()

        threading.Thread(target=collect, daemon=True).start()
        if not done.wait(timeout):
            proc.close()
            done.wait(2)
            raise TimeoutError(f"virtual shell command did not finish: {command!r}")
        out = b"".join(d for fd, d in chunks if fd == STDOUT)
        err = b"".join(d for fd, d in chunks if fd == STDERR)
        return ShellResult(
            proc.exit_code if proc.exit_code is not None else 1, out, err, tuple(chunks)
        )

    def add_listener(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Be told of what the phone's own software reacts to: ``boot_completed``,
        ``screen_on``, ``launch`` and ``view_url`` (an http(s) URL opened in the browser)."""
        self._listeners.append(fn)

    def emit(self, kind: str, **data: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(kind, data)
            except Exception:
                logging.getLogger(__name__).exception("device listener failed on %s", kind)

    def set_persistent_props(self, props: Mapping[str, str]) -> None:
        """Properties that exist from now on and survive reboots."""
        with self.lock:
            self._persist_props.update(props)
            self.props.update(props)

    def wake(self) -> None:
        with self.lock:
            was_on, self.screen_on = self.screen_on, True
        if not was_on:
            self.emit("screen_on")

    def wait_online(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self._online and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._online

    def open_reverse(self, device_spec: str) -> socket.socket:
        """Open a device-initiated stream (``tcp:8080``) through the host's reverse forward."""
        with self.lock:
            opener = self._opener
        if opener is None:
            raise ConnectionRefusedError(f"no transport attached for {device_spec}")
        return opener.open(device_spec)

    def open_socket(
        self,
        uid: int,
        proto: str,
        local: str | tuple[str, int],
        remote: str | tuple[str, int],
        state: str | int = "ESTABLISHED",
    ) -> int:
        """Register a socket that then shows in ``/proc/net/<proto>``; returns its handle."""
        if proto not in ("tcp", "tcp6", "udp", "udp6"):
            raise ValueError(f"unknown protocol {proto!r}")
        st = TcpState[state.upper()].value if isinstance(state, str) else int(state)
        with self.lock:
            handle = next(self._handles)
            self.sockets[handle] = Socket(
                handle,
                uid,
                proto,
                parse_endpoint(local),
                parse_endpoint(remote),
                st,
                next(self._inodes),
            )
            return handle

    def close_socket(self, handle: int) -> None:
        with self.lock:
            self.sockets.pop(handle, None)

    def log(
        self,
        tag: str,
        message: str,
        *,
        priority: str = "I",
        uid: int = 1000,
        pid: int | None = None,
        tid: int | None = None,
        buffer: str = "main",
        ts: float | None = None,
    ) -> None:
        """Append a line to a log buffer (and wake streaming ``logcat`` readers)."""
        if pid is None:
            pid = self._system_server_pid
        entry = LogEntry(ts or time.time(), uid, pid, tid or pid, priority, tag, message, buffer)
        with self._log_cond:
            self._logs.append((next(self._log_seq), entry))
            if len(self._logs) > 20000:
                del self._logs[:5000]
            self._log_cond.notify_all()

    def log_entries(self, after: int = 0) -> list[tuple[int, LogEntry]]:
        with self._log_cond:
            return [(seq, e) for seq, e in self._logs if seq > after]

    def get_setting(self, namespace: str, key: str) -> str | None:
        with self.lock:
            return self.settings[namespace].get(key)

    def put_setting(self, namespace: str, key: str, value: str, *, uid: int = 2000) -> None:
        with self.lock:
            old = self.settings[namespace].get(key)
            self.settings[namespace][key] = value
        if old != value:
            self.log(
                "SettingsProvider", f"put {namespace} {key}={value} by uid {uid}", priority="D"
            )
            self._setting_changed(namespace, key, value)

    def delete_setting(self, namespace: str, key: str) -> bool:
        with self.lock:
            return self.settings[namespace].pop(key, None) is not None

    def trusted_ca_files(self) -> dict[str, bytes]:
        """The system CA store apps trust now (the conscrypt APEX from Android 14), by path."""
        store = (
            "/apex/com.android.conscrypt/cacerts"
            if self.profile.sdk >= 34
            else "/system/etc/security/cacerts"
        )
        with self.lock:
            return {path: self.vfs.read(path) for path in self.vfs.walk_files(store)}

    def user_ca_files(self) -> dict[str, bytes]:
        with self.lock:
            return {
                p: self.vfs.read(p) for p in self.vfs.walk_files("/data/misc/user/0/cacerts-added")
            }

    def package_uid(self, name: str) -> int | None:
        state = self.packages.get(name)
        return state.pkg.uid if state else None

    # ---- ShellSystem -----------------------------------------------------------------------

    def cred_for(self, uid: int, *, su: bool = False) -> Cred:
        if uid == 0:
            return Cred(0, 0, frozenset() if su else frozenset(SHELL_GROUPS))
        if uid == 2000:
            return Cred(2000, 2000, frozenset(SHELL_GROUPS))
        return Cred(uid, uid, frozenset({9997}))

    def user_name(self, uid: int) -> str:
        return user_name(uid)

    def uid_of(self, name: str) -> int | None:
        if name in AID_BY_NAME:
            return AID_BY_NAME[name]
        m = re.fullmatch(r"u(\d+)_a(\d+)", name)
        return int(m.group(1)) * 100000 + 10000 + int(m.group(2)) if m else None

    def spawn(self, name: str, uid: int, ppid: int) -> int:
        with self.lock:
            pid = next(self._pids)
            self.processes[pid] = ProcInfo(pid, ppid, uid, name, 10_800_000, 3_200, "do_wait", "S")
            return pid

    def reap(self, pid: int) -> None:
        with self.lock:
            self.processes.pop(pid, None)

    def base_env(self, uid: int) -> dict[str, str]:
        sdk = self.profile.sdk
        if sdk <= 29:
            path = PATH_Q
        else:
            path = PATH_R
        name = user_name(uid)
        return {
            "ANDROID_DATA": "/data",
            "ANDROID_ROOT": "/system",
            "ANDROID_STORAGE": "/storage",
            "ANDROID_ASSETS": "/system/app",
            "ASEC_MOUNTPOINT": "/mnt/asec",
            "EXTERNAL_STORAGE": "/sdcard",
            "HOME": "/",
            "HOSTNAME": "localhost",
            "LOGNAME": name,
            "PATH": path,
            "SHELL": "/bin/sh",
            "TMPDIR": "/data/local/tmp",
            "USER": name,
        }

    def local_time(self, epoch: float) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(epoch, self._tz)

    # ---- internals -------------------------------------------------------------------------

    def _adbd_cred(self) -> Cred:
        return self.cred_for(0 if self.adbd_root else 2000)

    def _exited(self, proc: Process) -> None:
        with self.lock:
            self._live.discard(proc)

    def _restart_adbd(self) -> None:
        for proc in list(self._live):
            proc.close()
        self.processes.pop(self._adbd_pid, None)
        self._adbd_pid = next(self._pids)
        uid = 0 if self.adbd_root else 2000
        self.processes[self._adbd_pid] = ProcInfo(self._adbd_pid, 1, uid, "adbd", 11_000_000, 4_100)

    def _finish_reboot(self) -> None:
        self._boot()

    # -- the SIM tray, for whoever plays the operator (a test, a demo) --

    SIM_OPERATOR_PROPS = (
        "gsm.sim.operator.alpha",
        "gsm.sim.operator.numeric",
        "gsm.sim.operator.iso-country",
    )

    def _sim_props_absent(self) -> None:
        self.props["gsm.sim.state"] = "ABSENT"
        for key in self.SIM_OPERATOR_PROPS:
            self.props[key] = ""

    def remove_sim(self) -> None:
        """The card is taken out: telephony says ABSENT (and the tray stays empty across
        reboots until :meth:`insert_sim`)."""
        with self.lock:
            self.sim_present = False
            self._sim_props_absent()
        self._sim_broadcast("ABSENT")

    def insert_sim(self, *, step: float = 0.2) -> None:
        """A card goes in: telephony reads it, NOT_READY, then READY, then LOADED (its
        records read), each state broadcast as ACTION_SIM_STATE_CHANGED, as on a phone that
        takes a card while it runs."""
        with self.lock:
            self.sim_present = True
        for state in ("NOT_READY", "READY", "LOADED"):
            with self.lock:
                self.props["gsm.sim.state"] = state
                if state == "LOADED":
                    for key in self.SIM_OPERATOR_PROPS:
                        self.props[key] = self.profile.props.get(key, "")
            self._sim_broadcast(state)
            time.sleep(step)

    def _sim_broadcast(self, state: str) -> None:
        self.log(
            "IccCardProxy",
            f"broadcastIccStateChangedIntent intent ACTION_SIM_STATE_CHANGED value={state} "
            "reason=null",
            priority="D",
            uid=1001,  # radio: the phone process
        )
        self.emit("sim_state", state=state)

    def _setting_changed(self, namespace: str, key: str, value: str) -> None:
        if (namespace, key) == ("global", "airplane_mode_on"):
            on = value == "1"
            self.log("ConnectivityService", f"setAirplaneMode({str(on).lower()})", uid=1000)
        if (namespace, key) == ("global", "http_proxy"):
            self.log("ConnectivityService", f"global proxy is now {value}", priority="D")
            # PROXY_CHANGE is broadcast, and apps reconnect through the new route
            self.emit("proxy_changed", value=value)

    # -- the image, built once --

    def _build_image(self) -> None:
        fs, p = self.vfs, self.profile
        mk = functools.partial(fs.mkdir, cred=KERNEL, parents=True)
        for d in (
            "/system/bin",
            "/system/xbin",
            "/system/etc/security/cacerts",
            "/system/framework",
            "/system/app",
            "/system/priv-app",
            "/system/lib64",
            "/system_ext",
            "/product/app",
            "/product/priv-app",
            "/vendor/bin",
            "/odm",
            "/acct",
            "/cache",
            "/config",
            "/mnt",
            "/metadata",
            "/oem",
            "/debug_ramdisk",
        ):
            mk(d)
        if p.sdk <= 29:
            mk("/sbin")
        fs.symlink("/system/etc", "/etc")
        fs.symlink("/system/bin", "/bin")
        fs.symlink("/storage/self/primary", "/sdcard")
        fs.write("/system/build.prop", self._build_prop(), mode=0o644)
        fs.write("/default.prop", b"ro.secure=1\nro.adb.secure=1\n", mode=0o600)
        for name in ("dev", "storage", "apex"):
            fs.mount_boot("tmpfs", f"/{name}", "tmpfs", "rw,seclabel,nosuid,relatime,mode=755")
        fs.mount_boot(
            "proc", "/proc", "proc", "rw,relatime,gid=3009,hidepid=2", label="u:object_r:proc:s0"
        )
        fs.mount_boot("sysfs", "/sys", "sysfs", "rw,seclabel,relatime", label="u:object_r:sysfs:s0")
        fs.mount_boot(
            "/dev/block/dm-5",
            "/data",
            "f2fs" if p.vendor != "google" else "ext4",
            "rw,lazytime,seclabel,nosuid,nodev,noatime",
            mode=0o771,
            uid=1000,
            gid=1000,
            label="u:object_r:system_data_file:s0",
        )
        self._build_storage()
        self._build_data()
        self._build_binaries()
        self._build_cacerts()
        self._build_proc()

    def _build_prop(self) -> bytes:
        lines = ["", "# begin build properties", "# autogenerated by buildinfo.sh"]
        lines += [
            f"{k}={v}"
            for k, v in sorted(self.profile.props.items())
            if k.startswith(("ro.build.", "ro.product.system."))
        ]
        lines += ["# end build properties", ""]
        return "\n".join(lines).encode()

    def _build_storage(self) -> None:
        fs, sdk = self.vfs, self.profile.sdk
        fs.mkdir("/storage/self", mode=0o755)
        fs.symlink("/storage/emulated/0", "/storage/self/primary")
        fstype = "sdcardfs" if sdk <= 29 else "fuse"
        fs.mount_boot(
            "/data/media" if sdk <= 29 else "/dev/fuse",
            "/storage/emulated",
            fstype,
            "rw,nosuid,nodev,noexec,noatime,gid=1015,mask=6"
            if sdk <= 29
            else "rw,lazytime,nosuid,nodev,noexec,noatime,user_id=0,group_id=0,allow_other",
            mode=0o771,
            uid=0,
            gid=AID_SDCARD_RW,
            label="u:object_r:sdcardfs:s0" if sdk <= 29 else "u:object_r:fuse:s0",
            force=(0, AID_SDCARD_RW, 0o660, 0o771),
        )
        for d in (
            "0",
            "0/Android/data",
            "0/Android/media",
            "0/Android/obb",
            "0/Alarms",
            "0/DCIM",
            "0/Documents",
            "0/Download",
            "0/Movies",
            "0/Music",
            "0/Notifications",
            "0/Pictures",
            "0/Podcasts",
            "0/Ringtones",
        ):
            fs.mkdir(f"/storage/emulated/{d}", parents=True)

    def _build_data(self) -> None:
        fs, p = self.vfs, self.profile
        dirs = [
            ("/data/local", 0o751, 0, 0, "u:object_r:system_data_file:s0"),
            ("/data/local/tmp", 0o771, 2000, 2000, "u:object_r:shell_data_file:s0"),
            ("/data/app", 0o771, 1000, 1000, "u:object_r:apk_data_file:s0"),
            ("/data/data", 0o771, 1000, 1000, "u:object_r:system_data_file:s0"),
            ("/data/user", 0o711, 1000, 1000, "u:object_r:system_data_file:s0"),
            ("/data/system", 0o775, 1000, 1000, "u:object_r:system_data_file:s0"),
            ("/data/misc", 0o1771, 1000, 9998, "u:object_r:system_data_file:s0"),
            ("/data/misc/user", 0o711, 1000, 1000, "u:object_r:misc_user_data_file:s0"),
            ("/data/misc/user/0", 0o711, 1000, 1000, "u:object_r:misc_user_data_file:s0"),
            (
                "/data/misc/user/0/cacerts-added",
                0o750,
                1000,
                1000,
                "u:object_r:misc_user_data_file:s0",
            ),
            (
                "/data/misc/user/0/cacerts-removed",
                0o750,
                1000,
                1000,
                "u:object_r:misc_user_data_file:s0",
            ),
        ]
        for path, mode, uid, gid, label in dirs:
            fs.mkdir(path, parents=True)
            fs.set_owner(path, uid, gid, mode, label)
        fs.symlink("/data/data", "/data/user/0")
        for pkg in p.packages:
            fs.mkdir(posixpath.dirname(pkg.path), parents=True)
            fs.write(pkg.path, EMPTY_ZIP, mode=0o644, mtime=pkg.last_update)
            if pkg.path.startswith("/data/"):
                fs.set_owner(pkg.path, 1000, 1000, 0o644, "u:object_r:apk_data_file:s0")
            data_dir = f"/data/data/{pkg.name}"
            fs.mkdir(data_dir)
            fs.set_owner(data_dir, pkg.uid, pkg.uid, 0o700, "u:object_r:app_data_file:s0")
        gms = "/data/data/com.google.android.gms"
        ad_id = p.identifiers.advertising_id
        if ad_id and fs.exists(gms):
            fs.mkdir(f"{gms}/shared_prefs")
            xml = (
                "<?xml version='1.0' encoding='utf-8' standalone='yes' ?>\n<map>\n"
                f'    <string name="adid_key">{ad_id}</string>\n'
                '    <int name="adid_reset_count" value="0" />\n'
                '    <boolean name="enable_limit_ad_tracking" value="false" />\n</map>\n'
            )
            fs.write(f"{gms}/shared_prefs/adid_settings.xml", xml.encode(), mode=0o660)
            for path in (f"{gms}/shared_prefs", f"{gms}/shared_prefs/adid_settings.xml"):
                gms_uid = self.packages["com.google.android.gms"].pkg.uid
                st_mode = 0o771 if path.endswith("prefs") else 0o660
                fs.set_owner(path, gms_uid, gms_uid, st_mode, "u:object_r:app_data_file:s0")

    def _build_binaries(self) -> None:
        fs = self.vfs
        for cmd in self.commands.values():
            path = f"{cmd.directory}/{cmd.name}"
            if cmd.name in ("su", "sh"):
                continue
            if cmd.toybox and cmd.directory == "/system/bin":
                fs.symlink("toybox", path)
            else:
                fs.write(path, applet_binary(cmd.name), mode=0o755)
            fs.set_owner(path, 0, 2000, 0o755)
        fs.write("/system/bin/mksh", applet_binary("sh"), mode=0o755)
        fs.set_owner("/system/bin/mksh", 0, 2000, 0o755)
        fs.symlink("mksh", "/system/bin/sh")
        self._install_su()

    def _install_su(self) -> None:
        path = self.profile.su_path
        if path is None:
            return
        fs = self.vfs
        fs.mkdir(posixpath.dirname(path), parents=True)
        fs.write(path, applet_binary("su"), mode=0o755)
        if self.profile.su is SuFlavor.AOSP:
            fs.set_owner(path, 0, 2000, 0o4750)
        else:
            fs.set_owner(path, 0, 0, 0o755, "u:object_r:magisk_file:s0")

    def _build_cacerts(self) -> None:
        fs, p = self.vfs, self.profile
        certs = [synthetic_ca(spec) for spec in p.system_cas]
        for name, data in certs:
            path = f"/system/etc/security/cacerts/{name}"
            fs.write(path, data, mode=0o644)
        if p.sdk >= 34:
            fs.mount_boot(
                "/dev/block/dm-7",
                "/apex/com.android.conscrypt",
                "ext4",
                "ro,dirsync,seclabel,nodev,noatime",
                label="u:object_r:system_file:s0",
            )
            fs.mkdir("/apex/com.android.conscrypt/cacerts")
            fs.mkdir("/apex/com.android.conscrypt/javalib")
            for name, data in certs:
                fs.write(f"/apex/com.android.conscrypt/cacerts/{name}", data, mode=0o644)
                fs.set_owner(
                    f"/apex/com.android.conscrypt/cacerts/{name}",
                    0,
                    0,
                    0o644,
                    "u:object_r:system_security_cacerts_file:s0",
                )
        else:
            fs.mkdir("/apex/com.android.conscrypt/javalib", parents=True)

    def _build_proc(self) -> None:
        fs, p = self.vfs, self.profile
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            fs.dynamic(f"/proc/net/{proto}", functools.partial(self._proc_net, proto))
        fs.dynamic("/proc/mounts", fs.proc_mounts)
        fs.dynamic(
            "/proc/version",
            lambda: (
                f"Linux version {p.kernel.release} (builder@android) (clang version 12.0.5) "
                f"{p.kernel.version}\n".encode()
            ),
        )
        fs.dynamic("/proc/uptime", lambda: f"{time.time() - self.boot_time:.2f} 0.00\n".encode())
        fs.dynamic("/proc/sys/kernel/random/boot_id", lambda: f"{self._boot_id}\n".encode())
        fs.write("/dev/null", b"", mode=0o666)
        fs.dynamic("/dev/null", lambda: b"", mode=0o666)
        fs.mkdir("/sys/class/net/wlan0", parents=True)
        mac_mode = 0o444 if p.sdk <= 29 else 0o400
        fs.write(
            "/sys/class/net/wlan0/address", f"{p.identifiers.wifi_mac}\n".encode(), mode=mac_mode
        )

    # -- boot --

    def _boot(self) -> None:
        p = self.profile
        with self.lock:
            self.boot_count += 1
            self.boot_time = time.time() - KERNEL_BOOT_SECONDS
            self._boot_id = uuid_from(p.id, self.boot_count)
            self.vfs.reset_mounts()
            self.netfilter.flush_all()
            self.adbd_root = False
            self.props = {**p.props, **self._persist_props}
            self.props.update(
                {
                    "ro.serialno": self._serial,
                    "ro.boot.serialno": self._serial,
                    "init.svc.adbd": "running",
                    "service.adb.root": "0",
                    "persist.sys.usb.config": "mtp,adb",
                    "sys.usb.config": "mtp,adb",
                    "sys.usb.state": "mtp,adb",
                    "ro.boottime.init": "1876543210",
                    "net.dns1": p.network.gateway or "",
                }
            )
            if not self.sim_present:
                self._sim_props_absent()
            self.sockets = {}
            self._start_processes()
            for spec in p.sockets:
                self.open_socket(
                    self.packages[spec.package].pkg.uid,
                    spec.proto,
                    spec.local,
                    spec.remote,
                    spec.state,
                )
            self.foreground = self._component_of(p.launcher)
            self._task_id = next(self._task_ids)
            self.screen_on = True
            with self._log_cond:
                self._logs.clear()
        self._boot_logs()
        with self.lock:
            self.props["sys.boot_completed"] = "1"
            self.props["dev.bootcomplete"] = "1"
            self._online = True
        self.emit("boot_completed", boot_count=self.boot_count)

    def _start_processes(self) -> None:
        p = self.profile
        self.processes = {}
        self._pids = itertools.count(1)

        def add(
            name: str, uid: int, ppid: int, vsz: int, rss: int, wchan: str = "do_epoll_wait"
        ) -> int:
            pid = next(self._pids)
            self.processes[pid] = ProcInfo(pid, ppid, uid, name, vsz, rss, wchan)
            return pid

        add("init", 0, 0, 10_800_000, 9_900)
        add("[kthreadd]", 0, 0, 0, 0, "kthreadd")
        for name in ("[rcu_gp]", "[kworker/0:0H]", "[ksoftirqd/0]", "[migration/0]"):
            add(name, 0, 2, 0, 0, "worker_thread")
        self._pids = itertools.count(320)
        add("ueventd", 0, 1, 10_900_000, 3_800, "poll_schedule_timeout")
        add("logd", 1036, 1, 10_700_000, 7_400, "__skb_wait_for_more_packets")
        add("servicemanager", 1000, 1, 10_600_000, 3_500, "binder_ioctl")
        add("vold", 0, 1, 11_400_000, 8_100)
        add("netd", 0, 1, 11_900_000, 6_200)
        add("surfaceflinger", 1000, 1, 12_400_000, 19_800)
        self._pids = itertools.count(700)
        self._zygote64 = add("zygote64", 0, 1, 14_900_000, 96_000, "do_sys_poll")
        self._zygotes = [self._zygote64]
        if p.props.get("ro.product.cpu.abilist32"):
            self._zygotes.append(add("zygote", 0, 1, 1_700_000, 81_000, "do_sys_poll"))
        self._pids = itertools.count(1480)
        self._system_server_pid = add("system_server", 1000, self._zygote64, 19_700_000, 210_000)
        self._adbd_pid = add("adbd", 2000, 1, 11_000_000, 4_100)
        self._pids = itertools.count(1900)
        for state in self.packages.values():
            state.stopped = False
            pkg = state.pkg
            if pkg.persistent and pkg.name != "android" and state.installed:
                name = (
                    "com.google.android.gms.persistent"
                    if pkg.name == "com.google.android.gms"
                    else pkg.name
                )
                add(
                    name,
                    pkg.uid,
                    self._zygote64,
                    15_000_000 + len(name) * 1000,
                    60_000 + len(name) * 100,
                )
        self._pids = itertools.count(4000)

    def _boot_logs(self) -> None:
        p, t0 = self.profile, self.boot_time + 1.0
        zyg, ss = self._zygote64, self._system_server_pid
        lines = [
            ("kernel", 0, 0, "I", "init", "init first stage started!"),
            (
                "kernel",
                0,
                0,
                "I",
                "init",
                f"Loading SELinux policy; build {p.props.get('ro.build.fingerprint', '')}",
            ),
            ("main", 0, zyg, "I", "Zygote", "Accepting command socket connections"),
            ("events", 0, zyg, "I", "boot_progress_start", "5120"),
            ("system", 1000, ss, "I", "SystemServer", "Entered the Android system server!"),
            (
                "system",
                1000,
                ss,
                "I",
                "SystemServiceManager",
                "Starting com.android.server.pm.PackageManagerService",
            ),
            ("events", 1000, ss, "I", "boot_progress_pms_ready", "9031"),
            ("system", 1000, ss, "I", "ActivityManager", "System now ready"),
            (
                "main",
                1000,
                ss,
                "I",
                "ActivityTaskManager",
                "START u0 {act=android.intent.action.MAIN cat=[android.intent.category.HOME]"
                f" flg=0x10000100 cmp={p.launcher}}} from uid 0",
            ),
            ("events", 1000, ss, "I", "boot_progress_enable_screen", "13870"),
            (
                "system",
                1000,
                ss,
                "I",
                "ActivityManager",
                "Finished processing BOOT_COMPLETED for u0",
            ),
        ]
        for i, (buf, uid, pid, prio, tag, msg) in enumerate(lines):
            step = (KERNEL_BOOT_SECONDS - 1.5) / len(lines)
            self.log(tag, msg, priority=prio, uid=uid, pid=pid, buffer=buf, ts=t0 + i * step)

    # -- apps and activities --

    @staticmethod
    def _component_of(component: str) -> tuple[str, str]:
        pkg, _, cls = component.partition("/")
        return pkg, (pkg + cls if cls.startswith(".") else cls)

    def _short(self, pkg: str, cls: str) -> str:
        return f"{pkg}/{cls[len(pkg) :]}" if cls.startswith(pkg + ".") else f"{pkg}/{cls}"

    def _process_of(self, pkg: str) -> ProcInfo | None:
        for proc in self.processes.values():
            if proc.name in (pkg, f"{pkg}.persistent"):
                return proc
        return None

    def launch(
        self,
        pkg: str,
        cls: str,
        *,
        caller_uid: int = 2000,
        action: str = "android.intent.action.MAIN",
        category: str | None = LAUNCHER_CATEGORY,
        data: str | None = None,
    ) -> int:
        """Bring ``pkg/cls`` to the foreground, starting its process; returns the pid."""
        with self.lock:
            state = self.packages[pkg]
            started = self._process_of(pkg) is None
            proc = self.processes[self.ensure_process(pkg)]
            self.foreground = (pkg, cls)
            self._task_id = next(self._task_ids)
            short = self._short(pkg, cls)
        intent = (
            f"act={action}"
            + (f" cat=[{category}]" if category else "")
            + (f" dat={safe_uri(data)}" if data else "")
            + f" flg=0x10000000 cmp={short}"
        )
        self.log("ActivityTaskManager", f"START u0 {{{intent}}} from uid {caller_uid}")
        if started:
            reason = "activity" if self.profile.sdk <= 29 else "pre-top-activity"
            self.log(
                "ActivityManager",
                f"Start proc {proc.pid}:{pkg}/{user_name(state.pkg.uid).replace('_', '')}"
                f" for {reason} {{{short}}}",
            )
        self.log("ActivityTaskManager", f"Displayed {short}: +412ms", uid=1000)
        activity = pkg + cls if cls.startswith(".") else cls
        self.emit(
            "launch", package=pkg, activity=activity, uid=state.pkg.uid, action=action, data=data
        )
        if action == "android.intent.action.VIEW" and data and re.match(r"(?i)https?://", data):
            self.emit("view_url", url=data, uid=state.pkg.uid, package=pkg)
        return proc.pid

    def ensure_process(self, pkg: str) -> int:
        """The pid of ``pkg``'s process, forked from the zygote if it is not running."""
        with self.lock:
            state = self.packages[pkg]
            state.stopped = False
            proc = self._process_of(pkg)
            if proc is None:
                pid = next(self._pids)
                proc = ProcInfo(pid, self._zygote64, state.pkg.uid, pkg, 14_000_000, 90_000)
                self.processes[pid] = proc
            return proc.pid

    def force_stop(self, pkg: str, *, caller_pid: int = 0) -> None:
        if pkg == PCAPDROID:
            self.pcapdroid.stop("force-stop")
        with self.lock:
            state = self.packages.get(pkg)
            if state is None:
                return
            state.stopped = True
            for pid, proc in list(self.processes.items()):
                if proc.name == pkg or proc.name.startswith(pkg + ":"):
                    del self.processes[pid]
            if self.foreground[0] == pkg:
                self.foreground = self._component_of(self.profile.launcher)
        self.log(
            "ActivityManager",
            f"Force stopping {pkg} appid={state.pkg.uid % 100000} user=0: from pid {caller_pid}",
        )

    def go_home(self) -> None:
        with self.lock:
            self.foreground = self._component_of(self.profile.launcher)

    # -- /proc/net --

    def _proc_net(self, proto: str) -> bytes:
        with self.lock:
            socks = [s for s in self.sockets.values() if s.proto == proto]
        v6 = proto.endswith("6")
        if proto == "udp" and not kernel_at_least(self.profile.kernel.release, 5, 10):
            header = PROC_NET_HEADERS["udp"][1:]  # "   sl" became three spaces in 2022
        else:
            header = PROC_NET_HEADERS[proto]
        width = {"tcp": 149, "udp": 127}.get(proto, 0)
        lines = [header.ljust(width)]
        for i, s in enumerate(socks):
            src = f"{hex_addr(s.local[0], v6)}:{s.local[1]:04X}"
            dst = f"{hex_addr(s.remote[0], v6)}:{s.remote[1]:04X}"
            ptr = "0000000000000000"
            if proto.startswith("tcp"):
                tail = "100 0 0 10 0" if s.state == TcpState.LISTEN else "20 4 30 10 -1"
                line = (
                    f"{i:4d}: {src} {dst} {s.state:02X} {0:08X}:{0:08X} {0:02X}:{0:08X} {0:08X} "
                    f"{s.uid:5d} {0:8d} {s.inode} 1 {ptr} {tail}"
                )
                lines.append(line.ljust(width))
            else:
                bucket = s.local[1] & 0x3FFF
                line = (
                    f"{bucket:5d}: {src} {dst} {s.state:02X} {0:08X}:{0:08X} {0:02X}:{0:08X} "
                    f"{0:08X} {s.uid:5d} {0:8d} {s.inode} 2 {ptr} 0"
                )
                lines.append(line.ljust(width))
        return ("\n".join(lines) + "\n").encode()


# ---- sanity: every command name is unique across the tables ----------------------------------

_overlap = set(CORE) & set(ANDROID)
assert not _overlap, f"commands defined twice: {_overlap}"


def _as_backend(device: VirtualDevice) -> DeviceBackend:
    """Never called: lets mypy check that VirtualDevice satisfies the transport's protocol."""
    return device


def list_commands() -> list[str]:
    """Every program the virtual handset has (builtins excluded), sorted."""
    return sorted({**CORE, **ANDROID})


__all__ = ["LogEntry", "ShellResult", "VirtualDevice", "list_commands", "user_name"]

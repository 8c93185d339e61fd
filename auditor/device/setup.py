"""Setting a handset up for capture, and putting it back exactly as it was.

Every change goes through the restore journal (:mod:`auditor.device.journal`) before it is
made. :func:`undo_change` is the one place that knows how to reverse each kind of change; it
is used on a normal end, on an exception, on SIGINT and SIGTERM, and by ``auditor restore``
after a crash. Each undo is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal, UndoReport
from auditor.device.parsers import subject_hash_old
from auditor.device.profile import APEX_CA_DIR, SYSTEM_CA_DIR, USER_CA_DIR
from auditor.errors import DeviceError

log = logging.getLogger(__name__)

STAGING = "/data/local/tmp/auditor-ca"
USER_CA_DOWNLOAD = "/sdcard/Download/auditor-mitmproxy-ca.crt"

# QUIC forced to TCP: UDP 443 dropped as the phone sends it, both families, so that apps fall
# back to TCP through the proxy (the method of Leith 2021 and Liu, Patras and Leith 2021).
# Inserted first in OUTPUT, ahead of the chains Android's netd puts there.
QUIC_RULE = ("OUTPUT", "-p", "udp", "--dport", "443", "-j", "DROP")
IPTABLES = ("iptables", "ip6tables")
_RULE_WORD = re.compile(r"[A-Za-z0-9_.:/-]+")


class Interrupted(BaseException):
    """SIGTERM, turned into an exception so that ``finally`` blocks (the restore) run."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted` (SIGINT already raises
    KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM while the device is being restored: a second Ctrl-C must not
    leave the phone half-restored. The signals received are returned, for the caller to act on."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = {s: signal.signal(s, lambda n, f: got.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class SignalGuard:
    """SIGINT and SIGTERM over a whole audit, in the main thread.

    The first signal raises (KeyboardInterrupt, or :class:`Interrupted` for SIGTERM) wherever
    the audit is, so that it stops there. From then on, and from :meth:`hold` on, signals are
    held in :attr:`held` instead: nothing may interrupt the restore of the device or the
    closing of the session, and a second Ctrl-C must not leave either half done."""

    def __init__(self) -> None:
        self.held: list[int] = []
        self.holding = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        if self.holding:
            self.held.append(signum)
            return
        self.holding = True
        raise _signal_exception(signum)

    def hold(self) -> None:
        """Hold every signal from now on."""
        self.holding = True

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals within the block (one that starts what must be stopped again, so that
        it is not left half started) and act on the first one after it."""
        if self.holding:
            yield
            return
        self.holding = True
        try:
            yield
        finally:
            if self.held:
                raise _signal_exception(self.held.pop(0))  # holding stays on, as after _handle
            self.holding = False


def _signal_exception(signum: int) -> BaseException:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Interrupted(f"signal {signum} ({signal.Signals(signum).name})")


def undo_change(h: Handset, undo: dict[str, Any]) -> None:
    kind = undo.get("kind")
    if kind == "setting":
        ns, key, value = undo["namespace"], undo["key"], undo.get("value")
        if key == "http_proxy" and value is None:
            # Android keeps using a deleted proxy until it is set to ":0" first.
            h.setting_put(ns, key, ":0")
        h.setting_put(ns, key, value)
    elif kind == "reverse":
        previous = undo.get("previous")
        if previous:
            h.reverse(undo["remote"], previous)
        else:
            h.reverse_remove(undo["remote"])
    elif kind == "remove_file":
        cmd = f"rm -f {shlex.quote(undo['path'])}"
        (h.su(cmd) if undo.get("root") else h.sh(cmd)).check()
    elif kind == "unmount":
        for ns_pid in undo.get("namespaces", []):
            h.su(
                f"nsenter --mount=/proc/{int(ns_pid)}/ns/mnt -- umount {shlex.quote(undo['path'])}"
            )
        r = h.su(f"umount {shlex.quote(undo['path'])}")
        if (
            not r.ok
            and "not mounted" not in (r.stderr + r.stdout).lower()
            and _mounted(h, undo["path"])
        ):
            r.check()
    elif kind == "remove_dir":
        h.su(f"rm -rf {shlex.quote(undo['path'])}").check()
    elif kind == "am_start":
        # kept as data, not as a shell line: nothing read from a session file runs as raw shell
        extras = " ".join(
            f"-e {shlex.quote(str(k))} {shlex.quote(str(v))}"
            for k, v in (undo.get("extras") or {}).items()
        )
        h.sh(f"am start {extras} -n {shlex.quote(str(undo['component']))}").check()
    elif kind == "iptables":
        binary, rule = _checked_rule(undo)
        for _ in range(16):  # the same rule added again after a reboot: delete every copy
            if not _rule_present(h, binary, rule):
                return
            h.su(iptables_command(binary, "-D", rule)).check()
        raise DeviceError(f"{binary}: the rule {' '.join(rule)} keeps coming back")
    elif kind == "noop":
        return
    else:
        raise DeviceError(f"unknown undo action {kind!r} in the restore journal")


def iptables_command(binary: str, op: str, rule: tuple[str, ...] | list[str]) -> str:
    """``iptables -w OP RULE...`` (``-w``: wait for the xtables lock netd may hold)."""
    return " ".join([binary, "-w", op, *(shlex.quote(w) for w in rule)])


def _checked_rule(undo: dict[str, Any]) -> tuple[str, list[str]]:
    """The binary and rule of an ``iptables`` undo, refused unless they are plain words: a
    journal is read back from a session file, and nothing in it runs as raw shell."""
    binary, rule = undo.get("binary"), undo.get("rule")
    if binary not in IPTABLES or not isinstance(rule, list) or not rule:
        raise DeviceError(f"bad iptables undo in the restore journal: {binary!r} {rule!r}")
    if not all(isinstance(w, str) and _RULE_WORD.fullmatch(w) for w in rule):
        raise DeviceError(f"bad iptables rule in the restore journal: {rule!r}")
    return str(binary), [str(w) for w in rule]


def _rule_present(h: Handset, binary: str, rule: tuple[str, ...] | list[str]) -> bool:
    """``-C``: 0 the rule is there, 1 it is not; a phone without the binary (127) has none."""
    r = h.su(iptables_command(binary, "-C", rule))
    if r.returncode in (1, 127):
        return False
    r.check()
    return True


def _mounted(h: Handset, path: str) -> bool:
    out = h.sh("cat /proc/mounts").stdout
    return any(line.split()[1:2] == [path] for line in out.splitlines())


@dataclass
class CaptureSetup:
    """The changes made for one capture. Use as a context manager: leaving restores."""

    handset: Handset
    journal: RestoreJournal
    proxy_host: str = "127.0.0.1"
    proxy_port: int = 8080
    route: str = "reverse"  # reverse | lan | emulator
    ca: str = "user"  # user | system | none | auto (system with root, else user)
    ca_pem: bytes | None = None
    private_dns_off: bool = True
    block_quic: bool = False  # drop UDP 443 with iptables and ip6tables (needs root)
    quic_required: bool = False  # a rule iptables refuses stops the setup (else: a note)
    notes: list[str] = field(default_factory=list)
    # how QUIC was blocked, for the session manifest: {"blocked", "method", "rules"}
    quic: dict[str, Any] = field(default_factory=lambda: {"blocked": False, "method": None})
    quic_added: list[str] = field(default_factory=list)  # families whose rule auditor added
    quic_owned: list[str] = field(default_factory=list)  # families the phone's own rule blocks
    held_signals: list[int] = field(default_factory=list)
    # called with "ca" (mid-way through installing the CA) and "proxy" (before the proxy is
    # set): the fault tests stop the audit there (auditor.audit's test hook)
    checkpoint: Callable[[str], None] | None = None

    def _change(self, what: str, undo: dict[str, Any]) -> int:
        return self.journal.record(self.handset.serial, what, undo)

    def _checkpoint(self, name: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(name)

    # ------------------------------------------------------------------------------- apply
    def apply(self) -> None:
        """The CA goes in first and the proxy last, so that no app that reconnects when the
        proxy changes meets mitmproxy before its CA is trusted (and, undone newest first, the
        proxy goes before the CA)."""
        h = self.handset
        if self.ca == "auto":
            self.ca = "system" if h.root_method() else "user"
            self.notes.append(f"--ca auto: installing the CA in the {self.ca} store")
        if self.ca != "none":
            if not self.ca_pem:
                raise DeviceError("no CA certificate to install")
            self.install_ca()
        if self.block_quic:
            self.drop_quic()
        if self.private_dns_off:
            mode = h.setting_get("global", "private_dns_mode")
            if mode not in ("off",):
                self._set("global", "private_dns_mode", "off")
        if self.route == "reverse":
            previous = h.reverse_list().get(f"tcp:{self.proxy_port}")
            cid = self._change(
                f"adb reverse tcp:{self.proxy_port} tcp:{self.proxy_port}",
                {"kind": "reverse", "remote": f"tcp:{self.proxy_port}", "previous": previous},
            )
            h.reverse(f"tcp:{self.proxy_port}", f"tcp:{self.proxy_port}")
            self.journal.applied(cid)
        self._checkpoint("proxy")
        self._set("global", "http_proxy", f"{self.device_proxy_host()}:{self.proxy_port}")

    def drop_quic(self) -> None:
        """UDP 443 dropped in OUTPUT, IPv4 and IPv6, each rule journalled before it is added.
        A family whose iptables does not work (``-S`` fails: no ip6tables on the phone) is a
        DeviceError when ``quic_required``; else a note, and the manifest says which rules
        went in."""
        h = self.handset
        if not h.root_method():
            raise DeviceError(
                f"{h.serial}: --block-quic drops UDP 443 with iptables, which needs root "
                "(or --packets pcapdroid, whose VPN blocks QUIC by itself); "
                "--no-block-quic to capture without"
            )
        rules, failed = [], []
        for binary in IPTABLES:
            # a phone whose iptables cannot even list OUTPUT gets no rule (nor a journal line
            # that no undo could ever clear)
            probe = h.su(f"{binary} -w -S OUTPUT")
            if not probe.ok:
                if self.quic_required:
                    probe.check()
                failed.append(f"{binary}: {(probe.stderr or probe.stdout).strip()[-200:]}")
                continue
            if _rule_present(h, binary, QUIC_RULE):
                # the owner's own rule: it blocks QUIC already, and no restore may remove it
                rules.append(f"{binary}: the phone's own {' '.join(QUIC_RULE)}, left as it was")
                self.quic_owned.append(binary)
                continue
            self._add_quic_rule(binary, "QUIC forced to TCP")
            rules.append(f"{binary} -I {' '.join(QUIC_RULE)}")
        self.quic = {"blocked": bool(rules), "method": "iptables" if rules else None}
        self.quic["rules"] = rules
        if failed:
            self.quic["failed"] = failed
            self.notes.append(f"QUIC only partly blocked: {'; '.join(failed)}")

    def device_proxy_host(self) -> str:
        return {"reverse": "127.0.0.1", "emulator": "10.0.2.2"}.get(self.route, self.proxy_host)

    def _set(self, ns: str, key: str, value: str) -> None:
        h = self.handset
        before = h.setting_get(ns, key)
        cid = self._change(
            f"settings put {ns} {key} {value}",
            {"kind": "setting", "namespace": ns, "key": key, "value": before},
        )
        h.setting_put(ns, key, value)
        self.journal.applied(cid)

    def install_ca(self) -> None:
        assert self.ca_pem is not None
        h = self.handset
        name = f"{subject_hash_old(self.ca_pem)}.0"
        # Always offer the certificate in Downloads: on an unrooted phone the user installs it
        # from Settings > Security > Encryption & credentials > Install a certificate.
        cid = self._change(
            f"push {USER_CA_DOWNLOAD}", {"kind": "remove_file", "path": USER_CA_DOWNLOAD}
        )
        h.push_bytes(self.ca_pem, USER_CA_DOWNLOAD)
        self.journal.applied(cid)
        root = h.root_method()
        if self.ca == "user":
            self._checkpoint("ca")
            if not root:
                self.notes.append(
                    f"CA pushed to {USER_CA_DOWNLOAD}: install it on the phone under Settings > "
                    "Security > Encryption & credentials > Install a certificate > CA certificate"
                )
                return
            target = f"{USER_CA_DIR}/{name}"
            if self._exists(target):
                self.notes.append(f"user store already holds {name}; left as it was")
                return
            cid = self._change(
                f"install user CA {target}", {"kind": "remove_file", "path": target, "root": True}
            )
            self._root_write(target, self.ca_pem, mkdir=USER_CA_DIR)
            self.journal.applied(cid)
            return
        if not root:
            raise DeviceError("the system CA store needs root; use --ca user on this device")
        self._install_system_ca(name)

    def _exists(self, path: str) -> bool:
        return self.handset.su(f"test -e {shlex.quote(path)}").ok

    def _root_write(self, target: str, data: bytes, mkdir: str | None = None) -> None:
        h = self.handset
        tmp = f"/data/local/tmp/.auditor-{hashlib.sha256(data).hexdigest()[:12]}"
        h.push_bytes(data, tmp)
        try:
            if mkdir:
                h.su(f"mkdir -p {shlex.quote(mkdir)}").check()
            h.su(f"cp {tmp} {shlex.quote(target)} && chmod 644 {shlex.quote(target)}").check()
        finally:
            h.sh(f"rm -f {tmp}")

    def _install_system_ca(self, name: str) -> None:
        """A tmpfs over the system store holding its certificates plus ours (the store itself is
        never written); on Android 14+ also bind it over the APEX conscrypt store in the zygote
        and app mount namespaces, where the certificates are read from since then."""
        h = self.handset
        sdk_text = h.getprop("ro.build.version.sdk")
        sdk = int(sdk_text) if sdk_text.isdigit() else 0
        if _mounted(h, SYSTEM_CA_DIR):
            raise DeviceError(f"{SYSTEM_CA_DIR} is already mounted over; restore it first")
        cid = self._change(
            f"stage certificates in {STAGING}", {"kind": "remove_dir", "path": STAGING}
        )
        h.su(f"mkdir -p {STAGING} && cp {SYSTEM_CA_DIR}/* {STAGING}/").check()
        self.journal.applied(cid)
        self._root_write(f"{STAGING}/{name}", self.ca_pem or b"")
        cid = self._change(
            f"tmpfs over {SYSTEM_CA_DIR}", {"kind": "unmount", "path": SYSTEM_CA_DIR}
        )
        h.su(f"mount -t tmpfs tmpfs {SYSTEM_CA_DIR}").check()
        self.journal.applied(cid)
        self._checkpoint("ca")  # the store is an empty tmpfs now: the device trusts no one
        h.su(
            f"cp {STAGING}/* {SYSTEM_CA_DIR}/ && chmod 644 {SYSTEM_CA_DIR}/* && "
            f"chcon u:object_r:system_file:s0 {SYSTEM_CA_DIR}/*"
        ).check()
        if sdk >= 34:
            pids = sorted(
                {int(x) for x in h.su("pidof zygote zygote64").stdout.split() if x.isdigit()}
            )
            cid = self._change(
                f"bind {SYSTEM_CA_DIR} over {APEX_CA_DIR}",
                {"kind": "unmount", "path": APEX_CA_DIR, "namespaces": pids},
            )
            h.su(f"mount --bind {SYSTEM_CA_DIR} {APEX_CA_DIR}").check()
            for pid in pids:
                ns = f"nsenter --mount=/proc/{pid}/ns/mnt --"
                h.su(f"{ns} mount --bind {SYSTEM_CA_DIR} {APEX_CA_DIR}").check()
            self.journal.applied(cid)
            self.notes.append(
                "Android 14+: CA bound over the APEX conscrypt store; apps started before this "
                "keep their old view until restarted"
            )

    def reapply_after_reboot(self) -> None:
        """A reboot drops the reverse tunnel (it lives on the ADB connection) and every tmpfs
        mount; settings survive. Put back what the capture needs."""
        h = self.handset
        if self.route == "reverse":
            h.reverse(f"tcp:{self.proxy_port}", f"tcp:{self.proxy_port}")
        if self.ca == "system" and h.root_method() and not _mounted(h, SYSTEM_CA_DIR):
            assert self.ca_pem is not None
            self._install_system_ca(f"{subject_hash_old(self.ca_pem)}.0")
        if self.quic.get("method") == "iptables":
            for binary in IPTABLES:
                if binary not in self.quic_added + self.quic_owned:
                    continue  # a family with no rule before the reboot stays without one
                if _rule_present(h, binary, QUIC_RULE):
                    continue
                if binary in self.quic_added:  # journalled already: undone as one
                    h.su(iptables_command(binary, "-I", QUIC_RULE)).check()
                    continue
                # the phone's own rule did not survive the reboot: auditor's, journalled
                self._add_quic_rule(binary, "QUIC forced to TCP, after a reboot")
                self.quic_owned.remove(binary)

    def _add_quic_rule(self, binary: str, why: str) -> None:
        """The UDP 443 rule of one family, journalled before it is added."""
        cid = self._change(
            f"{binary} -I {' '.join(QUIC_RULE)} ({why})",
            {"kind": "iptables", "binary": binary, "rule": list(QUIC_RULE)},
        )
        self.handset.su(iptables_command(binary, "-I", QUIC_RULE)).check()
        self.journal.applied(cid)
        self.quic_added.append(binary)

    # ----------------------------------------------------------------------------- restore
    def restore(self, *, act_on_signals: bool = True) -> UndoReport:
        """Undo every journalled change. A Ctrl-C or SIGTERM that arrives meanwhile is held
        until the restore is done, then acted on (or, with ``act_on_signals=False``, left in
        ``self.held_signals`` for the caller)."""
        with signals_deferred() as held:
            report = restore_device(self.handset, self.journal)
        self.held_signals = list(held)
        if act_on_signals:
            raise_held(self.held_signals)
        return report

    def __enter__(self) -> CaptureSetup:
        try:
            self.apply()
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        report = self.restore()
        if not report.ok:
            failed = ", ".join(f"{c.what} ({err})" for c, err in report.failed)
            log.error(
                "restore incomplete: %s; run `auditor restore -s %s`", failed, self.handset.serial
            )


def raise_held(held: list[int]) -> None:
    if signal.SIGINT in held:
        raise KeyboardInterrupt
    if signal.SIGTERM in held:
        raise Interrupted(f"signal {signal.SIGTERM}")


def restore_device(h: Handset, journal: RestoreJournal) -> UndoReport:
    return journal.undo_all(lambda undo: undo_change(h, undo), serial=h.serial)


def ca_pem_from(path: Path) -> bytes:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise DeviceError(f"{path} is not a PEM certificate")
    start = data.index(b"-----BEGIN CERTIFICATE-----")
    end = data.index(b"-----END CERTIFICATE-----", start) + len(b"-----END CERTIFICATE-----")
    return data[start:end] + b"\n"

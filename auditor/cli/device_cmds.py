"""The commands that drive a handset or the proxy: ``devices``, ``profile``, ``restore``,
``capture``, ``simulate`` and ``audit``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from auditor.cli.common import (
    DEFAULT_CAPTURES,
    DEFAULT_REPORTS,
    DURATION,
    _decrypt_rules,
    custody_logged,
    custody_touch,
    decrypt_option,
    echo,
    emit_json,
    fail,
    handle_errors,
    json_option,
    terminal_line,
)
from auditor.netutil import is_loopback
from auditor.proxy.upstreamopts import upstream_options

# ------------------------------------------------------------------------------------- capture


def proxy_options[F: Callable[..., Any]](fn: F) -> F:
    for opt in reversed(
        [
            click.option(
                "--listen-host",
                default="127.0.0.1",
                show_default=True,
                help="Address the proxy listens on. Anything but loopback is warned about.",
            ),
            click.option("--port", default=8080, show_default=True, help="Proxy port."),
            click.option(
                "--out",
                default=str(DEFAULT_CAPTURES),
                show_default=True,
                type=click.Path(path_type=Path),
                help="Folder that receives the session folder.",
            ),
            click.option(
                "--body-cap",
                default="64MiB",
                show_default=True,
                help="Bodies over this size are stored truncated and flagged (e.g. 1MiB).",
            ),
            click.option(
                "--confdir",
                type=click.Path(path_type=Path),
                default=None,
                help="mitmproxy's configuration folder holding its CA "
                "[default: ~/.auditor/mitmproxy].",
            ),
            click.option("--notes", default="", help="Operator notes kept in the manifest."),
        ]
    ):
        fn = opt(fn)
    return fn


def parse_size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6}
    units |= {"mib": 1024**2, "g": 10**9, "gb": 10**9, "gib": 1024**3}
    s = text.strip().lower()
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num) :].strip()
    try:
        value = int(float(num) * units[unit])
    except (KeyError, ValueError):
        raise click.BadParameter(f"not a size: {text!r} (use e.g. 65536, 512KiB, 64MiB)") from None
    if value <= 0:
        raise click.BadParameter("size must be positive")
    return value


@click.command()
@click.option(
    "--no-device",
    is_flag=True,
    help="Run the proxy only; point any client at it yourself.",
)
@proxy_options
@click.option("--duration", type=DURATION, default=None, help="Stop after e.g. 90s, 5m, 1h.")
@json_option
@custody_logged()
@handle_errors
def capture(
    no_device: bool,
    listen_host: str,
    port: int,
    out: Path,
    body_cap: str,
    confdir: Path | None,
    notes: str,
    duration: float | None,
    as_json: bool,
) -> None:
    """Record HTTP(S) through a real mitmdump into a new capture session.

    Stops on --duration, Ctrl-C or SIGTERM, then closes the session with the hashes of
    every file. Clients must trust mitmproxy's CA (mitmproxy-ca-cert.pem in --confdir)
    for HTTPS to be decrypted; otherwise their failed handshakes are recorded.

    \b
    Example:
        auditor capture --no-device --port 8080 --duration 5m
        curl -x http://127.0.0.1:8080 http://example.test/
    """
    from auditor.proxy.capture import DEFAULT_CONFDIR, ProxyOptions, StopSignal, run_capture

    if not no_device:
        fail("capture through a handset is `auditor audit`; use --no-device for the proxy alone")
    opts = ProxyOptions(
        listen_host=listen_host,
        port=port,
        confdir=confdir or DEFAULT_CONFDIR,
        body_cap=parse_size(body_cap),
    )
    _warn_listen(listen_host)
    progress = _progress_printer(duration, quiet=as_json)
    with StopSignal() as stop:
        echo(f"proxy on {listen_host}:{port}; Ctrl-C to stop", err=True)
        res = run_capture(
            out, opts, duration=duration, notes=notes, on_progress=progress, stop=stop.event
        )
    progress.close()
    custody_touch(res.session)
    summary = res.manifest.get("summary", {})
    if as_json:
        emit_json({"session": str(res.session), "stopped_by": res.stopped_by, **summary})
    else:
        echo(
            f"session {res.session} ({res.manifest['status']}, stopped by {res.stopped_by}): "
            f"{summary.get('flows', 0)} flows, {summary.get('tls_failed', 0)} TLS failures"
        )
    if res.stopped_by == "proxy_died":
        sys.exit(1)


def _warn_listen(host: str) -> None:
    from auditor.proxy.capture import warn_if_exposed

    msg = warn_if_exposed(host)
    if msg:
        echo(f"warning: {terminal_line(msg)}", err=True)


class _LiveLine:
    """One live status line on a terminal (stderr); nothing when not attached to one."""

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True, markup=False, highlight=False)
        self.quiet = quiet
        self.live: Any = None

    def show(self, text: str) -> None:
        from rich.live import Live
        from rich.text import Text

        shown = Text(terminal_line(text))  # a step's name, a phase: never a control character
        if self.live is None:
            self.live = Live(shown, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        else:
            self.live.update(shown)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


class _Progress(_LiveLine):
    def __init__(self, duration: float | None, quiet: bool):
        super().__init__(quiet)
        self.duration = duration

    def __call__(self, elapsed: float, counts: Any) -> None:
        if self.quiet or not self.console.is_terminal:
            return
        left = f" / {self.duration:.0f}s" if self.duration else ""
        self.show(
            f"capturing {elapsed:5.0f}s{left}  flows {counts.flows}  hosts {len(counts.hosts)}"
            f"  TLS failures {counts.tls_failed}  errors {counts.errors}"
        )


def _progress_printer(duration: float | None, quiet: bool) -> _Progress:
    return _Progress(duration, quiet)


# ------------------------------------------------------------------------------------- devices


def serial_option[F: Callable[..., Any]](fn: F) -> F:
    return click.option(
        "-s",
        "--serial",
        default=None,
        help="The device's serial (see `auditor devices`); optional when only one is online.",
    )(fn)


@click.command()
@json_option
@handle_errors
def devices(as_json: bool) -> None:
    """List the devices the adb server sees: serial, state, model and transport.

    The adb server's port is taken from ANDROID_ADB_SERVER_PORT (default 5037).

    \b
    Example:
        auditor devices
        ANDROID_ADB_SERVER_PORT=15037 auditor devices --json
    """
    from auditor.device.handset import list_devices

    devs = list_devices()
    if as_json:
        emit_json([d.to_dict() for d in devs])
        return
    if not devs:
        echo("no devices (plug a phone in, or start one with `auditor simulate`)")
        return
    for d in devs:
        # serial, state and model are the device's word: a hostile phone's
        cells = (d.serial, d.state, d.model or "-", d.transport)
        echo("\t".join(terminal_line(c) for c in cells))
        if d.hint:
            echo(f"  hint: {terminal_line(d.hint)}")


@click.command()
@serial_option
@click.option("--no-packages", is_flag=True, help="Skip the package list (faster).")
@json_option
@handle_errors
def profile(serial: str | None, no_packages: bool, as_json: bool) -> None:
    """Profile a handset: build, region, root, identifiers, packages, proxy and CA stores.

    Identifiers that cannot be read are listed as unavailable, with the reason.

    \b
    Example:
        auditor profile -s emulator-5554
        auditor profile -s 127.0.0.1:5555 --json > profile.json
    """
    from auditor.device.handset import Handset
    from auditor.device.profile import collect_profile

    p = collect_profile(Handset(serial), with_packages=not no_packages)
    if as_json:
        emit_json(p.to_dict())
        return
    rows = [
        ("device", f"{p.manufacturer} {p.model} ({p.device}), brand {p.brand}"),
        ("android", f"{p.android_release} (SDK {p.sdk}), {p.build_type}, patch {p.security_patch}"),
        ("fingerprint", p.fingerprint),
        (
            "region / locale",
            f"{p.region or 'unknown'}"
            + (f" (from {p.region_source})" if p.region_source else "")
            + f" / {p.locale or 'unknown'}",
        ),
        ("SIMs", _per_slot(p.sim_operators, p.sim_countries)),
        ("networks", _per_slot(p.network_operators, p.network_countries)),
        ("root", p.root_detail),
        ("global proxy", p.global_proxy or "none"),
        ("private DNS", f"{p.private_dns_mode or 'default'} {p.private_dns_specifier or ''}"),
        (
            "user CAs",
            ", ".join(p.user_ca_certs) if p.user_ca_certs else (p.user_ca_certs_reason or "none"),
        ),
        ("packages", f"{len(p.packages)} ({sum(x.system for x in p.packages)} system)"),
    ]
    for ident in p.identifiers:
        value = ident.value or f"unavailable: {ident.reason}"
        rows.append((ident.name, f"{value}  [{ident.source}]"))
    width = max(len(k) for k, _ in rows)
    # operator names come from the cell network, the rest from the phone: escaped
    for k, v in rows:
        echo(f"{k.ljust(width)}  {terminal_line(v)}")
    for w in p.warnings:
        echo(f"warning: {terminal_line(w)}", err=True)


def _per_slot(names: list[str], countries: list[str]) -> str:
    """The operators and countries the phone reported for its SIM slots (empty slots left
    out, so the two lists are not paired by position)."""
    if not names and not countries:
        return "none"
    return f"{', '.join(names) or '-'} (countries: {', '.join(countries) or '-'})"


@click.command()
@serial_option
@click.argument("session", required=False, type=click.Path(path_type=Path))
@click.option(
    "--captures",
    default=str(DEFAULT_CAPTURES),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where to look for sessions with pending changes when SESSION is not given.",
)
@json_option
@custody_logged("session")
@handle_errors
def restore(serial: str | None, session: Path | None, captures: Path, as_json: bool) -> None:
    """Undo what an interrupted audit left on a device, from the session's restore journal.

    Every change auditor makes is journalled before it is made; this undoes what is still
    pending, newest first, and never undoes a change twice.

    \b
    Example:
        auditor restore -s emulator-5554
        auditor restore -s emulator-5554 captures/20261128T101500Z-3f9a1c
    """
    from auditor.device.handset import Handset
    from auditor.device.journal import RestoreJournal, find_pending
    from auditor.device.setup import restore_device

    if session is not None and not (session / "restore.jsonl").is_file():
        fail(f"{session}: no restore journal there (is it a session of `auditor audit`?)")
    h = Handset(serial)
    sessions = [session] if session else find_pending(captures, h.serial)
    custody_touch(*sessions)
    results: list[dict[str, Any]] = []
    ok = True
    for sess in sessions:
        journal = RestoreJournal.in_session(sess)
        report = restore_device(h, journal)
        ok = ok and report.ok
        results.append(
            {
                "session": str(sess),
                "undone": [c.what for c in report.undone],
                "failed": [{"change": c.what, "error": e} for c, e in report.failed],
            }
        )
    if as_json:
        emit_json({"serial": h.serial, "ok": ok, "sessions": results})
    else:
        if not sessions:
            echo(f"nothing to restore on {terminal_line(h.serial)}")
        for r in results:  # a journal and the device's answers are quoted: escaped
            echo(f"{terminal_line(r['session'])}: undid {len(r['undone'])} change(s)")
            for what in r["undone"]:
                echo(f"  undone  {terminal_line(what)}")
            for f in r["failed"]:
                echo(f"  FAILED  {terminal_line(f['change'])}: {terminal_line(f['error'])}")
    if not ok:
        sys.exit(1)


# ------------------------------------------------------------------------------------ simulate


@click.command()
@click.option(
    "--profile",
    "profile_name",
    default="xiaomi-mi10t",
    show_default=True,
    help="A shipped profile (xiaomi-mi10t, huawei-p40, oneplus-8t, pixel-android14) or a "
    "YAML file.",
)
@click.option("--port", default=5555, show_default=True, help="ADB port of the virtual handset.")
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--no-root", is_flag=True, help="No root, as on an unmodified phone.")
@click.option(
    "--unauthorized", is_flag=True, help="Show as unauthorized, as before the USB prompt."
)
@click.option("--no-traffic", is_flag=True, help="No background traffic from the system apps.")
@click.option("--connect/--no-connect", default=True, help="Run `adb connect` to it.")
@json_option
@handle_errors
def simulate(
    profile_name: str,
    port: int,
    listen_host: str,
    no_root: bool,
    unauthorized: bool,
    no_traffic: bool,
    connect: bool,
    as_json: bool,
) -> None:
    """Run a virtual handset that the real adb server and auditor talk to as to a phone.

    It speaks the device side of the ADB protocol on --port, makes the background
    traffic of its profile's system apps, and brings its own offline internet (an HTTP
    proxy that answers like the vendors' services, with its own CA, and a DNS server).
    On port 5555 the adb server also finds it by itself as emulator-5554.

    \b
    Example:
        auditor simulate --profile xiaomi-mi10t
        auditor simulate --profile pixel-android14 --port 5601 --no-root
    """
    import signal
    import threading

    from vhandset.errors import VhandsetError
    from vhandset.world import VirtualWorld

    _warn_listen(listen_host)
    try:
        world = VirtualWorld(
            profile_name,
            host=listen_host,
            port=port,
            root=False if no_root else None,
            unauthorized=unauthorized,
            traffic=not no_traffic,
        )
        world.start()
    except VhandsetError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {listen_host}:{port}: {exc.strerror or exc}")
    info = world.info()
    serial = info.adb_address
    if connect:
        from auditor.device.handset import client

        try:
            client().connect(info.adb_address, timeout=10)
        except Exception as exc:  # noqa: BLE001 - the handset runs anyway; say so
            echo(f"warning: adb connect {info.adb_address} failed: {terminal_line(exc)}", err=True)
    if as_json:
        emit_json({**info.to_dict(), "adb_serial": serial})
    else:
        echo(
            f"virtual {info.profile} on {info.adb_address} (adb serial {serial}); "
            f"offline internet {info.upstream}, DNS {info.dns}. Ctrl-C to stop.",
            err=True,
        )
    sys.stdout.flush()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    finally:
        world.stop()


# --------------------------------------------------------------------------------------- audit


@click.command()
@serial_option
@click.option(
    "--scenario",
    default="idle",
    show_default=True,
    help="A preset (idle, idle-after-boot, sim-insert, analytics-off, open-system-apps, "
    "browser-canary, reboot-and-idle; see docs/scenarios.md) or a YAML file.",
)
@click.option(
    "--duration",
    default=None,
    help="Sets the scenario's duration parameter, e.g. 45s, 5m, 1h.",
)
@click.option(
    "--route",
    type=click.Choice(["reverse", "lan", "emulator"]),
    default="reverse",
    show_default=True,
    help="How the phone reaches the proxy: adb reverse over USB, the LAN "
    "(needs --listen-host), or the emulator's 10.0.2.2.",
)
@click.option(
    "--ca",
    type=click.Choice(["auto", "system", "user", "none"]),
    default="auto",
    show_default=True,
    help="Where to install mitmproxy's CA: the system store needs root (system apps trust "
    "only that one); auto picks system when the device has root, else user.",
)
@click.option("--allow-shell", is_flag=True, help="Allow the scenario's shell steps.")
@click.option(
    "--keep-private-dns", is_flag=True, help="Leave Private DNS on (it bypasses the proxy)."
)
@click.option(
    "--reports",
    default=str(DEFAULT_REPORTS),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the analyser writes the report of the session.",
)
@click.option("--no-analyze", is_flag=True, help="Stop at the session; analyse it later.")
@click.option(
    "--block-quic/--no-block-quic",
    default=None,
    help="Drop UDP 443 on the phone so that apps fall back from QUIC to TCP through the proxy "
    "(iptables with root, undone at the end; PCAPdroid's own blocking with --packets "
    "pcapdroid)  [default: on when the phone has root]",
)
@click.option(
    "--keyed-pcapng/--no-keyed-pcapng",
    default=True,
    show_default=True,
    help="Beside each packet capture, a .pcapng with the TLS keys embedded (tls/), which "
    "Wireshark opens decrypted.",
)
@decrypt_option
@click.option(
    "--packets",
    default="auto",
    show_default=True,
    help="Packet capture beside the proxy: off, iface:NAME, adb-tcpdump, or auto "
    "(adb-tcpdump when the device has root and tcpdump).",
)
@upstream_options
@proxy_options
@json_option
@custody_logged()
@handle_errors
def audit(
    serial: str | None,
    scenario: str,
    duration: str | None,
    route: str,
    ca: str,
    allow_shell: bool,
    keep_private_dns: bool,
    reports: Path,
    no_analyze: bool,
    block_quic: bool | None,
    keyed_pcapng: bool,
    decrypt_rules: Path | None,
    packets: str,
    upstream: str | None,
    upstream_ca: Path | None,
    listen_host: str,
    port: int,
    out: Path,
    body_cap: str,
    confdir: Path | None,
    notes: str,
    as_json: bool,
) -> None:
    """Audit a handset: profile it, record it through mitmproxy while a scenario runs,
    restore it exactly as it was, and close a hashed session.

    Ctrl-C at any moment still restores the device and closes a verifiable session.

    \b
    Example:
        auditor audit -s emulator-5554 --scenario idle --duration 5m
        auditor audit -s 127.0.0.1:5555 --scenario open-system-apps --ca user
        auditor audit -s SERIAL --scenario analytics-off --duration 10m --decrypt rules.yaml
    """
    from auditor.audit import AuditOptions, run_audit
    from auditor.proxy.capture import DEFAULT_CONFDIR

    if duration is not None:
        DURATION.convert(duration, None, None)
    if route == "lan" and is_loopback(listen_host):
        fail("--route lan needs --listen-host set to an address the phone can reach")
    _warn_listen(listen_host)
    opts = AuditOptions(
        serial=serial,
        scenario=scenario,
        duration=duration,
        route=route,
        ca=ca,
        out=out,
        listen_host=listen_host,
        port=port,
        confdir=confdir or DEFAULT_CONFDIR,
        body_cap=parse_size(body_cap),
        allow_shell=allow_shell,
        private_dns_off=not keep_private_dns,
        notes=notes,
        packets=packets,
        block_quic=block_quic,
        keyed_pcapng=keyed_pcapng,
        upstream=upstream,
        upstream_ca=upstream_ca,
    )
    rules = _decrypt_rules(decrypt_rules)
    if packets != "auto":
        from auditor.packets.live import PacketsSpec

        try:
            PacketsSpec.parse(packets)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--packets") from None
    ui = _AuditProgress(quiet=as_json)
    try:
        res = run_audit(opts, ui)
    finally:
        ui.close()
    custody_touch(res.session)
    summary = res.manifest.get("summary", {})
    report = None
    if not no_analyze:
        from auditor.analysis.engine import report_session

        report = report_session(res.session, reports, decrypt=rules)
    if as_json:
        emit_json(
            {
                "session": str(res.session),
                "report": str(report / "report.html") if report else None,
                "status": res.status,
                "stopped_by": res.stopped_by,
                "restored": res.restored,
                "canary_seen": res.canary_seen,
                "notes": res.notes,
                **summary,
            }
        )
    else:
        for n in res.notes:
            echo(f"note: {terminal_line(n)}", err=True)
        echo(
            f"{summary.get('flows', 0)} flows, {summary.get('hosts', 0)} hosts, "
            f"{summary.get('tls_failed', 0)} TLS failures; device "
            f"{'restored' if res.restored else 'NOT restored: run auditor restore'}",
            err=True,
        )
        echo(f"session {res.session}", err=True)
        echo(str(report / "report.html") if report else str(res.session))
    if res.stopped_by == "signal":
        sys.exit(130)  # interrupted: the session is closed and the device restored
    if not res.restored or res.stopped_by in AUDIT_FAILURES:
        why = getattr(res, "detail", None) or res.stopped_by
        why, where = terminal_line(why), terminal_line(res.session)
        echo(f"error: the audit stopped early ({why}); session {where}", err=True)
        sys.exit(1)


# how an audit can end that must not look like success (the session is kept and closed)
AUDIT_FAILURES = frozenset(
    {"device_error", "device_lost", "proxy_died", "disk_full", "write_failed", "error"}
)


class _AuditProgress(_LiveLine):
    """The audit's phase, scenario step, time left and live counts."""

    def __init__(self, quiet: bool):
        super().__init__(quiet)
        self.last_phase = ""

    def __call__(self, p: Any) -> None:
        if self.quiet:
            return
        if p.phase.startswith("OPERATOR:") and p.phase != self.last_phase:
            # a step needs the operator's hands (sim_insert): a line of its own, kept on screen
            if self.live is not None:
                self.live.stop()
                self.live = None
            self.console.print(terminal_line(p.phase))
            self.last_phase = p.phase
            return
        if not self.console.is_terminal:
            if p.phase != self.last_phase:
                self.console.print(terminal_line(f"audit: {p.phase}"))
                self.last_phase = p.phase
            return
        left = f"  ~{max(0.0, p.planned - p.elapsed):.0f}s left" if p.planned else ""
        c = p.counts
        pk = getattr(p, "packets", None)
        packets = ""
        if pk is not None:
            packets = f"  packets {pk}"
            if p.packets_dropped:
                packets += f" ({p.packets_dropped} dropped or lost)"
        self.show(
            f"{p.phase}: step {p.step_index}/{p.steps} {p.step}{left}  |  flows {c.flows}  "
            f"hosts {len(c.hosts)}  TLS failures {c.tls_failed}{packets}"
        )

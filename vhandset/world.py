"""``auditor simulate``: a virtual handset, its ADB daemon and its offline internet, together.

The offline internet's CA goes into the handset's system store (it stands for the public web
PKI). ``ro.auditor.virtual=1`` labels the handset as virtual in its profile; nothing in auditor
behaves differently for it. The offline internet's address and CA are in :meth:`info` (and in
``auditor simulate --json``): an audit reaches it as a lab reaches an upstream proxy, with
``auditor audit --upstream URL --upstream-ca FILE`` (``auditor demo`` passes both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhandset.adb import AdbDaemon
from vhandset.android import subject_hash_old
from vhandset.device import VirtualDevice
from vhandset.network import TRUST_USER, DeviceNetwork
from vhandset.offline.dns import OfflineDns, resolve
from vhandset.offline.internet import OfflineInternet
from vhandset.traffic import TrafficGenerator

log = logging.getLogger(__name__)

SYSTEM_CA_DIR = "/system/etc/security/cacerts"
APEX_CA_DIR = "/apex/com.android.conscrypt/cacerts"


def install_public_ca(device: VirtualDevice, pem: bytes) -> str:
    """Put a CA into the image's system store, as a public root shipped with Android."""
    name = f"{subject_hash_old(pem)}.0"
    fs = device.vfs
    fs.write(f"{SYSTEM_CA_DIR}/{name}", pem, mode=0o644)
    if device.profile.sdk >= 34:
        fs.write(f"{APEX_CA_DIR}/{name}", pem, mode=0o644)
    return f"{SYSTEM_CA_DIR}/{name}"


@dataclass
class WorldInfo:
    serial: str
    adb_address: str
    profile: str
    upstream: str
    dns: str
    ca: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class VirtualWorld:
    def __init__(
        self,
        profile: str | Path = "xiaomi-mi10t",
        *,
        host: str = "127.0.0.1",
        port: int = 5555,
        root: bool | None = None,
        unauthorized: bool = False,
        traffic: bool = True,
        speed: float = 1.0,
        serial: str | None = None,
    ):
        self.host = host
        self.port = port
        self.internet = OfflineInternet(host=host)
        self.dns = OfflineDns(host=host)
        self.device = VirtualDevice(profile, root=root, unauthorized=unauthorized, serial=serial)
        self.adbd = AdbDaemon(self.device, host=host, port=port)
        self.network: DeviceNetwork | None = None
        self.traffic: TrafficGenerator | None = None
        self._traffic_enabled = traffic
        self._speed = speed
        self._started = False

    def start(self) -> VirtualWorld:
        self.internet.start()
        try:
            self.dns.start()
            install_public_ca(self.device, self.internet.ca.cert_pem)
            self.device.set_persistent_props({"ro.auditor.virtual": "1"})
            self.network = DeviceNetwork(
                self.device,
                (self.internet.host, self.internet.port),
                dns=self.dns.address,
                resolve=resolve,
                pinned_ca=self.internet.ca_cert_path,
            )
            self.device.packet_log = self.network.packets  # what tcpdump on the phone sees
            self.device.add_listener(self._on_device_event)
            if self._traffic_enabled:
                self.traffic = TrafficGenerator(self.device, self.network, speed=self._speed)
                self.traffic.start()
            self.adbd.start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _on_device_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind in ("boot_completed", "screen_on", "proxy_changed") and self.traffic:
            self.traffic.burst(kind)
        elif kind == "view_url" and self.network is not None:
            url = str(data.get("url", ""))
            if url.startswith(("http://", "https://")):
                self._browse(url, int(data.get("uid") or 0))

    def _browse(self, url: str, uid: int) -> None:
        """The browser opens a URL the way a real one would: through the proxy, trusting the
        user store as well as the system one."""
        import threading

        assert self.network is not None
        net = self.network
        browser_uid = self.device.package_uid(self.device.profile.browser) or uid

        def go() -> None:
            try:
                res = net.fetch(browser_uid, "GET", url, trust=TRUST_USER, timeout=10)
                self.device.log("chromium", f"loaded {url} ({res.status})", uid=browser_uid)
            except Exception as exc:  # noqa: BLE001 - a failed page load is logged, as a browser does
                self.device.log(
                    "chromium", f"net::ERR_FAILED {url}: {exc}", priority="W", uid=browser_uid
                )

        threading.Thread(target=go, name="browser", daemon=True).start()

    def info(self) -> WorldInfo:
        return WorldInfo(
            serial=self.device.serial,
            adb_address=f"{self.host}:{self.adbd.port}",
            profile=self.device.profile.id,
            upstream=self.internet.url,
            dns=f"{self.dns.host}:{self.dns.port}",
            ca=str(self.internet.ca_cert_path),
        )

    def stop(self) -> None:
        # a PCAPdroid capture left running would keep its exporter thread alive
        for part in (self.device.pcapdroid, self.adbd, self.traffic, self.dns, self.internet):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest regardless
                log.warning("stopping %s: %s", type(part).__name__, exc)

    def __enter__(self) -> VirtualWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

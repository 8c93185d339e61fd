"""The virtual handset's background traffic: its system apps talking to their vendors.

A real idle phone talks to its vendor whether anyone touches it or not. Each profile has a data
file in ``traffic/`` listing jobs: which app (and so which UID), what it sends (a request
template, see :mod:`vhandset.payloads`), how it trusts certificates, and how often
(a jittered period, a burst at boot and at screen-on). The generator runs them on the device's
network stack (:mod:`vhandset.network`), and logs each outcome to the device's
logcat as the app would.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from vhandset.clock import parse_duration
from vhandset.errors import VhandsetError
from vhandset.network import TRUST_NONE, DeviceNetwork, TlsRejected
from vhandset.payloads import TemplateError, build_body, facts_from_profile, render

if TYPE_CHECKING:
    from vhandset.device import VirtualDevice

log = logging.getLogger(__name__)

TRANSPORTS = ("http", "dns", "push")
TRUSTS = ("none", "system", "user", "pinned")


class TrafficError(VhandsetError):
    pass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    kind: str = "json"
    encoding: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    app: str
    transport: str
    trust: str
    period: float
    at_boot: bool
    source: str
    request: RequestSpec | None = None
    names: tuple[str, ...] = ()
    host: str | None = None
    port: int | None = None
    jitter: float = 0.3


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    profile: str
    jobs: tuple[Job, ...]
    sources: dict[str, str]


def load_plan(profile_id: str) -> TrafficPlan:
    res = resources.files("vhandset") / "traffic" / f"{profile_id}.yaml"
    if not res.is_file():
        return TrafficPlan(profile_id, (), {})
    return parse_plan(res.read_text(encoding="utf-8"), f"traffic/{profile_id}.yaml")


def parse_plan(text: str, where: str) -> TrafficPlan:
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise TrafficError(f"{where}: needs a list of jobs")
    sources = {str(k): str(v) for k, v in (doc.get("sources") or {}).items()}
    jobs = []
    for i, raw in enumerate(doc["jobs"]):
        here = f"{where}: job {i + 1}"
        if not isinstance(raw, dict):
            raise TrafficError(f"{here}: not a mapping")
        transport = raw.get("transport", "http")
        trust = raw.get("trust", "system")
        if transport not in TRANSPORTS or trust not in TRUSTS:
            raise TrafficError(f"{here}: bad transport {transport!r} or trust {trust!r}")
        src = str(raw.get("source", ""))
        if src not in sources:
            raise TrafficError(f"{here}: source {src!r} is not one of {sorted(sources)}")
        req = None
        if transport == "http":
            r = raw.get("request")
            if not isinstance(r, dict) or "url" not in r:
                raise TrafficError(f"{here}: an http job needs request.url")
            req = RequestSpec(
                method=str(r.get("method", "GET")),
                url=str(r["url"]),
                headers={str(k): str(v) for k, v in (r.get("headers") or {}).items()},
                body=r.get("body"),
                kind=str(r.get("kind", "json")),
                encoding=r.get("encoding"),
            )
            if req.url.startswith("https:") and trust == TRUST_NONE:
                raise TrafficError(f"{here}: an https request needs a trust store")
        jobs.append(
            Job(
                name=str(raw.get("name", f"job{i + 1}")),
                app=str(raw["app"]),
                transport=transport,
                trust=trust,
                period=parse_duration(str(raw.get("period", "30s"))),
                at_boot=bool(raw.get("at_boot", False)),
                source=src,
                request=req,
                names=tuple(raw.get("names") or ()),
                host=raw.get("host"),
                port=raw.get("port"),
                jitter=float(raw.get("jitter", 0.3)),
            )
        )
    return TrafficPlan(str(doc.get("profile", "")), tuple(jobs), sources)


@dataclass
class JobStats:
    runs: int = 0
    ok: int = 0
    tls_rejected: int = 0
    failed: int = 0


class TrafficGenerator:
    """Runs a plan's jobs on a schedule while the device is online."""

    def __init__(
        self,
        device: VirtualDevice,
        network: DeviceNetwork,
        plan: TrafficPlan | None = None,
        *,
        speed: float = 1.0,
        seed: int | None = None,
        workers: int = 4,
    ):
        self.device = device
        self.net = network
        self.plan = plan or load_plan(device.profile.id)
        self.speed = speed
        self.rng = random.Random(seed)
        self.facts = facts_from_profile(device.profile)
        self.stats: dict[str, JobStats] = {j.name: JobStats() for j in self.plan.jobs}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="app")
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)
        self._queue: list[tuple[float, int, str]] = []
        self._burst_pending = True  # the first run after start counts as boot
        self._lock = threading.Lock()

    def start(self) -> TrafficGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def burst(self, reason: str) -> None:
        """Boot or screen-on: the jobs marked at_boot run now, with a little spread."""
        with self._lock:
            self._burst_pending = True
        self.device.log("auditor", f"network burst: {reason}", priority="V")
        self._wake.set()

    def _schedule_burst(self, now: float) -> None:
        by_name = {j.name: j for j in self.plan.jobs}
        self._queue = [q for q in self._queue if not by_name[q[2]].at_boot]
        for i, job in enumerate(self.plan.jobs):
            first = (
                self.rng.uniform(0.2, 3.0)
                if job.at_boot
                else self.rng.uniform(1.0, max(2.0, job.period))
            )
            if job.at_boot or not any(q[2] == job.name for q in self._queue):
                heapq.heappush(self._queue, (now + first / self.speed, i, job.name))
        heapq.heapify(self._queue)

    def _loop(self) -> None:
        by_name = {j.name: j for j in self.plan.jobs}
        order = {j.name: i for i, j in enumerate(self.plan.jobs)}
        while not self._stop.is_set():
            if not self.device.online:
                with self._lock:
                    self._burst_pending = True  # it is booting: burst when it is back
                self._stop.wait(0.2)
                continue
            now = time.monotonic()
            with self._lock:
                burst, self._burst_pending = self._burst_pending, False
            if burst:
                self._schedule_burst(now)
            if not self._queue:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            due, _, name = self._queue[0]
            if due > now:
                self._wake.wait(min(due - now, 0.5))
                self._wake.clear()
                continue
            heapq.heappop(self._queue)
            job = by_name[name]
            period = job.period * (1 + self.rng.uniform(-job.jitter, job.jitter))
            heapq.heappush(self._queue, (now + period / self.speed, order[name], name))
            try:
                self._pool.submit(self.run_job, job)
            except RuntimeError:
                return  # pool shut down

    def run_job(self, job: Job) -> str:
        """Run one job now; returns ``ok``, ``tls_rejected`` or ``failed``."""
        uid = self.device.package_uid(job.app)
        if uid is None:
            return "failed"
        st = self.stats[job.name]
        st.runs += 1
        tag = job.app.rsplit(".", 1)[-1][:23]
        try:
            if job.transport == "http":
                self._http(job, uid)
            elif job.transport == "dns":
                for name in job.names:
                    self.net.dns_query(uid, name)
            elif job.transport == "push" and job.host and job.port:
                self.net.push(uid, job.host, int(job.port), hold=1.0)
        except TlsRejected as exc:
            st.tls_rejected += 1
            self.device.log(
                "NetworkSecurityConfig" if job.trust != "pinned" else tag,
                f"{job.name}: Trust anchor for certification path not found ({exc})",
                priority="W",
                uid=uid,
            )
            return "tls_rejected"
        except (OSError, ConnectionError, TemplateError, ValueError) as exc:
            st.failed += 1
            self.device.log(tag, f"{job.name}: request failed: {exc}", priority="W", uid=uid)
            return "failed"
        st.ok += 1
        return "ok"

    def _http(self, job: Job, uid: int) -> None:
        assert job.request is not None
        r = job.request
        url = str(render(r.url, self.facts))
        body = None
        headers = {str(k): str(render(v, self.facts)) for k, v in r.headers.items()}
        if r.body is not None:
            data, body_headers = build_body(r.body, r.kind, r.encoding, self.facts)
            body = data
            headers = {**body_headers, **headers}
        headers.setdefault("User-Agent", f"Dalvik/2.1.0 (Linux; U; Android; {self.facts['model']})")
        headers.setdefault("Accept-Encoding", "gzip")
        res = self.net.fetch(uid, r.method, url, headers=headers, body=body, trust=job.trust)
        self.device.log(
            job.app.rsplit(".", 1)[-1][:23],
            f"{job.name}: {r.method} {url.split('?')[0]} -> {res.status} via {res.via}",
            priority="D",
            uid=uid,
        )

    def totals(self) -> JobStats:
        t = JobStats()
        for s in self.stats.values():
            t.runs += s.runs
            t.ok += s.ok
            t.tls_rejected += s.tls_rejected
            t.failed += s.failed
        return t

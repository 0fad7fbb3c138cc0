"""Two proxy processes (two workers each) on one real PostgreSQL: one proxy, nothing lost or doubled.

Under concurrent load across routes and callers, one proxy is stopped and restarted (SIGTERM: what
Kubernetes sends) and the database is stopped for a few seconds and started again. Then the usage
record equals what was answered, follow-ups for jobs created on the other process reach the right
instance with no probing, and each server's /metrics sums its two workers.

Counted are the requests that got an answer. A request refused before it reached a proxy (the port
closed while it restarted) is sent to the other one, as a load balancer would. A SIGKILLed proxy
would lose what it had not flushed yet (at most `interval`, 1 s, of counts): not tested here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.emulator import DEMO_API_KEY, DEMO_CRN, SECOND_CRN
from proxy.phaseout.usage import read_usage
from proxy.serving import free_port

from .conftest import EmulatorHandle, wait_until_ok
from .pgserver import PostgresServer

RESEARCH = "ibm-q-fake/research/proj1"
CI_TOKEN = "tok-ci-pipeline-0001"
DASH_TOKEN = "tok-dashboard-0002"
SDK = {"Authorization": f"Bearer {CI_TOKEN}",
       "X-Qx-Client-Application": "qiskit-version-2/1.4.0/qiskit_ibm_runtime-0.40.1"}
DASH = {"X-Access-Token": DASH_TOKEN, "User-Agent": "curl/8.5.0"}
CALLERS = {"ci": (SDK, ("ci-pipeline", "qiskit_ibm_runtime-0.40")), "dash": (DASH, ("dashboard", "curl"))}
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}


@dataclass
class Proxy:
    """`serve --workers 2` as a real process on a fixed port (so it can be restarted in place)."""

    name: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    generation: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--port", str(self.port), "--workers", "2"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        wait_until_ok(self.url + "/readyz", self.proc, timeout=60)

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Kill the whole group: a worker left behind would hold stdout open and hang the test.
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate(timeout=30)
            self.proc = None
            raise AssertionError(f"serve --workers 2 did not stop within 60 s of SIGTERM:\n{out[-3000:]}") from None
        self.proc = None
        return out


@pytest.fixture
def replicas(emulator: EmulatorHandle, pg_url: str, tmp_path: Path) -> Iterator[tuple[Proxy, Proxy]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "PROMETHEUS_"))}
    base.update(
        QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB=pg_url, QCP_ACCESS_LOG="false",
        QCP_INSTANCES=json.dumps({RESEARCH: SECOND_CRN}), QCP_LOG_LEVEL="warning",
        QCP_CLIENT_TOKENS=f"ci-pipeline={CI_TOKEN},dashboard={DASH_TOKEN}",
    )
    proxies = tuple(Proxy(n, {**base, "QCP_METRICS_DIR": str(tmp_path / f"metrics-{n}")}) for n in "AB")
    for p in proxies:
        p.start()
    try:
        yield proxies  # type: ignore[misc]
    finally:
        for p in proxies:
            if p.proc is not None:
                p.stop()


class Ledger:
    """What was answered: per (caller, client, endpoint), and per proxy generation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.usage: Counter[tuple[str, str, str]] = Counter()
        self.by_server: Counter[tuple[str, int]] = Counter()
        self.errors: list[str] = []

    def note(self, who: str, endpoint: str, server: tuple[str, int]) -> None:
        caller, client = CALLERS[who][1]
        with self.lock:
            self.usage[(caller, client, endpoint)] += 1
            self.by_server[server] += 1

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.usage.values())


_local = threading.local()


def client() -> httpx.Client:
    """One client per thread; a new connection per request (a refused one was never received)."""
    c = getattr(_local, "client", None)
    if c is None:
        c = _local.client = httpx.Client(
            timeout=30, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
        )
    return c


def send(ledger: Ledger, proxy: Proxy, who: str, method: str, path: str, endpoint: str,
         body: dict | None = None, expect: int = 200) -> httpx.Response:
    headers, _ = CALLERS[who]
    server = (proxy.name, proxy.generation)
    r = client().request(method, proxy.url + path, headers=headers, json=body)
    assert r.status_code == expect, r.text
    ledger.note(who, endpoint, server)
    return r


def crns_for(emulator: EmulatorHandle, job_id: str) -> list[str]:
    return [r["headers"].get("service-crn", "") for r in emulator.api_requests() if r["path"].endswith(job_id)]


def metric(proxy: Proxy, name: str) -> float:
    """A metric's sum over its series, as one scrape of the server reports it."""
    text = httpx.get(proxy.url + "/metrics", timeout=20, trust_env=False).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name)


def wait_shared_state_up(proxy: Proxy) -> None:
    """Until every worker reconnected to the database (its sync round runs each second; bounded)."""
    for _ in range(300):
        if metric(proxy, "qcp_shared_state_up") == 1 and metric(proxy, "qcp_usage_record_up") == 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"{proxy.name}: the workers did not reconnect to the database")


def test_two_replicas_on_one_database_lose_nothing_and_count_nothing_twice(
    replicas: tuple[Proxy, Proxy], emulator: EmulatorHandle, postgres: PostgresServer, pg_url: str
) -> None:
    a, b = replicas
    ledger = Ledger()
    hub, group, project = RESEARCH.split("/")

    # 1. Jobs created on A in the second instance; polled on B, which never saw them.
    jobs = [
        send(ledger, a, "ci", "POST", "/runtime/jobs", "POST /jobs",
             {**JOB, "hub": hub, "group": group, "project": project}).json()["id"]
        for _ in range(4)
    ]
    emulator.clear()
    for job in jobs:
        send(ledger, b, "ci", "GET", f"/runtime/jobs/{job}", "GET /jobs/{job_id}")
        assert crns_for(emulator, job) == [SECOND_CRN], "B probed instead of recalling the shared memory"

    # 2. Concurrent load across routes and callers, while A restarts and the database goes away.
    routes = [
        ("ci", "GET", "/runtime/backends", "GET /backends", 200),
        ("dash", "GET", "/runtime/backends", "GET /backends", 200),
        ("dash", "GET", "/runtime/health", "GET /health", 410),
        ("ci", "GET", "/api/version", "GET /version", 200),
        *(("ci", "GET", f"/runtime/jobs/{j}", "GET /jobs/{job_id}", 200) for j in jobs[:2]),
    ]
    stop = threading.Event()
    a_down = threading.Event()
    gen_lock = threading.Lock()

    def deliver(target: Proxy, who: str, method: str, path: str, endpoint: str, expect: int) -> None:
        """As a load balancer would: a request that never reached a proxy goes to the other one."""
        try:
            send(ledger, target, who, method, path, endpoint, expect=expect)
        except httpx.ConnectError:  # refused: nobody listening right now
            send(ledger, b if target is a else a, who, method, path, endpoint, expect=expect)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if not (target is a and a_down.is_set()):
                raise
            # Accepted by the kernel but closed unread by the stopping server (uvicorn finishes
            # every request it has read): not received, so it goes elsewhere.
            send(ledger, b, who, method, path, endpoint, expect=expect)

    def worker(k: int) -> None:
        i = k
        while not stop.is_set() and i < 4000 * 4:  # bounded even if the chaos stalls
            who, method, path, endpoint, expect = routes[i % len(routes)]
            with gen_lock:
                target = b if (a_down.is_set() or (i // 4) % 2) else a
            try:
                deliver(target, who, method, path, endpoint, expect)
            except Exception as exc:  # reported below, with what it was
                ledger.errors.append(f"{target.name} {path}: {type(exc).__name__}: {exc}")
                stop.set()
            i += 4
            time.sleep(0.02)  # a steady load, leaving CPU for the restarts (2 shared cores)

    def wait_for_more(n: int, seconds: float = 0.0) -> None:
        """At least n more answers and `seconds` (bounded: 60 s)."""
        goal, start = ledger.total + n, time.monotonic()
        while time.monotonic() - start < 60 and not stop.is_set():
            if ledger.total >= goal and time.monotonic() - start >= seconds:
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for_more(100)
        a_down.set()
        a.stop()
        a.start()
        with gen_lock:
            a.generation += 1
            a_down.clear()
        wait_for_more(100)
        postgres.stop()
        wait_for_more(100, seconds=3.0)  # a few seconds without the database
        postgres.start()
        wait_for_more(100)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not ledger.errors, ledger.errors[:5]

    # 3. Each server's /metrics is both workers' sum: A since its restart, B since the start.
    assert metric(a, "qcp_requests_total") == ledger.by_server[("A", 1)]
    assert metric(b, "qcp_requests_total") == ledger.by_server[("B", 0)]

    # 4. A restarted with an empty memory: it recalls the jobs' instance from the database.
    wait_shared_state_up(a)
    emulator.clear()
    for job in jobs:
        send(ledger, a, "dash", "GET", f"/runtime/jobs/{job}", "GET /jobs/{job_id}")
        assert crns_for(emulator, job) == [SECOND_CRN]

    # 5. Stopping both writes the rest; the record is exactly what was answered.
    a.stop()
    b.stop()
    rows = {(r.caller, r.client, r.endpoint): r.count for r in read_usage(pg_url)}
    assert rows == dict(ledger.usage)
    assert sum(rows.values()) > 400
    health = [r for r in read_usage(pg_url) if r.endpoint == "GET /health"]
    assert health and all(r.gone == r.count for r in health)

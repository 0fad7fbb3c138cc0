# ruff: noqa: E501  (a report generator: long template lines read better unbroken)
"""One-command benchmark: the proxy against nginx and a naive forwarder, in the same run.

    python bench/run.py                 # full run (~4 min), writes BENCHMARKS.md
    python bench/run.py --duration 3    # quicker, noisier
    python bench/run.py --out /tmp/b.md --skip-streaming

Starts, on loopback only: an upstream nginx (static JSON for the new API, an IAM token stub, a
256 MB job result), the proxy (`qiskit-classic-proxy serve`, every feature on: IAM token,
Service-CRN, path/query rewrites, request id, access log to stderr -> /dev/null), nginx configured
as a rewriting proxy doing the same header injection, and a naive FastAPI + httpx forwarder.
Drives each with wrk (Debian package `wrk`; bench/loadgen.py if it is missing) at 1 and 32
connections, measures proxy CPU and RSS from /proc, streams a 256 MB result and a 50 MB
submission through the proxy, runs 2 workers, and writes BENCHMARKS.md. Everything it starts is
stopped, and its temporary directory removed, on exit (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-iam-token"
CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/benchaccount:benchinstance::"
API_VERSION = "2026-04-15"
ROUTE = "/runtime/backends/fake_bench/status"
UPSTREAM_ROUTE = "/api/v1/backends/fake_bench/status"
STATUS_JSON = {
    "state": True,
    "status": "active",
    "message": "available",
    "length_queue": 3,
    "backend_version": "1.1.0",
    "name": "fake_bench",
}
PROXY = "proxy (native transport)"  # the default configuration
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# --------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, expect: int = 200) -> float:
    """Seconds until `url` answers `expect` (raises on timeout)."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == expect:
                    return time.monotonic() - t0
                last = r.status
        except urllib.error.HTTPError as e:
            if e.code == expect:
                return time.monotonic() - t0
            last = e.code
        except OSError as e:
            last = e
        time.sleep(0.02)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


def tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def rss_kb(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            pass
    return total


class RssSampler:
    """Samples the summed RSS of a process tree every `interval` seconds; `peak_kb` after stop()."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pids = tree(pid)
        self.interval = interval
        self.peak_kb = rss_kb(self.pids)
        self.start_kb = self.peak_kb
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak_kb = max(self.peak_kb, rss_kb(self.pids))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    ready_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Load:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int
    cpu_pct: float | None = None
    peak_rss_mb: float | None = None
    command: str = ""


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    procs: list[Proc] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    # -- process management ------------------------------------------------------------------
    def spawn(self, name: str, cmd: list[str], url: str, env: dict[str, str] | None = None, log: bool = False) -> Proc:
        out = open(self.work / f"{name}.log", "wb") if log else subprocess.DEVNULL
        full_env = {**os.environ, **(env or {})}
        popen = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=out, start_new_session=True)
        p = Proc(name, popen, url)
        self.procs.append(p)
        shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        self.commands.append(f"{shown_env} {shlex.join(cmd)}".strip())
        return p

    def stop(self, p: Proc) -> None:
        if p.popen.poll() is None:
            try:
                os.killpg(p.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            self.stop(p)

    # -- servers --------------------------------------------------------------------------------
    def start_upstream(self) -> Proc:
        www = self.work / "www"
        www.mkdir()
        (www / "status.json").write_text(json.dumps(STATUS_JSON, separators=(",", ":")))
        (www / "created.json").write_text(json.dumps({"id": "bench-job", "backend": "fake_bench"}))
        if not self.args.skip_streaming:
            make_result(www / "results.json", self.args.result_mb * 1024 * 1024)
        port = free_port()
        iam = json.dumps(
            {"access_token": TOKEN, "refresh_token": "not_supported", "token_type": "Bearer", "expires_in": 3600}
        )
        conf = f"""
worker_processes 1;
error_log {self.work}/upstream-error.log warn;
pid {self.work}/upstream.pid;
events {{ worker_connections 4096; }}
http {{
    {_nginx_common(self.work, "up")}
    default_type application/json;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        set $ok 0;
        if ($http_authorization = "Bearer {TOKEN}") {{ set $ok 1; }}
        if ($http_service_crn = "") {{ set $ok 0; }}
        if ($uri ~ ^/(identity|__created)) {{ set $ok 1; }}
        if ($ok = 0) {{ return 401 '{{"errors":[{{"code":"unauthorized","message":"bench upstream: bad token or no Service-CRN"}}]}}'; }}
        location = /identity/token {{ return 200 '{iam}'; }}
        location ~ ^/api/v1/backends/[^/]+/status$ {{ try_files /status.json =404; }}
        location ~ ^/api/v1/jobs/[^/]+/results$ {{ try_files /results.json =404; }}
        # A submission: nginx reads the whole body (request buffering) before answering.
        location = /api/v1/jobs {{ proxy_pass http://127.0.0.1:{port}/__created; proxy_request_buffering on; }}
        location = /__created {{ return 200 '{{"id":"bench-job","backend":"fake_bench"}}'; }}
    }}
}}
"""
        return self._nginx("upstream", conf, f"http://127.0.0.1:{port}")

    def start_nginx_proxy(self, upstream: str) -> Proc:
        port = free_port()
        conf = f"""
worker_processes 1;
error_log {self.work}/nginxproxy-error.log warn;
pid {self.work}/nginxproxy.pid;
events {{ worker_connections 4096; }}
http {{
    {_nginx_common(self.work, "np")}
    upstream newapi {{ server {upstream.removeprefix("http://")}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log /dev/null;
        location /runtime/backends/ {{
            rewrite ^/runtime/backends/([^/]+)/status$ /api/v1/backends/$1/status break;
            proxy_pass http://newapi;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {TOKEN}";
            proxy_set_header Service-CRN "{CRN}";
            proxy_set_header IBM-API-Version "{API_VERSION}";
            proxy_set_header X-Request-ID $request_id;
            add_header X-Request-ID $request_id always;
        }}
    }}
}}
"""
        return self._nginx("nginxproxy", conf, f"http://127.0.0.1:{port}")

    def _nginx(self, name: str, conf: str, url: str) -> Proc:
        path = self.work / f"{name}.conf"
        path.write_text(conf)
        p = self.spawn(
            name, [self.args.nginx, "-p", str(self.work), "-c", str(path), "-g", "daemon off;"], url, log=True
        )
        p.ready_s = wait_http(
            url + "/identity/token" if name == "upstream" else url + "/", expect=200 if name == "upstream" else 404
        )
        return p

    def start_proxy(
        self, upstream: str, *, transport: str = "native", workers: int = 1, usage_db: str | None = None
    ) -> Proc:
        port = free_port()
        env = {
            "QCP_API_KEY": "bench-api-key",
            "QCP_SERVICE_CRN": CRN,
            "QCP_UPSTREAM_URL": upstream + "/api",
            "QCP_IAM_URL": upstream + "/identity/token",
            "QCP_PORT": str(port),
            "QCP_LOG_LEVEL": "info",  # access log on: one line per request on stderr
            "QCP_TRANSPORT": transport,  # the default is native; set here so the report says so
            "QCP_USAGE_DB": str(self.work / "usage.sqlite3") if usage_db is None else usage_db,
        }
        cmd = [*proxy_command(), "serve"] + (["--workers", str(workers)] if workers > 1 else [])
        p = self.spawn(f"proxy-{transport}-w{workers}", cmd, f"http://127.0.0.1:{port}", env=env)
        p.ready_s = wait_http(p.url + "/readyz", timeout=60)
        return p

    def start_naive(self, upstream: str) -> Proc:
        port = free_port()
        env = {
            "BENCH_UPSTREAM": upstream + "/api",
            "BENCH_IAM": upstream + "/identity/token",
            "BENCH_CRN": CRN,
        }
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "naive_forwarder:app",
            "--app-dir",
            str(ROOT / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        p = self.spawn("naive", cmd, f"http://127.0.0.1:{port}", env=env)
        p.ready_s = wait_http(p.url + ROUTE, timeout=30)
        return p

    # -- load -----------------------------------------------------------------------------------
    def load(self, target: str, url: str, connections: int, server: Proc | None, headers: list[str] = ()) -> Load:  # type: ignore[assignment]
        d = self.args.duration
        # Warm up (pools, token, caches), unmeasured.
        self._drive(url, connections, min(2.0, d), headers)
        pids = tree(server.pid) if server else []
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        sampler = RssSampler(server.pid) if server else None
        if sampler:
            sampler.__enter__()
        res, cmd = self._drive(url, connections, d, headers)
        if sampler:
            sampler.__exit__()
        wall = time.monotonic() - t0
        load = Load(
            target,
            connections,
            res["rps"],
            res["p50_ms"],
            res["p99_ms"],
            res["requests"],
            res["non_2xx"],
            res["errors"],
            command=cmd,
        )
        if server:
            load.cpu_pct = 100 * (cpu_seconds(pids) - cpu0) / wall
            load.peak_rss_mb = sampler.peak_kb / 1024 if sampler else None
        self.loads.append(load)
        bad = f"  NON-2XX {load.non_2xx} ERRORS {load.errors}" if (load.non_2xx or load.errors) else ""
        cpu = f"  cpu {load.cpu_pct:5.0f}%  peak rss {load.peak_rss_mb:6.1f} MB" if server else ""
        print(
            f"  {target:<28} c={connections:<3} {load.rps:9.0f} req/s  p50 {load.p50_ms:7.3f} ms  "
            f"p99 {load.p99_ms:7.3f} ms{cpu}{bad}",
            flush=True,
        )
        return load

    def _drive(
        self, url: str, c: int, seconds: float, headers: list[str] | tuple[str, ...]
    ) -> tuple[dict[str, Any], str]:
        hflags = [x for h in headers for x in ("-H", h)]
        if self.args.wrk and not self.args.python_load:
            cmd = [self.args.wrk, "-t1", f"-c{c}", f"-d{seconds:g}s", "--latency", "--timeout", "5s", *hflags, url]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
            return parse_wrk(out), shlex.join(cmd)
        cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "-c", str(c), "-d", f"{seconds:g}", *hflags, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        return json.loads(out.strip().splitlines()[-1]), shlex.join(cmd)

    # -- streaming --------------------------------------------------------------------------------
    def stream_result(self, proxy: Proc, upstream: str) -> dict[str, Any]:
        url = proxy.url + "/runtime/jobs/bench-job/results"
        direct = upstream + "/api/v1/jobs/bench-job/results"
        auth = ["-H", f"Authorization: Bearer {TOKEN}", "-H", f"Service-CRN: {CRN}"]
        fmt = ["-w", "%{http_code} %{size_download} %{time_total}"]
        base = rss_kb(tree(proxy.pid))
        cmd = ["curl", "-s", "-o", "/dev/null", *fmt, url]
        with RssSampler(proxy.pid, 0.01) as s:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout.split()
        d_out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", *fmt, *auth, direct], capture_output=True, text=True, timeout=300
        ).stdout.split()
        self.commands.append(shlex.join(cmd))
        size = int(out[1])
        return {
            "status": int(out[0]),
            "bytes": size,
            "seconds": float(out[2]),
            "mb_per_s": size / 1048576 / float(out[2]),
            "direct_seconds": float(d_out[2]),
            "rss_before_mb": base / 1024,
            "rss_peak_mb": s.peak_kb / 1024,
            "growth_mb": (s.peak_kb - base) / 1024,
        }

    def stream_submission(self, proxy: Proc) -> dict[str, Any]:
        body = self.work / "submission.json"
        make_submission(body, self.args.submit_mb * 1024 * 1024)
        url = proxy.url + "/runtime/jobs"
        cmd = [
            "curl",
            "-s",
            "-o",
            str(self.work / "submit-answer.json"),
            "-w",
            "%{http_code} %{size_upload} %{time_total}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Expect:",
            "--data-binary",
            f"@{body}",
            url,
        ]
        base = rss_kb(tree(proxy.pid))
        with RssSampler(proxy.pid, 0.01) as s:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout.split()
        self.commands.append(shlex.join(cmd).replace(str(self.work), "$WORK"))
        answer = (self.work / "submit-answer.json").read_text()[:200]
        size = int(out[1])
        return {
            "status": int(out[0]),
            "bytes": size,
            "seconds": float(out[2]),
            "mb_per_s": size / 1048576 / float(out[2]),
            "rss_before_mb": base / 1024,
            "rss_peak_mb": s.peak_kb / 1024,
            "growth_mb": (s.peak_kb - base) / 1024,
            "answer": answer,
        }


def _nginx_common(work: Path, tag: str) -> str:
    tmp = work / f"tmp-{tag}"
    tmp.mkdir(exist_ok=True)
    os.chmod(tmp, 0o777)
    return f"""
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 65s;
    client_max_body_size 1g;
"""


def proxy_command() -> list[str]:
    script = Path(sys.executable).parent / "qiskit-classic-proxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]


def make_result(path: Path, size: int) -> None:
    """A job-result-shaped JSON document of `size` bytes (a big base64 payload inside)."""
    head = b'{"id":"bench-job","results":[{"__type__":"ndarray","__value__":"'
    tail = b'"}]}'
    n = size - len(head) - len(tail)
    block = base64.b64encode(os.urandom(3 * 1024 * 1024 // 4 * 4))[: 1024 * 1024]
    with open(path, "wb") as f:
        f.write(head)
        while n > 0:
            f.write(block[: min(n, len(block))])
            n -= len(block)
        f.write(tail)


def make_submission(path: Path, size: int) -> None:
    """A job submission of `size` bytes: legacy hub/group/project/private plus a big QPY-like payload."""
    head = (
        b'{"hub":"ibm-q","group":"open","project":"main","private":false,"program_id":"sampler",'
        b'"backend":"fake_bench","params":{"version":2,"pubs":[[{"__type__":"QuantumCircuit","__value__":"'
    )
    tail = b'"}]]}}'
    n = size - len(head) - len(tail)
    block = base64.b64encode(os.urandom(768 * 1024))
    with open(path, "wb") as f:
        f.write(head)
        while n > 0:
            f.write(block[: min(n, len(block))])
            n -= len(block)
        f.write(tail)


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    reqs = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (reqs and rps and pct):
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    return {
        "requests": int(reqs.group(1)),
        "rps": float(rps.group(1)),
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "non_2xx": int(non2.group(1)) if non2 else 0,
        "errors": sum(int(x) for x in errs.groups()) if errs else 0,
    }


# ------------------------------------------------------------------------------------ report


def machine_info() -> dict[str, str]:
    def sh(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "(unavailable)"

    lscpu = sh(["lscpu"])
    keep = (
        "Architecture",
        "CPU(s)",
        "Model name",
        "Thread(s) per core",
        "Core(s) per socket",
        "Hypervisor vendor",
        "L2 cache",
        "L3 cache",
    )
    lscpu = "\n".join(line for line in lscpu.splitlines() if line.split(":")[0].strip() in keep)
    versions = {}
    for mod in ("uvicorn", "fastapi", "httpx", "httpcore", "aiohttp", "uvloop", "httptools"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "?"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "lscpu": lscpu,
        "nproc": sh(["nproc"]),
        "free": sh(["free", "-h"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": sh(["nginx", "-v"]) or subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": (sh(["wrk", "-v"]).splitlines() or ["(missing)"])[0]
        if shutil.which("wrk")
        else "(missing: Python loadgen)",
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def find(loads: list[Load], target: str, c: int) -> Load | None:
    return next((x for x in loads if x.target == target and x.connections == c), None)


def render(b: Bench, info: dict[str, str]) -> str:
    L = b.loads
    P, N, V, D = PROXY, "nginx rewriting proxy", "naive FastAPI+httpx", "direct upstream (nginx)"
    A, H, W2 = "proxy (aiohttp transport)", "proxy (httpx transport)", "proxy, 2 workers"
    p32, n32, v32, p1, d1 = find(L, P, 32), find(L, N, 32), find(L, V, 32), find(L, P, 1), find(L, D, 1)
    w32 = find(L, W2, 32)

    def f(x: float | None, fmt: str = "{:.0f}") -> str:
        return "\u2013" if x is None else fmt.format(x)

    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(f"Generated by `{b.notes['command']}` on {info['date']} — every number below comes from that one run.")
    add("Re-run it to refresh this file (see `bench/README.md`).")
    add("")
    # -- targets
    add("## Targets (2 cores, one worker, 32 connections, same run)")
    add("")
    add("| Target | Needed | Measured | |")
    add("|---|---|---|---|")
    checks: list[tuple[str, str, str, bool | None]] = []
    if p32 and n32:
        r = p32.rps / n32.rps
        checks.append(
            (
                "throughput vs nginx rewriting proxy",
                "≥ 10 %",
                f"{100 * r:.1f} % ({p32.rps:.0f} / {n32.rps:.0f} req/s)",
                r >= 0.10,
            )
        )
    if p32 and v32:
        r = p32.rps / v32.rps
        checks.append(
            ("throughput vs naive FastAPI + httpx", "≥ 8\u00d7", f"{r:.1f}\u00d7 ({p32.rps:.0f} / {v32.rps:.0f} req/s)", r >= 8)
        )
    if p32:
        checks.append(("p99 latency at 32 connections", "≤ 20 ms", f"{p32.p99_ms:.2f} ms", p32.p99_ms <= 20))
    if p1 and d1:
        added = p1.p50_ms - d1.p50_ms
        checks.append(
            (
                "added p50 over direct upstream, 1 connection",
                "≤ 0.5 ms",
                f"{added:.3f} ms ({p1.p50_ms:.3f} \u2212 {d1.p50_ms:.3f})",
                added <= 0.5,
            )
        )
    sr = b.notes.get("stream_result")
    if sr:
        checks.append(
            (
                f"RSS growth, {sr['bytes'] / 1048576:.0f} MB job result through the proxy",
                "< 32 MB",
                f"{sr['growth_mb']:.1f} MB",
                sr["growth_mb"] < 32 and sr["status"] == 200,
            )
        )
    ss = b.notes.get("stream_submit")
    if ss:
        checks.append(
            (
                f"RSS growth, {ss['bytes'] / 1048576:.0f} MB job submission through the proxy",
                "< 32 MB",
                f"{ss['growth_mb']:.1f} MB",
                ss["growth_mb"] < 32 and ss["status"] == 200,
            )
        )
    for name, need, got, ok in checks:
        add(f"| {name} | {need} | {got} | {'✅ met' if ok else '❌ missed'} |")
    add("")
    bad = [x for x in L if x.non_2xx or x.errors]
    if bad:
        add(
            "**Warning:** some runs saw errors: "
            + ", ".join(f"{x.target} c={x.connections}: {x.non_2xx} non-2xx, {x.errors} socket errors" for x in bad)
        )
        add("")
    # -- main table
    add("## Throughput and latency")
    add("")
    add(
        f"Route: `GET {ROUTE}` → upstream `GET {UPSTREAM_ROUTE}` ({len(json.dumps(STATUS_JSON, separators=(',', ':')))}-byte JSON from nginx), "
        f"{b.args.duration:g} s per run after a 2 s warm-up. CPU is the server's (all its processes) over the run, "
        "100 % = one core; RSS is the peak of the server's processes during the run."
    )
    add("")
    add("| Server | conns | req/s | p50 ms | p99 ms | server CPU | peak RSS | vs nginx proxy | vs naive |")
    add("|---|---|---|---|---|---|---|---|---|")
    for x in L:
        ref_n, ref_v = find(L, N, x.connections), find(L, V, x.connections)
        ours = x.target.startswith("proxy")
        vs_n = f"{100 * x.rps / ref_n.rps:.1f} %" if ref_n and ours else ""
        vs_v = f"{x.rps / ref_v.rps:.1f}\u00d7" if ref_v and ours else ""
        cpu = f"{x.cpu_pct:.0f} %" if x.cpu_pct is not None else "\u2013"
        rss = f"{x.peak_rss_mb:.0f} MB" if x.peak_rss_mb is not None else "\u2013"
        add(
            f"| {x.target} | {x.connections} | {x.rps:.0f} | {x.p50_ms:.3f} | {x.p99_ms:.2f} | {cpu} | {rss} | {vs_n} | {vs_v} |"
        )
    add("")
    add("Idle and start-up (one worker unless noted):")
    add("")
    add("| | value |")
    add("|---|---|")
    for k, label in (
        ("idle_rss_mb", "proxy idle RSS after start-up (1 worker)"),
        ("ready_s", "proxy start-up to ready (`/readyz` 200, IAM token in hand)"),
        ("idle_rss_mb_w2", "proxy idle RSS, 2 workers (all processes)"),
        ("ready_s_w2", "proxy start-up to ready, 2 workers"),
    ):
        if k in b.notes:
            v = b.notes[k]
            add(f"| {label} | {v:.0f} MB |" if "rss" in k else f"| {label} | {v:.2f} s |")
    add("")
    # -- streaming
    if sr or ss:
        add("## Streaming")
        add("")
        add("| Body | status | size | time | throughput | proxy RSS before → peak | growth |")
        add("|---|---|---|---|---|---|---|")
        if sr:
            add(
                f"| job result, upstream → caller (`GET /runtime/jobs/bench-job/results`) | {sr['status']} | {sr['bytes'] / 1048576:.0f} MB | "
                f"{sr['seconds']:.2f} s (direct from nginx: {sr['direct_seconds']:.2f} s) | {sr['mb_per_s']:.0f} MB/s | "
                f"{sr['rss_before_mb']:.0f} → {sr['rss_peak_mb']:.0f} MB | **{sr['growth_mb']:.1f} MB** |"
            )
        if ss:
            add(
                f"| job submission, caller → upstream (`POST /runtime/jobs`, hub/group/project/private dropped on the way) | {ss['status']} | "
                f"{ss['bytes'] / 1048576:.0f} MB | {ss['seconds']:.2f} s | {ss['mb_per_s']:.0f} MB/s | "
                f"{ss['rss_before_mb']:.0f} → {ss['rss_peak_mb']:.0f} MB | **{ss['growth_mb']:.1f} MB** |"
            )
        add("")
        add(
            "RSS is sampled from `/proc/<pid>/statm` every 10 ms while the body passes (the client is curl, a separate process)."
        )
        add("")
    # -- transport
    add("## Choice of the upstream transport")
    add("")
    add(
        "httpx stays the client API (`proxy/upstream/client.py` builds no other kind of request or response); what moves "
        "the bytes is an `httpx.AsyncBaseTransport`. Same proxy, same run, only `QCP_TRANSPORT` differs:"
    )
    add("")
    add("| transport | c=1 req/s | c=1 p50 ms | c=32 req/s | c=32 p99 ms | CPU per request (c=32) |")
    add("|---|---|---|---|---|---|")
    for label, name in (
        (P, "`native` (default): asyncio + httptools, `proxy/upstream/transport.py`"),
        (A, "`aiohttp`: aiohttp client, `proxy/upstream/transport.py`"),
        (H, "`httpx`: httpx's own pool (httpcore)"),
    ):
        x1, x32 = find(L, label, 1), find(L, label, 32)
        if x1 and x32:
            cpu_us = (x32.cpu_pct or 0) / 100 / x32.rps * 1e6 if x32.rps else 0
            add(f"| {name} | {x1.rps:.0f} | {x1.p50_ms:.3f} | {x32.rps:.0f} | {x32.p99_ms:.1f} | {cpu_us:.0f} µs |")
    add("")
    tc = b.notes.get("transport_cpu")
    if tc:
        add(
            "Client side alone (`bench/transport_cpu.py`, same run): CPU per sequential GET to the upstream nginx, "
            "with the proxy's upstream headers:"
        )
        add("")
        add("| client | CPU µs per request |")
        add("|---|---|")
        for name, us in tc.items():
            add(f"| {name} | {us:.0f} |")
        add("")
    add(
        "Why these numbers: httpcore's pool takes an anyio lock and polls each pooled socket for readability on "
        "every request (encode/httpx#3215, open; httpcore#928 measured that poll alone at > 4.5\u00d7 overhead), so it "
        "gets slower as concurrency grows. aiohttp scales, but each request through it builds URL, header, request "
        "and response objects, timers and tracing hooks, several times the CPU of a bare asyncio protocol doing the "
        "same exchange (table above). `NativeTransport` is that bare protocol plus what a "
        "proxy needs and nothing more: a keep-alive pool with a bounded number of connections (pool timeout), "
        "keep-alive expiry, llhttp parsing via httptools (the parser uvicorn already runs for the inbound side), "
        "streaming with flow control both ways, connect/read/write timeouts, TLS, and no retries, cookies, "
        "redirects, env proxies or decompression. Both custom transports map their failures to the httpx "
        "exceptions the proxy turns into answers, and share one test suite (`tests/test_transport.py`); "
        "`QCP_TRANSPORT=aiohttp` or `=httpx` switches back without code changes."
    )
    add("")
    add("uvicorn runs with uvloop and httptools (its `auto` choice when `uvicorn[standard]` is installed).")
    add("")
    # -- where the time goes
    add("## Where the time goes")
    add("")
    if p32:
        per_req_us = (p32.cpu_pct or 0) / 100 / p32.rps * 1e6 if p32.rps else 0
        add(
            f"At 32 connections the proxy process uses {p32.cpu_pct:.0f} % of a core for {p32.rps:.0f} req/s, i.e. "
            f"about {per_req_us:.0f} µs of CPU per request, all in one Python thread. wrk, the upstream nginx and the "
            "proxy share the machine's 2 cores, so the proxy can never have both. The per-request work is: uvicorn's "
            "HTTP parsing and ASGI messages (httptools; it writes the status line+headers and the body with two "
            "separate socket writes), route match + caller identification, the IAM token lookup, the upstream "
            "exchange (NativeTransport + an httpx.Response), header filtering both ways, the phase-out/metrics/usage "
            "hooks, and one access-log line through Python logging. On this VM a loopback socket write costs "
            "tens of µs of kernel time, and each proxied request makes at least three (response head, response "
            "body, upstream request) plus two reads."
        )
    add("")
    if b.notes.get("profile"):
        add(
            "A py-spy profile of the proxy under 32 connections (same run; 250 samples/s). A Python frame's own time "
            "includes the C code it calls: socket writes show up under uvicorn's `RequestResponseCycle.send` and "
            "`NativeTransport.send_fast`, socket reads and callbacks under the event loop."
        )
        add("")
        add("```")
        add(b.notes["profile"])
        add("```")
        add("")
    # -- scale-out
    if w32 and p32:
        add("## Scale-out")
        add("")
        add(
            f"`qiskit-classic-proxy serve --workers 2`: {w32.rps:.0f} req/s at 32 connections (p99 {w32.p99_ms:.2f} ms) vs "
            f"{p32.rps:.0f} with one worker. On 2 cores shared with wrk and the upstream, a second worker has little "
            "free CPU to use; on a machine with spare cores it scales with them. Each worker has its own upstream "
            "pool and IAM token."
        )
        add("")
    # -- V1 program translation (bench/programs.py)
    if b.notes.get("programs"):
        sys.path.insert(0, str(ROOT / "bench"))
        from programs import section

        lines.extend(section(b.notes["programs"]))
    # -- machine and commands
    add("## Machine")
    add("")
    add("```")
    add(f"$ nproc\n{info['nproc']}")
    add(f"$ lscpu (excerpt)\n{info['lscpu']}")
    add(f"$ free -h\n{info['free']}")
    add(f"kernel {info['kernel']}, Python {info['python']}, {info['nginx']}, {info['wrk']}")
    add(info["packages"])
    add("```")
    add("")
    add("## Exact commands")
    add("")
    add(
        f"All started by `{b.notes['command']}`; `$WORK` is its temporary directory (removed at the end). "
        "Proxy stderr (the access log: one line per request) goes to /dev/null."
    )
    add("")
    add("```")
    seen: set[str] = set()
    for c in b.commands + [x.command for x in L]:
        c = c.replace(str(b.work), "$WORK")
        if c and c not in seen:
            seen.add(c)
            add(c)
    add("```")
    add("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- main


def profile_proxy(b: Bench, proxy: Proc, seconds: float) -> str | None:
    """py-spy (if installed) on the proxy under 32 connections: own time by module and top frames."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    out = b.work / "profile.txt"
    cmd = [
        spy,
        "record",
        "--pid",
        str(proxy.pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        "250",
        "--format",
        "raw",
        "-o",
        str(out),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    b._drive(proxy.url + ROUTE, 32, seconds + 1, [])
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        return None
    if not out.exists():
        return None
    b.commands.append(shlex.join(cmd).replace(str(b.work), "$WORK").replace(str(proxy.pid), "<proxy pid>"))
    return summarize_profile(out.read_text())


def summarize_profile(raw: str) -> str | None:
    """py-spy raw output -> own time by module and the top functions."""
    own: dict[str, int] = {}
    by_module: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or "UsageRecorder._run" in stack:  # an idle background thread
            continue
        leaf = stack.split(";")[-1]
        m = re.search(r"\((.*?):\d+\)$", leaf)
        path = m.group(1) if m else ""
        if leaf.startswith("Runner.run "):  # nothing in Python above it: uvloop's C loop and the kernel
            module = "event loop (uvloop, C) + socket I/O"
        elif path.startswith("proxy/"):
            module = path
        elif "/" in path:
            module = path.split("/")[0]
        else:
            module = path.removesuffix(".py") or "?"
        name = leaf
        own[name] = own.get(name, 0) + int(n)
        by_module[module] = by_module.get(module, 0) + int(n)
        total += int(n)
    if not total:
        return None
    lines = ["own time by module, % of samples:"]
    lines += [f"{100 * v / total:5.1f}  {k}" for k, v in sorted(by_module.items(), key=lambda kv: -kv[1])[:14]]
    lines += ["", "top functions (own time), %:"]
    lines += [f"{100 * v / total:5.1f}  {k}" for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:14]]
    return "\n".join(lines)


#: Sections other bench scripts write into the report (bench/usage_backends.py); a full run keeps them.
KEPT_SECTIONS = ("usage-backends",)


def keep_sections(report: str, old_path: Path) -> str:
    old = old_path.read_text() if old_path.exists() else ""
    for name in KEPT_SECTIONS:
        m = re.search(rf"<!-- {name}:start -->.*?<!-- {name}:end -->\n", old, re.S)
        if m and f"<!-- {name}:start -->" not in report:
            report = report.rstrip("\n") + "\n\n" + m.group(0)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark the proxy against nginx and a naive forwarder.")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="report path (default BENCHMARKS.md)")
    ap.add_argument("--result-mb", type=int, default=256, help="size of the streamed job result (default 256)")
    ap.add_argument("--submit-mb", type=int, default=50, help="size of the streamed submission (default 50)")
    ap.add_argument("--skip-streaming", action="store_true", help="skip the large-body runs")
    ap.add_argument("--skip-workers", action="store_true", help="skip the 2-worker run")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    ap.add_argument("--python-load", action="store_true", help="use bench/loadgen.py even if wrk is installed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.wrk = shutil.which("wrk")
    args.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(args.nginx).exists():
        print("nginx is required: apt-get install -y nginx-light (or nginx)", file=sys.stderr)
        return 2
    if not args.wrk:
        print("wrk not found (apt-get install -y wrk): using the slower Python load generator bench/loadgen.py")
    work = Path(tempfile.mkdtemp(prefix="qcp-bench-"))
    os.chmod(work, 0o755)
    b = Bench(args, work)
    shown, skip = [], False
    for a in sys.argv[1:]:  # the report names its own command, minus where it was written
        if skip or a.startswith("--out"):
            skip = a == "--out"
            continue
        shown.append(a)
    b.notes["command"] = shlex.join(["python", "bench/run.py", *shown])

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    info = machine_info()
    try:
        print(f"work dir {work}")
        up = b.start_upstream()
        print(f"upstream nginx {up.url}")
        auth = [f"Authorization: Bearer {TOKEN}", f"Service-CRN: {CRN}", f"IBM-API-Version: {API_VERSION}"]

        print("transport CPU (client side)")
        tc_cmd = [sys.executable, str(ROOT / "bench" / "transport_cpu.py"), up.url + UPSTREAM_ROUTE, "3000"]
        b.notes["transport_cpu"] = json.loads(
            subprocess.run(tc_cmd, capture_output=True, text=True, timeout=300, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )
        b.commands.append(shlex.join(tc_cmd))
        print(f"  {b.notes['transport_cpu']}")
        pg_cmd = [sys.executable, str(ROOT / "bench" / "programs.py"), "100", "4000", "20"]
        b.notes["programs"] = json.loads(
            subprocess.run(pg_cmd, capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()[-1]
        )
        b.commands.append(shlex.join(pg_cmd))
        print("direct upstream")
        b.load("direct upstream (nginx)", up.url + UPSTREAM_ROUTE, 1, None, auth)
        b.load("direct upstream (nginx)", up.url + UPSTREAM_ROUTE, 32, None, auth)

        np_ = b.start_nginx_proxy(up.url)
        for c in (1, 32):
            b.load("nginx rewriting proxy", np_.url + ROUTE, c, np_)
        b.stop(np_)

        nv = b.start_naive(up.url)
        for c in (1, 32):
            b.load("naive FastAPI+httpx", nv.url + ROUTE, c, nv)
        b.stop(nv)

        px = b.start_proxy(up.url, transport="native")
        time.sleep(0.5)
        b.notes["idle_rss_mb"] = rss_kb(tree(px.pid)) / 1024
        b.notes["ready_s"] = px.ready_s
        for c in (1, 32):
            b.load(PROXY, px.url + ROUTE, c, px)
        if not args.no_profile:
            b.notes["profile"] = profile_proxy(b, px, min(args.duration, 5))
        if not args.skip_streaming:
            print("streaming")
            b.notes["stream_result"] = b.stream_result(px, up.url)
            print(f"  result: {b.notes['stream_result']}")
            b.notes["stream_submit"] = b.stream_submission(px)
            print(f"  submission: {b.notes['stream_submit']}")
        b.stop(px)

        for name, label in (("aiohttp", "proxy (aiohttp transport)"), ("httpx", "proxy (httpx transport)")):
            pt = b.start_proxy(up.url, transport=name)
            for c in (1, 32):
                b.load(label, pt.url + ROUTE, c, pt)
            b.stop(pt)

        if not args.skip_workers:
            pw = b.start_proxy(up.url, transport="native", workers=2)
            time.sleep(1.0)
            b.notes["idle_rss_mb_w2"] = rss_kb(tree(pw.pid)) / 1024
            b.notes["ready_s_w2"] = pw.ready_s
            b.load("proxy, 2 workers", pw.url + ROUTE, 32, pw)
            b.stop(pw)

        report = keep_sections(render(b, info), Path(args.out))
        old = Path(args.out).read_text() if Path(args.out).exists() else ""
        if "<!-- soak:start -->" in old and "<!-- soak:start -->" not in report:  # bench/soak.py's section survives
            report = report.rstrip("\n") + "\n\n" + old[old.index("<!-- soak:start -->") :].split("<!-- soak:end -->")[0]
            report += "<!-- soak:end -->\n"
        Path(args.out).write_text(report)
        print()
        print(report.split("## Throughput and latency")[0])
        print(f"written to {args.out}")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        b.stop_all()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

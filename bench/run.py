# ruff: noqa: E501, RUF001  (a report generator: long template lines read better unbroken; the signs are typography)
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cases  # bench/cases.py: the routes legacy SDKs call

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
MIXED = cases.MIXED
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
    user, system = cpu_split(pids)
    return user + system


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds of these processes (utime, stime from /proc)."""
    user = system = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return user / TICK, system / TICK


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
    case: str = "status"
    cpu_us: float | None = None  # server CPU per request

    @property
    def unexpected(self) -> int:
        """Answers that were not what this case should get (wrk counts only non-2xx/3xx)."""
        c = cases.BY_KEY.get(self.case)
        return self.non_2xx if (c is None or c.status < 400) else self.requests - self.non_2xx


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    procs: list[Proc] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    scripts: dict[str, Path] = field(default_factory=dict)  # case key -> wrk script (POSTs, the mix)

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
        cases.write_documents(www)
        (self.work / "submit-10k.json").write_bytes(cases.submission(10 * 1024))
        (self.work / "submit-10m.json").write_bytes(cases.submission(10 * 1024 * 1024))
        make_result(www / "results-10m.json", 10 * 1024 * 1024)
        if not self.args.skip_streaming and not self.args.quick:
            make_result(www / "results-large.json", self.args.result_mb * 1024 * 1024)
        port = free_port()
        iam = json.dumps(
            {"access_token": TOKEN, "refresh_token": "not_supported", "token_type": "Bearer", "expires_in": 3600}
        )
        missing = '{"errors":[{"code":"not_found","message":"Job not found.","more_info":"https://cloud.ibm.com/apidocs/quantum-computing"}]}'
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
        location = /api/v1/backends {{ try_files /backends.json =404; }}
        location ~ ^/api/v1/jobs/{cases.MISSING_JOB_ID}$ {{ return 404 '{missing}'; }}
        location ~ ^/api/v1/jobs/[^/]+$ {{ try_files /job.json =404; }}
        location ~ ^/api/v1/jobs/{cases.BIG_JOB_ID}/results$ {{ try_files /results-10m.json =404; }}
        location ~ ^/api/v1/jobs/bench-large/results$ {{ try_files /results-large.json =404; }}
        location ~ ^/api/v1/jobs/[^/]+/results$ {{ try_files /results-1k.json =404; }}
        # GET lists jobs; POST submits: nginx reads the whole body (request buffering) before answering.
        location = /api/v1/jobs {{
            if ($request_method = POST) {{ rewrite ^ /__submit last; }}
            try_files /jobs.json =404;
        }}
        location = /__submit {{ internal; proxy_pass http://127.0.0.1:{port}/__created; proxy_request_buffering on; }}
        location = /__created {{ return 200 '{{"id":"{cases.JOB_ID}","backend":"fake_bench"}}'; }}
    }}
}}
"""
        return self._nginx("upstream", conf, f"http://127.0.0.1:{port}")

    def start_nginx_proxy(self, upstream: str) -> Proc:
        """nginx doing what a hand-written nginx migration would: the path rewrites (plus the list's
        exclude_params default) and the header injection. It cannot reshape answers or bodies."""
        port = free_port()
        gone = '{"errors":[{"code":"endpoint_removed","message":"GET /health was removed"}]}'
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
        location = /runtime/health {{ default_type application/json; return 410 '{gone}'; }}
        location /runtime/ {{
            rewrite ^/runtime/jobs$ /api/v1/jobs?exclude_params=true break;
            rewrite ^/runtime/(.*)$ /api/v1/$1 break;
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
        self, upstream: str, *, transport: str = "native", workers: int = 1, usage_db: str | None = None,
        src: Path | None = None,
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
        if src is not None:  # another revision's proxy/ (--compare), on the same installed dependencies
            env["PYTHONPATH"] = str(src)
        cmd = ([sys.executable, "-m", "proxy"] if src is not None else proxy_command()) + ["serve"]
        cmd += ["--workers", str(workers)] if workers > 1 else []
        p = self.spawn(f"proxy-{transport}-w{workers}-{src.name if src else 'tree'}", cmd, f"http://127.0.0.1:{port}", env=env)
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
    def load(
        self,
        target: str,
        url: str,
        connections: int,
        server: Proc | None,
        headers: list[str] | tuple[str, ...] = (),
        case: str = "status",
        script: Path | None = None,
    ) -> Load:
        d = self.args.duration
        if self.args.warmup >= 1:  # warm up (pools, token, caches), unmeasured
            self._drive(url, connections, self.args.warmup, headers, script)
        pids = tree(server.pid) if server else []
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        sampler = RssSampler(server.pid) if server else None
        if sampler:
            sampler.__enter__()
        res, cmd = self._drive(url, connections, d, headers, script)
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
            case=case,
        )
        if server:
            used = cpu_seconds(pids) - cpu0
            load.cpu_pct = 100 * used / wall
            load.cpu_us = 1e6 * used / load.requests if load.requests else None
            load.peak_rss_mb = sampler.peak_kb / 1024 if sampler else None
        self.loads.append(load)
        bad = f"  UNEXPECTED {load.unexpected} ERRORS {load.errors}" if (load.unexpected or load.errors) else ""
        cpu = f"  cpu {load.cpu_us or 0:6.0f} us/req  peak rss {load.peak_rss_mb:6.1f} MB" if server else ""
        print(
            f"  {case:<12} {target:<26} c={connections:<3} {load.rps:9.0f} req/s  p50 {load.p50_ms:7.3f} ms  "
            f"p99 {load.p99_ms:7.3f} ms{cpu}{bad}",
            flush=True,
        )
        return load

    def _drive(
        self, url: str, c: int, seconds: float, headers: list[str] | tuple[str, ...], script: Path | None = None
    ) -> tuple[dict[str, Any], str]:
        hflags = [x for h in headers for x in ("-H", h)]
        if self.args.wrk and not self.args.python_load:
            sflags = ["-s", str(script)] if script else []
            cmd = [self.args.wrk, "-t1", f"-c{c}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s", *sflags, *hflags, url]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
            return parse_wrk(out), shlex.join(cmd)
        if script:
            raise SystemExit("POST and mixed cases need wrk (apt-get install -y wrk)")
        cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "-c", str(c), "-d", f"{seconds:g}", *hflags, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        return json.loads(out.strip().splitlines()[-1]), shlex.join(cmd)

    # -- streaming --------------------------------------------------------------------------------
    def stream_result(self, proxy: Proc, upstream: str, job: str) -> dict[str, Any]:
        url = proxy.url + f"/runtime/jobs/{job}/results"
        direct = upstream + f"/api/v1/jobs/{job}/results"
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
            "path": f"/runtime/jobs/{job}/results",
        }

    def stream_submission(self, proxy: Proc, mb: int) -> dict[str, Any]:
        body = self.work / f"submission-{mb}m.json"
        make_submission(body, mb * 1024 * 1024)
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
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "nginx": sh(["nginx", "-v"]) or subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": (sh(["wrk", "-v"]).splitlines() or ["(missing)"])[0]
        if shutil.which("wrk")
        else "(missing: Python loadgen)",
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def find(loads: list[Load], target: str, c: int, case: str = "status") -> Load | None:
    return next((x for x in loads if x.target == target and x.connections == c and x.case == case), None)


def route_runs(b: Any, loads: list[Load]) -> Iterator[tuple[Any, Load, Load, Load]]:
    """Each route (and the mixed scenario) with its proxy, nginx and naive runs, where all three ran."""
    for c in [*cases.CASES, MIXED]:
        k = (2 if b.args.quick else BULK_CONNECTIONS) if c.bulk else 32
        p, n, v = find(loads, PROXY, k, c.key), find(loads, N, k, c.key), find(loads, V, k, c.key)
        if p and n and v:
            yield c, p, n, v


N, V, D = "nginx rewriting proxy", "naive FastAPI+httpx", "direct upstream (nginx)"
A, H, W2 = "proxy (aiohttp transport)", "proxy (httpx transport)", "proxy, 2 workers"
#: The issue #15 targets (1 worker, 32 connections, same run).
SHARE, TIMES, P99, ADDED, GROWTH = 0.15, 10.0, 5.0, 0.2, 16.0


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def render(b: Bench, info: dict[str, str]) -> str:
    L = b.loads
    P = PROXY
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(f"Generated by `{b.notes['command']}` on {info['date']} — every number below comes from that one run.")
    add(
        f"Re-run it to refresh this file (see `bench/README.md`). Load average when it started: {info['loadavg']} "
        "(the 2 cores are shared with wrk, both nginx and, on a shared machine, whatever else runs): compare within "
        "this run, not across runs."
    )
    add("")
    # -- targets
    add("## Targets (issue #15: 2 cores, one worker, 32 connections, same run)")
    add("")
    add(
        f"Each route against nginx doing the same path rewrite and header injection, and against the naive FastAPI + "
        f"httpx forwarder. Needed: ≥ {100 * SHARE:.0f} % of nginx, ≥ {TIMES:.0f}× naive, p99 ≤ {P99:g} ms."
    )
    add("")
    add("| route | share of nginx | × naive | p99 | all met |")
    add("|---|---|---|---|---|")
    for c, p, n, v in route_runs(b, L):
        if c.bulk:
            continue
        share, times = p.rps / n.rps if n.rps else 0, p.rps / v.rps if v.rps else 0
        ok = (share >= SHARE, times >= TIMES, p.p99_ms <= P99)
        add(
            f"| {c.label} | {_mark(ok[0])} {100 * share:.1f} % | {_mark(ok[1])} {times:.1f}× | "
            f"{_mark(ok[2])} {p.p99_ms:.2f} ms | {'yes' if all(ok) else 'no'} |"
        )
    add("")
    other: list[tuple[str, str, str, bool]] = []
    j1, d1 = find(L, P, 1, "job"), find(L, D, 1, "job")
    if j1 and d1:
        added = j1.p50_ms - d1.p50_ms
        other.append(
            (f"added p50 over direct upstream, 1 connection, {cases.BY_KEY['job'].label}", f"≤ {ADDED:g} ms",
             f"{added:.3f} ms ({j1.p50_ms:.3f} − {d1.p50_ms:.3f})", added <= ADDED)
        )
    for st in b.notes.get("streams", []):
        if st["mb"] <= 10:
            other.append(
                (f"RSS growth, {st['mb']} MB {st['kind']} through the proxy", f"< {GROWTH:g} MB",
                 f"{st['growth_mb']:.1f} MB", st["growth_mb"] < GROWTH and st["status"] == 200)
            )
    if other:
        add("| target | needed | measured | |")
        add("|---|---|---|---|")
        for name, need, got, ok in other:
            add(f"| {name} | {need} | {got} | {_mark(ok)} {'met' if ok else 'missed'} |")
        add("")
    bad = [x for x in L if x.unexpected or x.errors or not x.requests]
    if bad:
        add(
            "**Warning:** some runs saw unexpected answers or errors: "
            + ", ".join(f"{x.case} {x.target} c={x.connections}: {x.unexpected} unexpected, {x.errors} socket errors"
                        for x in bad)
        )
        add("")
    add(why_missed(L))
    add("")
    # -- per route
    add("## The routes legacy SDKs call")
    add("")
    add(
        f"32 connections, {b.args.duration:g} s per run after a {b.args.warmup:g} s warm-up; the three servers run "
        "back to back for each route, so each row's numbers are minutes apart at most. CPU µs/req is the server's "
        "CPU (all its processes, from /proc) divided by the requests it answered; RSS is the server's peak during "
        "the run. nginx does the path rewrites and header injection only: it cannot add the Classic fields "
        "(`hub`/`group`/`project`, top-level `status`, device names, the Classic `error` object) nor drop "
        "hub/group/project from a submission, which the proxy and the naive forwarder both do."
    )
    add("")
    add("| route | upstream | nginx req/s | nginx p99 | nginx µs/req | naive req/s | naive p99 | proxy req/s | proxy p50 | proxy p99 | proxy µs/req | proxy RSS | share of nginx | × naive |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c, p, n, v in route_runs(b, L):
        up = f"`{c.method} {c.upstream.removeprefix('/api')}`" if c.upstream else "(local)"
        add(
            f"| {c.label} | {up} | {n.rps:.0f} | {n.p99_ms:.2f} | {n.cpu_us or 0:.0f} | {v.rps:.0f} | {v.p99_ms:.1f} | "
            f"{p.rps:.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | {p.cpu_us or 0:.0f} | {p.peak_rss_mb or 0:.0f} MB | "
            f"{100 * p.rps / n.rps if n.rps else 0:.1f} % | {p.rps / v.rps if v.rps else 0:.1f}× |"
        )
    add("")
    add(
        f"The mixed row is one legacy SDK session's proportions, per 20 requests: {cases.MIX_LABEL}. The 10 MB rows "
        f"run at {BULK_CONNECTIONS} connections (32 concurrent 10 MB bodies measure the loopback, not the proxy) "
        "and are throughput-bound, so they are not part of the per-request targets; their RSS column is the peak "
        f"with {BULK_CONNECTIONS} bodies in flight."
    )
    add("")
    add("One connection, `GET /jobs/{id}` (the polling call), for the added latency:")
    add("")
    add("| server | req/s | p50 ms | p99 ms | µs/req |")
    add("|---|---|---|---|---|")
    for t in (D, N, V, P):
        x = find(L, t, 1, "job")
        if x:
            add(f"| {t} | {x.rps:.0f} | {x.p50_ms:.3f} | {x.p99_ms:.2f} | {'–' if x.cpu_us is None else f'{x.cpu_us:.0f}'} |")
    add("")
    idle = [(k, lbl) for k, lbl in (
        ("idle_rss_mb", "proxy idle RSS after start-up (1 worker)"),
        ("ready_s", "proxy start-up to ready (`/readyz` 200, IAM token in hand)"),
        ("idle_rss_mb_w2", "proxy idle RSS, 2 workers (all processes)"),
        ("ready_s_w2", "proxy start-up to ready, 2 workers"),
    ) if k in b.notes]
    if idle:
        add("| idle and start-up | value |")
        add("|---|---|")
        for k, label in idle:
            v = b.notes[k]
            add(f"| {label} | {v:.0f} MB |" if "rss" in k else f"| {label} | {v:.2f} s |")
        add("")
    # -- profiles
    profs = b.notes.get("profiles") or {}
    if profs:
        add("## Where the time goes")
        add("")
        add(
            "py-spy on the proxy under 32 connections on the two routes with the most proxy CPU per request "
            "(small bodies; same run, 250 samples/s). A Python frame's own time includes the C code it calls: "
            "socket writes show up under `Cycle.send` (`proxy/http1.py`, to the caller) and `NativeTransport.exchange` (to the new API), "
            "socket reads and callbacks under the event loop. wrk, the upstream nginx and the proxy share the 2 "
            "cores; the proxy is one Python thread, so it is CPU-bound at 100 % of one core in every 32-connection run."
        )
        add("")
        for key, text in profs.items():
            c = cases.BY_KEY[key]
            add(f"### {c.label}")
            add("")
            add("```")
            add(text)
            add("```")
            add("")
    # -- streaming
    streams = b.notes.get("streams") or []
    if streams:
        add("## Streaming")
        add("")
        add("| body | status | size | time | throughput | proxy RSS before → peak | growth |")
        add("|---|---|---|---|---|---|---|")
        for st in streams:
            direct = f" (direct from nginx: {st['direct_seconds']:.2f} s)" if "direct_seconds" in st else ""
            add(
                f"| {st['kind']} (`{st['what']}`) | {st['status']} | {st['bytes'] / 1048576:.0f} MB | "
                f"{st['seconds']:.2f} s{direct} | {st['mb_per_s']:.0f} MB/s | "
                f"{st['rss_before_mb']:.0f} → {st['rss_peak_mb']:.0f} MB | **{st['growth_mb']:.1f} MB** |"
            )
        add("")
        add(
            "One body at a time through the proxy (curl, a separate process); RSS sampled from `/proc/<pid>/statm` "
            "every 10 ms while the body passes. Submissions have hub/group/project/private dropped on the way."
        )
        add("")
    # -- transport
    rows = [(lbl, name) for lbl, name in (
        (P, "`native` (default): asyncio + httptools, `proxy/upstream/transport.py`"),
        (A, "`aiohttp`: aiohttp client, `proxy/upstream/transport.py`"),
        (H, "`httpx`: httpx's own pool (httpcore)"),
    ) if find(L, lbl, 32) and find(L, lbl, 1)]
    if len(rows) > 1:
        add("## Choice of the upstream transport")
        add("")
        add(
            f"What moves the bytes is an `httpx.AsyncBaseTransport`; the native one also has `exchange`, which the hot "
            f"path calls and which answers with a small `UpstreamResponse` (`proxy/upstream/response.py`) instead of an "
            f"`httpx.Response`; the other two answer with `httpx.Response`. Same proxy, same run, only `QCP_TRANSPORT` "
            f"differs; route `GET {ROUTE}`:"
        )
        add("")
        add("| transport | c=1 req/s | c=1 p50 ms | c=32 req/s | c=32 p99 ms | CPU per request (c=32) |")
        add("|---|---|---|---|---|---|")
        for label, name in rows:
            x1, x32 = find(L, label, 1), find(L, label, 32)
            assert x1 and x32
            add(f"| {name} | {x1.rps:.0f} | {x1.p50_ms:.3f} | {x32.rps:.0f} | {x32.p99_ms:.1f} | {x32.cpu_us or 0:.0f} µs |")
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
            "keep-alive expiry, llhttp parsing via httptools (the parser the proxy's inbound protocol, `proxy/http1.py`, runs too), "
            "streaming with flow control both ways, connect/read/write timeouts, TLS, and no retries, cookies, "
            "redirects, env proxies or decompression. Both custom transports map their failures to the httpx "
            "exceptions the proxy turns into answers, and share one test suite (`tests/test_transport.py`); "
            "`QCP_TRANSPORT=aiohttp` or `=httpx` switches back without code changes."
        )
        add("")
        add("uvicorn's server runs the proxy's own HTTP/1.1 protocol (`proxy/http1.py`, httptools) on uvloop.")
        add("")
    # -- scale-out
    w32, p32 = find(L, W2, 32, "job"), find(L, P, 32, "job")
    if w32 and p32:
        add("## Scale-out")
        add("")
        add(
            f"`qiskit-classic-proxy serve --workers 2`, `GET /jobs/{{id}}`: {w32.rps:.0f} req/s at 32 connections "
            f"(p99 {w32.p99_ms:.2f} ms) vs {p32.rps:.0f} with one worker. On 2 cores shared with wrk and the upstream, "
            "a second worker has little free CPU to use; on a machine with spare cores it scales with them. Each "
            "worker has its own upstream pool and IAM token."
        )
        add("")
    # -- V1 program translation (bench/programs.py)
    if b.notes.get("programs"):
        sys.path.insert(0, str(ROOT / "bench"))
        from programs import section

        lines.extend(section(b.notes["programs"]))
    # -- before/after
    cmp_ = b.notes.get("compare")
    if cmp_:
        add(cmp_)
        add("")
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
        f"All started by `{b.notes['command']}`; `$WORK` is its temporary directory (removed at the end), `$PORT` "
        "a free loopback port. Proxy stderr (the access log: one line per request) goes to /dev/null."
    )
    add("")
    add("```")
    seen: set[str] = set()
    for c in b.commands + [x.command for x in L]:
        c = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", c.replace(str(b.work), "$WORK"))
        c = re.sub(r"QCP_PORT=\d+|--port \d+", lambda m: m.group(0).split("=")[0] + "=$PORT" if "=" in m.group(0) else "--port $PORT", c)
        if c and c not in seen:
            seen.add(c)
            add(c)
    add("```")
    add("")
    return "\n".join(lines)


def why_missed(L: list[Load]) -> str:
    """The arithmetic behind the targets, from this run's numbers (rather than tuning the bench)."""
    p, n = find(L, PROXY, 32, "job"), find(L, N, 32, "job")
    if not (p and n and p.cpu_us and n.cpu_us):
        return ""
    ceiling = 1e6 / p.cpu_us
    need = n.rps * SHARE
    return (
        f"Why, where a target is missed (numbers from `GET /jobs/{{id}}` above): the proxy is one Python thread, "
        f"CPU-bound at 32 connections, using {p.cpu_us:.0f} µs of CPU per request, so one core caps it at "
        f"≈ {ceiling:.0f} req/s whatever the load generator does; nginx answered {n.rps:.0f} req/s at "
        f"{n.cpu_us:.0f} µs per request, so {100 * SHARE:.0f} % of nginx needs {need:.0f} req/s, i.e. "
        f"≤ {1e6 / need:.0f} µs per request with a whole core to itself (it shares 2 cores with wrk and nginx). "
        f"The p99 follows from the same number: 32 requests in flight on one thread queue behind each other, "
        f"so a request waits for up to ≈ 32 × {p.cpu_us:.0f} µs = {32 * p.cpu_us / 1000:.1f} ms of the others' work "
        f"before its own; p99 ≤ {P99:g} ms at 32 connections needs ≤ {P99 * 1000 / 32:.0f} µs per request. The profiles "
        "below show where those microseconds go: the inbound HTTP handling, the upstream exchange, socket I/O and "
        "the per-request bookkeeping (access log, metrics, usage record), which the fix-ups do not touch; the fix-ups' "
        "own JSON work is a few per cent. "
        "`--workers 2` (below) is the lever for throughput on a machine with free cores."
    )


def keep_other_sections(report: str, old: str) -> str:
    """Sections someone wrote by hand into BENCHMARKS.md (a `## ` heading this script does not
    generate) are carried over, verbatim, at the end."""
    ours = {ln.strip() for ln in report.splitlines() if ln.startswith("## ")}
    generated_before = {
        "## Throughput and latency", "## Targets (2 cores, one worker, 32 connections, same run)",
        "## Where the time goes", "## Streaming", "## Choice of the upstream transport", "## Scale-out",
        "## Machine", "## Exact commands",
    }
    kept: list[str] = []
    for part in re.split(r"(?m)^(?=## )", old)[1:]:
        head = part.splitlines()[0].strip()
        if head not in ours and head not in generated_before and not head.startswith("## Before/after"):
            kept.append(part.rstrip() + "\n")
    return report.rstrip() + "\n" + ("\n" + "\n".join(kept) if kept else "")


# -------------------------------------------------------------------------------------- main


def profile_proxy(b: Bench, proxy: Proc, seconds: float, case: cases.Case) -> str | None:
    """py-spy (if installed) on the proxy under 32 connections on one case: own time by module and top frames."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    out = b.work / f"profile-{case.key}.txt"
    cmd = [spy, "record", "--pid", str(proxy.pid), "--duration", str(int(seconds)), "--rate", "250",
           "--format", "raw", "-o", str(out)]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    b._drive(proxy.url + case.path, 32, seconds + 1, [], b.scripts.get(case.key))
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


#: Connections for the 10 MB cases: 32 concurrent 10 MB bodies measure the loopback, not the proxy.
BULK_CONNECTIONS = 8


def settle(server: Proc, limit: float = 15.0) -> None:
    """Wait until `server` is idle (< 5 % CPU over 0.2 s): a run must not inherit the last one's backlog."""
    pids, t0 = tree(server.pid), time.monotonic()
    while time.monotonic() - t0 < limit:
        c0 = cpu_seconds(pids)
        time.sleep(0.2)
        if cpu_seconds(pids) - c0 < 0.01:
            return


COMPARE_CASES = ("job", "job_list", "status", "submit_10k")


def _short(rev: str) -> str:
    """`rev` as a short commit hash (the report names what was measured, not a moving branch name)."""
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True)
    return out.stdout.strip() or rev


def compare_revisions(b: Bench, up: Proc, revs: list[str]) -> str:
    """The proxy of each git revision (its proxy/ exported into the work dir) and of this tree,
    same upstream, same run: 32 connections on a few cases, the revisions back to back per case."""
    procs: list[tuple[str, Proc]] = []
    for rev in revs:
        dest = b.work / f"rev-{rev}"
        dest.mkdir()
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "proxy"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
        b.commands.append(f"git archive {rev} proxy | tar -x -C $WORK/rev-{rev}")
        procs.append((rev, b.start_proxy(up.url, src=dest)))
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "proxy"], capture_output=True, text=True).stdout.strip()
    this = f"this tree ({head}{', modified' if dirty else ''})"
    procs.append((this, b.start_proxy(up.url)))
    rows: dict[str, dict[str, Load]] = {}
    for key in COMPARE_CASES:
        c = cases.BY_KEY[key]
        for name, p in procs:
            rows.setdefault(key, {})[name] = b.load(f"rev {name}", p.url + c.path, 32, p, case=key, script=b.scripts.get(key))
    for _, p in procs:
        b.stop(p)
    names = [n for n, _ in procs]
    lines = [
        "## Before/after: other revisions and this tree",
        "",
        f"Each revision's `proxy/` (`git archive`), started the same way on the same installed dependencies, same "
        f"upstream, 32 connections, {b.args.duration:g} s per run, the revisions back to back per route "
        f"({', '.join(f'`{r}` = `{_short(r)}`' for r in revs)}). req/s and the proxy's CPU µs per request:",
        "",
        "| route | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, by in rows.items():
        lines.append(f"| {cases.BY_KEY[key].label} | " + " | ".join(f"{by[n].rps:.0f} req/s, {by[n].cpu_us or 0:.0f} µs" for n in names) + " |")
    return "\n".join(lines)


def run_cases(b: Bench, servers: list[Proc], labels: list[str], selected: list[cases.Case]) -> None:
    """Every case against every server, the servers back to back per case."""
    for c in selected:
        conns = (2 if b.args.quick else BULK_CONNECTIONS) if c.bulk else 32
        for srv, label in zip(servers, labels, strict=True):
            b.load(label, srv.url + c.path, conns, srv, case=c.key, script=b.scripts.get(c.key))
            if c.bulk:
                settle(srv)


def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark the proxy against nginx and a naive forwarder.")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run (< 1 min): every case briefly, no profile/transports/workers/large bodies; "
                         "checks the bench works, asserts no timings; the report goes to stdout unless --out")
    ap.add_argument("--duration", type=float, default=None, help="seconds per measured run, whole (default 5; --quick 1)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of unmeasured warm-up per run, whole (default 1; --quick 0: none)")
    ap.add_argument("--out", default=None, help="report path (default BENCHMARKS.md; none with --quick)")
    ap.add_argument("--cases", default="", help="comma-separated case keys (default all): " + ",".join(cases.BY_KEY))
    ap.add_argument("--result-mb", type=int, default=256, help="size of the large streamed job result (default 256)")
    ap.add_argument("--submit-mb", type=int, default=50, help="size of the large streamed submission (default 50)")
    ap.add_argument("--skip-streaming", action="store_true", help="skip the single large-body runs")
    ap.add_argument("--skip-workers", action="store_true", help="skip the 2-worker run")
    ap.add_argument("--skip-transports", action="store_true", help="skip the aiohttp/httpx transport runs")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    ap.add_argument("--python-load", action="store_true", help="use bench/loadgen.py even if wrk is installed")
    ap.add_argument("--compare", default="", help="comma-separated git revisions whose proxy/ to measure against this tree")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.quick:
        args.skip_workers = args.skip_transports = args.no_profile = True
    args.duration = args.duration if args.duration is not None else (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.0 if args.quick else 1.0)
    if args.out is None and not args.quick:
        args.out = str(ROOT / "BENCHMARKS.md")
    selected = [cases.BY_KEY[k] for k in args.cases.split(",") if k] or list(cases.CASES)
    args.wrk = shutil.which("wrk")
    args.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(args.nginx).exists():
        print("nginx is required: apt-get install -y nginx-light (or nginx)", file=sys.stderr)
        return 2
    if not args.wrk:
        print("wrk is required for the POST and mixed cases: apt-get install -y wrk", file=sys.stderr)
        return 2
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
        for c in cases.CASES:
            if c.method != "GET":
                b.scripts[c.key] = work / f"{c.key}.lua"
                b.scripts[c.key].write_text(cases.lua_single(c, work))
        b.scripts["mixed"] = work / "mixed.lua"
        b.scripts["mixed"].write_text(cases.lua_mix(work))
        auth = [f"Authorization: Bearer {TOKEN}", f"Service-CRN: {CRN}", f"IBM-API-Version: {API_VERSION}"]

        if not args.skip_transports:
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

        np_ = b.start_nginx_proxy(up.url)
        nv = b.start_naive(up.url)
        px = b.start_proxy(up.url, transport="native")
        time.sleep(0.5)
        b.notes["idle_rss_mb"] = rss_kb(tree(px.pid)) / 1024
        b.notes["ready_s"] = px.ready_s
        servers, labels = [np_, nv, px], [N, V, PROXY]

        print("one connection, GET /jobs/{id}")
        job = cases.BY_KEY["job"]
        b.load(D, up.url + job.upstream, 1, None, auth, case="job")
        for srv, label in zip(servers, labels, strict=True):
            b.load(label, srv.url + job.path, 1, srv, case="job")
        if not args.skip_transports:
            b.load(PROXY, px.url + ROUTE, 1, px)
            b.load(PROXY, px.url + ROUTE, 32, px)
        print("32 connections, every route")
        run_cases(b, servers, labels, [c for c in selected if not c.bulk])
        print("mixed legacy session")
        run_cases(b, servers, labels, [MIXED])
        print(f"10 MB bodies, {BULK_CONNECTIONS} connections")
        run_cases(b, servers, labels, [c for c in selected if c.bulk])
        b.stop(np_)
        b.stop(nv)

        if not args.no_profile:
            settle(px)
            small = [c for c in selected if not c.bulk and find(b.loads, PROXY, 32, c.key)]
            small.sort(key=lambda c: -(find(b.loads, PROXY, 32, c.key).cpu_us or 0))  # type: ignore[union-attr]
            b.notes["profiles"] = {}
            for c in small[:2]:
                print(f"profile {c.key}")
                prof = profile_proxy(b, px, min(args.duration, 5), c)
                if prof:
                    b.notes["profiles"][c.key] = prof
        streams: list[dict[str, Any]] = []
        if not args.skip_streaming:
            print("streaming")
            sizes = [10] if args.quick else [10, args.result_mb]
            for mb in sizes:
                job_id = cases.BIG_JOB_ID if mb == 10 else "bench-large"
                st = b.stream_result(px, up.url, job_id)
                streams.append({**st, "mb": mb, "kind": "job result, upstream → caller", "what": "GET " + st["path"]})
                print(f"  result {mb} MB: {st['status']} growth {st['growth_mb']:.1f} MB")
            for mb in [10] if args.quick else [10, args.submit_mb]:
                st = b.stream_submission(px, mb)
                streams.append({**st, "mb": mb, "kind": "job submission, caller → upstream", "what": "POST /runtime/jobs"})
                print(f"  submission {mb} MB: {st['status']} growth {st['growth_mb']:.1f} MB")
        b.notes["streams"] = streams
        b.stop(px)

        if not args.skip_transports:
            for name, label in (("aiohttp", A), ("httpx", H)):
                pt = b.start_proxy(up.url, transport=name)
                for c in (1, 32):
                    b.load(label, pt.url + ROUTE, c, pt)
                b.stop(pt)

        if not args.skip_workers:
            pw = b.start_proxy(up.url, transport="native", workers=2)
            time.sleep(1.0)
            b.notes["idle_rss_mb_w2"] = rss_kb(tree(pw.pid)) / 1024
            b.notes["ready_s_w2"] = pw.ready_s
            b.load(W2, pw.url + job.path, 32, pw, case="job")
            b.stop(pw)

        if args.compare:
            print("revisions")
            b.notes["compare"] = compare_revisions(b, up, [r for r in args.compare.split(",") if r])

        report = render(b, info)
        if args.out:
            old = Path(args.out).read_text() if Path(args.out).exists() else ""
            Path(args.out).write_text(keep_other_sections(report, old))
            print(f"written to {args.out}")
        else:
            print(report)
        broken = [x for x in b.loads if x.unexpected or x.errors or not x.requests]
        broken_streams = [st for st in streams if st["status"] != 200]
        if broken or broken_streams:
            for x in broken:
                print(f"BROKEN: {x.case} {x.target} c={x.connections}: {x.requests} requests, "
                      f"{x.unexpected} unexpected answers, {x.errors} socket errors", file=sys.stderr)
            for st in broken_streams:
                print(f"BROKEN: {st['kind']} {st['mb']} MB answered {st['status']}", file=sys.stderr)
            return 1
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

# ruff: noqa: E501  (a measuring script: long command lines read better unbroken)
"""CPU per request of the proxy, per route, as a fixed number of requests: for judging a change.

    python bench/cpu.py                         # CPU µs per request (from /proc), every small route
    python bench/cpu.py --callgrind             # instructions per request (valgrind), repeatable
    python bench/cpu.py --cases job,submit_10k --requests 2000 --src /tmp/old   # another proxy/

Why not bench/run.py: req/s and p99 move with whatever else the machine runs; the proxy's CPU for
a fixed count of requests moves far less, and callgrind's instruction count not at all, so a change
of a few per cent shows. Same upstream nginx and cases as bench/run.py (its `Bench`), same proxy
configuration (every feature on; its stderr, the access log, goes to proxy.log in the work dir, written in
batches as in production); the client is a small asyncio program in
its own process (`C` keep-alive connections, one request in flight on each, `N` requests in all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cases
import run
from loadgen import read_response

SMALL = ["job", "job_list", "backends", "status", "results_1k", "submit_10k", "gone_410", "missing_404"]


async def _client(host: str, port: int, request: bytes, total: int, conns: int) -> dict[str, int]:
    left = [total]
    stats = {"ok": 0, "statuses": 0}
    seen: set[int] = set()

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while left[0] > 0:
                left[0] -= 1
                writer.write(request)
                seen.add(await read_response(reader))
                stats["ok"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    stats["statuses"] = sorted(seen)  # type: ignore[assignment]
    return stats


def request_bytes(case: cases.Case, work: Path, host: str) -> bytes:
    body = (work / case.body).read_bytes() if case.body else b""
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: qiskit-ibm-runtime/0.23.0\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def drive(url: str, request: bytes, total: int, conns: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    return asyncio.run(_client(host, int(port), request, total, conns))


def callgrind_control(pid: int, *flags: str) -> str:
    out = subprocess.run(["callgrind_control", *flags, str(pid)], capture_output=True, text=True, timeout=300)
    return out.stdout + out.stderr


def total_ir(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(SMALL))
    ap.add_argument("--requests", type=int, default=3000, help="measured requests per case (default 3000; 300 with --callgrind)")
    ap.add_argument("--warmup", type=int, default=300, help="unmeasured requests per case first (default 300; 50 with --callgrind)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--callgrind", action="store_true", help="run the proxy under valgrind --tool=callgrind: instructions per request")
    ap.add_argument("--src", default=None, help="a directory holding another proxy/ package to measure instead of this tree")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (callgrind dumps)")
    ap.add_argument("--pyspy", action="store_true", help="py-spy record (raw stacks) during each measured run, into the work dir")
    ap.add_argument("--strace", action="store_true", help="count the proxy's syscalls per request (strace -c) during each measured run")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the proxy (repeatable)")
    args = ap.parse_args()
    if args.callgrind:
        args.requests = args.requests if args.requests != 3000 else 300
        args.warmup = args.warmup if args.warmup != 300 else 50
    work = Path(tempfile.mkdtemp(prefix="qcp-cpu-"))
    os.chmod(work, 0o755)
    ns = argparse.Namespace(nginx=shutil.which("nginx") or "/usr/sbin/nginx", skip_streaming=True, quick=True, result_mb=0)
    b = run.Bench(ns, work)
    try:
        up = b.start_upstream()
        port = run.free_port()
        env = {
            "QCP_API_KEY": "bench-api-key",
            "QCP_SERVICE_CRN": run.CRN,
            "QCP_UPSTREAM_URL": up.url + "/api",
            "QCP_IAM_URL": up.url + "/identity/token",
            "QCP_PORT": str(port),
            "QCP_LOG_LEVEL": "info",
            "QCP_USAGE_DB": str(work / "usage.sqlite3"),
            **dict(e.split("=", 1) for e in args.env),
        }
        if args.src:
            env["PYTHONPATH"] = str(Path(args.src).resolve())
        cmd = [sys.executable, "-m", "proxy", "serve"]
        if args.callgrind:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.%p", *cmd]
        px = b.spawn("proxy", cmd, f"http://127.0.0.1:{port}", env=env, log=True)
        deadline = time.monotonic() + (600 if args.callgrind else 60)
        while True:  # fail at once (with the proxy's own words) if it exits instead of starting
            if px.popen.poll() is not None:
                print((work / "proxy.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise SystemExit(f"the proxy exited with {px.popen.returncode} before it was ready")
            try:
                px.ready_s = run.wait_http(px.url + "/readyz", timeout=5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        results: dict[str, float] = {}
        for key in args.cases.split(","):
            case = cases.BY_KEY[key]
            req = request_bytes(case, work, f"127.0.0.1:{port}")
            drive(px.url, req, args.warmup, args.connections)
            if args.callgrind:
                callgrind_control(px.pid, "-z")
            spy = None
            if args.pyspy:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(px.pid), "--rate", "500",
                     "--format", "raw", "-o", str(work / f"spy-{key}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            tracer = None
            if args.strace:
                tracer = subprocess.Popen(
                    ["strace", "-c", "-f", "-o", str(work / f"strace-{key}.txt"), "-p", str(px.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            (user0, sys0), t0 = run.cpu_split(run.tree(px.pid)), time.monotonic()
            got = drive(px.url, req, args.requests, args.connections)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            if tracer is not None:
                tracer.send_signal(2)
                tracer.wait(30)
                for line in (work / f"strace-{key}.txt").read_text().splitlines():
                    f = line.split()
                    if len(f) >= 5 and f[3].isdigit() and f[-1] != "total":
                        print(f"  {f[-1]:<16} {int(f[3]) / got['ok']:6.2f} per request") if int(f[3]) >= got["ok"] // 10 else None
            user1, sys1 = run.cpu_split(run.tree(px.pid))
            user, system, wall = user1 - user0, sys1 - sys0, time.monotonic() - t0
            used = user + system
            if args.callgrind:
                callgrind_control(px.pid, "-d", key)
                dumps = sorted(work.glob(f"cg.{px.pid}.*"), key=lambda p: p.stat().st_mtime)
                value = total_ir(dumps[-1]) / got["ok"]
                results[key] = value
                print(f"{key:<12} {value / 1e3:9.1f} k instructions/request  (statuses {got['statuses']})", flush=True)
            else:
                value = 1e6 * used / got["ok"]
                results[key] = value
                split = f"user {1e6 * user / got['ok']:.0f} + system {1e6 * system / got['ok']:.0f}"
                print(f"{key:<12} {value:7.1f} µs CPU/request ({split})  {got['ok'] / wall:7.0f} req/s  "
                      f"(statuses {got['statuses']})", flush=True)
        print(json.dumps({k: round(v, 1) for k, v in results.items()}))
    finally:
        b.stop_all()
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

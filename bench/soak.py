"""Soak: minutes of mixed legacy traffic through `qiskit-classic-proxy serve` while the emulated
new API drops answers, resets connections, answers 503 and stalls; then the faults stop.

    python bench/soak.py --minutes 2              # writes the soak section of BENCHMARKS.md
    python bench/soak.py --seconds 20 --out -     # print the report only

The proxy runs as its own process (`serve`, 1 worker) so that its file descriptors and RSS are
read from /proc; the emulator runs in this process (so the created jobs can be counted exactly).
Every submission carries a caller tag `soak-<n>`: afterwards each caller tag must name exactly
one created job, and every 200 answer the id of that job — 0 lost, 0 duplicated. Bounded: the
traffic threads stop at the deadline, every process started is stopped on exit.
`tests/test_soak.py` runs a few seconds of it in the suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.emulator import DEMO_API_KEY, DEMO_CRN, EmulatorConfig, create_emulator_app  # noqa: E402
from proxy.serving import BackgroundServer, free_port  # noqa: E402

#: Injected while the faults are on: (emulator rule, what it stands for).
FAULTS: list[dict[str, Any]] = [
    {"match": "POST /v1/jobs", "action": "drop", "every": 10},  # job created, answer lost
    {"match": "GET /v1/backends", "action": "drop", "every": 9},  # connection reset, no answer
    {"match": "GET /v1/jobs/{id}", "action": "status", "status": 503, "every": 7},
    {"match": "GET /v1/jobs", "action": "hang", "delay": 0.3, "every": 5},  # a slow list
]
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"version": 2}}
SOAK_START, SOAK_END = "<!-- soak:start -->", "<!-- soak:end -->"


@dataclass
class Tally:
    """What the traffic threads saw (under a lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    causes: collections.Counter[str] = field(default_factory=collections.Counter)
    answered: dict[str, str] = field(default_factory=dict)  # caller tag -> job id (200 answers)
    unknown: list[str] = field(default_factory=list)  # caller tags answered 409 outcome_unknown
    submitted: int = 0
    recovery: collections.Counter[int] = field(default_factory=collections.Counter)

    def note(self, kind: str, r: httpx.Response | None, exc: Exception | None, recovering: bool) -> None:
        status = str(r.status_code) if r is not None else type(exc).__name__
        cause = ""
        if r is not None and r.status_code >= 400:
            try:
                cause = r.json()["errors"][0]["code"]
            except (ValueError, KeyError, IndexError, TypeError):
                cause = "non-json"
        with self.lock:
            self.statuses[(kind, status)] += 1
            if cause or exc is not None:
                self.causes[cause or status] += 1
            if recovering:
                self.recovery[r.status_code if r is not None else 0] += 1


def sample(pid: int) -> tuple[int, float]:
    """(open file descriptors, RSS in MB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return fds, pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def traffic(base: str, tally: Tally, stop: threading.Event, recovering: threading.Event, worker: int) -> None:
    n = 0
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as c:
        last_job = ""
        while not stop.is_set():
            n += 1
            tag = f"soak-{worker}-{n}"
            rec = recovering.is_set()
            for kind, call in (
                ("POST /jobs", lambda: c.post("/runtime/jobs", json={**JOB, "tags": [tag]})),  # noqa: B023
                ("GET /backends", lambda: c.get("/runtime/backends")),
                ("GET /jobs/{id}", lambda: c.get(f"/runtime/jobs/{last_job or 'none'}")),  # noqa: B023
                ("GET /jobs", lambda: c.get("/runtime/jobs", params={"limit": 5})),
            ):
                r: httpx.Response | None = None
                exc: Exception | None = None
                try:
                    r = call()
                except httpx.HTTPError as e:
                    exc = e
                tally.note(kind, r, exc, rec)
                if kind == "POST /jobs":
                    with tally.lock:
                        tally.submitted += 1
                        if r is not None and r.status_code == 200:
                            last_job = tally.answered[tag] = r.json()["id"]
                        elif r is not None and r.status_code == 409:
                            tally.unknown.append(tag)


def run(seconds: float, workers: int = 4, recovery_share: float = 0.25) -> dict[str, Any]:
    """Soak for `seconds` (the last `recovery_share` of it without faults); returns the figures."""
    app = create_emulator_app(EmulatorConfig(record_requests=False))
    em = app.emulator
    emulator = BackgroundServer(app).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(
        QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB="", QCP_ACCESS_LOG="false",
        QCP_LOG_LEVEL="error", QCP_PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    tally, stop, recovering = Tally(), threading.Event(), threading.Event()
    samples: list[tuple[float, int, float]] = []
    fault_hits: dict[str, int] = {}
    try:
        for _ in range(300):  # bounded wait for /readyz
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("the proxy did not become ready")
        start = time.monotonic()
        samples.append((0.0, *sample(proc.pid)))
        em.set_faults(rules=FAULTS)
        threads = [threading.Thread(target=traffic, args=(base, tally, stop, recovering, w)) for w in range(workers)]
        for t in threads:
            t.start()
        fault_end = start + seconds * (1 - recovery_share)
        while (now := time.monotonic()) < start + seconds:
            if now >= fault_end and not recovering.is_set():
                fault_hits = {f"{r['match']} {r['action']}": r["hits"] for r in em.faults()["rules"]}
                em.clear_faults()
                time.sleep(0.5)  # in-flight faulted requests finish before recovery is counted
                recovering.set()
            time.sleep(min(1.0, max(0.05, seconds / 20)))
            samples.append((time.monotonic() - start, *sample(proc.pid)))
        stop.set()
        for t in threads:
            t.join(60)
        samples.append((time.monotonic() - start, *sample(proc.pid)))
        jobs = [j for inst in em.instances.values() for j in inst.jobs.values()]
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        emulator.stop()
    by_tag: dict[str, list[str]] = collections.defaultdict(list)
    for j in jobs:
        for t in j.tags:
            if t.startswith("soak-"):
                by_tag[t].append(j.id)
    duplicated = sum(len(ids) - 1 for ids in by_tag.values() if len(ids) > 1)
    lost = sum(1 for tag, jid in tally.answered.items() if by_tag.get(tag) != [jid])
    return {
        "seconds": seconds,
        "workers": workers,
        "requests": sum(tally.statuses.values()),
        "statuses": {f"{k} {s}": n for (k, s), n in sorted(tally.statuses.items())},
        "causes": dict(tally.causes.most_common()),
        "submitted": tally.submitted,
        "answered_200": len(tally.answered),
        "answered_409": len(tally.unknown),
        "created": len(jobs),
        "created_for_409": sum(1 for t in tally.unknown if t in by_tag),
        "lost": lost,
        "duplicated": duplicated,
        "recovery": dict(tally.recovery),
        "samples": samples,
        "fault_hits": fault_hits,
    }


def markdown(res: dict[str, Any]) -> str:
    s = res["samples"]
    fd0, rss0 = s[0][1], s[0][2]
    rows = "\n".join(f"| {t:.0f} | {fd} | {rss:.1f} |" for t, fd, rss in [*s[:: max(1, len(s) // 12)], s[-1]])
    statuses = "\n".join(f"| {k} | {n} |" for k, n in res["statuses"].items())
    causes = ", ".join(f"{k}: {n}" for k, n in res["causes"].items()) or "none"
    rec = res["recovery"]
    rec_ok = rec.get(200, 0) + rec.get(404, 0)
    faults = "; ".join(
        f"`{r['match']}` {r['action']} {r.get('status', '')} every {r['every']}".replace("  ", " ") for r in FAULTS
    )
    hits = ", ".join(f"{k}: {n}" for k, n in res["fault_hits"].items())
    return f"""{SOAK_START}
## Soak (faults, then recovery)

`python bench/soak.py --seconds {res["seconds"]:.0f}`: {res["workers"]} threads of mixed legacy traffic (submit,
backends, job, job list) through `serve` (1 worker) for {res["seconds"]:.0f} s; faults on for the first
{res["seconds"] * 0.75:.0f} s ({faults}), then off.

- Faults fired: {hits}.
- Requests: {res["requests"]}; errors by cause: {causes}.
- Submissions: {res["submitted"]} sent by callers, {res["answered_200"]} answered 200, {res["answered_409"]} answered
  409 (not found under their marker in time; {res["created_for_409"]} of them did exist). Jobs created:
  {res["created"]}. **Lost: {res["lost"]}, duplicated: {res["duplicated"]}.**
- Recovery (after the faults stopped): {rec_ok} of {sum(rec.values())} requests answered 200 (or 404 for a job id
  the caller never got).
- File descriptors {fd0} → {s[-1][1]} (max {max(x[1] for x in s)}), RSS {rss0:.1f} → {s[-1][2]:.1f} MB
  (max {max(x[2] for x in s):.1f}).

| Answers (route, status) | count |
|---|---|
{statuses}

| t (s) | fds | RSS (MB) |
|---|---|---|
{rows}
{SOAK_END}
"""


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the soak section of BENCHMARKS.md, leaving the rest as bench/run.py wrote it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SOAK_START) + ".*?" + re.escape(SOAK_END) + "\n?", re.S)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, help="length of the soak (default 2)")
    ap.add_argument("--seconds", type=float, help="length of the soak in seconds")
    ap.add_argument("--workers", type=int, default=4, help="traffic threads (default 4)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="report file, '-' = print only")
    args = ap.parse_args(argv)
    seconds = args.seconds or (args.minutes or 2) * 60
    res = run(seconds, args.workers)
    md = markdown(res)
    print(md)
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1))
    if args.out != "-":
        write_section(Path(args.out), md)
    return 0 if res["lost"] == 0 and res["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""`serve --workers 2`: one /metrics for the whole server (prometheus-client multiprocess mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from ..conftest import EmulatorHandle, stop_process, wait_until_ok

ROUTE = "GET /backends"


@contextmanager
def serve(emulator: EmulatorHandle, workers: int, **env_extra: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "PROMETHEUS_"))}
    env.update(
        QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token", QCP_USAGE_DB="", QCP_ACCESS_LOG="false", **env_extra,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(base + "/readyz", proc)
        yield base
    finally:
        stop_process(proc, timeout=30)


def totals(text: str) -> tuple[float, float, float]:
    """(requests counted, histogram count, histogram +Inf bucket) for ROUTE."""
    req = count = inf = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("route") != ROUTE:
                continue
            if s.name == "qcp_requests_total":
                req += s.value
            elif s.name == "qcp_request_duration_seconds_count":
                count += s.value
            elif s.name == "qcp_request_duration_seconds_bucket" and s.labels.get("le") == "+Inf":
                inf += s.value
    return req, count, inf


def served_by(mp_dir: Path) -> dict[str, float]:
    """Per worker file: how many ROUTE requests that worker counted (read straight from its file)."""
    out: dict[str, float] = {}
    for f in mp_dir.glob("counter_*.db"):
        n = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
            _metric, name, labels, _help = json.loads(key)
            if name == "qcp_requests_total" and labels.get("route") == ROUTE:
                n += value
        out[f.name] = n
    return out


def get(base: str) -> int:
    with httpx.Client(base_url=base, timeout=20, trust_env=False) as c:  # a new connection each time
        return c.get("/runtime/backends").status_code


def test_metrics_of_two_workers_add_up(emulator: EmulatorHandle, tmp_path: Path) -> None:
    mp_dir = tmp_path / "metrics"
    mp_dir.mkdir()
    (mp_dir / "counter_999999.db").write_bytes(b"stale file from a previous run")
    with serve(emulator, 2, QCP_METRICS_DIR=str(mp_dir)) as base:
        assert not (mp_dir / "counter_999999.db").exists()  # cleaned on start
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # Until both workers have served some (bounded): otherwise the test would prove nothing.
            while sent < 800 and sum(1 for n in served_by(mp_dir).values() if n > 0) < 2:
                statuses = list(pool.map(lambda _: get(base), range(40)))
                assert statuses == [200] * 40
                sent += 40
        per_worker = served_by(mp_dir)
        assert sum(1 for n in per_worker.values() if n > 0) == 2, per_worker
        assert sum(per_worker.values()) == sent
        scrapes = set()
        for _ in range(6):  # whichever worker answers the scrape reports the whole server
            with httpx.Client(timeout=20, trust_env=False) as c:
                scrapes.add(totals(c.get(base + "/metrics").text))
        assert scrapes == {(float(sent), float(sent), float(sent))}
    # A restart on the same directory starts from zero, not from the old files.
    with serve(emulator, 2, QCP_METRICS_DIR=str(mp_dir)) as base:
        assert get(base) == 200
        with httpx.Client(timeout=20, trust_env=False) as c:
            assert totals(c.get(base + "/metrics").text) == (1.0, 1.0, 1.0)

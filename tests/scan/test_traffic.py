"""Traffic joined with code: which files produce the legacy routes the usage record still sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from proxy.scan.analyzer import Finding, ScanResult
from proxy.scan.traffic import explains, join, parse_client

from ..conftest import EmulatorHandle

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "tests" / "legacy" / "setup_venvs.sh"


def finding(code: str, routes: tuple[str, ...], path: str = "a.py") -> Finding:
    return Finding(path, 1, 1, code, "m", routes)


def test_parse_client() -> None:
    assert parse_client("qiskit_ibm_runtime-0.40") == ("qiskit_ibm_runtime", (0, 40))
    assert parse_client("qiskit_ibm_provider") == ("qiskit_ibm_provider", ())
    assert parse_client("curl") == ("curl", ())


def test_version_and_sdk_narrow_what_a_finding_explains() -> None:
    v1 = finding("QCP201", ("POST /jobs",))
    assert explains(v1, "POST /jobs", "qiskit_ibm_runtime-0.23", {})
    assert not explains(v1, "POST /jobs", "qiskit_ibm_runtime-0.40", {})  # Sampler is V2 after 0.27
    assert not explains(v1, "GET /jobs", "qiskit_ibm_runtime-0.23", {})  # not a route this code calls
    channel = finding("QCP101", ("*",))
    assert explains(channel, "GET /backends", "qiskit_ibm_runtime-0.40", {"qiskit-ibm-runtime": ">=0.30"})
    assert not explains(channel, "GET /backends", "qiskit_ibm_runtime-0.40", {"qiskit-ibm-runtime": "==0.20.0"})
    assert not explains(channel, "GET /backends", "qiskit_ibm_provider-0.11", {})
    path = finding("QCP306", ("GET /jobs",))
    assert explains(path, "GET /jobs", "curl", {})
    run = finding("QCP203", ("POST /jobs",))
    assert explains(run, "POST /jobs", "qiskit_ibm_provider-0.11", {}, ("qiskit_ibm_provider",))
    assert not explains(run, "POST /jobs", "qiskit_ibm_runtime-0.40", {}, ("qiskit_ibm_provider",))


def test_join_flags_routes_no_code_explains() -> None:
    report = {"in_use": [
        {"caller": "c", "client": "curl", "endpoint": "GET /jobs", "count": 3, "last_seen": "x"},
        {"caller": "c", "client": "curl", "endpoint": "GET /usage", "count": 1, "last_seen": "x"},
    ]}
    scan = ScanResult(findings=[finding("QCP306", ("GET /jobs",), "poll.sh"), finding("QCP301", ("POST /sessions",))])
    joined = join(report, scan)
    assert [r["explained"] for r in joined["routes"]] == [True, False]
    assert joined["routes"][0]["code"] == ["poll.sh:1 QCP306"]
    assert [f["seen_in_traffic"] for f in joined["findings"]] == [True, False]
    assert joined["summary"]["routes_unexplained"] == 1


@pytest.mark.skipif(os.environ.get("QCP_SKIP_LEGACY_SDKS") == "1", reason="QCP_SKIP_LEGACY_SDKS=1")
def test_report_with_scan_after_driving_the_examples_through_a_proxy(
    tmp_path: Path, emulator: EmulatorHandle, make_proxy
) -> None:
    env = {**os.environ, "QCP_LEGACY_ONLY": "runtime-0.40.1"}
    built = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=1800, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    venvs = Path(subprocess.run(["bash", str(SETUP), "--print-dir"], capture_output=True, text=True).stdout.strip())
    db = tmp_path / "usage.db"
    proxy = make_proxy(usage_db=str(db))
    run_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "QCP_URL": proxy.url, "NO_PROXY": "*"}
    sdk = subprocess.run(
        [str(venvs / "runtime-0.40.1" / "bin" / "python"), "-W", "ignore",
         str(ROOT / "examples" / "runtime-0.40" / "bell_sampler_v2.py")],
        capture_output=True, text=True, timeout=300, env=run_env,
    )
    assert sdk.returncode == 0, sdk.stderr[-3000:]
    counts = json.loads(sdk.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert set(counts) <= {"00", "11"} and sum(counts.values()) > 0  # a Bell state
    curl = subprocess.run(["bash", str(ROOT / "examples" / "curl" / "jobs.sh")], capture_output=True, text=True,
                          timeout=60, env=run_env)
    assert curl.returncode == 0, curl.stderr
    # A caller outside the scanned tree.
    httpx.get(proxy.url + "/api/backends/fake_manila/status", headers={"User-Agent": "dashboard/1.0"})
    proxy.server.stop()  # flushes the usage record

    r = subprocess.run(
        [sys.executable, "-m", "proxy", "report", "--db", str(db), "--with-scan", "examples", "--format", "json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "QCP_USAGE_DB": ""},
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    routes = {(x["endpoint"], x["client"]): x for x in doc["code"]["routes"]}
    submit = routes[("POST /jobs", "qiskit_ibm_runtime-0.40")]
    assert submit["code"] and all(c.startswith("examples/runtime-0.40/bell_sampler_v2.py:") for c in submit["code"])
    login = routes[("POST /users/loginWithToken", "curl")]
    assert login["code"] == ["examples/curl/jobs.sh:6 QCP306"]
    assert routes[("GET /jobs", "curl")]["code"] == ["examples/curl/jobs.sh:8 QCP306"]
    outside = [x for x in doc["code"]["routes"] if x["endpoint"] == "GET /backends/{backend}/status"
               and not x["client"].startswith("qiskit")]
    assert outside and not outside[0]["explained"]
    seen = {(f["path"], f["code"]): f["seen_in_traffic"] for f in doc["code"]["findings"]}
    assert seen[("examples/runtime-0.40/bell_sampler_v2.py", "QCP101")] is True
    assert seen[("examples/runtime-0.20/bell_sampler_v1.py", "QCP201")] is False  # no 0.20 client called
    assert seen[("examples/provider-0.11/backend_run.py", "QCP203")] is False

    table = subprocess.run(
        [sys.executable, "-m", "proxy", "report", "--db", str(db), "--with-scan", "examples"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "QCP_USAGE_DB": ""},
    )
    assert "called by code outside this tree" in table.stdout
    assert "examples/curl/jobs.sh:8 QCP306" in table.stdout

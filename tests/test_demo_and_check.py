"""`demo` and `check` as a user runs them: real processes, and the README's curl lines verbatim."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from .conftest import EmulatorHandle, wait_until_ok
from .pgserver import PostgresServer

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    tmp = str(tmp_path_factory.mktemp("demo"))  # the demo's usage record goes there, not in /tmp
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", "--port", str(port), "--seconds", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(TMPDIR=tmp),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(base + "/healthz", proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def readme_curl_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"With the demo running.*?```sh\n(.*?)\n```", text, re.S)
    assert block
    commands, current = [], ""
    for line in block.group(1).splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            if current:
                commands.append(current)
            current = ""
    return commands


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_work_against_the_demo(demo: str) -> None:
    commands = readme_curl_commands()
    assert len(commands) >= 4
    outputs = []
    for cmd in commands:
        cmd = cmd.replace("http://127.0.0.1:8080", demo)
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (cmd, r.stderr)
        outputs.append(r.stdout)
    assert json.loads(outputs[0])["devices"]
    submitted = json.loads(outputs[1])
    assert submitted["id"] and submitted["backend"] == "fake_manila"
    assert json.loads(outputs[2])["jobs"]
    assert "410" in outputs[3].splitlines()[0]
    v1 = json.loads(outputs[4])  # a V1 Sampler job (params.circuits, no version): accepted, translated
    assert v1["id"] and v1["backend"] == "fake_manila"
    job = httpx.get(f"{demo}/runtime/jobs/{v1['id']}", timeout=10).json()
    assert job["program"]["id"] == "sampler"


def test_demo_shows_a_v1_call_translated(tmp_path: Path) -> None:
    """The banner has a line saying a V1 Sampler job ran upstream as a SamplerV2 one, and its answer."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--port", str(port), "--seconds", "0.5"],
        capture_output=True, text=True, env=clean_env(TMPDIR=str(tmp_path)), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next((x for x in proc.stdout.splitlines() if x.startswith("V1 call translated:")), None)
    assert line is not None, proc.stdout
    assert "ran upstream as program 'sampler' version 2 with 1 pub(s)" in line, line
    quasi = json.loads(line.split("quasi_dists=", 1)[1])
    assert len(quasi) == 1 and abs(sum(quasi[0].values()) - 1) < 0.01


def test_demo_translates_a_classic_call(demo: str) -> None:
    r = httpx.get(demo + "/runtime/backends/fake_manila/status", timeout=10)
    assert r.status_code == 200
    assert "state" in r.json() or "status" in r.json()


def test_check_reports_ok_against_a_good_configuration(emulator: EmulatorHandle) -> None:
    env = clean_env(
        QCP_API_KEY=DEMO_API_KEY,
        QCP_SERVICE_CRN=DEMO_CRN,
        QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token",
    )
    r = subprocess.run([sys.executable, "-m", "proxy", "check"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^iam\s+ok", r.stdout, re.M)
    assert re.search(r"^versions\s+ok", r.stdout, re.M)
    assert re.search(r"^usage\s+ok", r.stdout, re.M)
    assert DEMO_API_KEY not in r.stdout + r.stderr


def test_check_reports_the_shared_database(emulator: EmulatorHandle, pg_url: str, postgres: PostgresServer) -> None:
    env = clean_env(
        QCP_API_KEY=DEMO_API_KEY,
        QCP_SERVICE_CRN=DEMO_CRN,
        QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token",
        QCP_USAGE_DB=pg_url,
    )
    r = subprocess.run([sys.executable, "-m", "proxy", "check"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^database\s+ok\s+postgresql://qcp:\*\*\*@.*empty", r.stdout, re.M), r.stdout
    env["QCP_USAGE_DB"] = pg_url.rsplit(":", 1)[0] + ":1/nowhere"  # nothing listens on port 1
    r = subprocess.run([sys.executable, "-m", "proxy", "check"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and re.search(r"^database\s+FAIL", r.stdout, re.M), r.stdout
    assert postgres.password not in r.stdout + r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("overrides", "failing"),
    [
        ({"QCP_API_KEY": "wrong-key-123"}, "iam"),
        ({"QCP_SERVICE_CRN": "crn:v1:bluemix:public:quantum-computing:us-east:a/nobody:nothing::"}, "usage"),
    ],
)
def test_check_fails_clearly(emulator: EmulatorHandle, overrides: dict[str, str], failing: str) -> None:
    env = clean_env(
        QCP_API_KEY=DEMO_API_KEY,
        QCP_SERVICE_CRN=DEMO_CRN,
        QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token",
    )
    env.update(overrides)
    r = subprocess.run([sys.executable, "-m", "proxy", "check"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert re.search(rf"^{failing}\s+FAIL", r.stdout, re.M), r.stdout
    assert "wrong-key-123" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_demo_with_intercept_port_prints_the_two_exports_that_work(tmp_path: Path) -> None:
    """Zero-change mode without an IBM account: the demo's own lines, used verbatim."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", "--port", str(port), "--intercept-port", "0", "--seconds", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=clean_env(XDG_STATE_HOME=str(tmp_path), TMPDIR=str(tmp_path)),
    )
    try:
        assert proc.stdout is not None
        line = ""
        for _ in range(200):
            line = proc.stdout.readline()
            if "export HTTPS_PROXY=" in line or not line:
                break
        m = re.search(r"HTTPS_PROXY=(\S+) REQUESTS_CA_BUNDLE=(\S+)", line)
        assert m, line
        assert Path(m.group(2)).parent == tmp_path / "qiskit-classic-proxy"
        ctx = ssl.create_default_context(cafile=m.group(2))
        with httpx.Client(proxy=m.group(1), verify=ctx, trust_env=False, timeout=20) as c:
            r = c.get("https://auth.quantum.ibm.com/api/version")
        assert r.status_code == 200 and r.json()["proxy"] == "qiskit-classic-proxy"
    finally:
        proc.terminate()
        proc.wait(10)

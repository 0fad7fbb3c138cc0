"""qiskit-ibm-runtime 0.20.0's V1 Sampler/Estimator, unchanged, through a real proxy to the emulator.

The emulator really simulates the SamplerV2/EstimatorV2 jobs the proxy makes of them
(proxy/emulator/simulate.py) and refuses V1 jobs with error code 1513 as IBM does, so the
driver's statevector comparisons (tests/legacy/drive_runtime_v1.py) pass only if the translation
binds the right parameters to the right circuits and the answer is rebuilt bit for bit. The same
driver with the translation switched off must fail: that is the proof the checks can fail.

Builds (or reuses) the runtime-0.20.0 venv (about 0.6 GB, a minute and a half the first time).
qiskit-ibm-provider 0.11's backend.run is covered by tests/legacy/test_legacy_sdks.py
(drive_provider.py). Set QCP_SKIP_LEGACY_SDKS=1 to skip them in a quick local loop.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.emulator import results

from ..conftest import EmulatorHandle, Running, proxy_settings, start_emulator, start_proxy

HERE = Path(__file__).resolve().parent
VENV = "runtime-0.20.0"
STEPS = 10

pytestmark = pytest.mark.skipif(
    os.environ.get("QCP_SKIP_LEGACY_SDKS") == "1", reason="QCP_SKIP_LEGACY_SDKS=1 (CI never sets it)"
)


@pytest.fixture(scope="module")
def python() -> str:
    env = {**os.environ, "QCP_LEGACY_ONLY": VENV}
    setup = subprocess.run(
        ["bash", str(HERE / "setup_venvs.sh")], capture_output=True, text=True, timeout=2400, env=env
    )
    assert setup.returncode == 0, f"building the {VENV} venv failed:\n{setup.stdout}\n{setup.stderr}"
    venvs = subprocess.run(["bash", str(HERE / "setup_venvs.sh"), "--print-dir"], capture_output=True, text=True)
    return str(Path(venvs.stdout.strip()) / VENV / "bin" / "python")


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator()
    yield handle
    handle.server.stop()


def drive(python: str, proxy: Running, out: Path) -> tuple[dict[str, Any], str]:
    cmd = [python, str(HERE / "drive_runtime_v1.py"), "--url", proxy.url + "/api", "--token", "v1-token"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert out.exists(), f"no driver output:\n{log}"
    return json.loads(out.read_text()), log


@pytest.fixture(scope="module")
def translated(
    python: str, emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    emulator.clear()
    proxy = start_proxy(proxy_settings(emulator.url))
    try:
        doc, log = drive(python, proxy, tmp_path_factory.mktemp("v1") / "runtime-0.20.0.json")
    finally:
        proxy.server.stop()
    return doc, log, list(emulator.api_requests())


def test_v1_sampler_and_estimator_in_and_out_of_a_session_match_the_statevector(
    translated: tuple[dict[str, Any], str, list[dict[str, Any]]],
) -> None:
    doc, log, _ = translated
    assert doc["sdk"]["qiskit-ibm-runtime"] == "0.20.0" and doc["sdk"]["qiskit"].startswith("0.46."), doc["sdk"]
    failed = [f"{s['step']}: {s.get('error')}" for s in doc["steps"] if not s["ok"]]
    assert not failed, "steps failed:\n" + "\n".join(failed) + "\n" + log[-3000:]
    names = {s["step"] for s in doc["steps"] if s["ok"]}
    assert len(names) == STEPS
    for where in ("backend", "session"):
        assert {f"sampler_v1_bell_{where}", f"sampler_v1_parametrized_{where}", f"estimator_v1_{where}"} <= names


def test_the_emulator_received_only_v2_jobs(translated: tuple[dict[str, Any], str, list[dict[str, Any]]]) -> None:
    """Every job that reached the new API was a SamplerV2/EstimatorV2 one, and none was refused."""
    _, log, reqs = translated
    jobs = [r for r in reqs if r["method"] == "POST" and r["path"] == "/api/v1/jobs"]
    assert len(jobs) == 6, log[-3000:]
    assert [j["body"]["program_id"] for j in jobs] == ["sampler", "sampler", "estimator"] * 2
    for j in jobs:
        params = j["body"]["params"]
        assert params["version"] == 2 and params["pubs"], params.keys()
        assert j["status"] == 200
    assert sum(1 for j in jobs if j["body"].get("session_id")) == 3


def test_without_the_translation_the_same_driver_fails(
    python: str, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Translation off for POST /jobs: the V1 jobs never run, so every primitive step fails."""
    proxy = start_proxy(proxy_settings(emulator.url, routes={"POST /jobs": {"programs": "refuse"}}))
    try:
        doc, log = drive(python, proxy, tmp_path / "off.json")
    finally:
        proxy.server.stop()
    steps = {s["step"]: s for s in doc["steps"]}
    assert steps["service_init"]["ok"], log
    for where in ("backend", "session"):
        for name in (f"sampler_v1_bell_{where}", f"sampler_v1_parametrized_{where}", f"estimator_v1_{where}"):
            assert not steps[name]["ok"], f"{name} passed without the translation:\n{log[-3000:]}"
            assert "1513" in steps[name]["error"], steps[name]["error"]


def bell_like_answer(pubs: int, shots: int) -> bytes:
    """A SamplerV2 result of `pubs` pubs, register "c" of 2 bits, half 00 and half 11, in the new API's encoding."""
    bits = np.array([[0], [3]] * (shots // 2), dtype=np.uint8)
    field = {"__type__": "BitArray", "__value__": {"array": results.nd(bits), "num_bits": 2}}
    pub = {"__type__": "SamplerPubResult",
           "__value__": {"data": results.databin({"c": field}, ()), "metadata": {"circuit_metadata": {}}}}  # fmt: skip
    return results.primitive_result([pub] * pubs)


def test_a_canned_upstream_answer_fails_the_statevector_checks(
    python: str, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Every sampler job answered with two Bell-like pubs of the right layout instead of simulated:
    the parametrized circuit's distributions then differ from the statevector and the steps fail."""
    emulator.state.config.results["sampler"] = bell_like_answer(2, 4000)
    proxy = start_proxy(proxy_settings(emulator.url))
    try:
        doc, log = drive(python, proxy, tmp_path / "canned.json")
    finally:
        proxy.server.stop()
        emulator.state.config.results.clear()
    steps = {s["step"]: s for s in doc["steps"]}
    for where in ("backend", "session"):
        step = steps[f"sampler_v1_parametrized_{where}"]
        assert not step["ok"] and "statevector says" in step["error"], f"{step}\n{log[-3000:]}"
        assert steps[f"estimator_v1_{where}"]["ok"], log[-3000:]  # only the sampler was tampered with

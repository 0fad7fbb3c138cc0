"""Zero-change mode with the real SDKs (#18): no url= at all, only HTTPS_PROXY + REQUESTS_CA_BUNDLE,
and the IBM Cloud channel through every way in, with client tokens required.

One proxy (client tokens on, two instances, the intercepting listener) in front of the emulator;
the drivers run in the cached legacy venvs (setup_venvs.sh builds runtime-0.30.0 on first use).
Nothing can reach IBM: other hosts are refused by the listener, and the drivers get no other proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.emulator import DEMO_CRN, SECOND_CRN

from ..conftest import EmulatorHandle, Running, proxy_settings, start_emulator, start_proxy

HERE = Path(__file__).resolve().parent
VENVS = "runtime-0.40.1 runtime-0.23.0 runtime-0.30.0 ibmq-provider-0.20.2"
TOKEN = "legacy-driver-client-token"
RESEARCH = "ibm-q-fake/research/proj1"
#: Variables of the caller's environment that would change where the SDK's requests go.
SCRUB = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")

pytestmark = pytest.mark.skipif(
    os.environ.get("QCP_SKIP_LEGACY_SDKS") == "1", reason="QCP_SKIP_LEGACY_SDKS=1 (CI never sets it)"
)


@dataclass
class Setup:
    proxy: Running
    emulator: EmulatorHandle
    venvs: Path
    out: Path

    @property
    def intercept_env(self) -> dict[str, str]:
        assert self.proxy.app.intercept is not None
        return {
            "HTTPS_PROXY": f"http://127.0.0.1:{self.proxy.app.intercept.port}",
            "REQUESTS_CA_BUNDLE": str(self.proxy.app.intercept.ca.cert_path),
        }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    env = {**os.environ, "QCP_LEGACY_ONLY": VENVS}
    built = subprocess.run(["bash", str(HERE / "setup_venvs.sh")], capture_output=True, text=True, timeout=2400,
                           env=env)
    assert built.returncode == 0, f"building the legacy-SDK venvs failed:\n{built.stdout}\n{built.stderr}"
    venvs = Path(subprocess.run(["bash", str(HERE / "setup_venvs.sh"), "--print-dir"], capture_output=True,
                                text=True, check=True).stdout.strip())
    out = tmp_path_factory.mktemp("zero-change")
    emulator = start_emulator()
    proxy = start_proxy(proxy_settings(
        emulator.url, instances={RESEARCH: SECOND_CRN}, client_tokens=[f"legacy={TOKEN}"],
        intercept_port=0, ca_dir=str(out / "ca"),
    ))
    try:
        yield Setup(proxy, emulator, venvs, out)
    finally:
        proxy.server.stop()
        emulator.server.stop()


def drive(
    s: Setup, venv: str, name: str, args: list[str], env: dict[str, str], script: str = "drive_runtime.py"
) -> dict:
    """Run a driver in `venv`; its JSON result (fails with the driver's output otherwise)."""
    result = s.out / f"{name}.json"
    base = {k: v for k, v in os.environ.items() if k.upper() not in SCRUB and not k.startswith("QCP_")}
    proc = subprocess.run(
        [str(s.venvs / venv / "bin" / "python"), str(HERE / script), "--token", TOKEN,
         "--out", str(result), *args],
        capture_output=True, text=True, timeout=900, env={**base, **env}, check=False,
    )
    assert result.exists(), f"{name}: no driver output:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(result.read_text())


def assert_flow_passed(doc: dict, name: str) -> None:
    steps = {st["step"]: st for st in doc["steps"]}
    failed = [f"{st['step']}: {st.get('error')}" for st in doc["steps"] if not st["ok"] and not st["optional"]]
    assert not failed, f"{name}: required steps failed:\n" + "\n".join(failed)
    for needed in ("service_backends", "backend_properties", "backend_target", "sampler_run", "job_result",
                   "job_update_tags", "service_jobs_limit", "session_open", "session_run", "session_close"):
        assert steps[needed]["ok"], f"{name}: {needed} did not pass"


CASES = [
    # (name, venv, driver args beyond --token/--out, what the caller's environment holds)
    ("r40-quantum-intercept", "runtime-0.40.1", ["--url-mode", "none"], "intercept"),
    ("r23-quantum-intercept", "runtime-0.23.0", ["--url-mode", "none"], "intercept"),
    ("r40-cloud-intercept", "runtime-0.40.1", ["--url-mode", "none", "--channel", "ibm_cloud",
                                               "--instance", DEMO_CRN], "intercept"),
    ("r40-cloud-second-instance", "runtime-0.40.1", ["--url-mode", "none", "--channel", "ibm_cloud",
                                                     "--instance", SECOND_CRN], "intercept"),
    # No instance at all, or an instance *name*: resolved through the proxy's stand-in resource search.
    ("r40-cloud-no-instance", "runtime-0.40.1", ["--url-mode", "none", "--channel", "ibm_cloud"], "intercept"),
    ("r40-cloud-instance-name", "runtime-0.40.1", ["--url-mode", "none", "--channel", "ibm_cloud",
                                                   "--instance", RESEARCH], "intercept"),
    ("r23-cloud-experimental", "runtime-0.23.0", ["--url-mode", "experimental", "--channel", "ibm_cloud",
                                                  "--instance", DEMO_CRN], "url"),
    ("r30-cloud-url-resolver", "runtime-0.30.0", ["--url-mode", "resolver", "--channel", "ibm_cloud",
                                                  "--instance", DEMO_CRN], "url"),
    ("r23-quantum-usage-opt-out", "runtime-0.23.0", [], "opt-out"),
]


@pytest.mark.parametrize(("name", "venv", "args", "how"), CASES, ids=[c[0] for c in CASES])
def test_legacy_sdk_runs_the_whole_flow(setup: Setup, name: str, venv: str, args: list[str], how: str) -> None:
    setup.emulator.clear()
    env = setup.intercept_env if how == "intercept" else {}
    if how == "opt-out":
        env = {"USAGE_DATA_OPT_OUT": "True"}  # no client version: results must still decode
    url = setup.proxy.url + ("" if "ibm_cloud" in args else "/api")
    doc = drive(setup, venv, name, ["--url", url, *args], env)
    assert_flow_passed(doc, name)
    reqs = setup.emulator.api_requests()
    assert len(reqs) > 30, f"{name}: only {len(reqs)} requests reached the new API"
    expected = SECOND_CRN if SECOND_CRN in args or RESEARCH in args else None
    for r in reqs:
        h = r["headers"]
        assert h.get("authorization", "").startswith("Bearer ") and TOKEN not in json.dumps(r), r["path"]
        assert "x-access-token" not in h, r["path"]
        if expected:  # the caller's own Service-CRN is honoured, never replaced by the default
            assert h.get("service-crn") == expected, r["path"]
    if how == "intercept":
        acct_step = next(st for st in doc["steps"] if st["step"] == "service_active_account")
        assert "url=https://" in acct_step["detail"] and "127.0.0.1" not in acct_step["detail"]


def test_unknown_caller_crn_is_refused_not_sent_to_the_default(setup: Setup) -> None:
    """0.40.1 turns the 403 into 'Invalid instance' and lists no backends: nothing reached the new API."""
    setup.emulator.clear()
    unknown = "crn:v1:bluemix:public:quantum-computing:us-east:a/1111:22222222-3333-4444-5555-666666666666::"
    doc = drive(setup, "runtime-0.40.1", "r40-cloud-unknown-crn",
                ["--url", setup.proxy.url, "--url-mode", "none", "--channel", "ibm_cloud", "--instance", unknown],
                setup.intercept_env)
    steps = {st["step"]: st for st in doc["steps"]}
    assert steps["service_init"]["ok"]
    assert not steps["service_backends"]["ok"] and "backends(): []" in steps["service_backends"]["error"]
    assert setup.emulator.api_requests() == []


@pytest.mark.parametrize("url_mode", ["given", "none"])
def test_ibmq_provider_reads_backends_and_gets_a_clear_410_for_qobj(setup: Setup, url_mode: str) -> None:
    """qiskit-ibmq-provider 0.20 once found no provider (devices/v/1 was a 404); now read-only use works."""
    setup.emulator.clear()
    env = setup.intercept_env if url_mode == "none" else {}
    doc = drive(setup, "ibmq-provider-0.20.2", f"ibmq-{url_mode}", ["--url", setup.proxy.url + "/api",
                "--url-mode", url_mode], env, script="drive_ibmq.py")
    failed = [f"{st['step']}: {st.get('error')}" for st in doc["steps"] if not st["ok"] and not st["optional"]]
    assert not failed, "\n".join(failed)
    assert {st["step"] for st in doc["steps"] if st["ok"]} >= {
        "enable_account", "provider_backends", "backend_properties", "backend_status", "backend_defaults",
        "backend_jobs", "backend_run_gets_410"}
    reqs = setup.emulator.api_requests()
    assert reqs and all(r["path"].startswith("/api/v1/backends") for r in reqs)
    assert not any(TOKEN in json.dumps(r) for r in reqs)

"""The real legacy SDKs, unchanged but for url and token, through a real proxy to the emulator.

Builds (or reuses, from a cache) the three SDK virtualenvs with setup_venvs.sh: about 1.5 GB and a
few minutes the first time. Then runs runtime 0.40.1, runtime 0.23.0 and provider 0.11.0 (in that
order, via run_legacy.sh --url) against one proxy + emulator started here as uvicorn servers, and
checks every request that reached the emulator was a valid new-API request.

Set QCP_SKIP_LEGACY_SDKS=1 to skip them in a quick local loop; CI always runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.emulator import DEMO_CRN, SECOND_CRN

from ..conftest import EmulatorHandle, proxy_settings, start_emulator, start_proxy

HERE = Path(__file__).resolve().parent
SDKS = ["runtime-0.40.1", "runtime-0.23.0", "provider-0.11.0"]
LEGACY_FIELDS = ("hub", "group", "project", "max_session_ttl")

pytestmark = pytest.mark.skipif(
    os.environ.get("QCP_SKIP_LEGACY_SDKS") == "1", reason="QCP_SKIP_LEGACY_SDKS=1 (CI never sets it)"
)


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, EmulatorHandle]]:
    setup = subprocess.run(["bash", str(HERE / "setup_venvs.sh")], capture_output=True, text=True, timeout=2400)
    assert setup.returncode == 0, f"building the legacy-SDK venvs failed:\n{setup.stdout}\n{setup.stderr}"
    out = tmp_path_factory.mktemp("legacy")
    emulator = start_emulator()
    # A second instance, as on Classic accounts with several hub/group/projects.
    proxy = start_proxy(proxy_settings(emulator.url, instances={"ibm-q-fake/research/proj1": SECOND_CRN}))
    try:
        proc = subprocess.run(
            ["bash", str(HERE / "run_legacy.sh"), "--url", proxy.url + "/api", "--out-dir", str(out)],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        yield out, proc.stdout + proc.stderr, emulator
    finally:
        proxy.server.stop()
        emulator.server.stop()


@pytest.mark.parametrize("sdk", SDKS)
def test_legacy_sdk_flows_pass(legacy_run: tuple[Path, str, EmulatorHandle], sdk: str) -> None:
    out, log, _ = legacy_run
    result = out / f"{sdk}.json"
    assert result.exists(), f"no driver output for {sdk}:\n{log}"
    doc = json.loads(result.read_text())
    failed = [f"{s['step']}: {s.get('error')}" for s in doc["steps"] if not s["ok"] and not s["optional"]]
    assert not failed, f"{sdk}: required steps failed:\n" + "\n".join(failed)
    assert sum(1 for s in doc["steps"] if s["ok"]) >= 15


def test_every_upstream_request_was_a_valid_new_api_request(legacy_run: tuple[Path, str, EmulatorHandle]) -> None:
    _, log, emulator = legacy_run
    reqs: list[dict[str, Any]] = emulator.api_requests()
    assert len(reqs) > 100, log
    for r in reqs:
        where = f"{r['method']} {r['path']}"
        h = r["headers"]
        assert r["path"].startswith("/api/v1/"), where
        assert h.get("authorization", "").startswith("Bearer "), where
        assert h.get("service-crn") in (DEMO_CRN, SECOND_CRN), where
        assert h.get("ibm-api-version"), where
        assert "x-access-token" not in h and "cookie" not in h, where
        assert "provider" not in r["query"], where
        if isinstance(r.get("body"), dict):
            assert not set(LEGACY_FIELDS) & set(r["body"]), (where, r["body"])
    # Both instances were used by the SDKs (the default and the research one).
    assert {r["headers"]["service-crn"] for r in reqs} == {DEMO_CRN, SECOND_CRN}

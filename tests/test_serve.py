"""`serve` as a real process: one worker and several, graceful stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from .conftest import EmulatorHandle, wait_until_ok


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_forwards_and_stops_cleanly(emulator: EmulatorHandle, workers: int) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(
        QCP_API_KEY=DEMO_API_KEY,
        QCP_SERVICE_CRN=DEMO_CRN,
        QCP_UPSTREAM_URL=emulator.url + "/api",
        QCP_IAM_URL=emulator.url + "/identity/token",
        QCP_USAGE_DB="",
        QCP_CLIENT_TOKENS="ci=ci-client-token-1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--workers", str(workers),
         "--log-format", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(base + "/readyz", proc)
        with httpx.Client(base_url=base, timeout=10) as c:
            token = c.post("/api/users/loginWithToken", json={"apiToken": "ci-client-token-1"}).json()["id"]
            # Access tokens are signed, not stored: whichever worker answers accepts them.
            statuses = {c.get("/runtime/backends", headers={"X-Access-Token": token}).status_code for _ in range(20)}
            assert statuses == {200}
            assert c.get("/runtime/backends").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so "killed by SIGTERM" is a clean exit.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out or workers > 1
    assert DEMO_API_KEY not in out
    assert "ci-client-token-1" not in out
    assert '"route":"GET /backends"' in out

"""`serve` as a user runs it (the real console script): what it says when it cannot listen."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

CLI = Path(sys.executable).with_name("qiskit-classic-proxy")


@pytest.mark.parametrize("flag", ["--port", "--admin-port", "--intercept-port"])
def test_regression_serve_on_a_busy_port_printed_uvicorn_errno_then_an_iam_line(tmp_path: Path, flag: str) -> None:
    """One line naming the address and the flag to change, exit 2; nothing started (no IAM line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_USAGE_DB="", QCP_CA_DIR=str(tmp_path / "ca"),
               QCP_IAM_URL=f"http://127.0.0.1:{free_port()}/identity/token")  # refused: an IAM call would say so
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        args = ["--port", str(busy)] if flag == "--port" else ["--port", str(free_port()), flag, str(busy)]
        r = subprocess.run([str(CLI), "serve", *args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"qiskit-classic-proxy: cannot listen on 127.0.0.1:{busy}: address already in use "
        f"(another proxy or demo running? choose {flag})"
    ]


def test_serve_names_a_host_it_cannot_listen_on(tmp_path: Path) -> None:
    """Not this machine's address: one line with the OS's reason, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    env.update(QCP_API_KEY=DEMO_API_KEY, QCP_SERVICE_CRN=DEMO_CRN, QCP_USAGE_DB="",
               QCP_CLIENT_TOKENS="ci=a-long-enough-token")
    r = subprocess.run([str(CLI), "serve", "--host", "192.0.2.1", "--port", str(free_port())],  # TEST-NET-1
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("qiskit-classic-proxy: cannot listen on 192.0.2.1:"), r.stderr
    assert len(r.stderr.splitlines()) == 1 and "assign requested address" in r.stderr, r.stderr

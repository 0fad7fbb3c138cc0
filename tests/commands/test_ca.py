"""`qiskit-classic-proxy ca`: the path to export as REQUESTS_CA_BUNDLE, and the fingerprint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from proxy.intercept.ca import LocalCA


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "proxy", "ca", *args], capture_output=True, text=True, env=base,
                          timeout=60)


def test_ca_path_creates_the_ca_and_prints_its_certificate(tmp_path: Path) -> None:
    r = run("--path", env={"QCP_CA_DIR": str(tmp_path / "ca")})
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path == tmp_path / "ca" / "qcp-ca.pem" and path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_ca_show_prints_the_fingerprint_and_how_to_trust_it(tmp_path: Path) -> None:
    r = run("--show", "--ca-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert LocalCA(tmp_path).fingerprint() in r.stdout
    assert "REQUESTS_CA_BUNDLE=" in r.stdout and "HTTPS_PROXY=" in r.stdout
    assert "BEGIN" not in r.stdout  # the key is never printed

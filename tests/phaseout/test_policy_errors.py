"""proxy/phaseout/policy.py: a bad route policy names where it came from, for serve and explain alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).with_name("qiskit-classic-proxy")


def explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    return subprocess.run([str(CLI), "explain", "GET", "/runtime/usage", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=60)


def test_regression_route_policy_errors_said_qcp_routes_for_a_toml_file(tmp_path: Path) -> None:
    """A bad brownout window in the file was reported as `QCP_ROUTES (routes.GET /usage...)`."""
    f = tmp_path / "qcp.toml"
    f.write_text('port = 8080\n[routes."GET /usage"]\npolicy = "brownout"\nbrownout_windows = ["soon"]\n')
    r = explain("--config", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f'{f}:4: routes."GET /usage".brownout_windows: brownout window \'soon\'' in r.stderr, r.stderr


def test_route_policy_error_from_the_environment_names_the_env_var() -> None:
    r = explain(env={"QCP_ROUTES": json.dumps({"GET /usage": {"policy": "gone", "programs": "refuse"}})})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert 'QCP_ROUTES (env): routes."GET /usage".programs: only job submissions' in r.stderr, r.stderr

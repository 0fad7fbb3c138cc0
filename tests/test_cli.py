"""The command line: help, configuration errors as one line, the route table, python -m proxy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from proxy.classic.routes import ROUTES

CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/abc:inst::"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args], capture_output=True, text=True, env=base, timeout=timeout
    )


@pytest.mark.parametrize("cmd", ["serve", "routes", "demo", "check", "start"])
def test_help_for_each_command(cmd: str) -> None:
    r = run(cmd, "--help")
    assert r.returncode == 0
    assert "usage:" in r.stdout


@pytest.mark.parametrize(
    ("env", "args", "names"),
    [
        ({}, [], "QCP_API_KEY"),
        ({"QCP_API_KEY": "k"}, [], "QCP_SERVICE_CRN"),
        ({"QCP_API_KEY": "k", "QCP_SERVICE_CRN": "garbage"}, [], "QCP_SERVICE_CRN"),
        ({"QCP_API_KEY": "k", "QCP_SERVICE_CRN": CRN}, ["--host", "0.0.0.0"], "QCP_HOST"),
        ({"QCP_API_KEY": "k", "QCP_SERVICE_CRN": CRN, "QCP_PORT": "http"}, [], "QCP_PORT"),
        ({}, ["--config", "/nonexistent.toml"], "--config (flag): file not found"),
    ],
)
def test_serve_config_errors_are_one_line(env: dict[str, str], args: list[str], names: str) -> None:
    r = run("serve", *args, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert names in lines[0]
    assert "Traceback" not in r.stderr
    assert "k" not in lines[0].split(":", 2)[-1].split() or names != "QCP_API_KEY"


def test_api_key_is_not_in_error_output() -> None:
    r = run("serve", "--host", "0.0.0.0", env={"QCP_API_KEY": "very-secret-key-9", "QCP_SERVICE_CRN": CRN})
    assert r.returncode == 2
    assert "very-secret-key-9" not in r.stderr + r.stdout


def test_routes_prints_every_row() -> None:
    r = run("routes")
    assert r.returncode == 0
    for route in ROUTES:
        assert route.template in r.stdout
    md = run("routes", "--markdown").stdout
    assert md.startswith("| Method |")


def test_routes_shows_the_effective_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[routes."GET /usage"]\npolicy = "gone"\n[routes."GET /jobs/{job_id}/logs"]\npolicy = "brownout"\n'
                   "brownout_share = 0.25\n")
    out = run("routes", "--config", str(cfg)).stdout
    usage = next(line for line in out.splitlines() if " /usage " in line)
    logs = next(line for line in out.splitlines() if "/jobs/{job_id}/logs" in line)
    jobs = next(line for line in out.splitlines() if line.split()[:2] == ["GET", "/jobs"])
    assert "gone" in usage.split()[3:]
    assert "brownout" in logs and "25" in logs
    assert "translate" in jobs


def test_policy_date_errors_name_the_route_setting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[routes."GET /usage"]\ndeprecation = 2027-01-01T00:00:00Z\nsunset = 2026-01-01T00:00:00Z\n')
    r = run("routes", "--config", str(cfg))
    assert r.returncode == 2
    assert 'c.toml:3: routes."GET /usage".sunset: sunset is earlier than deprecation' in r.stderr

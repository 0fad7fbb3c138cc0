"""The command line, through the real console script: help, --version, the generated settings flags,
exit codes (0 ok, 1 a check failed, 2 usage/config error, 130 interrupted), never a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.classic.routes import ROUTES

CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/abc:inst::"


#: The console script pip installed next to this interpreter (what a user runs).
SCRIPT = str(Path(sys.executable).parent / "qiskit-classic-proxy")
COMMANDS = ["serve", "start", "demo", "check", "config check", "routes", "explain", "report", "scan", "ca"]


def clean_env(env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "QISKIT_IBM_"))}
    base.update(env or {})
    return base


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=clean_env(env), timeout=timeout)


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"qiskit-classic-proxy {version('qiskit-classic-proxy')}"


def test_python_dash_m_proxy_is_the_same_command() -> None:
    r = subprocess.run([sys.executable, "-m", "proxy", "--version"], capture_output=True, text=True,
                       env=clean_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("qiskit-classic-proxy ")


def test_top_level_help_lists_every_command_and_the_completion_line() -> None:
    for flag in ("-h", "--help"):
        r = run(flag)
        assert r.returncode == 0
        for cmd in COMMANDS:
            assert f"\n  {cmd.split()[0]} " in r.stdout, cmd
        assert "_QISKIT_CLASSIC_PROXY_COMPLETE=bash_source qiskit-classic-proxy" in r.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_for_each_command(cmd: str) -> None:
    r = run(*cmd.split(), "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Usage: qiskit-classic-proxy {cmd} ")
    examples = r.stdout.split("Examples:\n", 1)[1]
    assert f"  qiskit-classic-proxy {cmd}" in examples  # an example of the command itself


@pytest.mark.parametrize("cmd", ["serve", "start", "demo", "check", "config check"])
def test_settings_commands_take_every_settings_flag(cmd: str) -> None:
    from proxy.commands.flags import flag_fields

    out = run(*cmd.split(), "--help").stdout
    for name in flag_fields():
        assert f"--{name.replace('_', '-')}" in out, name
    assert "--submission-marker / --no-submission-marker" in out
    assert "--api-key " not in out and "--admin-token " not in out  # secrets are never flags


def test_completion_completes_commands_and_choices() -> None:
    env = {"_QISKIT_CLASSIC_PROXY_COMPLETE": "bash_complete"}
    r = run(env={**env, "COMP_WORDS": "qiskit-classic-proxy se", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["plain,serve"]
    r = run(env={**env, "COMP_WORDS": "qiskit-classic-proxy serve --log-format ", "COMP_CWORD": "3"})
    assert r.stdout.split() == ["plain,text", "plain,json"]
    assert "_qiskit_classic_proxy_completion()" in run(env={"_QISKIT_CLASSIC_PROXY_COMPLETE": "bash_source"}).stdout


# ------------------------------------------------------------------ flags reach the settings


def effective(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """`config check`'s table: setting -> value (a wrapped cell's lines joined, whitespace removed)."""
    from proxy.config import Settings

    r = run("config", "check", *args, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("setting"))
    v, s = lines[header].index("value"), lines[header].index("source")
    out: dict[str, str] = {}
    last = ""
    for line in lines[header + 2:]:
        if not line.strip():
            break
        name = line[:v].strip()
        last = name if name in Settings.model_fields else last
        out[last] = out.get(last, "") + "".join(line[v:s].split())
    return out


def test_a_generated_flag_reaches_the_settings_and_beats_env_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("port = 7000\nread_timeout = 3.5\n")
    assert effective("--config", str(cfg))["port"] == "7000"
    assert effective("--config", str(cfg), env={"QCP_PORT": "7001"})["port"] == "7001"
    out = effective("--config", str(cfg), "--port", "9999", "--read-timeout", "2.5", env={"QCP_PORT": "7001"})
    assert out["port"] == "9999" and out["read_timeout"] == "2.5"
    out = effective("--log-format", "json", "--transport", "httpx", "--sunset-date", "2030-01-01")
    assert out["log_format"] == "json" and out["transport"] == "httpx" and out["sunset_date"].startswith("2030-01-01")


def test_bool_flags_have_a_no_form_and_leave_env_alone_when_absent() -> None:
    assert effective()["submission_marker"] == "true"
    assert effective("--no-submission-marker")["submission_marker"] == "false"
    assert effective(env={"QCP_SUBMISSION_MARKER": "false"})["submission_marker"] == "false"
    assert effective("--submission-marker", env={"QCP_SUBMISSION_MARKER": "false"})["submission_marker"] == "true"


def test_qiskit_account_with_and_without_a_name(tmp_path: Path) -> None:
    from proxy.emulator import DEMO_API_KEY, DEMO_CRN

    other = "crn:v1:bluemix:public:quantum-computing:eu-de:a/abc:def::"
    accounts = tmp_path / "qiskit-ibm.json"
    accounts.write_text(json.dumps({
        "work": {"channel": "ibm_quantum_platform", "token": DEMO_API_KEY, "instance": DEMO_CRN},
        "mine": {"channel": "ibm_cloud", "token": "other-api-key-1", "instance": other, "is_default_account": True},
    }))
    env = {"QISKIT_IBM_FILENAME": str(accounts)}
    named = effective("--qiskit-account", "work", env=env)
    assert named["qiskit_account"] == "work" and named["service_crn"] == DEMO_CRN
    default = effective("--qiskit-account", "--port", "9998", env=env)  # no NAME: the default account
    assert default["qiskit_account"] == '""' and default["service_crn"] == other and default["port"] == "9998"
    assert effective(env=env)["qiskit_account"] == "-"


# ------------------------------------------------------------------ exit codes, never a traceback


@pytest.mark.parametrize(
    "args",
    [["bogus"], ["serve", "--bogus"], ["serve", "--port", "http"], ["config", "check", "--log-level", "loud"], []],
)
def test_usage_errors_exit_2_with_clicks_message_and_no_traceback(args: list[str]) -> None:
    """More cases run in-process in tests/commands/test_main.py."""
    r = run(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "Usage: qiskit-classic-proxy" in r.stdout + r.stderr


def test_a_bad_value_names_the_flag() -> None:
    r = run("serve", "--port", "http")
    assert "Error: Invalid value for '--port': 'http' is not a valid integer." in r.stderr


def test_a_configuration_error_is_one_line_exit_2() -> None:
    r = run("config", "check", "--api-version", "yesterday")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "qiskit-classic-proxy: configuration error: --api-version (flag): must be a date YYYY-MM-DD"
    ]


def test_a_check_that_fails_exits_1() -> None:
    """Nothing listens on the IAM URL: the check fails (1), which is not a usage error (2)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    r = run("check", "--iam-url", f"http://127.0.0.1:{port}/identity/token",
            env={"QCP_API_KEY": "a-test-api-key", "QCP_SERVICE_CRN": CRN})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "iam        FAIL" in r.stdout and "Traceback" not in r.stderr


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    """`check` waiting on an IAM that accepts and never answers, interrupted: 130, as shells expect."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        proc = subprocess.Popen(
            [SCRIPT, "check", "--iam-url", f"http://127.0.0.1:{server.getsockname()[1]}/identity/token"],
            env=clean_env({"QCP_API_KEY": "a-test-api-key", "QCP_SERVICE_CRN": CRN}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        conn, _ = server.accept()  # check is now waiting for IAM's answer
        with conn:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err


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

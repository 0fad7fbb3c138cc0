"""proxy.accounts + the credential fallbacks: saved Qiskit accounts, QISKIT_IBM_*, half-set refusals.

`check` and `serve` run as real processes against the emulator with no QCP_* variable at all:
the saved-account file (QISKIT_IBM_FILENAME) is the only source of the API key and CRN.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.accounts import AccountError, load_account
from proxy.commands.main import EXIT_CONFIG, main
from proxy.config import ConfigError, load_settings
from proxy.emulator import DEMO_API_KEY, DEMO_CRN
from proxy.serving import free_port

from .conftest import EmulatorHandle, stop_process, wait_until_ok

OTHER_CRN = "crn:v1:bluemix:public:quantum-computing:eu-de:a/abc:def::"


def write_accounts(path: Path, accounts: dict[str, Any]) -> Path:
    path.write_text(json.dumps(accounts))
    return path


@pytest.fixture
def accounts_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A saved-accounts file as qiskit-ibm-runtime writes it, and no credentials anywhere else."""
    for name in list(os.environ):
        if name.startswith(("QCP_", "QISKIT_IBM_")):
            monkeypatch.delenv(name)
    path = write_accounts(tmp_path / "qiskit-ibm.json", {
        "work": {"channel": "ibm_quantum_platform", "token": DEMO_API_KEY, "instance": DEMO_CRN,
                 "private_endpoint": False, "verify": True},
        "default-ibm-cloud": {"channel": "ibm_cloud", "token": "other-api-key", "instance": OTHER_CRN,
                              "is_default_account": True,
                              "proxies": {"urls": {"https": "http://corp:pw@proxy.corp:3128"}}, "verify": False},
        "classic": {"channel": "ibm_quantum", "token": "a-classic-token", "url": "https://auth.quantum.ibm.com/api"},
        "ntlm": {"channel": "ibm_cloud", "token": "k", "instance": OTHER_CRN,
                 "proxies": {"urls": {"https": "http://proxy.corp:3128"}, "username_ntlm": "u", "password_ntlm": "p"}},
    })
    monkeypatch.setenv("QISKIT_IBM_FILENAME", str(path))
    return path


def cli_env(accounts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "QISKIT_IBM_"))}
    env["QISKIT_IBM_FILENAME"] = str(accounts)
    return env


# ------------------------------------------------------------------ reading the file


def test_a_named_account_gives_key_and_crn(accounts_file: Path) -> None:
    s = load_settings(None, qiskit_account="work")
    assert s.api_key is not None and s.api_key.get_secret_value() == DEMO_API_KEY
    assert s.service_crn == DEMO_CRN
    assert s.credential_sources["api_key"] == f"saved account 'work' ({accounts_file})"
    assert s.tls_verify is True and s.outbound_proxy is None


def test_the_default_account_is_the_marked_one_and_its_proxy_and_verify_are_honoured(accounts_file: Path) -> None:
    s = load_settings(None, qiskit_account="")
    assert s.service_crn == OTHER_CRN
    assert s.outbound_proxy is not None and s.outbound_proxy.get_secret_value() == "http://corp:pw@proxy.corp:3128"
    assert s.tls_verify is False
    assert load_settings(None, qiskit_account="", tls_verify=True).tls_verify is True  # an explicit setting wins


def test_classic_accounts_are_refused_saying_why(accounts_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--qiskit-account \(flag\): .*'ibm_quantum'.*retired"):
        load_settings(None, qiskit_account="classic")
    with pytest.raises(AccountError, match="NTLM"):
        load_account("ntlm")


def test_an_unknown_name_lists_the_saved_ones(accounts_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"no saved account named 'nope'.*saved: classic, default-ibm-cloud"):
        load_settings(None, qiskit_account="nope")


def test_a_missing_file_says_how_to_save_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QISKIT_IBM_FILENAME", str(tmp_path / "none.json"))
    with pytest.raises(ConfigError, match=r"no saved accounts file at .*save_account"):
        load_settings(None, qiskit_account="")


def test_qcp_settings_win_over_the_account(accounts_file: Path) -> None:
    s = load_settings(None, qiskit_account="work", api_key="explicit-key-123")
    assert s.api_key is not None and s.api_key.get_secret_value() == "explicit-key-123"
    assert s.credential_sources == {"api_key": "QCP_API_KEY", "service_crn": f"saved account 'work' ({accounts_file})"}


def test_qiskit_ibm_token_and_instance_fill_in_when_qcp_names_are_unset(
    accounts_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "env-api-key-123")
    monkeypatch.setenv("QISKIT_IBM_INSTANCE", DEMO_CRN)
    s = load_settings(None)
    assert s.api_key is not None and s.api_key.get_secret_value() == "env-api-key-123"
    assert s.credential_sources == {"api_key": "QISKIT_IBM_TOKEN", "service_crn": "QISKIT_IBM_INSTANCE"}
    # As in qiskit-ibm-runtime: a named account beats the env vars, the env vars beat the default account.
    assert load_settings(None, qiskit_account="work").credential_sources["api_key"].startswith("saved account")
    assert load_settings(None, qiskit_account="").credential_sources["api_key"] == "QISKIT_IBM_TOKEN"


# ------------------------------------------------------------------ half-set credentials


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"QCP_API_KEY": "a-key-without-crn"}, "QCP_SERVICE_CRN"),
        ({"QISKIT_IBM_TOKEN": "a-key-without-crn"}, "QCP_SERVICE_CRN"),
        ({"QCP_SERVICE_CRN": DEMO_CRN}, "QCP_API_KEY"),
    ],
)
def test_start_with_half_set_credentials_exits_naming_the_missing_one(
    accounts_file: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], missing: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["start", "--port", "0"])
    assert code == EXIT_CONFIG
    assert f"configuration error: {missing} (" in err.getvalue()
    assert "a-key-without-crn" not in err.getvalue()


# ------------------------------------------------------------------ real processes, no QCP_* at all


def test_check_runs_on_a_saved_account_alone(emulator: EmulatorHandle, accounts_file: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "--qiskit-account", "work",
         "--upstream-url", emulator.url + "/api", "--iam-url", emulator.url + "/identity/token"],
        env=cli_env(accounts_file), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"API key from saved account 'work' ({accounts_file})" in out.stdout
    assert "iam        ok" in out.stdout and "ready:" in out.stdout
    assert DEMO_API_KEY not in out.stdout + out.stderr


def test_serve_runs_on_a_saved_account_alone(emulator: EmulatorHandle, accounts_file: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "start", "--qiskit-account", "work", "--port", str(port),
         "--upstream-url", emulator.url + "/api", "--iam-url", emulator.url + "/identity/token"],
        env=cli_env(accounts_file), cwd=tmp_path,  # the usage record lands in tmp_path
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc)
        emulator.clear()
        assert httpx.get(f"http://127.0.0.1:{port}/runtime/backends", timeout=10).status_code == 200
        assert emulator.api_requests()[0]["headers"].get("service-crn") == DEMO_CRN
    finally:
        out = stop_process(proc)
    assert "Serving the new API with the API key from saved account 'work'" in out
    assert DEMO_API_KEY not in out

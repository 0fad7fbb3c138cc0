"""Secrets as files (Kubernetes / Docker secrets) and the refusal of the examples' placeholders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_settings
from proxy.emulator import DEMO_CRN


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("QCP_", "QISKIT_IBM_")):
            monkeypatch.delenv(name)


def secret(tmp_path: Path, name: str, value: str) -> Path:
    p = tmp_path / name
    p.write_text(value)
    return p


def test_api_key_and_client_tokens_come_from_their_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCP_API_KEY_FILE", str(secret(tmp_path, "api-key", "file-api-key-123\n")))
    tokens = secret(tmp_path, "tokens", "ci=ci-token-1234\nbot=bot-token-5678\n")
    monkeypatch.setenv("QCP_CLIENT_TOKENS_FILE", str(tokens))
    monkeypatch.setenv("QCP_ADMIN_TOKEN_FILE", str(secret(tmp_path, "admin", "admin-token-1234")))
    s = load_settings(None, service_crn=DEMO_CRN)
    assert s.api_key is not None and s.api_key.get_secret_value() == "file-api-key-123"  # newline stripped
    assert s.client_token_names == {"ci-token-1234": "ci", "bot-token-5678": "bot"}
    assert s.admin_token is not None and s.admin_token.get_secret_value() == "admin-token-1234"
    assert s.credential_sources["api_key"] == f"QCP_API_KEY_FILE ({tmp_path / 'api-key'})"
    assert "file-api-key-123" not in repr(s)


def test_a_value_and_its_file_together_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCP_API_KEY", "env-api-key-123")
    monkeypatch.setenv("QCP_API_KEY_FILE", str(secret(tmp_path, "api-key", "file-api-key-123")))
    with pytest.raises(ConfigError, match=r"^QCP_API_KEY_FILE \(env\): QCP_API_KEY \(env\) is set too"):
        load_settings(None)


def test_missing_or_empty_secret_files_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--api-key-file \(flag\): file not found"):
        load_settings(None, api_key_file=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"^--client-tokens-file \(flag\): .* is empty"):
        load_settings(None, client_tokens_file=str(secret(tmp_path, "empty", "\n")))
    with pytest.raises(ConfigError, match=r"^--client-tokens-file \(flag\): .*at least 8 characters"):
        load_settings(None, client_tokens_file=str(secret(tmp_path, "short", "ci=short")))


def test_a_secrets_directory_holds_one_file_per_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "secrets"
    d.mkdir()
    secret(d, "QCP_API_KEY", "dir-api-key-123\n")
    secret(d, "QCP_SERVICE_CRN", DEMO_CRN)
    monkeypatch.setenv("QCP_SECRETS_DIR", str(d))
    s = load_settings(None)
    assert s.api_key is not None and s.api_key.get_secret_value() == "dir-api-key-123"
    assert s.service_crn == DEMO_CRN
    monkeypatch.setenv("QCP_API_KEY", "env-wins-123")  # env beats the directory, as in pydantic-settings
    assert load_settings(None).api_key.get_secret_value() == "env-wins-123"  # type: ignore[union-attr]
    monkeypatch.setenv("QCP_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^QCP_SECRETS_DIR \(env\): not a directory"):
        load_settings(None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QCP_API_KEY", "REPLACE_WITH_YOUR_IBM_CLOUD_API_KEY"),
        ("QCP_CLIENT_TOKENS", "app1=REPLACE_WITH_A_LONG_RANDOM_TOKEN"),
        ("QCP_ADMIN_TOKEN", "REPLACE_WITH_A_LONG_RANDOM_TOKEN"),
        ("QCP_SERVICE_CRN", "REPLACE_WITH_YOUR_INSTANCE_CRN"),
    ],
)
def test_placeholders_from_the_examples_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=rf"^{name} \(\w+\): still the example's placeholder"):
        load_settings(None)


def test_a_placeholder_in_a_secret_file_is_refused(tmp_path: Path) -> None:
    path = secret(tmp_path, "api-key", "REPLACE_WITH_YOUR_IBM_CLOUD_API_KEY\n")
    with pytest.raises(ConfigError, match=r"^--api-key-file \(flag\): .*placeholder"):
        load_settings(None, api_key_file=str(path))

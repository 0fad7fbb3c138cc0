"""Settings: sources and precedence, validation messages, the example file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from proxy.config import ConfigError, Settings, load_settings, upstream_for_crn

ROOT = Path(__file__).resolve().parents[1]
CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/abc:inst::"
EU_CRN = "crn:v1:bluemix:public:quantum-computing:eu-de:a/abc:inst::"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("QCP_"):
            monkeypatch.delenv(k)


def test_upstream_follows_the_crn_region() -> None:
    assert upstream_for_crn(CRN) == "https://quantum.cloud.ibm.com/api"
    assert upstream_for_crn(EU_CRN) == "https://eu-de.quantum.cloud.ibm.com/api"
    assert load_settings(None, service_crn=EU_CRN).effective_upstream_url == "https://eu-de.quantum.cloud.ibm.com/api"


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'service_crn = "{CRN}"\nport = 1111\nlog_level = "debug"\napi_version = "2025-05-01"\n')
    monkeypatch.setenv("QCP_PORT", "2222")
    monkeypatch.setenv("QCP_API_VERSION", "2026-02-15")
    s = load_settings(f, api_version="2026-04-15")
    assert (s.port, s.log_level, s.api_version, s.service_crn) == (2222, "debug", "2026-04-15", CRN)


def test_qcp_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text("port = 4321\n")
    monkeypatch.setenv("QCP_CONFIG", str(f))
    assert load_settings().port == 4321


def test_client_tokens_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCP_CLIENT_TOKENS", "alice=alice-token-1, bare-token-22")
    assert load_settings().client_token_names == {"alice-token-1": "alice", "bare-token-22": "client-2"}
    monkeypatch.delenv("QCP_CLIENT_TOKENS")
    f = tmp_path / "c.toml"
    f.write_text('[client_tokens]\nbob = "bob-token-1"\n')
    assert load_settings(f).client_token_names == {"bob-token-1": "bob"}


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"service_crn": "not-a-crn"}, "--service-crn (flag): "),
        ({"port": 70000}, "--port (flag): "),
        ({"api_version": "latest"}, "--api-version (flag): "),
        ({"upstream_url": "ftp://x"}, "--upstream-url (flag): "),
        ({"client_tokens": "short"}, "--client-tokens (flag): "),
        ({"instances": {"not-hgp": CRN}}, "--instances (flag): "),
        ({"log_format": "xml"}, "--log-format (flag): "),
    ],
)
def test_invalid_settings_name_the_setting(overrides: dict, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, **overrides)
    msg = str(info.value)
    assert msg.startswith(names)
    assert "\n" not in msg


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")


def test_serving_requires_key_and_crn_and_tokens_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match="QCP_API_KEY"):
        load_settings(None, service_crn=CRN).require_serving()
    with pytest.raises(ConfigError, match="QCP_SERVICE_CRN"):
        load_settings(None, api_key="k").require_serving()
    with pytest.raises(ConfigError, match="QCP_HOST"):
        load_settings(None, api_key="k", service_crn=CRN, host="0.0.0.0").require_serving()
    load_settings(None, api_key="k", service_crn=CRN, host="0.0.0.0", client_tokens="tok-12345678").require_serving()
    load_settings(None, api_key="k", service_crn=CRN, host="::1").require_serving()


def test_sunset_before_deprecation_is_refused() -> None:
    with pytest.raises(ConfigError, match="sunset"):
        load_settings(None, deprecation_date="2027-01-01T00:00:00Z", sunset_date="2026-01-01T00:00:00Z")


def test_api_key_is_never_printed() -> None:
    s = load_settings(None, api_key="super-secret-key-123")
    assert "super-secret-key-123" not in repr(s)
    assert "super-secret-key-123" not in str(s.model_dump())


def test_example_config_loads_and_lists_every_setting() -> None:
    path = ROOT / "config.example.toml"
    s = load_settings(path)
    assert s.service_crn
    text = path.read_text()
    # Every setting appears in the example, set or commented out.
    for field in Settings.model_fields:
        assert re.search(rf"^#?\s*\[?{field}\b", text, re.M), f"{field} missing from config.example.toml"
    tomllib.loads(text)


def test_transport_setting_picks_the_upstream_client() -> None:
    import httpx

    from proxy.upstream.client import default_transport
    from proxy.upstream.transport import AiohttpTransport, NativeTransport

    assert isinstance(default_transport(load_settings(None)), NativeTransport)
    assert isinstance(default_transport(load_settings(None, transport="aiohttp")), AiohttpTransport)
    assert isinstance(default_transport(load_settings(None, transport="httpx")), httpx.AsyncHTTPTransport)
    with pytest.raises(ConfigError, match=r"^--transport \(flag\): .*'curl'"):
        load_settings(None, transport="curl")


def test_intercepting_mode_is_off_by_default_and_lists_come_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(None)
    assert s.intercept_port is None and s.intercept_host == "127.0.0.1" and s.intercept_other_hosts == "refuse"
    assert "*.quantum-computing.cloud.ibm.com" in s.intercept_hosts and "iam.cloud.ibm.com" in s.intercept_iam_hosts
    monkeypatch.setenv("QCP_INTERCEPT_HOSTS", "api.example.test, *.Quantum.example.test")
    assert load_settings(None).intercept_hosts == ["api.example.test", "*.quantum.example.test"]
    monkeypatch.setenv("QCP_INTERCEPT_HOSTS", "bad host/")
    with pytest.raises(ConfigError, match="QCP_INTERCEPT_HOSTS"):
        load_settings(None)


def test_intercepting_beyond_loopback_needs_client_tokens() -> None:
    s = load_settings(None, api_key="k", service_crn=CRN, intercept_port=8443, intercept_host="0.0.0.0")
    with pytest.raises(ConfigError, match="QCP_INTERCEPT_HOST"):
        s.require_serving()
    load_settings(
        None, api_key="k", service_crn=CRN, intercept_port=8443, intercept_host="0.0.0.0", client_tokens=["x" * 12]
    ).require_serving()

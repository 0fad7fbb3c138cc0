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


# ---------------------------------------------------------------- #13: every error names where it came from


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def problems(config: Path | None = None, **overrides: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(config, **overrides)
    return info.value.errors


def test_unknown_toml_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    f = write(tmp_path, "# the proxy\n\nlisten_port = 9000\nlog_levl = 'debug'\n")
    assert problems(f) == [
        f"{f}:3: listen_port: unknown setting (did you mean 'port'?)",
        f"{f}:4: log_levl: unknown setting (did you mean 'log_level'?)",
    ]


def test_unknown_route_policy_key_names_its_line_and_suggests(tmp_path: Path) -> None:
    f = write(tmp_path, 'port = 1\n[routes."GET /usage"]\npolicy = "gone"\nbrownout_shares = 0.5\n')
    assert problems(f) == [
        f'{f}:4: routes."GET /usage".brownout_shares: unknown setting (did you mean \'brownout_share\'?)'
    ]


def test_bad_toml_value_names_the_line_of_its_key(tmp_path: Path) -> None:
    f = write(tmp_path, 'host = "::1"\n\n[routes."GET /jobs"]\npolicy = "brownout"\nbrownout_share = 2.5\n')
    [msg] = problems(f)
    assert msg.startswith(f'{f}:5: routes."GET /jobs".brownout_share: Input should be less than or equal to 1')
    assert "(got 2.5)" in msg


def test_toml_syntax_error_names_file_line(tmp_path: Path) -> None:
    f = write(tmp_path, 'port = 8080\nhost = \n')
    assert problems(f) == [f"{f}:2:8: TOML syntax error: Invalid value"]


def test_bad_instances_json_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `QCP_CONFIG (None): ...`."""
    monkeypatch.setenv("QCP_INSTANCES", "{'a/b/c': 'crn'}")
    [msg] = problems()
    assert msg.startswith("QCP_INSTANCES (env): not valid JSON: Expecting property name")


def test_misspelt_qcp_env_var_is_an_error_with_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    """QCP_PROT=9000 was silently ignored."""
    monkeypatch.setenv("QCP_PROT", "9000")
    assert problems() == ["QCP_PROT (env): unknown setting (did you mean QCP_PORT?)"]
    monkeypatch.setenv("QCP_PROT", "9000")
    monkeypatch.setenv("QCP_WHATEVER_ELSE", "1")
    assert problems()[1] == "QCP_WHATEVER_ELSE (env): unknown setting"


@pytest.mark.parametrize(
    "name", ["QCP_CONFIG", "QCP_SKIP_LEGACY_SDKS", "QCP_SOAK_SECONDS", "QCP_LEGACY_ONLY", "QCP_LEGACY_VENV_DIR",
             "QCP_PROXY_CMD", "QCP_URL", "QCP_BACKEND"],
)
def test_qcp_env_vars_of_the_tests_and_scripts_are_not_settings_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, str(write(tmp_path, "port = 1\n")) if name == "QCP_CONFIG" else "1")
    load_settings()


def test_the_known_non_setting_env_vars_are_all_that_the_repository_uses() -> None:
    """Every QCP_* name in proxy/, tests/, bench/, .ci/, deploy/ and examples/ is a setting, a setting's
    _FILE twin, or a known non-setting var (else the suite or a recipe would stop on it)."""
    from proxy.config import NON_SETTING_ENV, NON_SETTING_ENV_PREFIXES

    settings = {f"QCP_{n.upper()}" for n in Settings.model_fields}
    found: set[str] = set()
    own = {ROOT / "proxy" / "config.py", ROOT / "proxy" / "commands" / "config_check.py", Path(__file__),
           ROOT / "tests" / "commands" / "test_config_check.py"}
    for folder in ("proxy", "tests", "bench", ".ci", "deploy", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix not in (".pyc", ".sqlite3") and path not in own:
                found |= set(re.findall(r"QCP_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace")))
    unknown = {
        n for n in found - settings - NON_SETTING_ENV
        if not (n + "_").startswith(NON_SETTING_ENV_PREFIXES) and not any(s.startswith(n) for s in settings)
    }
    assert not unknown  # e.g. "QCP_SSL_" in a comment is the start of settings: skipped


def test_flag_errors_name_the_flag() -> None:
    assert problems(None, port=70000) == ["--port (flag): Input should be less than or equal to 65535 (got 70000)"]
    assert problems(None, prot=1) == ["--prot (flag): unknown setting (did you mean --port?)"]


def test_all_errors_are_shown_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first of several errors was shown."""
    f = write(tmp_path, 'log_level = "loud"\nlisten_port = 1\nworkers = 0\n')
    monkeypatch.setenv("QCP_PROT", "1")
    monkeypatch.setenv("QCP_ROUTES", "[")
    with pytest.raises(ConfigError) as info:
        load_settings(f, max_connections=0)
    errors = info.value.errors
    assert [e.split(":")[1] if e.startswith(str(f)) else e.split(" ")[0] for e in errors] == [
        "1", "2", "3", "QCP_PROT", "QCP_ROUTES", "--max-connections",
    ]  # the file's, by line, then env vars, then flags
    text = str(info.value)
    assert text.splitlines()[0] == "6 problems:"
    assert all(line.startswith("  ") for line in text.splitlines()[1:])


def test_one_problem_is_one_line() -> None:
    assert str(ConfigError("QCP_PORT (env): bad")) == "QCP_PORT (env): bad"
    assert ConfigError("QCP_PORT (env): bad").errors == ["QCP_PORT (env): bad"]


def test_cross_checks_are_reported_together_naming_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path, "file-api-key-123", "key")
    f = write(tmp_path, f'api_key_file = "{key}"\nsunset_date = 2025-01-01T00:00:00Z\n')
    monkeypatch.setenv("QCP_API_KEY", "env-api-key-123")
    errors = problems(f, ssl_keyfile=str(key))
    assert errors[0] == f"{f}:1: api_key_file: QCP_API_KEY (env) is set too: give the value or its file, not both"
    assert errors[1].startswith(f"{f}:2: sunset_date: sunset is earlier than deprecation")
    assert errors[2] == "--ssl-keyfile (flag): set without ssl_certfile (QCP_SSL_CERTFILE)"
    assert "env-api-key-123" not in str(errors) and "file-api-key-123" not in str(errors)


def test_rejected_secrets_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QCP_CLIENT_TOKENS", "ci=short-secret"[:7])
    monkeypatch.setenv("QCP_OUTBOUND_PROXY", "socks5://user:hunter2@proxy.corp:1080")
    text = "\n".join(problems())
    assert "QCP_CLIENT_TOKENS (env)" in text and "QCP_OUTBOUND_PROXY (env)" in text
    assert "hunter2" not in text and "ci=shor" not in text


def test_toml_key_lines_follow_tables_dotted_and_quoted_keys_and_skip_multiline_values() -> None:
    from proxy.config import toml_key_lines

    text = (
        'a = """\nx = 1\n"""\n'            # 1-3: a multi-line string with a fake key inside
        "b = [\n  1,\n  2,\n]\n"           # 4-7
        "c.d = { e = 1 }  # comment\n"     # 8
        '[routes."GET /x"]\n'             # 9
        "policy = 'gone'\n"               # 10
        "[[arr]]\n"                        # 11
        "k = 'it''s'\n"                    # 12
    )
    lines = toml_key_lines(text)
    assert lines[("a",)] == 1 and ("x",) not in lines
    assert lines[("b",)] == 4 and lines[("c",)] == 8 and lines[("c", "d")] == 8
    assert lines[("routes", "GET /x")] == 9 and lines[("routes", "GET /x", "policy")] == 10
    assert lines[("arr",)] == 11 and lines[("arr", "k")] == 12


# ---------------------------------------------------------------- #13: sunset alone before the default deprecation


def test_sunset_alone_before_the_default_deprecation_date_is_refused() -> None:
    """It started, and the Deprecation header silently moved to the sunset (README: it refuses)."""
    [msg] = problems(None, sunset_date="2025-03-01T00:00:00Z")
    assert msg.startswith("--sunset-date (flag): sunset is earlier than deprecation")
    assert "2025-03-01 < the default deprecation date 2025-07-01" in msg
    [msg] = problems(None, routes={"GET /jobs": {"sunset": "2025-03-01T00:00:00Z"}})
    assert msg.startswith('--routes (flag): routes."GET /jobs".sunset: sunset is earlier than deprecation')
    load_settings(None, sunset_date="2025-07-01T00:00:00Z")  # the same day is fine
    load_settings(None, sunset_date="2025-03-01T00:00:00Z", deprecation_date="2025-01-01T00:00:00Z")


def test_the_default_deprecation_date_is_the_one_the_headers_carry() -> None:
    from proxy.config import DEFAULT_DEPRECATION_DATE
    from proxy.phaseout.policy import CLASSIC_RETIRED

    assert DEFAULT_DEPRECATION_DATE == CLASSIC_RETIRED


# ---------------------------------------------------------------- sources and help


def test_every_setting_has_a_one_line_description() -> None:
    """The CLI's flag help is generated from these."""
    from proxy.config import RoutePolicy

    for model in (Settings, RoutePolicy):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            assert "\n" not in info.description and len(info.description) <= 110, name


def test_value_sources_name_where_each_value_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "QCP_ADMIN_TOKEN").write_text("admin-token-1234\n")
    f = write(tmp_path, f'service_crn = "{CRN}"\n\nport = 1111\n')
    monkeypatch.setenv("QCP_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("QCP_LOG_LEVEL", "debug")
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "qiskit-env-key-123")
    s = load_settings(f, host="::1")
    assert s.value_source("service_crn") == f"{f}:1"
    assert s.value_source("port") == f"{f}:3"
    assert s.value_source("log_level") == "env QCP_LOG_LEVEL"
    assert s.value_source("host") == "flag --host"
    assert s.value_source("admin_token") == f"secret file {secrets / 'QCP_ADMIN_TOKEN'}"
    assert s.value_source("api_key") == "env QISKIT_IBM_TOKEN"
    assert s.value_source("workers") == "default"
    assert s.credential_sources == {"api_key": "QISKIT_IBM_TOKEN", "service_crn": "QCP_SERVICE_CRN"}


def test_a_misspelt_file_in_the_secrets_directory_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "QCP_API_KY").write_text("k")
    (tmp_path / "other-tool-secret").write_text("x")  # not ours: ignored
    monkeypatch.setenv("QCP_SECRETS_DIR", str(tmp_path))
    assert problems() == [
        f"QCP_API_KY (secret file {tmp_path / 'QCP_API_KY'}): unknown setting (did you mean QCP_API_KEY?)"
    ]

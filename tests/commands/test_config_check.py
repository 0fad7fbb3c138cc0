"""`qiskit-classic-proxy config check`: offline, the effective settings with their sources, secrets
masked, every problem at once, exit 0 / 2. The real console script, in a subprocess."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from proxy.config import Settings
from proxy.emulator import DEMO_CRN
from tests.conftest import EmulatorHandle

SCRIPT = Path(sys.executable).parent / "qiskit-classic-proxy"
API_KEY = "very-secret-api-key-4242"
ADMIN_TOKEN = "very-secret-admin-token-77"
CLIENT_TOKEN = "very-secret-client-token-99"
PROXY_PASSWORD = "hunter2-proxy-pass"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("QCP_", "QISKIT_IBM_", "NO_COLOR"))}
    base.update({"COLUMNS": "80", "HOME": os.environ.get("HOME", "/tmp")})
    base.update(env or {})
    return subprocess.run([str(SCRIPT), "config", "check", *args], capture_output=True, text=True, env=base,
                          timeout=60)


def squash(text: str) -> str:
    return "".join(text.split())


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """setting -> (value, source) from the table (columns found from the header line), whitespace
    removed: a wrapped cell's lines are joined."""
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("setting"))
    v, s = header.index("value"), header.index("source")
    out: dict[str, list[str]] = {}
    last = ""
    for line in lines[lines.index(header) + 2:]:
        first, value, source = line[:v].strip(), line[v:s].strip(), line[s:].strip()
        if first in Settings.model_fields:
            last = first
            out[last] = [value, source]
        elif last and not first and line.strip():
            out[last][0] += value
            out[last][1] += source
        elif not line.strip():
            break
    return {k: (squash(a), squash(b)) for k, (a, b) in out.items()}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    f = tmp_path / "qcp.toml"
    f.write_text(
        f'service_crn = "{DEMO_CRN}"\n'
        "\n"
        "port = 9123\n"
        f'outbound_proxy = "http://bob:{PROXY_PASSWORD}@proxy.corp:3128"\n'
        "[client_tokens]\n"
        f'ci = "{CLIENT_TOKEN}"\n'
    )
    return f


def test_config_check_prints_each_value_with_its_source_and_masks_secrets(tmp_path: Path, config: Path) -> None:
    key = tmp_path / "api-key"
    key.write_text(API_KEY + "\n")
    r = run("--config", str(config), "--host", "127.0.0.2",
            env={"QCP_API_KEY_FILE": str(key), "QCP_LOG_LEVEL": "debug", "QCP_ADMIN_TOKEN": ADMIN_TOKEN})
    assert r.returncode == 0, r.stderr
    for secret in (API_KEY, ADMIN_TOKEN, CLIENT_TOKEN, PROXY_PASSWORD):
        assert secret not in r.stdout + r.stderr
    table = rows(r.stdout)
    assert table["api_key"] == ("********", squash(f"secret file {key}"))
    assert table["admin_token"] == ("********", "envQCP_ADMIN_TOKEN")
    assert table["service_crn"] == (DEMO_CRN, f"{config}:1")
    assert table["port"] == ("9123", f"{config}:3")
    assert table["outbound_proxy"] == ("http://********@proxy.corp:3128", f"{config}:4")
    assert table["client_tokens"] == ("ci=********", f"{config}:5")
    assert table["host"] == ("127.0.0.2", "flag--host")
    assert table["log_level"] == ("debug", "envQCP_LOG_LEVEL")
    assert table["workers"] == ("1", "default")
    assert set(table) == set(Settings.model_fields)
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    assert "\x1b[" not in r.stdout  # not a terminal: no colour
    assert "configuration ok" in r.stdout


def test_config_check_names_a_saved_account_and_qiskit_ibm_token_as_sources(tmp_path: Path) -> None:
    r = run(env={"QISKIT_IBM_TOKEN": API_KEY, "QISKIT_IBM_INSTANCE": DEMO_CRN})
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout)["api_key"] == ("********", "envQISKIT_IBM_TOKEN")
    assert rows(r.stdout)["service_crn"][1] == "envQISKIT_IBM_INSTANCE"
    assert API_KEY not in r.stdout


def test_config_check_shows_all_errors_at_once_with_suggestions_and_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('listen_port = 9000\nlog_level = "loud"\n[routes."GET /usage"]\npolcy = "gone"\n')
    r = run("--config", str(f), "--upstream-url", "ftp://x",
            env={"QCP_PROT": "1", "QCP_INSTANCES": "{nope", "QCP_API_KEY": API_KEY})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "qiskit-classic-proxy: configuration error: 6 problems:"
    assert lines[1:] == [
        f"  {f}:1: listen_port: unknown setting (did you mean 'port'?)",
        f"  {f}:2: log_level: Input should be 'critical', 'error', 'warning', 'info' or 'debug' (got 'loud')",
        f"  {f}:4: routes.\"GET /usage\".polcy: unknown setting (did you mean 'policy'?)",
        "  QCP_INSTANCES (env): not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"
        " (char 1)",
        "  QCP_PROT (env): unknown setting (did you mean QCP_PORT?)",
        "  --upstream-url (flag): must be an http(s) URL",
    ]
    assert API_KEY not in r.stderr


def test_config_check_toml_syntax_error_names_file_line_and_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("port = 1\n[routes\n")
    r = run("--config", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"configuration error: {f}:2:" in r.stderr and "TOML syntax error" in r.stderr


def test_config_check_refuses_a_sunset_alone_before_the_default_deprecation_date(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("sunset_date = 2025-05-01T00:00:00Z\n")
    r = run("--config", str(f))
    assert r.returncode == 2
    assert f"{f}:1: sunset_date: sunset is earlier than deprecation" in r.stderr
    assert "default deprecation date 2025-07-01" in r.stderr


def test_config_check_suggests_the_classic_route_for_an_unknown_route_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('port = 1\n\n[routes."GET /usge"]\npolicy = "gone"\n')
    r = run("--config", str(f))
    assert r.returncode == 2
    assert f"{f}:3: routes.\"GET /usge\": no such Classic route (did you mean 'GET /usage'?)" in r.stderr


def test_config_check_refuses_what_serve_would_refuse() -> None:
    r = run("--port", "1")
    assert r.returncode == 0, r.stderr  # no credentials: `start` would run the demo; said so
    assert "no IBM credentials" in r.stdout
    r = run("--host", "0.0.0.0", env={"QCP_API_KEY": API_KEY, "QCP_SERVICE_CRN": DEMO_CRN})
    assert r.returncode == 2 and "QCP_HOST (host): refusing to listen on 0.0.0.0" in r.stderr
    r = run(env={"QCP_API_KEY": API_KEY})
    assert r.returncode == 2 and "QCP_SERVICE_CRN (service_crn)" in r.stderr and API_KEY not in r.stderr


def test_config_check_sends_nothing(emulator: EmulatorHandle) -> None:
    """Offline, like nginx -t: IAM and the new API (here the emulator) see no request."""
    emulator.clear()
    emulator.state.iam_requests.clear()
    r = run(env={"QCP_API_KEY": API_KEY, "QCP_SERVICE_CRN": DEMO_CRN, "QCP_UPSTREAM_URL": emulator.url + "/api",
                 "QCP_IAM_URL": emulator.url + "/identity/token"})
    assert r.returncode == 0, r.stderr
    assert emulator.requests == [] and emulator.state.iam_requests == []


def namespace(**given: object) -> argparse.Namespace:
    """What the CLI passes: `config` and every setting, None when not given."""
    return argparse.Namespace(**{"config": None, **{name: None for name in Settings.model_fields}, **given})


def test_config_check_json_format(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    from proxy.commands.config_check import cmd_config_check

    for name in [n for n in os.environ if n.startswith(("QCP_", "QISKIT_IBM_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("QCP_API_KEY", API_KEY)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cmd_config_check(namespace(config=str(config), format="json", port=9999)) == 0
    doc = json.loads(out.getvalue())
    assert doc["ok"] is True
    assert doc["settings"]["port"] == {"value": 9999, "source": "flag --port"}
    assert doc["settings"]["api_key"] == {"value": "********", "source": "env QCP_API_KEY"}
    assert API_KEY not in out.getvalue() and PROXY_PASSWORD not in out.getvalue()
    monkeypatch.setenv("QCP_PROT", "1")
    out = io.StringIO()
    with redirect_stdout(out):
        assert cmd_config_check(namespace(config=str(config), format="json")) == 2
    assert json.loads(out.getvalue()) == {
        "ok": False, "errors": ["QCP_PROT (env): unknown setting (did you mean QCP_PORT?)"],
    }


def test_config_check_colours_only_on_a_terminal_and_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from proxy.commands.config_check import render_table
    from proxy.config import load_settings

    for name in [n for n in os.environ if n.startswith(("QCP_", "NO_COLOR", "FORCE_COLOR"))]:
        monkeypatch.delenv(name)
    settings = load_settings(None, port=1)

    def table(tty: bool, width: int = 80) -> str:
        return render_table(settings, Console(file=io.StringIO(), width=width, force_terminal=tty))

    assert "\x1b[36m" in table(tty=True)  # the setting column is cyan
    assert "\x1b[" not in table(tty=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[36m" not in table(tty=True)
    assert max(len(line) for line in table(tty=False, width=140).splitlines()) <= 140


def test_config_check_format_json_on_the_console_script(config: Path) -> None:
    """`--format json` reaches the command through click: values with sources, secrets masked; errors too."""
    r = run("--config", str(config), "--format", "json", env={"QCP_API_KEY": API_KEY})
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["settings"]["port"]["value"] == 9123
    assert doc["settings"]["port"]["source"].endswith("qcp.toml:3"), doc["settings"]["port"]
    assert PROXY_PASSWORD not in r.stdout and CLIENT_TOKEN not in r.stdout and API_KEY not in r.stdout
    bad = run("--format", "json", env={"QCP_PROT": "1"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr + bad.stdout
    expected = ["QCP_PROT (env): unknown setting (did you mean QCP_PORT?)"]
    assert json.loads(bad.stdout) == {"ok": False, "errors": expected}

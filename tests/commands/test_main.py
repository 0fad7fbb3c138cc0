"""proxy/commands/main.py: the click commands hand each command the Namespace argparse gave it, the
settings flags are generated from Settings, and usage errors exit 2 without a traceback.

The console script itself (a subprocess) is tested in tests/test_cli.py; these run `main()` and the
click commands in-process, to try many argument lists quickly.
"""

from __future__ import annotations

import argparse
import copy
from datetime import datetime
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import click
import pytest

from proxy.commands import ca, explain, report, scan
from proxy.commands.cli_options import PARAMS, argparse_defaults, expand_greedy, namespace
from proxy.commands.flags import flag_fields, overrides, settings_option
from proxy.commands.main import EXIT_CONFIG, cli, main
from proxy.config import Settings

MODULES = {"explain": explain, "report": report, "scan": scan, "ca": ca}


def click_namespace(command: str, argv: list[str]) -> argparse.Namespace:
    """What the click command would hand its function for `argv` (parsed, not run)."""
    cmd = cli.commands[command]
    ctx = cmd.make_context(command, list(argv))
    module = MODULES.get(command)
    return namespace(ctx.params, module.add_arguments if module else None)


def argparse_namespace(module: Any, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


@pytest.mark.parametrize("name", MODULES)
def test_click_declares_every_argparse_option_with_the_same_spelling(name: str) -> None:
    """If explain/report/scan/ca gain an option in add_arguments, this fails until main has it too."""
    module = MODULES[name]
    p = argparse.ArgumentParser(add_help=False)
    module.add_arguments(p)
    wanted = {a.dest: sorted(a.option_strings) for a in p._actions}
    declared = {q.name: sorted(q.opts) if isinstance(q, click.Option) else [] for q in PARAMS[module]()}
    assert declared == wanted


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("explain", ["GET", "/runtime/backends"]),
        ("explain", ["POST", "/runtime/jobs", "-d", "@job.json", "-H", "X-A: 1", "--header", "X-B: 2",
                     "--format", "json", "--config", "c.toml", "--upstream-url", "http://u/api",
                     "--api-version", "2026-01-01"]),
        ("report", []),
        ("report", ["--db", "u.db", "--format", "markdown", "--since", "30d", "--config", "c.toml"]),
        ("report", ["--with-scan", "src/", "notebooks/", "--format", "json"]),
        ("report", ["--format", "json", "--with-scan", "src/"]),
        ("scan", ["examples"]),
        ("scan", ["a.py", "b", "--select", "QCP2,QCP301", "--select", "QCP1", "--ignore", "QCP105", "-o", "out",
                  "--diff", "--fix", "--exit-zero", "--format", "sarif"]),
        ("ca", []),
        ("ca", ["--show", "--ca-dir", "d", "--config", "c.toml"]),
        ("ca", ["--path"]),
    ],
)
def test_each_command_gets_the_namespace_argparse_gave_it(command: str, argv: list[str]) -> None:
    assert click_namespace(command, argv) == argparse_namespace(MODULES[command], argv)


def test_an_option_only_argparse_declares_still_reaches_the_command_with_its_default() -> None:
    def add_arguments(p: argparse.ArgumentParser) -> None:
        report.add_arguments(p)
        p.add_argument("--width", type=int, default=80)

    assert argparse_defaults(add_arguments)["width"] == 80
    args = namespace({"format": "json", "with_scan": ()}, add_arguments)
    assert args.width == 80 and args.format == "json" and args.with_scan is None


@pytest.mark.parametrize(
    ("argv", "expanded"),
    [
        (["--with-scan", "a", "b", "--format", "json"], ["--with-scan", "a", "--with-scan", "b", "--format", "json"]),
        (["--with-scan", "a"], ["--with-scan", "a"]),
        (["--with-scan=a", "--db", "x"], ["--with-scan=a", "--db", "x"]),
        (["--with-scan", "a", "--", "b"], ["--with-scan", "a", "--", "b"]),
        (["--db", "x", "y"], ["--db", "x", "y"]),
    ],
)
def test_with_scan_takes_one_or_more_paths_like_argparse(argv: list[str], expanded: list[str]) -> None:
    assert expand_greedy(argv, frozenset({"--with-scan"})) == expanded


# ------------------------------------------------------------------ the generated settings flags


def test_settings_flags_are_the_scalar_non_secret_settings() -> None:
    fields = flag_fields()
    for name in ("host", "port", "workers", "log_level", "submission_marker", "qiskit_account", "api_key_file",
                 "intercept_port", "admin_port", "max_header_bytes", "header_timeout", "sunset_date", "transport"):
        assert name in fields, name
    for name in ("api_key", "admin_token", "outbound_proxy",  # secrets: never in ps or shell history
                 "client_tokens", "instances", "routes", "intercept_hosts",  # lists and tables: env or TOML
                 "secrets_dir"):  # only QCP_SECRETS_DIR (read before every other source)
        assert name not in fields, name


def test_a_settings_flag_help_is_the_description_with_env_var_and_default() -> None:
    field = copy.copy(Settings.model_fields["max_header_count"])
    field.description = "Header fields per request (Envoy's default) -> 431."
    option = settings_option("max_header_count", field)
    assert option.help == "Header fields per request (Envoy's default) -> 431 (env QCP_MAX_HEADER_COUNT, default 100)"
    assert option.opts == ["--max-header-count"] and option.envvar is None  # pydantic reads QCP_* itself


def a_value(name: str) -> tuple[list[str], Any]:
    """Command-line words for a setting, and the value its flag should give."""
    field = Settings.model_fields[name]
    base = field.annotation
    if get_origin(base) in (Union, UnionType):
        base = next(a for a in get_args(base) if a is not type(None))
    flag = "--" + name.replace("_", "-")
    if base is bool:
        return [f"--no-{flag[2:]}"], False
    if get_origin(base) is Literal:
        return [flag, str(get_args(base)[-1])], get_args(base)[-1]
    if base in (int, float):
        low = next((getattr(m, "ge", None) or getattr(m, "gt", None) for m in field.metadata), None) or 0
        return [flag, str(low + 1)], base(low + 1)
    if base is datetime:
        return [flag, "2030-01-01"], "2030-01-01"
    return [flag, f"v-{name}"], f"v-{name}"


@pytest.mark.parametrize("command", ["serve", "start", "check", "config check"])
def test_overrides_returns_every_setting_given_on_the_command_line(command: str) -> None:
    argv: list[str] = []
    expected: dict[str, Any] = {}
    for name in flag_fields():
        words, value = a_value(name)
        argv += words
        expected[name] = value
    *group, last = command.split()
    cmd = cli.commands[group[0]].commands[last] if group else cli.commands[last]  # type: ignore[attr-defined]
    args = namespace(cmd.make_context(last, argv).params)
    assert overrides(args) == expected
    assert set(overrides(namespace(cmd.make_context(last, []).params)).values()) == {None}  # env and file decide


def test_qiskit_account_without_a_name_is_the_default_account() -> None:
    cmd = cli.commands["check"]
    assert cmd.make_context("check", ["--qiskit-account"]).params["qiskit_account"] == ""
    assert cmd.make_context("check", ["--qiskit-account", "--port", "1"]).params["qiskit_account"] == ""
    assert cmd.make_context("check", ["--qiskit-account", "work"]).params["qiskit_account"] == "work"
    assert cmd.make_context("check", []).params["qiskit_account"] is None


def test_demo_keeps_its_own_port_options() -> None:
    params = cli.commands["demo"].make_context("demo", ["--config", "c.toml", "--log-format", "json"]).params
    assert params["port"] is None and params["emulator_port"] == 0 and params["seconds"] == 0
    assert params["intercept_port"] is None and params["config"] == "c.toml" and params["log_format"] == "json"


# ------------------------------------------------------------------ exit codes


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        [],
        ["config"],
        ["config", "bogus"],
        ["serve", "--bogus"],
        ["serve", "--port"],
        ["serve", "--port", "70000"],
        ["serve", "--read-timeout", "0"],
        ["check", "--workers", "0"],
        ["demo", "--seconds", "soon"],
        ["start", "--log-level", "loud"],
        ["routes", "--markdown", "extra"],
        ["explain", "GET"],
        ["explain", "GET", "/x", "--format", "yaml"],
        ["scan"],
        ["ca", "--path", "--show"],
        ["report", "--with-scan"],
        ["report", "--format", "csv"],
    ],
)
def test_usage_errors_exit_2_with_an_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Error:" in out + err or "Usage:" in out + err
    assert "Traceback" not in out + err


def test_a_configuration_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--config", "/nonexistent/qcp.toml"]) == EXIT_CONFIG
    assert capsys.readouterr().err == (
        "qiskit-classic-proxy: configuration error: --config (flag): file not found: /nonexistent/qcp.toml\n"
    )


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("qiskit-classic-proxy ")
    assert main(["config", "check", "-h"]) == 0
    assert "Usage: qiskit-classic-proxy config check" in capsys.readouterr().out

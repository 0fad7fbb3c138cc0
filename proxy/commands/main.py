"""`qiskit-classic-proxy`: the command line, on click (as uvicorn's). One module per command; this
one only parses and runs.

Each command function still receives an `argparse.Namespace` with the attribute names it always
read. Exit codes: 0 ok, 1 a check failed (what the command returns), 2 a usage or configuration
error (one line, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import click

from ..config import ConfigError
from . import ca, explain, report, scan
from .check import cmd_check
from .cli_options import PARAMS, GreedyCommand, namespace
from .config_check import cmd_config_check
from .demo import cmd_demo
from .flags import settings_options
from .routes import cmd_routes
from .serve import cmd_serve, cmd_start

PROG = "qiskit-classic-proxy"
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _examples(*lines: str) -> str:
    """A click epilog kept as written (\\b: no rewrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class _Group(click.Group):
    """Commands listed in the order they are declared (the order a newcomer meets them)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    try:
        version = metadata.version(PROG)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        version = "unknown (not installed)"
    click.echo(f"{PROG} {version}")
    ctx.exit()


@click.group(
    PROG, cls=_Group, context_settings=CONTEXT,
    epilog=_examples(
        f"{PROG} demo                        # the proxy against a built-in emulator",
        f"{PROG} check && {PROG} serve",
        f"{PROG} COMMAND --help",
        "",
        "Shell completion (bash; zsh_source / fish_source for zsh / fish), e.g. in ~/.bashrc:",
        f'eval "$(_QISKIT_CLASSIC_PROXY_COMPLETE=bash_source {PROG})"',
    ),
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and exit.")
def cli() -> None:
    """Classic IBM Quantum REST API -> new Qiskit Runtime REST API, on localhost.

    Every setting is a flag, an env var QCP_* and a key of the --config TOML file; a flag wins
    over the env var, the env var over the file.
    """


def _command(
    group: click.Group, name: str, func: Callable[[Any], int], help_: str, examples: list[str],
    params: list[click.Parameter] | None = None, add_arguments: Any = None, cls: type[click.Command] = click.Command,
    **kwargs: Any,
) -> click.Command:
    """A click command handing `func` the parsed options as an argparse.Namespace."""

    def callback(**values: Any) -> int:
        return int(func(namespace(values, add_arguments)) or 0)

    short = help_.partition("\n\n")[0]
    cmd = cls(name, callback=callback, params=params or [], help=help_, short_help=short, context_settings=CONTEXT,
              epilog=_examples(*(e if PROG in e else f"{PROG} {e}" for e in examples)), **kwargs)
    group.add_command(cmd)
    return cmd


def _module_command(group: click.Group, name: str, module: Any, func: Callable[[Any], int], help_: str,
                    examples: list[str], **kwargs: Any) -> click.Command:
    return _command(group, name, func, help_, examples, params=PARAMS[module](), add_arguments=module.add_arguments,
                    **kwargs)


def _settings_command(group: click.Group, name: str, func: Callable[[Any], int], help_: str, examples: list[str],
                      own: list[click.Parameter] | None = None) -> click.Command:
    cmd = _command(group, name, func, help_, examples, params=list(own or []))
    return settings_options(exclude=[p.name for p in cmd.params if p.name])(cmd)


_settings_command(
    cli, "serve", cmd_serve,
    "Run the proxy in the foreground.\n\nNeeds the IBM Cloud API key and the instance CRN (QCP_API_KEY and "
    "QCP_SERVICE_CRN, a saved Qiskit account, or QISKIT_IBM_TOKEN / QISKIT_IBM_INSTANCE).",
    ["serve", "serve --port 8080 --workers 2", "serve --qiskit-account my-team --intercept-port 8443",
     "serve --config qcp.toml --log-format json"],
)
_settings_command(
    cli, "start", cmd_start,
    "Serve if IBM credentials are configured, else run the demo.",
    ["start", "start --qiskit-account"],
)
_settings_command(
    cli, "demo", cmd_demo,
    "Run the proxy against the built-in emulator (no IBM account needed).\n\n"
    "Prints curl commands that work, and runs one V1 job through the proxy.",
    ["demo", "demo --port 0 --seconds 60", "demo --intercept-port 0"],
    own=[
        # No default here: a default would beat QCP_PORT and the file's `port` (settings decide: 8080).
        click.Option(["--port"], type=int, default=None,
                     help="proxy port (env QCP_PORT, default 8080; 0 = any free port)"),
        click.Option(["--emulator-port"], type=int, default=0, help="emulator port (default: any free port)"),
        click.Option(["--seconds"], type=float, default=0,
                     help="stop after this many seconds (default: until Ctrl-C)"),
        click.Option(["--intercept-port"], type=int,
                     help="also the intercepting forward proxy (Zero-change mode); 0 = any"),
    ],
)
_settings_command(
    cli, "check", cmd_check,
    "Check the configuration against IAM and the new API, then exit.\n\nExit 0 ready, 1 a check failed, "
    "2 a configuration error.",
    ["check", "check --qiskit-account my-team", "check --config qcp.toml"],
)


@cli.group("config", cls=_Group, context_settings=CONTEXT, short_help="Validate the settings offline (config check).")
def config_group() -> None:
    """The settings: `config check` validates them offline and prints the effective values."""


_settings_command(
    config_group, "check", cmd_config_check,
    "Validate the settings offline (secrets masked), like nginx -t.\n\nPrints every effective setting; "
    "nothing is sent anywhere. Exit 0 when they load, 2 when they do not.",
    ["config check", "config check --config qcp.toml --port 9999", "config check --format json"],
    own=[click.Option(["--format"], type=click.Choice(["table", "json"]), default="table",
                      help="table, or JSON for scripts")],
)
_command(
    cli, "routes", cmd_routes, "Print the Classic -> new route table.",
    ["routes", "routes --markdown", "routes --config qcp.toml"],
    params=[
        click.Option(["--markdown"], is_flag=True, help="as a Markdown table (the README's, without policies)"),
        click.Option(["--policies"], is_flag=True, help="with --markdown: add the policy columns"),
        click.Option(["--config"], metavar="FILE",
                     help="TOML settings file, for the effective policies (env QCP_CONFIG)"),
    ],
)
_module_command(
    cli, "explain", explain, explain.cmd_explain,
    "Dry run: show how a Classic request would be translated (nothing is sent).\n\n"
    "PATH is the Classic path with its query, e.g. '/runtime/jobs?provider=h/g/p'.",
    ["explain GET /runtime/backends",
     "explain POST /runtime/sessions -d '{\"instance\":\"ibm-q/open/main\",\"backend\":\"ibm_fez\"}'",
     "explain POST /runtime/jobs -d @job.json --format json"],
)
_module_command(
    cli, "report", report, report.cmd_report,
    "Migration report from the usage record: who still calls what, what can be switched off.",
    ["report", "report --since 30d --format markdown", "report --db usage.db --with-scan src/ notebooks/"],
    cls=GreedyCommand, greedy=["--with-scan"],
)
_module_command(
    cli, "scan", scan, scan.cmd_scan,
    "Find legacy Classic/V1 calls in code and say what each becomes.\n\n"
    "PATH: files or folders (.py, .ipynb, .sh). Exit 0 nothing found, 1 findings, 2 usage error.",
    ["scan examples", "scan src --format sarif -o scan.sarif", "scan --diff examples", "scan --fix examples"],
)
_module_command(
    cli, "ca", ca, ca.cmd_ca,
    "The local CA of intercepting mode: its path (REQUESTS_CA_BUNDLE) or fingerprint.",
    ['ca --path', 'ca --show', 'export REQUESTS_CA_BUNDLE="$(qiskit-classic-proxy ca --path)"'],
)


def main(argv: list[str] | None = None) -> int:
    """The console script; also callable from tests (returns the exit code instead of exiting)."""
    try:
        return int(cli.main(args=argv, prog_name=PROG, standalone_mode=False) or 0)
    except click.ClickException as exc:  # usage errors: click's message, exit 2
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort as exc:
        return EXIT_INTERRUPTED if isinstance(exc.__cause__, KeyboardInterrupt) else 1
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())

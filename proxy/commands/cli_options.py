"""The click options of explain, report, scan and ca, and the Namespace their commands receive.

These modules declare their arguments for argparse (`add_arguments`) and read them from an
`argparse.Namespace`; the options are declared again here, for click, with the same spellings,
attribute names and types (tests/commands/test_main.py compares both). A `dest` declared there but
not yet here still reaches the command, with its argparse default, so the command never fails on it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import click

from . import ca, explain, report, scan

AddArguments = Callable[[argparse.ArgumentParser], None]


def argparse_defaults(add_arguments: AddArguments) -> dict[str, Any]:
    """dest -> default of what `add_arguments` declares."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return {a.dest: a.default for a in p._actions}


def namespace(params: dict[str, Any], add_arguments: AddArguments | None = None) -> argparse.Namespace:
    """What argparse would have given the command: lists for repeated options and for nargs, None for
    an option repeated zero times."""
    values = argparse_defaults(add_arguments) if add_arguments else {}
    for k, v in params.items():
        values[k] = (list(v) or None) if isinstance(v, tuple) else v
    return argparse.Namespace(**values)


def expand_greedy(args: Sequence[str], greedy: frozenset[str]) -> list[str]:
    """argparse's `nargs="+"` for an option: `--with-scan a b` -> `--with-scan a --with-scan b`; the
    values end at the next word starting with "-"."""
    out: list[str] = []
    current: str | None = None
    for i, word in enumerate(args):
        if word == "--":
            return out + list(args[i:])
        if word in greedy:
            current = word
            out.append(word)
            continue
        if word.startswith("-"):
            current = None
        elif current is not None and out[-1] != current:
            out.append(current)
        out.append(word)
    return out


class GreedyCommand(click.Command):
    """A command whose `greedy` options take one or more values, like argparse's `nargs="+"`."""

    def __init__(self, *args: Any, greedy: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.greedy = frozenset(greedy)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_greedy(args, self.greedy))


def _config() -> click.Option:
    return click.Option(["--config"], metavar="FILE", help="TOML settings file (env QCP_CONFIG)")


def explain_params() -> list[click.Parameter]:
    return [
        click.Argument(["method"], metavar="METHOD"),
        click.Argument(["path"], metavar="PATH"),
        click.Option(["--data", "-d"], metavar="JSON", help="request body (JSON, or @FILE)"),
        click.Option(["--header", "-H"], multiple=True, metavar="K:V", help="request header (repeatable)"),
        click.Option(["--format"], type=click.Choice(["text", "json"]), default="text", show_default=True),
        _config(),
        click.Option(["--upstream-url"], help="new API base (QCP_UPSTREAM_URL)"),
        click.Option(["--api-version"], help="IBM-API-Version (QCP_API_VERSION)"),
    ]


def report_params() -> list[click.Parameter]:
    return [
        _config(),
        click.Option(["--db"], metavar="PATH",
                     help="usage record: SQLite path or postgresql:// URL (default: usage_db setting, QCP_USAGE_DB)"),
        click.Option(["--format"], type=click.Choice(["table", "json", "markdown"]), default="table",
                     show_default=True),
        click.Option(["--since"], metavar="DATE",
                     help="routes without traffic since DATE (YYYY-MM-DD, ISO date-time, or an age like 30d) are "
                     "ready to switch off; callers last seen before DATE are left out"),
        click.Option(["--with-scan"], multiple=True, metavar="PATH...",
                     help="also scan these files/folders and show, for each legacy route still called, the code "
                     "behind it"),
    ]


def scan_params() -> list[click.Parameter]:
    return [
        click.Argument(["paths"], nargs=-1, required=True, metavar="PATH...",
                       type=click.Path()),  # scan itself says which are missing (exit 2)
        click.Option(["--format"], type=click.Choice(["table", "json", "sarif"]), default="table",
                     show_default=True),
        click.Option(["--select"], multiple=True, metavar="CODES",
                     help="only these rule codes or prefixes, comma-separated (e.g. QCP2,QCP301)"),
        click.Option(["--ignore"], multiple=True, metavar="CODES", help="skip these rule codes or prefixes"),
        click.Option(["--output", "-o"], metavar="FILE", help="write the report to FILE instead of stdout"),
        click.Option(["--diff"], is_flag=True, help="print the suggested changes as a unified diff (writes nothing)"),
        click.Option(["--fix"], is_flag=True,
                     help="apply the suggested changes in place (refused if a file to change is dirty in git)"),
        click.Option(["--exit-zero"], is_flag=True, help="exit 0 even when there are findings"),
    ]


def _one_of_path_show(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value and ctx.params.get("path" if param.name == "show" else "show"):
        raise click.UsageError("--path and --show are mutually exclusive", ctx)
    return value


def ca_params() -> list[click.Parameter]:
    return [
        click.Option(["--path"], is_flag=True, callback=_one_of_path_show,
                     help="print the CA certificate's path (default)"),
        click.Option(["--show"], is_flag=True, callback=_one_of_path_show,
                     help="print the fingerprint and how to trust the CA"),
        click.Option(["--ca-dir"], help="CA directory (QCP_CA_DIR; default: the proxy's state directory)"),
        _config(),
    ]


#: module -> its click parameters (main.py builds the commands; the test compares with add_arguments).
PARAMS: dict[Any, Callable[[], list[click.Parameter]]] = {
    explain: explain_params,
    report: report_params,
    scan: scan_params,
    ca: ca_params,
}

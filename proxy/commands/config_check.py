"""`config check`: validate the settings offline (like `nginx -t`) and print the effective values.

Nothing is sent anywhere (`check` is the command that talks to IAM and the new API). Each value is
shown with where it came from (default, FILE:LINE, env QCP_X, flag --x, secret file, saved account,
QISKIT_IBM_*), secrets masked. Exit 0 when the settings would serve, 2 when they would not.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, SecretStr
from rich.console import Console

from .. import terminal
from ..config import ConfigError, Settings
from .flags import load

MASK = "********"
#: Plain-str settings that may carry a password in a URL's userinfo.
_URL_SETTINGS = ("usage_db",)


def mask_url(url: str) -> str:
    """scheme://user:password@host -> scheme://********@host; anything else unchanged."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)?[^/@\s]+@", lambda m: (m.group(1) or "") + MASK + "@", url)


def shown(settings: Settings, name: str) -> Any:
    """The value of setting `name` as it may be printed: secrets masked, models as plain data."""
    value = getattr(settings, name)
    if name == "outbound_proxy" and isinstance(value, SecretStr):
        return mask_url(value.get_secret_value())
    if isinstance(value, SecretStr):
        return MASK
    if name == "client_tokens":  # "name=token" entries: the names are not secret
        return [f"{caller}={MASK}" for caller in settings.client_token_names.values()]
    if name in _URL_SETTINGS and isinstance(value, str):
        return mask_url(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: v.model_dump(mode="json", exclude_defaults=True) if isinstance(v, BaseModel) else v
                for k, v in value.items()}
    return value


def _route_problems(settings: Settings) -> list[str]:
    """[routes."..."] keys that are not Classic routes (with the closest one), then what the phase-out
    plans refuse (brownout windows, programs on a route that submits nothing)."""
    from ..classic.routes import RouteTable
    from ..phaseout.policy import build_plans

    table = RouteTable()
    keys = [r.key for r in table.routes]
    problems = []
    for key in settings.routes:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"{settings.where('routes', key)}: no such Classic route{hint}; keys are 'METHOD /template' "
                "as printed by `qiskit-classic-proxy routes`"
            )
    if not problems:
        try:
            build_plans(settings, table)
        except ConfigError as exc:
            problems += exc.errors
    return problems


def validate(settings: Settings) -> tuple[list[str], list[str]]:
    """(problems, notes) beyond what loading checks: what `serve` would refuse."""
    problems = _route_problems(settings)
    notes = []
    try:
        if settings.require_credentials():
            settings.require_serving()
        else:
            notes.append("no IBM credentials: `serve` would refuse, `start` would run the demo")
    except ConfigError as exc:
        problems += exc.errors
    return problems, notes


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if value == "":
        return '""'
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) if value else "[]"
    return json.dumps(value)


def render_table(settings: Settings, con: Console | None = None) -> str:
    """Setting | value | source, fitted to the terminal (proxy/terminal.py: COLUMNS or the terminal's
    width; on a pipe rows never wrap), colour only on a terminal, never with NO_COLOR."""
    from rich import box
    from rich.table import Table

    con = con or terminal.console()
    names = list(type(settings).model_fields)
    room = con.width - max(map(len, names)) - 4  # what the value and source columns share
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("setting", no_wrap=True, style="cyan")
    table.add_column("value", overflow="fold", ratio=1)
    table.add_column("source", overflow="fold", max_width=max(12, room * 2 // 5))
    for name in names:
        source = settings.value_source(name)
        table.add_row(name, _cell(shown(settings, name)), source, style=None if source == "default" else "bold")
    return terminal.render([table], con)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Load and check the settings; print them (table or JSON); 0 ok, 2 a configuration error."""
    fmt = getattr(args, "format", None) or "table"
    try:
        settings = load(args)
        problems, notes = validate(settings)
        if problems:
            raise ConfigError(*problems)
    except ConfigError as exc:
        if fmt != "json":
            raise  # main prints "configuration error: ..." and exits 2
        print(json.dumps({"ok": False, "errors": exc.errors}, indent=2))
        return 2
    if fmt == "json":
        values = {name: {"value": shown(settings, name), "source": settings.value_source(name)}
                  for name in type(settings).model_fields}
        print(json.dumps({"ok": True, "settings": values, "notes": notes}, indent=2, default=str))
        return 0
    lines = [render_table(settings), f"effective upstream: {settings.effective_upstream_url}"]
    lines += [f"note: {note}" for note in notes]
    lines.append("configuration ok (checked offline; `check` tries the credentials)")
    terminal.write("\n".join(lines))
    return 0

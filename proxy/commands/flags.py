"""The settings flags of serve, start, check, config check and demo, generated from `Settings`.

Every scalar setting is a flag, an env var (QCP_*) and a TOML key, like uvicorn; flags win, then
env, then the file. The flags are generated from `Settings.model_fields`, so a new setting gets its
flag without a line here. Click reads no env var itself (no `envvar=`): pydantic does, so the
precedence and the error messages stay in one place (config.py).
"""

from __future__ import annotations

import argparse
import functools
import types
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin

import click
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from ..config import Settings, load_settings

#: Settings that have no flag: `secrets_dir` must be the env var QCP_SECRETS_DIR, since it is read
#: before every other source (config.py refuses it from anywhere else).
NO_FLAG = frozenset({"secrets_dir"})
#: Help for the settings whose field has no description (yet): the flags' help before generation.
_HELP = {
    "host": "bind address",
    "port": "bind port",
    "workers": "worker processes",
    "upstream_url": "new API base, e.g. https://quantum.cloud.ibm.com/api; unset: from the CRN's region",
    "iam_url": "IAM token endpoint",
    "api_version": "IBM-API-Version sent upstream",
    "service_crn": "the instance CRN of the default instance",
    "log_level": "log level",
    "log_format": "log format",
    "intercept_host": "bind address of the intercepting forward proxy",
    "ssl_keyfile": "the certificate's private key (PEM)",
    "deprecation_date": "Deprecation date of every legacy route (ISO date or date-time)",
    "sunset_date": "Sunset date of every legacy route (ISO date or date-time)",
}
_SPECIAL: dict[str, dict[str, Any]] = {
    # `--qiskit-account` alone is the default saved account (""), `--qiskit-account NAME` a named one.
    "qiskit_account": {"is_flag": False, "flag_value": "", "metavar": "[NAME]"},
}


def _scalar(annotation: Any) -> Any | None:
    """The flag's base type: the annotation without `| None`; None if it is no scalar (list, dict...)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    if get_origin(annotation) is Literal:
        return annotation
    if annotation is SecretStr:  # secrets never on the command line (ps, shell history)
        return None
    return annotation if annotation in (str, int, float, bool, datetime) else None


def _bounds(field: FieldInfo) -> dict[str, Any]:
    """click's range from the field's Field(ge=..., gt=..., le=..., lt=...) constraints."""
    out: dict[str, Any] = {}
    for m in field.metadata:
        for attr, key, is_open in (("ge", "min", False), ("gt", "min", True), ("le", "max", False),
                                   ("lt", "max", True)):
            if getattr(m, attr, None) is not None:
                out[key] = getattr(m, attr)
                if is_open:
                    out[f"{key}_open"] = True
    return out


class _IntRange(click.IntRange):
    name = "integer"  # "'x' is not a valid integer", and INTEGER in the help (the range is shown apart)


class _FloatRange(click.FloatRange):
    name = "float"


def _click_type(base: Any, field: FieldInfo) -> click.ParamType:
    if get_origin(base) is Literal:
        return click.Choice([str(a) for a in get_args(base)])
    if base in (int, float):
        bounds = _bounds(field)
        if not bounds:
            return click.INT if base is int else click.FLOAT
        return _IntRange(**bounds) if base is int else _FloatRange(**bounds)
    return click.STRING  # str, and datetime: pydantic parses it (2026-12-01, 2026-12-01T10:00:00Z)


def _metavar(name: str, base: Any) -> str | None:
    if base is datetime:
        return "DATETIME"
    if name.endswith("_url"):
        return "URL"
    if name.endswith(("_file", "_bundle", "_certfile", "_keyfile")):
        return "FILE"
    if name.endswith("_dir"):
        return "DIR"
    if name.endswith("host"):
        return "HOST"
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return '""' if value == "" else str(value)


@functools.cache
def flag_fields() -> dict[str, FieldInfo]:
    """The settings that are flags, in the model's order."""
    return {
        name: field for name, field in Settings.model_fields.items()
        if name not in NO_FLAG and _scalar(field.annotation) is not None
    }


def settings_option(name: str, field: FieldInfo) -> click.Option:
    """`--field-name` for one setting: type from the annotation, help from its description."""
    base = _scalar(field.annotation)
    flag = "--" + name.replace("_", "-")
    desc = (field.description or _HELP.get(name, "")).strip().rstrip(".")
    default = _shown(field.get_default(call_default_factory=True))
    help_ = f"{desc} (env QCP_{name.upper()}, default {default})".lstrip()
    extra = dict(_SPECIAL.get(name, {}))
    if base is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_)
    metavar = extra.pop("metavar", _metavar(name, base))
    return click.Option([flag, name], type=_click_type(base, field), default=None, help=help_, metavar=metavar,
                        **extra)


def config_option() -> click.Option:
    return click.Option(["--config", "config"], metavar="FILE", default=None,
                        help="TOML settings file (env QCP_CONFIG)")


def settings_options(exclude: Iterable[str] = ()) -> Callable[[click.Command], click.Command]:
    """Add `--config` and every settings flag (but `exclude`, a command's own options) to a command."""
    skip = set(exclude)

    def add(cmd: click.Command) -> click.Command:
        cmd.params.append(config_option())
        cmd.params += [settings_option(n, f) for n, f in flag_fields().items() if n not in skip]
        return cmd

    return add


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting given on the command line (None: not given, the env or the file decides)."""
    return {k: getattr(args, k, None) for k in flag_fields()}


def load(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides(args))

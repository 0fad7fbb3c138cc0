"""`config check`: validate the settings offline (like `nginx -t`) and print the effective values.

Secrets are masked; nothing is sent anywhere. Exit 0 when the settings load, 2 when they do not.
"""

from __future__ import annotations

import argparse

from pydantic import SecretStr

from .flags import load


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load(args)
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        shown = "********" if isinstance(value, SecretStr) else value
        print(f"{name} = {shown!r}")
    print("configuration ok")
    return 0

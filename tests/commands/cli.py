"""Run the real console script, as a user's shell does, with a chosen terminal width and colour env."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "qiskit-classic-proxy"
#: Environment that changes how output looks; every test states the ones it wants.
_LOOK = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM")
#: Any ANSI escape sequence; COLOUR: the SGR parameters that set a colour (not bold or dim).
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


def run_cli(*args: str, env: dict[str, str] | None = None, columns: int | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QCP_") and k not in _LOOK}
    if columns is not None:
        base["COLUMNS"] = str(columns)
    base.update(env or {})
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=base, timeout=timeout)


def too_wide(text: str, columns: int) -> list[str]:
    """Lines longer than `columns` characters once escapes are removed."""
    return [ln for ln in ANSI.sub("", text).splitlines() if len(ln) > columns]

"""Terminal output for the commands' tables (rich): fit the width, wrap cells not rows, colour only on a TTY.

Width: `COLUMNS` if set, else the terminal's when stdout is one; on a pipe without `COLUMNS` rows
are never wrapped (one line per row, for grep). Colour follows rich: only on a terminal (or with
`FORCE_COLOR` / `TTY_COMPATIBLE=1`), never with `NO_COLOR`. Text is never read as rich markup.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from io import StringIO
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

#: Width of a pipe's output when COLUMNS is not set: wide enough that no table row ever wraps.
UNBOUNDED = 10_000
#: Two spaces between table columns (padding (0, 1), no edge padding).
GAP = 2
_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$")


def _columns(environ: dict[str, str] | os._Environ[str]) -> int | None:
    v = environ.get("COLUMNS", "")
    return int(v) if v.isdigit() and int(v) > 0 else None


def console(file: IO[str] | None = None) -> Console:
    """A console for stdout (or `file`): COLUMNS or the terminal's width, unbounded on a pipe."""
    out = file or sys.stdout
    probe = Console(file=out)
    width = _columns(os.environ)
    if width is None and not probe.is_terminal:
        width = UNBOUNDED
    return Console(file=out, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False)


def render(items: Sequence[RenderableType], con: Console) -> str:
    """What `items` print on `con`, trailing blanks cut from every line."""
    with con.capture() as cap:
        for item in items:
            con.print(item)
    return "\n".join(_TRAILING.sub(r"\1", line) for line in cap.get().splitlines())


def plain(items: Sequence[RenderableType], width: int | None = None) -> str:
    """`items` as plain text (no colour) at `width` columns; None: rows never wrap."""
    con = Console(file=StringIO(), width=width or UNBOUNDED, color_system=None, force_terminal=False,
                  highlight=False, markup=False, emoji=False)
    return render(items, con)


def write(text: str) -> None:
    """Print `text` to stdout; a closed pipe (`| head`) ends the output quietly, not with a traceback."""
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def emit_view(items: Sequence[RenderableType], con: Console | None = None) -> None:
    """Print rich renderables on stdout (built for `con`'s width), coloured only where colour belongs."""
    write(render(items, con or console()))


def fit(natural: Sequence[int], minimum: Sequence[int], total: int, weight: Sequence[float] | None = None) -> list[int]:
    """Column widths summing to at most `total`: the natural ones if they fit, else the widest
    column (by width / weight) gives up a character at a time, none below its minimum."""
    widths = [max(n, 1) for n in natural]
    mins = [min(m, w) for m, w in zip(minimum, widths, strict=True)]
    w8 = list(weight) if weight is not None else [1.0] * len(widths)
    while sum(widths) > total:
        shrinkable = [i for i in range(len(widths)) if widths[i] > mins[i]]
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: (widths[j] / w8[j], j))
        widths[i] -= 1
    return widths


def table(headers: Sequence[str], widths: Sequence[int] | None = None, *, show_header: bool = True) -> Table:
    """A borderless table (columns two spaces apart, as the plain-text tables were); fixed widths if given."""
    t = Table(box=None, padding=(0, 1), pad_edge=False, show_header=show_header, header_style="bold",
              collapse_padding=False, expand=False)
    for i, h in enumerate(headers):
        t.add_column(h, width=widths[i] if widths else None, overflow="fold", no_wrap=False)
    return t


def content_width(con: Console, columns: int, indent: int = 0) -> int:
    """The characters a table of `columns` columns has for its cells on `con`."""
    return max(con.width - indent - GAP * (columns - 1), columns)


def cell(value: Any, style: str = "") -> Text:
    """A table cell: never markup, "-" for nothing."""
    return Text("-" if value is None else str(value), style=style)

"""`routes`: the Classic -> new route table, grouped by the migration guide's sections, with each
route's effective phase-out policy; `--markdown` is the README's table."""

from __future__ import annotations

import argparse

from ..config import load_settings
from ..terminal import console, emit_view, write


def cmd_routes(args: argparse.Namespace) -> int:
    """The route table; in text form with each route's effective phase-out policy."""
    from ..classic.routes import RouteTable

    table = RouteTable()
    if args.markdown and not args.policies:
        write(table.render_markdown())
        return 0
    from ..phaseout.report import render_routes, routes_view

    settings = load_settings(args.config)
    if args.markdown:
        write(render_routes(settings, table, markdown=True))
        return 0
    con = console()
    emit_view(routes_view(settings, table, con.width), con)
    return 0

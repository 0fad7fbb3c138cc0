"""`routes`: the Classic -> new route table, with each route's effective phase-out policy."""

from __future__ import annotations

import argparse

from ..config import load_settings


def cmd_routes(args: argparse.Namespace) -> int:
    """The route table; in text form with each route's effective phase-out policy."""
    from ..classic.routes import RouteTable

    table = RouteTable()
    if args.markdown and not args.policies:
        print(table.render_markdown())
        return 0
    from ..phaseout.report import render_routes

    print(render_routes(load_settings(args.config), table, markdown=args.markdown))
    return 0

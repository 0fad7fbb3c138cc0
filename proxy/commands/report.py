"""`report`: the migration report from the usage record (see `phaseout/report.py`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import load_settings
from ..phaseout.report import build_report, format_report, parse_since, report_view
from ..phaseout.usage import UsageError, read_usage
from ..scan.analyzer import scan_paths
from ..scan.traffic import format_join, join
from ..store import redact
from ..terminal import console, emit_view, write


def _print_report(report: dict[str, Any], fmt: str) -> None:
    if fmt == "table":
        con = console()
        emit_view(report_view(report, con.width), con)
    else:
        write(format_report(report, fmt))


def cmd_report(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    path = args.db or settings.usage_db
    if not path:
        print("qiskit-classic-proxy report: no usage record: usage_db is \"\" (give --db PATH)", file=sys.stderr)
        return 1
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"qiskit-classic-proxy report: {exc}", file=sys.stderr)
        return 2
    try:
        rows = read_usage(path)
    except UsageError as exc:
        print(f"qiskit-classic-proxy report: {exc}", file=sys.stderr)
        return 1
    report = build_report(rows, settings, since=since, source=redact(path))
    if not args.with_scan:
        _print_report(report, args.format)
        return 0
    missing = [p for p in args.with_scan if not Path(p).exists()]
    if missing:
        print(f"qiskit-classic-proxy report: --with-scan: no such file or directory: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    joined = join(report, scan_paths([Path(p) for p in args.with_scan]))
    if args.format == "json":
        write(json.dumps({**report, "code": joined}, indent=2))
    else:
        _print_report(report, args.format)
        write(format_join(joined, args.format))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: QCP_CONFIG)")
    p.add_argument(
        "--db", metavar="PATH",
        help="usage record: SQLite path or postgresql:// URL (default: usage_db setting, QCP_USAGE_DB)",
    )
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table", help="(default: table)")
    p.add_argument(
        "--since", metavar="DATE",
        help="routes without traffic since DATE (YYYY-MM-DD, ISO date-time, or an age like 30d) are ready "
        "to switch off; callers last seen before DATE are left out",
    )
    p.add_argument(
        "--with-scan", nargs="+", metavar="PATH",
        help="also scan these files/folders and show, for each legacy route still called, the code behind it",
    )

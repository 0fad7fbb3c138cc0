"""`scan PATH...`: the legacy calls in a codebase, what each relies on, and what each becomes.

Exit codes like a linter: 0 nothing found, 1 findings, 2 usage error (bad path, unknown code,
--fix refused).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from ..scan.analyzer import scan_paths
from ..scan.fix import FixError, plan_fixes, write_fixes
from ..scan.output import to_json, to_sarif, to_table
from ..scan.project import iter_files
from ..scan.rules import select_rules

EXIT_FINDINGS = 1
EXIT_USAGE = 2


def _codes(values: list[str] | None) -> list[str]:
    return [c for v in values or [] for c in v.split(",") if c.strip()]


def cmd_scan(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        enabled = select_rules(_codes(args.select), _codes(args.ignore))
    except ValueError as exc:
        print(f"qiskit-classic-proxy scan: {exc}", file=err)
        return EXIT_USAGE
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"qiskit-classic-proxy scan: no such file or directory: {', '.join(missing)}", file=err)
        return EXIT_USAGE
    result = scan_paths(paths, enabled)
    if args.diff or args.fix:
        files = {}
        base = Path.cwd().resolve()
        for p in iter_files(paths):
            try:
                files[p.resolve().relative_to(base).as_posix()] = p
            except ValueError:
                files[p.as_posix()] = p
        fixes = plan_fixes(result.findings, files)
        if args.diff:
            sys.stdout.write("".join(f.diff() for f in fixes))
        if args.fix:
            try:
                write_fixes(fixes)
            except FixError as exc:
                print(f"qiskit-classic-proxy scan --fix: {exc}", file=err)
                return EXIT_USAGE
            fixed = sum(len(f.fixed) for f in fixes)
            print(f"fixed {len(fixes)} file(s) ({fixed} rule(s) applied); run scan again to see what is left",
                  file=err)
            result = scan_paths(paths, enabled)
        if args.diff and not args.fix:
            return EXIT_FINDINGS if result.findings else 0
    if args.format == "json":
        text = to_json(result)
    elif args.format == "sarif":
        text = to_sarif(result)
    else:
        console = Console()
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not args.output
        text = to_table(result, width=console.width if not args.output else 100, color=color)
    if args.output:
        try:
            Path(args.output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"qiskit-classic-proxy scan: cannot write {args.output}: {exc.strerror}", file=err)
            return EXIT_USAGE
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.exit_zero:
        return 0
    return EXIT_FINDINGS if result.findings else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (.py, .ipynb, .sh)")
    p.add_argument("--format", choices=["table", "json", "sarif"], default="table", help="(default: table)")
    p.add_argument("--select", action="append", metavar="CODES",
                   help="only these rule codes or prefixes, comma-separated (e.g. QCP2,QCP301)")
    p.add_argument("--ignore", action="append", metavar="CODES", help="skip these rule codes or prefixes")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--diff", action="store_true", help="print the suggested changes as a unified diff (writes nothing)")
    p.add_argument("--fix", action="store_true",
                   help="apply the suggested changes in place (refused if a file to change is dirty in git)")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")

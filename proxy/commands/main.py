"""`qiskit-classic-proxy`: the command line. One module per command; this one only parses and runs.

Configuration problems print one line naming the setting and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from . import ca, explain, report, scan
from .check import cmd_check
from .config_check import cmd_config_check
from .demo import cmd_demo
from .flags import settings_flags
from .routes import cmd_routes
from .serve import cmd_serve, cmd_start

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qiskit-classic-proxy",
        description="Classic IBM Quantum REST API -> new Qiskit Runtime REST API, on localhost.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the proxy in the foreground")
    settings_flags(p)
    p.add_argument("--workers", type=int, help="worker processes (QCP_WORKERS, default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("start", help="serve if IBM credentials are configured, else run the demo")
    settings_flags(p)
    p.add_argument("--workers", type=int, help="worker processes (QCP_WORKERS, default 1)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("routes", help="print the Classic -> new route table")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table (the README's, without policies)")
    p.add_argument("--policies", action="store_true", help="with --markdown: add the policy columns")
    p.add_argument("--config", metavar="FILE", help="TOML settings file, for the effective policies (QCP_CONFIG)")
    p.set_defaults(func=cmd_routes)

    p = sub.add_parser("demo", help="run the proxy against the built-in emulator (no IBM account needed)")
    p.add_argument("--port", type=int, default=8080, help="proxy port (default 8080; 0 = any free port)")
    p.add_argument("--emulator-port", type=int, default=0, help="emulator port (default: any free port)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--intercept-port", type=int, help="also the intercepting forward proxy (Zero-change mode); 0 = any")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check", help="check the configuration against IAM and the new API, then exit")
    settings_flags(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", help="config check: validate the settings offline and print the effective values")
    cfg = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    c = cfg.add_parser("check", help="validate the settings offline (secrets masked), like nginx -t")
    settings_flags(c)
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("explain", help="dry run: show how a Classic request would be translated (nothing is sent)")
    explain.add_arguments(p)
    p.set_defaults(func=explain.cmd_explain)

    p = sub.add_parser(
        "report", help="migration report from the usage record: who still calls what, what can be switched off"
    )
    report.add_arguments(p)
    p.set_defaults(func=report.cmd_report)

    p = sub.add_parser("scan", help="find legacy Classic/V1 calls in code and say what each becomes")
    scan.add_arguments(p)
    p.set_defaults(func=scan.cmd_scan)

    p = sub.add_parser("ca", help="the local CA of intercepting mode: its path (REQUESTS_CA_BUNDLE) or fingerprint")
    ca.add_arguments(p)
    p.set_defaults(func=ca.cmd_ca)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"qiskit-classic-proxy: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

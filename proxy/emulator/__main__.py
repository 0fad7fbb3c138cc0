"""`python -m proxy.emulator`: run the fake new API + IAM standalone on loopback.

Useful for poking at the proxy by hand or pointing a real qiskit-ibm-runtime at it
(`IAM_URL=http://127.0.0.1:PORT`, `url_resolver=lambda *a: "http://127.0.0.1:PORT/api/v1"`).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from ..serving import free_port
from .app import create_emulator_app
from .config import DEMO_API_KEY, EmulatorConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m proxy.emulator", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=9999, help="port (0 = any free port; default: 9999)")
    p.add_argument("--token-ttl", type=int, default=3600, help="IAM access token lifetime in seconds")
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"an IBM Cloud API key the fake IAM accepts (repeatable; default: {DEMO_API_KEY})",
    )
    p.add_argument("--polls", type=int, default=2, help="GETs of a job until it is Completed (default: 2)")
    p.add_argument("--no-require-api-version", action="store_true", help="accept requests without IBM-API-Version")
    p.add_argument("--no-record", action="store_true", help="do not record requests (long benchmark runs)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = EmulatorConfig(
        api_keys=set(args.api_keys or [DEMO_API_KEY]),
        token_ttl=args.token_ttl,
        job_polls_to_complete=args.polls,
        require_api_version=not args.no_require_api_version,
        record_requests=not args.no_record,
    )
    port = args.port or free_port(args.host)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: listening on {args.host}: the admin endpoints (/__emulator__/*) have no auth", file=sys.stderr)
    app = create_emulator_app(config)
    url = f"http://{args.host}:{port}"
    print(f"emulator: {url}  (new API: {url}/api/v1/..., IAM: {url}/identity/token)")
    print(f"  api key(s): {', '.join(sorted(config.api_keys))}")
    for crn in config.crns:
        print(f"  instance: {crn}")
    print(f"  recorded requests: {url}/__emulator__/requests", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())

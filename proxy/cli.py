"""`qiskit-classic-proxy`: serve, routes, demo, check (and the phase-out commands).

Every serve option is a flag, an env var (QCP_*) and a TOML key; flags win, then env, then the
file. Configuration problems print one line naming the setting and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .config import ConfigError, Settings, load_settings

EXIT_CONFIG = 2

#: Extra subcommands registered by other modules: name -> (add_arguments, run).
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {}


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: QCP_CONFIG)")
    p.add_argument("--host", help="bind address (env: QCP_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port (env: QCP_PORT, default 8080)")
    p.add_argument("--upstream-url", help="new API base, e.g. https://quantum.cloud.ibm.com/api (QCP_UPSTREAM_URL)")
    p.add_argument("--iam-url", help="IAM token endpoint (QCP_IAM_URL)")
    p.add_argument("--api-version", help="IBM-API-Version sent upstream (QCP_API_VERSION)")
    p.add_argument("--public-url", help="base URL advertised to legacy SDKs (QCP_PUBLIC_URL)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="(QCP_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="(QCP_LOG_FORMAT)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "host", "port", "upstream_url", "iam_url", "api_version", "public_url", "log_level", "log_format", "workers",
    )
    return {k: getattr(args, k, None) for k in keys}


def load(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), **_overrides(args))


# --------------------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .logs import configure

    settings = load(args)
    settings.require_serving()
    configure(settings.log_level, settings.log_format)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # the proxy writes its own access line, without secrets
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }
    if settings.workers > 1:
        # Workers rebuild settings from env: hand them the file and the flags that way.
        if args.config:
            os.environ["QCP_CONFIG"] = os.path.abspath(args.config)
        for key, value in _overrides(args).items():
            if value is not None:
                os.environ[f"QCP_{key.upper()}"] = str(value)
        uvicorn.run("proxy.app:app_factory", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """serve when IBM credentials are configured, else the demo: the README's first command."""
    settings = load(args)
    if settings.api_key is not None and settings.service_crn:
        return cmd_serve(args)
    print("No QCP_API_KEY / QCP_SERVICE_CRN configured: starting the demo against the built-in emulator.")
    args.port = settings.port
    args.emulator_port = 0
    args.seconds = 0
    return cmd_demo(args)


# -------------------------------------------------------------------------------------- routes


def cmd_routes(args: argparse.Namespace) -> int:
    """The route table; in text form with each route's effective phase-out policy."""
    from .routes import RouteTable

    table = RouteTable()
    if args.markdown and not args.policies:
        print(table.render_markdown())
        return 0
    from .phaseout import render_routes

    print(render_routes(load_settings(args.config), table, markdown=args.markdown))
    return 0


# ---------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Emulator + proxy on loopback, with curl commands that work. No IBM account needed."""
    from .app import create_app
    from .emulator import DEMO_API_KEY, DEMO_CRN, EmulatorConfig, create_emulator_app
    from .logs import configure
    from .serving import BackgroundServer

    try:
        emulator = BackgroundServer(create_emulator_app(EmulatorConfig()), port=args.emulator_port or None).start()
    except (RuntimeError, TimeoutError, OSError):
        print(f"qiskit-classic-proxy: cannot start the emulator on port {args.emulator_port}", file=sys.stderr)
        return 1
    settings = load_settings(
        None,
        api_key=DEMO_API_KEY,
        service_crn=DEMO_CRN,
        upstream_url=emulator.url + "/api",
        iam_url=emulator.url + "/identity/token",
        host="127.0.0.1",
        port=args.port,
        usage_db="",
    )
    configure("info", "text")
    try:
        proxy = BackgroundServer(create_app(settings), port=args.port, access_log=False, server_header=False).start()
    except (RuntimeError, TimeoutError, OSError):
        emulator.stop()
        print(f"qiskit-classic-proxy: cannot listen on 127.0.0.1:{args.port} (in use?); try --port", file=sys.stderr)
        return 1
    base = proxy.url
    print(f"""
qiskit-classic-proxy demo
  proxy:    {base}   (Classic API: {base}/runtime/..., {base}/api/...)
  emulator: {emulator.url}   (a fake of the new API at /api/v1 and of IAM, for this demo)

Try it (another terminal):
  curl -s {base}/runtime/backends
  curl -s {base}/runtime/backends/fake_manila/status
  curl -s -X POST {base}/runtime/jobs \\
       -d '{{"program_id":"sampler","backend":"fake_manila","hub":"ibm-q","group":"open","project":"main",
             "params":{{"pubs":[],"version":2}}}}'
  curl -s '{base}/runtime/jobs?limit=5&provider=ibm-q/open/main'
  curl -s -i {base}/runtime/health          # 410 Gone: removed from the new API
  curl -s {emulator.url}/__emulator__/requests   # what reached the "new API"

Legacy SDKs: QiskitRuntimeService(channel="ibm_quantum", url="{base}/api", token="anything")
Ctrl-C to stop.""", flush=True)
    try:
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        emulator.stop()
    return 0


# --------------------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    """Token, /v1/versions, /v1/instances/usage: the first thing to run after configuring."""
    import httpx

    from .errors import ProxyError
    from .iam import TokenProvider

    settings = load(args)
    try:
        settings.require_serving()
    except ConfigError as exc:
        print(f"config     FAIL  {exc}")
        return 1
    assert settings.api_key is not None and settings.service_crn is not None
    upstream = settings.effective_upstream_url
    print(f"upstream   {upstream}")
    print(f"instance   {settings.default_instance} -> {settings.service_crn}")

    async def run() -> int:
        tokens = TokenProvider(settings.api_key.get_secret_value(), settings.iam_url, timeout=settings.iam_timeout)
        ok = True
        try:
            try:
                bearer = await tokens.get()
                tok = tokens.current()
                print(f"iam        ok    token valid for {tok.lifetime:.0f}s" if tok else "iam        ok")
            except ProxyError as exc:
                print(f"iam        FAIL  {exc.message}")
                return 1
            headers = {
                "Authorization": f"Bearer {bearer}",
                "Service-CRN": settings.service_crn,
                "IBM-API-Version": settings.api_version,
                "Accept": "application/json",
            }
            timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                for name, path in (("versions", "/v1/versions"), ("usage", "/v1/instances/usage")):
                    try:
                        r = await client.get(upstream + path, headers=headers)
                    except httpx.HTTPError as exc:
                        print(f"{name:<10} FAIL  {type(exc).__name__} reaching {upstream}{path}")
                        ok = False
                        continue
                    if r.status_code == 200:
                        print(f"{name:<10} ok    {_summary(name, r)}")
                    else:
                        ok = False
                        print(f"{name:<10} FAIL  HTTP {r.status_code}: {_error_message(r)}")
        finally:
            await tokens.aclose()
        return 0 if ok else 1

    result = asyncio.run(run())
    print("ready: point legacy callers at the proxy" if result == 0 else "not ready: fix the FAIL lines above")
    return result


def _summary(name: str, r: Any) -> str:
    try:
        doc = r.json()
    except ValueError:
        return "(non-JSON answer)"
    if name == "versions":
        vs = doc.get("versions", [])
        names = [str(v.get("version", v)) if isinstance(v, dict) else str(v) for v in vs[-4:]]
        return "API versions: " + ", ".join(names)
    used, limit = doc.get("usage_consumed_seconds"), doc.get("usage_limit_seconds")
    return f"instance usage {used}s of {limit}s" if used is not None else "instance found"


def _error_message(r: Any) -> str:
    try:
        doc = r.json()
        errs = doc.get("errors") or [{}]
        return str(errs[0].get("message") or doc)[:200]
    except (ValueError, AttributeError):
        return r.text[:200]


# ---------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qiskit-classic-proxy",
        description="Classic IBM Quantum REST API -> new Qiskit Runtime REST API, on localhost.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the proxy in the foreground")
    _settings_flags(p)
    p.add_argument("--workers", type=int, help="worker processes (QCP_WORKERS, default 1)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("start", help="serve if IBM credentials are configured, else run the demo")
    _settings_flags(p)
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
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check", help="check the configuration against IAM and the new API, then exit")
    _settings_flags(p)
    p.set_defaults(func=cmd_check)

    for name, (help_text, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"qiskit-classic-proxy: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _load_plugins() -> None:
    """Modules that add subcommands register them in COMMANDS on import."""
    import importlib

    for mod in ("proxy.phaseout",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


if __name__ == "__main__":
    raise SystemExit(main())

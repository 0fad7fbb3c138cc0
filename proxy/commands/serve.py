"""`serve` (the proxy in the foreground, one or more workers) and `start` (serve, else the demo)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
from typing import Any

from ..config import ConfigError, Settings
from .demo import cmd_demo
from .flags import load, overrides
from .preflight import EXIT_LISTEN, ensure_ca, listen_problem

log = logging.getLogger("qiskit_classic_proxy.serve")


def credentials_line(settings: Settings) -> str:
    """Where the credentials came from (never their values), for `start` and the start-up log."""
    src = settings.credential_sources
    return f"the API key from {src.get('api_key', '?')} and the CRN from {src.get('service_crn', '?')}"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app import create_app
    from ..logs import configure
    from ..phaseout.metrics import prepare_multiprocess_dir
    from ..upstream import egress
    from ..wire import server_options

    settings = load(args)
    settings.require_serving()
    if settings.intercept_port is not None:
        ensure_ca(settings.ca_dir)
    configure(settings.log_level, settings.log_format)
    # A bad CA bundle or proxy URL is a configuration error now, not a failed start-up later.
    egress.ssl_context(settings)
    egress.proxy_for(settings, settings.iam_url)
    problem = listen_problem(settings)
    if problem:
        print(f"qiskit-classic-proxy: {problem}", file=sys.stderr)
        return EXIT_LISTEN
    started = (
        f"serving with {credentials_line(settings)}; new API {settings.effective_upstream_url} "
        f"({egress.describe(settings, settings.effective_upstream_url)})"
    )
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's lines go through the proxy's handler (logs.configure): JSON too
        "access_log": False,  # the proxy writes its own access line, without secrets
        "server_header": False,
        "proxy_headers": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
        **server_options(settings),
    }
    if settings.workers > 1:
        if settings.admin_port is not None:
            raise ConfigError(
                "QCP_ADMIN_PORT (admin_port): not with workers > 1 (each worker would need the port); "
                "run one worker per container and scale with replicas"
            )
        # Workers rebuild settings from env: hand them the file and the flags that way.
        if args.config:
            os.environ["QCP_CONFIG"] = os.path.abspath(args.config)
        for key, value in overrides(args).items():
            if value is not None:
                os.environ[f"QCP_{key.upper()}"] = str(value)
        # One /metrics for the whole server: workers write to a shared directory (before they import
        # prometheus_client), emptied now so a previous run's counts do not come back.
        mp_dir, temporary = prepare_multiprocess_dir(settings.metrics_dir) if settings.metrics else ("", False)
        if mp_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
        log.info("%s", started)
        try:
            uvicorn.run("proxy.app:app_factory", factory=True, workers=settings.workers, **common)
        finally:
            if temporary:
                shutil.rmtree(mp_dir, ignore_errors=True)
        return 0
    app = create_app(settings)  # ConfigError here (bad route policies): one line, before anything is said
    log.info("%s", started)
    if settings.admin_port is None:
        uvicorn.run(app, **common)
        return 0
    admin_config = {
        **common, "host": settings.admin_host or settings.host, "port": settings.admin_port, "lifespan": "off",
        "interface": "asgi3",  # a bound method: uvicorn cannot tell by itself
        # Plain HTTP, for the kubelet and Prometheus (the main port's TLS is for the client tokens).
        "ssl_certfile": None, "ssl_keyfile": None,
    }
    return asyncio.run(_serve_with_admin(uvicorn.Config(app, **common), uvicorn.Config(app.admin_app, **admin_config)))


async def _serve_with_admin(main_config: Any, admin_config: Any) -> int:
    """Two listeners in one process and loop: the main one owns the signals and the lifespan; the
    admin one stops with it (and stops it if it cannot bind)."""
    import uvicorn

    main, admin = uvicorn.Server(main_config), uvicorn.Server(admin_config)
    admin.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    admin_task = asyncio.create_task(admin.serve())

    def admin_ended(task: asyncio.Task[None]) -> None:
        main.should_exit = True  # the admin listener failed (port taken...): do not run half the proxy

    admin_task.add_done_callback(admin_ended)
    try:
        await main.serve()
    finally:
        admin.should_exit = True
        try:
            await admin_task
        except SystemExit:  # uvicorn exits when it cannot bind
            log.error("the admin listener on port %s failed to start", admin_config.port)
            return 1
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """serve when IBM credentials are configured, else the demo: the README's first command.
    Half-set credentials are a configuration error naming the missing one, never the demo."""
    settings = load(args)
    if settings.require_credentials():
        print(f"Serving the new API with {credentials_line(settings)}.", flush=True)
        return cmd_serve(args)
    print("No QCP_API_KEY / QCP_SERVICE_CRN configured: starting the demo against the built-in emulator.")
    args.port = settings.port
    args.emulator_port = 0
    args.seconds = 0
    return cmd_demo(args)

"""`serve` (the proxy in the foreground, one or more workers) and `start` (serve, else the demo)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .demo import cmd_demo
from .flags import load, overrides


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..app import create_app
    from ..logs import configure

    settings = load(args)
    settings.require_serving()
    if settings.intercept_port is not None:
        _ensure_ca(settings.ca_dir)
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
        for key, value in overrides(args).items():
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


def _ensure_ca(ca_dir: str | None) -> None:
    """Create (or load) the intercepting mode's CA before serving: a bad QCP_CA_DIR is one clear line."""
    from ..config import ConfigError
    from ..intercept.ca import LocalCA

    try:
        LocalCA(ca_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"QCP_CA_DIR (ca_dir): cannot create or load the local CA: {exc}") from None

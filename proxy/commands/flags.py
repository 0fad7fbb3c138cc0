"""The settings flags shared by serve, start and check: every option is a flag, an env var (QCP_*)
and a TOML key; flags win, then env, then the file."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings, load_settings


def settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: QCP_CONFIG)")
    p.add_argument("--host", help="bind address (env: QCP_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port (env: QCP_PORT, default 8080)")
    p.add_argument("--upstream-url", help="new API base, e.g. https://quantum.cloud.ibm.com/api (QCP_UPSTREAM_URL)")
    p.add_argument("--iam-url", help="IAM token endpoint (QCP_IAM_URL)")
    p.add_argument("--api-version", help="IBM-API-Version sent upstream (QCP_API_VERSION)")
    p.add_argument("--public-url", help="base URL advertised to legacy SDKs (QCP_PUBLIC_URL)")
    p.add_argument("--intercept-port", type=int, help="intercepting forward proxy port, 0 = any (QCP_INTERCEPT_PORT)")
    p.add_argument("--intercept-host", help="its bind address (QCP_INTERCEPT_HOST, default 127.0.0.1)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="(QCP_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["text", "json"], help="(QCP_LOG_FORMAT)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "host", "port", "upstream_url", "iam_url", "api_version", "public_url", "log_level", "log_format", "workers",
        "intercept_port", "intercept_host",
    )
    return {k: getattr(args, k, None) for k in keys}


def load(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides(args))

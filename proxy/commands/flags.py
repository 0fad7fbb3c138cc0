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
    p.add_argument(
        "--qiskit-account", nargs="?", const="", metavar="NAME",
        help="API key and CRN from a saved qiskit-ibm-runtime account (~/.qiskit/qiskit-ibm.json or "
        "QISKIT_IBM_FILENAME); no NAME = the default account (QCP_QISKIT_ACCOUNT)",
    )
    p.add_argument("--ca-bundle", metavar="PEM", help="CA bundle for upstream TLS (QCP_CA_BUNDLE)")
    p.add_argument("--ssl-certfile", metavar="PEM", help="serve HTTPS with this certificate chain (QCP_SSL_CERTFILE)")
    p.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's private key (QCP_SSL_KEYFILE)")
    p.add_argument(
        "--admin-port", type=int, help="serve /healthz /readyz /metrics /admin on this port (QCP_ADMIN_PORT)"
    )
    p.add_argument("--admin-host", help="bind address of the admin port (QCP_ADMIN_HOST, default: --host)")
    # Hardening limits (SECURITY.md); the rest are TOML keys / QCP_* env vars.
    p.add_argument("--max-header-bytes", type=int, help="request head limit, bytes -> 431 (QCP_MAX_HEADER_BYTES)")
    p.add_argument("--header-timeout", type=float, help="seconds to send the headers (QCP_HEADER_TIMEOUT)")
    p.add_argument("--max-client-connections", type=int, help="open connections -> 503 (QCP_MAX_CLIENT_CONNECTIONS)")
    p.add_argument(
        "--submission-marker", action=argparse.BooleanOptionalAction, default=None,
        help="tag submissions to find them when an answer is lost (QCP_SUBMISSION_MARKER, default on)",
    )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "host", "port", "upstream_url", "iam_url", "api_version", "public_url", "log_level", "log_format", "workers",
        "qiskit_account", "ca_bundle", "ssl_certfile", "ssl_keyfile", "admin_port", "admin_host",
        "max_header_bytes", "header_timeout", "max_client_connections", "submission_marker",
        "intercept_port", "intercept_host",
    )
    return {k: getattr(args, k, None) for k in keys}


def load(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides(args))

"""`check`: IAM token, /v1/versions, /v1/instances/usage, the shared database; the first thing to run."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..config import ConfigError
from .flags import load


def cmd_check(args: argparse.Namespace) -> int:
    """Token, /v1/versions, /v1/instances/usage: the first thing to run after configuring."""
    import httpx

    from ..errors import ProxyError
    from ..upstream import egress
    from ..upstream.iam import TokenProvider

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
    sources = settings.credential_sources
    print(f"creds      API key from {sources.get('api_key', '?')}, CRN from {sources.get('service_crn', '?')}")
    print(f"egress     {egress.describe(settings, upstream)}")

    async def run() -> int:
        iam_client = egress.http_client(settings, settings.iam_url, settings.iam_timeout)
        tokens = TokenProvider(
            settings.api_key.get_secret_value(), settings.iam_url, timeout=settings.iam_timeout, client=iam_client
        )
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
            async with egress.http_client(settings, upstream, timeout) as client:
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
            await iam_client.aclose()
        return 0 if ok else 1

    result = asyncio.run(run())
    if result == 0 and not _check_database(settings.usage_db):
        result = 1
    print("ready: point legacy callers at the proxy" if result == 0 else "not ready: fix the FAIL lines above")
    return result


def _check_database(url: str) -> bool:
    """The shared PostgreSQL, if configured: reachable, and a schema this release can use."""
    from ..store import SCHEMA_VERSION, StoreError, is_postgres, redact, schema_version

    if not is_postgres(url):
        return True
    try:
        version = schema_version(url)
    except StoreError as exc:
        print(f"database   FAIL  {exc}")
        return False
    if version > SCHEMA_VERSION:
        print(f"database   FAIL  {redact(url)}: schema {version} is from a newer qiskit-classic-proxy")
        return False
    state = f"schema {version}" if version else "empty (the proxy creates its tables at start)"
    print(f"database   ok    {redact(url)}, {state}")
    return True


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

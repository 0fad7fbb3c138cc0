"""`check`: IAM token, /v1/versions, /v1/instances/usage, the shared database; the first thing to run.

Exit 0 when every check passes, 1 when one fails (IAM, the new API or the database unreachable, the
key or the CRN refused), 2 for a configuration problem (as `serve`: one line, nothing contacted).
A connection that fails is named with its URL and the cause (refused, DNS, timeout, TLS).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from .flags import load


def cmd_check(args: argparse.Namespace) -> int:
    """Token, /v1/versions, /v1/instances/usage: the first thing to run after configuring."""
    from ..errors import ProxyError
    from ..upstream import egress
    from ..upstream.iam import TokenProvider

    settings = load(args)
    settings.require_serving()  # ConfigError: one line, exit 2 (commands/main.py), as for serve
    # A bad CA bundle or outbound proxy URL is a configuration error too, before anything is contacted.
    egress.ssl_context(settings)
    egress.proxy_for(settings, settings.iam_url)
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
                transport = _transport_error(exc)
                if transport is not None:
                    why = unreachable(transport, settings.iam_timeout)
                    print(f"iam        FAIL  IAM {_shown(settings.iam_url)} unreachable: {why}")
                else:
                    print(f"iam        FAIL  {exc.message}")
                return 1
            headers = {
                "Authorization": f"Bearer {bearer}",
                "Service-CRN": settings.service_crn,
                "IBM-API-Version": settings.api_version,
                "Accept": "application/json",
            }
            timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
            reachable = True
            async with egress.http_client(settings, upstream, timeout) as client:
                for name, path in (("versions", "/v1/versions"), ("usage", "/v1/instances/usage")):
                    if not reachable:  # the new API did not answer: asking again would only wait again
                        print(f"{name:<10} skip  (the new API did not answer)")
                        continue
                    try:
                        r = await client.get(upstream + path, headers=headers)
                    except httpx.HTTPError as exc:
                        why = unreachable(exc, settings.read_timeout, settings.connect_timeout)
                        print(f"{name:<10} FAIL  new API {_shown(upstream + path)} unreachable: {why}")
                        ok = reachable = False
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

    with _quiet_iam_log():
        result = asyncio.run(run())
    if result == 0 and not _check_database(settings.usage_db):
        result = 1
    print("ready: point legacy callers at the proxy" if result == 0 else "not ready: fix the FAIL lines above")
    return result


@contextmanager
def _quiet_iam_log() -> Iterator[None]:
    """The IAM client logs its failures for serve; here the iam line says it once, with the cause."""
    logger = logging.getLogger("qiskit_classic_proxy.iam")
    quiet = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(quiet)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(quiet)
        logger.propagate = propagate


def _transport_error(exc: BaseException) -> httpx.HTTPError | None:
    """The connection failure behind an IAM error, if that is what it was (not an answer from IAM)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, httpx.HTTPError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def unreachable(exc: BaseException, read_timeout: float, connect_timeout: float | None = None) -> str:
    """Why a connection failed, in words: refused, DNS, timeout, TLS verification, closed..."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {connect_timeout or read_timeout:g}s (timeout)"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {read_timeout:g}s (timeout)"
    if isinstance(exc, httpx.ProxyError):
        return f"the outbound proxy refused: {exc}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = e.verify_message or e.reason or "certificate verify failed"
            return f"TLS certificate verify failed ({detail}; a TLS-inspecting proxy? set QCP_CA_BUNDLE)"
        if isinstance(e, socket.gaierror):
            return f"DNS lookup failed ({e.strerror or e})"
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e.reason or e})"
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror.lower()
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed without an answer"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _shown(url: str) -> str:
    """The URL without user:password, if it carries any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


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

"""The phase-out admin endpoints on the ops app: `/metrics`, `/admin/usage`, `/admin/policies`.

All behind the admin rule (`AdminGuard`): the admin token if one is set, else loopback callers
that do not present a client token. `proxy/ops.py` mounts them with `mount`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ..classic.auth import AccessTokens
from ..config import Settings, is_loopback
from ..errors import Forbidden, ProxyError, Unauthorized
from .policy import PhaseOut
from .report import build_report, parse_since
from .usage import UsageError

#: Paths of the ops app that the admin rule protects.
ADMIN_PREFIXES = ("/admin", "/metrics")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


def admin_denied(settings: Settings, access_tokens: AccessTokens, scope: dict[str, Any]) -> ProxyError | None:
    """None if the caller may read /admin/* and /metrics, else the error to answer."""
    s = settings
    headers: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    authz = headers.get("authorization", "")
    bearer = authz[7:].strip() if authz[:7].lower() == "bearer " else ""
    if s.admin_token is not None and s.admin_token.get_secret_value():
        want = s.admin_token.get_secret_value().encode()
        if bearer and hmac.compare_digest(bearer.encode(), want):
            return None
        return Unauthorized(
            "admin endpoints need 'Authorization: Bearer <QCP_ADMIN_TOKEN>'",
            code="admin_token_required",
            headers={"www-authenticate": 'Bearer realm="qiskit-classic-proxy admin"'},
        )
    client = scope.get("client") or ("", 0)
    if not is_loopback(str(client[0])):
        return Forbidden("admin endpoints answer loopback callers only (or set QCP_ADMIN_TOKEN)",
                         code="admin_loopback_only")
    host = headers.get("host", "")
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    if host and hostname not in _LOOPBACK_HOSTS and not s.public_url:
        return Forbidden(f"unexpected Host header {hostname!r} for a loopback admin endpoint", code="bad_host")
    tokens = s.client_token_names
    if tokens:
        access = headers.get("x-access-token", "")
        if (bearer and bearer in tokens) or (
            access and (access in tokens or access_tokens.verify(access) is not None)
        ):
            return Forbidden(
                "client tokens do not open the admin endpoints (set QCP_ADMIN_TOKEN for remote admin access)",
                code="admin_forbidden",
            )
    return None


class AdminGuard:
    """ASGI middleware on the ops app: the admin rule for /admin/* and /metrics."""

    def __init__(self, app: Any, settings: Settings, access_tokens: AccessTokens) -> None:
        self.app = app
        self.settings = settings
        self.access_tokens = access_tokens

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        path = scope.get("path", "")
        # With an admin listener (admin_port) /metrics is reachable only there, and open, so that
        # Prometheus can scrape it (metrics carry no secret); /admin/* keep the rule everywhere.
        open_metrics = self.settings.admin_port is not None and path.startswith("/metrics")
        if scope["type"] == "http" and path.startswith(ADMIN_PREFIXES) and not open_metrics:
            err = admin_denied(self.settings, self.access_tokens, scope)
            if err is not None:
                body = err.render("-")
                hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                hdrs += [(k.encode(), v.encode()) for k, v in err.headers.items()]
                await send({"type": "http.response.start", "status": err.status, "headers": hdrs})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def usage_report(po: PhaseOut, since: datetime | None) -> dict[str, Any]:
    rows = await asyncio.to_thread(po.usage.rows) if po.usage is not None else []
    return build_report(rows, po.settings, po.table, since=since, source=po.usage.label if po.usage else "memory")


def mount(ops: FastAPI, po: PhaseOut, access_tokens: AccessTokens) -> None:
    """Add the admin rule and the phase-out endpoints to the ops app."""
    ops.add_middleware(AdminGuard, settings=po.settings, access_tokens=access_tokens)

    if po.metrics is not None:
        metrics = po.metrics

        async def prometheus_metrics() -> Response:
            """Prometheus metrics (text exposition format)."""
            body, ctype = metrics.render()
            return Response(content=body, headers={"content-type": ctype})

        ops.add_api_route("/metrics", prometheus_metrics, methods=["GET"], response_class=Response)

    async def admin_usage(since: str | None = None) -> JSONResponse:
        """The migration report: who still calls which legacy endpoint; what can be switched off.

        `since`: YYYY-MM-DD, ISO date-time or an age like 30d (as `report --since`).
        """
        try:
            cutoff = parse_since(since) if since else None
        except ValueError as exc:
            err = ProxyError(str(exc), code="bad_since", status=400)
            return JSONResponse(err.body("-"), status_code=400)
        try:
            return JSONResponse(await usage_report(po, cutoff))
        except UsageError as exc:  # the database is down: the counts wait in memory meanwhile
            err = ProxyError(str(exc), code="usage_record_unavailable", status=503)
            return JSONResponse(err.body("-"), status_code=503)

    async def admin_policies() -> list[dict[str, Any]]:
        """Each legacy route's effective phase-out policy and dates."""
        return [p.as_dict() for p in po.plans.values()]

    ops.add_api_route("/admin/usage", admin_usage, methods=["GET"])
    ops.add_api_route("/admin/policies", admin_policies, methods=["GET"])

"""The proxy's own endpoints (FastAPI): health, readiness, the route table, and the phase-out admin.

Not on the hot path: `app.ProxyApp` sends only paths under `OPS_PREFIXES` here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from .errors import ProxyError
from .phaseout import admin

if TYPE_CHECKING:
    from .app import ProxyApp

OPS_PREFIXES = ("/healthz", "/readyz", "/metrics", "/admin", "/docs", "/redoc", "/openapi.json")
#: What the main port still serves when the ops endpoints have their own listener (admin_port).
MAIN_PORT_OPS_PREFIXES = ("/healthz", "/readyz")
#: Swagger UI's and ReDoc's scripts and styles, served from the installed package (fastapi-offline),
#: not a CDN: /docs works on a machine without internet access. Under /docs, so the ops app gets it.
DOCS_ASSETS = "/docs/assets"


def build_ops_app(proxy: ProxyApp) -> FastAPI:
    """Health, readiness, route table; then the phase-out admin endpoints (`phaseout/admin.py`)."""
    ops = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="qiskit-classic-proxy",
        description="Classic IBM Quantum REST API -> new Qiskit Runtime REST API. Legacy paths are "
        "served at /, /api and /runtime; see /admin/routes.",
        version="0.1.0",
    )

    @ops.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @ops.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: a valid IAM token is in hand (or can be had now), and the new API answered
        recently (a forward or a cheap probe of GET /v1/versions within `readiness_ttl`)."""
        if proxy.tokens is None:
            await proxy.startup()
        assert proxy.tokens is not None
        if not proxy.tokens.ready:
            try:
                await asyncio.wait_for(proxy.tokens.get(), timeout=proxy.settings.iam_timeout)
            except (ProxyError, asyncio.TimeoutError) as exc:
                reason = exc.message if isinstance(exc, ProxyError) else "IAM did not answer in time"
                return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        problem = await proxy.upstream_problem()
        if problem is not None:
            return JSONResponse({"status": "not_ready", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready", "upstream": proxy.settings.effective_upstream_url})

    @ops.get("/admin/routes")
    async def routes() -> list[dict[str, Any]]:
        """The route table as data."""
        return [
            {"key": r.key, "section": r.section, "action": r.action.kind, "replacement": r.replacement}
            for r in proxy.table.routes
        ]

    admin.mount(ops, proxy.phaseout, proxy.pipeline.access_tokens)
    return ops

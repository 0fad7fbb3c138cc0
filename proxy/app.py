"""The ASGI app: lifecycle (start-up, shutdown), and the split between the two surfaces.

Legacy paths go to the lean hot path (`pipeline.Pipeline`); the proxy's own endpoints (health,
admin, metrics, docs) to a FastAPI app (`ops.build_ops_app`). See ARCHITECTURE.md for the flow.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .classic.routes import RouteTable
from .config import Settings
from .errors import ProxyError
from .intercept import InterceptServer, build_intercept
from .ops import OPS_PREFIXES, build_ops_app
from .phaseout.policy import PhaseOut
from .pipeline import Pipeline
from .upstream.client import Upstream
from .upstream.iam import TokenProvider

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class ProxyApp:
    """ASGI app. Build with `create_app(settings)`; `transport=` swaps the upstream HTTP transport."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        iam_transport: httpx.AsyncBaseTransport | None = None,
        table: RouteTable | None = None,
        phaseout: PhaseOut | None = None,
    ) -> None:
        self.settings = settings
        self.table = table or RouteTable()
        # ConfigError here (bad route policies) stops the app from being built.
        self.phaseout = phaseout or PhaseOut(settings, self.table)
        self.pipeline = Pipeline(settings, self.table, self.phaseout)
        self._transport = transport
        self._iam_transport = iam_transport
        self.ops = build_ops_app(self)
        #: The intercepting forward proxy (#18), started with the app when intercept_port is set.
        self.intercept: InterceptServer | None = None

    @property
    def upstream(self) -> Upstream | None:
        return self.pipeline.upstream

    @property
    def tokens(self) -> TokenProvider | None:
        return self.pipeline.tokens

    # -- lifecycle -----------------------------------------------------------------------------
    async def startup(self) -> None:
        if self.pipeline.upstream is not None:
            return
        s = self.settings
        upstream = Upstream(s, transport=self._transport)
        key = s.api_key.get_secret_value() if s.api_key else ""
        iam_client = None
        if self._iam_transport is not None:
            iam_client = httpx.AsyncClient(transport=self._iam_transport, timeout=s.iam_timeout)
        tokens = TokenProvider(key, s.iam_url, timeout=s.iam_timeout, client=iam_client)
        self.pipeline.upstream, self.pipeline.tokens = upstream, tokens
        if key:
            asyncio.get_running_loop().create_task(self._prefetch())
        await self.phaseout.startup(tokens)
        if s.intercept_port is not None and self.intercept is None:
            self.intercept = build_intercept(s, self, self.pipeline.access_tokens)
            await self.intercept.start()
        # Start-up objects (FastAPI, pydantic, the route table...) never become garbage: move
        # them out of the collector's sight, or each full collection walks them all (a ~40 ms
        # pause every few thousand requests: it was the p99 at 32 connections).
        gc.collect()
        gc.freeze()

    async def _prefetch(self) -> None:
        assert self.tokens is not None
        try:
            await self.tokens.get()
        except ProxyError:
            pass  # logged by the token provider; requests will answer 502/503 meanwhile

    async def shutdown(self) -> None:
        if self.intercept is not None:
            await self.intercept.stop()
        await self.phaseout.shutdown()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(OPS_PREFIXES):
                await self.ops(scope, receive, send)
            else:
                if self.pipeline.upstream is None:
                    await self.startup()
                await self.pipeline.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.pipeline.upstream is None:
            await self.startup()
        await self.pipeline.handle(scope, receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # pragma: no cover - start-up failures are config errors
                    await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, **kw: Any) -> ProxyApp:
    return ProxyApp(settings, **kw)


def app_factory() -> ProxyApp:
    """For `uvicorn --factory` and multi-worker serving: settings come from env/QCP_CONFIG."""
    from .config import load_settings
    from .logs import configure

    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    return create_app(settings)


__all__ = ["ProxyApp", "app_factory", "create_app"]

"""The ASGI app: lifecycle (start-up, shutdown), and the split between the two surfaces.

Legacy paths go to the lean hot path (`pipeline.Pipeline`); the proxy's own endpoints (health,
admin, metrics, docs) to a FastAPI app (`ops.build_ops_app`). See ARCHITECTURE.md for the flow.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .classic.routes import RouteTable
from .config import Settings
from .errors import ProxyError
from .intercept import InterceptServer, build_intercept
from .ops import MAIN_PORT_OPS_PREFIXES, OPS_PREFIXES, build_ops_app
from .phaseout.policy import PhaseOut
from .pipeline import Pipeline
from .upstream import egress
from .upstream.client import Upstream
from .upstream.iam import TokenProvider
from .wire import WireLimits

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
        self._iam_client: httpx.AsyncClient | None = None
        self.ops = build_ops_app(self)
        #: With a separate admin listener (admin_port) the main port keeps only /healthz and /readyz.
        self.ops_prefixes = OPS_PREFIXES if settings.admin_port is None else MAIN_PORT_OPS_PREFIXES
        self._probe_lock = asyncio.Lock()
        #: Limits of the caller-facing server (proxy/wire.py reads them from here).
        metrics = self.phaseout.metrics
        self.wire = WireLimits.from_settings(settings, metrics.refuse if metrics else None)
        self.pipeline.throttle.on_throttle = metrics.refuse if metrics else None
        self.pipeline.submissions.on_outcome = metrics.submission_lookup if metrics else None
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
        if self._iam_transport is not None:
            iam_client = httpx.AsyncClient(transport=self._iam_transport, timeout=s.iam_timeout)
        else:  # through the outbound proxy, with the CA bundle, like the new-API connections
            iam_client = egress.http_client(s, s.iam_url, s.iam_timeout)
        self._iam_client = iam_client
        tokens = TokenProvider(key, s.iam_url, timeout=s.iam_timeout, client=iam_client)
        self.pipeline.upstream, self.pipeline.tokens = upstream, tokens
        if self.phaseout.metrics is not None:
            upstream.on_retry = self.phaseout.metrics.upstream_retries.inc
        if key:
            asyncio.get_running_loop().create_task(self._prefetch())
        await self.phaseout.startup(tokens)
        if self.pipeline.store is not None:
            await self.pipeline.store.start()
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
        if self.pipeline.store is not None:
            await self.pipeline.store.close()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()
        if self._iam_client is not None:
            await self._iam_client.aclose()

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(self.ops_prefixes):
                await self.ops(scope, receive, send)
            else:
                if self.pipeline.upstream is None:
                    await self.startup()
                await self.pipeline.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def admin_app(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The admin listener's ASGI app (`admin_port`): the proxy's own endpoints, nothing legacy.
        Serve it with lifespan off: the main listener's lifespan starts and stops the proxy."""
        if scope["type"] == "http":
            await self.ops(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def upstream_problem(self) -> str | None:
        """For /readyz: None if the new API was reached within `readiness_ttl`, else probe it now.
        A failed connection newer than the last success always means a fresh probe."""
        if self.upstream is None:
            await self.startup()
        up = self.upstream
        assert up is not None
        now = time.monotonic()
        fresh = up.reached_at is not None and now - up.reached_at < self.settings.readiness_ttl
        if fresh and not (up.unreachable and up.unreachable[0] > (up.reached_at or 0)):
            return None
        async with self._probe_lock:  # one probe at a time, however many probes of the probe arrive
            return await up.probe()

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

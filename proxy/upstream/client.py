"""Forwarding to the new API: one pooled httpx client, errors mapped to clear JSON answers.

The transport is swappable (`transport=`): by default `proxy.upstream.transport.NativeTransport`
(asyncio + httptools), or an aiohttp-backed one, httpx's own pool, or `httpx.MockTransport` in
unit tests (see `default_transport` and BENCHMARKS.md). Only GET and HEAD are retried here,
once, after a short random pause, when the connection failed before any answer (most often a
pooled keep-alive connection the server had just closed); never POST, PUT, PATCH or DELETE.
The other replay (after a 401) is decided by the caller, which knows the request never ran.

Answers: `NativeTransport.exchange` gives an `UpstreamResponse` (the few operations of
`httpx.Response` the pipeline uses, built from the parser's header pairs: an httpx.Response and
its Headers cost about as much as the exchange itself); the other transports give
`httpx.Response`s. `read`, `raw_chunks`, `whole_body` and `response_headers` take either.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import httpx

from ..config import Settings
from ..errors import OutcomeUnknown, Overloaded, ProxyError, UpstreamError, UpstreamTimeout
from . import egress
from .response import Response, ResponseHeaders, UpstreamResponse

__all__ = [
    "Response",
    "ResponseHeaders",
    "Upstream",
    "UpstreamResponse",
    "raw_chunks",
    "read",
    "response_headers",
    "whole_body",
]

#: RFC 9110 §7.6.1 connection-specific headers, plus ones we never pass either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
RESPONSE_DROP = HOP_BY_HOP | {"set-cookie", "server", "date"}
#: Methods retried once when the connection fails before any answer (RFC 9110 §9.2.2 idempotent,
#: and without side effects worth a second thought).
RETRY_METHODS = frozenset({"GET", "HEAD"})
#: Failures before any answer: nothing was answered, so a GET may go again.
_RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)


def default_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """The upstream HTTP transport named by the `transport` setting (see BENCHMARKS.md), with the
    outbound proxy and TLS trust of `egress` for the new API's origin."""
    proxy = egress.proxy_for(settings, settings.effective_upstream_url)
    ctx = egress.ssl_context(settings)
    if settings.transport == "httpx":
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            # Below uvicorn's and most servers' 5 s idle timeout: a pooled connection the server
            # already closed would make a POST's outcome ambiguous.
            keepalive_expiry=4.0,
        )
        return httpx.AsyncHTTPTransport(
            limits=limits, retries=0, verify=ctx, proxy=proxy.httpx_proxy() if proxy else None
        )
    from .transport import AiohttpTransport, NativeTransport

    if settings.transport == "aiohttp":
        return AiohttpTransport(max_connections=settings.max_connections, keepalive_expiry=4.0, ssl=ctx, proxy=proxy)
    return NativeTransport(max_connections=settings.max_connections, keepalive_expiry=4.0, ssl_context=ctx, proxy=proxy)


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that stays empty: a shared client must never carry one caller's cookies to another."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def extract_cookies(self, response: object, request: object) -> None:  # type: ignore[override]
        return None


async def _raise(exc: Exception) -> AsyncIterator[bytes]:
    raise exc
    yield b""  # pragma: no cover - makes this an async generator


def response_headers(headers: httpx.Headers | ResponseHeaders, drop_length: bool = False) -> list[tuple[bytes, bytes]]:
    """Upstream headers minus hop-by-hop ones, including any named in Connection; names lower-cased.

    From `ResponseHeaders` (the native transport's) this is one filter over the parser's pairs:
    the names are lower-cased and the Connection header read while parsing."""
    drop = _DROP_WITH_LENGTH if drop_length else _DROP
    if type(headers) is ResponseHeaders:
        named = headers.named
        if named:
            drop = drop | named
        return [p for p in headers.raw if p[0] not in drop]
    pairs = [(k.lower(), v) for k, v in headers.raw]
    for k, v in pairs:
        if k == b"connection":
            drop = drop | {t.strip().lower() for t in v.split(b",")}
    return [p for p in pairs if p[0] not in drop]


async def read(resp: Response) -> bytes:
    """`await resp.aread()`, the same bytes and the same end state (read, closed, connection back
    in the pool), without httpx's three nested async generators and two context managers per
    answer when the transport's stream can read its body whole (`NativeTransport`) and there is
    no content coding to undo. Anything else goes through `aread`."""
    if type(resp) is UpstreamResponse:
        return await resp.aread()  # already without generators
    read_all = getattr(resp.stream, "read_all", None)
    if read_all is None or resp.is_stream_consumed or resp.is_closed or hasattr(resp, "_content"):
        return await resp.aread()
    for k, _ in resp.headers.raw:
        if k.lower() == b"content-encoding":
            return await resp.aread()
    resp.is_stream_consumed = True
    data: bytes = await read_all()
    resp._content = data
    await resp.aclose()
    return data


def whole_body(resp: Response) -> bytes | None:
    """The raw body, without awaiting, when the transport has all of it already (NativeTransport,
    a small answer): what iterating `raw_chunks` would give, joined. None: iterate `raw_chunks`.
    Consumes the stream when it answers; the caller closes `resp`."""
    if type(resp) is not UpstreamResponse or resp.consumed or resp._content is not None or resp.stream.released:
        return None
    body: bytes | None = resp.stream.whole()
    if body is not None:
        resp.consumed = True
    return body


def raw_chunks(resp: Response) -> AsyncIterable[bytes]:
    """`resp.aiter_raw()` without httpx's wrapping generator, when the transport's stream is
    `NativeTransport`'s (it yields what it received, as aiter_raw would). The caller closes `resp`."""
    if type(resp) is UpstreamResponse:
        if resp.consumed or resp._content is not None:
            return _raise(httpx.StreamConsumed())
        if resp.stream.released:
            return _raise(httpx.StreamClosed())
        resp.consumed = True
        return resp.stream  # type: ignore[no-any-return]
    stream = resp.stream
    if getattr(stream, "read_all", None) is None or resp.is_stream_consumed or resp.is_closed:
        return resp.aiter_raw()
    resp.is_stream_consumed = True
    return stream  # type: ignore[return-value]


_DROP = frozenset(h.encode() for h in RESPONSE_DROP)
_DROP_WITH_LENGTH = _DROP | {b"content-length", b"content-encoding"}


class Upstream:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = settings.effective_upstream_url.rstrip("/")
        self._host = httpx.URL(self.base).host
        default = httpx.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.write_timeout,
            pool=settings.pool_timeout,
        )
        self.timeouts: dict[str, httpx.Timeout] = {
            "default": default,
            "submit": httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.submit_timeout,
                write=settings.write_timeout,
                pool=settings.pool_timeout,
            ),
            # /readyz's probe: never longer than a readiness check can wait.
            "probe": httpx.Timeout(
                connect=settings.connect_timeout, read=min(settings.read_timeout, 5.0), write=5.0,
                pool=settings.pool_timeout,
            ),
        }
        self.transport = transport or default_transport(settings)
        #: Kept for its lifecycle (aclose closes the transport) and for ad-hoc callers; the hot
        #: path below hands requests straight to the transport: the client's auth, redirect,
        #: cookie and event-hook machinery would cost more than the forwarding itself.
        self.client = httpx.AsyncClient(
            transport=self.transport,
            timeout=default,
            trust_env=False,
            follow_redirects=False,
            cookies=httpx.Cookies(_NoCookies()),
        )
        self._extensions = {name: {"timeout": t.as_dict()} for name, t in self.timeouts.items()}
        self._timeout_dicts = {name: ext["timeout"] for name, ext in self._extensions.items()}
        self._send_fast = getattr(self.transport, "send_fast", None)
        #: NativeTransport's hot path: the base URL is parsed once (`base`), answers are
        #: `UpstreamResponse`s. Resolved on the first request, where a bad URL maps as before.
        self._exchange = getattr(self.transport, "exchange", None)
        self._base_handle: Any = None
        #: GET/HEAD retries made (and a metrics hook, set by the app).
        self.retries = 0
        self.on_retry: Callable[[], None] | None = None
        #: For /readyz: when an answer last came back (monotonic), and the last failure to connect.
        self.reached_at: float | None = None
        self.unreachable: tuple[float, str] | None = None

    async def probe(self) -> str | None:
        """A cheap GET /v1/versions through the same transport and egress: None if the new API
        answered (any status), else why not."""
        try:
            resp = await self.open(
                "GET", "/v1/versions", b"", [("accept", "application/json")], None,
                timeout="probe", request_id="readiness-probe",
            )
        except ProxyError as exc:
            return exc.message
        await resp.aclose()
        return None

    @property
    def host(self) -> str:
        return self._host

    async def open(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        timeout: Literal["default", "submit", "probe"] = "default",
        creates: bool = False,
        request_id: str = "",
    ) -> Response:
        """Send and return the response with its body still unread (stream it or read it).

        `body` is bytes or an async iterator of bytes (streamed; pass its Content-Length in
        `headers`). No client-level defaults are added: `headers` is what goes upstream (plus Host).
        The answer is an `UpstreamResponse` from NativeTransport, else an `httpx.Response`.
        """
        if body is not None and not isinstance(body, bytes) and hasattr(body, "stream"):
            # A replayable spooled body (proxy.classic.bodystream.SpooledBody): a fresh stream per send.
            headers = [*headers, ("content-length", str(body.size))]
            body = body.stream()
        target = path + "?" + query.decode("latin-1") if query else path
        timeouts = self._timeout_dicts[timeout]
        try:
            try:
                resp = await self._send(method, target, headers, body, timeouts)
            except _RETRYABLE:
                if method not in RETRY_METHODS:
                    raise
                self.retries += 1
                if self.on_retry is not None:
                    self.on_retry()
                await asyncio.sleep(random.uniform(0.01, 0.1))  # jitter: not in step with other callers
                resp = await self._send(method, target, headers, body, timeouts)
            self.reached_at = time.monotonic()
            return resp
        except (httpx.ProxyError, httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            self.unreachable = (time.monotonic(), type(exc).__name__)
            where = f"{self.host} ({method} {path}, request {request_id})"
            raise self._error(exc, where, request_id, creates) from None
        except httpx.HTTPError as exc:
            where = f"{self.host} ({method} {path}, request {request_id})"
            raise self._error(exc, where, request_id, creates) from None

    @staticmethod
    def _error(exc: httpx.HTTPError, where: str, request_id: str, creates: bool) -> ProxyError:
        """The httpx exception -> the proxy's answer (502/503/504), with what is known of the outcome."""
        if isinstance(exc, httpx.PoolTimeout):
            return Overloaded(
                f"too many requests in flight to the upstream; retry shortly (request {request_id})",
                headers={"retry-after": "1"},
            )
        if isinstance(exc, httpx.ProxyError):
            # The outbound proxy refused the tunnel (407, 403, 502...): nothing reached the new API.
            return UpstreamError(f"new API unreachable: {exc}: {where}")
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamTimeout(f"connecting to the new API timed out: {where}")
        if isinstance(exc, (httpx.ConnectError, httpx.WriteError, httpx.WriteTimeout, httpx.UnsupportedProtocol)):
            # The request did not get through whole: nothing ran upstream, a retry is safe.
            return UpstreamError(f"new API unreachable ({type(exc).__name__}): {where}")
        if isinstance(exc, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)):
            if creates:
                return OutcomeUnknown(
                    f"the new API received the request but gave no answer ({type(exc).__name__}): "
                    f"{where}. It may have been created: list your jobs/sessions before resubmitting."
                )
            if isinstance(exc, httpx.ReadTimeout):
                return UpstreamTimeout(f"the new API did not answer in time: {where}")
            return UpstreamError(f"the new API dropped the connection ({type(exc).__name__}): {where}")
        return UpstreamError(f"upstream request failed ({type(exc).__name__}): {where}")

    def _send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: object, timeouts: dict
    ) -> Awaitable[Response]:
        """The transport's awaitable for one exchange (no coroutine of its own on the hot path)."""
        exchange = self._exchange
        if exchange is not None:
            base = self._base_handle
            if base is None:
                base = self._base_handle = self.transport.base(self.base)  # type: ignore[attr-defined]
            return exchange(method, base, target, headers, body, timeouts)  # type: ignore[no-any-return]
        if self._send_fast is not None:
            return self._send_fast(method, self.base + target, headers, body, timeouts)  # type: ignore[no-any-return]
        ext = {"timeout": timeouts}
        request = httpx.Request(method, self.base + target, headers=headers, content=body, extensions=ext)  # type: ignore[arg-type]
        return self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.client.aclose()

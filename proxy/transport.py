"""An httpx transport backed by aiohttp: httpx stays the client API, aiohttp moves the bytes.

Why: httpx's own pool (httpcore) loses throughput as concurrency rises (encode/httpx#3215: an
anyio lock and a readability poll on every pool operation); under 32 concurrent callers it served
a fraction of what aiohttp does on the same machine (numbers in BENCHMARKS.md). Plugging aiohttp
in as an `httpx.AsyncBaseTransport` keeps every caller, timeout and exception of the httpx API.

What it guarantees, like httpx's default transport configured by `proxy.upstream`:
- no cookie jar (`aiohttp.DummyCookieJar`), no redirects, no proxies from the environment, no
  automatic decompression (bytes pass through as the upstream sent them);
- request bodies may be bytes or async iterators (streamed, with the caller's Content-Length);
- responses stream (`httpx.AsyncByteStream`); closing one before its end closes the connection,
  so an abandoned download never stays open upstream nor returns a dirty connection to the pool;
- aiohttp errors become the httpx exceptions `proxy.upstream` maps to answers:
  connect failure -> ConnectError, connect timeout -> ConnectTimeout, read timeout ->
  ReadTimeout, server disconnect / truncated body -> RemoteProtocolError, other socket errors
  -> ReadError, no free connection within the pool timeout -> PoolTimeout.

httpx's `write` timeout has no aiohttp equivalent and is not enforced by this transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

_ConnectionTimeout: type[BaseException] = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError)
_SocketTimeout: type[BaseException] = getattr(aiohttp, "SocketTimeoutError", aiohttp.ServerTimeoutError)


def _map_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    """One aiohttp (or asyncio) exception -> the httpx exception with the same meaning."""
    msg = str(exc) or type(exc).__name__
    err: httpx.TransportError
    if isinstance(exc, _ConnectionTimeout):
        err = httpx.ConnectTimeout(msg)
    elif isinstance(exc, asyncio.TimeoutError):  # sock_read: no byte from the upstream in time
        err = httpx.ReadTimeout(msg)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        err = httpx.ConnectError(msg)
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        err = httpx.RemoteProtocolError(msg)
    elif isinstance(exc, aiohttp.InvalidURL):
        err = httpx.UnsupportedProtocol(msg)
    elif isinstance(exc, (aiohttp.ClientOSError, ConnectionError, OSError)):
        err = httpx.ReadError(msg)
    else:
        err = httpx.RemoteProtocolError(msg)
    if request is not None:
        err.request = request
    return err


class _Slot:
    """A held pool permit, released exactly once."""

    __slots__ = ("_sem", "held")

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem = sem
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._sem.release()


class _ResponseStream(httpx.AsyncByteStream):
    __slots__ = ("_request", "_resp", "_slot")

    def __init__(self, resp: aiohttp.ClientResponse, slot: _Slot, request: httpx.Request | None) -> None:
        self._resp = resp
        self._slot = slot
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise _map_error(exc, self._request) from exc

    async def aclose(self) -> None:
        resp = self._resp
        try:
            if resp.content.at_eof() and not resp.content.exception():
                resp.release()  # whole body read: the connection goes back to the pool
            else:
                resp.close()  # abandoned mid-body: drop the connection, never reuse it
        finally:
            self._slot.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=AiohttpTransport(...))`: see the module docstring.

    `max_connections` bounds the requests in flight (one connection each, HTTP/1.1); a request
    that waits longer than httpx's `pool` timeout for one raises `httpx.PoolTimeout`.
    `keepalive_expiry` closes idle pooled connections (keep it below the upstream's idle timeout).
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 4.0,
        read_bufsize: int = 64 * 1024,
        ssl: Any = True,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._read_bufsize = read_bufsize
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # the semaphore below is the limit: it tells a pool timeout from a connect one
            keepalive_timeout=self._keepalive,
            ssl=self._ssl,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=self._read_bufsize,
            skip_auto_headers=("User-Agent",),
        )
        # aiohttp quietly resends idempotent requests when a pooled connection drops; the proxy
        # never retries (a resent DELETE would turn a success into a 404), so switch it off.
        self._session._retry_connection = False
        self._sem = asyncio.Semaphore(self._max_connections)
        return self._session

    def _timeout(self, t: dict[str, Any]) -> aiohttp.ClientTimeout:
        key = (t.get("connect"), t.get("read"))
        tm = self._timeouts.get(key)
        if tm is None:
            tm = self._timeouts[key] = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
        return tm

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        data: Any = request.content if isinstance(stream, httpx.ByteStream) else stream
        return await self.send_fast(
            request.method,
            str(request.url),
            request.headers.multi_items(),
            data,
            request.extensions.get("timeout") or {},
            request,
        )

    async def send_fast(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        timeouts: dict[str, float | None],
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """`handle_async_request` without building an `httpx.Request` first.

        `proxy.upstream` calls this on its hot path: an httpx.Request costs ~25 µs of URL parsing
        and header normalization per call, which aiohttp then does again anyway. `headers` go out
        as given (aiohttp adds Host, and Content-Length for bytes); `timeouts` is httpx's
        `Timeout.as_dict()`.
        """
        session = self._session or self._open_session()
        sem = self._sem
        assert sem is not None
        if sem.locked():
            try:
                await asyncio.wait_for(sem.acquire(), timeouts.get("pool"))
            except asyncio.TimeoutError:
                err = httpx.PoolTimeout("no upstream connection free within the pool timeout")
                if request is not None:
                    err.request = request
                raise err from None
        else:
            await sem.acquire()
        slot = _Slot(sem)
        try:
            resp = await session.request(
                method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(timeouts),
                compress=None,
                chunked=None,
                expect100=False,
                raise_for_status=False,
            )
        except BaseException as exc:
            slot.release()
            if isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError)):
                raise _map_error(exc, request) from exc
            raise
        return httpx.Response(
            resp.status,
            headers=resp.raw_headers,
            stream=_ResponseStream(resp, slot, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (resp.reason or "").encode("latin-1", "replace")},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

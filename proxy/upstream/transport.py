"""Upstream HTTP transports for httpx: httpx stays the client API, these move the bytes.

Why not httpx's own pool: httpcore loses throughput as concurrency rises (encode/httpx#3215: an
anyio lock and a readability poll on every pool operation). Two replacements, both plugged in as
`httpx.AsyncBaseTransport` so that every caller, timeout and exception stays httpx's:

- `NativeTransport` (the default, see `proxy.upstream.client.default_transport`): HTTP/1.1 on asyncio
  protocols, responses parsed by httptools (llhttp, the parser uvicorn already uses). It does per
  request only what a proxy needs, about a fifth of aiohttp's CPU per request on loopback.
- `AiohttpTransport`: aiohttp's client underneath; the well-trodden alternative
  (`QCP_TRANSPORT=aiohttp`).

Both guarantee, like httpx's default transport as `proxy.upstream.client` configures it:
- no cookie jar, no redirects, no proxies from the environment (the outbound proxy is given
  explicitly, see `proxy.upstream.egress`: CONNECT tunnels for https), no automatic decompression
  (bytes pass through as the upstream sent them), no retries;
- request bodies may be bytes or async iterators (streamed, with the caller's Content-Length);
- responses stream (`httpx.AsyncByteStream`) with flow control; closing one before its end closes
  the connection, so an abandoned download never stays open upstream nor returns a dirty
  connection to the pool;
- errors become the httpx exceptions `proxy.upstream.client` maps to answers: connect failure ->
  ConnectError, connect timeout -> ConnectTimeout, read timeout -> ReadTimeout, server
  disconnect / truncated or invalid answer -> RemoteProtocolError, other socket errors ->
  ReadError, no free connection within the pool timeout -> PoolTimeout.

`send_fast(method, url, headers, body, timeouts)` is `handle_async_request` without building an
`httpx.Request` first (~25 µs of URL parsing and header normalization that the transport would
redo anyway). NativeTransport's `exchange(method, base(url), target, ...)` goes further for
`proxy.upstream.client`'s hot path: the base URL parsed once, header names checked once, one
read timer per connection rather than per wait, and the answer an `UpstreamResponse` (see
`proxy.upstream.response`) instead of an `httpx.Response`. httpx's `write` timeout is enforced by
NativeTransport only (aiohttp has no equivalent).

Why one long module: both transports honour the same httpx contract (listed above) and share
its error mapping; `exchange` is long because the hot path must not pay extra calls per request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools
import httpx

from .egress import ProxyURL
from .response import ResponseHeaders, UpstreamResponse

__all__ = ["AiohttpTransport", "NativeTransport"]

_ConnectionTimeout: type[BaseException] = getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError)
_SocketTimeout: type[BaseException] = getattr(aiohttp, "SocketTimeoutError", aiohttp.ServerTimeoutError)


def _map_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    """One aiohttp (or asyncio) exception -> the httpx exception with the same meaning."""
    msg = str(exc) or type(exc).__name__
    err: httpx.TransportError
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # the outbound proxy refused CONNECT (407, 403...)
        err = httpx.ProxyError(f"the outbound proxy answered {exc.status} {exc.message} to CONNECT")
    elif isinstance(exc, _ConnectionTimeout):
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
    """`httpx.AsyncClient(transport=AiohttpTransport(...))`: aiohttp underneath (module docstring).

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
        proxy: ProxyURL | None = None,
    ) -> None:
        self._proxy = proxy.url if proxy else None
        auth = proxy.authorization if proxy else None
        self._proxy_headers = {"Proxy-Authorization": auth} if auth else None
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

        `proxy.upstream.client` calls this on its hot path: an httpx.Request costs ~25 µs of URL parsing
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
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
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


# ------------------------------------------------------------------------------------------------
# NativeTransport: asyncio protocol + httptools, for the proxy's hot path
# ------------------------------------------------------------------------------------------------

#: Response bytes buffered per connection before the socket stops being read (flow control).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_HOP_BY_HOP_REQUEST = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"})
#: A read timer that fires this close to its wait's deadline expires it (no re-arm for less).
_CLOCK_SLACK = 0.001
#: Response headers the parser notes while it reads them (framing, coding, Connection-named).
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"connection"})


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: writes a request, parses the answer with httptools (llhttp).

    Read timeouts: one timer per connection, armed lazily. `expect()` notes when a wait began;
    the timer, when it fires, fails the pending wait if it has lasted `timeout` seconds, else
    re-arms itself for that wait's deadline (so a busy connection pays no timer per request).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.active = False
        self.key: tuple[str, str, int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.wait_started = 0.0
        self.wait_timeout: float | None = None
        self.wait_what = ""
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.headers_done = False
        self.interim = False
        self.complete = False
        self.until_eof = False
        self.head_only = False
        self.keep_alive = False
        self.delimited = False  # Content-Length or chunked framing seen
        self.coded = False  # Content-Encoding seen
        self.named: frozenset[bytes] | None = None  # names listed in Connection
        self.error: httpx.TransportError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response from the upstream: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active and not self.complete and self.error is None:
            if self.headers_done and self.until_eof and exc is None:
                self.complete = True  # a body delimited by the end of the connection
            elif exc is not None:
                self.error = httpx.ReadError(f"upstream connection lost: {exc!r}")
            else:
                what = "the rest of the body" if self.headers_done else "an answer"
                self.error = httpx.RemoteProtocolError(f"the upstream closed the connection without sending {what}")
        self._wake()
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        d = self.drain_waiter
        if d is not None and not d.done():
            d.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()  # once, here: framing, relaying and look-ups all compare lower-case names
        self.headers.append((name, value))
        if name in _FRAMING:
            if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
                self.delimited = True
            elif name == b"content-encoding":
                self.coded = True
            elif name == b"connection":
                tokens = frozenset(t.strip().lower() for t in value.split(b","))
                self.named = tokens if self.named is None else self.named | tokens

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim answer (100 Continue, 103 Early Hints): wait for the real one
            self.interim = True
            self.headers = []
            self.reason = b""
            self.delimited = self.coded = False
            self.named = None
            return
        self.status = status
        self.headers_done = True
        self.until_eof = not (self.delimited or status in (204, 304) or self.head_only)
        if self.head_only:
            self.complete = True  # no body follows a HEAD answer; the connection is not reused
        if self.waiter is not None:  # (the callbacks test before calling _wake: most find none)
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        if self.waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive() and not self.head_only
        if self.waiter is not None:
            self._wake()

    # -- helpers ---------------------------------------------------------------------------------
    def _fail(self, err: httpx.TransportError) -> None:
        if self.error is None:
            self.error = err
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def expect(self, timeout: float | None, what: str) -> asyncio.Future[None]:
        """A future done when the parser makes progress (or the connection ends); it fails with
        ReadTimeout if none comes within `timeout` seconds. Await it at once."""
        loop = self.loop
        w = self.waiter = loop.create_future()
        self.wait_timeout = timeout
        if timeout is not None:
            self.wait_what = what
            now = self.wait_started = loop.time()
            timer = self.timer
            if timer is None:
                self.timer = loop.call_at(now + timeout, self._on_timer)
            elif timer.when() > now + timeout:  # armed for a longer wait: this one ends sooner
                timer.cancel()
                self.timer = loop.call_at(now + timeout, self._on_timer)
        return w

    def _on_timer(self) -> None:
        self.timer = None
        w = self.waiter
        timeout = self.wait_timeout
        if w is None or w.done() or timeout is None or self.closed:
            return  # no wait pending: disarmed until the next one
        deadline = self.wait_started + timeout
        if self.loop.time() + _CLOCK_SLACK >= deadline:  # uvloop's clock ticks in milliseconds
            self.waiter = None
            w.set_exception(httpx.ReadTimeout(f"no {self.wait_what} from the upstream in time"))
        else:
            self.timer = self.loop.call_at(deadline, self._on_timer)

    async def drain(self, timeout: float | None) -> None:
        if not self.write_paused or self.closed:
            return
        d = self.drain_waiter = self.loop.create_future()
        try:
            await asyncio.wait_for(d, timeout)
        except asyncio.TimeoutError:
            raise httpx.WriteTimeout("the upstream did not take the request body in time") from None
        finally:
            self.drain_waiter = None

    def take_body(self) -> bytes:
        chunks = self.chunks
        chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


class _Origin:
    __slots__ = ("extra_head", "host", "host_header", "key", "port", "server_hostname", "ssl", "target_prefix", "via")

    def __init__(self, scheme: str, host: str, port: int | None, ssl: Any, via: ProxyURL | None = None) -> None:
        default = 443 if scheme == "https" else 80
        self.port = port or default
        self.host = host
        self.host_header = host if self.port == default else f"{host}:{self.port}"
        if ":" in host:  # IPv6 literal
            self.host_header = f"[{host}]" if self.port == default else f"[{host}]:{self.port}"
        self.ssl = ssl if scheme == "https" else None
        self.server_hostname = host if scheme == "https" else None
        self.key = (scheme, host, self.port)
        #: The outbound proxy: https goes through a CONNECT tunnel, http as absolute-form requests.
        self.via = via
        self.target_prefix = ""
        self.extra_head = ""
        if via is not None and scheme == "http":
            self.target_prefix = f"http://{self.host_header}"
            if via.authorization:
                self.extra_head = f"proxy-authorization: {via.authorization}\r\n"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _ConnectReply(asyncio.Protocol):
    """Reads the outbound proxy's answer to CONNECT; after a 200 the socket carries TLS to the origin."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.buf = bytearray()
        self.done: asyncio.Future[tuple[int, str, bool]] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 16384:
                self.done.set_exception(httpx.ProxyError("the outbound proxy's answer to CONNECT is too long"))
            return
        line = bytes(self.buf[: self.buf.find(b"\r\n")]).decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self.done.set_exception(httpx.ProxyError("the outbound proxy answered CONNECT with no HTTP status line"))
            return
        self.done.set_result((int(parts[1]), parts[2] if len(parts) > 2 else "", end + 4 < len(self.buf)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(httpx.ProxyError("the outbound proxy closed the connection during CONNECT"))


class _NativeStream(httpx.AsyncByteStream):
    """The body of one answer on its connection; `release()` frees both (see UpstreamResponse)."""

    __slots__ = ("_conn", "_pool", "_read_timeout", "released")

    def __init__(self, pool: NativeTransport, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._read_timeout = read_timeout
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take_body()
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return
            await conn.expect(self._read_timeout, "body bytes")

    async def read_all(self) -> bytes:
        """The whole body, as iterating and joining would give it, without an async generator."""
        conn = self._conn
        parts: list[bytes] = []
        while True:
            if conn.chunks:
                parts.append(conn.take_body())
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await conn.expect(self._read_timeout, "body bytes")

    def whole(self) -> bytes | None:
        """The rest of the body if all of it has arrived already (most small answers), else None."""
        conn = self._conn
        if conn.complete and conn.error is None:
            chunks = conn.chunks
            if not chunks:
                return b""
            if len(chunks) == 1 and not conn.read_paused:
                conn.buffered = 0
                return chunks.popleft()
            return conn.take_body()
        return None

    def release(self) -> None:
        """Give the connection back (whole body read, reusable) or close it; free the pool slot. Once."""
        if self.released:
            return
        self.released = True
        conn = self._conn
        conn.active = False
        pool = self._pool
        try:
            if conn.complete and conn.keep_alive and conn.error is None and not conn.closed and not conn.chunks:
                if pool._closed:
                    conn.close()
                else:  # back to the pool, the most recently used last
                    conn.reset()
                    conn.idle_since = conn.loop.time()
                    assert conn.key is not None
                    idle = pool._idle.get(conn.key)
                    if idle is None:
                        pool._idle[conn.key] = [conn]
                    else:
                        idle.append(conn)
            else:
                conn.close()  # abandoned mid-body or not reusable: never hand it to another request
        finally:
            pool._permits.release()  # type: ignore[union-attr]

    async def aclose(self) -> None:
        self.release()


class _Permits:
    """At most `free` exchanges in flight: a counter while one is free (no lock, no coroutine);
    past that, waiters in arrival order, each handed a released permit directly."""

    __slots__ = ("free", "waiters")

    def __init__(self, n: int) -> None:
        self.free = n
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Until a permit is handed over; PoolTimeout after `timeout` seconds."""
        w = loop.create_future()
        self.waiters.append(w)
        timer = loop.call_later(timeout, _pool_timeout, w) if timeout is not None else None
        try:
            await w
        except BaseException:
            if w.done() and not w.cancelled() and w.exception() is None:
                self.release()  # handed a permit, then cancelled: pass it on
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                return
        self.free += 1


def _pool_timeout(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_exception(httpx.PoolTimeout("no upstream connection free within the pool timeout"))


class _Base:
    """A base URL resolved once (`NativeTransport.base`): its origin, the request-target prefix
    (its path; absolute-form through a plain-http proxy), and the request line's constant tail."""

    __slots__ = ("origin", "prefix", "tail")

    def __init__(self, origin: _Origin, path: str) -> None:
        self.origin = origin
        self.prefix = origin.target_prefix + path
        self.tail = f" HTTP/1.1\r\nhost: {origin.host_header}\r\n{origin.extra_head}"


class NativeTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio protocols with httptools' parser (llhttp, as in uvicorn and Node.js).

    The proxy's default upstream transport: per request it costs a fraction of the CPU of aiohttp
    (see BENCHMARKS.md), which on a 2-core machine is the proxy's throughput. Same guarantees as
    `AiohttpTransport` (no cookies, redirects, env proxies or decompression; bodies stream both
    ways with flow control; an abandoned response closes its connection; httpx exceptions; pool
    timeout), plus httpx's `write` timeout. It never retries: a request whose pooled connection
    turns out dead fails with RemoteProtocolError/ReadError, and the proxy decides.
    HTTP/1.1 only (the new API and IAM speak it; HTTP/2 brings nothing to a local proxy).

    `exchange(method, base(url), target, ...)` is the hot path (`proxy.upstream.client.Upstream`):
    the base URL parsed once, the answer an `UpstreamResponse`. `send_fast` and
    `handle_async_request` answer with `httpx.Response`s over the same exchange.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 4.0,
        ssl_context: Any = None,
        proxy: ProxyURL | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._ssl = ssl_context
        self._proxy = proxy
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._bases: dict[str, _Base] = {}
        #: Request header name -> 0 (send), 1 (content-length: send, and the caller framed the body),
        #: 2 (hop-by-hop: never sent); names are checked once, the first time they are seen.
        self._header_kinds: dict[str, int] = {}
        self._permits: _Permits | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- pool ------------------------------------------------------------------------------------
    def base(self, url: str) -> _Base:
        """`url` ("scheme://host[:port][/path]") parsed and checked once; requests add their target."""
        hit = self._bases.get(url)
        if hit is not None:
            return hit
        sep = url.find("://")
        slash = url.find("/", sep + 3) if sep > 0 else -1
        prefix = url if slash < 0 else url[:slash]
        path = "" if slash < 0 else url[slash:]
        u = urlsplit(prefix)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise httpx.UnsupportedProtocol(f"unsupported URL {prefix!r}: http(s) only")
        if "\r" in path or "\n" in path or " " in path or "\0" in path:
            raise httpx.UnsupportedProtocol("invalid characters in the request target")
        ssl = None
        if u.scheme == "https":
            ssl = self._ssl = self._ssl or httpx.create_ssl_context()
        hit = _Base(_Origin(u.scheme, u.hostname, u.port, ssl, self._proxy), path)
        if len(self._bases) < 64:
            self._bases[url] = hit
        return hit

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        loop = self._loop
        assert loop is not None
        via = origin.via
        try:
            if via is None:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(loop),
                        origin.host,
                        origin.port,
                        ssl=origin.ssl,
                        server_hostname=origin.server_hostname,
                    ),
                    timeout,
                )
            elif origin.ssl is None:  # plain http through the proxy: absolute-form requests to it
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(loop), via.host, via.port), timeout
                )
            else:
                conn = await asyncio.wait_for(self._tunnel(loop, origin, via), timeout)
        except asyncio.TimeoutError:
            where = f" through the outbound proxy {via.display}" if via else ""
            raise httpx.ConnectTimeout(f"connecting to {origin.host}:{origin.port}{where} timed out") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (ssl.SSLError)
            where = f" through the outbound proxy {via.display}" if via else ""
            raise httpx.ConnectError(f"cannot connect to {origin.host}:{origin.port}{where}: {exc}") from None
        conn.key = origin.key
        return conn

    async def _tunnel(self, loop: asyncio.AbstractEventLoop, origin: _Origin, via: ProxyURL) -> _Connection:
        """CONNECT origin through the outbound proxy, then TLS to the origin inside the tunnel."""
        reply = _ConnectReply(loop)
        transport, _ = await loop.create_connection(lambda: reply, via.host, via.port)
        try:
            auth = f"proxy-authorization: {via.authorization}\r\n" if via.authorization else ""
            transport.write(
                f"CONNECT {origin.authority} HTTP/1.1\r\nhost: {origin.authority}\r\n{auth}\r\n".encode("latin-1")
            )
            status, reason, extra = await reply.done
            if status != 200:
                raise httpx.ProxyError(
                    f"the outbound proxy {via.display} answered {status} {reason.strip()} to CONNECT {origin.authority}"
                )
            if extra:
                raise httpx.ProxyError(f"the outbound proxy {via.display} sent bytes before the tunnel's TLS")
            conn = _Connection(loop)
            tls = await loop.start_tls(transport, conn, origin.ssl, server_hostname=origin.server_hostname)
            if tls is None:
                raise httpx.ConnectError(f"TLS to {origin.authority} through {via.display} did not start")
            conn.connection_made(tls)
            return conn
        except BaseException:
            transport.close()
            raise

    # -- requests ----------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        data: Any = request.content if isinstance(stream, httpx.ByteStream) else stream
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
        try:
            return await self.send_fast(
                request.method, str(request.url), headers, data, request.extensions.get("timeout") or {}
            )
        except httpx.TransportError as exc:
            exc.request = request
            raise

    async def send_fast(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        timeouts: dict[str, float | None],
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """Send one request; the answer comes back as an `httpx.Response` with its body unread (a stream).

        `headers` go out as given (Host is added; Content-Length for bytes; chunked framing for
        an iterator without a Content-Length). `timeouts` is httpx's `Timeout.as_dict()`.
        """
        sep = url.find("://")
        slash = url.find("/", sep + 3) if sep > 0 else -1
        r = await self.exchange(
            method, self.base(url if slash < 0 else url[:slash]), "/" if slash < 0 else url[slash:],
            headers, body, timeouts,
        )
        stream = r.stream
        return httpx.Response(
            r.status_code,
            headers=r.headers.raw,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": stream._conn.reason},
            request=request,
        )

    async def exchange(
        self,
        method: str,
        base: _Base,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        timeouts: dict[str, float | None],
    ) -> UpstreamResponse:
        """Send one request to `base` (from `base(url)`) + `target` (path and query); the answer
        comes back with its body unread. Otherwise as `send_fast`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._permits = _Permits(self._max_connections)
        if "\r" in target or "\n" in target or " " in target or "\0" in target:
            raise httpx.UnsupportedProtocol("invalid characters in the request target")
        head = [f"{method} {base.prefix}{target}{base.tail}" if target or base.prefix else f"{method} /{base.tail}"]
        kinds = self._header_kinds
        has_length = False
        for k, v in headers:
            kind = kinds.get(k)
            if kind is None:
                kind = self._header_kind(k)
            if "\n" in v or "\r" in v:
                raise httpx.LocalProtocolError(f"invalid header {k!r}")
            if kind:
                if kind == 2:
                    continue
                has_length = True
            head.append(f"{k}: {v}\r\n")
        chunked = False
        if isinstance(body, (bytes, bytearray, memoryview)):
            if not has_length and (body or method in ("POST", "PUT", "PATCH")):
                head.append(f"content-length: {len(body)}\r\n")
        elif body is not None:
            if not has_length:
                chunked = True
                head.append("transfer-encoding: chunked\r\n")
        elif method in ("POST", "PUT", "PATCH") and not has_length:
            head.append("content-length: 0\r\n")
        head.append("\r\n")
        try:
            head_bytes = "".join(head).encode("latin-1")
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError("request line or headers are not latin-1") from None

        permits = self._permits
        assert permits is not None
        if permits.free > 0:
            permits.free -= 1
        else:
            await permits.wait(loop, timeouts.get("pool"))
        conn: _Connection | None = None
        try:
            origin = base.origin
            idle = self._idle.get(origin.key)
            if idle:
                now = loop.time()
                while idle:
                    c = idle.pop()  # the most recently used: its socket is the least likely to be stale
                    if not c.closed and now - c.idle_since < self._keepalive:
                        conn = c
                        break
                    c.close()
            if conn is None:
                conn = await self._connect(origin, timeouts.get("connect"))
            conn.active = True
            conn.head_only = method == "HEAD"
            transport = conn.transport
            assert transport is not None
            if isinstance(body, (bytes, bytearray, memoryview)) and body:
                if len(body) <= 65536:
                    transport.write(head_bytes + bytes(body))  # one write, one syscall
                else:
                    transport.write(head_bytes)
                    transport.write(body)  # no copy of a large body
                    await conn.drain(timeouts.get("write"))
            else:
                transport.write(head_bytes)
                if body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
                    await self._send_body(conn, body, chunked, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.expect(read_timeout, "answer")
        except BaseException:
            if conn is not None:
                conn.active = False
                conn.close()
            permits.release()
            raise
        return UpstreamResponse(
            conn.status, ResponseHeaders(conn.headers, conn.named, conn.coded), _NativeStream(self, conn, read_timeout)
        )

    def _header_kind(self, name: str) -> int:
        """Check a request header name (once per name) and say what it is (see `_header_kinds`)."""
        if "\n" in name or "\r" in name or ":" in name:
            raise httpx.LocalProtocolError(f"invalid header {name!r}")
        low = name.lower()
        kind = 2 if low in _HOP_BY_HOP_REQUEST else 1 if low == "content-length" else 0
        if len(self._header_kinds) < 256:
            self._header_kinds[name] = kind
        return kind

    async def _send_body(
        self, conn: _Connection, body: AsyncIterable[bytes], chunked: bool, timeout: float | None
    ) -> None:
        transport = conn.transport
        assert transport is not None
        async for chunk in body:
            if conn.closed or conn.error is not None:
                # The upstream hung up (or answered early and closed): stop sending.
                if conn.headers_done:
                    return
                raise httpx.WriteError("the upstream closed the connection while the request body was sent")
            if not chunk:
                continue
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if conn.write_paused:
                await conn.drain(timeout)
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

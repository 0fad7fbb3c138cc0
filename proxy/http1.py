"""The caller-facing HTTP/1.1 server: an asyncio protocol on httptools' parser, an ASGI server to the app.

Why hand-written and not uvicorn's `HttpToolsProtocol` (0.55): the hot path. A cached `GET
/jobs/{id}` cost the proxy ~320 µs of CPU and a locally answered 410 ~120 µs (`bench/cpu.py`, one
worker), and py-spy put uvicorn's per-request inbound machinery at ~15 % of the first and far more
of the second: scope building spread over several callbacks, two regex searches per response
header, a status line and head built from many small pieces, a keep-alive timer cancelled and
re-armed on every request, an `asyncio.Event` and a closure per request. This protocol does the
same work once: one scope dict per request, the response head joined once from header lines
whose names are checked once per process (a bounded cache; the proxy's names are few) and whose
values get one C-level control-character check for the whole head (CR/LF/NUL still refused, as
uvicorn refuses them), one timer per connection that is re-armed only when it fires, and the
ASGI task made with `loop.create_task`. It also writes a response's head and first body part in
one `write` (one syscall, one TCP segment; on loopback each write costs the sender the whole
kernel send path). See `bench/cpu.py` and the commit that added it for the numbers.

uvicorn's `Server` drives it exactly like its own protocols (`http=` class, same constructor):
it registers in `server_state.connections`, its tasks in `server_state.tasks`, counts
`server_state.total_requests` (`limit_max_requests`), answers 503 above `limit_concurrency`,
honours `timeout_keep_alive`, sends `server_state.default_headers` (date, server) first, and
`shutdown()` lets an in-flight response finish and then closes. Behaviour callers rely on is
uvicorn's: keep-alive, pipelining (answered in order), `Expect: 100-continue`, chunked and
Content-Length request bodies, HEAD, flow control both ways (reading pauses while 64 KiB of
body wait for the app; `send` waits while the transport's buffer is full), `http.disconnect`
from `receive()` once the caller hung up or the response is complete, a plain 500 if the app
raises before it starts a response and a close if after, `connection: close`, HTTP/1.0, a
WebSocket upgrade handed to uvicorn's `ws` protocol when one is installed (else the request is
served as plain HTTP with uvicorn's warning), `root_path`, `client`/`server`, `raw_path`,
`query_string` and a copy of the lifespan `state` in the scope. uvicorn's access log is written
only if its logger has handlers (the proxy turns it off and writes its own).

The edge limits (`Limits`, given by the subclass in `proxy/wire.py`): the bytes of an unfinished
head are counted *before* the parser buffers more (431 past `max_header_bytes`), more than
`max_header_count` fields is 431, a Transfer-Encoding other than plain `chunked` is 400, a head
not complete `header_timeout` s after the connection opened (or after the first byte of the next
keep-alive request) closes it, and above `max_client_connections` open connections the answer is
503 with Retry-After. A request httptools refuses (smuggling shapes) is a JSON 400.

Why one long module: the protocol and its per-request cycle share state on the hot path (the
parser callbacks fill the cycle, the cycle's send drives the connection's timer, pipeline and
flow control); split, every step would cross a module boundary for no reader's benefit.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import logging
import re
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.utils import get_client_addr, get_local_addr, get_path_with_query_string, get_remote_addr, is_ssl

#: uvicorn's checks for a header the app sends (the name must be a token; no control characters
#: but tab in the value), used once per new name and when the whole-head check finds something.
HEADER_RE = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
HEADER_VALUE_RE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL = bytes(range(32)) + b"\x7f"  # every byte a head may hold only as its own CRLFs (or a tab)


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}

#: Response header name -> its lowercased `name: ` prefix, checked once (bounded: names are few).
_PREFIXES: dict[bytes, bytes] = {}
_PREFIXES_MAX = 2048
_CONTENT_LENGTH = b"content-length: "
_TRANSFER_ENCODING = b"transfer-encoding: "
_CONNECTION = b"connection: "
_SPECIAL = frozenset((_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION))
#: Request header names the protocol looks at while the head is parsed.
_WATCHED = frozenset((b"expect", b"transfer-encoding", b"upgrade"))
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
_DISCONNECT = "http.disconnect"
#: Body parts up to this size are copied behind the head (one write); a larger one is written after it.
JOIN_LIMIT = 64 * 1024


def _prefix(name: bytes) -> bytes:
    """`name: ` lowercased for a response header name, refusing what uvicorn refuses."""
    if HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    prefix = name.lower() + b": "
    if len(_PREFIXES) < _PREFIXES_MAX:
        _PREFIXES[name] = prefix
    return prefix


def _check_values(headers: Any) -> None:
    """The per-header checks, for a head whose whole-head check found a control byte (a tab is fine)."""
    for name, value in headers:
        if HEADER_RE.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header value.")


class Limits:
    """What `Http1Protocol` needs of its limits (`proxy.wire.WireLimits` is the real one)."""

    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0
    max_client_connections: int = 1000

    def count(self, reason: str) -> None:
        """A refusal happened (the real limits count it)."""


def _plain_error_body(status: int, code: str, message: str) -> bytes:
    return message.encode()


class Http1Protocol(asyncio.Protocol):
    """One caller connection: parses requests with httptools and runs each as an ASGI `http` call."""

    #: The limits for a uvicorn config, and the body of a refusal (overridden in `proxy/wire.py`).
    limits_for: Callable[[Any], Any] = staticmethod(lambda config: Limits())
    error_body: Callable[[int, str, str], bytes] = staticmethod(_plain_error_body)
    error_content_type = b"text/plain; charset=utf-8"

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop: asyncio.AbstractEventLoop = _loop or asyncio.get_event_loop()
        self.logger = logging.getLogger("uvicorn.error")
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        try:  # answer the first of pipelined requests even if a later one asks to close
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # pragma: no cover  (httptools < 0.6.3)
            pass
        self.limits = self.limits_for(config)
        self.ws_protocol_class = config.ws_protocol_class
        self.root_path: str = config.root_path
        self.raw_root_path = config.root_path.encode("ascii")
        self.asgi_version = config.asgi_version
        self.limit_concurrency = config.limit_concurrency
        self.timeout_keep_alive: float = config.timeout_keep_alive
        self.reset_contextvars = bool(getattr(config, "reset_contextvars", False))
        self.app_state = app_state
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks

        # Per connection
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.pipeline: deque[tuple[Cycle, Any]] = deque()
        self.cycle: Cycle | None = None  # the newest request (the one the parser fills)
        self.running: Cycle | None = None  # the request whose app runs
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Event | None = None
        self._default_src: Any = None  # server_state.default_headers, as last seen
        self._default_head = b""  # ...as validated head lines
        self._default_lines = 0
        # One timer: it fires at or before the earliest deadline and re-arms itself.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_deadline: float | None = None  # header_timeout for the head being read
        self._idle_deadline: float | None = None  # timeout_keep_alive while idle
        self._head_pending = True  # waiting for (the rest of) a request head
        self._head_fed = 0  # bytes received since the head started

        # Per request, while its head is parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._expect_100 = False
        self._te: list[bytes] | None = None
        self._upgrade_header = False
        self._upgrading = False
        self._method = "GET"

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connections.add(self)
        self.transport = transport
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        if is_ssl(transport):
            self.scheme = "https"
        self._head_deadline = deadline = self.loop.time() + self.limits.header_timeout
        self._arm(deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for cycle in (self.running, self.cycle):
            if cycle is not None:
                if not cycle.response_complete:
                    cycle.disconnected = True
                cycle.wake()
        self.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass

    def shutdown(self) -> None:
        """The server stops: close an idle connection; let a running response finish, then close."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    # -- flow control ------------------------------------------------------------------------
    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            if self._writable is None:
                self._writable = asyncio.Event()
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._writable is not None:
                self._writable.set()

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # -- the one timer: header timeout and keep-alive ------------------------------------------
    def _arm(self, deadline: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._timer_at <= deadline:
                return  # it fires first and re-arms for this deadline then
            timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        head, idle = self._head_deadline, self._idle_deadline
        if head is not None and now >= head and self._head_pending:
            self.limits.count("header_timeout")
            self.transport.close()  # like nginx's client_header_timeout: no answer, just close
            return
        if idle is not None and now >= idle:
            self.transport.close()  # keep-alive expired
            return
        soonest = min(d for d in (head, idle, float("inf")) if d is not None)
        if soonest != float("inf"):
            # No sooner than needed, no later than a head that may start now could need.
            self._arm(min(soonest, now + self.limits.header_timeout))

    # -- bytes in ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._head_pending:
            self._head_fed += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self._refuse_raw(400, "malformed_request", "malformed HTTP request (Invalid HTTP request received)")
            return
        except httptools.HttpParserUpgrade:
            if self._upgrading:
                self._handle_websocket_upgrade()
                return
            self.logger.warning("Unsupported upgrade request.")
            if self.ws_protocol_class is None:
                self.logger.warning(
                    "No supported WebSocket library detected. Please use \"pip install 'uvicorn[standard]'\", "
                    "or install 'websockets' or 'wsproto' manually."
                )
        if self._head_pending and self._head_fed > self.limits.max_header_bytes and not self.transport.is_closing():
            # Still no end of the head: refuse now, before the parser buffers any more of it.
            self._refuse_raw(431, "header_too_large", self._too_large_message())

    def _too_large_message(self) -> str:
        return f"request header over {self.limits.max_header_bytes} bytes (QCP_MAX_HEADER_BYTES)"

    def _refuse_raw(self, status: int, code: str, message: str) -> None:
        """An answer on the wire, without the app (the head is not parsed, or not parseable), then close."""
        self.limits.count(code)
        body = self.error_body(status, code, message)
        head = b"%scontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (STATUS_LINE[status], self.error_content_type, len(body)) + body)
        self.transport.close()

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self._head_size = 0
        self._expect_100 = False
        self._te = None
        self._upgrade_header = False
        self._head_pending = True
        self._idle_deadline = None
        if self._head_deadline is None:
            self._head_deadline = deadline = self.loop.time() + self.limits.header_timeout
            self._arm(deadline)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        name = name.lower()
        # llhttp keeps trailing OWS, which RFC 9110 section 5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name in _WATCHED:
            if name == b"expect":
                self._expect_100 = self._expect_100 or value.lower() == b"100-continue"
            elif name == b"transfer-encoding":
                self._te = [*(self._te or ()), value]
            else:
                self._upgrade_header = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_fed = 0
        self._head_deadline = None
        parser = self.parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        http_version = parser.get_http_version()
        lim = self.limits
        refusal = None
        if (
            self._head_size > lim.max_header_bytes
            or len(self.headers) > lim.max_header_count
            or self._te is not None
            or len(self.connections) > lim.max_client_connections
        ):
            refusal = self._refusal()
        if refusal is None and self._upgrade_header and parser.should_upgrade() and self._websocket_wanted():
            self._method = method
            self._upgrading = True  # data_received hands the connection over
            return
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            raw_path, _, query = url.partition(b"?")
        else:  # absolute-form, a fragment, '*': httptools' parser
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        if self.root_path:
            path = self.root_path + path
            raw_path = self.raw_root_path + raw_path
        scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": http_version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": self.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        app = self.app if refusal is None else refusal
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        cycle = Cycle(self, scope, keep_alive, self._expect_100)
        previous, self.cycle = self.cycle, cycle
        if previous is None or previous.response_complete:
            self._start(cycle, app)
        else:  # pipelined: answered in order, after the one running
            self.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def _refusal(self) -> Any:
        """An ASGI app answering the limit this head breaks, or None."""
        lim = self.limits
        te = self._te
        if self._head_size > lim.max_header_bytes:
            status, code, message, extra = 431, "header_too_large", self._too_large_message(), ()
        elif len(self.headers) > lim.max_header_count:
            msg = f"more than {lim.max_header_count} header fields (QCP_MAX_HEADER_COUNT)"
            status, code, message, extra = 431, "too_many_headers", msg, ()
        elif te is not None and (len(te) > 1 or te[0].strip().lower() != b"chunked"):
            msg = "only 'Transfer-Encoding: chunked' is accepted"
            status, code, message, extra = 400, "bad_transfer_encoding", msg, ()
        elif len(self.connections) > lim.max_client_connections:
            msg = f"more than {lim.max_client_connections} open connections (QCP_MAX_CLIENT_CONNECTIONS); retry shortly"
            status, code, message, extra = 503, "too_many_connections", msg, ((b"retry-after", b"1"),)
        else:
            return None
        lim.count(code)
        return _refusing_app(status, self.error_body(status, code, message), self.error_content_type, extra)

    def _start(self, cycle: Cycle, app: Any) -> None:
        self.running = cycle
        if self.reset_contextvars:  # uvicorn's opt-in workaround for cpython#140947
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        cycle.task = task  # it leaves server_state.tasks when run_asgi ends (no done-callback per request)
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or self._upgrading or cycle.response_complete:
            return
        held = cycle.body
        if not held:
            cycle.body = held = body
        else:
            if type(held) is bytes:
                cycle.body = held = bytearray(held)
            held += body
        if len(held) > HIGH_WATER_LIMIT:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        # What follows is the next request's head (not this one's body: a pipelined request's
        # body, read after the response before it, is not a head to count).
        self._head_pending = True
        self._head_fed = 0
        cycle = self.cycle
        if cycle is None or self._upgrading or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.wake()

    def on_response_complete(self) -> None:
        """The running request's response is complete: start the next pipelined one, or go idle."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start(cycle, app)
        else:
            self.running = None
            now = self.loop.time()
            self._idle_deadline = now + self.timeout_keep_alive
            # Armed no later than a head starting now would need: the next request re-arms nothing.
            self._arm(min(self._idle_deadline, now + self.limits.header_timeout))

    # -- response heads ------------------------------------------------------------------------
    def refresh_default_head(self) -> None:
        """server_state.default_headers (date, server; uvicorn swaps the list each second) as head lines."""
        src = self.server_state.default_headers
        _check_values(src)
        self._default_head = b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in src)
        self._default_lines = len(src)
        self._default_src = src

    # -- websocket hand-over (uvicorn's) ---------------------------------------------------------
    def _websocket_wanted(self) -> bool:
        if self.ws_protocol_class is None:
            return False
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.lower()
        return b"upgrade" in connection and upgrade == b"websocket"

    def _handle_websocket_upgrade(self) -> None:
        self.connections.discard(self)
        output = [self._method.encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        protocol = self.ws_protocol_class(config=self.config, server_state=self.server_state, app_state=self.app_state)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(b"".join(output))


def _refusing_app(status: int, body: bytes, content_type: bytes, extra: tuple[tuple[bytes, bytes], ...]) -> Any:
    headers = [
        (b"content-type", content_type),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
        *extra,
    ]

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


class Cycle:
    """One request and its response: the ASGI `receive` and `send` of one call."""

    __slots__ = (
        "_event",
        "_flush_handle",
        "_head",
        "_report",
        "_waiters",
        "body",
        "chunked",
        "disconnected",
        "expected_length",
        "is_head",
        "keep_alive",
        "more_body",
        "proto",
        "response_complete",
        "response_started",
        "scope",
        "task",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(self, proto: Http1Protocol, scope: dict[str, Any], keep_alive: bool, expect_100: bool) -> None:
        self.proto = proto
        self.scope = scope
        self.transport = proto.transport
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100
        self.is_head = scope["method"] == "HEAD"
        self.disconnected = False
        self.body: bytes | bytearray = b""
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked: bool | None = None
        self.expected_length = 0
        self._event = False  # something for receive(): body, the end of it, a hang-up, the response done
        self._waiters: list[asyncio.Future[None]] | None = None
        self._head: bytes | None = None  # a response head waiting for its first body part
        self._flush_handle: asyncio.Handle | None = None
        self._report = True  # tell the protocol when the response is complete
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._event = True
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- running the app ---------------------------------------------------------------------
    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self.proto.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.close()
        else:
            if result is not None:
                self.proto.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.close()
            elif not self.response_started and not self.disconnected:
                self.proto.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.proto.logger.error("ASGI callable returned without completing response.")
                self.close()
        finally:
            self._report = False
            self.proto.tasks.discard(self.task)

    async def send_500_response(self) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"21"),
            (b"connection", b"close"),
        ]
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    def flush(self) -> None:
        """Write a head still waiting for its body (the app awaits something else first)."""
        head = self._head
        if head is not None:
            self._head = None
            if not self.transport.is_closing():
                self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    # -- ASGI interface ------------------------------------------------------------------------
    async def send(self, message: Any) -> None:
        proto = self.proto
        if proto.write_paused and not self.disconnected:
            await proto.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self.response_started = True
            self.waiting_for_100_continue = False
            self._head = self._response_head(message["status"], message.get("headers", ()))
            self._flush_handle = proto.loop.call_soon(self.flush)
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.is_head:
            self.expected_length = 0
            data = b""
        elif self.chunked:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            size = len(body)
            if size > self.expected_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_length -= size
            data = body
        head = self._head
        transport = self.transport
        if head is not None:
            self._head = None
            self._flush_handle.cancel()  # type: ignore[union-attr]
            if len(data) <= JOIN_LIMIT:
                data = head + data
            else:
                transport.write(head)
        if data:
            transport.write(data)
        if not more_body:
            if self.expected_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                transport.close()
            if self._report:
                proto.on_response_complete()

    def _response_head(self, status: int, headers: Any) -> bytes:
        """Status line, default headers, the app's headers (names lowercased), framing: one join."""
        proto = self.proto
        if proto.server_state.default_headers is not proto._default_src:
            proto.refresh_default_head()
        parts = [STATUS_LINE[status], proto._default_head]
        prefixes = _PREFIXES
        close_sent = False
        for name, value in headers:
            prefix = prefixes.get(name) or _prefix(name)
            if prefix in _SPECIAL:
                if prefix == _CONTENT_LENGTH:
                    if self.chunked is None:
                        self.expected_length = int(value)
                        self.chunked = False
                elif prefix == _TRANSFER_ENCODING:
                    if value.lower() == b"chunked":
                        self.expected_length = 0
                        self.chunked = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    close_sent = True
            parts += (prefix, value, b"\r\n")
        count = len(parts) - 2  # 3 parts per header of the app's
        if not self.keep_alive and not close_sent:
            parts.append(b"connection: close\r\n")
        if self.chunked is None and not self.is_head and status != 204 and status != 304:
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        # The only control bytes a head may hold are its own CRLFs: one per line here, the status
        # line's and the default headers' (checked when they changed), the app's, the extra lines.
        crlfs = 1 + proto._default_lines + count // 3 + len(parts) - 2 - count
        if len(head) - len(head.translate(None, _CONTROL)) != 2 * crlfs:
            for value in parts[3 : 2 + count : 3]:  # a tab is allowed; anything else is uvicorn's error
                if HEADER_VALUE_RE.search(value):
                    raise RuntimeError("Invalid HTTP header value.")
        if proto.access_log:
            scope = self.scope
            proto.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),  # type: ignore[arg-type]
                scope["method"],
                get_path_with_query_string(scope),  # type: ignore[arg-type]
                scope["http_version"],
                status,
            )
        return head

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.proto.resume_reading()
            if not self._event:
                fut = self.proto.loop.create_future()
                if self._waiters is None:
                    self._waiters = [fut]
                else:
                    self._waiters.append(fut)
                await fut
            self._event = False
        if self.disconnected or self.response_complete:
            return {"type": _DISCONNECT}
        body = self.body
        self.body = b""
        if type(body) is not bytes:
            body = bytes(body)
        return {"type": "http.request", "body": body, "more_body": self.more_body}


__all__ = ["STATUS_LINE", "Cycle", "Http1Protocol", "Limits"]

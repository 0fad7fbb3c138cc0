"""The caller-facing wire: uvicorn's httptools protocol with the limits an edge proxy has.

uvicorn (0.55) has `limit_concurrency` (a plain-text 503) and `timeout_keep_alive`, but no limit
on the request head and no header read timeout: httptools buffers a header of any size, and a
client trickling one header line a second holds its connection forever (slowloris). Like nginx
(`large_client_header_buffers`, `client_header_timeout`) and Envoy (`max_request_headers_kb`,
`max_headers_count`, `request_headers_timeout`) this protocol:

- counts the bytes of an unfinished head *before* the parser buffers more, and answers 431 as
  soon as it passes `max_header_bytes` (so 40 callers with 8 MB headers cost 40 x 32 KiB);
- answers 431 for more than `max_header_count` fields, and 400 for a Transfer-Encoding other
  than plain `chunked` (stricter proxies refuse `identity, chunked` and friends);
- closes a connection whose head is not complete `header_timeout` s after it opened (or after
  the first byte of the next keep-alive request);
- answers 503 with Retry-After above `max_client_connections` open connections.

It also writes a response's head and its first body part in one `write` (one syscall, one TCP
segment) instead of two (`_HeadWithBody`): on loopback each write costs the sender the whole
kernel send path, so for a small answer this is a tenth of the proxy's CPU per request.

Refusals are JSON in the proxy's error shape and counted (`WireLimits.refused`, and the
`qcp_refused` metric). The app names its limits with a `wire` attribute (`proxy.app.ProxyApp`);
any other app gets the defaults.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Settings
from .errors import MORE_INFO


@dataclass
class WireLimits:
    """Limits of one server and what they refused (reason -> count)."""

    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0
    max_client_connections: int = 1000
    refused: Counter[str] = field(default_factory=Counter)
    on_refuse: Callable[[str], None] | None = None

    @classmethod
    def from_settings(cls, s: Settings, on_refuse: Callable[[str], None] | None = None) -> WireLimits:
        return cls(
            s.max_header_bytes, s.max_header_count, s.header_timeout, s.max_client_connections, on_refuse=on_refuse
        )

    def count(self, reason: str) -> None:
        self.refused[reason] += 1
        if self.on_refuse is not None:
            self.on_refuse(reason)


def error_body(status: int, code: str, message: str) -> bytes:
    """The proxy's JSON error shape (`proxy.errors.ProxyError.body`), for answers given on the wire."""
    err = {"code": code, "message": message, "more_info": MORE_INFO}
    doc = {"errors": [err], "status_code": status, "error": {"code": code, "message": message, "status": status}}
    return json.dumps(doc, separators=(",", ":")).encode()


def _refusing_app(status: int, code: str, message: str, headers: dict[str, str]) -> Any:
    body = error_body(status, code, message)

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        hdrs = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        hdrs += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    return app


class _HeadWithBody:
    """One request's view of its connection: the response head waits for the first body part and
    they go out in one write. uvicorn's cycle writes the head (on http.response.start) and each
    body part separately; what it writes, and in what order, does not change.

    The head is recognised as the first write after the cycle marked its response started (a
    100 Continue is written before that, and passes). If no body part follows in the same loop
    turn (a streamed answer waiting for the upstream, a HEAD), the head goes out on its own at
    the next turn: a caller never waits longer for the head than before.
    """

    __slots__ = ("_cycle", "_head", "_loop", "_timer", "_waiting", "transport")

    #: Body parts up to this size are copied behind the head; a larger one is written after it.
    JOIN_LIMIT = 64 * 1024

    def __init__(self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._cycle = cycle
        self._loop = loop
        self._head: bytes | None = None
        self._timer: asyncio.Handle | None = None
        self._waiting = True  # the head is not written yet

    def write(self, data: bytes) -> None:
        if self._waiting and self._cycle.response_started:
            self._waiting = False
            self._head = data
            self._timer = self._loop.call_soon(self.flush)
            return
        head = self._head
        if head is not None:
            self._head = None
            if self._timer is not None:
                self._timer.cancel()
            if len(data) <= self.JOIN_LIMIT:
                data = head + data
            else:
                self.transport.write(head)
        self.transport.write(data)

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self.transport.is_closing():
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # anything else a cycle might ask of its transport
        return getattr(self.transport, name)


def _limits_of(config: Any) -> WireLimits:
    """The served app's `wire` limits (through uvicorn's middleware wrappers), cached on the config."""
    limits = getattr(config, "_qcp_wire", None)
    if limits is None:
        app = config.loaded_app
        for _ in range(8):
            if isinstance(getattr(app, "wire", None), WireLimits):
                limits = app.wire
                break
            app = getattr(app, "app", None)
        limits = limits or WireLimits()
        config._qcp_wire = limits
    return limits


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head size/count limits, a header timeout and a connection cap."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = _limits_of(config)
        self._head_pending = True  # waiting for (the rest of) a request head
        self._head_fed = 0  # bytes received since the head started
        self._head_size = 0  # request target + header fields, as parsed
        self._refusal: tuple[int, str, str, dict[str, str]] | None = None
        self._header_timer: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._head_pending and not self.transport.is_closing():
            self.limits.count("header_timeout")
            self.transport.close()  # like nginx's client_header_timeout: no answer, just close

    # -- bytes in ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._head_pending:
            self._head_fed += len(data)
        super().data_received(data)
        if self._head_pending and self._head_fed > self.limits.max_header_bytes and not self.transport.is_closing():
            # Still no end of the head: refuse now, before the parser buffers any more of it.
            self._refuse_raw(431, "header_too_large", self._too_large_message())

    def send_400_response(self, msg: str) -> None:
        """httptools refused the request (smuggling: CL+TE, duplicate Content-Length, bad chunk
        sizes, obs-fold, bare LF...): the proxy's JSON error instead of uvicorn's plain text."""
        self._refuse_raw(400, "malformed_request", f"malformed HTTP request ({msg.rstrip('.')})")

    def _too_large_message(self) -> str:
        return f"request header over {self.limits.max_header_bytes} bytes (QCP_MAX_HEADER_BYTES)"

    def _refuse_raw(self, status: int, code: str, message: str) -> None:
        self.limits.count(code)
        body = error_body(status, code, message)
        phrase = b"Request Header Fields Too Large" if status == 431 else b"Bad Request"
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, phrase, len(body)) + body)
        self.transport.close()

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._head_size = 0
        self._refusal = None
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._cancel_header_timer()
        lim = self.limits
        te = [v for k, v in self.headers if k == b"transfer-encoding"]
        if self._head_size > lim.max_header_bytes:
            self._refusal = (431, "header_too_large", self._too_large_message(), {})
        elif len(self.headers) > lim.max_header_count:
            msg = f"more than {lim.max_header_count} header fields (QCP_MAX_HEADER_COUNT)"
            self._refusal = (431, "too_many_headers", msg, {})
        elif te and (len(te) > 1 or te[0].strip().lower() != b"chunked"):
            self._refusal = (400, "bad_transfer_encoding", "only 'Transfer-Encoding: chunked' is accepted", {})
        elif len(self.connections) > lim.max_client_connections:
            msg = f"more than {lim.max_client_connections} open connections (QCP_MAX_CLIENT_CONNECTIONS); retry shortly"
            self._refusal = (503, "too_many_connections", msg, {"retry-after": "1"})
        if self._refusal is None:
            cycle = self.cycle
            super().on_headers_complete()
            self._coalesce(cycle)
            return
        status, code, message, headers = self._refusal
        lim.count(code)
        app, self.app = self.app, _refusing_app(status, code, message, headers)
        try:
            super().on_headers_complete()  # uvicorn's own cycle sends it, then closes (connection: close)
        finally:
            self.app = app

    def _coalesce(self, previous: Any) -> None:
        """Give the cycle uvicorn just made (not yet running) a head-with-body view of the transport."""
        cycle = self.cycle
        if cycle is not None and cycle is not previous and cycle.transport is self.transport:
            cycle.transport = _HeadWithBody(self.transport, cycle, self.loop)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_pending = True
        self._head_fed = 0


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keywords for the caller-facing server (serve, demo, tests)."""
    return {"http": LimitedHttpToolsProtocol, "timeout_keep_alive": settings.keepalive_timeout}


__all__ = ["LimitedHttpToolsProtocol", "WireLimits", "error_body", "server_options"]

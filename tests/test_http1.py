"""The proxy's own HTTP/1.1 protocol (proxy/http1.py) on real uvicorn servers, over raw sockets.

Small ASGI apps stand in for the proxy so each behaviour is seen on its own; where uvicorn's own
httptools protocol is the reference, the same bytes go to both servers and the answers are compared.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from proxy.serving import BackgroundServer
from proxy.wire import CallerProtocol

App = Callable[..., Any]


@contextmanager
def serving(app: App, **config: Any) -> Iterator[BackgroundServer]:
    config.setdefault("lifespan", "off")
    server = BackgroundServer(app, http=config.pop("http", CallerProtocol), access_log=False, **config).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def conn(server: BackgroundServer, timeout: float = 10.0) -> Iterator[socket.socket]:
    s = socket.create_connection((server.host, server.port), timeout=timeout)
    try:
        yield s
    finally:
        s.close()


class Reader:
    """Reads whole HTTP/1.1 answers off a socket, keeping what follows for the next one."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.buf = b""

    def _more(self) -> bool:
        chunk = self.s.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def head(self) -> tuple[int, list[tuple[str, str]]]:
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise AssertionError(f"closed before a head: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        return int(lines[0].split()[1]), headers

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise AssertionError(f"closed after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise AssertionError("closed in a chunk size line")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def answer(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, pairs = self.head()
        headers = dict(pairs)
        if status == 100:
            return self.answer(head_request)
        if head_request or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self.line(), 16):
                body += self.exactly(size)
                self.exactly(2)
            self.exactly(2)
            return status, headers, body
        return status, headers, self.exactly(int(headers.get("content-length", "0")))

    def closed(self) -> bool:
        """True once the server closed the connection (and sent nothing more)."""
        try:
            return not self.buf and self.s.recv(1) == b""
        except ConnectionResetError:
            return True


def until(cond: Callable[[], bool], what: str, tries: int = 500) -> None:
    """Poll (bounded: 10 s) until `cond()`; fail naming `what`."""
    for _ in range(tries):
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def echo(scope: dict, receive: Callable, send: Callable) -> None:
    """Answers the request's method, path and body as JSON (the body read through receive())."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    doc = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(),
        "root_path": scope["root_path"],
        "http_version": scope["http_version"],
        "body": body.decode("latin-1"),
    }
    out = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with serving(echo) as server, conn(server) as s:
        r = Reader(s)
        for i in range(5):
            s.sendall(get(f"/n/{i}?q={i}"))
            status, headers, body = r.answer()
            assert status == 200 and "connection" not in headers
            assert json.loads(body)["path"] == f"/n/{i}" and json.loads(body)["query"] == f"q={i}"
        state = server.server.server_state
        until(lambda: state.total_requests == 5, "5 requests counted")  # counted just after the write
        assert len(state.connections) == 1


def test_pipelined_requests_are_answered_in_order() -> None:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["path"] == "/slow":
            await asyncio.sleep(0.2)  # the later requests are parsed meanwhile; they must wait their turn
        await echo(scope, receive, send)

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/slow") + get("/a") + b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz" + get("/c"))
        r = Reader(s)
        answers = [json.loads(r.answer()[2]) for _ in range(4)]
    assert [a["path"] for a in answers] == ["/slow", "/a", "/b", "/c"]
    assert answers[2]["body"] == "xyz"


def test_pipelined_body_is_not_counted_as_a_head() -> None:
    """Regression: the body of a request pipelined behind a slow one, read once the slow one was
    answered, was counted as head bytes and refused with a 431 past max_header_bytes (32 KiB)."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["path"] == "/slow":  # never calls receive(): reading stays paused while it runs
            await asyncio.sleep(0.2)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await echo(scope, receive, send)

    body = b"b" * 600_000  # more than one read
    with serving(app) as server, conn(server) as s:
        s.sendall(get("/slow") + b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.1)  # the POST's head is parsed while /slow runs; its body comes after
        s.sendall(body)
        r = Reader(s)
        first, second = r.answer(), r.answer()
    assert first[0] == 200 and second[0] == 200, second
    assert json.loads(second[2])["body"] == body.decode()


def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    with serving(echo) as server, conn(server) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = Reader(s)
        status, _ = r.head()  # the client waits for this before it sends the body
        assert status == 100
        s.sendall(b"hello")
        status, _, body = r.answer()
    assert status == 200 and json.loads(body)["body"] == "hello"


def test_chunked_request_body_reaches_the_app_whole() -> None:
    with serving(echo) as server, conn(server) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        s.sendall(b"6\r\n world\r\n0\r\n\r\n")
        status, _, body = Reader(s).answer()
    assert status == 200 and json.loads(body)["body"] == "hello world"


def test_large_request_body_pauses_reading_and_arrives_whole() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: more than the 64 KiB read-ahead

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        size, parts = 0, 0
        while True:
            msg = await receive()
            size += len(msg["body"])
            parts += 1
            await asyncio.sleep(0)
            if not msg["more_body"]:
                break
        out = b"%d %d" % (size, parts)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(out))]})
        await send({"type": "http.response.body", "body": out})

    with serving(app) as server, conn(server) as s:
        s.sendall(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
        status, _, body = Reader(s).answer()
    assert status == 200 and int(body.split()[0]) == len(data) and int(body.split()[1]) > 1


def test_head_answers_headers_only() -> None:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b"hello world"})

    with serving(app) as server, conn(server) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get("/"))
        r = Reader(s)
        status, headers, _ = r.answer(head_request=True)
        assert status == 200 and headers["content-length"] == "11"
        # Had the body been written after the HEAD answer, it would be read as the next status line.
        status, _, body = r.answer()
    assert status == 200 and body == b"hello world"


def test_hang_up_mid_request_gives_the_app_http_disconnect() -> None:
    seen: list[str] = []
    done = threading.Event()

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            seen.append(msg["type"])
            if msg["type"] == "http.disconnect" or not msg.get("more_body"):
                break
        done.set()

    with serving(app) as server:
        with conn(server) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
            until(lambda: seen == ["http.request"], "the app read the first part")
        assert done.wait(10), seen
    assert seen == ["http.request", "http.disconnect"]


def test_receive_after_the_response_says_disconnect() -> None:
    got: list[str] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        got.append((await receive())["type"])  # returns at once: the response is complete

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        assert Reader(s).answer()[0] == 204
        until(lambda: bool(got), "the app's last receive returned")
    assert got == ["http.disconnect"]


def test_app_raising_before_start_is_a_plain_500_without_traceback() -> None:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        raise ValueError("secret detail")

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        r = Reader(s)
        status, headers, body = r.answer()
        assert r.closed()
    assert status == 500 and body == b"Internal Server Error" and headers["connection"] == "close"
    assert b"secret" not in body and b"Traceback" not in body


def test_app_raising_after_start_closes_the_connection() -> None:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        raise ValueError("boom")

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        r = Reader(s)
        status, headers = r.head()
        assert status == 200 and ("content-length", "10") in headers
        assert r.exactly(5) == b"12345"
        assert r.closed()  # not the other 5 bytes: the caller sees a truncated answer, never a hang


@pytest.mark.parametrize("as_iterator", [False, True], ids=["list", "generator"])
def test_invalid_header_from_the_app_is_refused_not_sent(as_iterator: bool) -> None:
    """As uvicorn: send() raises, the app fails after it started its answer, the connection closes
    (headers given as a list, or as an iterator the protocol reads once)."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        pairs = [(b"content-length", b"2"), (b"x-evil", b"a\r\nset-cookie: injected=1")]
        hdrs = iter(pairs) if as_iterator else pairs
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        assert Reader(s).closed()  # nothing written: no head with the injected line


def test_a_tab_in_a_header_value_is_allowed() -> None:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        hdrs = [(b"Content-Length", b"2"), (b"X-Tab", b"a\tb")]
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        r = Reader(s)
        status, headers = r.head()
    assert status == 200 and ("x-tab", "a\tb") in headers and ("content-length", "2") in headers  # names lowercased


def test_streamed_response_to_a_slow_reader_is_bounded_by_flow_control() -> None:
    chunk = b"x" * 65536
    total = 200  # 12.5 MiB: far more than every buffer on the way
    sent = [0]
    buffered: list[int] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        transport = send.__self__.transport  # the test shrinks the server's socket buffer
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(total):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent[0] += 1
            buffered.append(transport.get_write_buffer_size())
        await send({"type": "http.response.body", "body": b""})

    with serving(app) as server:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(10)
        s.connect((server.host, server.port))
        try:
            s.sendall(get("/stream"))
            conns = server.server.server_state.connections
            until(lambda: sent[0] == total or any(c.write_paused for c in conns), "the app is blocked in send")
            time.sleep(0.3)  # a send that did not wait would run ahead now
            ahead = sent[0]
            status, headers, body = Reader(s).answer()
        finally:
            s.close()
    assert ahead < 40, f"the app ran {ahead} chunks ahead of a reader that read nothing"
    assert max(buffered) < 8 * 65536  # the proxy's memory for this answer stays bounded
    assert status == 200 and headers["transfer-encoding"] == "chunked" and len(body) == total * len(chunk)


def test_head_goes_out_before_a_body_that_waits() -> None:
    release = asyncio.Event()
    loop: list[asyncio.AbstractEventLoop] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        loop.append(asyncio.get_running_loop())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await release.wait()  # a streamed answer waiting for its upstream: the head must not wait too
        await send({"type": "http.response.body", "body": b"done"})

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        r = Reader(s)
        status, _ = r.head()
        loop[0].call_soon_threadsafe(release.set)
        assert status == 200 and r.exactly(4) == b"done"


def test_graceful_shutdown_completes_the_request_in_flight() -> None:
    started = threading.Event()

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        started.set()
        await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"8")]})
        await send({"type": "http.response.body", "body": b"finished"})

    server = BackgroundServer(app, http=CallerProtocol, access_log=False, lifespan="off").start()
    try:
        with conn(server) as s:
            s.sendall(get("/"))
            assert started.wait(10)
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            r = Reader(s)
            status, headers, body = r.answer()
            assert r.closed()
            stopper.join(20)
    finally:
        server.stop()
    assert (status, body) == (200, b"finished") and headers["connection"] == "close"
    assert not server.server.server_state.connections


def test_limit_concurrency_answers_503() -> None:
    with serving(echo, limit_concurrency=2) as server, conn(server) as held:
        held.sendall(get("/"))
        assert Reader(held).answer()[0] == 200  # stays open: one of the two allowed
        with conn(server) as s:
            s.sendall(get("/"))
            r = Reader(s)
            status, _, body = r.answer()
            assert r.closed()
    assert status == 503 and body == b"Service Unavailable"


def test_limit_max_requests_stops_the_server() -> None:
    with serving(echo, limit_max_requests=3) as server:
        with conn(server) as s:
            r = Reader(s)
            for _ in range(3):
                s.sendall(get("/"))
                assert r.answer()[0] == 200
        until(lambda: not server._thread.is_alive(), "the server stopped after 3 requests")


def test_scope_has_client_server_root_path_and_a_copy_of_the_lifespan_state() -> None:
    scopes: list[dict] = []

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                scope["state"]["ready"] = True
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        scopes.append({**scope, "state": dict(scope["state"])})
        scope["state"]["mutated"] = True  # a request's copy, not the server's
        await echo(scope, receive, send)

    with serving(app, lifespan="on", root_path="/base") as server:
        for path in ("/x%20y?a=1&b=%20", "/z"):
            with conn(server) as s:
                s.sendall(get(path))
                doc = json.loads(Reader(s).answer()[2])
    first = scopes[0]
    assert (
        first["path"] == "/base/x y" and first["raw_path"] == b"/base/x%20y" and first["query_string"] == b"a=1&b=%20"
    )
    assert first["root_path"] == "/base" and first["server"] == (server.host, server.port)
    assert first["client"][0] == "127.0.0.1" and first["scheme"] == "http" and first["http_version"] == "1.1"
    assert first["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scopes[1]["state"] == {"ready": True}  # not the first request's mutation
    assert doc["path"] == "/base/z"


def test_http_1_0_request_is_answered_and_closed() -> None:
    with serving(echo) as server, conn(server) as s:
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        r = Reader(s)
        status, headers, body = r.answer()
        assert r.closed()
    assert status == 200 and headers["connection"] == "close" and json.loads(body)["http_version"] == "1.0"


def test_connection_close_from_the_caller_closes_after_the_answer() -> None:
    with serving(echo) as server, conn(server) as s:
        s.sendall(get("/", b"Connection: close\r\n") + get("/never"))
        r = Reader(s)
        status, headers, _ = r.answer()
        assert r.closed()  # the pipelined second request is not answered
    assert status == 200 and headers["connection"] == "close"


def test_connection_close_from_the_app_closes_after_the_answer() -> None:
    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        hdrs = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": hdrs})
        await send({"type": "http.response.body", "body": b"ok"})

    with serving(app) as server, conn(server) as s:
        s.sendall(get("/"))
        r = Reader(s)
        _, headers = r.head()
        assert r.exactly(2) == b"ok" and r.closed()
    assert [v for k, v in headers if k == "connection"] == ["close"]  # not a second one added


def test_malformed_request_is_a_json_400() -> None:
    with serving(echo) as server, conn(server) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\n")
        r = Reader(s)
        status, headers, body = r.answer()
        assert r.closed()
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["errors"][0]["code"] == "malformed_request"


def test_idle_keep_alive_connection_is_closed_after_timeout_keep_alive() -> None:
    with serving(echo, timeout_keep_alive=0.3) as server, conn(server) as s:
        r = Reader(s)
        for _ in range(3):  # each request starts the idle time anew
            s.sendall(get("/"))
            assert r.answer()[0] == 200
            time.sleep(0.2)
        assert r.closed()  # recv blocks until the server gives up (socket timeout: 10 s)


# -- the same bytes to uvicorn's own httptools protocol and to ours --------------------------------

REQUESTS = {
    "get": get("/a/b?c=d"),
    "get_percent": get("/a%2Fb%20c"),
    "absolute_form": b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "fragment": get("/p?q=1#frag"),
    "head": b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n",
    "post_length": b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody",
    "post_chunked": b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
    "http10": b"GET /o HTTP/1.0\r\n\r\n",
    "http10_keepalive": b"GET /o HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "close": get("/", b"Connection: close\r\n"),
    "trailing_ows": get("/", b"X-A: v  \t\r\n"),
    "pipelined": get("/1") + get("/2"),
    "options_star": b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    "websocket_upgrade": get(
        "/ws",
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ),
    "h2c_upgrade": get(
        "/u", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
    ),
}


async def mirror(scope: dict, receive: Callable, send: Callable) -> None:
    """Echo, with the request headers; a websocket is closed before it is accepted (as the proxy does)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    doc = {k: scope[k] for k in ("method", "path", "root_path", "http_version", "scheme")}
    doc.update(raw_path=scope["raw_path"].decode(), query=scope["query_string"].decode(), body=body.decode())
    doc["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    out = json.dumps(doc).encode()
    hdrs = [(b"content-type", b"application/json"), (b"X-Mixed-Case", b"1")]
    if scope["path"] != "/1":
        hdrs.append((b"content-length", b"%d" % len(out)))
    await send({"type": "http.response.start", "status": 200, "headers": hdrs})
    await send({"type": "http.response.body", "body": out})


def exchange(server: BackgroundServer, data: bytes) -> bytes:
    """Everything the server writes for `data`, until it closes or is quiet (its date line blanked)."""
    with conn(server) as s:
        s.sendall(data)
        s.settimeout(0.5)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                out += b"<closed>"
                break
            out += chunk
    lines = [b"date: -" if line.startswith(b"date: ") else line for line in out.split(b"\r\n")]
    return b"\r\n".join(line for line in lines if not line.startswith(b"sec-websocket"))


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[BackgroundServer, BackgroundServer]]:
    with serving(mirror, http="httptools") as reference, serving(mirror) as ours:
        yield reference, ours


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_answers_are_byte_for_byte_uvicorns(both: tuple[BackgroundServer, BackgroundServer], case: str) -> None:
    reference, ours = both
    assert exchange(ours, REQUESTS[case]) == exchange(reference, REQUESTS[case])

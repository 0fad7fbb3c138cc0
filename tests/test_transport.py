"""proxy.upstream.transport: both upstream transports keep httpx semantics, against real loopback servers."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from proxy.serving import BackgroundServer
from proxy.upstream.transport import AiohttpTransport, NativeTransport, _map_error


class Upstream:
    """A small ASGI upstream; records what it saw."""

    def __init__(self) -> None:
        self.disconnects: list[str] = []
        self.cookies_seen: list[str] = []
        self.clients: list[Any] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if "cookie" in headers:
            self.cookies_seen.append(headers["cookie"])
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)

        async def reply(status: int, data: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": data})

        if path == "/echo":
            self.clients.append(tuple(scope["client"]))
            doc = {
                "method": scope["method"],
                "headers": headers,
                "body_len": len(body),
                "body_head": body[:64].decode(),
            }
            await reply(200, json.dumps(doc).encode())
        elif path == "/set-cookie":
            await reply(200, b"{}", [(b"set-cookie", b"session=abc; Path=/")])
        elif path == "/redirect":
            await reply(302, b"{}", [(b"location", b"/echo")])
        elif path == "/gzip":
            await reply(200, gzip.compress(b'{"compressed":true}'), [(b"content-encoding", b"gzip")])
        elif path == "/slow-headers":
            await asyncio.sleep(1.0)
            await reply(200, b"{}")
        elif path == "/slow-body":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"12345", "more_body": True})
            await asyncio.sleep(1.0)
            await send({"type": "http.response.body", "body": b"67890"})
        elif path == "/endless":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            gone = asyncio.ensure_future(receive())  # resolves with http.disconnect when the peer goes
            block = b"x" * 65536
            deadline = time.monotonic() + 20
            while not gone.done() and time.monotonic() < deadline:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                await asyncio.sleep(0.001)
            if gone.done():
                self.disconnects.append(path)
            else:
                await send({"type": "http.response.body", "body": b""})
        else:
            await reply(404, b"{}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Upstream]]:
    app = Upstream()
    server = BackgroundServer(app, access_log=False).start()
    yield server.url, app
    server.stop()


T = {"connect": 2.0, "read": 5.0, "write": 5.0, "pool": 2.0}


@pytest.fixture(params=["native", "aiohttp"])
def Transport(request: pytest.FixtureRequest) -> Any:
    return NativeTransport if request.param == "native" else AiohttpTransport


async def test_through_an_httpx_client(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    async with httpx.AsyncClient(transport=Transport(), base_url=url) as c:
        r = await c.post("/echo", content=b'{"a":1}', headers={"X-Thing": "1"})
        assert r.status_code == 200
        doc = r.json()
        assert doc["method"] == "POST" and doc["body_len"] == 7 and doc["headers"]["x-thing"] == "1"
        assert doc["headers"]["content-length"] == "7"
        async with c.stream("GET", "/echo") as s:
            assert s.status_code == 200
            assert json.loads(await s.aread())["method"] == "GET"
        assert r.http_version == "HTTP/1.1" and r.reason_phrase == "OK"


async def test_send_fast_headers_go_out_as_given(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    t = Transport()
    try:
        r = await t.send_fast("GET", url + "/echo", [("x-request-id", "abc"), ("service-crn", "crn:x")], None, T)
        doc = json.loads(await r.aread())
        await r.aclose()
        assert doc["headers"]["x-request-id"] == "abc" and doc["headers"]["service-crn"] == "crn:x"
        assert "cookie" not in doc["headers"]
    finally:
        await t.aclose()


async def test_streamed_request_body_uses_the_given_content_length(
    Transport: Any, upstream: tuple[str, Upstream]
) -> None:
    url, _ = upstream
    t = Transport()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"y" * 16384

    try:
        size = 64 * 16384
        r = await t.send_fast("POST", url + "/echo", [("content-length", str(size))], body(), T)
        doc = json.loads(await r.aread())
        await r.aclose()
        assert doc["body_len"] == size
        assert doc["headers"]["content-length"] == str(size)
        assert "transfer-encoding" not in doc["headers"]
    finally:
        await t.aclose()


async def test_no_cookie_jar(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    """A shared transport must never carry one caller's cookies to the next request."""
    url, app = upstream
    t = Transport()
    try:
        app.cookies_seen.clear()
        for path in ("/set-cookie", "/echo", "/echo"):
            r = await t.send_fast("GET", url + path, [], None, T)
            await r.aread()
            await r.aclose()
        assert app.cookies_seen == []
    finally:
        await t.aclose()


async def test_redirects_are_not_followed_and_bodies_not_decompressed(
    Transport: Any, upstream: tuple[str, Upstream]
) -> None:
    url, _ = upstream
    t = Transport()
    try:
        r = await t.send_fast("GET", url + "/redirect", [], None, T)
        assert r.status_code == 302 and r.headers["location"] == "/echo"
        await r.aclose()
        r = await t.send_fast("GET", url + "/gzip", [("accept-encoding", "gzip")], None, T)
        raw = b"".join([c async for c in r.aiter_raw()])
        await r.aclose()
        assert r.headers["content-encoding"] == "gzip"
        assert gzip.decompress(raw) == b'{"compressed":true}'  # passed through as sent
    finally:
        await t.aclose()


async def test_env_proxies_are_ignored(
    Transport: Any, upstream: tuple[str, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = upstream
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t = Transport()
    try:
        r = await t.send_fast("GET", url + "/echo", [], None, T)
        assert r.status_code == 200
        await r.aclose()
    finally:
        await t.aclose()


async def test_connection_refused_is_connect_error(Transport: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        t = Transport()
        try:
            with pytest.raises(httpx.ConnectError):
                await t.send_fast("GET", f"http://127.0.0.1:{port}/", [], None, T)
        finally:
            await t.aclose()


async def test_read_timeouts_before_and_during_the_body(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    t = Transport()
    short = {**T, "read": 0.2}
    try:
        with pytest.raises(httpx.ReadTimeout):
            await t.send_fast("GET", url + "/slow-headers", [], None, short)
        r = await t.send_fast("GET", url + "/slow-body", [], None, short)
        with pytest.raises(httpx.ReadTimeout):
            await r.aread()
        await r.aclose()
    finally:
        await t.aclose()


async def test_server_disconnect_is_remote_protocol_error(Transport: Any) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = Transport()
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            await t.send_fast("POST", f"http://127.0.0.1:{port}/", [], b"{}", T)
    finally:
        await t.aclose()
        server.close()


async def test_truncated_body_is_remote_protocol_error(Transport: Any) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten!!")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(short, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = Transport()
    try:
        r = await t.send_fast("GET", f"http://127.0.0.1:{port}/", [], None, T)
        with pytest.raises(httpx.RemoteProtocolError):
            await r.aread()
        await r.aclose()
    finally:
        await t.aclose()
        server.close()


async def test_pool_timeout_when_every_connection_is_busy(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    t = Transport(max_connections=1)
    try:
        held = await t.send_fast("GET", url + "/echo", [], None, T)  # not closed yet: holds the slot
        with pytest.raises(httpx.PoolTimeout):
            await t.send_fast("GET", url + "/echo", [], None, {**T, "pool": 0.1})
        await held.aclose()
        r = await t.send_fast("GET", url + "/echo", [], None, {**T, "pool": 0.1})  # freed
        assert r.status_code == 200
        await r.aclose()
    finally:
        await t.aclose()


async def test_connections_are_reused(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, app = upstream
    t = Transport()
    try:
        app.clients.clear()
        for _ in range(5):
            r = await t.send_fast("GET", url + "/echo", [], None, T)
            await r.aread()
            await r.aclose()
        assert len(set(app.clients)) == 1  # one keep-alive connection served all five
    finally:
        await t.aclose()


async def test_abandoned_stream_closes_the_upstream_connection(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, app = upstream
    app.disconnects.clear()
    t = Transport()
    try:
        r = await t.send_fast("GET", url + "/endless", [], None, T)
        got = 0
        async for chunk in r.aiter_raw():
            got += len(chunk)
            if got > 256 * 1024:
                break
        await r.aclose()
        deadline = time.monotonic() + 5
        while not app.disconnects and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert app.disconnects == ["/endless"]
        # and the slot was given back
        r = await t.send_fast("GET", url + "/echo", [], None, T)
        assert r.status_code == 200
        await r.aclose()
    finally:
        await t.aclose()


def test_error_mapping_table() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    cases: list[tuple[BaseException, type[httpx.TransportError]]] = [
        (aiohttp.ClientConnectorError(key, OSError(111, "refused")), httpx.ConnectError),
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (asyncio.TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("truncated"), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (ConnectionResetError(), httpx.ReadError),
        (aiohttp.InvalidURL("ftp://x"), httpx.UnsupportedProtocol),
    ]
    for exc, expected in cases:
        mapped = _map_error(exc, None)
        assert type(mapped) is expected, (exc, mapped)


async def test_closing_the_transport_twice_is_fine(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    url, _ = upstream
    t = Transport()
    r = await t.send_fast("GET", url + "/echo", [], None, T)
    await r.aclose()
    await t.aclose()
    await t.aclose()


def test_a_transport_per_event_loop_thread(Transport: Any, upstream: tuple[str, Upstream]) -> None:
    """The session is created lazily inside the running loop (uvicorn workers, test servers)."""
    url, _ = upstream
    results: list[int] = []

    def run() -> None:
        async def go() -> None:
            t = Transport()
            r = await t.send_fast("GET", url + "/echo", [], None, T)
            results.append(r.status_code)
            await r.aclose()
            await t.aclose()

        asyncio.run(go())

    th = threading.Thread(target=run)
    th.start()
    th.join(10)
    assert results == [200]


# ------------------------------------------------------------------- NativeTransport specifics


async def _raw_server(handler: Any) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    m = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    if m:
        await reader.readexactly(int(m[0].split(b":")[1]))
    return head


async def test_native_body_until_close_and_connection_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-the-end")
        await writer.drain()
        writer.close()

    server, url = await _raw_server(handler)
    t = NativeTransport()
    try:
        for _ in range(2):  # the first connection is not reused: HTTP/1.1 without length ends at close
            r = await t.send_fast("GET", url + "/", [], None, T)
            assert await r.aread() == b"until-the-end"
            await r.aclose()
        assert not any(t._idle.values())
    finally:
        await t.aclose()
        server.close()


async def test_native_chunked_both_ways_and_interim_answers() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
        seen.append(body)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()

    async def gen() -> AsyncIterator[bytes]:
        for part in (b"abc", b"", b"defgh"):
            yield part

    server, url = await _raw_server(handler)
    t = NativeTransport()
    try:
        r = await t.send_fast("POST", url + "/", [], gen(), T)
        assert r.status_code == 200 and "link" not in r.headers
        assert await r.aread() == b"hello world"
        await r.aclose()
        assert seen == [b"abcdefgh"]
    finally:
        await t.aclose()
        server.close()


async def test_native_refuses_header_injection_before_sending_anything() -> None:
    t = NativeTransport()
    try:
        for bad in ([("x-a", "1\r\nx-injected: 1")], [("x-a\r\nx-b", "1")], [("x:a", "1")]):
            with pytest.raises(httpx.LocalProtocolError):
                await t.send_fast("GET", "http://127.0.0.1:9/", bad, None, T)
        with pytest.raises(httpx.UnsupportedProtocol):
            await t.send_fast("GET", "http://127.0.0.1:9/a b", [], None, T)
        with pytest.raises(httpx.UnsupportedProtocol):
            await t.send_fast("GET", "ftp://127.0.0.1:9/", [], None, T)
    finally:
        await t.aclose()


async def test_native_early_answer_stops_the_upload() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def big() -> AsyncIterator[bytes]:
        for _ in range(4096):  # 256 MB if it were all sent
            yield b"z" * 65536
            await asyncio.sleep(0)

    server, url = await _raw_server(handler)
    t = NativeTransport()
    try:
        started = time.monotonic()
        r = await t.send_fast("POST", url + "/", [("content-length", str(4096 * 65536))], big(), T)
        assert r.status_code == 413 and await r.aread() == b"{}"
        await r.aclose()
        assert time.monotonic() - started < 5
    finally:
        await t.aclose()
        server.close()


async def test_native_stale_pooled_connection_is_not_used() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # the server's keep-alive timeout

    server, url = await _raw_server(handler)
    t = NativeTransport()
    try:
        for _ in range(3):
            r = await t.send_fast("DELETE", url + "/x", [], None, T)
            assert await r.aread() == b"ok"
            await r.aclose()
            await asyncio.sleep(0.2)
    finally:
        await t.aclose()
        server.close()


async def test_native_keepalive_expiry() -> None:
    accepted: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                await _read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _raw_server(handler)
    t = NativeTransport(keepalive_expiry=0.1)
    try:
        for pause in (0, 0.3):
            await asyncio.sleep(pause)
            r = await t.send_fast("GET", url + "/", [], None, T)
            await r.aread()
            await r.aclose()
        assert len(accepted) == 2  # the idle connection had expired: a new one was opened
    finally:
        await t.aclose()
        server.close()


async def test_native_write_timeout_when_the_upstream_stops_reading() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # never reads: the socket buffers fill up
        writer.close()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"w" * 262144

    server, url = await _raw_server(handler)
    t = NativeTransport()
    try:
        with pytest.raises(httpx.WriteTimeout):
            await t.send_fast("POST", url + "/", [("content-length", str(1 << 40))], endless(), {**T, "write": 0.3})
    finally:
        release.set()
        await t.aclose()
        server.close()


def test_native_https(tmp_path: Any) -> None:
    """TLS to the upstream (the real new API is https): a self-signed certificate we trust."""
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    app = Upstream()
    server = BackgroundServer(app, access_log=False, ssl_keyfile=str(key), ssl_certfile=str(cert)).start()
    try:
        url = server.url.replace("http://", "https://")

        async def go() -> None:
            ctx = ssl.create_default_context(cafile=str(cert))
            t = NativeTransport(ssl_context=ctx)
            try:
                r = await t.send_fast("GET", url + "/echo", [("x-a", "1")], None, T)
                assert r.status_code == 200 and json.loads(await r.aread())["headers"]["x-a"] == "1"
                await r.aclose()
                untrusting = NativeTransport()
                with pytest.raises(httpx.ConnectError):
                    await untrusting.send_fast("GET", url + "/echo", [], None, T)
                await untrusting.aclose()
            finally:
                await t.aclose()

        asyncio.run(go())
    finally:
        server.stop()


async def test_fast_read_gives_what_aread_gives_and_frees_the_connection(
    Transport: Any, upstream: tuple[str, Upstream]
) -> None:
    """proxy.upstream.client.read/raw_chunks (the hot path's shortcuts past httpx's generators):
    same bytes, same end state (consumed, closed, one keep-alive connection for all), and a coded
    body still goes through aread (decoded, as before)."""
    from proxy.upstream.client import raw_chunks, read

    url, app = upstream
    t = Transport(max_connections=1)
    try:
        app.clients.clear()
        r = await t.send_fast("GET", url + "/echo", [], None, T)
        expected = await r.aread()
        await r.aclose()
        for _ in range(3):
            r = await t.send_fast("GET", url + "/echo", [], None, {**T, "pool": 0.5})  # pool of 1: freed
            assert await read(r) == expected
            assert r.is_stream_consumed and r.is_closed and r.content == expected
            assert await read(r) == expected  # twice, like aread
        r = await t.send_fast("GET", url + "/echo", [], None, {**T, "pool": 0.5})
        assert b"".join([c async for c in raw_chunks(r)]) == expected
        with pytest.raises(httpx.StreamConsumed):
            [c async for c in r.aiter_raw()]
        await r.aclose()
        assert len(set(app.clients)) == 1
        r = await t.send_fast("GET", url + "/gzip", [("accept-encoding", "gzip")], None, {**T, "pool": 0.5})
        assert await read(r) == b'{"compressed":true}'  # content coding undone, as aread does
        await r.aclose()
        r = await t.send_fast("GET", url + "/slow-body", [], None, {**T, "read": 0.2, "pool": 0.5})
        with pytest.raises(httpx.ReadTimeout):
            await read(r)
        await r.aclose()
    finally:
        await t.aclose()


# ------------------------------------------------------- the hot path: exchange + UpstreamResponse


def test_response_headers_behave_as_httpx_headers_for_the_calls_the_proxy_makes() -> None:
    from proxy.upstream.client import ResponseHeaders, response_headers

    raw = [
        (b"content-type", b"application/json"),
        (b"x-multi", b"a"),
        (b"x-multi", b"b"),
        (b"connection", b"keep-alive, X-Private"),
        (b"x-private", b"1"),
        (b"content-length", b"12"),
        (b"x-name", "caf\u00e9".encode()),
    ]
    ours, theirs = ResponseHeaders(raw), httpx.Headers(raw)
    for key in ("Content-Type", "content-type", "X-MULTI", "x-name", "missing", "content-length"):
        assert ours.get(key) == theirs.get(key), key
        assert ours.get(key, "dflt") == theirs.get(key, "dflt")
        assert (key in ours) == (key in theirs)
    assert ours["x-multi"] == "a, b"
    with pytest.raises(KeyError):
        ours["missing"]
    latin = [(b"x-name", b"caf\xe9")]  # not UTF-8: httpx falls back to Latin-1, so do we
    assert ResponseHeaders(latin).get("x-name") == httpx.Headers(latin).get("x-name") == "caf\u00e9"
    assert not ResponseHeaders(raw).coded and ResponseHeaders([(b"content-encoding", b"gzip")]).coded
    named = frozenset({b"keep-alive", b"x-private"})
    for drop in (False, True):
        assert response_headers(ResponseHeaders(raw, named), drop) == response_headers(theirs, drop)
    assert (b"x-private", b"1") not in response_headers(ResponseHeaders(raw, named))


async def test_native_exchange_answers_as_send_fast_does(upstream: tuple[str, Upstream]) -> None:
    """exchange (the proxy's hot path) and send_fast give the same status, headers and body; the
    UpstreamResponse reads like httpx.Response (aread twice, consumed, closed, the pool freed)."""
    from proxy.upstream.client import UpstreamResponse, raw_chunks, read, response_headers

    url, app = upstream
    t = NativeTransport(max_connections=1)
    try:
        app.clients.clear()
        ref = await t.send_fast("GET", url + "/echo", [("x-a", "1")], None, T)
        ref_body = await ref.aread()
        await ref.aclose()
        base = t.base(url)
        for _ in range(3):  # a pool of one: each answer must give its connection back
            r = await t.exchange("GET", base, "/echo", [("x-a", "1")], None, {**T, "pool": 0.5})
            assert type(r) is UpstreamResponse
            assert r.status_code == ref.status_code
            assert r.headers.get("Content-Type") == ref.headers.get("content-type")
            assert response_headers(r.headers) == response_headers(ref.headers)
            assert await read(r) == ref_body
            assert await r.aread() == ref_body and r.content == ref_body and r.is_closed
            with pytest.raises(httpx.StreamConsumed):
                [c async for c in raw_chunks(r)]
            await r.aclose()
        r = await t.exchange("GET", base, "/echo", [("x-a", "1")], None, {**T, "pool": 0.5})
        assert b"".join([c async for c in raw_chunks(r)]) == ref_body
        await r.aclose()
        with pytest.raises(httpx.StreamConsumed):  # as httpx: consumed is said before closed
            await r.aread()
        assert len(set(app.clients)) == 1
        r = await t.exchange("GET", base, "/echo", [], None, {**T, "pool": 0.5})
        await r.aclose()  # closed unread: the connection is dropped, the permit freed
        with pytest.raises(httpx.StreamClosed):
            await r.aread()
        r = await t.exchange("GET", base, "/gzip", [("accept-encoding", "gzip")], None, {**T, "pool": 0.5})
        assert await read(r) == b'{"compressed":true}'  # content coding undone, as httpx's aread does
        await r.aclose()
    finally:
        await t.aclose()


async def test_native_read_timeout_of_a_shorter_wait_on_a_reused_connection(upstream: tuple[str, Upstream]) -> None:
    """The read timer is per connection and lazy: a wait with a shorter timeout than the one the
    timer was armed for (a /readyz probe after a default request) still times out on its own."""
    url, _ = upstream
    t = NativeTransport(max_connections=1)
    try:
        base = t.base(url)
        r = await t.exchange("GET", base, "/echo", [], None, {**T, "read": 30.0})
        await r.aread()
        with pytest.raises(httpx.ReadTimeout):
            await t.exchange("GET", base, "/slow-headers", [], None, {**T, "read": 0.2})
        r = await t.exchange("GET", base, "/slow-body", [], None, {**T, "read": 30.0})
        assert await r.aread() == b"1234567890"  # progress resets nothing wrongly: the body completes
    finally:
        await t.aclose()


async def test_native_pool_permit_goes_to_the_next_waiter(upstream: tuple[str, Upstream]) -> None:
    """max_connections=1: a waiter gets the permit when the holder closes, and a waiter cancelled
    after being handed the permit passes it on instead of losing it."""
    url, _ = upstream
    t = NativeTransport(max_connections=1)
    try:
        base = t.base(url)
        held = await t.exchange("GET", base, "/echo", [], None, T)
        first = asyncio.ensure_future(t.exchange("GET", base, "/echo", [], None, T))
        second = asyncio.ensure_future(t.exchange("GET", base, "/echo", [], None, T))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
        await held.aclose()  # hands the permit to `first`...
        first.cancel()  # ...which is cancelled before it runs: `second` must get it
        r = await asyncio.wait_for(second, 5)
        assert r.status_code == 200
        await r.aclose()
        with pytest.raises(asyncio.CancelledError):
            await first
        r = await t.exchange("GET", base, "/echo", [], None, {**T, "pool": 0.5})  # and it is free again
        await r.aclose()
    finally:
        await t.aclose()


async def test_native_header_names_checked_once_still_refuse_injection() -> None:
    """Header names are checked the first time they are seen; values every time."""
    t = NativeTransport()
    try:
        base = t.base("http://127.0.0.1:9")
        for bad in ([("x-a", "1\r\nx-injected: 1")], [("x-a", "1\n")], [("connection", "x\r\ny: 1")]):
            with pytest.raises(httpx.LocalProtocolError):
                await t.exchange("GET", base, "/", bad, None, T)
        with pytest.raises(httpx.UnsupportedProtocol):
            await t.exchange("GET", base, "/a\r\nb", [], None, T)
        with pytest.raises(httpx.UnsupportedProtocol):
            t.base("http://127.0.0.1:9/a b")
    finally:
        await t.aclose()


async def test_whole_body_only_when_all_of_it_has_arrived(upstream: tuple[str, Upstream]) -> None:
    """whole_body (the relay's shortcut for small answers) gives the body once it is all there,
    else None and the stream is left to raw_chunks; either way the connection goes back."""
    from proxy.upstream.client import raw_chunks, whole_body

    url, app = upstream
    t = NativeTransport(max_connections=1)
    try:
        base = t.base(url)
        app.clients.clear()
        r = await t.exchange("GET", base, "/echo", [], None, T)
        expected = await r.aread()
        r = await t.exchange("GET", base, "/echo", [], None, T)
        while not r.stream._conn.complete:  # let the whole answer arrive
            await asyncio.sleep(0.01)
        assert whole_body(r) == expected
        assert whole_body(r) is None  # consumed
        with pytest.raises(httpx.StreamConsumed):
            [c async for c in raw_chunks(r)]
        await r.aclose()
        r = await t.exchange("GET", base, "/slow-body", [], None, {**T, "pool": 0.5})
        assert whole_body(r) is None  # half of it is still a second away
        assert b"".join([c async for c in raw_chunks(r)]) == b"1234567890"
        await r.aclose()
        r = await t.exchange("GET", base, "/echo", [], None, {**T, "pool": 0.5})
        await r.aclose()
        assert len(set(app.clients)) == 1
    finally:
        await t.aclose()

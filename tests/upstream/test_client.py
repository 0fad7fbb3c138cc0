"""proxy.upstream.client.Upstream: one interface over every transport (the hot path's
UpstreamResponse from NativeTransport, httpx.Response from the others), against real loopback servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.errors import UpstreamError
from proxy.serving import BackgroundServer
from proxy.upstream.client import Upstream, UpstreamResponse, raw_chunks, read, response_headers, whole_body
from proxy.upstream.transport import AiohttpTransport, NativeTransport

from ..conftest import proxy_settings


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f'{{"path":"{scope["path"]}","query":"{scope["query_string"].decode()}"}}'.encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"X-Hop"), (b"x-hop", b"1"), (b"x-kept", b"2"),
    ]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    s = BackgroundServer(app, access_log=False).start()
    yield s.url
    s.stop()


@pytest.mark.parametrize("kind", ["native", "aiohttp", "httpx"])
async def test_open_answers_the_same_through_every_transport(server: str, kind: str) -> None:
    transport: httpx.AsyncBaseTransport = {
        "native": NativeTransport, "aiohttp": AiohttpTransport, "httpx": httpx.AsyncHTTPTransport,
    }[kind]()
    up = Upstream(proxy_settings(server), transport=transport)
    try:
        for stream in (False, True):
            resp = await up.open("GET", "/v1/jobs/j1", b"limit=1", [("accept", "application/json")], None)
            assert (type(resp) is UpstreamResponse) == (kind == "native")
            assert resp.status_code == 200 and resp.headers.get("Content-Type") == "application/json"
            hdrs = dict(response_headers(resp.headers))
            assert hdrs[b"x-kept"] == b"2" and b"x-hop" not in hdrs and b"connection" not in hdrs
            if stream:
                data = whole_body(resp) or b"".join([c async for c in raw_chunks(resp)])
            else:
                data = await read(resp)
            assert data == b'{"path":"/api/v1/jobs/j1","query":"limit=1"}'
            await resp.aclose()
    finally:
        await up.aclose()


async def test_a_bad_upstream_url_is_an_answer_per_request_not_a_crash() -> None:
    """The native transport parses the base URL on the first request: a non-http(s) one is a 502
    for that request (as when every request parsed it), never an exception at start-up."""
    up = Upstream(proxy_settings("http://127.0.0.1:9"), transport=NativeTransport())
    up.base = "ftp://127.0.0.1:9/api"
    try:
        for _ in range(2):
            with pytest.raises(UpstreamError) as info:
                await up.open("GET", "/v1/versions", b"", [], None)
            assert "UnsupportedProtocol" in info.value.message
    finally:
        await up.aclose()

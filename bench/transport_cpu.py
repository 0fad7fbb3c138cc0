"""CPU per upstream request for each transport, client side only (used by bench/run.py).

    python bench/transport_cpu.py http://127.0.0.1:PORT/api/v1/backends/x/status [N]

Sends N sequential GETs with the proxy's upstream headers through: a bare asyncio protocol (the
floor: one write, one read, httptools parsing), aiohttp's ClientSession, the proxy's
AiohttpTransport and NativeTransport via `send_fast` (httpx.Response answers), NativeTransport via
`exchange` (`UpstreamResponse` answers, as the proxy calls it), and httpx's own transport
(httpcore). Prints one JSON object: {name: CPU microseconds per request}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import httptools
import httpx

from proxy.upstream.client import raw_chunks
from proxy.upstream.transport import AiohttpTransport, NativeTransport

HEADERS = [
    ("ibm-api-version", "2026-04-15"),
    ("x-request-id", "0123456789abcdef0123456789abcdef"),
    ("user-agent", "qiskit-classic-proxy/0.1"),
    ("accept-encoding", "identity"),
    ("service-crn", "crn:v1:bluemix:public:quantum-computing:us-east:a/benchaccount:benchinstance::"),
    ("authorization", "Bearer bench-iam-token"),
]
TIMEOUTS = {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 5.0}


class _Bare(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self.done is not None
        self.done.set_result(None)


async def measure(url: str, n: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    u = urlsplit(url)
    out: dict[str, float] = {}

    async def timed(name: str, one: object) -> None:
        for _ in range(200):
            await one()  # type: ignore[operator]
        c0 = time.process_time()
        for _ in range(n):
            await one()  # type: ignore[operator]
        out[name] = round((time.process_time() - c0) / n * 1e6, 1)

    _, bare = await loop.create_connection(_Bare, u.hostname, u.port)
    req = (
        f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in HEADERS) + "\r\n"
    ).encode()

    async def bare_one() -> None:
        bare.done = loop.create_future()
        bare.transport.write(req)  # type: ignore[attr-defined]
        await bare.done

    await timed("bare asyncio protocol + httptools", bare_one)

    session = aiohttp.ClientSession(auto_decompress=False)

    async def aiohttp_one() -> None:
        async with session.get(url, headers=HEADERS) as r:
            await r.read()

    await timed("aiohttp ClientSession", aiohttp_one)
    await session.close()

    for name, t in (
        ("AiohttpTransport.send_fast", AiohttpTransport()),
        ("NativeTransport.send_fast", NativeTransport()),
    ):

        async def t_one(t: object = t) -> None:
            r = await t.send_fast("GET", url, HEADERS, None, TIMEOUTS)  # type: ignore[attr-defined]
            async for _ in r.aiter_raw():
                pass
            await r.aclose()

        await timed(name, t_one)
        await t.aclose()  # type: ignore[attr-defined]

    native = NativeTransport()
    base = native.base(f"{u.scheme}://{u.netloc}")

    async def exchange_one() -> None:
        r = await native.exchange("GET", base, u.path, HEADERS, None, TIMEOUTS)
        async for _ in raw_chunks(r):
            pass
        await r.aclose()

    await timed("NativeTransport.exchange (the proxy's hot path)", exchange_one)
    await native.aclose()

    hx = httpx.AsyncHTTPTransport(retries=0)

    async def httpx_one() -> None:
        r = await hx.handle_async_request(httpx.Request("GET", url, headers=HEADERS, extensions={"timeout": TIMEOUTS}))
        async for _ in r.aiter_raw():
            pass
        await r.aclose()

    await timed("httpx AsyncHTTPTransport (httpcore)", httpx_one)
    await hx.aclose()
    return out


def main() -> None:
    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    try:
        import uvloop

        result = uvloop.run(measure(url, n))
    except ImportError:
        result = asyncio.run(measure(url, n))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

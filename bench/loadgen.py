"""Fallback HTTP/1.1 load generator for when wrk is not installed (same flags, same report).

    python bench/loadgen.py -c 32 -d 10 http://127.0.0.1:8080/runtime/backends/x/status

Keep-alive connections on loopback, one request in flight per connection (like wrk), bounded in
time by -d. Prints one JSON line: requests, seconds, rps, p50_ms, p99_ms, non_2xx, errors.
It runs in Python, so it costs far more CPU per request than wrk and shares the machine with the
server it measures: numbers from it understate throughput; use wrk where you can.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body) off a keep-alive connection; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    length, chunked = -1, False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
    return int(head[9:12])


async def _one_connection(
    host: str, port: int, request: bytes, deadline: float, lat: list[float], stats: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            lat.append(time.perf_counter() - t0)
            if not 200 <= status < 400:
                stats["non_2xx"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        stats["errors"] += 1
    finally:
        writer.close()


async def run(url: str, connections: int, seconds: float, headers: list[str]) -> dict[str, float]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    lat: list[float] = []
    stats = {"non_2xx": 0, "errors": 0}
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_one_connection(host, port, request, deadline, lat, stats) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "requests": len(lat),
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "non_2xx": stats["non_2xx"],
        "errors": stats["errors"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--connections", type=int, default=1)
    p.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("url")
    a = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(a.url, a.connections, a.duration, a.header))))


if __name__ == "__main__":
    main()

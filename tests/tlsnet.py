"""Real network parts for the corporate-network tests: a test CA (trustme), the emulator over TLS
on loopback, and a small HTTP CONNECT proxy that maps the unresolvable `quantum.invalid` to it.

`.invalid` never resolves (RFC 6761), so a request that reaches the emulator as
`https://quantum.invalid` went through the proxy: a direct connection fails at DNS.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from proxy.emulator import EmulatorConfig, create_emulator_app
from proxy.serving import BackgroundServer

from .conftest import EmulatorHandle

HOST = "quantum.invalid"


@dataclass
class Pki:
    ca: trustme.CA
    ca_pem: Path
    cert: Path
    key: Path


def make_ca(tmp: Path, *names: str) -> Pki:
    """A fresh CA and a server certificate for `names` (default: quantum.invalid, 127.0.0.1, localhost)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*(names or (HOST, "127.0.0.1", "localhost")))
    out = Pki(ca, tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    ca.cert_pem.write_to_path(str(out.ca_pem))
    leaf.private_key_pem.write_to_path(str(out.key))
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(str(out.cert), append=i > 0)
    return out


def start_tls_emulator(ca: Pki, config: EmulatorConfig | None = None) -> EmulatorHandle:
    """The emulator served over HTTPS on a free loopback port, with the test CA's certificate."""
    app = create_emulator_app(config or EmulatorConfig())
    server = BackgroundServer(app, ssl_certfile=str(ca.cert), ssl_keyfile=str(ca.key)).start()
    return EmulatorHandle(server, app)


@dataclass
class Seen:
    method: str
    target: str
    proxy_authorization: str | None


@dataclass
class ConnectProxy:
    """A forward proxy on loopback: CONNECT tunnels and absolute-form http requests.

    `routes` maps host names to loopback ports (anything else is refused with 502, as a proxy
    without a route out would); `credentials` makes it answer 407 without matching Basic auth.
    Every request head is recorded in `seen`. Runs on its own thread and loop; stop() ends it.
    """

    routes: dict[str, int]
    credentials: tuple[str, str] | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="connect-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> ConnectProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _authorized(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == want

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        auth = headers.get("proxy-authorization")
        self.seen.append(Seen(method, target, auth))
        if not self._authorized(auth):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            host = target.rpartition(":")[0]
            rest = b""
        elif target.startswith("http://"):
            hostport = target[7:].split("/", 1)[0]
            host = hostport.partition(":")[0]
            # Forward the head as is minus Proxy-Authorization (absolute-form: uvicorn accepts it).
            kept = [ln for ln in lines[:-2] if not ln.lower().startswith("proxy-authorization:")]
            rest = ("\r\n".join(kept) + "\r\n\r\n").encode("latin-1")
        else:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        if host not in self.routes:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.routes[host])
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(rest)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    finally:
        dst.close()


@contextmanager
def connect_proxy(routes: dict[str, int], credentials: tuple[str, str] | None = None) -> Iterator[ConnectProxy]:
    p = ConnectProxy(routes, credentials).start()
    try:
        yield p
    finally:
        p.stop()

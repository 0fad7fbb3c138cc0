"""The intercepting forward proxy: `HTTPS_PROXY=http://127.0.0.1:PORT` is all a legacy caller changes.

A `CONNECT` to one of the IBM hosts the SDKs use is answered `200`, then TLS is terminated with a
leaf from the local CA and the decrypted HTTP/1.1 requests (h11) go to the proxy's own ASGI app,
exactly as on the main port. The scope carries `qcp_tunnel` (the CONNECT host): the tunnel is its
own trust boundary (a loopback caller asked for that host), so the Host check lets it through.
`iam.cloud.ibm.com` (and the resource search/catalog beside it) is answered here (`LocalIam`),
never forwarded. Any other host is refused
(403) or, with `intercept_other_hosts = "tunnel"`, relayed byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import h11

from ..config import Settings
from .ca import LocalCA
from .iam import LocalIam

log = logging.getLogger("qiskit_classic_proxy")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
HEAD_LIMIT = 16 * 1024
#: Seconds a caller may take to send the CONNECT head, or stay idle inside a tunnel.
HEAD_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0
CHUNK = 64 * 1024
DRAIN_LIMIT = 1024 * 1024


def _json(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class InterceptServer:
    """The listener; `start()` binds it on the running loop, `port` is where it listens."""

    def __init__(self, settings: Settings, app: ASGIApp, ca: LocalCA, iam: LocalIam) -> None:
        self.settings = settings
        self.app = app
        self.ca = ca
        self.iam = iam
        self.hosts = [h.lower() for h in settings.intercept_hosts]
        self.local_hosts = iam.hosts
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = settings.intercept_port or 0

    def intercepts(self, host: str) -> bool:
        host = host.lower()
        return host in self.local_hosts or any(fnmatch.fnmatchcase(host, pat) for pat in self.hosts)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._client, self.settings.intercept_host, self.port, limit=HEAD_LIMIT,
                reuse_port=hasattr(socket, "SO_REUSEPORT") or None,
            )
        except OSError as exc:
            log.error("QCP_INTERCEPT_PORT (intercept_port): cannot listen on %s:%s: %s",
                      self.settings.intercept_host, self.port, exc.strerror or exc)
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("intercepting forward proxy on http://%s:%d (CA %s)", self.settings.intercept_host,
                 self.port, self.ca.cert_path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # -- one client connection --------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
            log.debug("intercept connection ended: %s", type(exc).__name__)
        except Exception:
            log.exception("intercept connection failed")
        finally:
            try:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), HEAD_TIMEOUT)
            finally:
                if task is not None:
                    self._tasks.discard(task)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            writer.write(_json(431, "Request Header Fields Too Large", "head_too_large", "request head too large"))
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            writer.write(_json(400, "Bad Request", "bad_request", "not an HTTP/1.x request"))
            return
        method, target, _ = parts
        if method != "CONNECT":
            writer.write(_json(
                405, "Method Not Allowed", "connect_only",
                "this port is an HTTPS forward proxy (set HTTPS_PROXY to it); it only takes CONNECT",
            ))
            return
        host, port = _split_target(target)
        if host is None:
            writer.write(_json(400, "Bad Request", "bad_connect_target", "CONNECT needs host:port"))
            return
        if self.intercepts(host):
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            try:
                await writer.start_tls(self.ca.context_for(host), ssl_handshake_timeout=HEAD_TIMEOUT)
            except ssl.SSLError as exc:
                log.warning("TLS handshake for %s failed (%s): does the caller trust the proxy's CA? "
                            "REQUESTS_CA_BUNDLE=%s", host, exc.reason or type(exc).__name__, self.ca.cert_path)
                return
            await self._serve_http(host, port, reader, writer)
        elif self.settings.intercept_other_hosts == "tunnel":
            await self._tunnel(host, port, reader, writer)
        else:
            writer.write(_json(
                403, "Forbidden", "host_not_intercepted",
                f"{host} is not an IBM Quantum host this proxy intercepts, and tunnelling other hosts is off "
                "(QCP_INTERCEPT_OTHER_HOSTS=tunnel allows it; or list the host in NO_PROXY)",
            ))

    async def _tunnel(self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay bytes both ways, untouched (the caller's TLS goes end to end)."""
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.settings.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            reason = f"cannot reach {host}:{port} ({type(exc).__name__})"
            writer.write(_json(502, "Bad Gateway", "tunnel_failed", reason))
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    # -- HTTP inside the tunnel ---------------------------------------------------------------
    async def _serve_http(self, host: str, port: int, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        while True:
            try:
                event = await _next_event(conn, reader)
            except h11.RemoteProtocolError:
                with contextlib.suppress(h11.LocalProtocolError):
                    writer.write(_json(400, "Bad Request", "bad_request", "malformed HTTP request"))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            await self._exchange(conn, event, host, port, peer, reader, writer)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _exchange(self, conn: h11.Connection, req: h11.Request, host: str, port: int, peer: Any,
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw_path, _, query = bytes(req.target).partition(b"?")
        headers = [(bytes(k).lower(), bytes(v)) for k, v in req.headers]
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.http_version.decode(), "method": req.method.decode("latin-1"),
            "scheme": "https", "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": headers,
            "client": (peer[0], peer[1]), "server": (host, port),
            "qcp_tunnel": host,
        }
        body_done = False
        finished = asyncio.Event()
        started = False

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if not body_done:
                ev = await _next_event(conn, reader)
                if isinstance(ev, h11.Data):
                    return {"type": "http.request", "body": bytes(ev.data), "more_body": True}
                body_done = True
                if isinstance(ev, h11.EndOfMessage):
                    return {"type": "http.request", "body": b"", "more_body": False}
                finished.set()
                return {"type": "http.disconnect"}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                writer.write(conn.send(h11.Response(
                    status_code=message["status"], headers=list(message.get("headers", [])), reason=b"",
                )))
            elif message["type"] == "http.response.body":
                data = message.get("body", b"")
                if data:
                    writer.write(conn.send(h11.Data(data=data)))
                if not message.get("more_body", False):
                    writer.write(conn.send(h11.EndOfMessage()))
                    finished.set()
                await writer.drain()

        try:
            if host in self.local_hosts:
                await self.iam.handle(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        except Exception:
            log.exception("intercepted request failed (%s %s)", scope["method"], host)
            if started:
                raise ConnectionError("answer broken off") from None
            body = b'{"error":{"code":"internal_error","message":"internal proxy error","status":500}}'
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
        finally:
            finished.set()
        # A request body nobody read (a GET's end, a refused POST) is consumed before the next
        # request; a large one (a 413) is not worth reading: the connection closes instead.
        unread = 0
        while conn.their_state is h11.SEND_BODY:
            ev = await _next_event(conn, reader)
            if isinstance(ev, h11.ConnectionClosed):
                break
            if isinstance(ev, h11.Data):
                unread += len(ev.data)
                if unread > DRAIN_LIMIT:
                    raise ConnectionError("unread request body")


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(CHUNK), IDLE_TIMEOUT)
        conn.receive_data(data)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()


def _split_target(target: str) -> tuple[str | None, int]:
    """`host:port` or `[v6]:port` -> (host, port); (None, 0) if malformed."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_s = target.rpartition(":")
    if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536 or "/" in host:
        return None, 0
    return host.lower().rstrip("."), int(port_s)

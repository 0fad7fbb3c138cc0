"""The app factory: a lean ASGI hot path for legacy routes, FastAPI for the proxy's own endpoints.

Flow of one legacy request (one stage per module, data moves forward only):
normalize + match (routes) -> identify caller (legacy_auth tokens / client tokens) -> action:
gone (410) | local (legacy_auth, answers) | forward: rewrite (translate) -> bearer (iam) ->
send (upstream) -> stream back, with fix-ups only where the row declares them (answers).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import httpx
from cachetools import TTLCache
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from . import answers
from .call import Call, Reply
from .config import Settings
from .errors import (
    BadRequest,
    Gone,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    RetiredProgram,
    Unauthorized,
    UpstreamError,
)
from .iam import TokenProvider
from .jsonstream import SpooledBody, Spooler, stream_drops
from .legacy_auth import AccessTokens, LegacyAuth
from .logs import log_access
from .routes import PROVIDER, Forward, Local, Route, RouteTable, normalize
from .routes import Gone as GoneAction
from .translate import dumps, parse_json_object, query_values, rewrite_body, rewrite_query
from .upstream import Upstream, response_headers

log = logging.getLogger("qiskit_classic_proxy")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

OPS_PREFIXES = ("/healthz", "/readyz", "/metrics", "/admin", "/docs", "/redoc", "/openapi.json")
OPEN_ROUTES = frozenset({"GET /version", "POST /users/loginWithToken", "GET /health", "POST /auth/validate"})
RETIRED_PROGRAMS = frozenset({"circuit-runner", "qasm3-runner"})
#: Caller headers that may go upstream; everything else (Authorization, X-Access-Token, Cookie...) stays.
PASS_HEADERS = ("accept", "accept-language", "x-qx-client-application", "parent-job-id")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SDK = re.compile(r"(qiskit_ibm_runtime|qiskit_ibm_provider|qiskit-ibm-runtime|qiskit-ibm-provider)[-/]([0-9][0-9.]*)")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")


class ProxyApp:
    """ASGI app. Build with `create_app(settings)`; `transport=` swaps the upstream HTTP transport."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        iam_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.table = RouteTable()
        self.access_tokens = AccessTokens(settings)
        self.auth = LegacyAuth(settings, self.access_tokens)
        self.client_tokens = settings.client_token_names
        self.instances = settings.instance_crns
        self.instance_by_crn = {crn: name for name, crn in reversed(self.instances.items())}
        # Which legacy instance a job/session belongs to, learnt from answers, so that follow-up
        # calls without ?provider= go to the right Service-CRN.
        self.instance_of: TTLCache[str, str] = TTLCache(maxsize=200_000, ttl=7 * 24 * 3600)
        self._transport = transport
        self._iam_transport = iam_transport
        self.upstream: Upstream | None = None
        self.tokens: TokenProvider | None = None
        self.local: dict[str, Callable[[Call, bytes], Awaitable[Reply]]] = {
            "version": self.auth.version,
            "login": self.auth.login,
            "me": self.auth.me,
            "network": self.auth.network,
            "logout": self.auth.logout,
            **answers.LOCAL,
        }
        self._check_table()
        self.ops = build_ops_app(self)
        # Extension points (phase-out, metrics, usage record). Kept as plain lists so the hot path
        # pays nothing when they are empty.
        self.before: list[Callable[[Call], None]] = []  # after match+identify; may raise ProxyError
        self.response_headers: list[Callable[[Call], list[tuple[bytes, bytes]]]] = []  # on legacy answers
        self.hooks: list[Callable[[Call], None]] = []  # after each request, must not block
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def _check_table(self) -> None:
        for r in self.table.routes:
            a = r.action
            name = a.handler if isinstance(a, Local) else getattr(a, "sdk", None)
            if name and name not in self.local:
                raise ValueError(f"route {r.key}: no local handler {name!r}")
            if isinstance(a, Forward) and a.answer and a.answer not in answers.ANSWERS:
                raise ValueError(f"route {r.key}: no answer fix-up {a.answer!r}")

    async def startup(self) -> None:
        if self.upstream is not None:
            return
        s = self.settings
        self.upstream = Upstream(s, transport=self._transport)
        key = s.api_key.get_secret_value() if s.api_key else ""
        iam_client = None
        if self._iam_transport is not None:
            iam_client = httpx.AsyncClient(transport=self._iam_transport, timeout=s.iam_timeout)
        self.tokens = TokenProvider(key, s.iam_url, timeout=s.iam_timeout, client=iam_client)
        if key:
            asyncio.get_running_loop().create_task(self._prefetch())
        for fn in self.on_startup:
            await fn()
        # Start-up objects (FastAPI, pydantic, the route table...) never become garbage: move
        # them out of the collector's sight, or each full collection walks them all (a ~40 ms
        # pause every few thousand requests: it was the p99 at 32 connections).
        gc.collect()
        gc.freeze()

    async def _prefetch(self) -> None:
        assert self.tokens is not None
        try:
            await self.tokens.get()
        except ProxyError:
            pass  # logged by the token provider; requests will answer 502/503 meanwhile

    async def shutdown(self) -> None:
        for fn in self.on_shutdown:
            await fn()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.tokens is not None:
            await self.tokens.aclose()

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(OPS_PREFIXES):
                await self.ops(scope, receive, send)
            else:
                await self.handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # pragma: no cover - start-up failures are config errors
                    await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.upstream is None:
            await self.startup()
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        rid = headers.get("x-request-id", "")
        call = Call(
            request_id=rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex,
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            query=scope.get("query_string", b""),
        )
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                call.status = message["status"]
                if self.response_headers and call.route is not None:
                    extra = [h for fn in self.response_headers for h in fn(call)]
                    message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        try:
            call.path = normalize(scope["path"], scope.get("raw_path"))
            match = self.table.match(call.method, call.path)
            call.route, call.params = match.route, match.params
            self._identify(call, scope)
            for check in self.before:
                check(call)
            await self._dispatch(call, match.route, receive, tracked_send)
        except ProxyError as err:
            if not started:
                await self._send_error(call, err, tracked_send)
        except Exception:
            log.exception("internal error handling request %s", call.request_id)
            if not started:
                await self._send_error(call, ProxyError("internal proxy error", code="internal_error"), tracked_send)
            else:
                raise
        finally:
            if self.settings.access_log:
                log_access(call)
            for hook in self.hooks:
                hook(call)

    # -- stages --------------------------------------------------------------------------------
    def _identify(self, call: Call, scope: dict) -> None:
        """Who is calling: client-token name or login name; refuse if tokens are required."""
        h = call.headers
        name: str | None = None
        access = h.get("x-access-token")
        if access:
            name = self.access_tokens.verify(access) or self.client_tokens.get(access)
        if name is None:
            authz = h.get("authorization", "")
            if authz[:7].lower() == "bearer ":
                name = self.client_tokens.get(authz[7:].strip())
        if name is not None:
            call.caller, call.authenticated = name, True
        route_key = call.route.key if call.route else ""
        if self.client_tokens:
            if name is None and route_key not in OPEN_ROUTES:
                raise Unauthorized(
                    "this proxy requires a client token: log in with it (Classic loginWithToken), "
                    "or send it as 'Authorization: Bearer <token>' or 'X-Access-Token'",
                    code="client_token_required",
                )
        else:
            host = h.get("host", "")
            hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if host and hostname not in _LOOPBACK_HOSTS and not self.settings.public_url:
                # DNS rebinding: a web page must not reach the credentials through a loopback port.
                raise BadRequest(f"unexpected Host header {hostname!r} for a loopback proxy", code="bad_host")
        app_header = h.get("x-qx-client-application") or h.get("user-agent", "")
        m = _SDK.search(app_header)
        if m:
            call.sdk = m.group(1).replace("-", "_") + "-" + m.group(2)
            call.sdk_version = tuple(int(p) for p in m.group(2).split(".") if p.isdigit())
        elif app_header.startswith("qiskit/"):
            call.sdk = "qiskit_ibm_provider"
        scheme = scope.get("scheme", "http")
        call.base_url = f"{scheme}://{h['host']}" if "host" in h else f"{scheme}://{self.settings.host}"

    async def _dispatch(self, call: Call, route: Route, receive: Callable, send: Callable) -> None:
        action = route.action
        if isinstance(action, GoneAction):
            if action.sdk and call.is_legacy_sdk:
                call.action = "local"
                self._select_instance(call, None)
                await self._send_reply(call, await self.local[action.sdk](call, b""), send)
                return
            call.action = "gone"
            raise Gone(
                f"{route.method} {route.template} was removed from the Qiskit Runtime API"
                + (f"; use {action.replacement}" if action.replacement else " without replacement"),
                code="endpoint_removed",
                extra={"replacement": action.replacement or "none", "docs": self.settings.migration_guide_url},
            )
        if isinstance(action, Local):
            call.action = "local"
            body = await self._read_body(call, receive)
            self._select_instance(call, None)
            await self._send_reply(call, await self.local[action.handler](call, body), send)
            return
        call.action = "forward"
        await self._forward(call, route, action, receive, send)

    async def _forward(self, call: Call, route: Route, action: Forward, receive: Callable, send: Callable) -> None:
        assert self.upstream is not None and self.tokens is not None
        body: bytes | SpooledBody | None = None
        doc: dict[str, Any] | None = None
        spooled: SpooledBody | None = None
        if action.body is not None:
            # Bodies over STREAM_THRESHOLD (job submissions can be 100 MB+) are validated and
            # filtered while they arrive, into a spool; `captured` has the few values needed here.
            drops = stream_drops(action.body)
            raw = await self._read_body(call, receive, Spooler(drops) if drops is not None else None)
            if isinstance(raw, SpooledBody):
                body = spooled = raw
                doc = raw.captured
            else:
                doc = parse_json_object(raw)
            program = doc.get("program_id")
            if action.creates and isinstance(program, str) and program in RETIRED_PROGRAMS:
                raise RetiredProgram(
                    f"program '{program}' is retired on the new IBM Quantum Platform (backend.run and "
                    "circuit-runner/qasm3-runner are gone); submit with SamplerV2 instead",
                    code="program_retired",
                )
        self._select_instance(call, doc)
        if doc is not None and spooled is None:
            body = dumps(rewrite_body(doc, action.body or ()))
        query = call.query
        if action.query or b"provider" in query:
            query = rewrite_query(query, (PROVIDER, *action.query))
        path = route.upstream_path(call.params)
        call.upstream = f"{route.method} {path}"
        answer = answers.ANSWERS.get(action.answer) if action.answer else None
        h = call.headers
        base_headers = [(k, h[k]) for k in PASS_HEADERS if k in h]
        base_headers += [
            ("ibm-api-version", self.settings.api_version),
            ("x-request-id", call.request_id),
            ("user-agent", "qiskit-classic-proxy/0.1"),
            ("accept-encoding", "identity" if answer else h.get("accept-encoding", "identity")),
        ]
        if body is not None:
            base_headers.append(("content-type", "application/json"))

        if action.fanout and not call.instance_explicit and len(self.instances) > 1:
            await self._fanout_list(call, path, query, base_headers, send)
            return
        try:
            resp = await self._open(call, route, action, path, query, base_headers, body)
        except BaseException:
            if spooled is not None:
                spooled.close()
            raise
        try:
            status = resp.status_code
            is_json_error = status >= 400 and "json" in resp.headers.get("content-type", "")
            if (answer and answer.when(call, status)) or is_json_error:
                try:
                    data = await resp.aread()
                except httpx.HTTPError as exc:
                    raise UpstreamError(
                        f"the new API broke off its answer ({type(exc).__name__}): "
                        f"{self.upstream.host} ({call.upstream}, request {call.request_id})"
                    ) from None
                if answer and answer.when(call, status):
                    status, data = answer.fix(call, status, data)
                    if call.seen_ids and len(self.instances) > 1:
                        for seen in call.seen_ids:
                            self.instance_of[seen] = call.instance
                if status >= 400:
                    data = answers.classic_error(call, status, data)
                hdrs = response_headers(resp.headers, drop_length=True)
                hdrs.append((b"content-length", str(len(data)).encode()))
                hdrs.append((b"x-request-id", call.request_id.encode()))
                await send({"type": "http.response.start", "status": status, "headers": hdrs})
                await send({"type": "http.response.body", "body": data})
                return
            hdrs = response_headers(resp.headers)
            hdrs.append((b"x-request-id", call.request_id.encode()))
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            # Stream through. uvicorn's send() silently drops data once the caller has gone, so a
            # long body gets a watcher on receive() (started from the second chunk: small answers
            # never pay for it); when it sees http.disconnect we stop and close the upstream stream.
            length = resp.headers.get("content-length")
            left = int(length) if length and length.isdigit() else -1
            more = True
            watcher: asyncio.Future[Any] | None = None
            chunks = 0
            try:
                async for chunk in resp.aiter_raw():
                    if not chunk:
                        continue
                    chunks += 1
                    if watcher is None:
                        if chunks == 2:
                            watcher = asyncio.ensure_future(_until_disconnect(receive))
                    elif watcher.done():
                        call.status = 499  # nginx's "client closed request", for the access log
                        log.info("caller went away mid-body; closing the upstream stream (request %s)",
                                 call.request_id)
                        return
                    left -= len(chunk)
                    more = left != 0
                    await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if more:
                    await send({"type": "http.response.body", "body": b""})
            finally:
                if watcher is not None:
                    watcher.cancel()
        except httpx.HTTPError as exc:
            # Mid-body failure: the status is already sent; abort so the caller sees a broken body.
            log.warning("upstream body failed (%s) for request %s", type(exc).__name__, call.request_id)
            raise
        finally:
            # No asyncio.shield (a task per request): both transports close without awaiting
            # anything cancellable (httpcore shields its own pool bookkeeping).
            await resp.aclose()
            if spooled is not None:
                spooled.close()

    async def _open(
        self, call: Call, route: Route, action: Forward, path: str, query: bytes,
        headers: list[tuple[str, str]], body: Any,
    ) -> httpx.Response:
        """Send with a bearer; replay once on 401; try the other instances on 404 when unsure."""
        assert self.upstream is not None and self.tokens is not None
        crns = [call.crn]
        if not call.instance_explicit and len(self.instances) > 1 and route.params:
            # A job/session id we have not seen (e.g. after a restart): it may live in another
            # instance. A 404 means nothing happened there, so asking the next one is safe.
            crns += [c for c in self.instances.values() if c != call.crn]
        for i, crn in enumerate(crns):
            resp = await self._open_once(
                call, route.method, path, query, [*headers, ("service-crn", crn)], body, action.timeout, action.creates
            )
            if resp.status_code != 404 or i == len(crns) - 1:
                break
            await resp.aclose()
        if crn != call.crn:
            call.crn, call.instance = crn, self.instance_by_crn[crn]
            if "job_id" in call.params or "session_id" in call.params:
                self.instance_of[call.params.get("job_id") or call.params["session_id"]] = call.instance
        return resp

    async def _open_once(
        self, call: Call, method: str, path: str, query: bytes, headers: list[tuple[str, str]], body: Any,
        timeout: Literal["default", "submit"] = "default", creates: bool = False,
    ) -> httpx.Response:
        assert self.upstream is not None and self.tokens is not None
        token = await self.tokens.get()
        resp = await self.upstream.open(
            method, path, query, [*headers, ("authorization", "Bearer " + token)], body,
            timeout=timeout, creates=creates, request_id=call.request_id,
        )
        if resp.status_code == 401:
            # The token was refused (revoked, clock skew): renew once and replay. Safe even for
            # creates: a 401 means the request did not run.
            await resp.aclose()
            self.tokens.invalidate(token)
            token = await self.tokens.get()
            resp = await self.upstream.open(
                method, path, query, [*headers, ("authorization", "Bearer " + token)], body,
                timeout=timeout, creates=creates, request_id=call.request_id,
            )
        return resp

    async def _fanout_list(
        self, call: Call, path: str, query: bytes, headers: list[tuple[str, str]], send: Callable
    ) -> None:
        """Classic listed a user's jobs across all hub/group/projects; the new API lists one instance.

        Ask every configured instance for the first offset+limit jobs, merge by creation time,
        then apply offset and limit, so paging (limit/offset, as the provider does) stays exact.
        """
        assert self.upstream is not None and self.tokens is not None
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        opts = dict(pairs)
        limit = _int(opts.get("limit"), 200, 1, 200)
        offset = _int(opts.get("offset"), 0, 0, 10**7)
        ascending = opts.get("sort", "").upper() == "ASC"
        rest = [(k, v) for k, v in pairs if k not in ("limit", "offset")]
        merged: list[dict[str, Any]] = []
        count = 0
        for name, crn in self.instances.items():
            need, got, sub_offset = offset + limit, [], 0
            while len(got) < need:
                q = urlencode([*rest, ("limit", str(min(200, need - len(got)))), ("offset", str(sub_offset))])
                resp = await self._open_once(call, "GET", path, q.encode(), [*headers, ("service-crn", crn)], None)
                try:
                    data = await resp.aread()
                finally:
                    await resp.aclose()
                if resp.status_code != 200:
                    call.crn, call.instance = crn, name
                    data = answers.classic_error(call, resp.status_code, data)
                    await self._send_reply(call, Reply(resp.status_code, data), send)
                    return
                doc = json.loads(data)
                page = [j for j in doc.get("jobs", []) if isinstance(j, dict)]
                sub_count = int(doc.get("count", len(page)))
                for j in page:
                    call.instance = name
                    answers.job_hgp(call, j)
                    self.instance_of[j.get("id", "")] = name
                got += page
                sub_offset += len(page)
                if not page or sub_offset >= sub_count:
                    break
            merged += got
            count += sub_count
        merged.sort(key=lambda j: str(j.get("created", "")), reverse=not ascending)
        call.instance, call.crn = self.settings.default_instance, self.instances[self.settings.default_instance]
        body = {"jobs": merged[offset : offset + limit], "count": count, "offset": offset, "limit": limit}
        await self._send_reply(call, Reply.json(body), send)

    def _select_instance(self, call: Call, doc: dict[str, Any] | None) -> None:
        """Legacy calls name their instance (provider=h/g/p, body hub/group/project, instance)."""
        name: str | None = None
        if b"provider" in call.query:
            values = query_values(call.query, "provider")
            name = values[0] if values else None
        if doc is not None:
            if all(isinstance(doc.get(k), str) for k in ("hub", "group", "project")):
                name = f"{doc['hub']}/{doc['group']}/{doc['project']}"
            elif isinstance(doc.get("instance"), str):
                name = doc["instance"]
        call.instance_explicit = bool(name)
        if not name and len(self.instances) > 1:
            ref = call.params.get("job_id") or call.params.get("session_id")
            name = self.instance_of.get(ref) if ref else None
            call.instance_explicit = bool(name)
        if not name:
            name = self.settings.default_instance
        crn = self.instances.get(name)
        if crn is None and name in self.instance_by_crn:
            crn, name = name, self.instance_by_crn[name]
        if crn is None:
            raise NotFound(
                f"unknown instance {name!r}: configure it under [instances] (hub/group/project = CRN)",
                code="unknown_instance",
            )
        call.instance, call.crn = name, crn

    async def _read_body(self, call: Call, receive: Callable, spooler: Spooler | None = None) -> Any:
        """The request body as bytes; with a `spooler`, a large one comes back as a SpooledBody."""
        limit = self.settings.max_body_bytes
        declared = call.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes (QCP_MAX_BODY_BYTES)")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise BadRequest("client disconnected while sending the body", code="client_disconnected")
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body over {limit} bytes (QCP_MAX_BODY_BYTES)")
                if spooler is not None:
                    spooler.add(chunk)
                else:
                    chunks.append(chunk)
                if not msg.get("more_body"):
                    return spooler.finish() if spooler is not None else b"".join(chunks)
        except BaseException:
            if spooler is not None:
                spooler.close()
            raise

    async def _send_reply(self, call: Call, reply: Reply, send: Callable) -> None:
        hdrs = list(reply.headers)
        if reply.content_type and reply.body:
            hdrs.append((b"content-type", reply.content_type))
        hdrs.append((b"content-length", str(len(reply.body)).encode()))
        hdrs.append((b"x-request-id", call.request_id.encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": hdrs})
        await send({"type": "http.response.body", "body": reply.body})

    async def _send_error(self, call: Call, err: ProxyError, send: Callable) -> None:
        hdrs = [(k.encode(), v.encode()) for k, v in err.headers.items()]
        await self._send_reply(call, Reply(err.status, err.render(call.request_id), hdrs), send)


async def _until_disconnect(receive: Callable) -> None:
    """Returns when the caller has gone (or the response is complete): uvicorn says http.disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(value))) if value is not None else default
    except ValueError:
        raise BadRequest(f"not an integer: {value!r}", code="invalid_query") from None


def build_ops_app(proxy: ProxyApp) -> FastAPI:
    """The proxy's own endpoints: health, readiness, route table. Not on the hot path."""
    ops = FastAPI(
        title="qiskit-classic-proxy",
        description="Classic IBM Quantum REST API -> new Qiskit Runtime REST API. Legacy paths are "
        "served at /, /api and /runtime; see /admin/routes.",
        version="0.1.0",
    )

    @ops.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @ops.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: a valid IAM token is in hand (or can be had now)."""
        if proxy.tokens is None:
            await proxy.startup()
        assert proxy.tokens is not None
        if not proxy.tokens.ready:
            try:
                await asyncio.wait_for(proxy.tokens.get(), timeout=proxy.settings.iam_timeout)
            except (ProxyError, asyncio.TimeoutError) as exc:
                reason = exc.message if isinstance(exc, ProxyError) else "IAM did not answer in time"
                return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready", "upstream": proxy.settings.effective_upstream_url})

    @ops.get("/admin/routes")
    async def routes() -> list[dict[str, Any]]:
        """The route table as data."""
        return [
            {"key": r.key, "section": r.section, "action": r.action.kind, "replacement": r.replacement}
            for r in proxy.table.routes
        ]

    return ops


def create_app(settings: Settings, **kw: Any) -> ProxyApp:
    app = ProxyApp(settings, **kw)
    _install_plugins(app)
    return app


def _install_plugins(app: ProxyApp) -> None:
    """Optional modules hook themselves in with `install(app)` (phase-out toolkit, metrics)."""
    import importlib

    for name in ("proxy.phaseout",):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.install(app)


def app_factory() -> ProxyApp:
    """For `uvicorn --factory` and multi-worker serving: settings come from env/QCP_CONFIG."""
    from .config import load_settings
    from .logs import configure

    settings = load_settings()
    configure(settings.log_level, settings.log_format)
    return create_app(settings)


__all__ = ["ProxyApp", "app_factory", "create_app"]

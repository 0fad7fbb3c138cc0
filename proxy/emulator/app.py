"""The emulator's ASGI app: request pipeline, fake IAM, admin endpoints and wire-level faults.

It is a small hand-written ASGI callable rather than a Starlette/FastAPI router for two reasons:
it is the upstream in benchmarks (every layer costs), and `drop`/`truncate` faults need the
server's own `send` callable, whose bound object (uvicorn's RequestResponseCycle, both the
httptools and the h11 flavour) holds the connection's transport. Framework middleware would
wrap `send` and hide it. `app.state.emulator` works as with Starlette.

Why one long module: the pipeline, fake IAM and wire faults share the raw `send`; one file keeps
that coupling in sight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from datetime import date
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import State

from .api import LEGACY_BODY_FIELDS, ROUTER, Ctx, Reply, Route, json_reply, no_content, text_reply
from .config import KNOWN_API_VERSIONS, OMITTED_API_VERSION, EmulatorConfig
from .faults import FaultConfigError, FaultRule
from .state import ApiError, Emulator, now_utc

log = logging.getLogger("proxy.emulator")

Scope = dict[str, Any]
Receive = Any
Send = Any

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OLDEST_VERSION = KNOWN_API_VERSIONS[0][0]
_FAULT_CODES: dict[int, int | str] = {
    400: "bad_request",
    401: 1200,
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


class ConnectionDropped(ConnectionError):
    """Raised instead of a silent drop when the server gives no access to its transport."""


# ---------------------------------------------------------------------------- ASGI helpers
def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """(body, client_gone)."""
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks), False


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


async def _sleep_unless_disconnected(delay: float, receive: Receive) -> bool:
    """Sleep `delay` s; stop early (returning True) if the client goes away meanwhile.

    A hung request must not outlive its client, or stopping the server waits for it.
    """
    sleeper = asyncio.ensure_future(asyncio.sleep(delay))
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, watcher):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    return watcher in done and sleeper not in done


def _reply_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    if reply.content_type:
        headers.append((b"content-type", reply.content_type.encode("latin-1")))
    if reply.status not in (204, 304):
        headers.append((b"content-length", str(len(reply.body)).encode()))
    for k, v in reply.headers.items():
        headers.append((k.lower().encode("latin-1"), str(v).encode("latin-1")))
    return headers


async def _send_reply(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": _reply_headers(reply)})
    await send({"type": "http.response.body", "body": b"" if reply.status in (204, 304) else reply.body})


def _raw_connection(send: Send) -> tuple[Any, Any] | None:
    """(uvicorn RequestResponseCycle, asyncio transport) behind `send`, if this is uvicorn."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(cycle, "disconnected"):
        return None
    return cycle, transport


async def _drop(send: Send) -> None:
    """Close the connection without a single response byte (FIN after the request was read).

    Marking the cycle disconnected first stops uvicorn from writing its own 500 or closing twice.
    """
    conn = _raw_connection(send)
    if conn is None:
        raise ConnectionDropped("emulated drop (server transport not reachable): no response sent")
    cycle, transport = conn
    cycle.disconnected = True
    transport.close()


def _raw_response(reply: Reply) -> tuple[bytes, bytes]:
    status = reply.status
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}".encode()]
    lines += [k + b": " + v for k, v in _reply_headers(reply)]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head, reply.body


async def _truncate(send: Send, reply: Reply) -> None:
    """Send the status line, headers (with the full Content-Length) and half the body, then close.

    An empty body (e.g. 204) is cut inside the header block instead, so the client never gets a
    complete response either way.
    """
    head, body = _raw_response(reply)
    conn = _raw_connection(send)
    if conn is None:
        await send({"type": "http.response.start", "status": reply.status, "headers": _reply_headers(reply)})
        if body:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise ConnectionDropped("emulated truncate (server transport not reachable)")
    cycle, transport = conn
    cycle.disconnected = True
    transport.write(head + body[: len(body) // 2] if body else head[: len(head) // 2])
    transport.close()  # close() flushes what was written, then sends FIN


def error_reply(err: ApiError, trace: str) -> Reply:
    reply = json_reply(err.payload(trace), err.status)
    reply.headers.update(err.headers)
    return reply


def _fault_reply(rule: FaultRule, trace: str) -> Reply:
    if rule.status in (204, 304):
        return Reply(rule.status, b"", None, dict(rule.headers or {}))
    if rule.body is not None:
        reply = json_reply(rule.body, rule.status)
    else:
        code = _FAULT_CODES.get(rule.status, "error")
        message = f"Injected fault: HTTP {rule.status}."
        if rule.status == 401:
            message = "You are not authorized to perform this action. (Injected fault.)"
        reply = error_reply(ApiError(rule.status, code, message), trace)
    reply.headers.update(rule.headers or {})
    return reply


# ---------------------------------------------------------------------------- the app
class EmulatorApp:
    """ASGI app serving /api/v1/** (new API), /identity/token (IAM) and /__emulator__/** (admin)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.state = State()
        self.state.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/api/"):
                await self._api(scope, receive, send)
            elif path == "/identity/token":
                await self._iam(scope, receive, send)
            elif path.startswith("/__emulator__/"):
                await self._admin(scope, receive, send)
            else:
                await _read_body(receive)
                await _send_reply(send, json_reply({"error": f"not found: {path}"}, 404))
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    # ------------------------------------------------------------------ new API
    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        em = self.emulator
        method: str = scope["method"]
        path: str = scope["path"]
        sub = path[4:]
        headers = _headers(scope)
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        raw, gone = await _read_body(receive)
        parsed: Any = None
        json_error = False
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError):
                json_error = True
        route, params, allowed = ROUTER.match(method, sub)
        trace = headers.get("x-request-id") or uuid.uuid4().hex
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body": parsed,
            "raw_body_len": len(raw),
            "route": route.template if route else None,
            "status": None,
            "fault": None,
            "trace": trace,
            "time": time.time(),
        }
        em.record(entry)
        if gone:
            entry["outcome"] = "client_disconnected"
            return

        def handle() -> Reply:
            return self._handle(
                scope, method, sub, route, params, allowed, query, headers, raw, parsed, json_error, trace
            )

        rule = em.take_rule(method, route.template if route else sub, sub)
        if rule is None:
            reply = handle()
            entry["status"] = reply.status
            await _send_reply(send, reply)
            return
        entry["fault"] = rule.action
        delay = rule.effective_delay
        if delay > 0 and await _sleep_unless_disconnected(delay, receive):
            entry["outcome"] = "client_disconnected"  # abandoned: the request was never handled
            return
        reply = _fault_reply(rule, trace) if rule.action == "status" else handle()
        entry["status"] = reply.status
        if rule.action == "drop":
            entry["outcome"] = "dropped"
            await _drop(send)
        elif rule.action == "truncate":
            entry["outcome"] = "truncated"
            await _truncate(send, reply)
        else:
            await _send_reply(send, reply)

    def _handle(
        self,
        scope: Scope,
        method: str,
        sub: str,
        route: Route | None,
        params: dict[str, str],
        allowed: list[str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
        parsed: Any,
        json_error: bool,
        trace: str,
    ) -> Reply:
        em = self.emulator
        try:
            if route is None:
                if allowed:
                    raise ApiError(
                        405,
                        "method_not_allowed",
                        f"Method {method} is not allowed on {sub}.",
                        headers={"Allow": ", ".join(allowed)},
                    )
                raise ApiError(404, "not_found", f"Not found: {sub}")
            self._check_leaks(headers, query)
            token = em.check_bearer(headers.get("authorization")) if route.auth else None
            inst = em.instance(headers.get("service-crn")) if route.crn else None
            version = self._api_version(headers) if route.auth else OMITTED_API_VERSION
            body = None
            if route.body and raw.strip():
                ctype = headers.get("content-type", "")
                if "json" not in ctype.lower():
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        f"Content-Type must be application/json, got {ctype or 'none'!r}.",
                    )
                if json_error:
                    raise ApiError(400, "bad_request", "Malformed JSON in request body.")
                body = parsed
                legacy = [
                    f
                    for f in LEGACY_BODY_FIELDS.get(f"{method} {route.template}", ())
                    if isinstance(body, dict) and f in body
                ]
                if legacy:
                    raise ApiError(
                        400,
                        "invalid_parameter",
                        f"Unsupported field(s) {', '.join(repr(f) for f in legacy)}: IBM Quantum Classic only; "
                        "the new API takes the instance from Service-CRN and the session TTL as 'max_ttl'.",
                    )
            ctx = Ctx(
                em=em,
                method=method,
                path=sub,
                params=params,
                query=query,
                headers=headers,
                body=body,
                base_url=self._base_url(scope, headers),
                api_version=version,
                token=token,
                inst=inst,
            )
            return route.handler(ctx)
        except ApiError as err:
            return error_reply(err, trace)
        except Exception:  # a bug here must still answer in the API's shape
            log.exception("emulator handler failed for %s %s", method, sub)
            return error_reply(ApiError(500, "internal_error", "Internal emulator error."), trace)

    @staticmethod
    def _check_leaks(headers: dict[str, str], query: dict[str, list[str]]) -> None:
        if "x-access-token" in headers:
            raise ApiError(
                400,
                "bad_request",
                "Header 'X-Access-Token' is an IBM Quantum Classic credential and must not reach the new API "
                "(it authenticates with 'Authorization: Bearer <IAM token>').",
            )
        if "provider" in query:
            raise ApiError(
                400,
                "invalid_parameter",
                "Query parameter 'provider' (hub/group/project) is IBM Quantum Classic only; "
                "the new API selects the instance with the Service-CRN header.",
            )

    def _api_version(self, headers: dict[str, str]) -> str:
        value = headers.get("ibm-api-version")
        if value is None:
            if self.emulator.config.require_api_version:
                raise ApiError(400, "bad_request", "Missing required header: IBM-API-Version (YYYY-MM-DD).")
            return OMITTED_API_VERSION
        value = value.strip()
        try:
            if not _DATE_RE.match(value):
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            raise ApiError(
                400, "bad_request", f"Invalid IBM-API-Version {value!r}: expected a date YYYY-MM-DD."
            ) from None
        if value < _OLDEST_VERSION:
            raise ApiError(400, "bad_request", f"Unsupported IBM-API-Version {value}: oldest is {_OLDEST_VERSION}.")
        return value

    @staticmethod
    def _base_url(scope: Scope, headers: dict[str, str]) -> str:
        host = headers.get("host")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"

    # ------------------------------------------------------------------ IAM
    async def _iam(self, scope: Scope, receive: Receive, send: Send) -> None:
        em = self.emulator
        started = now_utc()
        headers = _headers(scope)
        raw, gone = await _read_body(receive)
        form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        with em.lock:
            em.iam_calls += 1
            em.iam_requests.append(
                {
                    "method": scope["method"],
                    "headers": headers,
                    "form": form,
                    "raw_body_len": len(raw),
                    "time": time.time(),
                }
            )
            mode = em.iam_faults.take()
            delay = em.iam_faults.delay
        if gone:
            return
        if scope["method"] != "POST":
            await _send_reply(send, self._iam_error(405, "BXNIM0101E", "Method not allowed.", scope, headers, started))
            return
        rule = em.take_rule("POST", "/identity/token", "/identity/token", iam=True)
        if rule is not None and rule.effective_delay > 0:
            if await _sleep_unless_disconnected(rule.effective_delay, receive):
                return
        if mode == "slow" and await _sleep_unless_disconnected(delay, receive):
            return
        if rule is not None and rule.action == "status":
            reply = _fault_reply(rule, uuid.uuid4().hex)
        elif mode == "down":
            reply = self._iam_error(
                503, "BXNIM0003E", "The IAM service is temporarily unavailable.", scope, headers, started
            )
        elif mode == "reject":
            reply = self._iam_error(400, "BXNIM0415E", "Provided API key could not be found.", scope, headers, started)
        else:
            reply = self._iam_token(form, scope, headers, started)
        if mode == "drop" or (rule is not None and rule.action == "drop"):
            await _drop(send)
        elif rule is not None and rule.action == "truncate":
            await _truncate(send, reply)
        else:
            await _send_reply(send, reply)

    def _iam_token(self, form: dict[str, list[str]], scope: Scope, headers: dict[str, str], started: Any) -> Reply:
        grant = (form.get("grant_type") or [""])[-1]
        apikey = (form.get("apikey") or [""])[-1]
        if not grant:
            return self._iam_error(
                400, "BXNIM0109E", "Property missing or empty.", scope, headers, started,
                details="Property 'grant_type' is missing or empty.",
            )  # fmt: skip
        if grant != APIKEY_GRANT:
            return self._iam_error(
                400, "BXNIM0103E", f"Unsupported grant_type: {grant}.", scope, headers, started,
            )  # fmt: skip
        if not apikey:
            return self._iam_error(
                400, "BXNIM0109E", "Property missing or empty.", scope, headers, started,
                details="Property 'apikey' is missing or empty.",
            )  # fmt: skip
        if apikey not in self.emulator.config.api_keys:
            return self._iam_error(
                400, "BXNIM0415E", "Provided API key could not be found.", scope, headers, started,
                details="BXNIM0102E: Unable to find Object by apikey.",
            )  # fmt: skip
        return json_reply(self.emulator.issue_token(apikey))

    @staticmethod
    def _iam_error(
        status: int,
        code: str,
        message: str,
        scope: Scope,
        headers: dict[str, str],
        started: Any,
        *,
        details: str | None = None,
    ) -> Reply:
        ended = now_utc()
        client = scope.get("client") or ("", 0)
        body: dict[str, Any] = {"errorCode": code, "errorMessage": message}
        if details:
            body["errorDetails"] = details
        body["context"] = {
            "requestId": uuid.uuid4().hex,
            "requestType": "incoming.Identity_Token",
            "userAgent": headers.get("user-agent", ""),
            "clientIp": client[0],
            "url": f"http://{headers.get('host', '')}",
            "instanceId": "iamid-emulator",
            "threadId": "1",
            "host": "iam-emulator",
            "startTime": started.strftime("%d.%m.%Y %H:%M:%S:%f")[:-3] + " GMT",
            "endTime": ended.strftime("%d.%m.%Y %H:%M:%S:%f")[:-3] + " GMT",
            "elapsedTime": str(int((ended - started).total_seconds() * 1000)),
            "locale": "en_US",
            "clusterName": "iam-emulator",
        }
        return json_reply(body, status)

    # ------------------------------------------------------------------ admin
    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        what = scope["path"][len("/__emulator__/") :].strip("/")
        raw, _ = await _read_body(receive)
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            await _send_reply(send, json_reply({"error": "malformed JSON"}, 400))
            return
        try:
            reply = self._admin_reply(method, what, data)
        except (FaultConfigError, ValueError, TypeError) as exc:
            reply = json_reply({"error": str(exc)}, 400)
        except ApiError as err:
            reply = json_reply({"error": err.message}, err.status)
        if reply is None:
            reply = json_reply({"error": f"no admin endpoint {method} /__emulator__/{what}"}, 404)
        await _send_reply(send, reply)

    def _admin_reply(self, method: str, what: str, data: Any) -> Reply | None:
        em = self.emulator
        if what == "requests":
            if method == "GET":
                with em.lock:
                    return json_reply(list(em.requests))
            if method == "DELETE":
                em.clear_requests()
                return no_content()
        elif what == "iam_requests" and method == "GET":
            with em.lock:
                return json_reply(list(em.iam_requests))
        elif what == "state" and method == "GET":
            return json_reply(em.state())
        elif what == "faults":
            if method == "GET":
                return json_reply(em.faults())
            if method == "POST":
                return json_reply(em.set_faults_from_json(data if data is not None else {}))
            if method == "DELETE":
                em.clear_faults()
                return no_content()
        elif what == "reset" and method == "POST":
            em.reset(tokens=bool(isinstance(data, dict) and data.get("tokens")))
            return no_content()
        elif what == "tokens/revoke" and method == "POST":
            em.revoke_tokens()
            return no_content()
        elif what.startswith("jobs/") and what.endswith("/status") and method == "POST":
            if not isinstance(data, dict) or "status" not in data:
                raise ValueError('body must be {"status": ..., "reason"?: ..., "reason_code"?: ...}')
            job = em.set_job_status(
                what.split("/")[1],
                data["status"],
                reason=data.get("reason"),
                reason_code=data.get("reason_code"),
                reason_solution=data.get("reason_solution"),
            )
            return json_reply({"id": job.id, "status": job.status})
        elif what.startswith("objects/") and method == "GET":
            return text_reply("[]", content_type="application/json")
        return None


def create_emulator_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """A fresh emulator (own state) and its ASGI app; the state is `app.state.emulator`."""
    return EmulatorApp(Emulator(config))

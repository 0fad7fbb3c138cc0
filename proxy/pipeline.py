"""The request path, written once and in order. Every legacy request goes through `Pipeline.handle`:

1. normalize   the Classic path (strip /api, /runtime; refuse smuggling)       classic/routes.py
2. match       a route row (404/405/400 before anything is read)                classic/routes.py
3. identify    the caller: client token, Classic login, SDK                     classic/identity.py
4. policy      phase-out: route switched off or browned out (410)               phaseout/policy.py
5. act         gone (410) | local answer (classic/auth.py, classic/answers.py) | forward:
6. translate   read the body, pick the instance, rewrite (a pure function)      classic/rewrite.py, instances.py
7. forward     bearer + Service-CRN, send; replay once on 401                   upstream/
8. relay       stream back, or buffer and fix up where the row says so          classic/answers.py
9. record      access log, metrics, usage record                                logs.py, phaseout/

Phase-out headers (Deprecation, Sunset, Link) are added to the answer's start, whoever sends it.

Why one long module: the request path is meant to be read top to bottom in one file; each step
is a function under ~60 lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import httpx

from .asgi import HangupWatch, read_body, send_error, send_reply, until_disconnect
from .call import Call, Reply
from .classic import answers
from .classic.auth import AccessTokens, LegacyAuth
from .classic.bodystream import CAPTURE, SpooledBody, Spooler, stream_drops
from .classic.identity import Identity
from .classic.rewrite import UpstreamRequest, parse_json_object, translate_request
from .classic.routes import Forward, Local, Route, RouteTable, normalize
from .classic.routes import Gone as GoneAction
from .classic.throttle import FailureThrottle
from .config import Settings
from .errors import BadRequest, Gone, OutcomeUnknown, ProxyError, UpstreamError
from .instances import InstanceMemory
from .logs import log_access
from .phaseout.policy import PhaseOut
from .programs import RUNNERS, V1_PRIMITIVES, Programs, may_be_v1, restore_job
from .store import PostgresStore, is_postgres
from .submissions import Submissions, created_answer, mark, mark_spooled, not_found
from .upstream.client import Response, Upstream, raw_chunks, read, response_headers, whole_body
from .upstream.iam import TokenProvider

log = logging.getLogger("qiskit_classic_proxy")

#: A GET still waiting for the new API after this long stops when its caller hangs up.
HANGUP_WATCH_AFTER = 1.0
#: Caller headers that may go upstream; everything else (Authorization, X-Access-Token, Cookie...) stays.
PASS_HEADERS = ("accept", "accept-language", "x-qx-client-application", "parent-job-id")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Headers = list[tuple[str, str]]


class Pipeline:
    """The legacy request path. `upstream` and `tokens` are attached by the app at start-up."""

    def __init__(self, settings: Settings, table: RouteTable, phaseout: PhaseOut) -> None:
        self.settings = settings
        self.table = table
        self.phaseout = phaseout
        # Shared state (instance memory, logouts) lives in the usage database when it is PostgreSQL.
        self.store = PostgresStore(settings.usage_db) if is_postgres(settings.usage_db) else None
        if self.store is not None and phaseout.metrics is not None:
            self.store.on_state = phaseout.metrics.shared_state
        self.access_tokens = AccessTokens(settings, self.store)
        self.throttle = FailureThrottle(settings)  # wrong client tokens, shared by login and identify
        self.auth = LegacyAuth(settings, self.access_tokens, self.throttle)
        self.identity = Identity(settings, self.access_tokens, self.throttle)
        self.instances = InstanceMemory(settings, self.store)
        self.programs = Programs()
        self.submissions = Submissions(settings)
        self.upstream: Upstream | None = None
        self.tokens: TokenProvider | None = None
        self.local: dict[str, Callable[[Call, bytes], Awaitable[Reply]]] = {
            "version": self.auth.version,
            "login": self.auth.login,
            "me": self.auth.me,
            "network": self.auth.network,
            "logout": self.auth.logout,
            "ibmq_devices": lambda call, body: answers.device_configs(call, self._fetch),
            **answers.LOCAL,
            "job_type": lambda call, body: self.programs.job_type(call, self._fetch_job),
        }
        self._check_table()

    def _check_table(self) -> None:
        for r in self.table.routes:
            a = r.action
            name = a.handler if isinstance(a, Local) else getattr(a, "sdk", None)
            if name and name not in self.local:
                raise ValueError(f"route {r.key}: no local handler {name!r}")
            if isinstance(a, Forward) and a.answer and a.answer not in answers.ANSWERS:
                raise ValueError(f"route {r.key}: no answer fix-up {a.answer!r}")

    # -- 1..9 ----------------------------------------------------------------------------------
    async def handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        call = _new_call(scope)
        started = False
        phaseout = self.phaseout

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                call.status = message["status"]
                if call.route is not None:
                    extra = [*phaseout.headers(call), *self.programs.headers(call)]
                    if extra:
                        message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        try:
            call.path = normalize(scope["path"], scope.get("raw_path"))  # 1. normalize
            match = self.table.match(call.method, call.path)  # 2. match
            call.route, call.params = match.route, match.params
            self.identity.identify(call, scope)  # 3. identify
            phaseout.check(call)  # 4. policy
            await self.act(call, match.route, receive, tracked_send)  # 5..8
        except ProxyError as err:
            if not started:
                await send_error(call, err, tracked_send)
        except Exception:
            log.exception("internal error handling request %s", call.request_id)
            if not started:
                await send_error(call, ProxyError("internal proxy error", code="internal_error"), tracked_send)
            else:
                raise
        finally:
            if self.settings.access_log:  # 9. record
                log_access(call)
            phaseout.record(call)

    async def act(self, call: Call, route: Route, receive: Callable, send: Callable) -> None:
        """5. What the row says: 410, a local answer, or forward."""
        action = route.action
        if isinstance(action, GoneAction):
            if action.sdk and call.is_legacy_sdk:
                call.action = "local"
                self.instances.select(call, None)
                await send_reply(call, await self.local[action.sdk](call, b""), send)
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
            body = await read_body(call, receive, self.settings.max_body_bytes)
            self.instances.select(call, None)
            await send_reply(call, await self.local[action.handler](call, body), send)
            return
        call.action = "forward"
        await self.forward(call, route, action, receive, send)

    async def forward(self, call: Call, route: Route, action: Forward, receive: Callable, send: Callable) -> None:
        """6..8: read and translate, send, relay the answer."""
        assert self.upstream is not None and self.tokens is not None
        doc, spooled = await self._read_json(call, action, receive)
        await self.instances.recall(call)
        self.instances.select(call, doc)  # 6. translate
        if call.program is not None and doc is not None:  # a V1 job: ISA transpile with the extra
            doc = await self.programs.transpile(call, doc, self._fetch_configuration)
        marker = None
        if doc is not None and self._marks(action):  # exactly once: proxy/submissions.py
            try:
                marker = mark(doc) if spooled is None else mark_spooled(doc, spooled)
            except BaseException:
                if spooled is not None:
                    spooled.close()
                raise
        req = translate_request(route, call.params, call.query, doc if spooled is None else None)
        body: bytes | SpooledBody | None = spooled if spooled is not None else req.body
        call.upstream = req.label
        if action.answer == "results" and "job_id" in call.params:
            call.program = await self.programs.lookup(call, call.params["job_id"], self._fetch_job)
        answer = self.programs.answer(call, action.answer, answers.ANSWERS.get(action.answer or ""))
        headers = self._upstream_headers(call, buffered=answer is not None, has_body=body is not None)
        if action.fanout and not call.instance_explicit and self.instances.several:
            await self._fanout_list(call, req.path, req.query, headers, send)
            return
        watch = HangupWatch(receive, HANGUP_WATCH_AFTER) if body is None and route.method in ("GET", "HEAD") else None
        try:  # 7. forward
            resp = await self._open(call, route, action, req, headers, body)
        except asyncio.CancelledError:
            if watch is None or not watch.fired:
                raise
            call.status = 499  # nginx's "client closed request": nobody left to answer
            log.info("caller went away; upstream %s cancelled (request %s)", call.upstream, call.request_id)
            return
        except OutcomeUnknown as err:
            if spooled is not None:
                spooled.close()
            if marker is None:
                raise
            await self._recover(call, marker, doc, answer, send, err.code)
            return
        except BaseException:
            if spooled is not None:
                spooled.close()
            raise
        finally:
            if watch is not None:
                watch.stop()
        if marker is not None and resp.status_code >= 500:
            await resp.aclose()  # the job may exist all the same, and a 5xx makes the SDKs resubmit
            await self._recover(call, marker, doc, answer, send, f"HTTP {resp.status_code}")
            return
        try:  # 8. relay
            status = resp.status_code
            is_json_error = status >= 400 and "json" in resp.headers.get("content-type", "")
            if (answer and answer.when(call, status)) or is_json_error:
                try:
                    await self._relay_fixed(call, resp, answer, send)
                except UpstreamError:
                    if marker is None:
                        raise
                    await resp.aclose()  # the answer broke off: nothing was sent yet, look for the job
                    await self._recover(call, marker, doc, answer, send, "answer broken off")
            else:
                await self._relay_stream(call, resp, receive, send)
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

    # -- 6. translate --------------------------------------------------------------------------
    async def _read_json(
        self, call: Call, action: Forward, receive: Callable
    ) -> tuple[dict[str, Any] | None, SpooledBody | None]:
        """The JSON body (or the captured keys of a spooled one); V1 programs become V2 ones."""
        if action.body is None:
            return None, None
        # Bodies over STREAM_THRESHOLD (job submissions can be 100 MB+) are validated and
        # filtered while they arrive, into a spool; `captured` has the few values needed here.
        drops = stream_drops(action.body)
        s = self.settings
        capture = CAPTURE
        if drops is not None and self._marks(action):  # tags go back with the marker (mark_spooled)
            drops, capture = drops | {"tags"}, CAPTURE | {"tags"}
        spooler = Spooler(drops, capture=capture, max_depth=s.max_json_depth) if drops is not None else None
        raw = await read_body(call, receive, s.max_body_bytes, spooler)
        spooled = raw if isinstance(raw, SpooledBody) else None
        doc = raw.captured if spooled is not None else parse_json_object(raw, s.max_json_depth, s.max_json_elements)
        program = doc.get("program_id")
        if action.creates and isinstance(program, str) and (program in RUNNERS or program in V1_PRIMITIVES):
            return self._translate_program(call, doc, spooled)
        return doc, spooled

    def _translate_program(
        self, call: Call, doc: dict[str, Any], spooled: SpooledBody | None
    ) -> tuple[dict[str, Any], SpooledBody | None]:
        """V1 primitive / backend.run submissions -> SamplerV2/EstimatorV2 (proxy/programs/)."""
        if spooled is not None:
            if doc.get("program_id") not in RUNNERS and (not may_be_v1(call) or _has_key(spooled, b'"pubs"')):
                return doc, spooled  # a large V2 body: keep streaming it
            try:
                spooled.file.seek(0)
                doc = parse_json_object(spooled.file.read())
            finally:
                spooled.close()
        policy = self.settings.routes.get(call.route.key) if call.route else None
        return self.programs.submission(call, doc, policy is None or policy.programs == "translate"), None

    async def _fetch_configuration(self, call: Call, backend: str) -> tuple[int, dict[str, Any] | None]:
        """`GET /v1/backends/{name}/configuration` for the ISA transpile (programs.transpile)."""
        headers = [*self._upstream_headers(call, buffered=True, has_body=False), ("service-crn", call.crn)]
        resp = await self._open_once(call, "GET", f"/v1/backends/{backend}/configuration", b"", headers, None)
        try:
            data = await resp.aread()
        finally:
            await resp.aclose()
        doc = json.loads(data) if resp.status_code == 200 and data else None
        return resp.status_code, doc if isinstance(doc, dict) else None

    async def _fetch_job(self, call: Call, job_id: str, params: bool) -> tuple[int, dict[str, Any] | None]:
        """`GET /v1/jobs/{id}` for the translation's bookkeeping (programs.lookup / job_type)."""
        headers = self._upstream_headers(call, buffered=True, has_body=False)
        query = b"" if params else b"exclude_params=true"
        mem = self.instances
        crns = [call.crn]
        if not call.instance_explicit and mem.several:  # as in _open: an unknown job may be elsewhere
            crns += [c for c in mem.crns.values() if c != call.crn]
        for crn in crns:
            hdrs = [*headers, ("service-crn", crn)]
            resp = await self._open_once(call, "GET", f"/v1/jobs/{job_id}", query, hdrs, None)
            try:
                data = await resp.aread()
            finally:
                await resp.aclose()
            if resp.status_code != 404:
                break
        if resp.status_code == 200 and crn != call.crn:
            call.crn, call.instance = crn, mem.by_crn[crn]
            mem.put(job_id, call.instance)
        doc = json.loads(data) if resp.status_code == 200 and data else None
        return resp.status_code, doc if isinstance(doc, dict) else None
    def _marks(self, action: Forward) -> bool:
        """Does this row's forward get an exactly-once marker (job submissions)?"""
        return action.creates and action.path == "/v1/jobs" and self.submissions.enabled

    def _upstream_headers(self, call: Call, *, buffered: bool, has_body: bool) -> Headers:
        """Caller headers that may pass, plus the proxy's own; identity headers come in `_open`."""
        h = call.headers
        headers = [(k, h[k]) for k in PASS_HEADERS if k in h]
        headers += [
            ("ibm-api-version", self.settings.api_version),
            ("x-request-id", call.request_id),
            ("user-agent", "qiskit-classic-proxy/0.1"),
            ("accept-encoding", "identity" if buffered else h.get("accept-encoding", "identity")),
        ]
        if has_body:
            headers.append(("content-type", "application/json"))
        return headers

    # -- 7. forward ----------------------------------------------------------------------------
    async def _open(
        self, call: Call, route: Route, action: Forward, req: UpstreamRequest, headers: Headers, body: Any
    ) -> Response:
        """Send with a bearer; replay once on 401; try the other instances on 404 when unsure."""
        mem = self.instances
        crns = [call.crn]
        if not call.instance_explicit and mem.several and route.params:
            # A job/session id we have not seen (e.g. after a restart): it may live in another
            # instance. A 404 means nothing happened there, so asking the next one is safe.
            crns += [c for c in mem.crns.values() if c != call.crn]
        for i, crn in enumerate(crns):
            resp = await self._open_once(
                call, req.method, req.path, req.query, [*headers, ("service-crn", crn)], body,
                action.timeout, action.creates,
            )
            if resp.status_code != 404 or i == len(crns) - 1:
                break
            await resp.aclose()
        if crn != call.crn:
            call.crn, call.instance = crn, mem.by_crn[crn]
            if "job_id" in call.params or "session_id" in call.params:
                mem.put(call.params.get("job_id") or call.params["session_id"], call.instance)
                await mem.share()
        return resp

    async def _open_once(
        self, call: Call, method: str, path: str, query: bytes, headers: Headers, body: Any,
        timeout: Literal["default", "submit"] = "default", creates: bool = False,
    ) -> Response:
        tokens = self.tokens
        assert tokens is not None
        token = tokens.cached() or await tokens.get()
        resp = await self._send_upstream(call, method, path, query, headers, token, body, timeout, creates)
        if resp.status_code == 401:
            # The token was refused (revoked, clock skew): renew once and replay. Safe even for
            # creates: a 401 means the request did not run.
            await resp.aclose()
            self.tokens.invalidate(token)
            token = await self.tokens.get()
            resp = await self._send_upstream(call, method, path, query, headers, token, body, timeout, creates)
        return resp

    async def _fetch(self, call: Call, path: str) -> tuple[int, bytes]:
        """One buffered GET for the call's instance, for local answers built from several calls."""
        headers = [*self._upstream_headers(call, buffered=True, has_body=False), ("service-crn", call.crn)]
        resp = await self._open_once(call, "GET", path, b"", headers, None)
        try:
            return resp.status_code, await read(resp)
        finally:
            await resp.aclose()

    async def _send_upstream(
        self, call: Call, method: str, path: str, query: bytes, headers: Headers, token: str, body: Any,
        timeout: Literal["default", "submit"], creates: bool,
    ) -> Response:
        """One upstream exchange; notes how the new API failed (`call.upstream_error`, for metrics)."""
        assert self.upstream is not None
        try:
            resp = await self.upstream.open(
                method, path, query, [*headers, ("authorization", "Bearer " + token)], body,
                timeout=timeout, creates=creates, request_id=call.request_id,
            )
        except ProxyError as err:
            call.upstream_error = err.code
            raise
        if resp.status_code >= 500:
            call.upstream_error = "http_5xx"
        return resp

    async def _fanout_list(self, call: Call, path: str, query: bytes, headers: Headers, send: Callable) -> None:
        """Classic listed a user's jobs across all hub/group/projects; the new API lists one instance.

        Ask every configured instance for the first offset+limit jobs, merge by creation time,
        then apply offset and limit, so paging (limit/offset, as the provider does) stays exact.
        """
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        opts = dict(pairs)
        limit = _int(opts.get("limit"), 200, 1, 200)
        offset = _int(opts.get("offset"), 0, 0, 10**7)
        ascending = opts.get("sort", "").upper() == "ASC"
        rest = [(k, v) for k, v in pairs if k not in ("limit", "offset")]
        merged: list[dict[str, Any]] = []
        count = 0
        for name, crn in self.instances.crns.items():
            got = await self._list_instance(call, path, rest, headers, name, crn, offset + limit, send)
            if got is None:
                return  # an error answer was sent
            merged += got[0]
            count += got[1]
        await self.instances.share()
        merged.sort(key=lambda j: str(j.get("created", "")), reverse=not ascending)
        call.instance, call.crn = self.settings.default_instance, self.instances.crns[self.settings.default_instance]
        body = {"jobs": merged[offset : offset + limit], "count": count, "offset": offset, "limit": limit}
        await send_reply(call, Reply.json(body), send)

    async def _list_instance(
        self, call: Call, path: str, rest: list[tuple[str, str]], headers: Headers, name: str, crn: str,
        need: int, send: Callable,
    ) -> tuple[list[dict[str, Any]], int] | None:
        """The first `need` jobs of one instance and its count; None after answering an error."""
        got: list[dict[str, Any]] = []
        sub_offset = sub_count = 0
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
                await send_reply(call, Reply(resp.status_code, data), send)
                return None
            doc = json.loads(data)
            page = [j for j in doc.get("jobs", []) if isinstance(j, dict)]
            sub_count = int(doc.get("count", len(page)))
            for j in page:
                call.instance = name
                restore_job(answers.job_hgp(call, j))
                self.instances.put(j.get("id", ""), name)
            got += page
            sub_offset += len(page)
            if not page or sub_offset >= sub_count:
                break
        return got, sub_count

    async def _recover(
        self, call: Call, marker: str, doc: Any, answer: answers.Answer | None, send: Callable, cause: str
    ) -> None:
        """The submission's outcome is unknown: answer the job found under its marker, else 409."""
        headers = [*self._upstream_headers(call, buffered=True, has_body=False), ("service-crn", call.crn)]

        async def lookup(query: bytes) -> tuple[int, bytes]:
            resp = await self._open_once(call, "GET", "/v1/jobs", query, headers, None)
            try:
                return resp.status_code, await resp.aread()
            finally:
                await resp.aclose()

        backend = doc.get("backend") if isinstance(doc, dict) else None
        job = await self.submissions.find(lookup, marker, backend, after_5xx=cause.startswith("HTTP "))
        if job is None:
            log.warning("submission %s: outcome unknown (%s), not found under %s", call.request_id, cause, marker)
            raise not_found(call.request_id, marker, cause)
        log.warning("submission %s: answer lost (%s), found job %s under its marker", call.request_id, cause, job["id"])
        data = json.dumps(created_answer(job), separators=(",", ":")).encode()
        status = 200
        if answer is not None:
            status, data = answer.fix(call, status, data)
        await send_reply(call, Reply(status, data), send)

    # -- 8. relay ------------------------------------------------------------------------------
    async def _relay_fixed(
        self, call: Call, resp: Response, answer: answers.Answer | None, send: Callable
    ) -> None:
        """Buffer the answer, apply the row's fix-up (or make a Classic error), send it whole."""
        assert self.upstream is not None
        status = resp.status_code
        try:
            data = await read(resp)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"the new API broke off its answer ({type(exc).__name__}): "
                f"{self.upstream.host} ({call.upstream}, request {call.request_id})"
            ) from None
        if answer and answer.when(call, status):
            status, data = answer.fix(call, status, data)
            if call.seen_ids and self.instances.several:
                for seen in call.seen_ids:
                    self.instances.put(seen, call.instance)
                await self.instances.share()
        if status >= 400:
            data = answers.classic_error(call, status, data)
        hdrs = response_headers(resp.headers, drop_length=True)
        hdrs.append((b"content-length", str(len(data)).encode()))
        hdrs.append((b"x-request-id", call.request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": data})

    async def _relay_stream(self, call: Call, resp: Response, receive: Callable, send: Callable) -> None:
        """Stream through. uvicorn's send() silently drops data once the caller has gone, so a
        long body gets a watcher on receive() (started from the second chunk: small answers
        never pay for it); when it sees http.disconnect we stop and close the upstream stream."""
        hdrs = response_headers(resp.headers)
        hdrs.append((b"x-request-id", call.request_id.encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": hdrs})
        length = resp.headers.get("content-length")
        left = int(length) if length and length.isdigit() else -1
        more = True
        body = whole_body(resp)
        if body is not None:  # all of it is here already (small answers): one message, the last
            await send({"type": "http.response.body", "body": body})
            return
        watcher: asyncio.Future[Any] | None = None
        chunks = 0
        try:
            async for chunk in raw_chunks(resp):
                if not chunk:
                    continue
                chunks += 1
                if watcher is None:
                    if chunks == 2:
                        watcher = asyncio.ensure_future(until_disconnect(receive))
                elif watcher.done():
                    call.status = 499  # nginx's "client closed request", for the access log
                    log.info("caller went away mid-body; closing the upstream stream (request %s)", call.request_id)
                    return
                left -= len(chunk)
                more = left != 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if more:
                await send({"type": "http.response.body", "body": b""})
        finally:
            if watcher is not None:
                watcher.cancel()


def _has_key(spooled: SpooledBody, key: bytes) -> bool:
    """Does the spooled JSON contain `key` (quoted)? A byte scan: V2 bodies have "pubs", V1 ones do
    not (an escaped \"pubs\" inside a string does not match), and no large body is parsed for it."""
    tail = b""
    spooled.file.seek(0)
    while chunk := spooled.file.read(256 * 1024):
        if key in tail + chunk[: len(key)] or key in chunk:
            return True
        tail = chunk[-len(key) :]
    return False


def _new_call(scope: dict) -> Call:
    headers: dict[str, str] = {}
    for k, v in scope["headers"]:
        headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
    rid = headers.get("x-request-id", "")
    return Call(
        # 32 random hex digits like uuid4().hex, several times cheaper (no UUID object).
        request_id=rid if _REQUEST_ID.match(rid) else os.urandom(16).hex(),
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        query=scope.get("query_string", b""),
        client=(scope.get("client") or ("",))[0],
    )


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(value))) if value is not None else default
    except ValueError:
        raise BadRequest(f"not an integer: {value!r}", code="invalid_query") from None

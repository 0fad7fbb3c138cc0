"""`explain METHOD PATH`: a dry run. The request goes through a real ProxyApp whose upstream and
IAM are in-process fakes; what would have been sent is printed, nothing leaves the process."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
from rich.console import RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..app import ProxyApp
from ..call import Call
from ..classic.routes import RouteTable, describe, normalize
from ..config import Settings, load_settings
from ..errors import MethodNotAllowed, ProxyError
from ..phaseout.policy import CODE_BROWNOUT, PhaseOut, move_to
from ..terminal import GAP, emit_view, plain, write


class _DryRun(PhaseOut):
    """Phase-out as configured, but `record` keeps the call for the explanation instead of counting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Call] = []

    def record(self, call: Call) -> None:
        self.seen.append(call)


PLACEHOLDER_KEY = "explain-placeholder-api-key"  # not a secret: nothing leaves the process
PLACEHOLDER_CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/<account>:<instance>::"
_SECRET_HEADERS = frozenset({"authorization", "x-access-token", "cookie", "proxy-authorization", "apikey"})


def mask_headers(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for k, v in items:
        name = k.lower()
        if name in _SECRET_HEADERS:
            scheme = v.split(" ", 1)[0] if " " in v else ""
            v = f"{scheme} ***" if scheme else "***"
        out.append((name, v))
    return out


def path_methods(table: RouteTable, method: str, target: str) -> list[str]:
    """The methods the route table has for `target`'s path when `method` is not one of them (a 405),
    else []: so that a known path is never called "not a Classic endpoint"."""
    try:
        table.match(method.upper(), normalize(target.split("?", 1)[0]))
    except MethodNotAllowed as exc:
        return exc.headers["allow"].split(", ")
    except ProxyError:
        pass
    return []


def _decode_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


async def explain_request(
    settings: Settings, method: str, target: str, data: bytes | None = None, headers: list[tuple[str, str]] = ()
) -> dict[str, Any]:
    """Run a legacy request through a real ProxyApp whose upstream and IAM are in-process fakes."""
    notes: list[str] = []
    update: dict[str, Any] = {"usage_db": "", "metrics": False, "access_log": False}
    if settings.api_key is None or not settings.api_key.get_secret_value():
        from pydantic import SecretStr

        update["api_key"] = SecretStr(PLACEHOLDER_KEY)
    if not settings.service_crn:
        update["service_crn"] = PLACEHOLDER_CRN
        notes.append("no QCP_SERVICE_CRN configured: the Service-CRN shown is a placeholder")
    names = {k.lower() for k, _ in headers}
    if settings.client_tokens and not names & {"authorization", "x-access-token"}:
        update["client_tokens"] = []
        notes.append("client tokens are configured but none was given (--header): not checked in this dry run")
    s = settings.model_copy(update=update)

    captured: list[httpx.Request] = []

    class _Body(httpx.AsyncByteStream):  # a real stream: the proxy streams most answers back
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"{}"

    def upstream(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_Body())

    def iam(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": "dry-run-iam-token", "expires_in": 3600})

    table = RouteTable()
    po = _DryRun(s, table, rng=lambda: 1.0, record=False)  # a share-based brownout is reported, not rolled
    app = ProxyApp(
        s, transport=httpx.MockTransport(upstream), iam_transport=httpx.MockTransport(iam), table=table, phaseout=po
    )
    seen = po.seen
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 49152))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{s.port}") as client:
            request = client.build_request(method.upper(), target, content=data, headers=headers)
            for name in ("accept", "accept-encoding", "user-agent", "connection"):
                if name not in names:  # httpx defaults: send only what the caller would
                    del request.headers[name]
            resp = await client.send(request)
    finally:
        await app.shutdown()
    call = seen[0] if seen else None
    route = call.route if call else None
    plan = po.plans.get(route.key) if route else None
    if plan is not None and plan.policy == "brownout" and plan.share and call and call.action != "brownout":
        notes.append(f"brownout: {plan.share:.0%} of requests to this route are answered 410 {CODE_BROWNOUT}")
    program = getattr(call, "program", None) if call else None
    if program is not None:
        notes.append(f"a {program.kind} job: translated to the {program.program} V2 primitive body shown "
                     "(old programs on the new platform, README 'Old V1 / backend.run code')")  # fmt: skip
    out: dict[str, Any] = {
        "request": {
            "method": method.upper(),
            "target": target,
            "headers": mask_headers(headers),
            "body": _decode_body(data or b""),
        },
        "route": None,
        "outcome": call.action if call else "error",
        "upstream": None,
        "answer": None,
        "phaseout_headers": {k: resp.headers[k] for k in ("deprecation", "sunset", "link") if k in resp.headers},
        "notes": notes,
    }
    if route is None:
        allowed = path_methods(table, method, target)
        if allowed:
            out["allowed_methods"] = allowed
    if route is not None:
        out["route"] = {
            "key": route.key,
            "section": route.section,
            "action": route.action.kind,
            "maps_to": describe(route),
            "policy": plan.describe_policy() if plan else "translate",
            "move_to": move_to(route),
        }
        if call is not None and call.instance:
            out["route"]["instance"] = f"{call.instance} -> {call.crn}"
    if captured:
        # The forwarded request; lookups made for it first (a V1 job's backend configuration) come before.
        req = next((r for r in reversed(captured) if r.method == method.upper()), captured[0])
        out["upstream"] = {
            "method": req.method,
            "url": str(req.url),
            "headers": mask_headers((k, v) for k, v in req.headers.items()),
            "body": _decode_body(req.content),
        }
    else:
        out["answer"] = {
            "status": resp.status_code,
            "headers": [(k, v) for k, v in resp.headers.items() if k in ("content-type", "allow", "retry-after")],
            "body": _decode_body(resp.content),
        }
    return out


_LABEL = 16  # "Classic request" and the other labels; values start at column 18, as they always did


def _block(lines: list[str], indent: int, style: str = "") -> RenderableType:
    """Lines shown `indent` columns in; a line too long for the terminal wraps inside that margin."""
    return Padding(Text("\n".join(lines), style=style), (0, 0, 0, indent), expand=False)


def explain_view(x: dict[str, Any]) -> list[RenderableType]:
    """The explanation for a terminal: labelled rows whose values wrap, the answers indented."""
    req = x["request"]
    grid = Table.grid(padding=(0, GAP, 0, 0))
    grid.add_column(width=_LABEL, no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("Classic request", Text(f"{req['method']} {req['target']}"))
    for k, v in req["headers"]:
        grid.add_row("", Text(f"{k}: {v}"))
    if req["body"] is not None:
        grid.add_row("", Text("body: " + json.dumps(req["body"])))
    r = x["route"]
    if r is None and x.get("allowed_methods"):
        allowed = ", ".join(x["allowed_methods"])
        grid.add_row("Route", Text(f"none for {req['method']}: the Classic path is known, for {allowed} only "
                                   "(405 Method Not Allowed)", style="yellow"))
    elif r is None:
        grid.add_row("Route", Text("none: not a Classic endpoint the proxy knows", style="yellow"))
    else:
        grid.add_row("Route", Text(f"{r['key']}  [{r['section']}]  {r['action']}"))
        grid.add_row("", Text(r["maps_to"], style="dim"))
        grid.add_row("Policy", Text(r["policy"]))
        if "instance" in r:
            grid.add_row("Instance", Text(r["instance"]))
    items: list[RenderableType] = [grid]
    up = x["upstream"]
    if up is not None:
        items += [Text(""), Text("Upstream request (dry run: not sent)", style="bold green")]
        lines = [f"{up['method']} {up['url']}", *(f"{k}: {v}" for k, v in up["headers"])]
        items.append(_block(lines, 2))
        if up["body"] is not None:
            items += [_block(["body:"], 2), _block(json.dumps(up["body"], indent=2).splitlines(), 4)]
    else:
        a = x["answer"]
        how = {"local": "answered by the proxy", "gone": "410: removed from the new API",
               "disabled": "410: switched off by policy", "brownout": "410: brownout"}.get(x["outcome"], "refused")
        items += [Text(""), Text(f"Answer ({how}; nothing would be forwarded)", style="bold")]
        items.append(_block([f"HTTP {a['status']}"], 2, "green" if a["status"] < 400 else "red"))
        items.append(_block([f"{k}: {v}" for k, v in a["headers"]], 2))
        if a["body"] is not None:
            items.append(_block(json.dumps(a["body"], indent=2).splitlines(), 2))
    if x["phaseout_headers"]:
        items += [Text(""), Text("Phase-out headers on the answer", style="bold")]
        items.append(_block([f"{k}: {v}" for k, v in x["phaseout_headers"].items()], 2))
    for n in x["notes"]:
        items.append(Text(f"note: {n}", style="yellow"))
    return items


def format_explanation(x: dict[str, Any], width: int | None = None) -> str:
    """The explanation as plain text `width` columns wide (None: lines never wrap)."""
    return plain(explain_view(x), width)


#: An HTTP method is a token (RFC 9110 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")


class UsageProblem(Exception):
    """Bad input on the command line: one line on stderr, exit 2."""


def read_request(args: argparse.Namespace) -> tuple[str, str, bytes | None, list[tuple[str, str]]]:
    """METHOD, PATH, --data and --header checked up front: bad input is a sentence, never a traceback."""
    method = args.method.upper()
    if not _TOKEN.fullmatch(method):
        raise UsageProblem(f"METHOD {args.method!r} is not an HTTP method (e.g. GET, POST, DELETE)")
    path = args.path.strip()
    if not path:
        raise UsageProblem("PATH is empty: give a Classic path, e.g. /runtime/jobs")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise UsageProblem(f"PATH {path!r} contains control characters")
    path = path if path.startswith("/") else "/" + path
    # Bytes past ASCII travel percent-encoded, as a client sends them (the shell may pass non-UTF-8).
    path = "".join(chr(b) if b < 0x80 else f"%{b:02X}" for b in os.fsencode(path))
    headers: list[tuple[str, str]] = []
    for h in args.header or []:
        name, sep, value = h.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise UsageProblem(f"--header {h!r}: expected 'Name: value'")
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise UsageProblem(f"--header {h!r}: a header name is a token, its value printable ASCII")
        headers.append((name, value))
    data: bytes | None = None
    if args.data is not None:
        raw = args.data
        if raw.startswith("@"):
            try:
                with open(raw[1:], "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise UsageProblem(f"--data {raw}: cannot read {raw[1:]!r}: {exc.strerror or exc}") from None
        else:
            data = os.fsencode(raw)  # the bytes given, even when they are not UTF-8
        try:
            json.loads(data)
        except ValueError:
            print("qiskit-classic-proxy explain: --data is not valid JSON (sent as is)", file=sys.stderr)
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
    return method, path, data, headers


def cmd_explain(args: argparse.Namespace) -> int:
    overrides = {"upstream_url": args.upstream_url, "api_version": args.api_version}
    try:
        method, path, data, headers = read_request(args)
    except UsageProblem as exc:
        print(f"qiskit-classic-proxy explain: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(args.config, **overrides)
    try:
        result = asyncio.run(explain_request(settings, method, path, data, headers))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError, ValueError) as exc:
        print(f"qiskit-classic-proxy explain: {method} {path}: cannot be sent as an HTTP request ({exc})",
              file=sys.stderr)
        return 2
    if args.format == "json":
        write(json.dumps(result, indent=2))
    else:
        emit_view(explain_view(result))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", metavar="METHOD", help="GET, POST, ...")
    p.add_argument("path", metavar="PATH", help="Classic path with query, e.g. '/runtime/jobs?provider=h/g/p'")
    p.add_argument("--data", "-d", metavar="JSON", help="request body (JSON, or @FILE)")
    p.add_argument("--header", "-H", action="append", metavar="K:V", help="request header (repeatable)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="(default: text)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: QCP_CONFIG)")
    p.add_argument("--upstream-url", help="new API base (QCP_UPSTREAM_URL)")
    p.add_argument("--api-version", help="IBM-API-Version (QCP_API_VERSION)")

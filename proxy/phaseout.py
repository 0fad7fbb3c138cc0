"""Phase-out toolkit: tell legacy callers they are legacy, find who is left, switch routes off.

`install(app)` (called by `create_app`) plugs into the `ProxyApp` extension points:

* `response_headers`: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link` rel="deprecation"
  / rel="sunset" on every answer to a legacy route, precomputed per route at start-up.
* `before`: the per-route policy from settings `[routes."METHOD /template"]`: `translate`
  (default), `gone` (410 `endpoint_disabled`) or `brownout` (410 `endpoint_brownout` during
  windows and/or for a share of requests). Never 429: adaptive clients would back off silently.
* `hooks`: Prometheus metrics (`proxy.metrics`) and the usage record (`proxy.usage`); the hook
  only bumps in-memory counters, a background thread writes SQLite.
* `ops`: `/metrics`, `/admin/usage` (the migration report as JSON) and `/admin/policies`, behind
  the admin access rule (admin token, else loopback callers without a client token).

CLI (registered on import): `qiskit-classic-proxy explain METHOD PATH` (dry run, nothing is sent)
and `qiskit-classic-proxy report` (the migration report from the usage record).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from . import cli
from .config import ConfigError, RoutePolicy, Settings, is_loopback, load_settings
from .errors import Forbidden, Gone, ProxyError, Unauthorized
from .routes import Forward, Route, RouteTable, describe
from .routes import Gone as GoneAction
from .usage import UsageError, UsageRecorder, UsageRow, read_usage

if TYPE_CHECKING:
    from .app import ProxyApp
    from .call import Call
    from .metrics import CallerLabels, Metrics

log = logging.getLogger("qiskit_classic_proxy.phaseout")

#: IBM retired IBM Quantum Platform Classic (and the `ibm_quantum` channel) on 1 July 2025: a
#: Classic call is deprecated at the latest since then. Used when no deprecation date is set.
CLASSIC_RETIRED = datetime(2025, 7, 1, tzinfo=timezone.utc)

CODE_DISABLED = "endpoint_disabled"
CODE_BROWNOUT = "endpoint_brownout"

#: Paths of the ops app that the admin rule protects.
ADMIN_PREFIXES = ("/admin", "/metrics")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

#: Set by the wrapped Upstream.open when the new API fails; read (and reset) by the request hook.
_UPSTREAM_ERROR: ContextVar[str | None] = ContextVar("qcp_upstream_error", default=None)


# ============================================================================ dates and headers


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def deprecation_value(d: datetime) -> str:
    """RFC 9745: a Structured-Field Date, `@<unix seconds>`."""
    return f"@{int(_aware(d).timestamp())}"


def http_date(d: datetime) -> str:
    """RFC 8594 Sunset: an IMF-fixdate, e.g. `Wed, 30 Jun 2027 00:00:00 GMT`."""
    return format_datetime(_aware(d).astimezone(timezone.utc), usegmt=True)


def iso(ts: float | datetime | None) -> str | None:
    if ts is None:
        return None
    d = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, timezone.utc)
    return _aware(d).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(text: str) -> datetime:
    """ISO date or date-time ("Z" allowed; naive means UTC)."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    return _aware(datetime.fromisoformat(t))


def parse_window(text: str) -> tuple[float, float]:
    """ "START/END" (ISO 8601 interval of two instants) -> unix seconds."""
    start, sep, end = text.partition("/")
    if not sep:
        raise ValueError(f"brownout window {text!r}: expected START/END, e.g. 2026-12-01T10:00:00Z/2026-12-01T11:00Z")
    try:
        s, e = parse_instant(start).timestamp(), parse_instant(end).timestamp()
    except ValueError:
        raise ValueError(f"brownout window {text!r}: START and END must be ISO dates or date-times") from None
    if e <= s:
        raise ValueError(f"brownout window {text!r}: END is not after START")
    return s, e


def move_to(route: Route) -> str:
    """What a caller should use instead: "GET /v1/jobs/{job_id}", a path, or "removed"."""
    a = route.action
    if isinstance(a, Forward):
        return f"{route.method} {a.path}"
    return a.replacement or "removed"


# ============================================================================ per-route plan


@dataclass
class RoutePlan:
    """Everything the hot path needs for one route, computed once at start-up."""

    route: Route
    key: str
    policy: str  # translate | gone | brownout
    share: float
    windows: list[tuple[float, float]]
    deprecation: datetime
    sunset: datetime | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def state(self) -> str:
        """on | disabled (policy gone) | removed (410 by the route table, no local answer)."""
        if self.policy == "gone":
            return "disabled"
        a = self.route.action
        if isinstance(a, GoneAction) and not a.sdk:
            return "removed"
        return "on"

    def active_window(self, now: float) -> tuple[float, float] | None:
        for w in self.windows:
            if w[0] <= now < w[1]:
                return w
        return None

    def describe_policy(self) -> str:
        if self.policy != "brownout":
            return self.policy
        parts = []
        if self.share:
            parts.append(f"{self.share:.0%} of requests")
        parts += [f"{iso(s)}/{iso(e)}" for s, e in self.windows]
        return "brownout (" + ", ".join(parts or ["no share, no windows: inactive"]) + ")"

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.key,
            "section": self.route.section,
            "action": self.route.action.kind,
            "policy": self.policy,
            "state": self.state,
            "brownout_share": self.share,
            "brownout_windows": [f"{iso(s)}/{iso(e)}" for s, e in self.windows],
            "deprecation": iso(self.deprecation),
            "sunset": iso(self.sunset),
            "move_to": move_to(self.route),
        }


def _route_headers(deprecation: datetime, sunset: datetime | None, guide: str) -> list[tuple[bytes, bytes]]:
    links = [f'<{guide}>; rel="deprecation"; type="text/html"']
    out = [(b"deprecation", deprecation_value(deprecation).encode())]
    if sunset is not None:
        out.append((b"sunset", http_date(sunset).encode()))
        links.append(f'<{guide}>; rel="sunset"; type="text/html"')
    out.append((b"link", ", ".join(links).encode("latin-1")))
    return out


def build_plans(settings: Settings, table: RouteTable) -> dict[str, RoutePlan]:
    """Route key -> plan; ConfigError for unknown keys, bad windows, sunset before deprecation."""
    by_key = {r.key: r for r in table.routes}
    unknown = sorted(set(settings.routes) - set(by_key))
    if unknown:
        raise ConfigError(
            f"QCP_ROUTES (routes.{unknown[0]}): no such Classic route; keys are 'METHOD /template' "
            "as printed by `qiskit-classic-proxy routes`"
        )
    guide = settings.migration_guide_url
    plans: dict[str, RoutePlan] = {}
    for key, route in by_key.items():
        pol = settings.routes.get(key) or RoutePolicy()
        sunset = pol.sunset or settings.sunset_date
        dep = pol.deprecation or settings.deprecation_date
        if dep is None:
            dep = min(CLASSIC_RETIRED, _aware(sunset)) if sunset else CLASSIC_RETIRED
        if sunset is not None and _aware(sunset) < _aware(dep):
            raise ConfigError(f"QCP_ROUTES (routes.{key}): sunset is earlier than deprecation")
        try:
            windows = sorted(parse_window(w) for w in pol.brownout_windows)
        except ValueError as exc:
            raise ConfigError(f"QCP_ROUTES (routes.{key}.brownout_windows): {exc}") from None
        if pol.policy == "brownout" and not pol.brownout_share and not windows:
            log.warning("routes.%s: policy brownout without brownout_share or brownout_windows does nothing", key)
        plans[key] = RoutePlan(
            route=route,
            key=key,
            policy=pol.policy,
            share=pol.brownout_share if pol.policy == "brownout" else 0.0,
            windows=windows if pol.policy == "brownout" else [],
            deprecation=_aware(dep),
            sunset=_aware(sunset) if sunset else None,
            headers=_route_headers(dep, sunset, guide),
        )
    return plans


def render_routes(settings: Settings, table: RouteTable | None = None, markdown: bool = False) -> str:
    """The route table with each route's effective phase-out policy (for `routes`)."""
    table = table or RouteTable()
    plans = build_plans(settings, table)
    if markdown:
        lines = [
            "| Method | Classic path | Action | Policy | Deprecation | Sunset | New API |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in table.routes:
            p = plans[r.key]
            lines.append(
                f"| {r.method} | `{r.template}` | {r.action.kind} | {p.describe_policy()} | "
                f"{iso(p.deprecation)} | {iso(p.sunset) or '-'} | {move_to(r)} |"
            )
        return "\n".join(lines)
    lines = [f"{'METHOD':<7} {'CLASSIC PATH':<38} {'ACTION':<8} {'POLICY':<24} {'SUNSET':<21} NEW API / NOTE"]
    for r in table.routes:
        p = plans[r.key]
        lines.append(
            f"{r.method:<7} {r.template:<38} {r.action.kind:<8} {p.describe_policy():<24} "
            f"{iso(p.sunset) or '-':<21} {describe(r)}"
        )
    return "\n".join(lines)


# ============================================================================ the installed toolkit


class PhaseOut:
    """The per-app state: plans, labels, metrics, usage record. `app.phaseout` after install."""

    def __init__(
        self,
        app: ProxyApp,
        *,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        record: bool = True,
        usage_interval: float = 1.0,
    ) -> None:
        from .metrics import CallerLabels, Metrics

        self.app = app
        self.settings = s = app.settings
        self.rng = rng
        self.clock = clock
        self.plans = build_plans(s, app.table)
        # Hot-path lookups by route identity: no string building per request.
        self._by_id: dict[int, RoutePlan] = {id(p.route): p for p in self.plans.values()}
        self._policies: dict[int, RoutePlan] = {i: p for i, p in self._by_id.items() if p.policy != "translate"}
        self._headers: dict[int, list[tuple[bytes, bytes]]] = {i: p.headers for i, p in self._by_id.items()}
        self.labels: CallerLabels = CallerLabels()
        self.metrics: Metrics | None = Metrics() if s.metrics else None
        on_error = self.metrics.usage_flush_failures.inc if self.metrics else None
        self.usage: UsageRecorder | None = (
            UsageRecorder(s.usage_db or None, interval=usage_interval, on_flush_error=on_error) if record else None
        )
        self._hook_failed = False

    # -- hot path ----------------------------------------------------------------------------
    def response_headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        return self._headers.get(id(call.route), [])

    def check(self, call: Call) -> None:
        plan = self._policies.get(id(call.route))
        if plan is None:
            return
        if plan.policy == "gone":
            call.action = "disabled"
            raise self._refusal(
                plan, CODE_DISABLED, f"{plan.key} is switched off on this proxy (Classic API phase-out)"
            )
        window = plan.active_window(self.clock()) if plan.windows else None
        if window is not None or (plan.share and self.rng() < plan.share):
            call.action = "brownout"
            what = f"scheduled brownout until {iso(window[1])}" if window else "brownout"
            raise self._refusal(
                plan, CODE_BROWNOUT,
                f"{plan.key} is in a {what}: this Classic endpoint is being switched off; retrying will not help",
                {"brownout": {"until": iso(window[1]) if window else None, "share": plan.share}},
            )

    def _refusal(self, plan: RoutePlan, code: str, message: str, extra: dict[str, Any] | None = None) -> Gone:
        target = move_to(plan.route)
        hint = f"use {target}" if target != "removed" else "it has no replacement"
        body: dict[str, Any] = {
            "replacement": target if target != "removed" else "none",
            "docs": self.settings.migration_guide_url,
        }
        if plan.sunset is not None:
            body["sunset"] = iso(plan.sunset)
        body.update(extra or {})
        return Gone(f"{message}; {hint} (migration guide: {self.settings.migration_guide_url})", code=code, extra=body)

    def hook(self, call: Call) -> None:
        """After each request: metrics and usage counters. Never raises, never blocks."""
        try:
            route = call.route
            plan = self._by_id.get(id(route)) if route is not None else None
            label = plan.key if plan is not None else (route.key if route is not None else "unmatched")
            client = self.labels.client(call)
            err = _UPSTREAM_ERROR.get()
            if err is not None:
                _UPSTREAM_ERROR.set(None)
            if self.metrics is not None:
                caller = self.labels.caller(call, client)
                self.metrics.observe(label, caller, call.status, call.action, time.perf_counter() - call.started)
                if err is not None:
                    self.metrics.upstream_error(label, err)
            if self.usage is not None and route is not None:
                named = call.authenticated and call.caller != "anonymous"
                who = self.labels.bound(call.caller) if named else "anonymous"
                self.usage.record(who, client, label, call.status == 410, self.clock())
        except Exception:  # pragma: no cover - telemetry must never break a request
            if not self._hook_failed:
                log.exception("phase-out telemetry hook failed (reported once)")
                self._hook_failed = True

    # -- lifecycle ---------------------------------------------------------------------------
    async def startup(self) -> None:
        app = self.app
        if self.metrics is not None and app.tokens is not None:
            app.tokens.on_event = self.metrics.iam_event
        if self.metrics is not None and app.upstream is not None:
            app.upstream.open = _counting_open(app.upstream.open)  # type: ignore[method-assign]
        if self.usage is not None:
            try:
                self.usage.start()
            except UsageError as exc:
                log.error("cannot start: %s (QCP_USAGE_DB; \"\" disables the record)", exc)
                raise

    async def shutdown(self) -> None:
        if self.usage is not None:
            await asyncio.to_thread(self.usage.close)

    # -- admin -------------------------------------------------------------------------------
    def admin_denied(self, scope: dict[str, Any]) -> ProxyError | None:
        """None if the caller may read /admin/* and /metrics, else the error to answer."""
        s = self.settings
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", ()):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        authz = headers.get("authorization", "")
        bearer = authz[7:].strip() if authz[:7].lower() == "bearer " else ""
        if s.admin_token is not None and s.admin_token.get_secret_value():
            want = s.admin_token.get_secret_value().encode()
            if bearer and hmac.compare_digest(bearer.encode(), want):
                return None
            return Unauthorized(
                "admin endpoints need 'Authorization: Bearer <QCP_ADMIN_TOKEN>'",
                code="admin_token_required",
                headers={"www-authenticate": 'Bearer realm="qiskit-classic-proxy admin"'},
            )
        client = scope.get("client") or ("", 0)
        if not is_loopback(str(client[0])):
            return Forbidden("admin endpoints answer loopback callers only (or set QCP_ADMIN_TOKEN)",
                             code="admin_loopback_only")
        host = headers.get("host", "")
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if host and hostname not in _LOOPBACK_HOSTS and not s.public_url:
            return Forbidden(f"unexpected Host header {hostname!r} for a loopback admin endpoint", code="bad_host")
        tokens = self.app.client_tokens
        if tokens:
            access = headers.get("x-access-token", "")
            if (bearer and bearer in tokens) or (
                access and (access in tokens or self.app.access_tokens.verify(access) is not None)
            ):
                return Forbidden(
                    "client tokens do not open the admin endpoints (set QCP_ADMIN_TOKEN for remote admin access)",
                    code="admin_forbidden",
                )
        return None

    async def usage_report(self, since: datetime | None) -> dict[str, Any]:
        rows = await asyncio.to_thread(self.usage.rows) if self.usage is not None else []
        return build_report(rows, self.settings, self.app.table, since=since, source=self.settings.usage_db or "memory")


def _counting_open(open_: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap Upstream.open: remember (per request context) how the new API failed, for metrics."""

    async def open(*args: Any, **kwargs: Any) -> Any:
        try:
            resp = await open_(*args, **kwargs)
        except ProxyError as err:
            _UPSTREAM_ERROR.set(err.code)
            raise
        if resp.status_code >= 500:
            _UPSTREAM_ERROR.set("http_5xx")
        return resp

    return open


class AdminGuard:
    """ASGI middleware on the ops app: the admin rule for /admin/* and /metrics."""

    def __init__(self, app: Any, phaseout: PhaseOut) -> None:
        self.app = app
        self.phaseout = phaseout

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http" and scope["path"].startswith(ADMIN_PREFIXES):
            err = self.phaseout.admin_denied(scope)
            if err is not None:
                body = err.render("-")
                hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                hdrs += [(k.encode(), v.encode()) for k, v in err.headers.items()]
                await send({"type": "http.response.start", "status": err.status, "headers": hdrs})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install(
    app: ProxyApp,
    *,
    rng: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.time,
    record: bool = True,
) -> PhaseOut:
    """Plug the toolkit into `app`; ConfigError if the phase-out settings are inconsistent."""
    from fastapi.responses import JSONResponse, Response

    po = PhaseOut(app, rng=rng, clock=clock, record=record)
    app.response_headers.append(po.response_headers)
    if po._policies:
        app.before.append(po.check)
    if record:
        app.hooks.append(po.hook)
    app.on_startup.append(po.startup)
    app.on_shutdown.append(po.shutdown)
    app.phaseout = po  # type: ignore[attr-defined]

    ops = app.ops
    ops.add_middleware(AdminGuard, phaseout=po)

    if po.metrics is not None:
        metrics = po.metrics

        async def prometheus_metrics() -> Response:
            """Prometheus metrics (text exposition format)."""
            body, ctype = metrics.render()
            return Response(content=body, headers={"content-type": ctype})

        ops.add_api_route("/metrics", prometheus_metrics, methods=["GET"], response_class=Response)

    async def admin_usage(since: str | None = None) -> JSONResponse:
        """The migration report: who still calls which legacy endpoint; what can be switched off.

        `since`: YYYY-MM-DD, ISO date-time or an age like 30d (as `report --since`).
        """
        try:
            cutoff = parse_since(since) if since else None
        except ValueError as exc:
            err = ProxyError(str(exc), code="bad_since", status=400)
            return JSONResponse(err.body("-"), status_code=400)
        return JSONResponse(await po.usage_report(cutoff))

    async def admin_policies() -> list[dict[str, Any]]:
        """Each legacy route's effective phase-out policy and dates."""
        return [p.as_dict() for p in po.plans.values()]

    ops.add_api_route("/admin/usage", admin_usage, methods=["GET"])
    ops.add_api_route("/admin/policies", admin_policies, methods=["GET"])
    return po


# ============================================================================ the migration report


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """YYYY-MM-DD, an ISO date-time, or a relative age like "30d" / "12h"."""
    m = re.fullmatch(r"\s*(\d+)\s*([dhw])\s*", text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": timedelta(days=n), "h": timedelta(hours=n), "w": timedelta(weeks=n)}[unit]
        return (now or datetime.now(timezone.utc)) - delta
    try:
        return parse_instant(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected YYYY-MM-DD, an ISO date-time or an age like 30d") from None


def build_report(
    rows: Iterable[UsageRow],
    settings: Settings,
    table: RouteTable | None = None,
    *,
    since: datetime | None = None,
    source: str = "",
    now: float | None = None,
) -> dict[str, Any]:
    """Who still calls which legacy endpoint, what to move to, and which routes can go."""
    table = table or RouteTable()
    plans = build_plans(settings, table)
    guide = settings.migration_guide_url
    cutoff = since.timestamp() if since else None
    rows = list(rows)
    in_use: list[dict[str, Any]] = []
    last_by_endpoint: dict[str, float] = {}
    for r in rows:
        last_by_endpoint[r.endpoint] = max(last_by_endpoint.get(r.endpoint, 0.0), r.last_seen)
        if cutoff is not None and r.last_seen < cutoff:
            continue
        plan = plans.get(r.endpoint)
        in_use.append(
            {
                "caller": r.caller,
                "client": r.client,
                "endpoint": r.endpoint,
                "count": r.count,
                "answered_410": r.gone,
                "first_seen": iso(r.first_seen),
                "last_seen": iso(r.last_seen),
                "move_to": move_to(plan.route) if plan else "unknown (not in this proxy's route table)",
                "policy": plan.policy if plan else "-",
                "guide": guide,
            }
        )
    in_use.sort(key=lambda d: (d["caller"], d["client"], d["endpoint"]))
    ready: list[dict[str, Any]] = []
    off: list[dict[str, Any]] = []
    for key, plan in plans.items():
        last = last_by_endpoint.get(key)
        if last is not None and (cutoff is None or last >= cutoff):
            continue
        entry = {"endpoint": key, "last_seen": iso(last), "state": plan.state, "policy": plan.policy,
                 "move_to": move_to(plan.route)}
        (ready if plan.state == "on" else off).append(entry)
    return {
        "generated_at": iso(now if now is not None else time.time()),
        "record": source,
        "since": iso(since),
        "guide": guide,
        "in_use": in_use,
        "ready_to_switch_off": ready,
        "already_off": off,
        "summary": {
            "callers": len({(d["caller"], d["client"]) for d in in_use}),
            "endpoints_in_use": len({d["endpoint"] for d in in_use}),
            "requests": sum(d["count"] for d in in_use),
            "ready_to_switch_off": len(ready),
        },
    }


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def format_report(report: dict[str, Any], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(report, indent=2)
    since = report["since"]
    ready_title = f"no traffic since {since}" if since else "no traffic recorded"
    cols = ("caller", "client", "endpoint", "count", "answered_410", "first_seen", "last_seen", "move_to")
    heads = ("CALLER", "CLIENT", "LEGACY ENDPOINT", "COUNT", "410s", "FIRST SEEN", "LAST SEEN", "MOVE TO")
    s = report["summary"]
    summary = (
        f"{s['callers']} caller(s), {s['endpoints_in_use']} legacy endpoint(s) in use, {s['requests']} request(s); "
        f"{s['ready_to_switch_off']} route(s) ready to switch off ({ready_title})"
    )
    if fmt == "markdown":
        out = ["# Classic API migration report", "",
               f"Generated {report['generated_at']} from `{report['record']}`"
               + (f", traffic since {since}" if since else "") + ".", "", summary, "",
               "## Legacy endpoints still in use", ""]
        if report["in_use"]:
            out.append("| " + " | ".join(heads) + " | Guide |")
            out.append("|" + "---|" * (len(heads) + 1))
            for d in report["in_use"]:
                cells = [_cell(d[c]).replace("|", "\\|") for c in cols]
                cells[2] = f"`{cells[2]}`"
                cells[7] = f"`{cells[7]}`" if d["move_to"] != "removed" else "removed"
                out.append("| " + " | ".join(cells) + f" | [migration guide]({d['guide']}) |")
        else:
            out.append("None.")
        out += ["", f"## Ready to switch off ({ready_title})", ""]
        if report["ready_to_switch_off"]:
            out += ["| Legacy endpoint | Last seen | Policy | Move to |", "|---|---|---|---|"]
            for d in report["ready_to_switch_off"]:
                out.append(f"| `{d['endpoint']}` | {_cell(d['last_seen'])} | {d['policy']} | {d['move_to']} |")
        else:
            out.append("None.")
        out += ["", f"Migration guide: {report['guide']}", ""]
        return "\n".join(out)
    # table
    rows = [[_cell(d[c]) for c in cols] for d in report["in_use"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    out = [f"Classic API migration report — {report['generated_at']} — record {report['record']}", summary, ""]
    out.append("Legacy endpoints still in use:")
    if rows:
        out.append("  " + "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
        for r in rows:
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    else:
        out.append("  none")
    out += ["", f"Ready to switch off ({ready_title}; set policy = \"gone\" or a brownout in [routes]):"]
    if report["ready_to_switch_off"]:
        for d in report["ready_to_switch_off"]:
            last = f"last seen {d['last_seen']}" if d["last_seen"] else "never seen"
            out.append(f"  {d['endpoint']:<44} {last:<30} -> {d['move_to']}")
    else:
        out.append("  none")
    out += ["", f"Migration guide: {report['guide']}"]
    return "\n".join(out)


def cmd_report(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    path = args.db or settings.usage_db
    if not path:
        print("qiskit-classic-proxy report: no usage record: usage_db is \"\" (give --db PATH)", file=sys.stderr)
        return 1
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"qiskit-classic-proxy report: {exc}", file=sys.stderr)
        return 2
    try:
        rows = read_usage(path)
    except UsageError as exc:
        print(f"qiskit-classic-proxy report: {exc}", file=sys.stderr)
        return 1
    print(format_report(build_report(rows, settings, since=since, source=path), args.format))
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: QCP_CONFIG)")
    p.add_argument("--db", metavar="PATH", help="usage record (default: usage_db setting, QCP_USAGE_DB)")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table", help="(default: table)")
    p.add_argument(
        "--since", metavar="DATE",
        help="routes without traffic since DATE (YYYY-MM-DD, ISO date-time, or an age like 30d) are ready "
        "to switch off; callers last seen before DATE are left out",
    )


# ============================================================================ explain (dry run)

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
    import httpx

    from .app import ProxyApp

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

    app = ProxyApp(s, transport=httpx.MockTransport(upstream), iam_transport=httpx.MockTransport(iam))
    po = install(app, rng=lambda: 1.0, record=False)  # a share-based brownout is reported, not rolled
    seen: list[Call] = []
    app.hooks.append(seen.append)
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
        req = captured[0]
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


def format_explanation(x: dict[str, Any]) -> str:
    req = x["request"]
    lines = [f"Classic request   {req['method']} {req['target']}"]
    for k, v in req["headers"]:
        lines.append(f"                  {k}: {v}")
    if req["body"] is not None:
        lines.append("                  body: " + json.dumps(req["body"]))
    r = x["route"]
    if r is None:
        lines.append("Route             none: not a Classic endpoint the proxy knows")
    else:
        lines.append(f"Route             {r['key']}  [{r['section']}]  {r['action']}")
        lines.append(f"                  {r['maps_to']}")
        lines.append(f"Policy            {r['policy']}")
        if "instance" in r:
            lines.append(f"Instance          {r['instance']}")
    up = x["upstream"]
    if up is not None:
        lines += ["", "Upstream request (dry run: not sent)", f"  {up['method']} {up['url']}"]
        lines += [f"  {k}: {v}" for k, v in up["headers"]]
        if up["body"] is not None:
            lines.append("  body:")
            lines += ["    " + ln for ln in json.dumps(up["body"], indent=2).splitlines()]
    else:
        a = x["answer"]
        how = {"local": "answered by the proxy", "gone": "410: removed from the new API",
               "disabled": "410: switched off by policy", "brownout": "410: brownout"}.get(x["outcome"], "refused")
        lines += ["", f"Answer ({how}; nothing would be forwarded)", f"  HTTP {a['status']}"]
        lines += [f"  {k}: {v}" for k, v in a["headers"]]
        if a["body"] is not None:
            lines += ["  " + ln for ln in json.dumps(a["body"], indent=2).splitlines()]
    if x["phaseout_headers"]:
        lines += ["", "Phase-out headers on the answer"]
        lines += [f"  {k}: {v}" for k, v in x["phaseout_headers"].items()]
    for n in x["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    overrides = {"upstream_url": args.upstream_url, "api_version": args.api_version}
    settings = load_settings(args.config, **overrides)
    headers: list[tuple[str, str]] = []
    for h in args.header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            print(f"qiskit-classic-proxy explain: --header {h!r}: expected 'Name: value'", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    data: bytes | None = None
    if args.data is not None:
        raw = args.data
        if raw.startswith("@"):
            with open(raw[1:], "rb") as f:
                data = f.read()
        else:
            data = raw.encode()
        try:
            json.loads(data)
        except ValueError:
            print("qiskit-classic-proxy explain: --data is not valid JSON (sent as is)", file=sys.stderr)
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
    path = args.path if args.path.startswith("/") else "/" + args.path
    result = asyncio.run(explain_request(settings, args.method, path, data, headers))
    print(json.dumps(result, indent=2) if args.format == "json" else format_explanation(result))
    return 0


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", metavar="METHOD", help="GET, POST, ...")
    p.add_argument("path", metavar="PATH", help="Classic path with query, e.g. '/runtime/jobs?provider=h/g/p'")
    p.add_argument("--data", "-d", metavar="JSON", help="request body (JSON, or @FILE)")
    p.add_argument("--header", "-H", action="append", metavar="K:V", help="request header (repeatable)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="(default: text)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env: QCP_CONFIG)")
    p.add_argument("--upstream-url", help="new API base (QCP_UPSTREAM_URL)")
    p.add_argument("--api-version", help="IBM-API-Version (QCP_API_VERSION)")


cli.COMMANDS["explain"] = (
    "dry run: show how a Classic request would be translated (nothing is sent)", _explain_args, cmd_explain,
)
cli.COMMANDS["report"] = (
    "migration report from the usage record: who still calls what, what can be switched off",
    _report_args, cmd_report,
)

__all__ = [
    "CODE_BROWNOUT",
    "CODE_DISABLED",
    "PhaseOut",
    "build_plans",
    "build_report",
    "explain_request",
    "format_report",
    "install",
    "render_routes",
]

"""Phase-out at request time: tell legacy callers they are legacy, switch routes off, count who is left.

* `PhaseOut.headers`: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link` rel="deprecation"
  / rel="sunset" on every answer to a legacy route, precomputed per route at start-up.
* `PhaseOut.check`: the per-route policy from settings `[routes."METHOD /template"]`: `translate`
  (default), `gone` (410 `endpoint_disabled`) or `brownout` (410 `endpoint_brownout` during
  windows and/or for a share of requests). Never 429: adaptive clients would back off silently.
* `PhaseOut.record`: Prometheus metrics (`metrics.py`) and the usage record (`usage.py`); it
  only bumps in-memory counters, a background thread writes SQLite.

The admin endpoints are in `admin.py`, the migration report in `report.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from ..call import Call
from ..classic.routes import Forward, Route, RouteTable, move_to
from ..classic.routes import Gone as GoneAction
from ..config import ConfigError, RoutePolicy, Settings
from ..errors import Gone
from .metrics import CallerLabels, Metrics
from .usage import UsageError, UsageRecorder

if TYPE_CHECKING:
    from ..upstream.iam import TokenProvider

log = logging.getLogger("qiskit_classic_proxy.phaseout")

#: IBM retired IBM Quantum Platform Classic (and the `ibm_quantum` channel) on 1 July 2025: a
#: Classic call is deprecated at the latest since then. Used when no deprecation date is set.
CLASSIC_RETIRED = datetime(2025, 7, 1, tzinfo=timezone.utc)

CODE_DISABLED = "endpoint_disabled"
CODE_BROWNOUT = "endpoint_brownout"

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
    programs: str = "translate"  # job submissions: V1 programs translated to V2, or refused (#12)

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
        if self.programs != "translate" and self.policy != "brownout":
            return f"{self.policy}; V1 programs refused"
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
            "programs": self.programs,
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
            f"{settings.where('routes', unknown[0])}: no such Classic route; keys are 'METHOD /template' "
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
            raise ConfigError(f"{settings.where('routes', key)}: sunset is earlier than deprecation")
        try:
            windows = sorted(parse_window(w) for w in pol.brownout_windows)
        except ValueError as exc:
            raise ConfigError(f"{settings.where('routes', key, 'brownout_windows')}: {exc}") from None
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
            programs=pol.programs,
        )
    for key, plan in plans.items():
        action = plan.route.action
        if plan.programs != "translate" and not (isinstance(action, Forward) and action.creates):
            raise ConfigError(f"{settings.where('routes', key, 'programs')}: only job submissions translate programs")
    return plans


# ============================================================================ the request-time toolkit


class PhaseOut:
    """The per-app state: plans, labels, metrics, usage record (`app.phaseout`).

    The pipeline calls it by name: `check` (step 4), `headers` (on every legacy answer) and
    `record` (step 9); the app calls `startup` and `shutdown`.
    """

    def __init__(
        self,
        settings: Settings,
        table: RouteTable,
        *,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        record: bool = True,
        usage_interval: float = 1.0,
    ) -> None:
        self.settings = s = settings
        self.table = table
        self.rng = rng
        self.clock = clock
        self.plans = build_plans(s, table)
        # Hot-path lookups by route identity: no string building per request.
        self._by_id: dict[int, RoutePlan] = {id(p.route): p for p in self.plans.values()}
        self._policies: dict[int, RoutePlan] = {i: p for i, p in self._by_id.items() if p.policy != "translate"}
        self._headers: dict[int, list[tuple[bytes, bytes]]] = {i: p.headers for i, p in self._by_id.items()}
        self.labels: CallerLabels = CallerLabels()
        self.metrics: Metrics | None = Metrics() if s.metrics else None
        m = self.metrics
        self.usage: UsageRecorder | None = (
            UsageRecorder(
                s.usage_db or None,
                interval=usage_interval,
                on_flush_error=m.usage_flush_failures.inc if m else None,
                on_state=m.usage_state if m else None,
                on_fold=m.usage_folded.inc if m else None,
            )
            if record
            else None
        )
        self._record = record
        self._hook_failed = False

    # -- hot path ----------------------------------------------------------------------------
    def headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        """Deprecation, Sunset and Link for the call's route (precomputed)."""
        return self._headers.get(id(call.route), [])

    response_headers = headers

    def check(self, call: Call) -> None:
        """The route's policy: nothing, or Gone (410 endpoint_disabled / endpoint_brownout)."""
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

    def record(self, call: Call) -> None:
        """After each request: metrics and usage counters. Never raises, never blocks."""
        if not self._record:
            return
        try:
            route = call.route
            plan = self._by_id.get(id(route)) if route is not None else None
            label = plan.key if plan is not None else (route.key if route is not None else "unmatched")
            # One caller name (client-token name or "anonymous") and one client (the software)
            # for metrics and the usage report, as in the access log.
            client = self.labels.client(call)
            caller = self.labels.caller(call)
            err = call.upstream_error
            if self.metrics is not None:
                seconds = time.perf_counter() - call.started
                self.metrics.observe(label, caller, client, call.status, call.action, seconds)
                if err is not None:
                    self.metrics.upstream_error(label, err)
            if self.usage is not None and route is not None:
                self.usage.record(caller, client, label, call.status == 410, self.clock())
                if call.action == "translate_program":  # a V1 program run as V2 (proxy/programs/)
                    self.usage.record(caller, client, f"{label} [translate_program]", False, self.clock())
        except Exception:  # pragma: no cover - telemetry must never break a request
            if not self._hook_failed:
                log.exception("phase-out telemetry hook failed (reported once)")
                self._hook_failed = True

    # -- lifecycle ---------------------------------------------------------------------------
    async def startup(self, tokens: TokenProvider | None = None) -> None:
        """Count IAM exchanges, open the usage record (UsageError: the app must not start)."""
        if self.metrics is not None and tokens is not None:
            tokens.on_event = self.metrics.iam_event
        if self.usage is not None:
            try:
                self.usage.start()
            except UsageError as exc:
                log.error("cannot start: %s (QCP_USAGE_DB; \"\" disables the record)", exc)
                raise

    async def shutdown(self) -> None:
        if self.usage is not None:
            await asyncio.to_thread(self.usage.close)
        if self.metrics is not None:
            self.metrics.close()

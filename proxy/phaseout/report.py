"""The migration report: who still calls which legacy endpoint, what to move to, what can go.

Built from the usage record (`usage.py`) and the route plans (`policy.py`); served as JSON by
`/admin/usage` and printed by `qiskit-classic-proxy report`. `render_routes` is the route table
with each route's effective policy (`qiskit-classic-proxy routes`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from ..classic.routes import RouteTable, describe
from ..config import Settings
from .policy import build_plans, iso, move_to, parse_instant
from .usage import UsageRow


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

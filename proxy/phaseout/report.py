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
from itertools import groupby
from typing import Any

from rich.console import RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..classic.routes import SECTION_TITLES, RouteTable, describe_parts
from ..config import Settings
from ..terminal import GAP, UNBOUNDED, cell, fit, plain
from ..terminal import table as term_table
from .policy import build_plans, iso, move_to, parse_instant
from .usage import UsageRow

#: Colours of the route actions and policies on a terminal.
ACTION_STYLE = {"forward": "green", "local": "cyan", "gone": "red"}


def policy_style(policy: str) -> str:
    return "" if policy.startswith("translate") else "yellow" if policy.startswith("brownout") else "red"


def wrap_path(path: str, width: int) -> Text:
    """A path that is wider than its column, broken after a "/" rather than anywhere."""
    if len(path) <= width:
        return Text(path)
    lines: list[str] = []
    line = ""
    for seg in re.findall(r"/?[^/]*", path)[:-1] if path else []:
        if line and len(line) + len(seg) > width:
            lines.append(line)
            line = ""
        line += seg
    lines.append(line)
    return Text("\n".join(lines))


def routes_view(settings: Settings, table: RouteTable | None = None, width: int = UNBOUNDED) -> list[RenderableType]:
    """The route table for a terminal `width` wide, grouped under the migration guide's sections.
    The POLICY column appears when some route's policy is not the default, SUNSET when some has one."""
    table = table or RouteTable()
    plans = build_plans(settings, table)
    policies = {r.key: plans[r.key].describe_policy() for r in table.routes}
    show_policy = any(p != "translate" for p in policies.values())
    show_sunset = any(p.sunset for p in plans.values())
    heads = ["METHOD", "CLASSIC PATH", "ACTION", *(["POLICY"] if show_policy else []),
             *(["SUNSET"] if show_sunset else []), "NEW API / NOTE"]
    rows: list[tuple[str, list[Text]]] = []
    for r in table.routes:
        plan = plans[r.key]
        head, ops = describe_parts(r)
        target = Text(head)
        if ops:
            target.append(f"  [{'; '.join(ops)}]", style="dim")
        cells = [cell(r.method), cell(r.template), cell(r.action.kind, ACTION_STYLE.get(r.action.kind, ""))]
        if show_policy:
            cells.append(cell(policies[r.key], policy_style(policies[r.key])))
        if show_sunset:
            cells.append(cell(iso(plan.sunset) or "-"))
        rows.append((r.section, [*cells, target]))
    natural = [max(len(h), *(c[i].cell_len for _, c in rows)) for i, h in enumerate(heads)]
    minimum = [6, 8, 7, *([9] if show_policy else []), *([10] if show_sunset else []), 8]
    weight = [1.0, 1.0, 1.0, *([0.6] if show_policy else []), *([0.6] if show_sunset else []), 1.3]
    widths = fit(natural, minimum, max(width - GAP * (len(heads) - 1), len(heads)), weight)
    items: list[RenderableType] = []
    if not show_policy:
        items += [Text("Every route's policy: translate (no [routes] policy is set)"), Text("")]
    items.append(term_table(heads, widths))
    for name, group in groupby(rows, key=lambda x: x[0]):
        t = term_table(heads, widths, show_header=False)
        for _, cells in group:
            cells[1] = wrap_path(cells[1].plain, widths[1])
            t.add_row(*cells)
        items += [Text(""), Text(SECTION_TITLES.get(name, name), style="bold"), t]
    return items


def render_routes(
    settings: Settings, table: RouteTable | None = None, markdown: bool = False, width: int | None = None
) -> str:
    """The route table with each route's effective phase-out policy (for `routes`): Markdown, or
    plain text `width` columns wide (None: rows never wrap)."""
    table = table or RouteTable()
    if not markdown:
        return plain(routes_view(settings, table, width or UNBOUNDED), width)
    plans = build_plans(settings, table)
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


INDENT = 2


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)


def format_report(report: dict[str, Any], fmt: str = "table", width: int | None = None) -> str:
    """JSON, Markdown, or the table form as plain text `width` columns wide (None: rows never wrap)."""
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
    return plain(report_view(report, width or UNBOUNDED), width)


def _when(v: str | None) -> str:
    """An ISO instant with a space for the T, so that a narrow column wraps it between date and time."""
    return "-" if v is None else v.replace("T", " ")


_KEY = re.compile(r"(?:-> )?[A-Z]+ (/\S*)")


def wrap_key(key: str, width: int, style: str = "") -> Text:
    """ "GET /a/b/c" (or "-> GET /a/b") in a column `width` wide: the path broken after a "/"."""
    m = _KEY.fullmatch(key)
    if m is None or len(key) <= width:
        return Text(key, style=style)
    head = key[: m.start(1)]
    lines = wrap_path(m.group(1), max(width - len(head), 8)).plain.split("\n")
    first = head + lines[0] if len(head) + len(lines[0]) <= width else head.rstrip() + "\n" + lines[0]
    return Text("\n".join([first, *lines[1:]]), style=style)


def _in_use_table(in_use: list[dict[str, Any]], width: int) -> Table:
    """Who calls what: eight columns where they fit; in a narrower terminal the client goes under
    the caller and FIRST SEEN is left out (the JSON and Markdown forms have everything)."""
    wide_heads = ("CALLER", "CLIENT", "LEGACY ENDPOINT", "COUNT", "410s", "FIRST SEEN", "LAST SEEN", "MOVE TO")
    wide = [
        [d["caller"], d["client"], d["endpoint"], str(d["count"]), str(d["answered_410"]), _when(d["first_seen"]),
         _when(d["last_seen"]), d["move_to"]]
        for d in in_use
    ]
    natural = [max(len(h), *(len(r[i]) for r in wide)) for i, h in enumerate(wide_heads)]
    if sum(natural) + GAP * (len(natural) - 1) <= width:
        t = term_table(wide_heads, natural)
        for r, d in zip(wide, in_use, strict=True):
            t.add_row(*map(cell, r[:4]), cell(r[4], "red" if d["answered_410"] else ""), *map(cell, r[5:7]),
                      cell(r[7], "green"))
        return t
    heads = ("CALLER / CLIENT", "LEGACY ENDPOINT", "COUNT", "410s", "LAST SEEN", "MOVE TO")
    natural = [max(len(heads[0]), *(max(len(r[0]), len(r[1])) for r in wide)),
               max(len(heads[1]), *(len(r[2]) for r in wide)), 5, 4, max(len(heads[4]), *(len(r[6]) for r in wide)),
               max(len(heads[5]), *(len(r[7]) for r in wide))]
    widths = fit(natural, [15, 14, 5, 4, 10, 12], max(width - GAP * (len(heads) - 1), len(heads)),
                 [1.2, 1.5, 1, 1, 0.6, 1.5])
    t = term_table(heads, widths)
    for r, d in zip(wide, in_use, strict=True):
        who = Text(r[0])
        who.append("\n" + r[1], style="dim")
        t.add_row(who, wrap_key(r[2], widths[1]), cell(r[3]), cell(r[4], "red" if d["answered_410"] else ""),
                  cell(r[6]), wrap_key(r[7], widths[5], "green"))
    return t


def report_view(report: dict[str, Any], width: int = UNBOUNDED) -> list[RenderableType]:
    """The report's table form for a terminal `width` wide: cells wrap, rows do not."""
    since = report["since"]
    ready_title = f"no traffic since {since}" if since else "no traffic recorded"
    s = report["summary"]
    summary = (
        f"{s['callers']} caller(s), {s['endpoints_in_use']} legacy endpoint(s) in use, {s['requests']} request(s); "
        f"{s['ready_to_switch_off']} route(s) ready to switch off ({ready_title})"
    )
    items: list[RenderableType] = [
        Text(f"Classic API migration report — {report['generated_at']} — record {report['record']}"),
        Text(summary), Text(""), Text("Legacy endpoints still in use:", style="bold"),
    ]
    if report["in_use"]:
        items.append(Padding(_in_use_table(report["in_use"], width - INDENT), (0, 0, 0, INDENT), expand=False))
    else:
        items.append(Text("  none"))
    items += [Text(""), Text(f"Ready to switch off ({ready_title}; set policy = \"gone\" or a brownout in [routes]):",
                             style="bold")]
    if report["ready_to_switch_off"]:
        ready = [
            (d["endpoint"], f"last seen {d['last_seen']}" if d["last_seen"] else "never seen", f"-> {d['move_to']}")
            for d in report["ready_to_switch_off"]
        ]
        natural = [max(len(r[i]) for r in ready) for i in range(3)]
        room = max(width - INDENT - GAP * 2, 3)
        widths = fit(natural, [16, 10, 12], room, [1.2, 1, 1])
        t = term_table(("", "", ""), widths, show_header=False)
        for key, last, move in ready:
            t.add_row(wrap_key(key, widths[0]), cell(last), wrap_key(move, widths[2], "green"))
        items.append(Padding(t, (0, 0, 0, INDENT), expand=False))
    else:
        items.append(Text("  none"))
    items += [Text(""), Text(f"Migration guide: {report['guide']}")]
    return items

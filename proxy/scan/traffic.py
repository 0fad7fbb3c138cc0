"""Join traffic and code: which findings produce the legacy routes the usage record still sees.

A finding explains a route when its rule (or the matched path) produces that route, the
calling software is the rule's SDK, and the client version could run that code: a rule with
`max_client` (V1 primitives, <= 0.27) and the file's own pins (requirements, pyproject) narrow
the versions. A route no finding explains is "called by code outside this tree".
"""

from __future__ import annotations

import re
from typing import Any

from packaging.specifiers import SpecifierSet

from .analyzer import Finding, ScanResult
from .project import admits
from .rules import ANY_ROUTE, BY_CODE, IMPORTED

_CLIENT = re.compile(r"^(?P<sdk>[a-z_]+?)(?:-(?P<version>\d+(?:\.\d+)*))?$")
_DIST = {"qiskit_ibm_runtime": "qiskit-ibm-runtime", "qiskit_ibm_provider": "qiskit-ibm-provider"}


def parse_client(client: str) -> tuple[str, tuple[int, ...]]:
    """'qiskit_ibm_runtime-0.40' -> ('qiskit_ibm_runtime', (0, 40)); 'curl' -> ('curl', ())."""
    m = _CLIENT.match(client or "")
    if not m:
        return client, ()
    v = m.group("version")
    return m.group("sdk"), tuple(int(p) for p in v.split(".")) if v else ()


def explains(finding: Finding, endpoint: str, client: str, pins: dict[str, str],
             sdks: tuple[str, ...] | None = None) -> bool:
    """Could this finding's code have sent this request? (`sdks`: what the file imports; None = not Python.)"""
    rule = BY_CODE[finding.code]
    if endpoint not in finding.routes and ANY_ROUTE not in finding.routes:
        return False
    sdk, version = parse_client(client)
    if rule.sdk == IMPORTED:
        if sdks is not None and sdk not in sdks:
            return False
    elif rule.sdk and sdk != rule.sdk:
        return False
    if sdks is not None and sdk in _DIST and sdk not in sdks:
        return False  # an SDK's traffic comes from files that import it
    if rule.max_client is not None and version and version[:2] > rule.max_client[:2]:
        return False
    pin = pins.get(_DIST.get(sdk, ""))
    return not (pin and version and not admits(SpecifierSet(pin), version))


def join(report: dict[str, Any], scan: ScanResult) -> dict[str, Any]:
    """The migration report's rows with the code behind each, and each finding with its traffic."""
    routes: list[dict[str, Any]] = []
    seen: dict[int, list[str]] = {}
    for row in report["in_use"]:
        hits = [
            (i, f) for i, f in enumerate(scan.findings)
            if explains(f, row["endpoint"], row["client"], scan.pins.get(f.path, {}), scan.sdks.get(f.path))
        ]
        for i, _ in hits:
            seen.setdefault(i, []).append(f"{row['endpoint']} ({row['client']})")
        specific = [f for _, f in hits if ANY_ROUTE not in f.routes] or [f for _, f in hits]
        routes.append({
            "caller": row["caller"], "client": row["client"], "endpoint": row["endpoint"],
            "count": row["count"], "last_seen": row["last_seen"],
            "code": sorted({f"{f.path}:{f.line}" + (f" (cell {f.cell})" if f.cell else "") + f" {f.code}"
                            for f in specific}),
            "explained": bool(hits),
        })
    findings = [
        {"code": f.code, "path": f.path, "line": f.line, "cell": f.cell, "message": f.message,
         "seen_in_traffic": i in seen, "traffic": sorted(set(seen.get(i, [])))}
        for i, f in enumerate(scan.findings)
    ]
    return {
        "routes": routes,
        "findings": findings,
        "summary": {
            "routes_in_use": len(routes),
            "routes_unexplained": sum(not r["explained"] for r in routes),
            "findings": len(findings),
            "findings_seen_in_traffic": sum(f["seen_in_traffic"] for f in findings),
        },
    }


def format_join(joined: dict[str, Any], fmt: str = "table") -> str:
    if fmt == "markdown":
        out = ["## Traffic and code", "", "| Legacy endpoint | Client | Requests | Code |", "|---|---|---|---|"]
        for r in joined["routes"]:
            code = "<br>".join(f"`{c}`" for c in r["code"]) or "**called by code outside this tree**"
            out.append(f"| `{r['endpoint']}` | {r['client']} | {r['count']} | {code} |")
        out += ["", "| Finding | Seen in traffic |", "|---|---|"]
        for f in joined["findings"]:
            out.append(f"| `{f['path']}:{f['line']}` {f['code']} | {'yes' if f['seen_in_traffic'] else 'no'} |")
        return "\n".join(out) + "\n"
    s = joined["summary"]
    out = ["", "Traffic -> code:"]
    for r in joined["routes"]:
        out.append(f"  {r['endpoint']}  [{r['client']}, {r['count']} request(s)]")
        if r["code"]:
            out += [f"      {c}" for c in r["code"]]
        else:
            out.append("      called by code outside this tree")
    out += ["", "Code -> traffic:"]
    for f in joined["findings"]:
        cell = f" (cell {f['cell']})" if f["cell"] else ""
        seen = "seen in traffic" if f["seen_in_traffic"] else "not seen in traffic"
        out.append(f"  {f['path']}:{f['line']}{cell} {f['code']}: {seen}")
    out += ["", f"{s['routes_in_use']} legacy route(s) in use, {s['routes_unexplained']} not explained by this tree; "
            f"{s['findings_seen_in_traffic']} of {s['findings']} finding(s) seen in traffic"]
    return "\n".join(out)

"""Scan results for a person (a rich table per file), a program (JSON) and a code host (SARIF 2.1.0)."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import __version__
from .analyzer import Finding, ScanResult
from .rules import BY_CODE, RULES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_URI = "https://github.com/qiskit-classic-proxy/qiskit-classic-proxy"


def as_dict(result: ScanResult) -> dict[str, Any]:
    return {
        "files_scanned": result.files,
        "findings": [finding_dict(f) for f in result.findings],
        "errors": [{"path": p, "error": e} for p, e in result.errors],
        "summary": summary(result),
    }


def finding_dict(f: Finding) -> dict[str, Any]:
    rule = BY_CODE[f.code]
    return {
        "code": f.code, "name": rule.name, "path": f.path, "line": f.line, "column": f.col,
        "end_line": f.end_line, "end_column": f.end_col, "cell": f.cell, "message": f.message,
        "relies_on": rule.relies_on, "fix": rule.fix, "routes": list(f.routes), "fixable": f.fixable,
    }


def summary(result: ScanResult) -> dict[str, Any]:
    by_code: dict[str, int] = {}
    for f in result.findings:
        by_code[f.code] = by_code.get(f.code, 0) + 1
    return {
        "findings": len(result.findings),
        "files_with_findings": len({f.path for f in result.findings}),
        "fixable": sum(f.fixable for f in result.findings),
        "by_code": dict(sorted(by_code.items())),
    }


def to_json(result: ScanResult) -> str:
    return json.dumps(as_dict(result), indent=2)


def to_sarif(result: ScanResult) -> str:
    """SARIF 2.1.0: one run, every rule described, one result per finding (GitHub code scanning)."""
    rules = [
        {
            "id": r.code,
            "name": r.name,
            "shortDescription": {"text": r.message},
            "fullDescription": {"text": f"{r.message}. Works today through {r.relies_on}."},
            "help": {"text": f"Fix: {r.fix}", "markdown": f"**Fix:** {r.fix}\n\nWorks today through {r.relies_on}."},
            "helpUri": r.help_uri,
            "defaultConfiguration": {"level": r.level},
            "properties": {"tags": ["qiskit", "migration", r.family]},
        }
        for r in RULES
    ]
    index = {r.code: i for i, r in enumerate(RULES)}
    results = []
    for f in result.findings:
        region: dict[str, Any] = {"startLine": f.line, "startColumn": f.col}
        if f.end_line >= f.line and f.end_col > 0 and (f.end_line > f.line or f.end_col > f.col):
            region.update(endLine=f.end_line, endColumn=f.end_col)
        loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": f.path, "uriBaseId": "SRCROOT"},
                                                    "region": region}}
        if f.cell is not None:
            loc["logicalLocations"] = [{"name": f"cell {f.cell}", "kind": "notebookCell"}]
        results.append({
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": BY_CODE[f.code].level,
            "message": {"text": f"{f.message}. Fix: {BY_CODE[f.code].fix}"},
            "locations": [loc],
            "partialFingerprints": {"qcp/v1": f"{f.code}:{f.path}:{f.cell or 0}:{f.message}"},
        })
    run = {
        "tool": {"driver": {"name": "qiskit-classic-proxy scan", "version": __version__,
                            "informationUri": TOOL_URI, "rules": rules}},
        "originalUriBaseIds": {"SRCROOT": {"uri": "./"}},
        "results": results,
        "invocations": [{
            "executionSuccessful": True,
            "toolExecutionNotifications": [
                {"level": "warning", "message": {"text": f"{p}: {e}"}} for p, e in result.errors
            ],
        }],
    }
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2)


def to_table(result: ScanResult, width: int | None = None, color: bool | None = None) -> str:
    """Findings grouped by file; wraps to the terminal's width (80 when not a terminal)."""
    buf = StringIO()
    console = Console(file=buf, width=width or 80, force_terminal=color, no_color=not color, highlight=False,
                      soft_wrap=False)
    files: dict[str, list[Finding]] = {}
    for f in result.findings:
        files.setdefault(f.path, []).append(f)
    for path, items in files.items():
        table = Table(title=f"{path}  ({len(items)})", title_justify="left", show_edge=False, expand=True,
                      pad_edge=False)
        table.add_column("LINE", no_wrap=True, justify="right")
        table.add_column("CODE", no_wrap=True)
        table.add_column("FINDING → FIX", ratio=1, overflow="fold")
        for f in items:
            where = f"{f.cell}:{f.line}" if f.cell is not None else str(f.line)
            cell = Text(f.message)
            cell.append(f"\n  → {BY_CODE[f.code].fix}", style="dim")
            if f.fixable:
                cell.append("  (fixable)", style="green")
            table.add_row(where, f.code, cell)
        console.print(table)
        console.print()
    for p, e in result.errors:
        console.print(Text(f"not scanned: {p}: {e}"))
    s = summary(result)
    codes = ", ".join(f"{c} x{n}" for c, n in s["by_code"].items())
    console.print(Text(
        f"{s['findings']} finding(s) in {s['files_with_findings']} of {result.files} file(s)"
        + (f" ({s['fixable']} fixable with --fix)" if s["fixable"] else "") + (f": {codes}" if codes else "")
    ))
    return buf.getvalue().rstrip() + "\n"

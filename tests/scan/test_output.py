"""The three outputs: JSON for programs, SARIF 2.1.0 for code hosts, a table for people."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from proxy.scan.analyzer import Finding, ScanResult
from proxy.scan.output import as_dict, to_sarif, to_table
from proxy.scan.rules import RULES

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "data" / "sarif-2.1.0-rtm.5.json").read_text())


def result() -> ScanResult:
    return ScanResult(
        findings=[
            Finding("nb.ipynb", 3, 5, "QCP203", "backend.run", ("POST /jobs",), 3, 20, cell=2),
            Finding("a.py", 1, 1, "QCP101", 'channel="ibm_quantum" ' + "x" * 300, ("*",), 1, 30),
        ],
        files=3,
        errors=[("bad.py", "syntax error at line 1: invalid syntax")],
    )


def test_sarif_validates_and_carries_notebook_cells_and_tool_notifications() -> None:
    doc = json.loads(to_sarif(result()))
    jsonschema.Draft4Validator(SCHEMA).validate(doc)
    run = doc["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [r.code for r in RULES]
    nb = run["results"][0]
    assert nb["locations"][0]["logicalLocations"] == [{"name": "cell 2", "kind": "notebookCell"}]
    assert nb["locations"][0]["physicalLocation"]["region"] == {"startLine": 3, "startColumn": 5, "endLine": 3,
                                                                "endColumn": 20}
    assert run["results"][0]["ruleIndex"] == [r.code for r in RULES].index("QCP203")
    assert run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"].startswith("bad.py:")


def test_sarif_of_a_clean_scan_validates() -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(json.loads(to_sarif(ScanResult(files=1))))


def test_json_names_rule_relies_on_and_fix() -> None:
    doc = as_dict(result())
    f = doc["findings"][0]
    assert f["relies_on"] and f["fix"] and f["cell"] == 2 and f["routes"] == ["POST /jobs"]
    assert doc["summary"] == {"findings": 2, "files_with_findings": 2, "fixable": 0,
                              "by_code": {"QCP101": 1, "QCP203": 1}}


def test_table_wraps_long_messages_to_the_width() -> None:
    for width in (60, 80, 132):
        text = to_table(result(), width=width, color=False)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "2:3" in text  # cell:line for notebooks
    assert "\x1b[" in to_table(result(), width=80, color=True)

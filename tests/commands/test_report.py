"""`qiskit-classic-proxy report` in a terminal: fits the width, cells wrap, rows do not (#13).

The report's table once printed 154-column rows: every row wrapped as a whole in 80 columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import proxy_settings, start_emulator, start_proxy
from .cli import ANSI, COLOUR, run_cli, too_wide

CI_TOKEN, DASH_TOKEN = "ci-token-report-1", "dash-token-report-2"
#: The three callers the record holds, each as its row starts in any width.
CALLERS = ("ci-pipeline", "dashboard", "anonymous")


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A usage record written by a real proxy: an SDK, curl, and an anonymous caller."""
    db = str(tmp_path_factory.mktemp("report") / "usage.sqlite3")
    emu = start_emulator()
    try:
        p = start_proxy(proxy_settings(emu.url, usage_db=db,
                                       client_tokens=[f"ci-pipeline={CI_TOKEN}", f"dashboard={DASH_TOKEN}"]))
        with httpx.Client(base_url=p.url, timeout=20, trust_env=False) as c:
            sdk = {"Authorization": f"Bearer {CI_TOKEN}",
                   "X-Qx-Client-Application": "qiskit-version-2/1.4.0/qiskit_ibm_runtime-0.40.1"}
            assert c.get("/runtime/backends", headers=sdk).status_code == 200
            assert c.get("/runtime/jobs/abc123/interim_results", headers=sdk).status_code in (200, 404)
            assert c.get("/runtime/health", headers={"X-Access-Token": DASH_TOKEN,
                                                     "User-Agent": "curl/8.5.0"}).status_code == 410
            assert c.get("/api/version").status_code == 200
        p.server.stop()
    finally:
        emu.server.stop()
    yield db


def in_use_rows(text: str) -> list[str]:
    """First lines of the rows of "Legacy endpoints still in use", however their cells wrap."""
    lines = text.splitlines()
    start = lines.index("Legacy endpoints still in use:")
    end = lines.index("", start)
    return [ln for ln in lines[start + 1:end] if ln.split()[:1] and ln.split()[0] in CALLERS]


@pytest.mark.parametrize("columns", [80, 120])
def test_report_was_154_columns_wide_now_fits_the_terminal(record: str, columns: int) -> None:
    r = run_cli("report", "--db", record, columns=columns)
    assert r.returncode == 0, r.stderr
    assert too_wide(r.stdout, columns) == []
    rows = in_use_rows(r.stdout)
    assert sorted(ln.split()[0] for ln in rows) == sorted(["ci-pipeline", "ci-pipeline", "dashboard", "anonymous"])
    assert "Ready to switch off (no traffic recorded" in r.stdout.replace("\n", " ")
    ready = json.loads(run_cli("report", "--db", record, "--format", "json").stdout)["ready_to_switch_off"]
    flat = re.sub(r"\s+", " ", r.stdout)
    for d in ready:  # every ready row is there, however its cells wrap
        method, path = d["endpoint"].split(" ", 1)
        assert re.search(rf"^  {method}\s+{re.escape(path[:10])}", r.stdout, re.M), d["endpoint"]
    assert "Migration guide: https://" in flat


def test_report_table_on_a_pipe_keeps_one_line_per_row(record: str) -> None:
    r = run_cli("report", "--db", record)
    backends = next(ln for ln in in_use_rows(r.stdout) if "/backends" in ln)
    assert backends.split()[:5] == ["ci-pipeline", "qiskit_ibm_runtime-0.40", "GET", "/backends", "1"]
    assert backends.endswith("GET /v1/backends")


def test_report_colour_only_on_a_terminal_and_never_with_no_color(record: str) -> None:
    assert not ANSI.search(run_cli("report", "--db", record, columns=80).stdout)
    forced = run_cli("report", "--db", record, columns=80, env={"FORCE_COLOR": "1"})
    assert COLOUR.search(forced.stdout) and too_wide(forced.stdout, 80) == []
    no_color = run_cli("report", "--db", record, columns=80, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not COLOUR.search(no_color.stdout)
    assert len(in_use_rows(ANSI.sub("", no_color.stdout))) == 4


def test_report_json_and_markdown_are_not_fitted_to_the_terminal(record: str, tmp_path: Path) -> None:
    env = {"FORCE_COLOR": "1"}
    doc = run_cli("report", "--db", record, "--format", "json", columns=40, env=env).stdout
    assert not ANSI.search(doc)
    rep = json.loads(doc)
    assert doc == json.dumps(rep, indent=2) + "\n"
    assert {d["caller"] for d in rep["in_use"]} == set(CALLERS)
    md = run_cli("report", "--db", record, "--format", "markdown", columns=40, env=env).stdout
    assert not ANSI.search(md)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "migration guide" in ln]
    assert len(rows) == 4 and all(len(ln) > 40 for ln in rows)

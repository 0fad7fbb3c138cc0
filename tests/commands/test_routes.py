"""`qiskit-classic-proxy routes` in a terminal: fits the width, grouped by the guide's sections (#13).

The route table once printed 261-column rows: every row wrapped as a whole in an 80-column terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from proxy.classic.routes import ROUTES, SECTION_TITLES, RouteTable

from .cli import ANSI, COLOUR, SCRIPT, run_cli, too_wide

GUIDE = Path(__file__).resolve().parents[1] / "data" / "migration-guide.txt"
ROW = re.compile(r"^(GET|POST|PUT|PATCH|DELETE)\s+(/\S*)")


def route_rows(text: str) -> list[tuple[str, str]]:
    """(method, start of the path) of each route row: a row's first line, however its cells wrap."""
    return [(m.group(1), m.group(2)) for m in map(ROW.match, text.splitlines()) if m]


def assert_every_route_once_in_order(text: str) -> None:
    rows = route_rows(text)
    assert len(rows) == len(ROUTES), f"{len(rows)} rows for {len(ROUTES)} routes"
    for (method, start), r in zip(rows, ROUTES, strict=True):
        assert method == r.method and r.template.startswith(start), (method, start, r.key)


@pytest.mark.parametrize("columns", [80, 120])
def test_routes_was_261_columns_wide_now_fits_the_terminal(columns: int) -> None:
    r = run_cli("routes", columns=columns)
    assert r.returncode == 0, r.stderr
    assert too_wide(r.stdout, columns) == []
    assert_every_route_once_in_order(r.stdout)
    assert len(max(r.stdout.splitlines(), key=len)) > columns - 15  # it uses the room it has


def test_routes_with_policies_fits_80_columns(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('sunset_date = 2027-06-30T00:00:00Z\n[routes."GET /jobs/{job_id}/logs"]\npolicy = "brownout"\n'
                   'brownout_share = 0.25\nbrownout_windows = ["2026-12-01T10:00:00Z/2026-12-01T11:00:00Z"]\n')
    r = run_cli("routes", "--config", str(cfg), columns=80)
    assert r.returncode == 0, r.stderr
    assert too_wide(r.stdout, 80) == []
    assert_every_route_once_in_order(r.stdout)
    header = next(ln for ln in r.stdout.splitlines() if ln.startswith("METHOD"))
    assert header.split()[:6] == ["METHOD", "CLASSIC", "PATH", "ACTION", "POLICY", "SUNSET"]


def test_routes_on_a_pipe_keep_one_line_per_row() -> None:
    """No COLUMNS and not a terminal: rows never wrap, so grep finds a whole row."""
    r = run_cli("routes")
    assert r.returncode == 0, r.stderr
    for route in ROUTES:
        assert any(re.match(rf"{route.method}\s+{re.escape(route.template)}\s", ln) for ln in r.stdout.splitlines())
    assert "Every route's policy: translate" in r.stdout


def test_routes_are_grouped_under_the_guide_sections() -> None:
    headings = [ln.strip() for ln in GUIDE.read_text().splitlines() if ln.startswith("Changes to ")]
    assert len(headings) == 5
    lines = run_cli("routes", columns=100).stdout.splitlines()
    titles = [ln for ln in lines if ln in SECTION_TITLES.values()]
    assert [t for t in titles if t.startswith("Changes to ")] == headings  # the guide's, in its order
    assert len(titles) == len({r.section for r in ROUTES})
    # Each route sits under its own section's title.
    by_title = {v: k for k, v in SECTION_TITLES.items()}
    current = None
    seen: list[tuple[str, str]] = []
    for ln in lines:
        if ln in by_title:
            current = by_title[ln]
        elif (m := ROW.match(ln)) is not None:
            seen.append((m.group(1), current or ""))
    assert seen == [(r.method, r.section) for r in ROUTES]


def test_routes_have_no_escapes_when_not_a_tty() -> None:
    r = run_cli("routes", columns=80)
    assert not ANSI.search(r.stdout)


@pytest.mark.parametrize("force", [{"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}])
def test_routes_are_coloured_on_a_terminal_unless_no_color(force: dict[str, str]) -> None:
    coloured = run_cli("routes", columns=80, env=force)
    assert COLOUR.search(coloured.stdout), "no colour on a (forced) terminal: the NO_COLOR check proves nothing"
    assert too_wide(coloured.stdout, 80) == []
    plain = run_cli("routes", columns=80, env={**force, "NO_COLOR": "1"})
    assert plain.returncode == 0
    assert not COLOUR.search(plain.stdout)
    assert_every_route_once_in_order(ANSI.sub("", plain.stdout))


def test_routes_markdown_is_the_readme_table_byte_for_byte() -> None:
    r = run_cli("routes", "--markdown", columns=60, env={"FORCE_COLOR": "1"})
    assert r.stdout == RouteTable().render_markdown() + "\n"


def test_routes_markdown_with_policies_is_not_wrapped() -> None:
    r = run_cli("routes", "--markdown", "--policies", columns=60)
    lines = r.stdout.splitlines()
    assert lines[0] == "| Method | Classic path | Action | Policy | Deprecation | Sunset | New API |"
    assert len(lines) == len(ROUTES) + 2 and not ANSI.search(r.stdout)


def test_routes_into_a_closed_pipe_prints_no_traceback() -> None:
    """`routes | head -1` once ended in a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # every write the command makes fails with EPIPE
    try:
        r = subprocess.run([str(SCRIPT), "routes"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if not k.startswith("QCP_")})
    finally:
        os.close(write)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr

"""The persistent usage record and the migration report (`report` CLI and /admin/usage)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.app import create_app
from proxy.classic.routes import ROUTES
from proxy.config import MIGRATION_GUIDE_URL, load_settings
from proxy.phaseout.report import build_report, format_report, parse_since
from proxy.phaseout.usage import UsageError, UsageRecorder, UsageRow, read_usage

from .conftest import EmulatorHandle, Running, proxy_settings

CI_TOKEN = "tok-ci-pipeline-0001"
DASH_TOKEN = "tok-dashboard-0002"
TOKENS = [f"ci-pipeline={CI_TOKEN}", f"dashboard={DASH_TOKEN}"]
GUIDE = MIGRATION_GUIDE_URL


def triples(rows: list[UsageRow]) -> dict[tuple[str, str, str], int]:
    return {(r.caller, r.client, r.endpoint): r.count for r in rows}


# ============================================================================ unit: the recorder


def test_memory_record_counts_first_and_last_seen() -> None:
    rec = UsageRecorder(None)
    rec.record("a", "curl", "GET /jobs", False, 100.0)
    rec.record("a", "curl", "GET /jobs", True, 105.0)
    rec.record("b", "other", "GET /health", True, 101.0)
    rows = {(r.caller, r.endpoint): r for r in rec.rows()}
    a = rows[("a", "GET /jobs")]
    assert (a.count, a.gone, a.first_seen, a.last_seen) == (2, 1, 100.0, 105.0)
    assert rows[("b", "GET /health")].gone == 1


def test_sqlite_upserts_add_up_across_recorders(tmp_path: Path) -> None:
    db = str(tmp_path / "sub" / "usage.sqlite3")  # parent directory is created
    first = UsageRecorder(db)
    first.open()
    first.record("a", "curl", "GET /jobs", False, 100.0)
    first.record("a", "curl", "GET /jobs", False, 110.0)
    first.close()
    second = UsageRecorder(db)  # a restart, or a second worker
    second.open()
    second.record("a", "curl", "GET /jobs", True, 90.0)
    second.record("a", "curl", "GET /jobs", False, 120.0)
    second.close()
    (row,) = read_usage(db)
    assert (row.count, row.gone, row.first_seen, row.last_seen) == (4, 1, 90.0, 120.0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_workers_lose_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "usage.sqlite3")
    workers = [UsageRecorder(db, interval=0.01) for _ in range(4)]
    for w in workers:
        w.start()

    def hammer(w: UsageRecorder) -> None:
        for i in range(2000):
            w.record("c", "x", f"GET /r{i % 5}", False, 1000.0 + i)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.close()
    rows = read_usage(db)
    assert sum(r.count for r in rows) == 8000
    assert {r.endpoint: r.count for r in rows} == {f"GET /r{i}": 1600 for i in range(5)}


def test_a_locked_database_keeps_the_counts_for_later(tmp_path: Path) -> None:
    db = str(tmp_path / "usage.sqlite3")
    rec = UsageRecorder(db)
    rec.open()
    blocker = sqlite3.connect(db, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        rec.record("a", "curl", "GET /jobs", False, 1.0)
        t0 = time.monotonic()
        assert rec.flush() is False  # busy: kept, not lost
        assert time.monotonic() - t0 < 20
        assert rec.pending() == 1
        rec.record("a", "curl", "GET /jobs", False, 2.0)
    finally:
        blocker.rollback()
        blocker.close()
    assert rec.flush() is True
    rec.close()
    (row,) = read_usage(db)
    assert (row.count, row.first_seen, row.last_seen) == (2, 1.0, 2.0)


def test_an_unusable_path_is_an_error_at_start(tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(UsageError, match="a-file"):
        UsageRecorder(str(f / "usage.sqlite3")).open()
    with pytest.raises(UsageError, match="no usage record"):
        read_usage(str(tmp_path / "missing.sqlite3"))


def test_recording_is_cheap() -> None:
    rec = UsageRecorder(None)
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        rec.record("ci", "qiskit_ibm_runtime-0.40", "GET /jobs/{job_id}", False, float(i))
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 20e-6, f"{per_call * 1e6:.2f} µs per record"


# ============================================================================ through the proxy


def exercise(p: Running, backends: int) -> None:
    """ci-pipeline (SDK 0.40.1): GET /backends x N; dashboard (curl): /health (410); anonymous: /version."""
    with httpx.Client(base_url=p.url, timeout=20, trust_env=False) as c:
        sdk = {"Authorization": f"Bearer {CI_TOKEN}",
               "X-Qx-Client-Application": "qiskit-version-2/1.4.0/qiskit_ibm_runtime-0.40.1"}
        for _ in range(backends):
            assert c.get("/runtime/backends", headers=sdk).status_code == 200
        dash = {"X-Access-Token": DASH_TOKEN, "User-Agent": "curl/8.5.0"}
        assert c.get("/runtime/health", headers=dash).status_code == 410
        assert c.get("/api/version").status_code == 200  # open route, no token


EXPECTED = {
    ("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET /backends"),
    ("dashboard", "curl", "GET /health"),
    ("anonymous", "python-httpx", "GET /version"),
}


def test_usage_record_survives_a_restart(make_proxy: Callable[..., Running], tmp_path: Path) -> None:
    db = str(tmp_path / "usage.sqlite3")
    first = make_proxy(usage_db=db, client_tokens=TOKENS)
    exercise(first, backends=3)
    first.server.stop()  # shutdown writes what the 1 s flusher had not yet
    after_first = triples(read_usage(db))
    assert set(after_first) == EXPECTED
    assert after_first[("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET /backends")] == 3

    second = make_proxy(usage_db=db, client_tokens=TOKENS)
    exercise(second, backends=2)
    # The admin report of the running proxy includes counts not yet flushed, and the old ones.
    report = httpx.get(second.url + "/admin/usage", timeout=10, trust_env=False).json()
    live = {(d["caller"], d["client"], d["endpoint"]): d["count"] for d in report["in_use"]}
    assert live[("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET /backends")] == 5
    second.server.stop()
    rows = {(r.caller, r.client, r.endpoint): r for r in read_usage(db)}
    assert set(rows) == EXPECTED
    b = rows[("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET /backends")]
    assert b.count == 5 and b.first_seen <= b.last_seen
    assert rows[("dashboard", "curl", "GET /health")].count == 2
    assert rows[("dashboard", "curl", "GET /health")].gone == 2


def test_usage_is_flushed_in_the_background(make_proxy: Callable[..., Running], tmp_path: Path) -> None:
    db = str(tmp_path / "usage.sqlite3")
    p = make_proxy(usage_db=db)
    httpx.get(p.url + "/runtime/backends", timeout=20, trust_env=False)
    deadline = time.monotonic() + 5
    while not (Path(db).exists() and read_usage(db)):
        assert time.monotonic() < deadline, "not flushed within 5 s"
        time.sleep(0.05)


async def test_an_unwritable_usage_db_stops_the_start(emulator: EmulatorHandle, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app = create_app(proxy_settings(emulator.url, usage_db=str(blocker / "usage.sqlite3")))
    try:
        with pytest.raises(UsageError, match=r"usage\.sqlite3"):
            await app.startup()  # what the lifespan runs: uvicorn then exits instead of serving
    finally:
        await app.shutdown()


# ============================================================================ the report


def report_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    return subprocess.run([sys.executable, "-m", "proxy", "report", *args], capture_output=True, text=True,
                          env=env, timeout=30)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A usage record written by a real proxy with the three exercised callers."""
    from .conftest import start_emulator, start_proxy

    db = str(tmp_path_factory.mktemp("report") / "usage.sqlite3")
    emu = start_emulator()
    try:
        p = start_proxy(proxy_settings(emu.url, usage_db=db, client_tokens=TOKENS))
        exercise(p, backends=4)
        p.server.stop()
    finally:
        emu.server.stop()
    return db


def test_report_json_lists_exactly_the_exercised_callers_and_endpoints(recorded: str) -> None:
    r = report_cli("--db", recorded, "--format", "json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    got = {(d["caller"], d["client"], d["endpoint"]): d for d in rep["in_use"]}
    assert set(got) == EXPECTED
    b = got[("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET /backends")]
    assert (b["count"], b["answered_410"], b["move_to"], b["guide"]) == (4, 0, "GET /v1/backends", GUIDE)
    assert b["first_seen"].endswith("Z") and b["last_seen"] >= b["first_seen"]
    h = got[("dashboard", "curl", "GET /health")]
    assert (h["count"], h["answered_410"], h["move_to"]) == (1, 1, "removed")
    assert got[("anonymous", "python-httpx", "GET /version")]["move_to"] == "removed"
    assert rep["summary"] == {"callers": 3, "endpoints_in_use": 3, "requests": 6,
                              "ready_to_switch_off": len(rep["ready_to_switch_off"])}
    ready = {d["endpoint"] for d in rep["ready_to_switch_off"]}
    off = {d["endpoint"] for d in rep["already_off"]}
    used = {"GET /backends", "GET /health", "GET /version"}
    assert ready | off | used == {r.key for r in ROUTES}
    assert not ready & used and "GET /jobs" in ready and "GET /sessions/{session_id}/extended" in off
    assert all(d["last_seen"] is None for d in rep["ready_to_switch_off"])


def test_report_since_a_later_date(recorded: str) -> None:
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    rep = json.loads(report_cli("--db", recorded, "--format", "json", "--since", tomorrow).stdout)
    assert rep["in_use"] == []
    ready = {d["endpoint"]: d for d in rep["ready_to_switch_off"]}
    assert ready["GET /backends"]["last_seen"] is not None  # used, but not since the date
    assert rep["since"] == tomorrow + "T00:00:00Z"
    rep = json.loads(report_cli("--db", recorded, "--format", "json", "--since", "1d").stdout)
    assert len(rep["in_use"]) == 3


def test_report_table_lists_exactly_the_exercised_rows(recorded: str) -> None:
    r = report_cli("--db", recorded)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("Legacy endpoints still in use:")
    end = lines.index("", start)
    header, *rows = lines[start + 1:end]
    assert header.split()[:3] == ["CALLER", "CLIENT", "LEGACY"]
    assert {tuple(row.split()[:4]) for row in rows} == {
        ("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET", "/backends"),
        ("dashboard", "curl", "GET", "/health"),
        ("anonymous", "python-httpx", "GET", "/version"),
    }
    backends = next(row for row in rows if "/backends" in row)
    assert backends.split()[4] == "4" and backends.endswith("GET /v1/backends")
    assert "Ready to switch off (no traffic recorded" in r.stdout
    assert f"Migration guide: {GUIDE}" in r.stdout


def test_report_markdown_lists_exactly_the_exercised_rows(recorded: str) -> None:
    r = report_cli("--db", recorded, "--format", "markdown")
    assert r.returncode == 0, r.stderr
    md = r.stdout
    section = md.split("## Legacy endpoints still in use")[1].split("## Ready to switch off")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| CALLER")]
    cells = {tuple(c.strip() for c in ln.strip("|").split("|")[:4]) for ln in rows}
    assert cells == {
        ("ci-pipeline", "qiskit_ibm_runtime-0.40", "`GET /backends`", "4"),
        ("dashboard", "curl", "`GET /health`", "1"),
        ("anonymous", "python-httpx", "`GET /version`", "1"),
    }
    assert all(f"[migration guide]({GUIDE})" in ln for ln in rows)
    assert "| `GET /jobs` | - | translate | GET /v1/jobs |" in md


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    r = report_cli("--db", str(tmp_path / "none.sqlite3"))
    assert r.returncode == 1 and "no usage record" in r.stderr and "Traceback" not in r.stderr
    r = report_cli("--db", str(tmp_path / "none.sqlite3"), "--since", "yesterday-ish")
    assert r.returncode == 2 and "--since" in r.stderr


def test_report_formats_from_rows() -> None:
    settings = load_settings(None, routes={"GET /jobs": {"policy": "gone"}})
    rows = [UsageRow("ci", "curl", "GET /jobs", 3, 3, 1.7e9, 1.7e9 + 60),
             UsageRow("ci", "curl", "GET /retired/thing", 1, 0, 1.7e9, 1.7e9)]
    rep = build_report(rows, settings, now=1.8e9)
    by = {d["endpoint"]: d for d in rep["in_use"]}
    assert by["GET /jobs"]["policy"] == "gone" and by["GET /jobs"]["answered_410"] == 3
    assert by["GET /retired/thing"]["move_to"].startswith("unknown")
    assert rep["generated_at"] == "2027-01-15T08:00:00Z"
    assert "GET /jobs" not in {d["endpoint"] for d in rep["ready_to_switch_off"]}
    for fmt in ("table", "markdown", "json"):
        assert "GET /jobs" in format_report(rep, fmt)
    assert parse_since("2026-01-02").isoformat() == "2026-01-02T00:00:00+00:00"

"""The usage record on a real PostgreSQL: upserts add up, nothing lost or counted twice, bounded memory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest

from proxy.phaseout.usage import UsageRecorder, read_usage
from proxy.phaseout.usagedb import PostgresBackend, SqliteBackend

from ..conftest import Running
from ..pgserver import PostgresServer
from ..test_usage import EXPECTED, TOKENS, exercise, triples


def test_postgres_upserts_add_up_across_recorders(pg_url: str) -> None:
    first = UsageRecorder(pg_url)
    first.open()
    first.record("a", "curl", "GET /jobs", False, 100.0)
    first.record("a", "curl", "GET /jobs", False, 110.0)
    first.close()
    second = UsageRecorder(pg_url)  # a restart, or another replica
    second.open()
    second.record("a", "curl", "GET /jobs", True, 90.0)
    second.record("a", "curl", "GET /jobs", False, 120.0)
    second.close()
    (row,) = read_usage(pg_url)
    assert (row.count, row.gone, row.first_seen, row.last_seen) == (4, 1, 90.0, 120.0)


def test_postgres_and_sqlite_hold_the_same_record(pg_url: str, tmp_path: Path) -> None:
    rows = [("a", "curl", "GET /jobs", 3, 1, 5.0, 9.0), ("b", "other", "GET /health", 1, 1, 2.0, 2.0)]
    pg, lite = PostgresBackend(pg_url), SqliteBackend(str(tmp_path / "u.sqlite3"))
    for b in (pg, lite):
        b.write("batch-1", rows)
    assert pg.select() == lite.select()
    pg.close()
    lite.close()


def test_concurrent_replicas_lose_nothing(pg_url: str) -> None:
    workers = [UsageRecorder(pg_url, interval=0.01) for _ in range(4)]
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
    rows = read_usage(pg_url)
    assert {r.endpoint: r.count for r in rows} == {f"GET /r{i}": 1600 for i in range(5)}


def test_a_batch_retried_after_a_lost_commit_is_not_counted_twice(pg_url: str) -> None:
    backend = PostgresBackend(pg_url)
    rows = [("a", "curl", "GET /jobs", 7, 0, 1.0, 2.0)]
    backend.write("batch-42", rows)
    backend.write("batch-42", rows)  # the flusher never saw the COMMIT answer and tries again
    backend.write("batch-43", rows)
    (row,) = backend.select()
    assert row.count == 14
    backend.close()


def test_counts_wait_in_memory_while_the_database_is_down(
    postgres: PostgresServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    states: list[bool] = []
    failures: list[int] = []
    rec = UsageRecorder(pg_url, on_state=states.append, on_flush_error=lambda: failures.append(1))
    rec.open()
    rec.record("a", "curl", "GET /jobs", False, 1.0)
    assert rec.flush()
    caplog.set_level(logging.WARNING, logger="qiskit_classic_proxy.usage")
    postgres.stop()
    try:
        for i in range(3):  # three failed rounds: one log line, one state change
            rec.record("a", "curl", "GET /jobs", False, 10.0 + i)
            assert rec.flush() is False
        assert rec.pending() == 1
    finally:
        postgres.start()
    assert rec.flush() is True
    rec.close()
    assert states == [False, True] and len(failures) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "qiskit_classic_proxy.usage"]
    assert len([m for m in lines if "failed" in m]) == 1 and len([m for m in lines if "again" in m]) == 1
    assert postgres.password not in "\n".join(lines)
    (row,) = read_usage(pg_url)
    assert (row.count, row.first_seen, row.last_seen) == (4, 1.0, 12.0)


def test_memory_is_bounded_and_endpoint_totals_stay_exact() -> None:
    folded: list[int] = []
    rec = UsageRecorder(None, max_keys=3, on_fold=lambda: folded.append(1))
    for i in range(10):
        rec.record(f"caller-{i}", "curl", "GET /jobs", False, float(i))
    assert rec.pending() <= 4  # 3 keys + the shared "other" key
    rows = rec.rows()
    assert sum(r.count for r in rows) == 10
    assert {(r.caller, r.count) for r in rows if r.caller == "other"} == {("other", 7)}
    assert len(folded) == 7


def test_a_proxy_on_postgres_records_like_one_on_sqlite(
    make_proxy: Callable[..., Running], pg_url: str, postgres: PostgresServer
) -> None:
    first = make_proxy(usage_db=pg_url, client_tokens=TOKENS)
    exercise(first, backends=3)
    report = httpx.get(first.url + "/admin/usage", timeout=10, trust_env=False).json()
    assert postgres.password not in json.dumps(report) and report["record"].endswith("***@" + pg_url.split("@")[1])
    first.server.stop()
    second = make_proxy(usage_db=pg_url, client_tokens=TOKENS)  # a restart (or the other replica)
    exercise(second, backends=2)
    second.server.stop()
    got = triples(read_usage(pg_url))
    assert set(got) == EXPECTED
    assert got[("ci-pipeline", "qiskit_ibm_runtime-0.40", "GET /backends")] == 5
    env = {k: v for k, v in os.environ.items() if not k.startswith("QCP_")}
    r = subprocess.run([sys.executable, "-m", "proxy", "report", "--db", pg_url, "--format", "json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["summary"]["requests"] == 9 and postgres.password not in r.stdout


def test_a_proxy_starts_and_serves_while_the_database_is_down(
    make_proxy: Callable[..., Running], postgres: PostgresServer
) -> None:
    url = postgres.database()
    postgres.stop()
    try:
        p = make_proxy(usage_db=url)
        assert httpx.get(p.url + "/runtime/backends", timeout=20, trust_env=False).status_code == 200
        r = httpx.get(p.url + "/admin/usage", timeout=20, trust_env=False)
        assert r.status_code == 503 and r.json()["error"]["code"] == "usage_record_unavailable"
        assert postgres.password not in r.text
        metrics = httpx.get(p.url + "/metrics", timeout=20, trust_env=False).text
        assert "qcp_usage_record_up 0.0" in metrics
    finally:
        postgres.start()
    p.server.stop()  # shutdown writes what was counted meanwhile
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT sum(count) FROM qcp_usage").fetchone()[0] == 1

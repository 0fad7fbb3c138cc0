"""The shared database: versioned migrations, the Store on a real PostgreSQL, its failure policy."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from proxy.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    PostgresStore,
    StoreError,
    is_postgres,
    migrate,
    open_migrated,
    redact,
    token_digest,
)

from .pgserver import PostgresServer


def test_postgres_urls_are_recognised_and_redacted() -> None:
    assert is_postgres("postgresql://u:p@h/db") and is_postgres("postgres://h/db")
    assert not is_postgres("qcp-usage.sqlite3") and not is_postgres("")
    assert redact("postgresql://qcp:s3cr3t@db:5432/qcp") == "postgresql://qcp:***@db:5432/qcp"
    assert redact("postgresql://db/qcp") == "postgresql://db/qcp"


def test_migrations_are_versioned_and_idempotent(pg_url: str) -> None:
    with open_migrated(pg_url) as conn:
        rows = conn.execute("SELECT version, description FROM qcp_schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS] and rows[-1][0] == SCHEMA_VERSION
        assert migrate(conn) == SCHEMA_VERSION  # a second replica starting: nothing applied twice
        assert conn.execute("SELECT count(*) FROM qcp_schema_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'qcp_%'")}
        assert {"qcp_usage", "qcp_usage_batches", "qcp_instances", "qcp_revocations"} <= tables


def test_replicas_migrating_together_apply_each_step_once(pg_url: str) -> None:
    async def one() -> None:
        await asyncio.to_thread(lambda: open_migrated(pg_url).close())

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(4)))

    asyncio.run(many())
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM qcp_schema_version").fetchone()[0] == len(MIGRATIONS)


def test_a_database_from_a_newer_release_is_refused(pg_url: str) -> None:
    with open_migrated(pg_url) as conn:
        conn.execute("INSERT INTO qcp_schema_version (version, description) VALUES (%s, 'future')",
                     (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer qiskit-classic-proxy") as err:
        open_migrated(pg_url)
    assert not err.value.unreachable


def test_an_unreachable_database_is_reported_without_its_password(postgres: PostgresServer) -> None:
    url = f"postgresql://qcp:{postgres.password}@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as err:
        open_migrated(url)
    assert err.value.unreachable
    assert postgres.password not in str(err.value) and "***" in str(err.value)


async def test_two_stores_share_instances_and_revocations(pg_url: str) -> None:
    a, b = PostgresStore(pg_url, sync_interval=0.05), PostgresStore(pg_url, sync_interval=0.05)
    await a.start()
    await b.start()
    try:
        assert await b.instance_of("job-1") is None
        await a.remember([("job-1", "ibm-q/open/main"), ("job-2", "research/lab/quantum")])
        assert await b.instance_of("job-2") == "research/lab/quantum"
        digest = token_digest("qcp1.some.token")
        await a.revoke(digest, 4e9)
        assert a.revoked(digest)
        for _ in range(200):  # b's sync round pulls it in (bounded wait, no timing asserted)
            if b.revoked(digest):
                break
            await asyncio.sleep(0.02)
        assert b.revoked(digest)
        with psycopg.connect(pg_url) as conn:
            stored = [r[0] for r in conn.execute("SELECT token_hash FROM qcp_revocations")]
        assert stored == [digest]  # the digest, never the token
    finally:
        await a.close()
        await b.close()


async def test_a_store_whose_database_is_down_queues_and_replays(postgres: PostgresServer, pg_url: str) -> None:
    store = PostgresStore(pg_url, sync_interval=3600)
    await store.start()
    try:
        postgres.stop()
        try:
            assert await store.instance_of("job-x") is None  # unknown: the caller probes instead
            assert not store.up
            await store.remember([("job-x", "ibm-q/open/main")])  # queued, not raised
            assert await store.instance_of("job-x") == "ibm-q/open/main"  # this process still knows
        finally:
            postgres.start()
        store._down_until = 0.0  # skip the back-off instead of sleeping through it
        await store._sync()
        assert store.up
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT instance FROM qcp_instances WHERE ref = 'job-x'").fetchone() == (
                "ibm-q/open/main",
            )
    finally:
        await store.close()


async def test_expired_rows_are_pruned_now_and_then(pg_url: str) -> None:
    store = PostgresStore(pg_url, sync_interval=3600)
    await store.start()
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("INSERT INTO qcp_revocations (token_hash, expires) VALUES ('old', 1), ('new', 4e9)")
            conn.execute("INSERT INTO qcp_instances VALUES ('job-old', 'a/b/c', 1), ('job-new', 'a/b/c', 4e9)")
        await store._sync()  # not yet time to prune
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT count(*) FROM qcp_revocations").fetchone()[0] == 2
        assert store.revoked("new") and not store.revoked("old")  # expired ones are not mirrored
        store._next_prune = 0.0
        await store._sync()
        with psycopg.connect(pg_url) as conn:
            assert [r[0] for r in conn.execute("SELECT token_hash FROM qcp_revocations")] == ["new"]
            assert [r[0] for r in conn.execute("SELECT ref FROM qcp_instances")] == ["job-new"]
    finally:
        await store.close()


async def test_sigterm_as_a_sync_round_ends_still_stops_the_store(pg_url: str) -> None:
    """Regression: `serve --workers 2` on PostgreSQL, a worker sometimes never exited after SIGTERM.

    Its shutdown cancelled the store's sync task just as a round finished; on Python < 3.12
    `asyncio.wait_for` then returns the round's result and drops the cancel, so the task went on
    syncing and `close()`, awaiting it, never returned (nor the lifespan shutdown, nor the worker).
    The round here ends in the very loop turn close() is called: every time, not now and then.
    """
    store = PostgresStore(pg_url, sync_interval=0.01)
    await store.start()
    run_task = store._task
    assert run_task is not None
    ended = asyncio.Event()
    real_sync = store._sync

    async def sync_then_tell() -> None:
        await real_sync()
        ended.set()  # wakes the test before the round's waiter is released

    store._sync = sync_then_tell  # type: ignore[method-assign]
    await ended.wait()
    closing = asyncio.ensure_future(store.close())
    try:
        done, _ = await asyncio.wait({closing}, timeout=15)  # a bound for a hang, not a timing
        assert closing in done, "close() never returned: the sync task swallowed its cancel"
        closing.result()
        assert run_task.done()
    finally:
        run_task.cancel()
        closing.cancel()

"""Where the usage record lives: SQLite (a path), PostgreSQL (`postgresql://…`) or memory ("").

Each backend adds a batch of counts with upserts. On PostgreSQL every batch carries an id, written
in the same transaction (`qcp_usage_batches`): a batch retried because the commit's outcome was lost
(the connection broke) is recognised and not added twice. The schema there is versioned with the
rest of the shared database (`proxy/store.py`); SQLite keeps its `user_version`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from ..store import StoreError, is_postgres, open_migrated, redact

log = logging.getLogger("qiskit_classic_proxy.usage")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    caller     TEXT    NOT NULL,  -- client-token name, or "anonymous"
    client     TEXT    NOT NULL,  -- software: "qiskit_ibm_runtime-0.40", "curl", "other"
    endpoint   TEXT    NOT NULL,  -- legacy route template: "GET /jobs/{job_id}"
    count      INTEGER NOT NULL,
    gone       INTEGER NOT NULL DEFAULT 0,  -- of which answered 410 (removed, disabled, brownout)
    first_seen REAL    NOT NULL,  -- unix seconds
    last_seen  REAL    NOT NULL,
    PRIMARY KEY (caller, client, endpoint)
) WITHOUT ROWID
"""
UPSERT = """
INSERT INTO usage (caller, client, endpoint, count, gone, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (caller, client, endpoint) DO UPDATE SET
    count = count + excluded.count,
    gone = gone + excluded.gone,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)
"""
PG_UPSERT = """
INSERT INTO qcp_usage (caller, client, endpoint, count, gone, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (caller, client, endpoint) DO UPDATE SET
    count = qcp_usage.count + EXCLUDED.count,
    gone = qcp_usage.gone + EXCLUDED.gone,
    first_seen = LEAST(qcp_usage.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(qcp_usage.last_seen, EXCLUDED.last_seen)
"""
_COLUMNS = "caller, client, endpoint, count, gone, first_seen, last_seen"

Key = tuple[str, str, str]  # caller, client, endpoint
#: [count, gone, first_seen, last_seen]
Entry = list[float]
Row = tuple[str, str, str, int, int, float, float]

#: How long a writer waits for another worker's transaction before giving up for this round.
BUSY_TIMEOUT_MS = 2000


class UsageError(RuntimeError):
    """The usage record cannot be opened or read (`unreachable`: a database that may come back)."""

    unreachable = False


@dataclass(frozen=True)
class UsageRow:
    caller: str
    client: str
    endpoint: str
    count: int
    gone: int
    first_seen: float
    last_seen: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _merge(into: dict[Key, Entry], key: Key, e: Entry) -> None:
    cur = into.get(key)
    if cur is None:
        into[key] = list(e)
    else:
        cur[0] += e[0]
        cur[1] += e[1]
        cur[2] = min(cur[2], e[2])
        cur[3] = max(cur[3], e[3])


class Backend(Protocol):
    """Where the record lives. Methods raise `UsageError` (or the driver's error) on failure."""

    label: str

    def open(self) -> None: ...

    def write(self, batch_id: str, rows: list[Row]) -> None: ...

    def select(self) -> list[UsageRow]: ...

    def close(self) -> None: ...


def _connect_sqlite(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class SqliteBackend:
    """One file, shared by the workers of one machine (WAL, busy timeout, retried lock upgrades)."""

    def __init__(self, path: str) -> None:
        self.path = self.label = path
        self._conn: sqlite3.Connection | None = None
        self.attempts = 1

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = _connect_sqlite(self.path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.OperationalError:
                pass  # another worker holds a lock right now; the mode is persistent anyway
            _retry(lambda: _create_schema(conn))
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"usage record {self.path}: {exc}") from None
        self._conn = conn

    def write(self, batch_id: str, rows: list[Row]) -> None:
        self.open()
        conn = self._conn
        assert conn is not None

        def write() -> None:
            with conn:
                conn.executemany(UPSERT, rows)

        try:
            _retry(write, self.attempts)
        except sqlite3.Error as exc:
            raise UsageError(str(exc)) from None

    def select(self) -> list[UsageRow]:
        if self._conn is not None:
            return _select(self._conn, "usage")
        return read_usage(self.path)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresBackend:
    """PostgreSQL through psycopg 3 (a blocking connection, used only by the flush thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = redact(url)
        self._conn: Any = None
        self.attempts = 1

    def open(self) -> None:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = open_migrated(self.url)
            except StoreError as exc:
                err = UsageError(str(exc).replace("database ", "usage record ", 1))
                err.unreachable = exc.unreachable
                raise err from None

    def write(self, batch_id: str, rows: list[Row]) -> None:
        import psycopg

        self.open()
        conn = self._conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO qcp_usage_batches (id, applied_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (batch_id, time.time()),
                )
                if cur.rowcount == 0:
                    log.info("usage record: batch %s was written before (commit outcome was lost)", batch_id)
                    return
                # Sorted: every replica locks rows in the same order, so concurrent flushes never deadlock.
                cur.executemany(PG_UPSERT, sorted(rows))
        except psycopg.Error as exc:
            self._drop()
            raise UsageError(" ".join(str(exc).split())[:300] or type(exc).__name__) from None

    def select(self) -> list[UsageRow]:
        import psycopg

        try:
            self.open()
            with self._conn.transaction():
                return _select(self._conn, "qcp_usage")
        except psycopg.Error as exc:
            self._drop()
            raise UsageError(f"usage record {self.label}: {' '.join(str(exc).split())[:300]}") from None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing a broken connection
                pass

    def close(self) -> None:
        self._drop()


class MemoryBackend:
    """`usage_db = ""`: the record lives in this process only."""

    label = "memory"

    def __init__(self) -> None:
        self._rows: dict[Key, Entry] = {}

    def open(self) -> None:
        pass

    def write(self, batch_id: str, rows: list[Row]) -> None:
        for r in rows:
            _merge(self._rows, (r[0], r[1], r[2]), [r[3], r[4], r[5], r[6]])

    def select(self) -> list[UsageRow]:
        return _rows(self._rows.items())

    def close(self) -> None:
        pass


def backend_for(path: str | None) -> Backend:
    if not path:
        return MemoryBackend()
    if is_postgres(path):
        return PostgresBackend(path)
    return SqliteBackend(path)


def _create_schema(conn: sqlite3.Connection) -> None:
    with conn:
        conn.execute(SCHEMA)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise UsageError(f"written by a newer qiskit-classic-proxy (schema {version})")


def _retry(fn: Callable[[], None], attempts: int = 5) -> None:
    """busy_timeout covers most contention; a few more rounds cover lock upgrades between workers."""
    for i in range(attempts):
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            transient = "locked" in str(exc) or "busy" in str(exc)
            if not transient or i == attempts - 1:
                raise
            time.sleep(0.05 * (i + 1))


def _rows(items: Iterable[tuple[Key, Entry]]) -> list[UsageRow]:
    out = [UsageRow(k[0], k[1], k[2], int(e[0]), int(e[1]), float(e[2]), float(e[3])) for k, e in items]
    out.sort(key=lambda r: (r.caller, r.client, r.endpoint))
    return out


def _select(conn: Any, table: str) -> list[UsageRow]:
    cur = conn.execute(f"SELECT {_COLUMNS} FROM {table} ORDER BY caller, client, endpoint")
    return [UsageRow(*row) for row in cur.fetchall()]


def read_usage(path: str) -> list[UsageRow]:
    """Read a record (SQLite read-only: the proxy may be writing it right now; or PostgreSQL)."""
    if is_postgres(path):
        backend = PostgresBackend(path)
        try:
            return backend.select()
        finally:
            backend.close()
    if not Path(path).is_file():
        raise UsageError(f"no usage record at {path}")
    try:
        conn = _connect_sqlite(path, readonly=True)
        try:
            return _select(conn, "usage")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise UsageError(f"usage record {path}: {exc}") from None

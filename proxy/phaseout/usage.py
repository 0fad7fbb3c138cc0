"""The persistent usage record: per caller, client software and legacy endpoint, how often and when.

The request path only bumps an in-memory counter (`record`: a dict update under an uncontended
lock). A background thread writes the counters to SQLite every `interval` seconds and once more at
shutdown, as upserts that *add* counts, so several workers (or restarts) can share one file. A
`database is locked` error keeps the counters for the next round instead of losing them.

`path=None` keeps the record in memory only (settings `usage_db = ""`): the admin report still
works, nothing survives a restart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

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

Key = tuple[str, str, str]  # caller, client, endpoint
#: [count, gone, first_seen, last_seen]
Entry = list[float]

#: How long a writer waits for another worker's transaction before giving up for this round.
BUSY_TIMEOUT_MS = 2000


class UsageError(RuntimeError):
    """The usage record cannot be opened or read."""


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


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class UsageRecorder:
    """Counts calls in memory; a background thread adds them to the SQLite record."""

    def __init__(
        self,
        path: str | None,
        *,
        interval: float = 1.0,
        on_flush_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = path or None
        self.interval = interval
        self.on_flush_error = on_flush_error
        self._pending: dict[Key, Entry] = {}
        self._lock = threading.Lock()  # guards _pending (request path vs flusher)
        self._write_lock = threading.Lock()  # one writer at a time (flusher, admin, shutdown)
        self._memory: dict[Key, Entry] = {}  # the record itself when path is None
        self._conn: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.flushes = 0

    # -- request path ----------------------------------------------------------------------------
    def record(self, caller: str, client: str, endpoint: str, gone: bool, now: float) -> None:
        key = (caller, client, endpoint)
        with self._lock:
            e = self._pending.get(key)
            if e is None:
                self._pending[key] = [1, 1 if gone else 0, now, now]
            else:
                e[0] += 1
                if gone:
                    e[1] += 1
                e[3] = now

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the file and table (at start-up, so a bad path stops the proxy early)."""
        if self.path is None or self._conn is not None:
            return
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.OperationalError:
                pass  # another worker holds a lock right now; the mode is persistent anyway
            _retry(lambda: _create_schema(conn))
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"usage record {self.path}: {exc}") from None
        self._conn = conn

    def start(self) -> None:
        self.open()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="qcp-usage-flush", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush(attempts=3)
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    # -- writing ---------------------------------------------------------------------------------
    def flush(self, attempts: int = 1) -> bool:
        """Write what was counted since the last flush; False (and kept for later) on failure.

        One attempt (waiting up to BUSY_TIMEOUT_MS for other writers) by default: the next round
        comes `interval` seconds later anyway. Shutdown tries harder.
        """
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return True
            if self.path is None:
                for key, e in pending.items():
                    _merge(self._memory, key, e)
                return True
            try:
                if self._conn is None:
                    self.open()
                conn = self._conn
                assert conn is not None
                rows = [(*k, int(e[0]), int(e[1]), e[2], e[3]) for k, e in pending.items()]

                def write() -> None:
                    with conn:
                        conn.executemany(UPSERT, rows)

                _retry(write, attempts)
            except (sqlite3.Error, UsageError) as exc:
                with self._lock:
                    for key, e in pending.items():
                        _merge(self._pending, key, e)
                if not self._failing:
                    log.warning("usage record: write to %s failed (%s); will retry", self.path, exc)
                    self._failing = True
                if self.on_flush_error is not None:
                    self.on_flush_error()
                return False
            if self._failing:
                log.warning("usage record: writing to %s again", self.path)
                self._failing = False
            self.flushes += 1
            return True

    # -- reading ---------------------------------------------------------------------------------
    def rows(self) -> list[UsageRow]:
        """The whole record, including what this process counted but had not written yet."""
        self.flush()
        if self.path is None:
            with self._write_lock:
                return _rows(self._memory.items())
        with self._write_lock:
            if self._conn is not None:
                return _select(self._conn)
        return read_usage(self.path)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


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


def _select(conn: sqlite3.Connection) -> list[UsageRow]:
    cur = conn.execute(
        "SELECT caller, client, endpoint, count, gone, first_seen, last_seen FROM usage "
        "ORDER BY caller, client, endpoint"
    )
    return [UsageRow(*row) for row in cur.fetchall()]


def read_usage(path: str) -> list[UsageRow]:
    """Read a record file (read-only; the proxy may be writing it right now)."""
    if not Path(path).is_file():
        raise UsageError(f"no usage record at {path}")
    try:
        conn = _connect(path, readonly=True)
        try:
            return _select(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise UsageError(f"usage record {path}: {exc}") from None

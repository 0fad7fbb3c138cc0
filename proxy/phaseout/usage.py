"""The persistent usage record: per caller, client software and legacy endpoint, how often and when.

The request path only bumps an in-memory counter (`record`: a dict update under an uncontended
lock). A background thread writes the counters every `interval` seconds and once more at
shutdown, as upserts that *add* counts, so several workers, replicas and restarts share one record:

* a path: an SQLite file (the embedded default; one machine, e.g. a sidecar on a volume);
* `postgresql://…`: PostgreSQL (a shared gateway of many replicas; see `proxy/store.py`).

A failed write keeps the counts for the next round instead of losing them: the batch that failed
is retried as it was (on PostgreSQL under its batch id, so a commit whose outcome was lost is never
added twice), new counts wait beside it. Memory stays bounded: past `max_keys` distinct
(caller, client, endpoint) keys, newcomers are counted as ("other", "other", endpoint), so every
endpoint's total stays exact. One log line per change of state (failing / writing again).

`path=None` keeps the record in memory only (settings `usage_db = ""`): the admin report still
works, nothing survives a restart.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable

from .usagedb import Backend, Entry, Key, UsageError, UsageRow, _merge, _rows, backend_for, read_usage

log = logging.getLogger("qiskit_classic_proxy.usage")

#: Distinct keys held in memory between flushes (or while the database is down).
MAX_KEYS = 10_000
OTHER = "other"
#: Seconds close() may take in all (the flusher's last round, the final write): a shutdown, a
#: SIGTERM, never waits on a database that accepts and never answers.
CLOSE_TIMEOUT = 10.0

class UsageRecorder:
    """Counts calls in memory; a background thread adds them to the record (SQLite or PostgreSQL)."""

    def __init__(
        self,
        path: str | None,
        *,
        interval: float = 1.0,
        on_flush_error: Callable[[], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_fold: Callable[[], None] | None = None,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.path = path or None
        self.backend: Backend = backend_for(self.path)
        self.interval = interval
        self.on_flush_error = on_flush_error
        self.on_state = on_state
        self.on_fold = on_fold
        self.max_keys = max_keys
        self._pending: dict[Key, Entry] = {}
        self._inflight: tuple[str, dict[Key, Entry]] | None = None  # a batch whose write failed
        self._lock = threading.Lock()  # guards _pending (request path vs flusher)
        self._write_lock = threading.Lock()  # one writer at a time (flusher, admin, shutdown)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._folding = False
        self.flushes = 0

    @property
    def label(self) -> str:
        """The record's name for reports and logs (a database URL without its password)."""
        return self.backend.label

    # -- request path ----------------------------------------------------------------------------
    def record(self, caller: str, client: str, endpoint: str, gone: bool, now: float) -> None:
        key = (caller, client, endpoint)
        with self._lock:
            e = self._pending.get(key)
            if e is None:
                if len(self._pending) >= self.max_keys:
                    key = (OTHER, OTHER, endpoint)
                    e = self._pending.get(key)
                    self._fold()
            if e is None:
                self._pending[key] = [1, 1 if gone else 0, now, now]
            else:
                e[0] += 1
                if gone:
                    e[1] += 1
                e[3] = now

    def _fold(self) -> None:
        if not self._folding:
            self._folding = True
            log.warning(
                "usage record: %d distinct callers/clients/endpoints waiting to be written; counting "
                "newcomers as %s/%s until the next write", self.max_keys, OTHER, OTHER,
            )
        if self.on_fold is not None:
            self.on_fold()

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the file/tables (at start-up, so a bad path or URL stops the proxy early)."""
        self.backend.open()

    def start(self) -> None:
        try:
            self.open()
        except UsageError as exc:
            if not exc.unreachable:
                raise
            # A replica must serve while the database is away: count in memory, write when it is back.
            log.warning("usage record: %s; counting in memory, will retry", exc)
            self._failing = True
            if self.on_state is not None:
                self.on_state(False)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="qcp-usage-flush", daemon=True)
            self._thread.start()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the flusher, write what is left: at most `timeout` seconds, whatever the database does.

        A write blocked on a server that never answers holds the write lock for good (no driver
        timeout bounds a query): the last write runs in a daemon thread, waited for until the deadline,
        then what it could not write is logged as lost and the process goes on stopping.
        """
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self._thread = None
        written: list[bool] = []
        last = threading.Thread(
            target=lambda: written.append(self.flush(attempts=3, deadline=deadline)), name="qcp-usage-close",
            daemon=True,
        )
        last.start()
        last.join(timeout=max(0.0, deadline - time.monotonic()))
        if not written or not written[0]:
            with self._lock:
                lost = sum(int(e[0]) for e in self._pending.values())
            inflight = self._inflight
            if inflight is not None:
                lost += sum(int(e[0]) for e in inflight[1].values())
            log.error("usage record: %d counted request(s) could not be written to %s", lost, self.label)
        if self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self.backend.close()
            finally:
                self._write_lock.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    # -- writing ---------------------------------------------------------------------------------
    def flush(self, attempts: int = 1, deadline: float | None = None) -> bool:
        """Write what was counted since the last flush; False (and kept for later) on failure.

        One attempt (waiting up to BUSY_TIMEOUT_MS for other SQLite writers) by default: the next
        round comes `interval` seconds later anyway. Shutdown tries harder, until `deadline`
        (time.monotonic()), which also bounds the wait for another writer.
        """
        if deadline is None:
            self._write_lock.acquire()
        elif not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            for i in range(attempts):
                try:
                    self._write_all()
                except (UsageError, sqlite3.Error) as exc:
                    if i < attempts - 1 and (deadline is None or time.monotonic() < deadline):
                        time.sleep(0.2 * (i + 1))
                        continue
                    if not self._failing:
                        log.warning("usage record: write to %s failed (%s); counting in memory, will retry",
                                    self.label, exc)
                        self._failing = True
                        if self.on_state is not None:
                            self.on_state(False)
                    if self.on_flush_error is not None:
                        self.on_flush_error()
                    return False
                break
            if self._failing:
                log.warning("usage record: writing to %s again", self.label)
                self._failing = False
                if self.on_state is not None:
                    self.on_state(True)
            return True
        finally:
            self._write_lock.release()

    def _write_all(self) -> None:
        """The failed batch first (same id), then a new one; each removed only once written."""
        if self._inflight is None:
            with self._lock:
                pending, self._pending = self._pending, {}
                self._folding = False
            if not pending:
                return
            self._inflight = (uuid.uuid4().hex, pending)
        batch_id, batch = self._inflight
        rows = [(*k, int(e[0]), int(e[1]), e[2], e[3]) for k, e in batch.items()]
        self.backend.write(batch_id, rows)
        self._inflight = None
        self.flushes += 1
        with self._lock:
            more = bool(self._pending)
        if more:
            self._write_all()

    # -- reading ---------------------------------------------------------------------------------
    def rows(self) -> list[UsageRow]:
        """The whole record, including what this process counted but had not written yet."""
        self.flush()
        with self._write_lock:
            try:
                stored = self.backend.select()
            except sqlite3.Error as exc:
                raise UsageError(f"usage record {self.label}: {exc}") from None
            unwritten: dict[Key, Entry] = {}
            if self._inflight is not None:
                for k, e in self._inflight[1].items():
                    _merge(unwritten, k, e)
            with self._lock:
                for k, e in self._pending.items():
                    _merge(unwritten, k, e)
        if not unwritten:
            return stored
        merged: dict[Key, Entry] = {
            (r.caller, r.client, r.endpoint): [r.count, r.gone, r.first_seen, r.last_seen] for r in stored
        }
        for k, e in unwritten.items():
            _merge(merged, k, e)
        return _rows(merged.items())

    def pending(self) -> int:
        """Distinct keys counted but not written yet."""
        with self._lock:
            keys = set(self._pending)
        if self._inflight is not None:
            keys |= set(self._inflight[1])
        return len(keys)



__all__ = ["UsageError", "UsageRecorder", "UsageRow", "read_usage"]

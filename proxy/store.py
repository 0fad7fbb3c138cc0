"""The shared database (PostgreSQL) that makes many proxy processes one proxy.

`QCP_USAGE_DB=postgresql://…` puts the usage record there (`phaseout/usage.py`) and, through the
small `Store` interface below, the state that must agree across processes for correctness:

* which instance (hub/group/project) a job or session lives in (`instances.py`), so a follow-up
  call on another replica reaches the right Service-CRN on the first try instead of probing;
* logout revocations (`classic/auth.py`), so a token logged out on one replica is refused by all.

The schema is versioned (`qcp_schema_version`, `MIGRATIONS`): each release applies the steps it
knows under an advisory lock (replicas start together), and refuses a database written by a newer one.
psycopg is imported lazily: without the `[postgres]` extra the proxy still runs on SQLite.

Failure policy: the database is never on the critical path of an answer. When it is unreachable a
lookup answers "unknown" (the pipeline then probes the instances as before), writes are kept in a
bounded queue and replayed when it returns, and one log line marks each change of state.

Why one long module: the schema, its migrations and every query on the shared tables are kept
together, so a schema change is reviewed in one place.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("qiskit_classic_proxy.store")
T = TypeVar("T")

#: (version, what it does, SQL). Append only: a released step is never edited.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "usage record",
        """
        CREATE TABLE qcp_usage (
            caller     TEXT             NOT NULL,
            client     TEXT             NOT NULL,
            endpoint   TEXT             NOT NULL,
            count      BIGINT           NOT NULL,
            gone       BIGINT           NOT NULL DEFAULT 0,
            first_seen DOUBLE PRECISION NOT NULL,
            last_seen  DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (caller, client, endpoint)
        );
        -- One row per applied flush: a flush retried after an unknown commit outcome is not added twice.
        CREATE TABLE qcp_usage_batches (
            id         TEXT             PRIMARY KEY,
            applied_at DOUBLE PRECISION NOT NULL
        );
        """,
    ),
    (
        2,
        "shared state: job/session instances, logout revocations",
        """
        CREATE TABLE qcp_instances (
            ref      TEXT             PRIMARY KEY,  -- job or session id
            instance TEXT             NOT NULL,     -- legacy hub/group/project
            seen_at  DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE qcp_revocations (
            id         BIGSERIAL        PRIMARY KEY,
            token_hash TEXT             NOT NULL UNIQUE,  -- sha256 of the access token, never the token
            expires    DOUBLE PRECISION NOT NULL
        );
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: pg_advisory_xact_lock key: "qcp" + schema.
_MIGRATION_LOCK = 0x71637000

#: How long the instance memory is kept (as the in-process memory: a week).
INSTANCE_TTL = 7 * 24 * 3600
#: Writes kept while the database is unreachable (then the oldest are dropped, and logged).
MAX_QUEUED = 50_000
#: Seconds a request-path lookup may wait for the database; then "unknown" (probing) instead.
LOOKUP_TIMEOUT = 0.5
#: Seconds an answer may wait for a shared write (a job's instance, a logout); then it is queued.
WRITE_TIMEOUT = 1.0
#: Revocation ids re-read each round: ids are taken at insert, so a slow commit may land below the last seen.
REREAD_IDS = 1000
#: Seconds between deletions of expired rows (revocations, instance pairs, batch ids).
PRUNE_EVERY = 600.0
#: After a failure, lookups skip the database this long (no request waits on a dead server).
RETRY_AFTER = 2.0
#: Seconds a background round (and the start-up one) may take; then the database counts as down.
SYNC_TIMEOUT = 10 * WRITE_TIMEOUT
#: Seconds close() may wait for each of its steps: shutdown never waits on a dead database.
CLOSE_TIMEOUT = 5.0

_URL = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/@]*):[^@/]*@", re.IGNORECASE)


class StoreError(RuntimeError):
    """The database cannot be used: unreachable (`unreachable`: may pass), newer schema, no driver."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def is_postgres(url: str | None) -> bool:
    return bool(url) and bool(_URL.match(url or ""))


def redact(url: str) -> str:
    """The URL without its password, for logs, errors and reports."""
    return _PASSWORD.sub(r"\1:***@", url)


def token_digest(token: str) -> str:
    """What the database holds for an access token: its sha256, so a dump leaks no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is part of the test install
        raise StoreError(
            "PostgreSQL needs the psycopg driver: pip install 'qiskit-classic-proxy[postgres]'"
        ) from None
    return psycopg


def connect(url: str, *, timeout: float = 3.0) -> psycopg.Connection:
    """A blocking connection (the usage record's thread, migrations, the report command)."""
    psycopg = _driver()
    try:
        return psycopg.connect(
            url, connect_timeout=max(1, int(timeout)), autocommit=True, application_name="qiskit-classic-proxy"
        )
    except psycopg.Error as exc:
        raise StoreError(f"database {redact(url)}: {_reason(exc)}", unreachable=True) from None


def _reason(exc: BaseException) -> str:
    """A one-line reason; psycopg messages can span lines (and never contain the password)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION (idempotent, safe with replicas starting together)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS qcp_schema_version ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM qcp_schema_version").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database schema is version {current}, written by a newer qiskit-classic-proxy "
                f"(this one knows up to {SCHEMA_VERSION})"
            )
        for version, description, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO qcp_schema_version (version, description) VALUES (%s, %s)", (version, description)
                )
                log.info("database: applied schema step %d (%s)", version, description)
    return SCHEMA_VERSION


def open_migrated(url: str) -> psycopg.Connection:
    """Connect and migrate; StoreError with a one-line reason otherwise."""
    psycopg = _driver()
    conn = connect(url)
    try:
        migrate(conn)
    except psycopg.OperationalError as exc:
        conn.close()
        raise StoreError(f"database {redact(url)}: {_reason(exc)}", unreachable=True) from None
    except psycopg.Error as exc:
        conn.close()
        raise StoreError(f"database {redact(url)}: {_reason(exc)}") from None
    except StoreError:
        conn.close()
        raise
    return conn


def schema_version(url: str) -> int:
    """The database's schema version, read only (0: not created yet); StoreError if unreachable."""
    psycopg = _driver()
    with connect(url) as conn:
        try:
            row = conn.execute("SELECT coalesce(max(version), 0) FROM qcp_schema_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
        except psycopg.Error as exc:
            raise StoreError(f"database {redact(url)}: {_reason(exc)}") from None
    return int(row[0]) if row else 0


# ============================================================================ the interface


class Store(Protocol):
    """What instances.py and classic/auth.py need from shared state. Methods never raise."""

    async def instance_of(self, ref: str) -> str | None:
        """The instance a job/session id was seen in, by any process; None if unknown."""

    async def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Share (ref, instance) pairs; returns once written (or queued when the database is down)."""

    async def revoke(self, digest: str, expires: float) -> None:
        """Share a logout (the token's digest), written before the logout is answered."""

    def revoked(self, digest: str) -> bool:
        """Whether any process revoked the token (a local mirror: no I/O on the request path)."""


class PostgresStore:
    """`Store` on PostgreSQL: one async connection per process, a background sync task.

    The sync task (every `sync_interval` seconds) pulls new revocations into the local mirror,
    replays writes queued while the database was down, and reconnects. Revocations reach other
    processes within that interval; instance lookups read the database directly (on a miss only).
    """

    def __init__(
        self, url: str, *, sync_interval: float = 1.0, on_state: Callable[[bool], None] | None = None
    ) -> None:
        self.url = url
        self.on_state = on_state  # told each change of reachability (a metric)
        self.sync_interval = sync_interval
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._revoked: dict[str, float] = {}  # digest -> expires
        self._last_revocation = 0
        self._queued_instances: OrderedDict[str, str] = OrderedDict()
        self._queued_revocations: dict[str, float] = {}
        self._down_until = 0.0
        self._up = True
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._next_prune = time.monotonic() + PRUNE_EVERY
        self.dropped = 0

    @property
    def up(self) -> bool:
        return self._up

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Migrate, connect, load the revocations; an unreachable database is not fatal (logged).
        Bounded (a server that accepts and never answers): a SIGTERM during start-up takes effect."""
        self._closing = False
        try:
            await in_daemon_thread(lambda: open_migrated(self.url).close(), SYNC_TIMEOUT)
        except StoreError as exc:
            if not exc.unreachable:
                raise
        except asyncio.TimeoutError as exc:
            self._failed(exc)
        try:
            await asyncio.wait_for(self._sync(), SYNC_TIMEOUT)
        except asyncio.TimeoutError as exc:
            self._failed(exc)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the sync task, write what is queued, close; each step bounded (CLOSE_TIMEOUT).

        The flag, not only the cancel, ends the task: on Python < 3.12 a cancel that lands as a
        round finishes is dropped by `asyncio.wait_for` (the worker-ignores-SIGTERM bug)."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
            if not task.done():  # pragma: no cover - a round stuck in a cancel: leave it
                log.warning("shared state: the sync task did not stop within %.0f s", CLOSE_TIMEOUT)
        if self._queued_instances or self._queued_revocations:
            try:
                await asyncio.wait_for(self._flush_queued(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError as exc:
                self._failed(exc)
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
            except Exception:  # pragma: no cover - closing a broken connection
                pass

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.sync_interval)
            if self._closing:
                return
            try:
                await asyncio.wait_for(self._sync(), SYNC_TIMEOUT)
            except asyncio.TimeoutError as exc:
                self._failed(exc)

    # -- the Store interface -----------------------------------------------------------------
    async def instance_of(self, ref: str) -> str | None:
        queued = self._queued_instances.get(ref)
        if queued is not None:
            return queued
        if time.monotonic() < self._down_until:
            return None
        try:
            row = await asyncio.wait_for(
                self._fetchone("SELECT instance FROM qcp_instances WHERE ref = %s", (ref,)), LOOKUP_TIMEOUT
            )
        except Exception as exc:
            self._failed(exc)
            return None
        return str(row[0]) if row else None

    async def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        for ref, name in pairs:
            if ref:
                self._queued_instances[ref] = name
                self._queued_instances.move_to_end(ref)
        self._bound()
        await self._write_now()

    async def revoke(self, digest: str, expires: float) -> None:
        self._revoked[digest] = expires
        self._queued_revocations[digest] = expires
        await self._write_now()

    async def _write_now(self) -> None:
        """On the request path: write the queue unless the database is known down; bounded wait."""
        if time.monotonic() < self._down_until:
            return
        try:
            await asyncio.wait_for(self._flush_queued(), WRITE_TIMEOUT)
        except asyncio.TimeoutError as exc:
            self._failed(exc)  # still queued: the sync round replays it

    def revoked(self, digest: str) -> bool:
        return digest in self._revoked

    # -- internals ---------------------------------------------------------------------------
    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            psycopg = _driver()
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=3, autocommit=True, application_name="qiskit-classic-proxy"
            )
        return self._conn

    async def _fetchone(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self._lock:
            conn = await self._connection()
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _flush_queued(self) -> None:
        """Write queued instance pairs and revocations (one transaction); keep them on failure."""
        if not self._queued_instances and not self._queued_revocations:
            return
        pairs = list(self._queued_instances.items())
        revs = list(self._queued_revocations.items())
        now = time.time()
        try:
            async with self._lock:
                conn = await self._connection()
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        if pairs:
                            await cur.executemany(
                                "INSERT INTO qcp_instances (ref, instance, seen_at) VALUES (%s, %s, %s) "
                                "ON CONFLICT (ref) DO UPDATE SET instance = EXCLUDED.instance, "
                                "seen_at = EXCLUDED.seen_at",
                                [(ref, name, now) for ref, name in sorted(pairs)],
                            )
                        if revs:
                            await cur.executemany(
                                "INSERT INTO qcp_revocations (token_hash, expires) VALUES (%s, %s) "
                                "ON CONFLICT (token_hash) DO NOTHING",
                                sorted(revs),
                            )
        except Exception as exc:
            self._failed(exc)
            return
        for ref, name in pairs:
            if self._queued_instances.get(ref) == name:
                del self._queued_instances[ref]
        for digest, _ in revs:
            self._queued_revocations.pop(digest, None)
        self._ok()

    async def _sync(self) -> None:
        """Background round: replay queued writes, pull new revocations, prune expired rows."""
        await self._flush_queued()
        now = time.time()
        try:
            async with self._lock:
                conn = await self._connection()
                cur = await conn.execute(
                    "SELECT id, token_hash, expires FROM qcp_revocations WHERE id > %s ORDER BY id",
                    (max(0, self._last_revocation - REREAD_IDS),),
                )
                for rid, digest, expires in await cur.fetchall():
                    self._last_revocation = max(self._last_revocation, int(rid))
                    if expires > now:
                        self._revoked[digest] = float(expires)
                if time.monotonic() >= self._next_prune:  # every PRUNE_EVERY: drop what expired
                    self._next_prune = time.monotonic() + PRUNE_EVERY
                    await conn.execute("DELETE FROM qcp_revocations WHERE expires < %s", (now,))
                    await conn.execute("DELETE FROM qcp_instances WHERE seen_at < %s", (now - INSTANCE_TTL,))
                    await conn.execute("DELETE FROM qcp_usage_batches WHERE applied_at < %s", (now - 86400,))
        except Exception as exc:
            self._failed(exc)
            return
        for digest in [d for d, e in self._revoked.items() if e <= now]:
            del self._revoked[digest]
        self._ok()

    def _bound(self) -> None:
        while len(self._queued_instances) > MAX_QUEUED:
            self._queued_instances.popitem(last=False)
            self.dropped += 1

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            # A timed-out statement may still be running on it: start over with a new connection.
            asyncio.get_running_loop().create_task(_close_quietly(conn))
        if self._up:
            self._up = False
            if self.on_state is not None:
                self.on_state(False)
            log.warning(
                "shared state: database %s unreachable (%s); falling back to this process's memory",
                redact(self.url), _reason(exc),
            )

    def _ok(self) -> None:
        self._down_until = 0.0
        if not self._up:
            self._up = True
            if self.on_state is not None:
                self.on_state(True)
            log.warning("shared state: database %s reachable again", redact(self.url))


async def in_daemon_thread(fn: Callable[[], T], timeout: float) -> T:
    """fn() in a daemon thread, awaited at most `timeout` seconds (then asyncio.TimeoutError).

    For blocking driver calls that no timeout bounds (a query to a server that accepts and never
    answers): the caller goes on, the thread is left behind, and a daemon thread never holds up the
    process's exit (asyncio.to_thread's executor threads are joined at exit, however long they take).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the caller
            error: BaseException | None = exc
            result = None
        else:
            error = None
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=target, name="qcp-db-call", daemon=True).start()
    return await asyncio.wait_for(done, timeout)  # on timeout `done` is cancelled: a late result is dropped


async def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # pragma: no cover
        pass

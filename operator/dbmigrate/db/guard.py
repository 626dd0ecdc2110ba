"""The blocking guard: while a statement of ours runs, cancel it if it blocks others too long.

Owns the sampler query (who waits on a backend, directly or queued behind another waiter, and
for how long: `pg_locks`, `pg_blocking_pids()`, `pg_locks.waitstart` on PostgreSQL 14+ and the
waiting query's start before), the session it runs on (a second connection of its own, never
the watched one), and `pg_cancel_backend` of the watched backend when `core.guard.breached`
says so. The executor is async and the backfill worker is sync: `AsyncBlockingGuard` samples in
a task, `BlockingGuard` in a thread; both share the query and the decision.

Use: `with guard.watching(conn.info.backend_pid) as watch: <the statement or transaction>`;
afterwards `watch.fired` is the sample that made the guard cancel (None: it did not). The
watched transaction ends (commit or the error of the cancel) before the guard stops, and the
guard stops before `watching` returns, so a cancel can never hit a later statement: a cancel
that reaches an idle session is ignored by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from dbmigrate.core.guard import BlockedSample, breached, sample_interval
from dbmigrate.db.errors import first_line

log = logging.getLogger(__name__)

# Sessions of dbmigrate itself (the runner, the guard, backfill workers, progress readers) are
# not the application: they are walked through but never counted.
OWN_APPLICATION_NAMES = "dbmigrate%"
# A session opened for the guard: short statements, never a lock wait of its own.
SESSION_OPTIONS = "-c statement_timeout=5s -c lock_timeout=1s"

# Every session waiting for a lock, with what blocks it; then those waiting on the watched
# backend, directly or through other waiters (an application query queued behind one that
# waits on us is blocked by us too). {since} is when each started to wait.
_SAMPLE = """
WITH RECURSIVE waiting AS (
    SELECT l.pid, {since} AS since, pg_blocking_pids(l.pid) AS blockers
    FROM pg_locks AS l
    WHERE NOT l.granted AND l.pid IS NOT NULL AND l.pid <> %(pid)s
    GROUP BY l.pid
), blocked AS (
    SELECT pid FROM waiting WHERE %(pid)s = ANY (blockers)
    UNION
    SELECT w.pid FROM waiting AS w JOIN blocked AS b ON b.pid = ANY (w.blockers)
)
SELECT count(*),
       coalesce(max(extract(epoch FROM clock_timestamp() - coalesce(w.since, a.query_start))), 0)
FROM blocked AS b
JOIN waiting AS w USING (pid)
JOIN pg_stat_activity AS a ON a.pid = b.pid
WHERE coalesce(a.application_name, '') NOT LIKE %(own)s
"""
# pg_locks.waitstart is PostgreSQL 14+ (and NULL for a moment after the wait began).
_SAMPLE_14 = _SAMPLE.format(since="min(l.waitstart)")
_SAMPLE_OLD = _SAMPLE.format(since="NULL::timestamptz")


def sample_query(server_version: int) -> str:
    """The sampler for a server of `server_version` (as libpq reports it: 150004)."""
    return _SAMPLE_14 if server_version >= 140000 else _SAMPLE_OLD


def _sample(row: Any) -> BlockedSample:
    if row is None:
        return BlockedSample()
    return BlockedSample(waiters=int(row[0]), longest_wait=float(row[1] or 0.0))


def read_blocked(conn: psycopg.Connection[Any], pid: int) -> BlockedSample:
    """Who waits on backend `pid` now (sync; any session but `pid`'s own)."""
    query = sample_query(conn.info.server_version)
    return _sample(conn.execute(query, {"pid": pid, "own": OWN_APPLICATION_NAMES}).fetchone())


async def read_blocked_async(conn: psycopg.AsyncConnection, pid: int) -> BlockedSample:
    query = sample_query(conn.info.server_version)
    cur = await conn.execute(query, {"pid": pid, "own": OWN_APPLICATION_NAMES})
    return _sample(await cur.fetchone())


@dataclass
class Watch:
    """One statement (or transaction) under watch."""

    pid: int
    fired: BlockedSample | None = None  # the sample that made the guard cancel it
    samples: int = 0


_CANCEL = "SELECT pg_cancel_backend(%s)"


class AsyncBlockingGuard:
    """Watches statements of an async session from a session of its own (opened on first use
    by `connect`, closed by `close`)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        max_blocked: float,
        *,
        interval: float | None = None,
    ) -> None:
        self.connect = connect
        self.max_blocked = max_blocked
        self.interval = interval if interval is not None else sample_interval(max_blocked)
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await self.connect()
        return self._conn

    @contextlib.asynccontextmanager
    async def watching(self, pid: int) -> AsyncIterator[Watch]:
        """Watch backend `pid` while the body runs (the guard's session is opened first: a
        guard that cannot connect raises before anything of ours runs)."""
        conn = await self._connection()
        watch = Watch(pid)
        stop = asyncio.Event()
        task = asyncio.create_task(self._watch(conn, watch, stop))
        try:
            yield watch
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(
        self, conn: psycopg.AsyncConnection, watch: Watch, stop: asyncio.Event
    ) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
                if stop.is_set():
                    return
                sample = await read_blocked_async(conn, watch.pid)
                watch.samples += 1
                if breached(sample, self.max_blocked):
                    watch.fired = sample  # before the cancel: the caller must know it was us
                    await conn.execute(_CANCEL, (watch.pid,))
                    return
        except psycopg.Error as exc:
            # The statement runs on unguarded until it ends; the next one reconnects.
            log.warning(
                "blocking guard stopped watching backend %s: %s", watch.pid, first_line(exc)
            )
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
        self._conn = None


class BlockingGuard:
    """The same for a sync session: the guard samples in a thread of its own."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        max_blocked: float,
        *,
        interval: float | None = None,
    ) -> None:
        self.connect = connect
        self.max_blocked = max_blocked
        self.interval = interval if interval is not None else sample_interval(max_blocked)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.connect()
        return self._conn

    @contextlib.contextmanager
    def watching(self, pid: int) -> Iterator[Watch]:
        conn = self._connection()
        watch = Watch(pid)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(conn, watch, stop), name="blocking-guard", daemon=True
        )
        thread.start()
        try:
            yield watch
        finally:
            stop.set()
            thread.join()

    def _watch(self, conn: psycopg.Connection[Any], watch: Watch, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.interval):
                sample = read_blocked(conn, watch.pid)
                watch.samples += 1
                if breached(sample, self.max_blocked):
                    watch.fired = sample
                    conn.execute(_CANCEL, (watch.pid,))
                    return
        except psycopg.Error as exc:
            log.warning(
                "blocking guard stopped watching backend %s: %s", watch.pid, first_line(exc)
            )
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


@contextlib.asynccontextmanager
async def watching_async(
    guard: AsyncBlockingGuard | None, conn: psycopg.AsyncConnection
) -> AsyncIterator[Watch | None]:
    """`guard.watching` the session of `conn`, or nothing (None) without a guard."""
    if guard is None:
        yield None
        return
    async with guard.watching(conn.info.backend_pid) as watch:
        yield watch


@contextlib.contextmanager
def watching(guard: BlockingGuard | None, conn: psycopg.Connection[Any]) -> Iterator[Watch | None]:
    """The same for a sync session."""
    if guard is None:
        yield None
        return
    with guard.watching(conn.info.backend_pid) as watch:
        yield watch

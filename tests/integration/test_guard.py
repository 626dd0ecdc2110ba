"""The blocking guard against a real PostgreSQL: application queries blocked by a step's SQL.

Aspects: the sampler sees waiters on a backend directly and through other waiters (the lock
queue, a chain of row locks), and not dbmigrate's own sessions; an application query blocked
by a step holding ACCESS EXCLUSIVE is released within maxBlockedDuration + 1 s, measured from
the application's side, and the step is retried after the episode (it rolled back: nothing
half-applied) and succeeds once the application leaves it alone; a step that always blocks
fails as BlockingApplication when lockRetries run out; a DDL waiting behind an application
transaction, with application queries queued behind it, is cancelled too; a cancel that is not
the guard's (statement_timeout) stays an SqlError. A backfill batch holding rows an
application UPDATE wants is cancelled past the limit and retried at half its size (never
larger afterwards), the episode is in the checkpoint row and the progress summary, and the
backfill still updates every row exactly once, in-process and as the `dbmigrate backfill`
command a Job runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from dbmigrate.api import reasons
from dbmigrate.core.guard import BlockedSample
from dbmigrate.core.statements import checksum
from dbmigrate.db import executor, guard, history
from dbmigrate.db.backfill import (
    BackfillEvent,
    BackfillOptions,
    BatchDone,
    Blocked,
    read_backfill_progress,
    read_checkpoints,
    run_backfill,
)
from tests.integration.backfill_helpers import cli

MIGRATION = "20240101000000_guard"


def limits(max_blocked: float, retries: int, **kw: float) -> executor.ExecutionLimits:
    return executor.ExecutionLimits(
        lock_timeout=kw.get("lock_timeout", 10.0),
        lock_retries=retries,
        statement_timeout=kw.get("statement_timeout", 0.0),
        max_blocked_duration=max_blocked,
    )


@pytest.fixture
async def aconn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    assert await history.try_migration_lock(conn)
    await history.ensure_schema(conn)
    await conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
    await conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 100) g")
    yield conn
    await conn.close()


class App:
    """An application session in a thread: queries the table, timing each from its side."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.waits: list[float] = []
        self.errors: list[str] = []

    def query_when_locked(self, sql: str = "SELECT count(*) FROM users") -> None:
        """Wait until someone holds ACCESS EXCLUSIVE on users, then run `sql` once."""
        with psycopg.connect(self.dsn, autocommit=True, application_name="app") as conn:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass "
                    "AND mode = 'AccessExclusiveLock' AND granted"
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.02)
            t0 = time.monotonic()
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                self.errors.append(str(exc))
            self.waits.append(time.monotonic() - t0)

    def in_thread(self, target: object, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        return thread


async def apply(
    conn: psycopg.AsyncConnection,
    dsn: str,
    sql: str,
    lim: executor.ExecutionLimits,
    episodes: list[tuple[int, str]],
) -> executor.StepResult:
    async def on_blocked(n: int, text: str) -> None:
        episodes.append((n, text))

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="dbmigrate-guard"
        )

    return await executor.apply_sql(
        conn,
        migration_id=MIGRATION,
        step="s1",
        step_kind="sql",
        direction="up",
        sql=sql,
        mode="Auto",
        checksum=checksum(sql),
        limits=lim,
        guard_connect=connect,
        on_blocked=on_blocked,
    )


async def columns(conn: psycopg.AsyncConnection) -> set[str]:
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
    )
    return {r[0] for r in await cur.fetchall()}


# --- the sampler --------------------------------------------------------------------------------


@pytest.fixture
def sessions(pg_dsn: str) -> Iterator[list[psycopg.Connection]]:
    opened: list[psycopg.Connection] = []
    yield opened
    for conn in opened:
        conn.close()


def session(dsn: str, opened: list[psycopg.Connection], name: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True, application_name=name)
    opened.append(conn)
    return conn


def waiting_on(conn: psycopg.Connection, pid: int, count: int) -> BlockedSample:
    deadline = time.monotonic() + 10
    while True:
        sample = guard.read_blocked(conn, pid)
        if sample.waiters >= count or time.monotonic() > deadline:
            return sample
        time.sleep(0.05)


def test_sampler_sees_direct_and_chained_waiters(
    pg_dsn: str, sessions: list[psycopg.Connection]
) -> None:
    """ours locks t; app1 holds a row of u and waits for t; app2 waits for that row of u."""
    setup = session(pg_dsn, sessions, "setup")
    setup.execute("CREATE TABLE t (id int); CREATE TABLE u (id int PRIMARY KEY)")
    setup.execute("INSERT INTO u VALUES (1)")
    ours = session(pg_dsn, sessions, "migration")
    ours.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    app1 = session(pg_dsn, sessions, "app")
    app1.execute("BEGIN; UPDATE u SET id = 1 WHERE id = 1")
    app2 = session(pg_dsn, sessions, "app")
    threads = [
        threading.Thread(target=app1.execute, args=("SELECT * FROM t",), daemon=True),
    ]
    threads[0].start()
    watcher = session(pg_dsn, sessions, "dbmigrate-guard")
    assert waiting_on(watcher, ours.info.backend_pid, 1).waiters == 1
    threads.append(
        threading.Thread(target=app2.execute, args=("UPDATE u SET id = 1",), daemon=True)
    )
    threads[1].start()
    time.sleep(0.3)
    sample = waiting_on(watcher, ours.info.backend_pid, 2)
    assert sample.waiters == 2  # app2 waits on app1, which waits on us
    assert 0.2 < sample.longest_wait < 10
    # Nobody waits on the application's sessions' blocker other than through us.
    assert guard.read_blocked(watcher, app2.info.backend_pid).waiters == 0
    ours.execute("ROLLBACK")
    app1_done = threads[0]
    app1_done.join(5)
    app1.execute("ROLLBACK")
    threads[1].join(5)


def test_sampler_does_not_count_dbmigrate_sessions(
    pg_dsn: str, sessions: list[psycopg.Connection]
) -> None:
    setup = session(pg_dsn, sessions, "setup")
    setup.execute("CREATE TABLE t (id int)")
    ours = session(pg_dsn, sessions, "migration")
    ours.execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    worker = session(pg_dsn, sessions, "dbmigrate-backfill 1/2")
    thread = threading.Thread(target=worker.execute, args=("SELECT * FROM t",), daemon=True)
    thread.start()
    watcher = session(pg_dsn, sessions, "dbmigrate-guard")
    time.sleep(0.5)
    assert guard.read_blocked(watcher, ours.info.backend_pid) == BlockedSample(0, 0.0)
    ours.execute("ROLLBACK")
    thread.join(5)


# --- sql steps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_blocked", [0.5, 1.0, 2.0], ids=["500ms", "1s", "2s"])
async def test_blocked_query_released_and_step_retried(
    aconn: psycopg.AsyncConnection, pg_dsn: str, max_blocked: float
) -> None:
    """The step holds ACCESS EXCLUSIVE for 4 s; one application query arrives meanwhile."""
    app = App(pg_dsn)
    thread = app.in_thread(app.query_when_locked)
    episodes: list[tuple[int, str]] = []
    sql = "ALTER TABLE users ADD COLUMN c int; SELECT pg_sleep(4)"
    result = await apply(aconn, pg_dsn, sql, limits(max_blocked, 5), episodes)
    await asyncio.to_thread(thread.join, 10)
    assert app.errors == []
    assert len(app.waits) == 1
    assert max_blocked - 0.1 < app.waits[0] < max_blocked + 1.0, app.waits
    assert result.ok, result.message  # the retry ran with nobody waiting
    assert result.blocking_episodes == 1
    assert [n for n, _ in episodes] == [1]
    assert "1 application query waited" in episodes[0][1]
    assert "ALTER TABLE users ADD COLUMN c int" in episodes[0][1]
    assert "cancelled, retry 1/5" in episodes[0][1]
    assert "c" in await columns(aconn)
    rows = await history.read_history(aconn, MIGRATION)
    assert [(r.step, r.direction) for r in rows] == [("s1", "up")]


async def test_always_blocking_step_fails_as_blocking_application(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    """The application queries the table again and again: every attempt is cancelled."""
    app = App(pg_dsn)
    stop = threading.Event()

    def keep_querying() -> None:
        while not stop.is_set():
            app.query_when_locked()

    thread = app.in_thread(keep_querying)
    episodes: list[tuple[int, str]] = []
    sql = "ALTER TABLE users ADD COLUMN c int; SELECT pg_sleep(30)"
    try:
        result = await apply(aconn, pg_dsn, sql, limits(0.5, 2), episodes)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert not result.ok
    assert result.reason == reasons.BLOCKING_APPLICATION
    assert result.blocking_episodes == 3
    assert "cancelled 3 time(s)" in result.message
    assert "maxBlockedDuration" in result.message
    assert [n for n, _ in episodes] == [1, 2, 3]
    assert "no retries left" in episodes[-1][1]
    assert max(app.waits) < 0.5 + 1.0, app.waits
    assert "c" not in await columns(aconn)  # each attempt rolled back
    assert await history.read_history(aconn, MIGRATION) == []


async def test_ddl_queued_behind_an_app_transaction_is_cancelled(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    """An open application transaction holds ACCESS SHARE; our ALTER waits for it (a long
    lock_timeout), and a second application query queues behind our ALTER."""
    holder = await asyncio.to_thread(
        psycopg.connect, pg_dsn, autocommit=True, application_name="app-holder"
    )
    holder.execute("BEGIN; SELECT count(*) FROM users")
    app = App(pg_dsn)

    def query_when_ddl_waits() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass "
                    "AND mode = 'AccessExclusiveLock' AND NOT granted"
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.02)
        with psycopg.connect(pg_dsn, autocommit=True, application_name="app") as conn:
            t0 = time.monotonic()
            conn.execute("SELECT count(*) FROM users")
            app.waits.append(time.monotonic() - t0)

    thread = app.in_thread(query_when_ddl_waits)
    episodes: list[tuple[int, str]] = []
    try:
        result = await apply(
            aconn, pg_dsn, "ALTER TABLE users ADD COLUMN c int", limits(1.0, 0), episodes
        )
        await asyncio.to_thread(thread.join, 10)
    finally:
        holder.close()
    assert not result.ok
    assert result.reason == reasons.BLOCKING_APPLICATION
    assert len(app.waits) == 1
    assert app.waits[0] < 1.0 + 1.0, app.waits
    assert "c" not in await columns(aconn)


async def test_statement_timeout_is_not_the_guard(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    episodes: list[tuple[int, str]] = []
    result = await apply(
        aconn, pg_dsn, "SELECT pg_sleep(3)", limits(0.5, 5, statement_timeout=0.3), episodes
    )
    assert not result.ok
    assert result.reason == reasons.SQL_ERROR
    assert result.sqlstate == "57014"
    assert episodes == []
    assert result.blocking_episodes == 0


async def test_unblocking_step_runs_guarded_without_episodes(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    episodes: list[tuple[int, str]] = []
    sql = "ALTER TABLE users ADD COLUMN c int; SELECT pg_sleep(1)"
    result = await apply(aconn, pg_dsn, sql, limits(0.2, 0), episodes)
    assert result.ok, result.message
    assert episodes == []
    assert "c" in await columns(aconn)


# --- backfill batches ---------------------------------------------------------------------------


def slow_items(dsn: str) -> None:
    """`items`: 3 000 rows, and `slow(x)`, which costs a backfill's `set` 2 ms a row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, touched int "
            "NOT NULL DEFAULT 0)"
        )
        conn.execute("INSERT INTO items (id) SELECT g FROM generate_series(1, 3000) g")
        conn.execute(
            "CREATE FUNCTION slow(x int) RETURNS int LANGUAGE sql VOLATILE "
            "AS 'SELECT pg_sleep(0.002); SELECT x'"
        )


def update_items(dsn: str, stop: threading.Event, waits: list[float]) -> None:
    """The application: updates a row every 50 ms, timing each update."""
    with psycopg.connect(dsn, autocommit=True, application_name="app") as app:
        key = 0
        while not stop.is_set():
            key = key % 3000 + 97
            t0 = time.monotonic()
            app.execute("UPDATE items SET touched = touched + 1 WHERE id = %s", (key,))
            waits.append(time.monotonic() - t0)
            time.sleep(0.05)


def test_backfill_batch_blocking_an_update_shrinks_and_finishes(pg_dsn: str) -> None:
    """Each row costs the batch 2 ms (a slow `set`), so a batch of 1 000 holds its rows for
    2 s; the application updates random rows meanwhile. The guard (500 ms) cancels the big
    batches; they are retried at half the size until batches are short enough."""
    slow_items(pg_dsn)
    stop = threading.Event()
    waits: list[float] = []
    thread = threading.Thread(target=update_items, args=(pg_dsn, stop, waits), daemon=True)
    thread.start()
    events: list[BackfillEvent] = []
    opts = BackfillOptions(
        table="items",
        set="n = n + slow(1)",
        batch_size=1000,
        max_batch_size=1000,
        target_batch_seconds=30.0,  # the sizer alone would never shrink these batches
        checkpoint="guarded",
        max_blocked_seconds=0.5,
        max_retries=20,
    )
    try:
        with psycopg.connect(pg_dsn, autocommit=True, application_name="dbmigrate-backfill") as c:
            result = run_backfill(
                c,
                opts,
                on_event=events.append,
                guard_connect=lambda: psycopg.connect(
                    pg_dsn, autocommit=True, application_name="dbmigrate-backfill guard"
                ),
            )
    finally:
        stop.set()
        thread.join(10)
    blocked = [e for e in events if isinstance(e, Blocked)]
    assert blocked, "no batch was cancelled"
    first = blocked[0]
    assert first.batch_size == 1000
    assert first.next_batch_size == 500
    assert first.waiters >= 1
    assert first.longest_wait >= 0.5
    assert "application query waited" in first.message
    sizes_after = [e.batch_size for e in events[events.index(first) :] if isinstance(e, BatchDone)]
    assert sizes_after
    assert max(sizes_after) <= 500  # the ceiling holds
    assert max(waits) < 0.5 + 1.0, sorted(waits)[-5:]
    assert result.rows_total == 3000
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT min(n), max(n), count(*) FROM items").fetchone() == (
            1,
            1,
            3000,
        )
        (cp,) = read_checkpoints(conn, "guarded")
        assert cp.blocked_episodes == len(blocked)
        assert cp.last_blocked == blocked[-1].message
        summary = read_backfill_progress(conn, "guarded")
        assert summary.blocking_episodes == len(blocked)
        assert summary.last_blocked == blocked[-1].message


def test_backfill_worker_command_is_guarded(pg_dsn: str) -> None:
    """`dbmigrate backfill` as a Job runs it: `--max-blocked-duration` watches its batches."""
    slow_items(pg_dsn)
    stop = threading.Event()
    waits: list[float] = []
    thread = threading.Thread(target=update_items, args=(pg_dsn, stop, waits), daemon=True)
    thread.start()
    try:
        done = cli(
            pg_dsn,
            *("--table", "items", "--set", "n = n + slow(1)", "--checkpoint", "cli"),
            *("--batch-size", "1000", "--max-batch-size", "1000"),
            *("--target-batch-duration", "30s", "--max-blocked-duration", "500ms"),
            *("--max-retries", "20"),
            timeout=120,
        )
    finally:
        stop.set()
        thread.join(10)
    assert done.returncode == 0, done.stderr
    assert "blocking the application: 1 application query waited" in done.stdout, done.stdout
    assert max(waits) < 0.5 + 1.0, sorted(waits)[-5:]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT min(n), max(n) FROM items").fetchone() == (1, 1)
        (cp,) = read_checkpoints(conn, "cli")
        assert cp.blocked_episodes >= 1

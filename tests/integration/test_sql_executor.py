"""The lock-safe SQL executor against a real PostgreSQL.

Aspects: history rows and checksums; a failed step leaves nothing applied (transactional DDL);
verify runs inside the step's transaction; statements that cannot run in a transaction run
alone; a failed CREATE INDEX CONCURRENTLY's INVALID index is dropped before the retry; lock
timeouts are retried and never make the application's queries wait behind us (the lock queue);
lock retries exhausted is a LockTimeout; the migration lock serialises migrations.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from dbmigrate.api import reasons
from dbmigrate.core.batching import backoff_delay
from dbmigrate.core.statements import checksum
from dbmigrate.db import executor, history

LIMITS = executor.ExecutionLimits(lock_timeout=0.2, lock_retries=50, statement_timeout=0)


@pytest.fixture
async def aconn(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    assert await history.try_migration_lock(conn)
    await history.ensure_schema(conn)
    await conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
    await conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 1000) g")
    yield conn
    await conn.close()


async def apply(conn: psycopg.AsyncConnection, sql: str, **kw: object) -> executor.StepResult:
    args: dict[str, object] = {
        "migration_id": "20240101000000_test",
        "step": "s1",
        "step_kind": "sql",
        "direction": "up",
        "sql": sql,
        "mode": "Auto",
        "checksum": checksum(sql),
        "limits": LIMITS,
    }
    args.update(kw)
    return await executor.apply_sql(conn, **args)  # type: ignore[arg-type]


async def columns(conn: psycopg.AsyncConnection) -> set[str]:
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
    )
    return {r[0] for r in await cur.fetchall()}


async def test_applies_and_records_history(aconn: psycopg.AsyncConnection) -> None:
    sql = "ALTER TABLE users ADD COLUMN email_verified boolean; -- a comment\n"
    result = await apply(aconn, sql)
    assert result.ok, result.message
    assert "email_verified" in await columns(aconn)
    rows = await history.read_history(aconn, "20240101000000_test")
    assert [(r.step, r.direction, r.checksum) for r in rows] == [("s1", "up", checksum(sql))]
    applied, partial = await history.read_applied(aconn, "20240101000000_test")
    assert applied["s1"].direction == "up"
    assert partial == frozenset()


@pytest.mark.parametrize(
    ("sql", "expected_state"),
    [
        pytest.param(
            "ALTER TABLE users ADD COLUMN a int; ALTER TABLE users ADD COLUMN a int",
            "42701",
            id="duplicate-column",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a int; SELECT 1/0", "22012", id="division-by-zero"
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN a int; ALTER TABLE nope ADD COLUMN b int",
            "42P01",
            id="missing-table",
        ),
    ],
)
async def test_sql_error_leaves_nothing_applied(
    aconn: psycopg.AsyncConnection, sql: str, expected_state: str
) -> None:
    result = await apply(aconn, sql)
    assert not result.ok
    assert result.reason == reasons.SQL_ERROR
    assert result.sqlstate == expected_state
    assert f"SQLSTATE {expected_state}" in result.message
    assert "statement 2" in result.message
    assert "a" not in await columns(aconn)
    assert await history.read_history(aconn, "20240101000000_test") == []


async def test_syntax_error_is_reported_before_anything_runs(
    aconn: psycopg.AsyncConnection,
) -> None:
    result = await apply(aconn, "ALTER TABLE users ADD COLUMN a int;\nALTER TABEL users")
    assert not result.ok
    assert result.reason == reasons.SQL_ERROR
    assert "line 2" in result.message
    assert "a" not in await columns(aconn)


async def test_transaction_control_is_refused(aconn: psycopg.AsyncConnection) -> None:
    result = await apply(aconn, "BEGIN; ALTER TABLE users ADD COLUMN a int; COMMIT;")
    assert not result.ok
    assert "transaction control" in result.message
    assert "a" not in await columns(aconn)


async def test_verify_false_rolls_the_step_back(aconn: psycopg.AsyncConnection) -> None:
    result = await apply(
        aconn,
        "ALTER TABLE users ADD COLUMN a int",
        verify="SELECT count(*) = 0 FROM users",
    )
    assert not result.ok
    assert result.reason == reasons.VERIFY_FAILED
    assert "a" not in await columns(aconn)
    assert await history.read_history(aconn, "20240101000000_test") == []


async def test_verify_true_succeeds(aconn: psycopg.AsyncConnection) -> None:
    result = await apply(
        aconn,
        "ALTER TABLE users ADD COLUMN a int DEFAULT 1",
        verify="SELECT count(*) = 0 FROM users WHERE a IS NULL",
    )
    assert result.ok, result.message


async def test_concurrent_index_runs_outside_a_transaction(
    aconn: psycopg.AsyncConnection,
) -> None:
    sql = (
        "ALTER TABLE users ADD COLUMN flag boolean;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_flag ON users (flag);\n"
        "COMMENT ON COLUMN users.flag IS 'x';"
    )
    result = await apply(aconn, sql)
    assert result.ok, result.message
    cur = await aconn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'users_flag'"
    )
    assert await cur.fetchone() == (True,)


async def test_failed_concurrent_index_leaves_no_invalid_index(
    aconn: psycopg.AsyncConnection,
) -> None:
    await aconn.execute("INSERT INTO users VALUES (1001, 'u1'), (1002, 'u1')")
    sql = "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email)"
    result = await apply(aconn, sql)
    assert not result.ok
    assert result.sqlstate == "23505"
    cur = await aconn.execute("SELECT count(*) FROM pg_class WHERE relname = 'users_email_key'")
    assert await cur.fetchone() == (0,)


async def test_invalid_index_from_an_earlier_crash_is_dropped_and_rebuilt(
    aconn: psycopg.AsyncConnection,
) -> None:
    # Make an INVALID index the way a crash or cancel mid-CIC leaves one.
    await aconn.execute("INSERT INTO users VALUES (1001, 'u1'), (1002, 'u1')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        await aconn.execute("CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email)")
    await aconn.execute("DELETE FROM users WHERE id IN (1001, 1002)")
    result = await apply(
        aconn, "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (email)"
    )
    assert result.ok, result.message
    cur = await aconn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = 'users_email_key'"
    )
    assert await cur.fetchone() == (True,)


async def test_resumes_after_the_last_committed_group(aconn: psycopg.AsyncConnection) -> None:
    """A crash after a non-transactional group: the restart does not redo that group."""
    sql = (
        "CREATE INDEX CONCURRENTLY users_email ON users (email);\n"
        "ALTER TABLE users ADD COLUMN after_index int;"
    )
    await history.write_groups_done(aconn, "20240101000000_test", "s1", "up", checksum(sql), 1)
    result = await apply(aconn, sql)  # would fail (index exists, no IF NOT EXISTS) if re-run
    assert result.ok, result.message
    assert "after_index" in await columns(aconn)
    _, partial = await history.read_applied(aconn, "20240101000000_test")
    assert partial == frozenset()


@pytest.mark.parametrize(
    ("sql", "done_before"),
    [
        pytest.param(
            "CREATE INDEX CONCURRENTLY users_email ON users (email)",
            "CREATE INDEX users_email ON users (email)",
            id="create-index-concurrently-last-group",
        ),
        pytest.param(
            "ALTER TABLE users ADD COLUMN before_index int;\n"
            "CREATE INDEX CONCURRENTLY users_email ON users (email)",
            "ALTER TABLE users ADD COLUMN before_index int; "
            "CREATE INDEX users_email ON users (email)",
            id="after-a-transactional-group",
        ),
        pytest.param(
            "DROP INDEX CONCURRENTLY users_email_old",
            None,
            id="drop-index-concurrently",
        ),
    ],
)
async def test_a_statement_committed_before_a_crash_is_found_done(
    aconn: psycopg.AsyncConnection, sql: str, done_before: str | None
) -> None:
    """The crash between a non-transactional statement's commit and the step's history row:
    the restart finds the statement done instead of failing on its own work."""
    result_before = await apply(aconn, "CREATE INDEX users_email_old ON users (id)", step="s0")
    assert result_before.ok
    groups = sql.count(";") + 1
    # What the executor had written when the process died: the last group under way, its
    # statement committed, no history row.
    await history.write_group_started(
        aconn, "20240101000000_test", "s1", "up", checksum(sql), groups - 1
    )
    for statement in (done_before or "DROP INDEX users_email_old").split("; "):
        await aconn.execute(statement)
    _, partial = await history.read_applied(aconn, "20240101000000_test")
    assert partial == frozenset({"s1"})  # a rollback would revert it
    result = await apply(aconn, sql)
    assert result.ok, result.message
    rows = await history.read_history(aconn, "20240101000000_test")
    assert [(r.step, r.direction) for r in rows] == [("s0", "up"), ("s1", "up")]
    _, partial = await history.read_applied(aconn, "20240101000000_test")
    assert partial == frozenset()


async def test_an_object_that_was_there_before_is_still_an_error(
    aconn: psycopg.AsyncConnection,
) -> None:
    """Only the step's own committed work counts as done: an index that existed before the
    step ran (no crash, no marker) fails it as ever, and a retry is a first attempt again."""
    await aconn.execute("CREATE INDEX users_email ON users (email)")
    sql = "CREATE INDEX CONCURRENTLY users_email ON users (email)"
    for _ in range(2):
        result = await apply(aconn, sql)
        assert not result.ok
        assert result.sqlstate == "42P07"
    _, partial = await history.read_applied(aconn, "20240101000000_test")
    assert partial == frozenset()


async def test_a_terminated_session_is_not_a_failed_step(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    """pg_terminate_backend (57P01) mid-statement: the step's SQL did not fail, its session
    went away; the executor raises for the runner to reconnect instead of failing the step
    (which would roll the whole migration back)."""
    cur = await aconn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None

    def terminate() -> None:
        time.sleep(0.5)
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (row[0],))

    killer = asyncio.create_task(asyncio.to_thread(terminate))
    with pytest.raises(psycopg.OperationalError):
        await apply(aconn, "ALTER TABLE users ADD COLUMN flag boolean; SELECT pg_sleep(5)")
    await killer
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as fresh:
        assert "flag" not in await columns(fresh)  # rolled back with the session
        assert await history.read_history(fresh, "20240101000000_test") == []


def _hold_table(dsn: str, seconds: float, started: threading.Event) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT * FROM users WHERE id = 1 FOR UPDATE")
        conn.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        started.set()
        time.sleep(seconds)
        conn.rollback()


def _probe_selects(dsn: str, stop: threading.Event, waits: list[float]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            t0 = time.monotonic()
            conn.execute("SELECT count(*) FROM users WHERE id < 10").fetchone()
            waits.append(time.monotonic() - t0)
            time.sleep(0.02)


async def test_lock_queue_safety(aconn: psycopg.AsyncConnection, pg_dsn: str) -> None:
    """While a transaction holds the table, our DDL retries and never blocks readers for long."""
    started, stop = threading.Event(), threading.Event()
    waits: list[float] = []
    blocker = threading.Thread(target=_hold_table, args=(pg_dsn, 3.0, started))
    blocker.start()
    assert started.wait(10)
    prober = threading.Thread(target=_probe_selects, args=(pg_dsn, stop, waits))
    prober.start()
    retries: list[int] = []

    async def on_retry(n: int, what: str) -> None:
        retries.append(n)

    try:
        result = await apply(aconn, "ALTER TABLE users ADD COLUMN c int", on_lock_retry=on_retry)
    finally:
        stop.set()
        prober.join()
        blocker.join()
    assert result.ok, result.message
    assert result.lock_retries >= 2
    assert retries == list(range(1, result.lock_retries + 1))
    assert "c" in await columns(aconn)
    # lock_timeout 200 ms: a reader queued behind our ACCESS EXCLUSIVE request waits at most
    # that long (plus scheduling noise on a 2-core machine).
    assert max(waits) < 0.2 + 0.3, sorted(waits)[-5:]


async def test_lock_retries_exhausted_is_lock_timeout(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    started = threading.Event()
    blocker = threading.Thread(target=_hold_table, args=(pg_dsn, 2.0, started))
    blocker.start()
    assert started.wait(10)
    try:
        result = await apply(
            aconn,
            "ALTER TABLE users ADD COLUMN c int",
            limits=executor.ExecutionLimits(lock_timeout=0.05, lock_retries=2, statement_timeout=0),
            sleep=lambda _s: asyncio.sleep(0.01),
        )
    finally:
        blocker.join()
    assert not result.ok
    assert result.reason == reasons.LOCK_TIMEOUT
    assert result.lock_retries == 2
    assert "c" not in await columns(aconn)


async def test_migration_lock_is_exclusive_per_database(
    aconn: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    other = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    try:
        assert not await history.try_migration_lock(other)
        await history.release_migration_lock(aconn)
        assert await history.try_migration_lock(other)
    finally:
        await other.close()


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        pytest.param(1, 0.125, 0.25, id="first"),
        pytest.param(3, 0.5, 1.0, id="third"),
        pytest.param(20, 15.0, 30.0, id="capped"),
    ],
)
def test_backoff_is_exponential_with_jitter_and_capped(
    attempt: int, low: float, high: float
) -> None:
    for _ in range(50):
        delay = backoff_delay(
            attempt - 1, random.random(), base=executor.BACKOFF_START, cap=executor.BACKOFF_CAP
        )
        assert low <= delay <= high

"""The migration lock is a session-level advisory lock of the session the step's SQL runs on.
What that SQL does to the session (SET ROLE, search_path, pg_advisory_unlock_all) must neither
carry into the operator's bookkeeping or the next step nor lose the lock silently. Real
PostgreSQL, the executor as the operator runs a step."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import psycopg.conninfo
import pytest

from dbmigrate.core.steps import ExecutionLimits
from dbmigrate.db import executor, history
from dbmigrate.reconcile.runner import MigrationRunner
from dbmigrate.settings import Settings
from dbmigrate_dev.pgbouncer import PgBouncer
from dbmigrate_dev.postgres import PostgresServer

LIMITS = ExecutionLimits(1.0, 1, 0)


async def run_step(conn: psycopg.AsyncConnection, name: str, sql: str) -> executor.StepResult:
    return await executor.apply_sql(
        conn,
        migration_id="m",
        step=name,
        step_kind="sql",
        direction="up",
        sql=sql,
        mode="auto",
        checksum=name,
        limits=LIMITS,
    )


@pytest.fixture
async def locked(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """The operator's session: autocommit, holding the migration lock, schema in place."""
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        assert await history.try_migration_lock(conn)
        await history.ensure_schema(conn)
        yield conn


async def test_a_steps_role_and_search_path_do_not_carry_over(
    locked: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    role = f"r_{uuid.uuid4().hex[:8]}"
    first = await run_step(
        locked,
        "first",
        f"CREATE ROLE {role} NOLOGIN; GRANT CREATE ON SCHEMA public TO {role}; "
        f"SET ROLE {role}; CREATE TABLE theirs (id int); SET search_path TO nowhere",
    )
    assert first.ok, first.message
    second = await run_step(locked, "second", "CREATE TABLE ours (id int)")
    assert second.ok, second.message  # with search_path 'nowhere' it would have no schema
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as check:
        cur = await check.execute(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relname IN ('theirs', 'ours') ORDER BY relname"
        )
        owners = dict(await cur.fetchall())
        await check.execute(f"DROP TABLE theirs; REVOKE ALL ON SCHEMA public FROM {role}")
        await check.execute(f"DROP ROLE {role}")
    assert owners == {"theirs": role, "ours": "postgres"}
    cur = await locked.execute("SELECT current_user, current_setting('search_path')")
    assert await cur.fetchone() == ("postgres", '"$user", public')


async def test_a_step_that_releases_the_lock_gets_it_back(
    locked: psycopg.AsyncConnection,
) -> None:
    result = await run_step(locked, "unlock", "SELECT pg_advisory_unlock_all()")
    assert result.ok, result.message
    _, held = await history.session_state(locked)
    assert held


async def test_a_lock_taken_by_another_session_meanwhile_stops_the_migration(
    locked: psycopg.AsyncConnection, pg_dsn: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as other:

        async def take_it() -> bool:
            for _ in range(100):
                if await history.try_migration_lock(other):
                    return True
                await asyncio.sleep(0.02)
            return False

        step = asyncio.ensure_future(
            run_step(locked, "unlock", "SELECT pg_advisory_unlock_all(); SELECT pg_sleep(1)")
        )
        assert await take_it()
        with pytest.raises(history.MigrationLockLost, match="another session took it"):
            await step


@pytest.fixture
def transaction_pool(pg_server: PostgresServer) -> Iterator[PgBouncer]:
    # Its own directory, as the server's: PgBouncer runs as `postgres`, who cannot enter
    # pytest's (root-only) temporary directories.
    root = Path(tempfile.mkdtemp(prefix="dbmigrate-pgbouncer-"))
    root.chmod(0o755)
    bouncer = PgBouncer(root / "pgbouncer", pg_server.port, pool_mode="transaction")
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_transaction_pooling_pgbouncer_is_named_not_trusted(
    transaction_pool: PgBouncer, pg_dsn: str
) -> None:
    """Behind PgBouncer's transaction pooling the next statement may run on another server
    process, without the session's advisory lock: the runner says so (MigrationLockLost, which
    the migration shows as a Stalled condition) instead of going on without the lock."""
    dsn = transaction_pool.dsn(psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"])
    runner = MigrationRunner(SimpleNamespace(namespace="ns", name="m"), Settings())  # type: ignore[arg-type]
    try:
        _, held = await runner.connect(dsn, want_lock=True)
        assert held
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other,
            other.transaction(),
        ):
            await other.execute("SELECT 1")  # holds the server process that took the lock
            with pytest.raises(history.MigrationLockLost, match="transaction-pooling"):
                await runner.connect(dsn, want_lock=True)
    finally:
        await runner.close()

"""The `dbmigrate` schema in the target database: history, step progress and the migration lock.

The migration lock is a session-level advisory lock of the operator's session, and the step's
SQL runs on that session: `keep_migration_lock` checks after each statement group that the SQL
did not release it, and `session_state` lets the runner notice a pooler that hands the session
to another server process.

`dbmigrate.history` has one row per applied step and direction and is the source of truth for
"already applied". `dbmigrate.step_progress` remembers how many statement groups of a step have
been committed, so a step with non-transactional statements (CREATE INDEX CONCURRENTLY) resumes
after a crash at the group that did not finish instead of starting over, and which
non-transactional group was started: its statement commits on its own, so after a crash it may
be done although its progress row was never written.

A step's history row is written in one transaction with the forgetting of what the step
remembers: its `step_progress` row, and, for the `down` row of a backfill step, its backfill's
checkpoints (`dbmigrate.backfill_checkpoints`, named `core.jobs.backfill_checkpoint_name`), so
that the same migration applied again backfills again instead of finding "nothing to do".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg

from dbmigrate import __version__
from dbmigrate.core.decide import AppliedStep
from dbmigrate.core.jobs import backfill_checkpoint_name
from dbmigrate.db.backfill import CHECKPOINT_TABLE, FORGET_CHECKPOINTS
from dbmigrate.db.runs import RUNS_DDL

log = logging.getLogger(__name__)

# "dbmigrat" as a 64-bit integer: one session-level advisory lock per database.
MIGRATION_LOCK_KEY = 0x64626D6967726174

SCHEMA_DDL = """
CREATE SCHEMA IF NOT EXISTS dbmigrate;
CREATE TABLE IF NOT EXISTS dbmigrate.history (
    id               bigserial PRIMARY KEY,
    migration_id     text        NOT NULL,
    step             text        NOT NULL,
    step_kind        text        NOT NULL,
    direction        text        NOT NULL CHECK (direction IN ('up', 'down')),
    checksum         text        NOT NULL,
    applied_at       timestamptz NOT NULL DEFAULT now(),
    duration_ms      bigint      NOT NULL,
    operator_version text        NOT NULL
);
CREATE INDEX IF NOT EXISTS history_migration_step
    ON dbmigrate.history (migration_id, step, id DESC);
CREATE TABLE IF NOT EXISTS dbmigrate.step_progress (
    migration_id text        NOT NULL,
    step         text        NOT NULL,
    direction    text        NOT NULL,
    checksum     text        NOT NULL,
    groups_done  integer     NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, step, direction)
);
-- The non-transactional group under way (its statement may have committed before a crash).
ALTER TABLE dbmigrate.step_progress ADD COLUMN IF NOT EXISTS group_started integer;
"""


async def try_migration_lock(conn: psycopg.AsyncConnection) -> bool:
    """Take the database's migration lock for this session, without waiting."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    row = await cur.fetchone()
    return bool(row and row[0])


class MigrationLockLost(RuntimeError):
    """The session no longer holds the migration lock it took (see `session_state`)."""


async def session_state(conn: psycopg.AsyncConnection) -> tuple[int, bool]:
    """(the server process behind the session, whether it holds the migration lock).

    Behind a transaction-pooling PgBouncer the process changes between transactions, and with
    it go session-level advisory locks: comparing the pid with the one that took the lock is
    how the runner notices.
    """
    cur = await conn.execute(
        """
        SELECT pg_backend_pid(), EXISTS (
            SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
              AND classid = %s AND objid = %s AND objsubid = 1)
        """,
        (MIGRATION_LOCK_KEY >> 32, MIGRATION_LOCK_KEY & 0xFFFFFFFF),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


async def keep_migration_lock(conn: psycopg.AsyncConnection) -> None:
    """After a step's statements: the migration lock is still this session's, or taken again.

    A step's SQL can release it (`pg_advisory_unlock_all()`); taken again at once, the gap was
    inside this migration's own step. If another session took it meanwhile, MigrationLockLost.
    """
    _, held = await session_state(conn)
    if held:
        return
    if await try_migration_lock(conn):
        log.warning("a step's SQL released the migration lock; it is taken again")
        return
    raise MigrationLockLost(
        "a step's SQL released the migration lock (pg_advisory_unlock_all?) and another "
        "session took it: stopping until it is free again"
    )


async def release_migration_lock(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


async def ensure_schema(conn: psycopg.AsyncConnection) -> None:
    """Create the dbmigrate schema; call it while holding the migration lock (no DDL races)."""
    async with conn.transaction():
        await conn.execute(SCHEMA_DDL)
        await conn.execute(RUNS_DDL)


@dataclass(frozen=True)
class HistoryRow:
    migration_id: str
    step: str
    step_kind: str
    direction: str
    checksum: str
    applied_at: datetime
    duration_ms: int


async def read_applied(
    conn: psycopg.AsyncConnection, migration_id: str
) -> tuple[dict[str, AppliedStep], frozenset[str]]:
    """Latest history row per step, and the steps with committed progress but no history row."""
    cur = await conn.execute(
        """
        SELECT DISTINCT ON (step) step, direction, checksum
        FROM dbmigrate.history WHERE migration_id = %s
        ORDER BY step, id DESC
        """,
        (migration_id,),
    )
    applied = {
        step: AppliedStep(direction=direction, checksum=checksum)
        for step, direction, checksum in await cur.fetchall()
    }
    cur = await conn.execute(
        "SELECT step FROM dbmigrate.step_progress WHERE migration_id = %s AND direction = 'up' "
        "AND (groups_done > 0 OR group_started IS NOT NULL)",
        (migration_id,),
    )
    partial = frozenset(
        step
        for (step,) in await cur.fetchall()
        if step not in applied or applied[step].direction == "down"
    )
    return applied, partial


async def read_reverted_steps(conn: psycopg.AsyncConnection) -> frozenset[tuple[str, str]]:
    """(migration id, step) of every step whose latest history row is `down`: reverted since
    it was applied (none before the history table exists)."""
    cur = await conn.execute("SELECT to_regclass('dbmigrate.history') IS NOT NULL")
    row = await cur.fetchone()
    if not (row and row[0]):
        return frozenset()
    cur = await conn.execute(
        """
        SELECT migration_id, step FROM (
            SELECT DISTINCT ON (migration_id, step) migration_id, step, direction
            FROM dbmigrate.history ORDER BY migration_id, step, id DESC
        ) AS latest
        WHERE direction = 'down'
        """
    )
    return frozenset((str(m), str(s)) for m, s in await cur.fetchall())


async def read_history(conn: psycopg.AsyncConnection, migration_id: str) -> list[HistoryRow]:
    cur = await conn.execute(
        "SELECT migration_id, step, step_kind, direction, checksum, applied_at, duration_ms "
        "FROM dbmigrate.history WHERE migration_id = %s ORDER BY id",
        (migration_id,),
    )
    return [HistoryRow(*row) for row in await cur.fetchall()]


async def insert_history(
    conn: psycopg.AsyncConnection,
    *,
    migration_id: str,
    step: str,
    step_kind: str,
    direction: str,
    checksum: str,
    duration_ms: int,
) -> None:
    """Record a finished step, and forget what it remembers (its progress; a reverted backfill
    step's checkpoints), in the transaction the caller chose."""
    await conn.execute(
        "INSERT INTO dbmigrate.history "
        "(migration_id, step, step_kind, direction, checksum, duration_ms, operator_version) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (migration_id, step, step_kind, direction, checksum, duration_ms, __version__),
    )
    await conn.execute(
        "DELETE FROM dbmigrate.step_progress "
        "WHERE migration_id = %s AND step = %s AND direction = %s",
        (migration_id, step, direction),
    )
    if step_kind == "backfill" and direction == "down":
        await forget_backfill(conn, backfill_checkpoint_name(migration_id, step))


async def forget_backfill(conn: psycopg.AsyncConnection, checkpoint: str) -> None:
    """Delete a backfill's checkpoints (no-op before any backfill created the table)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINT_TABLE,))
    row = await cur.fetchone()
    if row and row[0]:
        await conn.execute(FORGET_CHECKPOINTS, (checkpoint,))


@dataclass(frozen=True)
class StepProgress:
    groups_done: int = 0
    group_started: int | None = None  # a non-transactional group begun and not known to be done


async def read_step_progress(
    conn: psycopg.AsyncConnection, migration_id: str, step: str, direction: str, checksum: str
) -> StepProgress:
    cur = await conn.execute(
        "SELECT groups_done, group_started, checksum FROM dbmigrate.step_progress "
        "WHERE migration_id = %s AND step = %s AND direction = %s",
        (migration_id, step, direction),
    )
    row = await cur.fetchone()
    if row is None or row[2] != checksum:
        return StepProgress()
    return StepProgress(int(row[0]), None if row[1] is None else int(row[1]))


async def write_groups_done(
    conn: psycopg.AsyncConnection,
    migration_id: str,
    step: str,
    direction: str,
    checksum: str,
    groups_done: int,
) -> None:
    await _write_progress(conn, migration_id, step, direction, checksum, groups_done, None)


async def write_group_started(
    conn: psycopg.AsyncConnection,
    migration_id: str,
    step: str,
    direction: str,
    checksum: str,
    group: int,
) -> None:
    """Before a non-transactional group runs: groups before it are done, it is under way."""
    await _write_progress(conn, migration_id, step, direction, checksum, group, group)


async def _write_progress(
    conn: psycopg.AsyncConnection,
    migration_id: str,
    step: str,
    direction: str,
    checksum: str,
    groups_done: int,
    group_started: int | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO dbmigrate.step_progress
            (migration_id, step, direction, checksum, groups_done, group_started)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (migration_id, step, direction)
        DO UPDATE SET groups_done = EXCLUDED.groups_done, checksum = EXCLUDED.checksum,
                      group_started = EXCLUDED.group_started, updated_at = now()
        """,
        (migration_id, step, direction, checksum, groups_done, group_started),
    )

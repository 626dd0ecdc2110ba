"""The checkpoint table `dbmigrate.backfill_checkpoints`: one row per backfill and worker.

Owns the table's DDL (created on first use, under an advisory lock so that parallel workers
starting together do not race), reading and deleting a backfill's rows, the plan made once
per checkpoint name by whichever worker comes first (`claim_checkpoint`: one row per worker
with its key slice, see `slices`), and every write a worker makes to its own row: the
compare-and-set that commits with each batch, the end of an empty slice, the last error.
A killed worker resumes exactly after the last batch whose checkpoint update committed.

A checkpoint is only as good as what it is about. It records the table's identity, its
`pg_class` oid (not its relfilenode: TRUNCATE, VACUUM FULL or a rewriting ALTER give the same
table a new file and keep the oid, while a table dropped and re-created, or restored, is a new
oid), and a checkpoint made on another table is stale: forgotten, and the backfill planned
again. A finished checkpoint is "nothing to do" only while no row matches the backfill's
`where` any more (one `SELECT 1 ... LIMIT 1`); without a `where` no row tells done from not
done (the `set` may be idempotent or not), so the checkpoint and the table's identity are all
there is. Reverting a backfill step forgets its checkpoint (`FORGET_CHECKPOINTS`, run by
`db.history` in the transaction of the step's `down` row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from dbmigrate.db.backfill.model import BackfillOptions, CheckpointMismatch
from dbmigrate.db.backfill.slices import plan_slices
from dbmigrate.db.backfill.table import TableInfo

CHECKPOINT_SCHEMA = "dbmigrate"
CHECKPOINT_TABLE = f"{CHECKPOINT_SCHEMA}.backfill_checkpoints"

CHECKPOINT_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {CHECKPOINT_SCHEMA};
CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
    name           text        NOT NULL,
    worker         integer     NOT NULL,
    workers        integer     NOT NULL,
    table_name     text        NOT NULL,
    table_oid      oid,
    set_sql        text        NOT NULL,
    where_sql      text,
    key_columns    text[]      NOT NULL,
    slice_lower    jsonb,
    upper_key      jsonb,
    last_key       jsonb,
    rows_done      bigint      NOT NULL DEFAULT 0,
    batches        bigint      NOT NULL DEFAULT 0,
    planned_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    run_started_at timestamptz,
    run_rows_start bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    last_error     text,
    blocked_episodes bigint    NOT NULL DEFAULT 0,
    last_blocked   text,
    last_blocked_at timestamptz,
    PRIMARY KEY (name, worker)
);
COMMENT ON TABLE {CHECKPOINT_TABLE} IS
    'dbmigrate backfill workers: one row per checkpoint name and worker. slice_lower is the '
    'exclusive lower key of the worker''s slice (NULL: from the first key), upper_key its '
    'inclusive upper key captured at start (NULL: nothing to do), last_key the last key of the '
    'last committed batch (NULL: none yet). Keys are JSON arrays in primary key order. '
    'table_oid is the pg_class oid of the table it was planned on. blocked_episodes counts '
    'the batches cancelled for blocking application queries, last_blocked says the last one.';
-- Tables created before these columns existed.
ALTER TABLE {CHECKPOINT_TABLE} ADD COLUMN IF NOT EXISTS table_oid oid;
ALTER TABLE {CHECKPOINT_TABLE} ADD COLUMN IF NOT EXISTS blocked_episodes bigint NOT NULL DEFAULT 0;
ALTER TABLE {CHECKPOINT_TABLE} ADD COLUMN IF NOT EXISTS last_blocked text;
ALTER TABLE {CHECKPOINT_TABLE} ADD COLUMN IF NOT EXISTS last_blocked_at timestamptz;
"""

# The statement that forgets a backfill's checkpoints by name (parameter: the name); run only
# when the table exists. `db.history` runs it with a backfill step's `down` row.
FORGET_CHECKPOINTS = f"DELETE FROM {CHECKPOINT_TABLE} WHERE name = %s"


def _table_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINT_TABLE,)).fetchone()
    return bool(row and row[0])


def _table_is_current(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = 'last_blocked_at' AND NOT attisdropped)",
        (CHECKPOINT_TABLE,),
    ).fetchone()
    return bool(row and row[0])


def ensure_checkpoint_table(conn: psycopg.Connection[Any]) -> None:
    """Create schema `dbmigrate` and the checkpoint table (or add what an older one lacks)."""
    if _table_is_current(conn):
        return
    for attempt in range(3):
        try:
            with conn.transaction():
                # Parallel workers start together; CREATE ... IF NOT EXISTS is not race-free.
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('dbmigrate.ddl', 0))")
                conn.execute(CHECKPOINT_DDL)
            return
        except (errors.UniqueViolation, errors.DuplicateObject):
            # Another process created the schema at the same moment without our lock.
            if attempt == 2:
                raise


@dataclass(frozen=True)
class Checkpoint:
    """One worker's row of the checkpoint table."""

    name: str
    worker: int
    workers: int
    table_name: str
    table_oid: int | None  # None: planned by a version that did not record it
    set_sql: str
    where_sql: str | None
    key_columns: tuple[str, ...]
    slice_lower: str | None  # JSON array text, exclusive
    upper_key: str | None  # JSON array text, inclusive
    last_key: str | None
    rows_done: int
    batches: int
    started_at: Any
    updated_at: Any
    finished_at: Any
    last_error: str | None
    # batches cancelled by the blocking guard, and what the last episode was and when
    blocked_episodes: int = 0
    last_blocked: str | None = None
    last_blocked_at: Any = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def resume_after(self) -> str | None:
        """The exclusive lower key of the work left."""
        return self.last_key if self.last_key is not None else self.slice_lower


_CHECKPOINT_COLUMNS = sql.SQL(
    "name, worker, workers, table_name, set_sql, where_sql, key_columns, slice_lower::text, "
    "upper_key::text, last_key::text, rows_done, batches, started_at, updated_at, finished_at, "
    "last_error, (to_jsonb(c) ->> 'table_oid')::bigint, "
    "coalesce((to_jsonb(c) ->> 'blocked_episodes')::bigint, 0), to_jsonb(c) ->> 'last_blocked', "
    "(to_jsonb(c) ->> 'last_blocked_at')::timestamptz"
)
# to_jsonb: a table not yet upgraded (no table_oid or blocked_episodes column) is still
# readable, e.g. by the operator's progress readout while an older worker runs.


def _checkpoint(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        name=row[0],
        worker=row[1],
        workers=row[2],
        table_name=row[3],
        set_sql=row[4],
        where_sql=row[5],
        key_columns=tuple(row[6]),
        slice_lower=row[7],
        upper_key=row[8],
        last_key=row[9],
        rows_done=row[10],
        batches=row[11],
        started_at=row[12],
        updated_at=row[13],
        finished_at=row[14],
        last_error=row[15],
        table_oid=row[16],
        blocked_episodes=row[17],
        last_blocked=row[18],
        last_blocked_at=row[19],
    )


def read_checkpoints(conn: psycopg.Connection[Any], name: str) -> list[Checkpoint]:
    """Every worker's checkpoint of a backfill, by worker index ([] when none)."""
    if not _table_exists(conn):
        return []
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {} AS c WHERE name = %s ORDER BY worker").format(
            _CHECKPOINT_COLUMNS, sql.SQL(CHECKPOINT_TABLE)
        ),
        (name,),
    ).fetchall()
    return [_checkpoint(r) for r in rows]


def delete_checkpoints(conn: psycopg.Connection[Any], name: str) -> int:
    """Forget a backfill's checkpoints (e.g. after its step was rolled back); rows deleted."""
    if not _table_exists(conn):
        return 0
    cur = conn.execute(FORGET_CHECKPOINTS, (name,))
    return cur.rowcount


def claim_checkpoint(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    opts: BackfillOptions,
    *,
    recheck_finished: bool = True,
) -> tuple[Checkpoint, str | None]:
    """This worker's checkpoint, planning the whole backfill if this worker is the first.

    A stale checkpoint (made on another table; or finished while rows still match `where`,
    looked at only when `recheck_finished`: not after a reconnect of a run that was just
    working on it) is forgotten and planned again; the second value says why, else None.
    """
    name = opts.checkpoint_name
    reset: str | None = None
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"dbmigrate.backfill:{name}",),
        )
        existing = read_checkpoints(conn, name)
        if existing:
            reset = _stale(conn, existing, info, opts, recheck_finished=recheck_finished)
            if reset is not None:
                conn.execute(FORGET_CHECKPOINTS, (name,))
                existing = []
        if not existing:
            slices = plan_slices(conn, info, opts.workers, opts.where)
            with conn.cursor() as cur:
                cur.executemany(
                    f"""
                    INSERT INTO {CHECKPOINT_TABLE}
                        (name, worker, workers, table_name, table_oid, set_sql, where_sql,
                         key_columns, slice_lower, upper_key)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)
                    """,
                    [
                        (
                            name,
                            i,
                            opts.workers,
                            info.name,
                            info.oid,
                            opts.set,
                            opts.where,
                            list(info.key_columns),
                            lower,
                            upper,
                        )
                        for i, (lower, upper) in enumerate(slices)
                    ],
                )
        conn.execute(
            f"""
            UPDATE {CHECKPOINT_TABLE}
            SET started_at = coalesce(started_at, now()), run_started_at = now(),
                run_rows_start = rows_done, updated_at = now()
            WHERE name = %s AND worker = %s AND finished_at IS NULL
            """,
            (name, opts.worker),
        )
        mine = [c for c in read_checkpoints(conn, name) if c.worker == opts.worker]
    return mine[0], reset


def _stale(
    conn: psycopg.Connection[Any],
    existing: list[Checkpoint],
    info: TableInfo,
    opts: BackfillOptions,
    *,
    recheck_finished: bool,
) -> str | None:
    """Why the checkpoint no longer describes the table (None: it does); raises
    `CheckpointMismatch` when it belongs to another backfill."""
    cp = existing[0]
    if (cp.table_name, cp.set_sql, cp.where_sql) != (info.name, opts.set, opts.where):
        raise CheckpointMismatch(
            f"checkpoint {cp.name!r} belongs to another backfill (table {cp.table_name}, "
            f"set {cp.set_sql!r}, where {cp.where_sql!r}): use another --checkpoint name"
        )
    if any(c.table_oid is not None and c.table_oid != info.oid for c in existing):
        return (
            f"checkpoint {cp.name!r} was made on another table {cp.table_name} (oid "
            f"{cp.table_oid}, now {info.oid}: dropped and re-created, or restored)"
        )
    if any(c.table_oid is None for c in existing):
        # Planned before identities were recorded: this is the best evidence there is.
        conn.execute(
            f"UPDATE {CHECKPOINT_TABLE} SET table_oid = %s WHERE name = %s AND table_oid IS NULL",
            (info.oid, cp.name),
        )
    if cp.workers != opts.workers:
        raise CheckpointMismatch(
            f"checkpoint {cp.name!r} was planned for {cp.workers} workers, not {opts.workers}: "
            "run with the same worker count, or use another --checkpoint name"
        )
    if cp.key_columns != info.key_columns:
        raise CheckpointMismatch(
            f"the primary key of {info.name} changed since checkpoint {cp.name!r} was planned "
            f"({', '.join(cp.key_columns)} → {', '.join(info.key_columns)})"
        )
    finished = len(existing) == cp.workers and all(c.finished for c in existing)
    if recheck_finished and finished and opts.where and rows_match(conn, info, opts.where):
        return (
            f"checkpoint {cp.name!r} is finished, but rows of {info.name} still match "
            f"where {opts.where!r}"
        )
    return None


def rows_match(conn: psycopg.Connection[Any], info: TableInfo, where_sql: str) -> bool:
    """Whether any row matches `where_sql` (stops at the first one)."""
    query = sql.SQL("SELECT 1 FROM {} WHERE ({}) LIMIT 1").format(info.ident, sql.SQL(where_sql))
    # binary=True forces the extended protocol: one statement only, whatever `where` holds.
    return conn.execute(query, binary=True).fetchone() is not None


# The WHERE on the previous key makes the checkpoint a compare-and-set: if anything else moved
# this worker's checkpoint since we read it (or planned it again, for another table), no row
# matches and the batch is rolled back.
_ADVANCE = f"""
UPDATE {CHECKPOINT_TABLE}
SET last_key = %(end)s::jsonb, rows_done = rows_done + %(rows)s, batches = batches + 1,
    updated_at = now(), last_error = NULL,
    finished_at = CASE WHEN %(final)s THEN now() END
WHERE name = %(name)s AND worker = %(worker)s AND finished_at IS NULL
  AND coalesce(last_key, slice_lower) IS NOT DISTINCT FROM %(lo)s::jsonb
  AND table_oid = %(oid)s::oid
"""


def advance_checkpoint(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    *,
    table_oid: int,
    lo: str | None,
    end: str,
    rows: int,
    final: bool,
) -> bool:
    """Record a batch (lo, end] in the batch's own transaction; False if the row had moved."""
    moved = conn.execute(
        _ADVANCE,
        {
            "end": end,
            "rows": rows,
            "final": final,
            "name": opts.checkpoint_name,
            "worker": opts.worker,
            "lo": lo,
            "oid": table_oid,
        },
    ).rowcount
    return moved == 1


def finish_empty(conn: psycopg.Connection[Any], opts: BackfillOptions) -> None:
    """Mark a worker whose slice holds no key finished."""
    conn.execute(
        f"UPDATE {CHECKPOINT_TABLE} SET finished_at = now(), updated_at = now() "
        "WHERE name = %s AND worker = %s",
        (opts.checkpoint_name, opts.worker),
    )


def record_blocked(conn: psycopg.Connection[Any], opts: BackfillOptions, message: str) -> None:
    """Count a batch the blocking guard cancelled, for the operator's events and status (after
    the batch rolled back: the compare-and-set of the next batch does not look at these)."""
    conn.execute(
        f"UPDATE {CHECKPOINT_TABLE} SET blocked_episodes = blocked_episodes + 1, "
        "last_blocked = %s, last_blocked_at = now(), updated_at = now() "
        "WHERE name = %s AND worker = %s",
        (message[:2000], opts.checkpoint_name, opts.worker),
    )


def record_error(conn: psycopg.Connection[Any], opts: BackfillOptions, message: str) -> None:
    """Keep the error that stopped the worker in its row, for whoever reads progress."""
    # Best effort: the original error is what the caller reports.
    with contextlib.suppress(psycopg.Error):
        conn.execute(
            f"UPDATE {CHECKPOINT_TABLE} SET last_error = %s, updated_at = now() "
            "WHERE name = %s AND worker = %s",
            (message[:2000], opts.checkpoint_name, opts.worker),
        )

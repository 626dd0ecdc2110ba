"""Backfill batches against PostgreSQL (psycopg 3), resumable from `dbmigrate.backfill_checkpoints`.

Owns the database side of a backfill worker and of its progress readout:

- the table's primary key (composite allowed; no key → `NoPrimaryKey` before anything is
  written) and a check of the author's `set`/`where` SQL (EXPLAIN, nothing executed);
- the plan, made once per checkpoint name by whichever worker comes first (under an advisory
  transaction lock): the upper key captured at start, so a backfill ends under concurrent
  inserts, and one key slice per worker (an even split of [min, upper] for a single integer
  key, otherwise quantiles of a sample of the ordered keys), one checkpoint row per worker;
- keyset batches: the batch's last key found with an index-ordered `LIMIT`, then
  `UPDATE t SET <set> WHERE (pk) > (last) AND (pk) <= (end) [AND (<where>)]` and the
  checkpoint update in one short transaction with `SET LOCAL lock_timeout` and
  `statement_timeout`, so a killed worker resumes exactly after the last committed batch;
- retries of lock timeouts, statement timeouts, deadlocks and serialization failures with
  back-off (shrinking the batch after a statement timeout), the `pause` between batches,
  and waiting while replicas lag or too many sessions are active;
- `read_backfill_progress`, the summary the operator puts in `status.steps[].backfill`.

Keys travel as JSON arrays made by the server (`jsonb_build_array`): integer columns as
numbers, every other type as its text form, cast back with the column's own type, so any
key type whose text form round-trips (all built-in ones) works without Python conversions.
The pure decisions (batch sizing, slicing, back-off, throttling) live in
`dbmigrate.core.batching`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors, sql

from dbmigrate.api.models import BackfillProgress
from dbmigrate.core.batching import (
    BatchSizer,
    backoff_delay,
    batch_statement_timeout,
    default_checkpoint_name,
    eta_seconds,
    extrapolate_remaining,
    format_eta,
    percent_done,
    sample_boundaries,
    split_integer_range,
    throttle_reason,
    worker_slice,
)
from dbmigrate.db.errors import describe_error

CHECKPOINT_TABLE = "dbmigrate.backfill_checkpoints"
CHECKPOINT_DDL = """
CREATE SCHEMA IF NOT EXISTS dbmigrate;
CREATE TABLE IF NOT EXISTS dbmigrate.backfill_checkpoints (
    name           text        NOT NULL,
    worker         integer     NOT NULL,
    workers        integer     NOT NULL,
    table_name     text        NOT NULL,
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
    PRIMARY KEY (name, worker)
);
COMMENT ON TABLE dbmigrate.backfill_checkpoints IS
    'dbmigrate backfill workers: one row per checkpoint name and worker. slice_lower is the '
    'exclusive lower key of the worker''s slice (NULL: from the first key), upper_key its '
    'inclusive upper key captured at start (NULL: nothing to do), last_key the last key of the '
    'last committed batch (NULL: none yet). Keys are JSON arrays in primary key order.';
"""

# Below this many rows (pg_class.reltuples) progress counts rows exactly; above, it asks the
# planner, so that a status read never scans a big table.
SMALL_TABLE_ROWS = 100_000
# Keys sampled to cut a non-integer key space into slices of about equal row counts.
KEY_SAMPLE_ROWS = 10_000
# How often the strain signals (replication lag, active sessions) are read.
THROTTLE_CHECK_INTERVAL = 1.0
THROTTLE_WAIT = 1.0
DEFAULT_MAX_RETRIES = 10
# Application names of backfill sessions start with this; they do not count as "active
# sessions" for each other's throttling (parallel workers would otherwise throttle themselves).
APPLICATION_NAME_PREFIX = "dbmigrate-backfill"

BoundaryMethod = Literal["offset", "max"]
RETRYABLE = (
    errors.LockNotAvailable,  # 55P03: lock_timeout
    errors.QueryCanceled,  # 57014: statement_timeout
    errors.DeadlockDetected,  # 40P01
    errors.SerializationFailure,  # 40001
)
_INTEGER_TYPES = {20, 21, 23}  # int8, int2, int4


# ---------------------------------------------------------------------------------------------
# errors


class BackfillError(Exception):
    """An expected failure, with a message meant for a person (never contains the DSN)."""


class TableNotFound(BackfillError):
    pass


class NoPrimaryKey(BackfillError):
    pass


class CheckpointMismatch(BackfillError):
    pass


class CheckpointMoved(BackfillError):
    """Another process advanced this worker's checkpoint while we were running a batch."""


class BackfillSqlError(BackfillError):
    """The database refused a statement; `sqlstate` and the server's message."""

    def __init__(self, what: str, exc: psycopg.Error) -> None:
        self.sqlstate = exc.sqlstate
        self.server_message = describe_error(exc)
        super().__init__(f"{what}: {self.server_message}")


# ---------------------------------------------------------------------------------------------
# options, events, results


@dataclass(frozen=True)
class BackfillOptions:
    """What one worker does; mirrors `steps[].backfill` plus the worker's index."""

    table: str
    set: str
    where: str | None = None
    batch_size: int = 1000
    max_batch_size: int = 100_000
    target_batch_seconds: float = 0.5
    pause_seconds: float = 0.0
    worker: int = 0
    workers: int = 1
    checkpoint: str | None = None
    lock_timeout_seconds: float = 1.0
    max_replication_lag_seconds: float = 1.5
    max_active_sessions: int = 25
    max_retries: int = DEFAULT_MAX_RETRIES
    # None: derived from the target (batch_statement_timeout); set to test or to cap it.
    statement_timeout_seconds: float | None = None
    boundary_method: BoundaryMethod = "offset"

    def __post_init__(self) -> None:
        if not 0 <= self.worker < self.workers:
            raise ValueError(f"worker must be in [0, {self.workers}), got {self.worker}")
        if self.batch_size < 1 or self.max_batch_size < 1:
            raise ValueError("batch sizes must be at least 1")

    @property
    def checkpoint_name(self) -> str:
        return self.checkpoint or default_checkpoint_name(self.table, self.set, self.where)


@dataclass(frozen=True)
class Started:
    """The worker has its slice; `rows_estimated` counts rows done earlier plus rows left."""

    table: str
    key_columns: tuple[str, ...]
    checkpoint: str
    worker: int
    workers: int
    rows_done_before: int
    rows_estimated: int | None
    resumed: bool
    batch_size: int


@dataclass(frozen=True)
class BatchDone:
    rows: int  # rows the UPDATE changed
    seconds: float
    batch_size: int  # keys asked for
    next_batch_size: int
    rows_done: int  # this worker's total, including earlier runs
    batches: int
    last_key: str  # JSON array


@dataclass(frozen=True)
class Throttled:
    reason: str


@dataclass(frozen=True)
class Retrying:
    error: str
    attempt: int
    delay: float
    batch_size: int


BackfillEvent = Started | BatchDone | Throttled | Retrying


@dataclass(frozen=True)
class BackfillResult:
    checkpoint: str
    rows: int  # rows changed by this run
    rows_total: int  # rows changed by this worker over all runs
    batches: int
    seconds: float
    already_finished: bool = False
    stopped: bool = False  # asked to stop before the slice was done
    resumed_from: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class TableInfo:
    oid: int
    name: str  # schema-qualified and quoted as the server formats it: public.users
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]  # format_type() of each key column
    key_type_oids: tuple[int, ...]

    @property
    def ident(self) -> sql.Composable:
        # `name` comes from format('%I.%I') on the catalog: already quoted by the server.
        return sql.SQL(self.name)

    @property
    def integer_key(self) -> bool:
        return len(self.key_type_oids) == 1 and self.key_type_oids[0] in _INTEGER_TYPES

    @property
    def key_row(self) -> sql.Composable:
        """`(a, b)`: the key as a row, for row comparisons the btree index can serve."""
        return sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, self.key_columns)))

    @property
    def key_order(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.key_columns))

    def key_json(self) -> sql.Composable:
        """The key of a row as a JSON array text: `jsonb_build_array(a, b::text)::text`."""
        parts = []
        for column, type_oid in zip(self.key_columns, self.key_type_oids, strict=True):
            ref = sql.Identifier(column)
            parts.append(ref if type_oid in _INTEGER_TYPES else sql.SQL("{}::text").format(ref))
        return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(parts))

    def key_value(self, value: sql.Composable) -> sql.Composable:
        """A JSON array key (a placeholder or a literal) as a typed row: `((k->>0)::bigint)`."""
        parts = [
            sql.SQL("(({}::jsonb ->> {})::{})").format(value, sql.SQL(str(i)), sql.SQL(type_))
            for i, type_ in enumerate(self.key_types)
        ]
        return sql.SQL("({})").format(sql.SQL(", ").join(parts))


def read_table(conn: psycopg.Connection[Any], table: str) -> TableInfo:
    """The table and its primary key; `TableNotFound` / `NoPrimaryKey` otherwise."""
    try:
        row = conn.execute(
            """
            SELECT c.oid, format('%%I.%%I', n.nspname, c.relname), c.relkind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = to_regclass(%s)
            """,
            (table,),
        ).fetchone()
    except psycopg.Error as exc:
        raise BackfillSqlError(f"cannot read table {table!r}", exc) from exc
    if row is None:
        raise TableNotFound(f"table {table} does not exist (or is not visible to this user)")
    oid, name, relkind = row
    if relkind not in ("r", "p"):
        raise TableNotFound(f"{name} is not a table")
    keys = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s AND i.indisprimary
        ORDER BY k.ord
        """,
        (oid,),
    ).fetchall()
    if not keys:
        raise NoPrimaryKey(
            f"table {name} has no primary key: a backfill walks the primary key in batches "
            "(add one, e.g. ALTER TABLE ... ADD PRIMARY KEY USING INDEX ...)"
        )
    return TableInfo(
        oid=oid,
        name=name,
        key_columns=tuple(k[0] for k in keys),
        key_types=tuple(k[1] for k in keys),
        key_type_oids=tuple(k[2] for k in keys),
    )


def check_statements(
    conn: psycopg.Connection[Any], info: TableInfo, set_sql: str, where_sql: str | None
) -> None:
    """EXPLAIN the UPDATE (nothing runs): bad `set`/`where` SQL fails here, before any write."""
    query = sql.SQL("EXPLAIN UPDATE {} SET {}").format(info.ident, sql.SQL(set_sql))
    if where_sql:
        query += sql.SQL(" WHERE ({})").format(sql.SQL(where_sql))
    try:
        # binary=True forces the extended protocol: exactly one statement is accepted.
        conn.execute(query, binary=True)
    except errors.LockNotAvailable:
        raise  # planning an UPDATE locks the table: retried by the caller
    except psycopg.Error as exc:
        raise BackfillSqlError("the backfill's set/where SQL is invalid", exc) from exc


# ---------------------------------------------------------------------------------------------
# checkpoints


def ensure_checkpoint_table(conn: psycopg.Connection[Any]) -> None:
    """Create schema `dbmigrate` and the checkpoint table unless they exist."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINT_TABLE,)).fetchone()
    if exists and exists[0]:
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
    """One worker's row of `dbmigrate.backfill_checkpoints`."""

    name: str
    worker: int
    workers: int
    table_name: str
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
    "last_error"
)


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
    )


def read_checkpoints(conn: psycopg.Connection[Any], name: str) -> list[Checkpoint]:
    """Every worker's checkpoint of a backfill, by worker index ([] when none)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINT_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT {} FROM dbmigrate.backfill_checkpoints WHERE name = %s ORDER BY worker"
        ).format(_CHECKPOINT_COLUMNS),
        (name,),
    ).fetchall()
    return [_checkpoint(r) for r in rows]


def delete_checkpoints(conn: psycopg.Connection[Any], name: str) -> int:
    """Forget a backfill's checkpoints (e.g. after its step was rolled back); rows deleted."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (CHECKPOINT_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return 0
    cur = conn.execute("DELETE FROM dbmigrate.backfill_checkpoints WHERE name = %s", (name,))
    return cur.rowcount


def _plan_slices(
    conn: psycopg.Connection[Any], info: TableInfo, workers: int
) -> list[tuple[str | None, str | None]]:
    """(exclusive lower, inclusive upper) per worker, from the keys there are now."""
    row = conn.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT 1").format(
            info.key_json(),
            info.ident,
            sql.SQL(", ").join(
                sql.SQL("{} DESC").format(sql.Identifier(c)) for c in info.key_columns
            ),
        )
    ).fetchone()
    if row is None:
        return [(None, None)] * workers  # empty table: nothing to do
    upper: str = row[0]
    if workers == 1:
        return [(None, upper)]
    boundaries: list[str]
    if info.integer_key:
        first_row = conn.execute(
            sql.SQL("SELECT min({}) FROM {}").format(
                sql.Identifier(info.key_columns[0]), info.ident
            )
        ).fetchone()
        first = int(first_row[0]) if first_row and first_row[0] is not None else 0
        last = int(json.loads(upper)[0])
        boundaries = [json.dumps([b]) for b in split_integer_range(first, last, workers)]
    else:
        boundaries = sample_boundaries(_sample_keys(conn, info, upper), workers)
    return [worker_slice(boundaries, upper, i) for i in range(workers)]


def _sample_keys(conn: psycopg.Connection[Any], info: TableInfo, upper: str) -> list[str]:
    """About KEY_SAMPLE_ROWS keys up to `upper`, in key order (all keys of a small table)."""
    estimate = _table_rows_estimate(conn, info)
    percent = 100.0 if estimate <= KEY_SAMPLE_ROWS else 100.0 * KEY_SAMPLE_ROWS / estimate
    sample = (
        sql.SQL("")
        if percent >= 100
        # SYSTEM samples whole pages: it reads only about `percent` of a big table.
        else sql.SQL("TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(sql.Literal(percent))
    )
    rows = conn.execute(
        sql.SQL("SELECT {} FROM {} {} WHERE {} <= {} ORDER BY {}").format(
            info.key_json(),
            info.ident,
            sample,
            info.key_row,
            info.key_value(sql.Placeholder("upper")),
            info.key_order,
        ),
        {"upper": upper},
    ).fetchall()
    return [r[0] for r in rows]


def _claim(conn: psycopg.Connection[Any], info: TableInfo, opts: BackfillOptions) -> Checkpoint:
    """This worker's checkpoint, planning the whole backfill if this worker is the first."""
    name = opts.checkpoint_name
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"dbmigrate.backfill:{name}",),
        )
        existing = read_checkpoints(conn, name)
        if existing:
            _check_same_backfill(existing[0], info, opts)
        else:
            slices = _plan_slices(conn, info, opts.workers)
            with conn.cursor() as cur:
                cur.executemany(
                    """
                    INSERT INTO dbmigrate.backfill_checkpoints
                        (name, worker, workers, table_name, set_sql, where_sql, key_columns,
                         slice_lower, upper_key)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)
                    """,
                    [
                        (
                            name,
                            i,
                            opts.workers,
                            info.name,
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
            """
            UPDATE dbmigrate.backfill_checkpoints
            SET started_at = coalesce(started_at, now()), run_started_at = now(),
                run_rows_start = rows_done, updated_at = now()
            WHERE name = %s AND worker = %s AND finished_at IS NULL
            """,
            (name, opts.worker),
        )
        mine = [c for c in read_checkpoints(conn, name) if c.worker == opts.worker]
    return mine[0]


def _check_same_backfill(cp: Checkpoint, info: TableInfo, opts: BackfillOptions) -> None:
    if cp.workers != opts.workers:
        raise CheckpointMismatch(
            f"checkpoint {cp.name!r} was planned for {cp.workers} workers, not {opts.workers}: "
            "run with the same worker count, or use another --checkpoint name"
        )
    if (cp.table_name, cp.set_sql, cp.where_sql) != (info.name, opts.set, opts.where):
        raise CheckpointMismatch(
            f"checkpoint {cp.name!r} belongs to another backfill (table {cp.table_name}, "
            f"set {cp.set_sql!r}, where {cp.where_sql!r}): use another --checkpoint name"
        )
    if cp.key_columns != info.key_columns:
        raise CheckpointMismatch(
            f"the primary key of {info.name} changed since checkpoint {cp.name!r} was planned "
            f"({', '.join(cp.key_columns)} → {', '.join(info.key_columns)})"
        )


# ---------------------------------------------------------------------------------------------
# batches


@dataclass(frozen=True)
class BatchStatements:
    boundary: sql.Composed
    update: sql.Composed


def build_statements(
    info: TableInfo,
    set_sql: str,
    where_sql: str | None,
    *,
    has_lower: bool,
    method: BoundaryMethod = "offset",
) -> BatchStatements:
    """The boundary query and the UPDATE of one batch.

    Parameters: `lo` (exclusive lower key, only when `has_lower`), `hi` (inclusive slice end),
    `n` (batch size) for the boundary; `lo`, `end` for the UPDATE. Keys are JSON array text.
    """
    rng = info.key_row + sql.SQL(" <= ") + info.key_value(sql.Placeholder("hi"))
    if has_lower:
        rng = (
            info.key_row
            + sql.SQL(" > ")
            + info.key_value(sql.Placeholder("lo"))
            + sql.SQL(" AND ")
            + rng
        )
    if method == "max":
        if not info.integer_key:
            raise ValueError("the max() boundary form needs a single integer key")
        column = sql.Identifier(info.key_columns[0])
        # count tells whether n keys were left; when fewer, the batch runs to the slice end.
        boundary = sql.SQL(
            "SELECT CASE WHEN count(*) = %(n)s THEN jsonb_build_array(max(k))::text END "
            "FROM (SELECT {col} AS k FROM {t} WHERE {rng} ORDER BY {col} LIMIT %(n)s) AS batch"
        ).format(col=column, t=info.ident, rng=rng)
    else:
        # The JSON is built outside the OFFSET subquery: a projection inside it would be
        # computed for every skipped row (4x slower at 100 000 keys, measured).
        boundary = sql.SQL(
            "SELECT {key} FROM (SELECT {cols} FROM {t} WHERE {rng} ORDER BY {order} "
            "LIMIT 1 OFFSET %(skip)s) AS batch_end"
        ).format(
            key=info.key_json(), cols=info.key_order, t=info.ident, rng=rng, order=info.key_order
        )
    update_rng = info.key_row + sql.SQL(" <= ") + info.key_value(sql.Placeholder("end"))
    if has_lower:
        update_rng = (
            info.key_row
            + sql.SQL(" > ")
            + info.key_value(sql.Placeholder("lo"))
            + sql.SQL(" AND ")
            + update_rng
        )
    # This statement runs with parameters, so psycopg reads `%` as a placeholder: the author's
    # SQL (`v % 2`, `LIKE 'a%'`) must have its percent signs doubled.
    update = sql.SQL("UPDATE {t} SET {set} WHERE {rng}").format(
        t=info.ident, set=sql.SQL(set_sql.replace("%", "%%")), rng=update_rng
    )
    if where_sql:
        update += sql.SQL(" AND ({})").format(sql.SQL(where_sql.replace("%", "%%")))
    return BatchStatements(boundary=boundary, update=update)


def find_batch_end(
    conn: psycopg.Connection[Any],
    statements: BatchStatements,
    lo: str | None,
    hi: str,
    n: int,
) -> str | None:
    """The key n keys after `lo` (at most `hi`), or None when fewer than n keys are left."""
    row = conn.execute(
        statements.boundary, {"lo": lo, "hi": hi, "n": n, "skip": n - 1}, prepare=False
    ).fetchone()
    return row[0] if row else None


# The WHERE on the previous key makes the checkpoint a compare-and-set: if anything else moved
# this worker's checkpoint since we read it, no row matches and the batch is rolled back.
_CHECKPOINT_BATCH = """
UPDATE dbmigrate.backfill_checkpoints
SET last_key = %(end)s::jsonb, rows_done = rows_done + %(rows)s, batches = batches + 1,
    updated_at = now(), last_error = NULL,
    finished_at = CASE WHEN %(final)s THEN now() END
WHERE name = %(name)s AND worker = %(worker)s AND finished_at IS NULL
  AND coalesce(last_key, slice_lower) IS NOT DISTINCT FROM %(lo)s::jsonb
"""


_STRAIN = """
SELECT
    (SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication),
    (SELECT count(*) FROM pg_stat_activity
     WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
       AND coalesce(application_name, '') NOT LIKE %s)
"""


def read_strain(conn: psycopg.Connection[Any]) -> tuple[float | None, int]:
    """(worst replica replay lag in seconds or None, active client sessions but ours)."""
    row = conn.execute(_STRAIN, (APPLICATION_NAME_PREFIX + "%",)).fetchone()
    if row is None:
        return None, 0
    return (float(row[0]) if row[0] is not None else None), int(row[1])


def _record_error(conn: psycopg.Connection[Any], opts: BackfillOptions, message: str) -> None:
    # Best effort: the original error is what the caller reports.
    with contextlib.suppress(psycopg.Error):
        conn.execute(
            "UPDATE dbmigrate.backfill_checkpoints SET last_error = %s, updated_at = now() "
            "WHERE name = %s AND worker = %s",
            (message[:2000], opts.checkpoint_name, opts.worker),
        )


def run_backfill(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    *,
    on_event: Callable[[BackfillEvent], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BackfillResult:
    """Run worker `opts.worker` of the backfill until its slice is done (or `stop` is set).

    `conn` must be in autocommit mode: every batch is its own transaction. Raises
    `BackfillError` subclasses for expected failures (missing table, no primary key, bad SQL,
    retries exhausted), with the server's SQLSTATE and message.
    """
    if not conn.autocommit:
        raise ValueError("run_backfill needs an autocommit connection")
    emit = on_event or (lambda _event: None)
    stop = stop or threading.Event()
    info = read_table(conn, opts.table)
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    # Everything before the batches (EXPLAIN, checkpoint DDL, planning) waits for locks at
    # most this long too, so that a long DDL elsewhere never queues us for minutes.
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false)",
        (f"{max(1, round(opts.lock_timeout_seconds * 1000))}ms",),
    )
    try:
        _retrying_locks(
            lambda: check_statements(conn, info, opts.set, opts.where), opts, emit, stop
        )
        _retrying_locks(lambda: ensure_checkpoint_table(conn), opts, emit, stop)
        if not _lock_slice(conn, opts, emit, stop):
            return BackfillResult(
                checkpoint=opts.checkpoint_name,
                rows=0,
                rows_total=0,
                batches=0,
                seconds=0.0,
                stopped=True,
            )
        try:
            return _run_slice(conn, info, opts, emit, stop, clock)
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_slice_lock_key(opts),))
    finally:
        if previous is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0],))


T = TypeVar("T")


def _retrying_locks(
    fn: Callable[[], T],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
) -> T:
    """`fn()`, retried with back-off while it hits the lock timeout (SQLSTATE 55P03)."""
    attempt = 0
    while True:
        try:
            return fn()
        except errors.LockNotAvailable as exc:
            attempt += 1
            if attempt > opts.max_retries or stop.is_set():
                raise BackfillSqlError(
                    f"waited for a lock on {opts.table} {attempt} times in a row", exc
                ) from exc
            delay = backoff_delay(attempt - 1, random.random())  # noqa: S311 - jitter only
            emit(Retrying(describe_error(exc), attempt, delay, opts.batch_size))
            stop.wait(delay)


def _slice_lock_key(opts: BackfillOptions) -> int:
    digest = hashlib.sha256(f"dbmigrate.backfill:{opts.checkpoint_name}:{opts.worker}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def _lock_slice(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
) -> bool:
    """Hold this worker's slice for the session: one process per slice, ever.

    A replacement pod can start while the old one is still ending, and the server rolls back
    a killed client's last batch only when it notices the client is gone; the second process
    waits here until the first one's session has ended. False if stopped while waiting.
    """
    key = _slice_lock_key(opts)
    announced = False
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row and row[0]:
            return True
        if not announced:
            emit(
                Throttled(
                    reason=f"another session is working on worker {opts.worker}/{opts.workers} "
                    f"of checkpoint {opts.checkpoint_name!r}"
                )
            )
            announced = True
        if stop.wait(THROTTLE_WAIT):
            return False


def _run_slice(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
    clock: Callable[[], float],
) -> BackfillResult:
    cp = _retrying_locks(lambda: _claim(conn, info, opts), opts, emit, stop)
    name = opts.checkpoint_name
    if cp.finished or cp.upper_key is None:
        if not cp.finished:
            _finish_empty(conn, opts)
        return BackfillResult(
            checkpoint=name,
            rows=0,
            rows_total=cp.rows_done,
            batches=0,
            seconds=0.0,
            already_finished=cp.finished,
            resumed_from=cp.rows_done,
        )

    sizer = BatchSizer.start(opts.batch_size, opts.max_batch_size, opts.target_batch_seconds)
    remaining = estimate_rows(conn, info, opts.where, [(cp.resume_after, cp.upper_key)])
    emit(
        Started(
            table=info.name,
            key_columns=info.key_columns,
            checkpoint=name,
            worker=opts.worker,
            workers=opts.workers,
            rows_done_before=cp.rows_done,
            rows_estimated=None if remaining is None else cp.rows_done + remaining,
            resumed=cp.last_key is not None,
            batch_size=sizer.size,
        )
    )
    statement_timeout = opts.statement_timeout_seconds or batch_statement_timeout(
        opts.target_batch_seconds
    )
    settings = (
        f"{max(1, round(opts.lock_timeout_seconds * 1000))}ms",
        f"{max(1, round(statement_timeout * 1000))}ms",
    )
    statements = {
        has_lower: build_statements(
            info, opts.set, opts.where, has_lower=has_lower, method=opts.boundary_method
        )
        for has_lower in (False, True)
    }
    hi: str = cp.upper_key
    lo = cp.resume_after
    rows_total = cp.rows_done
    rows_run = batches = attempt = 0
    batch_seconds: list[float] = []
    batch_sizes: list[int] = []
    started = clock()
    next_strain_check = started
    final = False

    while not final:
        if stop.is_set():
            break
        if clock() >= next_strain_check:
            if _wait_while_strained(conn, opts, emit, stop):
                break
            next_strain_check = clock() + THROTTLE_CHECK_INTERVAL
        size = sizer.size
        t0 = clock()
        try:
            end, final, rows = _run_batch(
                conn, statements[lo is not None], settings, opts, lo, hi, size
            )
        except RETRYABLE as exc:
            attempt += 1
            message = describe_error(exc)
            if attempt > opts.max_retries:
                _record_error(conn, opts, message)
                raise BackfillSqlError(
                    f"the batch {_after(lo)} failed {attempt} times in a row", exc
                ) from exc
            if isinstance(exc, errors.QueryCanceled):
                sizer = sizer.after_timeout()
            delay = backoff_delay(attempt - 1, random.random())  # noqa: S311 - jitter only
            emit(Retrying(error=message, attempt=attempt, delay=delay, batch_size=sizer.size))
            stop.wait(delay)
            continue
        except psycopg.Error as exc:
            if conn.closed:
                raise BackfillSqlError("lost the database connection", exc) from exc
            _record_error(conn, opts, describe_error(exc))
            raise BackfillSqlError(f"the batch {_after(lo)} failed", exc) from exc
        seconds = clock() - t0
        attempt = 0
        batches += 1
        rows_run += rows
        rows_total += rows
        batch_seconds.append(seconds)
        batch_sizes.append(size)
        if not final:
            # The last batch runs to the slice end: its key count is unknown and irrelevant.
            sizer = sizer.after_batch(size, seconds)
        lo = end
        emit(
            BatchDone(
                rows=rows,
                seconds=seconds,
                batch_size=size,
                next_batch_size=sizer.size,
                rows_done=rows_total,
                batches=cp.batches + batches,
                last_key=end,
            )
        )
        if not final and opts.pause_seconds > 0:
            stop.wait(opts.pause_seconds)
    return BackfillResult(
        checkpoint=name,
        rows=rows_run,
        rows_total=rows_total,
        batches=batches,
        seconds=clock() - started,
        stopped=not final,
        resumed_from=cp.rows_done,
        batch_seconds=batch_seconds,
        batch_sizes=batch_sizes,
    )


def _after(lo: str | None) -> str:
    return "at the start of the slice" if lo is None else f"after key {lo}"


def _run_batch(
    conn: psycopg.Connection[Any],
    stmts: BatchStatements,
    settings: tuple[str, str],
    opts: BackfillOptions,
    lo: str | None,
    hi: str,
    size: int,
) -> tuple[str, bool, int]:
    """One batch in one transaction: (its last key, whether it was the last, rows changed)."""
    with conn.transaction():
        conn.execute(
            "SELECT set_config('lock_timeout', %s, true), "
            "set_config('statement_timeout', %s, true)",
            settings,
        )
        found = find_batch_end(conn, stmts, lo, hi, size)
        # Fewer than `size` keys left, or exactly `size`: this batch runs to the slice end.
        # (Both texts are jsonb output, so equal keys have equal texts.)
        final = found is None or found == hi
        end = hi if found is None else found
        rows = conn.execute(stmts.update, {"lo": lo, "end": end}, prepare=False).rowcount
        moved = conn.execute(
            _CHECKPOINT_BATCH,
            {
                "end": end,
                "rows": rows,
                "final": final,
                "name": opts.checkpoint_name,
                "worker": opts.worker,
                "lo": lo,
            },
        ).rowcount
        if moved != 1:
            raise CheckpointMoved(
                f"checkpoint {opts.checkpoint_name!r} worker {opts.worker} moved under this "
                "process (another process on the same slice?); its batch was rolled back"
            )
    return end, final, rows


def _finish_empty(conn: psycopg.Connection[Any], opts: BackfillOptions) -> None:
    conn.execute(
        "UPDATE dbmigrate.backfill_checkpoints SET finished_at = now(), updated_at = now() "
        "WHERE name = %s AND worker = %s",
        (opts.checkpoint_name, opts.worker),
    )


def _wait_while_strained(
    conn: psycopg.Connection[Any],
    opts: BackfillOptions,
    emit: Callable[[BackfillEvent], None],
    stop: threading.Event,
) -> bool:
    """Block while replicas lag or too many sessions are active; True if stopped meanwhile."""
    last_reason = None
    while True:
        lag, active = read_strain(conn)
        reason = throttle_reason(
            lag,
            active,
            max_replication_lag=opts.max_replication_lag_seconds,
            max_active_sessions=opts.max_active_sessions,
        )
        if reason is None:
            return False
        if reason != last_reason:
            emit(Throttled(reason=reason))
            last_reason = reason
        if stop.wait(THROTTLE_WAIT):
            return True


# ---------------------------------------------------------------------------------------------
# estimates and progress


def _reltuples(conn: psycopg.Connection[Any], info: TableInfo) -> float:
    """Live rows at the last VACUUM/ANALYZE; -1 when the table never had either."""
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s", (info.oid,)).fetchone()
    return float(row[0]) if row else -1.0


def _table_rows_estimate(conn: psycopg.Connection[Any], info: TableInfo) -> float:
    reltuples = _reltuples(conn, info)
    if reltuples >= 0:
        return reltuples
    # Never vacuumed or analysed: the planner extrapolates from the table's size on disk.
    return _planner_rows(conn, sql.SQL("SELECT 1 FROM {}").format(info.ident))


def _planner_rows(conn: psycopg.Connection[Any], query: sql.Composable) -> float:
    # binary=True forces the extended protocol: one statement only, whatever `where` holds.
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, binary=True).fetchone()
    if row is None:
        return 0.0
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return float(plan[0]["Plan"]["Plan Rows"])


def _ranges_predicate(
    info: TableInfo, ranges: Sequence[tuple[str | None, str | None]]
) -> sql.Composable:
    """Keys in any of the (exclusive lower, inclusive upper) ranges, as literal SQL."""
    terms: list[sql.Composable] = []
    for lower, upper in ranges:
        if upper is None:
            continue
        term = info.key_row + sql.SQL(" <= ") + info.key_value(sql.Literal(upper))
        if lower is not None:
            term = (
                info.key_row
                + sql.SQL(" > ")
                + info.key_value(sql.Literal(lower))
                + sql.SQL(" AND ")
                + term
            )
        terms.append(sql.SQL("({})").format(term))
    if not terms:
        return sql.SQL("false")
    return sql.SQL("({})").format(sql.SQL(" OR ").join(terms))


def estimate_rows(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    where_sql: str | None,
    ranges: Sequence[tuple[str | None, str | None]],
) -> int | None:
    """Rows matching `where` with keys in `ranges`: counted on a small table, else planned.

    Counting is exact and cheap below SMALL_TABLE_ROWS; above, the planner's selectivity of
    the predicate (from the key's histogram and `where`'s statistics) times pg_class.reltuples
    avoids scanning a big table each time progress is read. (The planner's own row count is
    not used as is: it scales reltuples by the table's current size, which a backfill inflates
    with dead row versions.) None when the database refuses.
    """
    predicate = _ranges_predicate(info, ranges)
    if where_sql:
        predicate = sql.SQL("{} AND ({})").format(predicate, sql.SQL(where_sql))
    try:
        reltuples = _reltuples(conn, info)
        total = _table_rows_estimate(conn, info) if reltuples < 0 else reltuples
        if total < SMALL_TABLE_ROWS:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {}").format(info.ident, predicate),
                binary=True,
            ).fetchone()
            return int(row[0]) if row else None
        matching = _planner_rows(
            conn, sql.SQL("SELECT 1 FROM {} WHERE {}").format(info.ident, predicate)
        )
        if reltuples < 0:
            return round(matching)
        everything = _planner_rows(conn, sql.SQL("SELECT 1 FROM {}").format(info.ident))
        return round(reltuples * min(1.0, matching / everything)) if everything > 0 else 0
    except psycopg.Error:
        return None


def _extrapolated_remaining(
    conn: psycopg.Connection[Any], info: TableInfo, unfinished: Sequence[Checkpoint]
) -> float | None:
    """For a single integer key: each running worker's density so far, over the rest of its
    range (see `core.batching.extrapolate_remaining`); None when any worker cannot say yet."""
    if not info.integer_key or not unfinished:
        return None
    start: int | None = None
    total = 0.0
    for cp in unfinished:
        if cp.upper_key is None:
            return None
        if cp.slice_lower is not None:
            lower = int(json.loads(cp.slice_lower)[0])
        else:
            if start is None:
                row = conn.execute(
                    sql.SQL("SELECT min({}) FROM {}").format(
                        sql.Identifier(info.key_columns[0]), info.ident
                    )
                ).fetchone()
                if row is None or row[0] is None:
                    return None
                start = int(row[0]) - 1  # the slice is exclusive of its lower key
            lower = start
        last = int(json.loads(cp.last_key)[0]) if cp.last_key is not None else lower
        upper = int(json.loads(cp.upper_key)[0])
        rest = extrapolate_remaining(cp.rows_done, lower, last, upper)
        if rest is None:
            return None
        total += rest
    return total


def read_backfill_progress(conn: psycopg.Connection[Any], checkpoint: str) -> BackfillProgress:
    """The backfill's progress over all its workers, for `status.steps[].backfill`.

    rowsDone is summed over workers; rowsEstimated is rowsDone plus the rows (matching
    `where`) still in the workers' unfinished key ranges, counted exactly on small tables and
    estimated by the planner on big ones; rowsPerSecond is the sum of the running workers'
    rates in their current run (a restarted worker starts a new run). Before any worker has
    started, everything but rowsDone=0 is unknown.
    """
    cps = read_checkpoints(conn, checkpoint)
    if not cps:
        return BackfillProgress(rows_done=0)
    done = sum(c.rows_done for c in cps)
    workers = cps[0].workers
    finished = len(cps) == workers and all(c.finished for c in cps)
    timing = conn.execute(
        """
        SELECT worker, extract(epoch FROM now() - run_started_at)::float8,
               rows_done - run_rows_start,
               extract(epoch FROM finished_at - started_at)::float8
        FROM dbmigrate.backfill_checkpoints WHERE name = %s
        """,
        (checkpoint,),
    ).fetchall()
    rate: float | None
    if finished:
        spans = [t[3] for t in timing if t[3] is not None]
        span = max(spans) if spans else 0.0
        rate = done / span if span > 0 else None
        estimated: int | None = done
    else:
        unfinished = {c.worker for c in cps if not c.finished}
        rates = [
            t[2] / t[1]
            for t in timing
            if t[0] in unfinished and t[1] and t[1] > 0 and t[2] is not None
        ]
        rate = sum(rates) if rates else None
        try:
            info = read_table(conn, cps[0].table_name)
        except BackfillError:
            info = None
        unfinished_cps = [c for c in cps if not c.finished]
        remaining = _extrapolated_remaining(conn, info, unfinished_cps) if info else None
        if remaining is None and info is not None:
            remaining = estimate_rows(
                conn,
                info,
                cps[0].where_sql,
                [(c.resume_after, c.upper_key) for c in unfinished_cps],
            )
        estimated = None if remaining is None else done + round(remaining)
    return BackfillProgress(
        rows_done=done,
        rows_estimated=estimated,
        percent=percent_done(done, estimated, finished=finished),
        rows_per_second=None if rate is None else round(rate),
        eta="0s" if finished else format_eta(eta_seconds(done, estimated, rate)),
    )

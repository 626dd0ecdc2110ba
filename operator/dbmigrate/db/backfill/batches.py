"""One batch of a backfill: its statements, and the transaction that runs it.

Owns the SQL of a keyset batch: the boundary query that finds the batch's last key with an
index-ordered `LIMIT` (or `max()` over one for a single integer key), then
`UPDATE t SET <set> WHERE (pk) > (lo) AND (pk) <= (end) [AND (<where>)]`, and `run_batch`,
which runs both plus the checkpoint's compare-and-set in one short transaction under
`SET LOCAL lock_timeout` and `statement_timeout`. Retrying a failed batch is the worker's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbmigrate.db.backfill.checkpoints import advance_checkpoint
from dbmigrate.db.backfill.model import BackfillOptions, BoundaryMethod, CheckpointMoved
from dbmigrate.db.backfill.table import TableInfo


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
    lo = sql.Placeholder("lo") if has_lower else None
    rng = info.key_range(lo, sql.Placeholder("hi"))
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
    update_rng = info.key_range(lo, sql.Placeholder("end"))
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


def run_batch(
    conn: psycopg.Connection[Any],
    stmts: BatchStatements,
    settings: tuple[str, str],
    opts: BackfillOptions,
    lo: str | None,
    hi: str,
    size: int,
    *,
    table_oid: int,
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
        if not advance_checkpoint(
            conn, opts, table_oid=table_oid, lo=lo, end=end, rows=rows, final=final
        ):
            raise CheckpointMoved(
                f"checkpoint {opts.checkpoint_name!r} worker {opts.worker} moved under this "
                "process (another process on the same slice?); its batch was rolled back"
            )
    return end, final, rows

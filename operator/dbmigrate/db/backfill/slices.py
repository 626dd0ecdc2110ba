"""Slices of the key space, one per parallel worker, planned from the keys there are now.

The upper key is captured once, at planning, so that a backfill ends under concurrent
inserts (rows inserted later are the application's to write correctly). A single integer key
is split evenly over [min, upper]; any other key is cut at quantiles of a sample of the
ordered keys, so that slices hold about as many rows whatever the key's distribution.
The arithmetic of both lives in `dbmigrate.core.batching`.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from dbmigrate.core.batching import sample_boundaries, split_integer_range, worker_slice
from dbmigrate.db.backfill.table import TableInfo, table_rows_estimate

# Keys sampled to cut a non-integer key space into slices of about equal row counts.
KEY_SAMPLE_ROWS = 10_000


def plan_slices(
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
        boundaries = sample_boundaries(sample_keys(conn, info, upper), workers)
    return [worker_slice(boundaries, upper, i) for i in range(workers)]


def sample_keys(conn: psycopg.Connection[Any], info: TableInfo, upper: str) -> list[str]:
    """About KEY_SAMPLE_ROWS keys up to `upper`, in key order (all keys of a small table)."""
    estimate = table_rows_estimate(conn, info)
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

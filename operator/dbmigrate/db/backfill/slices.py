"""Slices of the key space, one per parallel worker, planned from the rows there are now.

The upper key is captured once, at planning, so that a backfill ends under concurrent
inserts (rows inserted later are the application's to write correctly). Every key type is cut
at quantiles of a sample of the keys of the rows the backfill will change (those matching its
`where`), so that each worker gets about as many rows to write whatever the keys'
distribution: a bigint key with 90 % of its ids in 10 % of its range, a composite key of a few
big tenants, rows left to do only at one end of the table. Splitting the key range instead
gave one of two workers 94 % of such a table (measured in `hack/bench/backfill_parallel.py`).
When the sample holds too few of the rows to do (a `where` that matches almost nothing, an
empty table), the sample is taken without the `where`; when it is still empty, a single
integer key falls back to splitting its range evenly. The arithmetic lives in
`dbmigrate.core.batching`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbmigrate.core.batching import split_integer_range, worker_slice
from dbmigrate.db.backfill.table import TableInfo, rows_to_do_estimate, table_rows_estimate

# Keys of rows to do sampled to cut the key space into slices of about equal row counts.
KEY_SAMPLE_ROWS = 30_000
# Pages sampled at least: the quantiles' error shrinks with the pages, not the rows (below).
MIN_SAMPLE_PAGES = 3_000
# A sample filtered by `where` reads at most this many times the pages of an unfiltered one.
MAX_SAMPLE_FACTOR = 10


def plan_slices(
    conn: psycopg.Connection[Any], info: TableInfo, workers: int, where_sql: str | None = None
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
    boundaries: list[str] = []
    if where_sql:
        boundaries = sample_quantiles(conn, info, upper, workers, where_sql)
    if len(boundaries) < workers - 1:  # too few rows to do in the sample
        boundaries = sample_quantiles(conn, info, upper, workers, None)
    if not boundaries and info.integer_key:
        first_row = conn.execute(
            sql.SQL("SELECT min({}) FROM {}").format(
                sql.Identifier(info.key_columns[0]), info.ident
            )
        ).fetchone()
        first = int(first_row[0]) if first_row and first_row[0] is not None else 0
        last = int(json.loads(upper)[0])
        boundaries = [json.dumps([b]) for b in split_integer_range(first, last, workers)]
    return [worker_slice(boundaries, upper, i) for i in range(workers)]


@dataclass(frozen=True)
class Sample:
    """How to sample: the share of the table's pages to read, and of their rows to keep."""

    percent: float  # of the pages (TABLESAMPLE SYSTEM); 100: the whole table
    keep: float  # of the rows read (random() < keep); 1: all of them


def plan_sample(conn: psycopg.Connection[Any], info: TableInfo, where_sql: str | None) -> Sample:
    """How to sample the keys of the rows to do.

    SYSTEM sampling reads whole pages, and rows on a page have neighbouring keys when the
    table was filled in key order: the quantiles are as good as the number of pages sampled
    (10 000 rows from 80 pages cut a 1 M row table 45/55). So at least MIN_SAMPLE_PAGES pages,
    and enough pages for KEY_SAMPLE_ROWS rows to do; a `where` matching 1 % of the table needs
    100x the pages, at most MAX_SAMPLE_FACTOR x, so that a planner wrong by far never makes us
    read a big table whole. Of the rows read only about KEY_SAMPLE_ROWS are kept (at random,
    from every page read): sorting all the rows of 3 000 pages took 0.4 s of a 1 M row table's
    2.5 s backfill, on its critical path, since the other workers wait for the plan.
    """
    total = table_rows_estimate(conn, info)
    to_do = rows_to_do_estimate(conn, info, where_sql) if where_sql else total
    row = conn.execute(
        "SELECT sum(relpages) FROM pg_class WHERE oid = %s OR oid IN "
        "(SELECT relid FROM pg_partition_tree(%s) WHERE isleaf)",
        (info.oid, info.oid),
    ).fetchone()
    pages = float(row[0]) if row and row[0] else 0.0
    by_rows = min(
        100.0 * KEY_SAMPLE_ROWS / max(to_do, 1.0),
        100.0 * MAX_SAMPLE_FACTOR * KEY_SAMPLE_ROWS / max(total, 1.0),
    )
    by_pages = 100.0 * MIN_SAMPLE_PAGES / pages if pages > 0 else 100.0
    percent = min(100.0, max(by_rows, by_pages))
    expected = max(to_do, 1.0) * percent / 100.0
    return Sample(percent=percent, keep=min(1.0, KEY_SAMPLE_ROWS / expected))


def sample_quantiles(
    conn: psycopg.Connection[Any], info: TableInfo, upper: str, workers: int, where_sql: str | None
) -> list[str]:
    """The `workers - 1` inner boundaries that cut a sample of the keys up to `upper` of rows
    matching `where_sql` into slices of equal row counts (fewer when the sample holds fewer
    keys). The server sorts the sample and returns only the boundaries."""
    plan = plan_sample(conn, info, where_sql)
    sample = (
        sql.SQL("")
        if plan.percent >= 100
        else sql.SQL("TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(sql.Literal(plan.percent))
    )
    condition = sql.SQL("{} <= {}").format(info.key_row, info.key_value(sql.Placeholder("upper")))
    if plan.keep < 1.0:
        condition += sql.SQL(" AND random() < {}").format(sql.Literal(plan.keep))
    if where_sql:
        # Run with parameters: the author's percent signs must be doubled (see batches).
        condition += sql.SQL(" AND ({})").format(sql.SQL(where_sql.replace("%", "%%")))
    # Boundary i is the (n * i / workers)-th of the n keys sampled; computed where the keys
    # are, so that only the boundaries travel.
    query = sql.SQL(
        "WITH s AS (SELECT {cols}, row_number() OVER (ORDER BY {order}) AS rn, "
        "count(*) OVER () AS n FROM {t} {sample} WHERE {condition}) "
        "SELECT DISTINCT ON (rn) {key} FROM s "
        "WHERE rn IN (SELECT (s.n * i) / %(workers)s FROM generate_series(1, %(workers)s - 1) "
        "AS i) ORDER BY rn"
    ).format(
        cols=info.key_order,
        order=info.key_order,
        t=info.ident,
        sample=sample,
        condition=condition,
        key=info.key_json(),
    )
    if plan.keep < 1.0:
        # The same table gives the same slices (like REPEATABLE for the pages): a plan can be
        # reproduced, and a test of it is not left to chance.
        conn.execute("SELECT setseed(0.5)")
    rows = conn.execute(query, {"upper": upper, "workers": workers}).fetchall()
    return [r[0] for r in rows]

"""How far a backfill is, over all its workers: `read_backfill_progress` and its estimates.

Owns the summary the operator puts in `status.steps[].backfill` (rows done, rows estimated,
percent, rows per second, ETA) and `estimate_rows`, which the worker also uses to announce
its own estimate when it starts. A status read must never scan a big table: rows are counted
exactly only below SMALL_TABLE_ROWS, otherwise they come from the planner's statistics, from
the key range when there are none yet, or from each worker's own density so far (single
integer key). The arithmetic lives in
`dbmigrate.core.batching`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from dbmigrate.core.batching import (
    eta_seconds,
    extrapolate_remaining,
    format_eta,
    percent_done,
    rows_in_key_range,
)
from dbmigrate.db.backfill.checkpoints import CHECKPOINT_TABLE, Checkpoint, read_checkpoints
from dbmigrate.db.backfill.model import BackfillError, BackfillSummary
from dbmigrate.db.backfill.table import (
    TableInfo,
    planner_rows,
    read_reltuples,
    read_table,
    statistics_stale,
    table_rows_estimate,
)

# Below this many rows (pg_class.reltuples) progress counts rows exactly; above, it asks the
# planner, so that a status read never scans a big table.
SMALL_TABLE_ROWS = 100_000


def _ranges_predicate(
    info: TableInfo, ranges: Sequence[tuple[str | None, str | None]]
) -> sql.Composable:
    """Keys in any of the (exclusive lower, inclusive upper) ranges, as literal SQL."""
    terms: list[sql.Composable] = []
    for lower, upper in ranges:
        if upper is None:
            continue
        term = info.key_range(None if lower is None else sql.Literal(lower), sql.Literal(upper))
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
    """Rows matching `where` with keys in `ranges`: counted on a small table, else estimated.

    Counting is exact and cheap below SMALL_TABLE_ROWS; above, the planner's selectivity of
    the predicate (from the key's histogram and `where`'s statistics) times pg_class.reltuples
    avoids scanning a big table each time progress is read. (The planner's own row count is
    not used as is: it scales reltuples by the table's current size, which a backfill inflates
    with dead row versions.) Without usable statistics (never analysed, or the table grew
    far since) the planner's selectivity is a fixed guess: a single integer key then gives
    the estimate from the key range and the first rows of each range (`_key_range_rows`,
    two index probes and one short index scan), not ANALYZE, which a status read must not
    run. None when the database refuses.
    """
    predicate = _ranges_predicate(info, ranges)
    if where_sql:
        predicate = sql.SQL("{} AND ({})").format(predicate, sql.SQL(where_sql))
    try:
        stale = statistics_stale(conn, info)
        # Without statistics the planner's size comes from the table's pages now.
        total = table_rows_estimate(conn, info) if not stale else _planner_table_rows(conn, info)
        if total < SMALL_TABLE_ROWS:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {}").format(info.ident, predicate),
                binary=True,
            ).fetchone()
            return int(row[0]) if row else None
        if stale and info.integer_key:
            return round(sum(_key_range_rows(conn, info, where_sql, r) for r in ranges))
        matching = planner_rows(
            conn, sql.SQL("SELECT 1 FROM {} WHERE {}").format(info.ident, predicate)
        )
        if stale:
            return round(matching)
        reltuples = read_reltuples(conn, info)
        everything = planner_rows(conn, sql.SQL("SELECT 1 FROM {}").format(info.ident))
        return round(reltuples * min(1.0, matching / everything)) if everything > 0 else 0
    except psycopg.Error:
        return None


def _planner_table_rows(conn: psycopg.Connection[Any], info: TableInfo) -> float:
    return planner_rows(conn, sql.SQL("SELECT 1 FROM {}").format(info.ident))


# How many rows of a range `_key_range_rows` reads to learn how many of them match.
KEY_RANGE_SAMPLE_ROWS = 1000


def _key_range_rows(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    where_sql: str | None,
    key_range: tuple[str | None, str | None],
) -> float:
    """Rows matching `where` in one (exclusive lower, inclusive upper] range of an integer key.

    Its first KEY_RANGE_SAMPLE_ROWS rows in key order (an index scan that stops there) say
    how many match per key; that density over the range's keys is the estimate
    (`core.batching.rows_in_key_range`). Dense keys (a serial) make it close; gaps in the
    keys make it high, never 600-fold low. The worker's own density corrects it as it goes.
    """
    lower_json, upper_json = key_range
    if upper_json is None:
        return 0.0
    key = sql.Identifier(info.key_columns[0])
    upper = int(json.loads(upper_json)[0])
    if lower_json is None:
        row = conn.execute(sql.SQL("SELECT min({}) FROM {}").format(key, info.ident)).fetchone()
        if row is None or row[0] is None:
            return 0.0
        lower = int(row[0]) - 1  # exclusive
    else:
        lower = int(json.loads(lower_json)[0])
    matches = sql.SQL(where_sql) if where_sql else sql.SQL("true")
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE m), count(*), max(k) FROM "
            "(SELECT {key} AS k, ({matches}) IS TRUE AS m FROM {table} "
            "WHERE {key} > {lower} AND {key} <= {upper} ORDER BY {key} LIMIT {limit}) s"
        ).format(
            key=key,
            matches=matches,
            table=info.ident,
            lower=sql.Literal(lower),
            upper=sql.Literal(upper),
            limit=sql.Literal(KEY_RANGE_SAMPLE_ROWS),
        ),
        binary=True,
    ).fetchone()
    if row is None or not row[1]:
        return 0.0
    return rows_in_key_range(
        int(row[0]), int(row[1]), KEY_RANGE_SAMPLE_ROWS, lower, int(row[2]), upper
    )


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


def read_backfill_progress(
    conn: psycopg.Connection[Any],
    checkpoint: str,
    *,
    table: str | None = None,
    where: str | None = None,
) -> BackfillSummary:
    """The backfill's progress over all its workers, for `status.steps[].backfill`.

    The operator passes the step's own `table` and `where`: the estimate then runs the spec's
    predicate, never SQL read back from the checkpoint table (which whoever may write to the
    `dbmigrate` schema could have changed). Without them (a worker's own view), the
    checkpoint's are used.

    rowsDone is summed over workers; rowsEstimated is rowsDone plus the rows (matching
    `where`) still in the workers' unfinished key ranges, counted exactly on small tables and
    estimated by the planner on big ones; rowsPerSecond is the sum of the running workers'
    rates in their current run (a restarted worker starts a new run). Before any worker has
    started, everything but rowsDone=0 is unknown.
    """
    cps = read_checkpoints(conn, checkpoint)
    if not cps:
        return BackfillSummary(rows_done=0)
    done = sum(c.rows_done for c in cps)
    workers = cps[0].workers
    finished = len(cps) == workers and all(c.finished for c in cps)
    timing = conn.execute(
        f"""
        SELECT worker, extract(epoch FROM now() - run_started_at)::float8,
               rows_done - run_rows_start,
               extract(epoch FROM finished_at - started_at)::float8
        FROM {CHECKPOINT_TABLE} WHERE name = %s
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
            info = read_table(conn, table if table is not None else cps[0].table_name)
        except BackfillError:
            info = None
        unfinished_cps = [c for c in cps if not c.finished]
        remaining = _extrapolated_remaining(conn, info, unfinished_cps) if info else None
        if remaining is None and info is not None:
            remaining = estimate_rows(
                conn,
                info,
                where if table is not None else cps[0].where_sql,
                [(c.resume_after, c.upper_key) for c in unfinished_cps],
            )
        estimated = None if remaining is None else done + round(remaining)
    return BackfillSummary(
        rows_done=done,
        rows_estimated=estimated,
        percent=percent_done(done, estimated, finished=finished),
        rows_per_second=None if rate is None else round(rate),
        eta="0s" if finished else format_eta(eta_seconds(done, estimated, rate)),
        workers=workers,
        blocking_episodes=sum(c.blocked_episodes for c in cps),
        last_blocked=_last_blocked(cps),
    )


def _last_blocked(cps: Sequence[Checkpoint]) -> str | None:
    """What the latest blocking episode of any worker was."""
    episodes = [c for c in cps if c.last_blocked is not None and c.last_blocked_at is not None]
    if not episodes:
        return None
    latest = max(episodes, key=lambda c: c.last_blocked_at)
    prefix = f"worker {latest.worker}/{latest.workers}: " if latest.workers > 1 else ""
    return f"{prefix}{latest.last_blocked}"

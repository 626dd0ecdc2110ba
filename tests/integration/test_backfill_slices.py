"""Parallel backfill slices and worker counts against real PostgreSQL.

Aspects covered:
- slices hold about as many rows to do each, whatever the keys' distribution: a bigint key
  with 90 % of its ids in 10 % of its range (an even split of the range gave one worker 94 %),
  a composite text key with one tenant holding half the rows, rows to do only at one end of
  the table (`where`), a table filled in key order (page samples are not row samples);
- two workers on a table with a trigger and foreign keys to it, and on a partitioned table,
  end like one UPDATE (every row once, the trigger run for each);
- `parallelism: auto` (`resolve_workers`): the count from the table's statistics, the
  server's `max_parallel_workers_per_gather`, a pause; an existing plan's count wins (a
  restart never changes it); a missing table or a `where` that does not plan gives 1 and
  leaves the error to the worker.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dbmigrate.db.backfill import BackfillOptions, read_table, resolve_workers, run_backfill
from dbmigrate.db.backfill.slices import plan_slices
from tests.integration.backfill_helpers import COUNTER_SET, assert_same_as_single_update

ROWS = 200_000


def slice_counts(
    conn: psycopg.Connection[Any], table: str, workers: int, where: str | None = None
) -> list[int]:
    """Rows to do in each planned slice (counted exactly)."""
    info = read_table(conn, table)
    counts = []
    for lower, upper in plan_slices(conn, info, workers, where):
        assert upper is not None
        rng = info.key_range(
            None if lower is None else psycopg.sql.Literal(lower), psycopg.sql.Literal(upper)
        )
        query = psycopg.sql.SQL("SELECT count(*) FROM {} WHERE {}").format(info.ident, rng)
        if where:
            query += psycopg.sql.SQL(" AND ({})").format(psycopg.sql.SQL(where))
        row = conn.execute(query).fetchone()
        counts.append(int(row[0]) if row else 0)
    return counts


def assert_balanced(counts: list[int], total: int, tolerance: float = 0.03) -> None:
    assert sum(counts) == total
    fair = total / len(counts)
    assert all(abs(c - fair) <= tolerance * fair for c in counts), counts


@pytest.mark.parametrize("workers", [2, 3, 4], ids=lambda w: f"{w}-workers")
@pytest.mark.parametrize(
    ("ddl", "fill"),
    [
        pytest.param(
            "id bigint PRIMARY KEY, done boolean",
            # 90 % of the ids in [1, 180 000], the rest 81 apart up to ~1.8 M
            f"SELECT CASE WHEN g <= {ROWS * 9 // 10} THEN g ELSE {ROWS * 9 // 10} + "
            f"(g - {ROWS * 9 // 10}) * 81 END, NULL FROM generate_series(1, {ROWS}) g",
            id="skewed-bigint",
        ),
        pytest.param(
            "id bigint PRIMARY KEY, done boolean",
            f"SELECT g, NULL FROM generate_series(1, {ROWS}) g",
            id="even-bigint-in-key-order",
        ),
        pytest.param(
            "tenant text, id bigint, done boolean, PRIMARY KEY (tenant, id)",
            "SELECT CASE WHEN g % 2 = 0 THEN 'tenant-00' ELSE 'tenant-' || "
            f"lpad((1 + g % 49)::text, 2, '0') END, g, NULL FROM generate_series(1, {ROWS}) g "
            "ORDER BY 1, 2",
            id="composite-text-one-big-tenant",
        ),
    ],
)
def test_slices_hold_equal_rows(
    pg_conn: psycopg.Connection[Any], ddl: str, fill: str, workers: int
) -> None:
    pg_conn.execute(f"CREATE TABLE t ({ddl})")
    pg_conn.execute(f"INSERT INTO t {fill}")
    pg_conn.execute("VACUUM ANALYZE t")
    assert_balanced(slice_counts(pg_conn, "t", workers), ROWS)


def test_slices_follow_the_rows_to_do(pg_conn: psycopg.Connection[Any]) -> None:
    """Only the last quarter of the table is left to do: both workers get half of that."""
    pg_conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, done boolean)")
    pg_conn.execute(
        f"INSERT INTO t SELECT g, CASE WHEN g > {ROWS * 3 // 4} THEN NULL ELSE true END "
        f"FROM generate_series(1, {ROWS}) g"
    )
    pg_conn.execute("VACUUM ANALYZE t")
    counts = slice_counts(pg_conn, "t", 2, "done IS NULL")
    assert_balanced(counts, ROWS // 4)


def test_a_where_matching_nearly_nothing_still_slices_the_table(
    pg_conn: psycopg.Connection[Any],
) -> None:
    pg_conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, done boolean)")
    pg_conn.execute(f"INSERT INTO t SELECT g, g <> 7 FROM generate_series(1, {ROWS}) g")
    pg_conn.execute("VACUUM ANALYZE t")
    info = read_table(pg_conn, "t")
    slices = plan_slices(pg_conn, info, 2, "NOT done")
    assert slices[0][0] is None
    assert slices[1][1] == f"[{ROWS}]"
    assert slices[0][1] == slices[1][0]  # adjacent, cut by the table's rows instead


def test_an_empty_table_has_nothing_to_slice(pg_conn: psycopg.Connection[Any]) -> None:
    pg_conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, done boolean)")
    assert plan_slices(pg_conn, read_table(pg_conn, "t"), 3, "done IS NULL") == [(None, None)] * 3


def run_workers(dsn: str, workers: int, **options: Any) -> int:
    rows = 0
    for i in range(workers):  # one after the other: the plan is shared, the slices disjoint
        with psycopg.connect(dsn, autocommit=True) as conn:
            result = run_backfill(
                conn, BackfillOptions(worker=i, workers=workers, checkpoint="par", **options)
            )
        rows += result.rows
    return rows


def test_two_workers_on_a_table_with_a_trigger_and_foreign_keys(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    pg_conn.execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, v text, "
        "flag boolean, touched int NOT NULL DEFAULT 0)"
    )
    pg_conn.execute(
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.touched := OLD.touched + 1; RETURN NEW; END $$"
    )
    pg_conn.execute(
        "CREATE TRIGGER touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch()"
    )
    pg_conn.execute(
        "INSERT INTO users SELECT g, 0, md5(g::text), g % 3 = 0, 0 FROM generate_series(1, 30000) g"
    )
    pg_conn.execute(
        "CREATE TABLE sessions (id bigint PRIMARY KEY, user_id bigint NOT NULL "
        "REFERENCES users (id) ON DELETE CASCADE)"
    )
    pg_conn.execute("INSERT INTO sessions SELECT g, g FROM generate_series(1, 30000, 7) g")
    pg_conn.execute("CREATE TABLE users_expected AS SELECT * FROM users")
    pg_conn.execute("ANALYZE users")
    rows = run_workers(pg_dsn, 2, table="users", set=COUNTER_SET, batch_size=700)
    assert rows == 30000
    # The trigger ran once per row (in the copy, the single UPDATE fires it too).
    pg_conn.execute(
        "CREATE TRIGGER touch BEFORE UPDATE ON users_expected FOR EACH ROW EXECUTE FUNCTION touch()"
    )
    assert_same_as_single_update(pg_conn, "users", COUNTER_SET)
    assert pg_conn.execute("SELECT min(touched), max(touched) FROM users").fetchone() == (1, 1)


@pytest.mark.parametrize(
    "partitioning",
    [
        pytest.param("PARTITION BY HASH (id)", id="hash"),
        pytest.param("PARTITION BY RANGE (id)", id="range"),
    ],
)
def test_two_workers_on_a_partitioned_table(
    pg_dsn: str, pg_conn: psycopg.Connection[Any], partitioning: str
) -> None:
    pg_conn.execute(
        f"CREATE TABLE items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, v text, "
        f"flag boolean) {partitioning}"
    )
    for i in range(4):
        bounds = (
            f"FOR VALUES WITH (MODULUS 4, REMAINDER {i})"
            if "HASH" in partitioning
            else f"FOR VALUES FROM ({i * 10000 + 1}) TO ({(i + 1) * 10000 + 1})"
        )
        pg_conn.execute(f"CREATE TABLE items_p{i} PARTITION OF items {bounds}")
    pg_conn.execute(
        "INSERT INTO items SELECT g, 0, md5(g::text), g % 3 = 0 FROM generate_series(1, 40000) g"
    )
    pg_conn.execute("CREATE TABLE items_expected AS SELECT * FROM items")
    pg_conn.execute("ANALYZE items")
    counts = slice_counts(pg_conn, "items", 2)
    assert_balanced(counts, 40000, tolerance=0.05)
    assert run_workers(pg_dsn, 2, table="items", set=COUNTER_SET, batch_size=900) == 40000
    assert_same_as_single_update(pg_conn, "items", COUNTER_SET)


# ---------------------------------------------------------------------------------------------
# parallelism: auto


AUTO_CASES = [
    # (where, max_parallel_workers_per_gather, pause, expected workers); 2.1 M rows
    (None, 2, 0.0, 3),  # a worker per million rows
    (None, 1, 0.0, 2),  # at most the server's per-query budget + 1
    (None, 0, 0.0, 1),  # parallel query switched off
    (None, 8, 0.0, 3),
    (None, 2, 1.0, 1),  # a pause asks for a gentle backfill
    ("id <= 900000", 2, 0.0, 1),  # the rows to do count, not the table's
    ("id > 900000", 2, 0.0, 2),
]


def test_auto_workers_from_the_table_and_the_server(pg_conn: psycopg.Connection[Any]) -> None:
    pg_conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, done boolean)")
    pg_conn.execute("INSERT INTO big SELECT g, NULL FROM generate_series(1, 2100000) g")
    pg_conn.execute("VACUUM ANALYZE big")
    for where, setting, pause, expected in AUTO_CASES:
        pg_conn.execute(f"SET max_parallel_workers_per_gather = {setting}")
        workers, why = resolve_workers(
            pg_conn, "auto-cp", "big", where, parallelism="auto", pause_seconds=pause
        )
        assert workers == expected, (where, setting, pause, why)


def test_auto_keeps_the_count_an_existing_plan_was_made_for(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    pg_conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, done boolean)")
    pg_conn.execute("INSERT INTO t SELECT g, NULL FROM generate_series(1, 5000) g")
    pg_conn.execute("ANALYZE t")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        run_backfill(
            conn,
            BackfillOptions(
                table="t", set="done = true", checkpoint="planned", worker=0, workers=5
            ),
        )
    workers, why = resolve_workers(
        pg_conn, "planned", "t", None, parallelism="auto", pause_seconds=0.0
    )
    assert (workers, why) == (5, "5 workers, as already planned")


def test_auto_on_a_missing_table_leaves_the_error_to_the_worker(
    pg_conn: psycopg.Connection[Any],
) -> None:
    workers, why = resolve_workers(
        pg_conn, "cp", "no_such_table", None, parallelism="auto", pause_seconds=0.0
    )
    assert workers == 1
    assert "not readable" in why


def test_auto_with_a_where_that_does_not_plan_leaves_the_error_to_the_worker(
    pg_conn: psycopg.Connection[Any],
) -> None:
    pg_conn.execute("CREATE TABLE t (id bigint PRIMARY KEY)")
    workers, why = resolve_workers(
        pg_conn, "cp", "t", "no_such_column IS NULL", parallelism="auto", pause_seconds=0.0
    )
    assert workers == 1
    assert "where does not plan" in why
    assert pg_conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable


def test_a_number_is_taken_as_it_is(pg_conn: psycopg.Connection[Any]) -> None:
    assert resolve_workers(pg_conn, "cp", "t", None, parallelism=4, pause_seconds=1.0) == (
        4,
        "4 workers",
    )

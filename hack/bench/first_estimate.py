"""A backfill's first estimate on a table the planner has no statistics for.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Backfill: the
first estimate without statistics").

    python hack/bench/first_estimate.py                    # throwaway PostgreSQL
    python hack/bench/first_estimate.py --rows 200000,2000000

For each size, a `users` table filled by one INSERT (ids 1..N, a third of the users confirmed)
in three states: never analysed; analysed, then the migration's column added (it has no
statistics); never analysed with a `where` matching a third. Each row compares the exact count
with the planner's estimate of the backfill's predicate (what the first estimate was before:
`Plan Rows` of `SELECT 1 FROM users WHERE id <= max AND <where>`, times reltuples over the
table's plan when the table has statistics) and with `estimate_rows` now (the key range and
the density of the range's first 1 000 rows), its time (median of 5), and the time of the
alternative not taken: an ANALYZE of the table first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import psycopg
from _common import database, machine, markdown_table
from psycopg import sql

from dbmigrate.db.backfill import estimate_rows
from dbmigrate.db.backfill.table import planner_rows, read_reltuples, read_table

SHAPES = [
    ("never analysed", "", "flag IS NULL"),
    ("analysed, then the column added", "analyse-first", "flag IS NULL"),
    ("never analysed, a third matches", "", "flag IS NULL AND email_confirmed_at IS NOT NULL"),
]


def planner_guess(conn: psycopg.Connection[Any], where: str, upper: int) -> float:
    """The first estimate as it was: the planner's selectivity of the predicate."""
    info = read_table(conn, "users")
    query = sql.SQL("SELECT 1 FROM users WHERE id <= {} AND ({})").format(
        sql.Literal(upper), sql.SQL(where)
    )
    matching = planner_rows(conn, query)
    reltuples = read_reltuples(conn, info)
    if reltuples < 0:
        return matching
    everything = planner_rows(conn, sql.SQL("SELECT 1 FROM users"))
    return reltuples * min(1.0, matching / everything) if everything > 0 else 0.0


def fill(conn: psycopg.Connection[Any], rows: int, analyse_first: bool) -> None:
    conn.execute("DROP TABLE IF EXISTS users")
    column = "" if analyse_first else ", flag boolean"
    conn.execute(
        f"CREATE TABLE users (id bigserial PRIMARY KEY, email text, "
        f"email_confirmed_at timestamptz{column})"
    )
    conn.execute(
        "INSERT INTO users (email, email_confirmed_at) SELECT 'u' || g, "
        "CASE WHEN g %% 3 = 0 THEN now() END FROM generate_series(1, %s) g",
        (rows,),
    )
    if analyse_first:
        conn.execute("ANALYZE users")
        conn.execute("ALTER TABLE users ADD COLUMN flag boolean")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="200000,2000000")
    parser.add_argument("--dsn", help="a database to use (default: a throwaway server)")
    args = parser.parse_args(argv)
    rows_out = []
    with database(args.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        for rows in (int(r) for r in args.rows.split(",")):
            for label, how, where in SHAPES:
                fill(conn, rows, how == "analyse-first")
                info = read_table(conn, "users")
                row = conn.execute(f"SELECT count(*) FROM users WHERE {where}").fetchone()
                truth = int(row[0]) if row else 0
                before = planner_guess(conn, where, rows)
                timings, now = [], None
                for _ in range(5):
                    began = time.perf_counter()
                    now = estimate_rows(conn, info, where, [(None, f"[{rows}]")])
                    timings.append(time.perf_counter() - began)
                began = time.perf_counter()
                conn.execute("ANALYZE users")
                analyse = time.perf_counter() - began
                rows_out.append(
                    (
                        f"{rows:,}",
                        label,
                        f"{truth:,}",
                        f"~{round(before):,} ({before / truth:.1%})",
                        f"~{now:,} ({(now or 0) / truth:.1%})",
                        f"{statistics.median(timings) * 1000:.1f} ms",
                        f"{analyse * 1000:.0f} ms",
                    )
                )
    print(f"{time.strftime('%Y-%m-%d')}, {machine()}\n")
    print(
        markdown_table(
            (
                "rows",
                "table",
                "matching",
                "first estimate before",
                "now",
                "its time",
                "ANALYZE instead",
            ),
            rows_out,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Post-deployment watch benchmark: what one sample of `spec.postDeploy` costs the database, and
how soon after a regressing change the watch finds it.

Not a test: it prints Markdown tables whose figures go into BENCHMARKS.md ("Post-deployment
watch").

    python hack/bench/watch.py                        # throwaway PostgreSQL, pg_stat_statements
    python hack/bench/watch.py --statements 1000,5000 --rounds 50

Cost: pg_stat_statements is filled with N distinct statements (half of them name the users
table), then each read is timed `--rounds` times on one session: the seed's own Step 6.1 query
(`... FROM pg_stat_statements WHERE query LIKE '%users%'`, the baseline, in the same run), one
watch sample (`db.watch.read_sample`: the statements naming the table as a word, and the
table's indexes), and the snapshot before the first step (`db.watch.take_baseline`, which also
writes its row).

Detection: an application thread looks users up by email as fast as it can; after the snapshot
the email index is dropped (the regressing change), and a sample is judged every `interval`
(1 s) until the lookup is a QueryRegression (minCalls 20, maxQueryRegression 2): the time from
the drop to the finding, and the ratio it found.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from datetime import UTC, datetime

import psycopg
from _common import database, machine, markdown_table, percentile

from dbmigrate.api.postdeploy import PostDeploy
from dbmigrate.core.watch import WatchObservation, judge
from dbmigrate.db import history
from dbmigrate.db import watch as db_watch

SEED_QUERY = (
    "SELECT query, calls, mean_exec_time, max_exec_time FROM pg_stat_statements "
    "WHERE query LIKE '%users%' ORDER BY calls DESC"
)


def prepare(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("DROP TABLE IF EXISTS users, accounts")
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, note text)")
        conn.execute(
            "INSERT INTO users SELECT g, 'u' || g || '@example.com', NULL "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("CREATE INDEX users_email ON users (email)")
        conn.execute("ANALYZE users")


# pg_stat_statements tells statements apart by their parse tree, not by aliases or constants:
# a distinct subset of these expressions is a distinct statement (2**13 of them).
EXPRESSIONS = (
    "id",
    "email",
    "note",
    "length(email)",
    "lower(email)",
    "upper(email)",
    "md5(email)",
    "id * 2",
    "id - 1",
    "abs(id)",
    "note IS NULL",
    "email LIKE 'u%%'",
    "coalesce(note, email)",
)


def statement(k: int, table: str) -> str:
    chosen = [e for bit, e in enumerate(EXPRESSIONS) if (k + 1) >> bit & 1]
    return f"SELECT {', '.join(chosen)} FROM {table} WHERE id = %s"


def fill_statements(dsn: str, count: int) -> None:
    """`count` distinct statements in pg_stat_statements, half of them naming users."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS accounts (LIKE users)")
        conn.execute("SELECT pg_stat_statements_reset()")
        for k in range(count):
            conn.execute(statement(k // 2, "users" if k % 2 else "accounts"), (k,))  # type: ignore[arg-type]


async def time_reads(dsn: str, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"seed": [], "sample": [], "snapshot": []}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await history.ensure_schema(conn)
        for _ in range(rounds):
            t0 = time.perf_counter()
            await (await conn.execute(SEED_QUERY)).fetchall()
            out["seed"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await db_watch.read_sample(conn, ("users",))
            out["sample"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await db_watch.take_baseline(conn, "20260101000000_bench", "bench", ("users",))
            out["snapshot"].append(time.perf_counter() - t0)
    return out


def look_up(dsn: str, stop: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="app") as conn:
        i = 0
        while not stop.is_set():
            i += 1
            conn.execute("SELECT id FROM users WHERE email = %s", (f"u{i % 5000 + 1}@example.com",))


async def detect(dsn: str, interval: float) -> tuple[float, float, int]:
    """(seconds from the index drop to the finding, its ratio, samples taken)."""
    post = PostDeploy(watch="1h", min_calls=20, max_query_regression=2.0)
    stop = threading.Event()
    app = threading.Thread(target=look_up, args=(dsn, stop), daemon=True)
    app.start()
    try:
        await asyncio.sleep(2.0)  # the application's history before the migration
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await history.ensure_schema(conn)
            baseline = await db_watch.take_baseline(
                conn, "20260101000000_detect", "bench", ("users",)
            )
            await conn.execute("DROP INDEX users_email")
            dropped = time.perf_counter()
            samples = 0
            while time.perf_counter() - dropped < 120:
                await asyncio.sleep(interval)
                samples += 1
                sample = await db_watch.read_sample(conn, baseline.tables)
                verdict = judge(
                    post, WatchObservation(baseline, sample), None, datetime.now(UTC), False
                )
                found = [f for f in verdict.new_findings if f.kind == "QueryRegression"]
                if found:
                    ratio = next(
                        s.ratio for s in verdict.statements if s.queryid == found[0].queryid
                    )
                    return time.perf_counter() - dropped, float(ratio or 0.0), samples
            raise SystemExit("no regression found within 120 s")
    finally:
        stop.set()
        app.join(10)


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing database (creates and drops table users)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--statements", default="100,1000,5000")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    print(f"# {machine()}, users: {args.rows} rows, {args.rounds} rounds", file=sys.stderr)
    with database(args.dsn) as dsn:
        prepare(dsn, args.rows)
        rows = []
        for count in (int(c) for c in args.statements.split(",")):
            fill_statements(dsn, count)
            times = asyncio.run(time_reads(dsn, args.rounds))
            base = statistics.median(times["seed"])
            for what, label in (
                ("seed", "the seed's Step 6.1 query (baseline)"),
                ("sample", "a watch sample"),
                ("snapshot", "the snapshot (read and write)"),
            ):
                ratio = statistics.median(times[what]) / base
                rows.append(
                    (count, label, ms(times[what], 50), ms(times[what], 95), f"{ratio:.2f}x")
                )
        print(markdown_table(("statements", "read", "p50 ms", "p95 ms", "vs seed"), rows))
        print()
        prepare(dsn, args.rows)
        seconds, ratio, samples = asyncio.run(detect(dsn, args.interval))
        print(
            markdown_table(
                ("interval", "index dropped to finding", "samples", "ratio found"),
                [(f"{args.interval:g} s", f"{seconds:.2f} s", samples, f"{ratio:.1f}x")],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

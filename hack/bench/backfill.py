"""Backfill benchmark: one UPDATE of all rows, the seed's batched loop, and `dbmigrate backfill`.

Not a test: it prints Markdown tables whose figures go into BENCHMARKS.md ("Backfill").

    python hack/bench/backfill.py                 # 1 M rows, throwaway PostgreSQL on loopback
    python hack/bench/backfill.py --rows 5000000
    python hack/bench/backfill.py --dsn postgresql://...   # an existing database (creates and
                                                           # drops schema dbmigrate_bench)

Every method starts from the same physical state: the table is rebuilt from a pristine copy,
then VACUUM (ANALYZE) and CHECKPOINT, so no method inherits another's dead tuples, free space
(which would turn later updates into cheaper HOT updates) or dirty buffers. The table is
`users(id bigserial pk, email text, email_confirmed_at timestamptz, email_verified boolean)`
and every method runs the seed's backfill: SET email_verified = (email_confirmed_at IS NOT
NULL) for rows WHERE email_verified IS NULL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from _common import (
    LoadResult,
    OltpLoad,
    create_pristine_users,
    database,
    machine,
    markdown_table,
)

from dbmigrate.core.batching import format_count
from dbmigrate.db.backfill import (
    BackfillOptions,
    build_statements,
    delete_checkpoints,
    find_batch_end,
    read_table,
    run_backfill,
)

SCHEMA = "dbmigrate_bench"
TABLE = f"{SCHEMA}.users"
SET = "email_verified = (email_confirmed_at IS NOT NULL)"
WHERE = "email_verified IS NULL"
SEED_BATCH = 10_000


@dataclass
class Run:
    method: str
    rows: int
    seconds: float
    batch_seconds: list[float] = field(default_factory=list)
    batch_rows: list[int] = field(default_factory=list)
    load: LoadResult | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def tenth_ratio(values: list[float]) -> float | None:
    """mean(last 10 % of the values) / mean(first 10 %), at least one value each."""
    if len(values) < 2:
        return None
    k = max(1, len(values) // 10)
    first, last = statistics.fmean(values[:k]), statistics.fmean(values[-k:])
    return last / first if first > 0 else None


def tenth_ratio_per_row(run: Run) -> float | None:
    """Seconds per row of the last 10 % of the batches over that of the first 10 %.

    Adaptive batches grow from the starting size towards the target duration, so their raw
    durations are not comparable; time per row says whether later batches got slower.
    """
    n = len(run.batch_seconds)
    if n < 2:
        return None
    k = max(1, n // 10)
    first_rows, last_rows = sum(run.batch_rows[:k]), sum(run.batch_rows[-k:])
    if not first_rows or not last_rows:
        return None
    first = sum(run.batch_seconds[:k]) / first_rows
    last = sum(run.batch_seconds[-k:]) / last_rows
    return last / first if first > 0 else None


class Bench:
    def __init__(self, dsn: str, rows: int) -> None:
        self.dsn = dsn
        self.rows = rows
        self.conn = psycopg.connect(dsn, autocommit=True)

    def log(self, text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    def create_pristine(self) -> None:
        self.log(f"creating {format_count(self.rows)} pristine rows")
        create_pristine_users(self.conn, SCHEMA, self.rows)

    def reset(self) -> None:
        c = self.conn
        c.execute(f"DROP TABLE IF EXISTS {TABLE}")
        c.execute(
            f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, email text, "
            "email_confirmed_at timestamptz, email_verified boolean)"
        )
        c.execute(
            f"INSERT INTO {TABLE} SELECT g, email, email_confirmed_at, NULL "
            f"FROM {SCHEMA}.pristine ORDER BY g"
        )
        c.execute(f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), %s)", (self.rows,))
        c.execute(f"VACUUM (ANALYZE) {TABLE}")
        c.execute("CHECKPOINT")

    def check_done(self) -> None:
        row = self.conn.execute(
            f"SELECT count(*) FILTER (WHERE email_verified IS NULL), "
            f"count(*) FILTER (WHERE email_verified IS DISTINCT FROM "
            f"(email_confirmed_at IS NOT NULL)) FROM {TABLE}"
        ).fetchone()
        assert row == (0, 0), f"backfill incomplete or wrong: {row}"

    # --- methods ---------------------------------------------------------------------------

    def single_update(self) -> Run:
        t0 = time.perf_counter()
        rows = self.conn.execute(f"UPDATE {TABLE} SET {SET} WHERE {WHERE}").rowcount
        return Run("(a) one UPDATE of all rows", rows, time.perf_counter() - t0)

    def seed_loop(self) -> Run:
        query = (
            f"WITH batch AS (SELECT id FROM {TABLE} WHERE {WHERE} LIMIT {SEED_BATCH}) "
            f"UPDATE {TABLE} u SET email_verified = (u.email_confirmed_at IS NOT NULL) "
            "FROM batch b WHERE u.id = b.id"
        )
        run = Run(f"(b) seed loop, batches of {format_count(SEED_BATCH)} (no sleep)", 0, 0.0)
        t0 = time.perf_counter()
        while True:
            b0 = time.perf_counter()
            n = self.conn.execute(query).rowcount
            run.batch_seconds.append(time.perf_counter() - b0)
            run.batch_rows.append(n)
            run.rows += n
            if n == 0:
                run.batch_seconds.pop()
                run.batch_rows.pop()
                break
        run.seconds = time.perf_counter() - t0
        return run

    def ours(self, label: str, **options: Any) -> Run:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        opts = BackfillOptions(table=TABLE, set=SET, where=WHERE, checkpoint=name, **options)
        rows_by_batch: list[int] = []

        def on_event(event: object) -> None:
            rows = getattr(event, "rows", None)
            if rows is not None and hasattr(event, "batch_size"):
                rows_by_batch.append(rows)

        t0 = time.perf_counter()
        result = run_backfill(self.conn, opts, on_event=on_event)
        seconds = time.perf_counter() - t0
        delete_checkpoints(self.conn, name)
        return Run(label, result.rows, seconds, result.batch_seconds, rows_by_batch)

    def with_load(self, method: Callable[[], Run], threads: int) -> Run:
        with OltpLoad(self.dsn, table=TABLE, max_id=self.rows, threads=threads) as load:
            run = method()
            run.load = load.stop()
        return run

    def idle_load(self, seconds: float, threads: int) -> LoadResult:
        with OltpLoad(self.dsn, table=TABLE, max_id=self.rows, threads=threads) as load:
            time.sleep(seconds)
            return load.stop()

    def boundary_walk(self, method: str, n: int) -> tuple[int, float]:
        """Walk the whole key space with the boundary query alone: (queries, seconds)."""
        info = read_table(self.conn, TABLE)
        hi = self.conn.execute(f"SELECT jsonb_build_array(max(id))::text FROM {TABLE}").fetchone()
        assert hi is not None
        stmts = {
            lower: build_statements(info, SET, WHERE, has_lower=lower, method=method)  # type: ignore[arg-type]
            for lower in (False, True)
        }
        lo: str | None = None
        queries = 0
        t0 = time.perf_counter()
        while True:
            end = find_batch_end(self.conn, stmts[lo is not None], lo, hi[0], n)
            queries += 1
            if end is None:
                break
            lo = end
        return queries, time.perf_counter() - t0

    def close(self, keep: bool) -> None:
        if not keep:
            self.conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        self.conn.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="an existing database (default: a throwaway server)")
    parser.add_argument("--oltp-threads", type=int, default=3)
    parser.add_argument("--skip-seed", action="store_true", help="skip the seed's slow loop")
    parser.add_argument("--keep", action="store_true", help="keep schema dbmigrate_bench")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each method this many times (interleaved) and keep the fastest run",
    )
    args = parser.parse_args(argv)

    with database(args.dsn) as dsn:
        bench = Bench(dsn, args.rows)
        try:
            return report(bench, args)
        finally:
            bench.close(args.keep)


def report(bench: Bench, args: argparse.Namespace) -> int:
    bench.create_pristine()
    server = bench.conn.execute("SHOW server_version").fetchone()
    print(
        f"# Backfill benchmark: {format_count(args.rows)} rows, "
        f"PostgreSQL {server[0] if server else '?'}"
    )
    print(f"machine: {machine()}\n")

    # Which boundary query: OFFSET n-1 vs max() over a LIMIT subquery.
    bench.reset()
    walks = []
    for n in (10_000, 100_000):
        for method in ("offset", "max", "offset", "max"):
            queries, seconds = bench.boundary_walk(method, n)
            walks.append((method, n, queries, seconds))
            bench.log(f"boundary {method} n={n}: {queries} queries in {seconds:.3f}s")
    best = {}
    for method, n, queries, seconds in walks:
        key = (method, n)
        best[key] = min(best.get(key, (queries, seconds)), (queries, seconds), key=lambda x: x[1])
    print("## Boundary query (walking the whole key space, best of 2)\n")
    print(
        markdown_table(
            ["form", "batch", "queries", "total s", "ms per query"],
            [
                [
                    "`ORDER BY id LIMIT 1 OFFSET n-1`"
                    if m == "offset"
                    else "`max(id)` over `ORDER BY id LIMIT n`",
                    format_count(n),
                    q,
                    f"{s:.3f}",
                    ms(s / q),
                ]
                for (m, n), (q, s) in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            ],
        )
    )
    print()

    methods: list[tuple[str, Callable[[], Run]]] = [("a", bench.single_update)]
    if not args.skip_seed:
        methods.append(("b", bench.seed_loop))
    methods += [
        ("c", lambda: bench.ours("(c) dbmigrate backfill, defaults, no pause")),
        (
            "d",
            lambda: bench.ours(
                "(d) dbmigrate backfill, fixed batches of 10,000",
                batch_size=10_000,
                max_batch_size=10_000,
            ),
        ),
    ]
    best_runs: dict[str, Run] = {}
    for attempt in range(args.repeat):
        for key, method in methods:
            bench.reset()
            bench.log(f"running {key} ({attempt + 1}/{args.repeat})")
            run = method()
            bench.check_done()
            bench.log(
                f"{run.method}: {format_count(run.rows)} rows in {run.seconds:.2f}s = "
                f"{format_count(run.rate)} rows/s"
            )
            if key not in best_runs or run.rate > best_runs[key].rate:
                best_runs[key] = run
    runs = [best_runs[key] for key, _ in methods]

    ceiling = runs[0].rate
    seed_rate = next((r.rate for r in runs if r.method.startswith("(b)")), None)
    print(
        "## Throughput (no concurrent load"
        + (f", fastest of {args.repeat} interleaved runs" if args.repeat > 1 else "")
        + ")\n"
    )
    rows = []
    for run in runs:
        ratio = tenth_ratio(run.batch_seconds)
        ratio_row = tenth_ratio_per_row(run)
        rows.append(
            [
                run.method,
                format_count(run.rows),
                f"{run.seconds:.2f}",
                format_count(run.rate),
                f"{run.rate / ceiling:.2f}",
                f"{run.rate / seed_rate:.1f}" if seed_rate else "-",
                len(run.batch_seconds) or 1,
                f"{ratio:.2f}" if ratio is not None else "-",
                f"{ratio_row:.2f}" if ratio_row is not None else "-",
            ]
        )
    print(
        markdown_table(
            [
                "method",
                "rows",
                "seconds",
                "rows/s",
                "vs (a)",
                "vs (b)",
                "batches",
                "last/first 10 % batch time",
                "last/first 10 % time per row",
            ],
            rows,
        )
    )
    print()
    for run in runs:
        if run.batch_seconds and run.method.startswith(("(c)", "(d)")):
            print(
                f"{run.method}: batch seconds first 5 "
                f"{[round(s, 3) for s in run.batch_seconds[:5]]}, last 5 "
                f"{[round(s, 3) for s in run.batch_seconds[-5:]]}, rows per batch max "
                f"{format_count(max(run.batch_rows))}"
            )
    print()

    if args.oltp_threads > 0:
        bench.reset()
        bench.log("OLTP load alone")
        idle = bench.idle_load(5.0, args.oltp_threads)
        loaded: list[Run] = []
        during: list[tuple[str, Callable[[], Run]]] = [
            ("(a) one UPDATE of all rows", bench.single_update),
            ("(c) dbmigrate backfill, defaults (pause 0s)", lambda: bench.ours("(c)")),
            (
                "(e) dbmigrate backfill, targetBatchDuration 100ms",
                lambda: bench.ours("(e)", target_batch_seconds=0.1),
            ),
        ]
        for label, method in during:
            bench.reset()
            bench.log(f"OLTP load during {label}")
            run = bench.with_load(method, args.oltp_threads)
            run.method = label
            bench.check_done()
            loaded.append(run)
        print(
            f"## Concurrent OLTP load ({args.oltp_threads} threads x 200 ops/s, 50 % point reads / "
            "50 % point updates by random id, open loop: latency from each operation's intended "
            "start)\n"
        )

        def load_row(label: str, seconds: str, rate: str, load: LoadResult) -> list[object]:
            return [
                label,
                seconds,
                rate,
                load.ops,
                ms(load.p(50)),
                ms(load.p(99)),
                ms(load.p(99.9)),
                ms(max(load.latencies)),
                load.errors,
            ]

        table = [load_row("no migration (5 s)", "-", "-", idle)]
        for run in loaded:
            assert run.load is not None
            table.append(
                load_row(run.method, f"{run.seconds:.2f}", format_count(run.rate), run.load)
            )
        print(
            markdown_table(
                [
                    "during",
                    "seconds",
                    "rows/s",
                    "OLTP ops",
                    "p50 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "max ms",
                    "errors",
                ],
                table,
            )
        )
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

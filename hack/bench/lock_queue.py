"""Benchmark: what a DDL statement does to the application's queries while a long transaction
holds the table (the lock queue), plain execution vs dbmigrate's executor, in one run.

A blocker transaction reads the table and stays open for --hold seconds. Application threads
run short `SELECT ... WHERE id = $1` queries on the table the whole time. Then the DDL
`ALTER TABLE users ADD COLUMN ...` is issued:
  plain    — as psql or most migration tools would: no lock_timeout. It queues for ACCESS
             EXCLUSIVE behind the blocker and every later query queues behind it.
  dbmigrate — through `dbmigrate.db.executor.apply_sql` (lock_timeout + retries with backoff).
Reports the worst and p99 latency of application queries while the DDL was pending, and how
long the DDL took to land. Starts its own throwaway PostgreSQL unless --dsn is given.

    .venv/bin/python hack/bench/lock_queue.py [--hold 5] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from dbmigrate.core.statements import checksum
from dbmigrate.db import executor, history
from dbmigrate_dev.postgres import PostgresServer, free_port


@dataclass
class Result:
    method: str
    worst_ms: float
    p99_ms: float
    queries: int
    ddl_seconds: float
    retries: int


def app_load(dsn: str, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.monotonic()
            conn.execute("SELECT email FROM users WHERE id = %s", (i % 10000 + 1,)).fetchone()
            samples.append((t0, time.monotonic() - t0))
            time.sleep(0.005)


def blocker(dsn: str, hold: float, ready: threading.Event) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT count(*) FROM users").fetchone()  # ACCESS SHARE until commit
        ready.set()
        time.sleep(hold)
        conn.rollback()


def run(dsn: str, method: str, hold: float, column: str, lock_timeout: float) -> Result:
    stop, ready = threading.Event(), threading.Event()
    samples: list[tuple[float, float]] = []
    loaders = [threading.Thread(target=app_load, args=(dsn, stop, samples)) for _ in range(4)]
    for t in loaders:
        t.start()
    time.sleep(0.3)
    hold_thread = threading.Thread(target=blocker, args=(dsn, hold, ready))
    hold_thread.start()
    ready.wait(10)
    sql = f"ALTER TABLE users ADD COLUMN {column} int"
    started = time.monotonic()
    retries = 0
    if method == "plain":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)
    else:

        async def ours() -> int:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            try:
                await history.ensure_schema(conn)
                result = await executor.apply_sql(
                    conn,
                    migration_id="20260101000000_bench",
                    step=column,
                    step_kind="sql",
                    direction="up",
                    sql=sql,
                    mode="Auto",
                    checksum=checksum(sql),
                    limits=executor.ExecutionLimits(lock_timeout, 100, 0),
                )
                assert result.ok, result.message
                return result.lock_retries
            finally:
                await conn.close()

        retries = asyncio.run(ours())
    finished = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for t in loaders:
        t.join()
    hold_thread.join()
    during = [lat for (t0, lat) in samples if started - 0.05 <= t0 <= finished]
    during.sort()
    p99 = during[min(len(during) - 1, int(len(during) * 0.99))] if during else 0.0
    return Result(
        method=method,
        worst_ms=max(during, default=0.0) * 1000,
        p99_ms=p99 * 1000,
        queries=len(during),
        ddl_seconds=finished - started,
        retries=retries,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=5.0, help="blocker transaction seconds")
    parser.add_argument("--dsn", help="use this database instead of a throwaway server")
    args = parser.parse_args()

    server = None
    dsn = args.dsn
    if dsn is None:
        root = Path(tempfile.mkdtemp(prefix="dbmigrate-bench-"))
        server = PostgresServer(root / "data", free_port())
        server.init()
        server.start()
        dsn = server.create_database("bench")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS users")
            conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
            conn.execute(
                "INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 100000) g"
            )
            conn.execute("VACUUM ANALYZE users")
        results = [
            run(dsn, "plain", args.hold, "c_plain", 0),
            run(dsn, "dbmigrate", args.hold, "c_ours_1s", 1.0),
            run(dsn, "dbmigrate", args.hold, "c_ours_200ms", 0.2),
        ]
    finally:
        if server is not None:
            server.stop()
    labels = [
        "plain (no lock_timeout)",
        "dbmigrate, lockTimeout 1s (default)",
        "dbmigrate, lockTimeout 200ms",
    ]
    print(f"blocking transaction: {args.hold:.0f} s; 4 app threads, point SELECTs\n")
    print(
        "| DDL execution | worst app query | p99 app query | app queries during DDL "
        "| DDL landed after | lock retries |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in zip(labels, results, strict=True):
        print(
            f"| {label} | {r.worst_ms:.0f} ms | {r.p99_ms:.0f} ms | {r.queries} "
            f"| {r.ddl_seconds:.2f} s | {r.retries} |"
        )
    plain = results[0]
    for label, r in zip(labels[1:], results[1:], strict=True):
        ratio = plain.worst_ms / r.worst_ms if r.worst_ms else float("inf")
        print(f"worst app query, plain / {label}: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

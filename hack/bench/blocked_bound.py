"""Benchmark: how long an application query waits on a step's lock under the blocking guard
(`safety.maxBlockedDuration`), and what the guard costs a step.

1. The bound. A step `ALTER TABLE users ADD COLUMN ...; SELECT pg_sleep(...)` holds ACCESS
   EXCLUSIVE on `users`; once it does, an application session runs `SELECT count(*) FROM
   users` and times it from its own side. The guard cancels the step when the query has
   waited maxBlockedDuration; the query then runs. Repeated --runs times for each limit; the
   table shows the application's wait (min, p50, max) and the overshoot past the limit.
2. The cost. The same steps with and without the guard: a fast DDL (ADD COLUMN, metadata
   only) and a slow one (CREATE INDEX on --rows rows), median wall time of each; and the
   sampler query's own time on an idle server (what the guard runs every 50-250 ms).

Starts its own throwaway PostgreSQL unless --dsn is given.

    .venv/bin/python hack/bench/blocked_bound.py [--runs 10] [--rows 1000000] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import threading
import time

import psycopg
from _common import database, machine, percentile

from dbmigrate.core.guard import sample_interval
from dbmigrate.core.statements import checksum
from dbmigrate.db import executor, guard, history

LIMITS = (0.5, 1.0, 2.0)


def app_query_when_locked(dsn: str, waits: list[float]) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name="app") as conn:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass "
                "AND mode = 'AccessExclusiveLock' AND granted"
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.005)
        t0 = time.monotonic()
        conn.execute("SELECT count(*) FROM users").fetchone()
        waits.append(time.monotonic() - t0)


async def run_step(
    conn: psycopg.AsyncConnection, dsn: str, name: str, sql: str, max_blocked: float
) -> executor.StepResult:
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="dbmigrate-guard"
        )

    return await executor.apply_sql(
        conn,
        migration_id="20240101000000_bench",
        step=name,
        step_kind="sql",
        direction="up",
        sql=sql,
        mode="Auto",
        checksum=checksum(sql),
        limits=executor.ExecutionLimits(
            lock_timeout=10.0,
            lock_retries=0,
            statement_timeout=0.0,
            max_blocked_duration=max_blocked,
        ),
        guard_connect=connect if max_blocked > 0 else None,
    )


async def bound(conn: psycopg.AsyncConnection, dsn: str, runs: int) -> None:
    print("| maxBlockedDuration | sampling every | runs | app wait min | p50 | max | "
          "max overshoot | within limit + 1 s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for limit in LIMITS:
        waits: list[float] = []
        for i in range(runs):
            app = threading.Thread(target=app_query_when_locked, args=(dsn, waits), daemon=True)
            app.start()
            sql = f"ALTER TABLE users ADD COLUMN c{i} int; SELECT pg_sleep({limit + 5})"
            result = await run_step(conn, dsn, f"bound-{limit}-{i}", sql, limit)
            await asyncio.to_thread(app.join, 30)
            assert not result.ok and result.reason == "BlockingApplication", result
        over = [w - limit for w in waits]
        print(
            f"| {limit:g}s | {sample_interval(limit) * 1000:.0f} ms | {len(waits)} | "
            f"{min(waits) * 1000:.0f} ms | {percentile(waits, 50) * 1000:.0f} ms | "
            f"{max(waits) * 1000:.0f} ms | +{max(over) * 1000:.0f} ms | "
            f"{'yes' if max(waits) < limit + 1 else 'NO'} |"
        )


async def cost(conn: psycopg.AsyncConnection, dsn: str, rows: int, runs: int) -> None:
    await conn.execute("DROP TABLE IF EXISTS big")
    await conn.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS email FROM generate_series(1, %s) g",
        (rows,),
    )
    steps = {
        "ADD COLUMN (metadata only)": "ALTER TABLE big ADD COLUMN x{i} int",
        f"CREATE INDEX on {rows:,} rows": "CREATE INDEX big_email_{i} ON big (email)",
    }
    print("| step | without guard (median) | with guard (median) | difference |")
    print("|---|---|---|---|")
    n = 0
    for label, template in steps.items():
        timings: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(runs):
            for guarded in (False, True):
                n += 1
                t0 = time.monotonic()
                result = await run_step(
                    conn, dsn, f"cost-{n}", template.format(i=n), 2.0 if guarded else 0.0
                )
                timings[guarded].append(time.monotonic() - t0)
                assert result.ok, result.message
        plain, watched = (statistics.median(timings[g]) * 1000 for g in (False, True))
        print(f"| {label} | {plain:.1f} ms | {watched:.1f} ms | {watched - plain:+.1f} ms |")
    with psycopg.connect(dsn, autocommit=True, application_name="dbmigrate-guard") as sampler:
        pid = conn.info.backend_pid
        samples = []
        for _ in range(500):
            t0 = time.perf_counter()
            guard.read_blocked(sampler, pid)
            samples.append(time.perf_counter() - t0)
    print(
        f"\nSampler query on an idle server: p50 {percentile(samples, 50) * 1000:.2f} ms, "
        f"p99 {percentile(samples, 99) * 1000:.2f} ms (500 samples)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    logging.getLogger("dbmigrate").setLevel(logging.ERROR)  # each episode is logged: expected
    print(f"machine: {machine()}\n")
    with database(args.dsn) as dsn:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        assert await history.try_migration_lock(conn)
        await history.ensure_schema(conn)
        await conn.execute("DROP TABLE IF EXISTS users")
        await conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
        await conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 100000) g")
        cur = await conn.execute("SHOW server_version")
        print(f"PostgreSQL {(await cur.fetchone() or ['?'])[0]}\n")
        await bound(conn, dsn, args.runs)
        print()
        await cost(conn, dsn, args.rows, max(3, args.runs // 2))
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())

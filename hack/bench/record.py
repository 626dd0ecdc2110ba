"""The migration's record benchmark: what writing the record costs when a migration ends, and
how long `dbmigrate docs` takes on a database with many recorded migrations.

Not a test: it prints Markdown tables whose figures go into BENCHMARKS.md ("The migration's
record").

    python hack/bench/record.py                      # throwaway PostgreSQL
    python hack/bench/record.py --migrations 100,500 --tables 20

Record: rendering the report of a six-step migration from its final status
(`core.record.gather_facts` + `render_record`) and upserting its `dbmigrate.runs` row
(`db.runs.write_run`), each timed 200 times; the baseline, in the same run, is writing one
`dbmigrate.history` row (what every step writes anyway).

Docs: M migrations, each adding a column with a default and a comment, an index on it and
then NOT NULL, spread over T tables, applied and recorded in `dbmigrate.runs`; then
`dbmigrate docs --dsn` (a fresh process, as a user runs it) against `pg_dump --schema-only` of
the same tables (the baseline: the schema without the history), median of 5 runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
from _common import database, machine, markdown_table

from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.core.record import gather_facts, render_record, run_steps
from dbmigrate.db import history
from dbmigrate.db.libpq import libpq_env
from dbmigrate.db.runs import RunRecord, write_run

SPEC = {
    "migrationId": "20240115120000_add_email_verified_column",
    "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
    "steps": [
        {"name": "expand", "sql": {"up": "ALTER TABLE users ADD COLUMN v boolean", "down": "x"}},
        {"name": "index", "sql": {"up": "CREATE INDEX CONCURRENTLY i ON users (v)", "down": "x"}},
        {"name": "backfill", "backfill": {"table": "users", "set": "v = true"}},
        {"name": "check", "sql": {"up": "ALTER TABLE users ADD CHECK (v) NOT VALID", "down": "x"}},
        {"name": "validate", "sql": {"up": "SELECT 1", "down": "x"}},
        {"name": "contract", "sql": {"up": "SELECT 1"}, "pointOfNoReturn": True},
    ],
}


def final_status() -> DatabaseMigrationStatus:
    t0 = datetime(2026, 1, 15, 12, tzinfo=UTC)

    def at(s: int) -> str:
        return (t0 + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ")

    steps = [
        {
            "name": s["name"],
            "state": "Succeeded",
            "startedAt": at(i * 10),
            "finishedAt": at(i * 10 + 9),
        }
        for i, s in enumerate(SPEC["steps"])
    ]
    steps[2]["backfill"] = {"rowsDone": 1_000_000}
    return DatabaseMigrationStatus.model_validate(
        {"phase": "Succeeded", "startedAt": at(0), "finishedAt": at(60), "steps": steps}
    )


async def time_record(dsn: str, rounds: int) -> dict[str, list[float]]:
    spec = DatabaseMigrationSpec.model_validate(SPEC)
    status = final_status()
    out: dict[str, list[float]] = {"history": [], "render": [], "runs": []}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await history.ensure_schema(conn)
        for i in range(rounds):
            t0 = time.perf_counter()
            await history.insert_history(
                conn,
                migration_id="20240115120000_bench",
                step=f"s{i}",
                step_kind="sql",
                direction="up",
                checksum="x",
                duration_ms=1,
            )
            out["history"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            facts = gather_facts(spec, status, resource="shop/m", outcome="Succeeded")
            markdown = render_record(facts)
            out["render"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await write_run(
                conn,
                RunRecord(
                    migration_id=spec.migration_id,
                    name="shop/m",
                    uid="bench",
                    outcome="Succeeded",
                    finished_at=datetime.now(UTC),
                    report=markdown,
                    steps=run_steps(facts, {"expand": "ALTER TABLE users ADD COLUMN v boolean"}),
                ),
            )
            out["runs"].append(time.perf_counter() - t0)
    return out


def record_migrations(dsn: str, migrations: int, tables: int) -> list[str]:
    """Apply and record `migrations` migrations over `tables` tables; returns the tables."""
    names = [f"t{k}" for k in range(tables)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS dbmigrate CASCADE")
        for name in names:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY)")
    asyncio.run(_record(dsn, migrations, names))
    return names


async def _record(dsn: str, migrations: int, names: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await history.ensure_schema(conn)
        start = datetime(2024, 1, 1, tzinfo=UTC)
        for m in range(migrations):
            table, col = names[m % len(names)], f"c{m}"
            mid = f"{(start + timedelta(days=m)).strftime('%Y%m%d%H%M%S')}_add_{col}"
            steps = [
                f"ALTER TABLE {table} ADD COLUMN {col} integer DEFAULT 0; "
                f"COMMENT ON COLUMN {table}.{col} IS 'column {m}'",
                f"CREATE INDEX {table}_{col} ON {table} ({col})",
                f"ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL",
            ]
            rows = []
            for i, sql in enumerate(steps):
                await conn.execute(sql)  # type: ignore[arg-type]
                await history.insert_history(
                    conn,
                    migration_id=mid,
                    step=f"s{i}",
                    step_kind="sql",
                    direction="up",
                    checksum="x",
                    duration_ms=1,
                )
                when = (start + timedelta(days=m, seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
                rows.append(
                    {
                        "name": f"s{i}",
                        "kind": "sql",
                        "state": "Succeeded",
                        "startedAt": when,
                        "finishedAt": when,
                        "seconds": 0,
                        "rows": None,
                        "lockRetries": 0,
                        "blockingEpisodes": 0,
                        "sql": sql,
                    }
                )
            await write_run(
                conn,
                RunRecord(
                    migration_id=mid,
                    name="bench/m",
                    uid=mid,
                    outcome="Succeeded",
                    finished_at=start + timedelta(days=m, seconds=10),
                    report="# Migration Log\n",
                    steps=rows,
                ),
            )


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, done.stdout


def time_docs(dsn: str, names: list[str], runs: int) -> tuple[list[float], list[float], int]:
    env = {**os.environ, **libpq_env(dsn)}
    docs, dump, lines = [], [], 0
    tables = [a for n in names for a in ("-t", n)]
    for _ in range(runs):
        seconds, out = timed([sys.executable, "-m", "dbmigrate", "docs", "--dsn", dsn], env)
        docs.append(seconds)
        lines = out.count("\n")
        dump.append(timed(["pg_dump", "--schema-only", *tables], env)[0])
    return docs, dump, lines


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing database (creates tables t0..tN there)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--migrations", default="100,500")
    parser.add_argument("--tables", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"# {machine()}", file=sys.stderr)
    with database(args.dsn) as dsn:
        times = asyncio.run(time_record(dsn, args.rounds))
        base = statistics.median(times["history"])
        print(
            markdown_table(
                ("the record of a 6-step migration", "median ms", "vs a history row"),
                [
                    ("one `dbmigrate.history` row (baseline)", ms(times["history"]), "1.00x"),
                    (
                        "render the report",
                        ms(times["render"]),
                        f"{statistics.median(times['render']) / base:.2f}x",
                    ),
                    (
                        "upsert the `dbmigrate.runs` row",
                        ms(times["runs"]),
                        f"{statistics.median(times['runs']) / base:.2f}x",
                    ),
                ],
            )
        )
        print()
        rows = []
        for count in (int(c) for c in args.migrations.split(",")):
            names = record_migrations(dsn, count, args.tables)
            docs, dump, lines = time_docs(dsn, names, args.runs)
            rows.append(
                (
                    count,
                    args.tables,
                    lines,
                    f"{statistics.median(dump):.2f}",
                    f"{statistics.median(docs):.2f}",
                    f"{statistics.median(docs) / statistics.median(dump):.2f}x",
                )
            )
        print(
            markdown_table(
                (
                    "migrations",
                    "tables",
                    "lines of docs",
                    "pg_dump --schema-only s",
                    "dbmigrate docs s",
                    "vs pg_dump",
                ),
                rows,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

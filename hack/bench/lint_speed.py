"""Lint speed: how long `dbmigrate lint` takes for 1 000 statements.

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Lint speed").

    python hack/bench/lint_speed.py                      # 1 000 statements, 20 runs
    python hack/bench/lint_speed.py --statements 10000 --runs 5

The SQL is a generated mix of what migrations contain (ADD COLUMN with constant and volatile
defaults, CREATE INDEX with and without CONCURRENTLY, constraints NOT VALID and VALIDATE, SET
NOT NULL, UPDATE, CREATE TABLE, DROP, RENAME, a DO block, suppression comments), over 50 table
names, so rules fire and the context (created tables, CHECK constraints) grows as it would.
Three measurements per run: parsing alone (the floor: libpg_query via pglast), linting one
SQL text of N statements (`check_sql`), and linting a DatabaseMigration with the same
statements spread over steps of 20 (`check_migration`, which also checks down SQL).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from _common import machine, markdown_table

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.batching import format_count
from dbmigrate.core.lint import check_migration, check_sql
from dbmigrate.core.statements import parse_statements

TEMPLATES = (
    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS c{i} boolean DEFAULT false;",
    "ALTER TABLE {t} ADD COLUMN c{i} uuid DEFAULT gen_random_uuid();",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {t}_c{i}_idx ON {t} (c{i});",
    "CREATE INDEX {t}_d{i}_idx ON {t} (lower(email)) WHERE deleted_at IS NULL;",
    "ALTER TABLE {t} ADD CONSTRAINT {t}_c{i}_nn CHECK (c{i} IS NOT NULL) NOT VALID;",
    "ALTER TABLE {t} VALIDATE CONSTRAINT {t}_c{i}_nn;",
    "ALTER TABLE {t} ALTER COLUMN c{i} SET NOT NULL;",
    "UPDATE {t} SET c{i} = (email_confirmed_at IS NOT NULL) WHERE id BETWEEN {i} AND {i} + 1000;",
    "CREATE TABLE IF NOT EXISTS {t}_audit_{i} (id bigint GENERATED ALWAYS AS IDENTITY, "
    "at timestamptz NOT NULL DEFAULT now(), note varchar(200));",
    "ALTER TABLE {t} ADD CONSTRAINT {t}_fk{i} FOREIGN KEY (owner_id) REFERENCES owners (id);",
    "-- dbmigrate:ignore ban-drop-column unused since v{i}\nALTER TABLE {t} DROP COLUMN old{i};",
    "ALTER TABLE {t} RENAME COLUMN a{i} TO b{i};",
    "ALTER TABLE {t} ALTER COLUMN n{i} TYPE bigint;",
    "DO $$ BEGIN PERFORM pg_sleep(0); END $$;",
    "DROP INDEX IF EXISTS {t}_old_{i};",
    "SELECT count(*) FROM {t} WHERE c{i} IS NULL;",
)


def generate(statements: int) -> list[str]:
    return [
        TEMPLATES[i % len(TEMPLATES)].format(t=f"table_{i % 50}", i=i) for i in range(statements)
    ]


def as_migration(parts: list[str], per_step: int = 20) -> DatabaseMigrationSpec:
    steps = []
    for n, start in enumerate(range(0, len(parts), per_step)):
        chunk = parts[start : start + per_step]
        steps.append(
            {
                "name": f"step-{n}",
                "sql": {"up": "\n".join(chunk), "down": "SELECT 1;", "transaction": "Never"},
            }
        )
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20261128000000_lint_speed",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": steps[:50] if len(steps) > 50 else steps,
        }
    )


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each run. CPU time is the steadier figure when other
    work shares the machine (it leaves out time spent waiting for a core)."""
    fn()  # warm-up (imports, pglast's first parse)
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    parts = generate(args.statements)
    sql = "\n".join(parts)
    migration = as_migration(parts)
    statements_in_migration = sum(
        len(parse_statements(s.sql.up or "")) for s in migration.steps if s.sql
    )
    findings = check_sql(sql)

    rows = []
    for label, count, fn in (
        ("parse only (pglast)", args.statements, lambda: parse_statements(sql)),
        ("lint one SQL text (`check_sql`)", args.statements, lambda: check_sql(sql)),
        (
            f"lint a DatabaseMigration, {len(migration.steps)} steps (`check_migration`)",
            statements_in_migration,
            lambda: check_migration(migration),
        ),
    ):
        wall, cpu = timed(fn, args.runs)
        cpu_median = statistics.median(cpu)
        rows.append(
            [
                label,
                format_count(count),
                f"{statistics.median(wall) * 1000:.0f} ms",
                f"{min(wall) * 1000:.0f} ms",
                f"{cpu_median * 1000:.0f} ms",
                format_count(count / cpu_median),
            ]
        )
    load = os.getloadavg()[0]
    print(f"Lint speed — {machine()}, load average {load:.1f}, {args.runs} runs each")
    print(f"{len(findings)} findings on {args.statements} statements\n")
    print(
        markdown_table(
            [
                "what",
                "statements",
                "wall median",
                "wall best",
                "CPU median",
                "statements/s (CPU median)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()

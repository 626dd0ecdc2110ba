"""Rehearsal benchmark: what `spec.rehearsal` costs before a migration on the seed's users table,
against applying the same migration directly (the baseline, in the same run).

Not a test: it prints a Markdown table whose figures go into BENCHMARKS.md ("Rehearsal").

    python hack/bench/rehearsal.py                       # 1 M rows, throwaway PostgreSQL
    python hack/bench/rehearsal.py --rows 200000 --samples 0,1000
    python hack/bench/rehearsal.py --dsn postgresql://...   # an existing database (creates and
                                                            # drops table public.users there)

The migration is examples/add-email-verified.yaml (its analysis left out; its awaitRollout step
is skipped by both): add a column, a concurrent index, a backfill, a NOT VALID check, then the
point of no return (VALIDATE, SET NOT NULL). Each rehearsal creates a scratch database on the
same server, copies the schema and `sampleRows` rows of users, runs up, verify, down, compares
the schema and runs up again, and drops the scratch database; "copy" is the time until the
first step runs, "steps" the rest (the drop included). The baseline is `dbmigrate apply`'s
engine (the runner with the local platform) on the whole table, run last because it changes it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml
from _common import create_pristine_users, database, machine, markdown_table

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.core.batching import format_count
from dbmigrate.core.rehearsal import scratch_database_name
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.db.rehearsal import RehearsalRequest, rehearse
from dbmigrate.reconcile.local import LocalPlatform
from dbmigrate.reconcile.runner import MigrationRunner
from dbmigrate.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "dbmigrate_bench"


def seed_migration() -> dict[str, Any]:
    """The example's steps: without its analysis, and without what runs before its first step
    (its own rehearsal, backup and checklist: the baseline is the migration alone)."""
    doc = yaml.safe_load((ROOT / "examples" / "add-email-verified.yaml").read_text())
    for field in ("analysis", "rehearsal", "backup", "checklist"):
        doc["spec"].pop(field, None)
    return dict(doc)


def build_users(dsn: str, rows: int) -> None:
    """public.users as the demo has it, `rows` rows from the pristine copy, analysed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pristine = create_pristine_users(conn, SCHEMA, rows)
        conn.execute("DROP TABLE IF EXISTS public.users")
        conn.execute(
            "CREATE TABLE public.users (id bigserial PRIMARY KEY, email text NOT NULL, "
            "email_confirmed_at timestamptz)"
        )
        conn.execute(
            f"INSERT INTO public.users (id, email, email_confirmed_at) "
            f"SELECT g, email, email_confirmed_at FROM {pristine} ORDER BY g"
        )
        conn.execute("SELECT setval('public.users_id_seq', %s)", (rows,))
        conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        conn.execute("VACUUM (ANALYZE) public.users")
        conn.execute("CHECKPOINT")


def run_rehearsal(dsn: str, sample_rows: int) -> dict[str, Any]:
    spec = DatabaseMigrationSpec.model_validate(seed_migration()["spec"])
    sql = {s.name: ResolvedSql(s.sql.up or "", s.sql.down) for s in spec.steps if s.sql}
    request = RehearsalRequest(
        spec=spec,
        sql=sql,
        real_dsn=dsn,
        database=scratch_database_name("bench", "rehearsal", spec.migration_id),
        sample_rows=sample_rows,
        timeout=3600.0,
    )
    first_step: list[float] = []

    def on_stage(text: str) -> None:
        if text.startswith("up:") and not first_step:
            first_step.append(time.perf_counter())

    started = time.perf_counter()
    verdict = asyncio.run(rehearse(request, on_stage=on_stage))
    total = time.perf_counter() - started
    copy = (first_step[0] - started) if first_step else total
    assert verdict.result == "Passed", verdict.message
    return {
        "sample": sample_rows,
        "rows": verdict.rows_copied,
        "total": total,
        "copy": copy,
        "steps": total - copy,
        "step_seconds": sum(s.seconds for s in verdict.steps or []),
    }


def run_apply(dsn: str) -> float:
    doc = seed_migration()
    platform = LocalPlatform(doc, dsn)
    runner = MigrationRunner(platform, Settings(poll_interval=0.5))
    started = time.perf_counter()
    try:
        asyncio.run(runner.run(None))
    finally:
        platform.close()
    seconds = time.perf_counter() - started
    phase = (platform.resource.get("status") or {}).get("phase")
    assert phase == "Succeeded", platform.resource.get("status")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing database (default: a throwaway server)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--samples", default="0,10000,100000", help="sampleRows values, comma-separated"
    )
    args = parser.parse_args()
    samples = [int(s) for s in args.samples.split(",")]
    with database(args.dsn) as dsn:
        build_users(dsn, args.rows)
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        runs = [run_rehearsal(dsn, n) for n in samples]
        baseline = run_apply(dsn)
    print(
        f"Rehearsal of examples/add-email-verified.yaml on users ({format_count(args.rows)} "
        f"rows), PostgreSQL {version[0] if version else '?'}, {machine()}\n"
    )
    rows = [
        [
            format_count(r["sample"]),
            format_count(r["rows"]),
            f"{r['copy']:.2f}",
            f"{r['steps']:.2f}",
            f"{r['total']:.2f}",
            f"{r['total'] / baseline:.2f}x",
        ]
        for r in runs
    ]
    rows.append(
        [f"apply (baseline, {format_count(args.rows)} rows)", "", "", "", f"{baseline:.2f}", "1x"]
    )
    print(
        markdown_table(
            ["sampleRows", "rows copied", "copy s", "steps s", "total s", "vs apply"], rows
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

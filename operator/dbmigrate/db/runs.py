"""`dbmigrate.runs`: the database's own log of the migrations run against it (seed Step 6.3).

One row per migration and outcome: when a migration ends (Succeeded, RolledBack, Failed) the
operator, or `dbmigrate apply`, writes what happened — the steps with their timings, rows and
up SQL, and the Markdown report (the migration log entry, or the post-mortem draft after a
rollback). `dbmigrate.history` says which steps are applied; this table says how each run went,
so the database carries its own log and `dbmigrate docs` can tell which migration added a
column.

A row is upserted on (migration_id, uid, outcome): a runner that dies after writing it and
before its final status writes the same row again, and a report completed later (the
post-deployment watch's findings) replaces the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS dbmigrate.runs (
    id           bigserial   PRIMARY KEY,
    migration_id text        NOT NULL,
    -- namespace/name of the DatabaseMigration, or "dbmigrate apply"
    name         text        NOT NULL,
    -- the DatabaseMigration's uid ('' for dbmigrate apply)
    uid          text        NOT NULL DEFAULT '',
    outcome      text        NOT NULL CHECK (outcome IN ('Succeeded', 'RolledBack', 'Failed')),
    started_at   timestamptz,
    finished_at  timestamptz NOT NULL,
    -- [{name, kind, state, startedAt, finishedAt, seconds, rows, lockRetries,
    --   blockingEpisodes, sql}]: sql is the up SQL of sql steps (null for the others)
    steps        jsonb       NOT NULL DEFAULT '[]',
    report       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (migration_id, uid, outcome)
);
"""

OUTCOMES = ("Succeeded", "RolledBack", "Failed")


@dataclass(frozen=True)
class RunRecord:
    """One row of `dbmigrate.runs`."""

    migration_id: str
    name: str
    outcome: str
    finished_at: datetime
    report: str
    uid: str = ""
    started_at: datetime | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    recorded_at: datetime | None = None


async def write_run(conn: psycopg.AsyncConnection, run: RunRecord) -> None:
    """Insert or replace the run's row (the schema exists: `history.ensure_schema`)."""
    if run.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {run.outcome!r}")
    await conn.execute(
        """
        INSERT INTO dbmigrate.runs
            (migration_id, name, uid, outcome, started_at, finished_at, steps, report)
        VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)
        ON CONFLICT (migration_id, uid, outcome) DO UPDATE SET
            name = EXCLUDED.name, started_at = EXCLUDED.started_at,
            finished_at = EXCLUDED.finished_at, steps = EXCLUDED.steps,
            report = EXCLUDED.report, recorded_at = now()
        """,
        (
            run.migration_id,
            run.name,
            run.uid,
            run.outcome,
            run.started_at,
            run.finished_at,
            json.dumps(run.steps),
            run.report,
        ),
    )


_COLUMNS = "migration_id, name, outcome, finished_at, report, uid, started_at, steps, recorded_at"


async def read_runs(
    conn: psycopg.AsyncConnection, migration_id: str | None = None
) -> list[RunRecord]:
    """The runs, oldest first (of one migration when `migration_id` is given); none before
    the table exists."""
    cur = await conn.execute("SELECT to_regclass('dbmigrate.runs') IS NOT NULL")
    row = await cur.fetchone()
    if not (row and row[0]):
        return []
    if migration_id is None:
        cur = await conn.execute(f"SELECT {_COLUMNS} FROM dbmigrate.runs ORDER BY finished_at, id")
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM dbmigrate.runs WHERE migration_id = %s "
            "ORDER BY finished_at, id",
            (migration_id,),
        )
    return [RunRecord(*r) for r in await cur.fetchall()]

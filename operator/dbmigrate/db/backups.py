"""The table of verified backups, `dbmigrate.backups`: one row per backup a migration took.

The backup worker (`dbmigrate backup`, `dbmigrate.backup`) writes the row after the dump was
stored and verified; the operator reads it to let the guarded step start. The row, not the
Job's exit status, is what "the backup was taken" means: a Job that completed without one took
none. Keyed by the migration id, the step the backup guards and the DatabaseMigration's uid
(`run_uid`): a restarted operator finds its backup and does not take it twice, while the same
migration created again (a new object, a new uid) takes a backup of its own.

Plain psycopg and dataclasses (no pydantic): the worker imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors

BACKUPS_TABLE = "dbmigrate.backups"

BACKUPS_DDL = f"""
CREATE SCHEMA IF NOT EXISTS dbmigrate;
CREATE TABLE IF NOT EXISTS {BACKUPS_TABLE} (
    migration_id   text             NOT NULL,
    step           text             NOT NULL,
    run_uid        text             NOT NULL,
    location       text             NOT NULL,
    size_bytes     bigint           NOT NULL CHECK (size_bytes > 0),
    sha256         text             NOT NULL CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
    seconds        double precision NOT NULL,
    scope          text             NOT NULL CHECK (scope IN ('Tables', 'Database')),
    tables         text[]           NOT NULL,
    server_version text             NOT NULL,
    client_version text             NOT NULL,
    toc_entries    integer          NOT NULL,
    taken_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, step, run_uid)
);
COMMENT ON TABLE {BACKUPS_TABLE} IS
    'dbmigrate: backups taken before a migration''s guarded step, written by the backup worker '
    'once the stored dump was read back and verified (size, sha256, pg_restore --list).';
"""

_COLUMNS = (
    "location, size_bytes, sha256, seconds, scope, tables, server_version, client_version, "
    "toc_entries, taken_at"
)


@dataclass(frozen=True)
class RecordedBackup:
    migration_id: str
    step: str
    run_uid: str
    location: str
    size_bytes: int
    sha256: str
    seconds: float
    scope: str
    tables: tuple[str, ...]
    server_version: str
    client_version: str
    toc_entries: int
    taken_at: datetime | None = None


def ensure_backups_table(conn: psycopg.Connection[Any]) -> None:
    """Create schema `dbmigrate` and the table (under the DDL lock the backfill uses too)."""
    for attempt in range(3):
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('dbmigrate.ddl', 0))")
                conn.execute(BACKUPS_DDL)
            return
        except (errors.UniqueViolation, errors.DuplicateObject):
            if attempt == 2:
                raise


def _row(migration_id: str, step: str, run_uid: str, row: tuple[Any, ...]) -> RecordedBackup:
    return RecordedBackup(
        migration_id=migration_id,
        step=step,
        run_uid=run_uid,
        location=row[0],
        size_bytes=int(row[1]),
        sha256=row[2],
        seconds=float(row[3]),
        scope=row[4],
        tables=tuple(row[5]),
        server_version=row[6],
        client_version=row[7],
        toc_entries=int(row[8]),
        taken_at=row[9],
    )


_SELECT = (
    f"SELECT {_COLUMNS} FROM {BACKUPS_TABLE} WHERE migration_id = %s AND step = %s AND run_uid = %s"
)


def find_backup(
    conn: psycopg.Connection[Any], migration_id: str, step: str, run_uid: str
) -> RecordedBackup | None:
    """The recorded backup (the worker's check before it takes one again)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (BACKUPS_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(_SELECT, (migration_id, step, run_uid)).fetchone()
    return None if row is None else _row(migration_id, step, run_uid, row)


async def read_backup(
    conn: psycopg.AsyncConnection, migration_id: str, step: str, run_uid: str
) -> RecordedBackup | None:
    """The recorded backup, as the operator reads it on its session."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (BACKUPS_TABLE,))
    exists = await cur.fetchone()
    if not exists or not exists[0]:
        return None
    cur = await conn.execute(_SELECT, (migration_id, step, run_uid))
    row = await cur.fetchone()
    return None if row is None else _row(migration_id, step, run_uid, row)


def record_backup(conn: psycopg.Connection[Any], backup: RecordedBackup) -> None:
    """Record a verified backup. A row already there (a pod that recorded and then died before
    it exited) is kept: the first verified backup is the one the operator reports."""
    ensure_backups_table(conn)
    conn.execute(
        f"INSERT INTO {BACKUPS_TABLE} (migration_id, step, run_uid, location, size_bytes, "
        "sha256, seconds, scope, tables, server_version, client_version, toc_entries) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (migration_id, step, run_uid) DO NOTHING",
        (
            backup.migration_id,
            backup.step,
            backup.run_uid,
            backup.location,
            backup.size_bytes,
            backup.sha256,
            backup.seconds,
            backup.scope,
            list(backup.tables),
            backup.server_version,
            backup.client_version,
            backup.toc_entries,
        ),
    )

"""The backup before the guarded step (`spec.backup`), as the runner sees and does it.

Seeing: the backup Job's state (from the API server) and the backup recorded in the database
(`dbmigrate.backups`), in that order: the worker commits its row before its pod exits, so a Job
seen Complete before the row is read cannot hide a row that is there. Doing: create the Job
(`RunBackup`), show a recorded backup in status.backup (`RecordBackup`), stop before the guarded
step when the backup failed (`FailBackup`).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import psycopg

from dbmigrate import failpoints
from dbmigrate.api import reasons
from dbmigrate.api.backup import BackupStatus
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.core import decide as d
from dbmigrate.core.backup import backup_job_step, guarded_step, restore_command
from dbmigrate.core.jobs import build_backup_job, job_name
from dbmigrate.core.lint import Resolved
from dbmigrate.core.plan import tables_touched
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.db.backups import RecordedBackup, read_backup
from dbmigrate.db.errors import redact_dsn
from dbmigrate.reconcile.passes import Pass, now_iso
from dbmigrate.reconcile.platform import Invalid, Platform


def _pending_guard(spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus) -> str | None:
    """The guarded step while it has not started (after it has, the backup is history)."""
    guard = guarded_step(spec)
    if guard is None or status.started_at is None:
        return None
    st = status.step(guard)
    return guard if st is None or st.state == "Pending" else None


async def observe_backup_job(
    platform: Platform,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: d.Observation,
    uid: str,
    dsn: str | None,
) -> d.Observation:
    """The backup Job of the guarded step, read before the backup record (see the module)."""
    guard = _pending_guard(spec, status)
    if guard is None or not platform.has_rollouts:
        return obs
    name = job_name(platform.name, backup_job_step(guard), uid)
    state = await platform.job_state(name, uid)
    if state is not None and state.message:
        state = replace(state, message=redact_dsn(state.message, dsn))
    return replace(obs, backup_job=state)


async def observe_backup_record(
    conn: psycopg.AsyncConnection,
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    obs: d.Observation,
    uid: str,
) -> d.Observation:
    guard = _pending_guard(spec, status)
    if guard is None:
        return obs
    row = await read_backup(conn, spec.migration_id, guard, uid)
    return obs if row is None else replace(obs, backup=backup_record(row))


def backup_record(row: RecordedBackup) -> d.BackupRecord:
    taken = row.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.taken_at else ""
    return d.BackupRecord(
        step=row.step,
        location=row.location,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        seconds=row.seconds,
        scope=row.scope,
        tables=row.tables,
        server_version=row.server_version,
        client_version=row.client_version,
        finished_at=taken,
    )


def _resolved(sql: dict[str, ResolvedSql]) -> Resolved:
    return {name: (r.up, r.down) for name, r in sql.items()}


async def run_backup(p: Pass, action: d.RunBackup) -> float:
    """Create the backup Job; the next passes watch it and read its record."""
    spec, status = p.spec, p.status
    assert spec.backup is not None
    tables: list[str] = []
    if spec.backup.scope == "Tables":
        tables = await asyncio.to_thread(tables_touched, spec, _resolved(p.sql))
    job = build_backup_job(p.body, spec, action.step, p.settings.image, tables)
    name = job["metadata"]["name"]
    try:
        await p.report.platform.start_job(job)
    except Invalid as exc:
        message = f"backup job {name} rejected by the API server: {exc}"
        return await fail_backup(p, d.FailBackup(action.step, message))
    failpoints.hit("backup.job-created")
    status.backup = BackupStatus(
        state="Running",
        before_step=action.step,
        job=name,
        scope=spec.backup.scope,
        tables=tables or None,
        started_at=now_iso(),
    )
    status.phase = "Progressing"
    status.current_step = action.step
    what = f"{len(tables)} table(s)" if spec.backup.scope == "Tables" else "the whole database"
    message = f"backing up {what} before step {action.step!r}: job {name} created"
    await p.report.save(status, reasons.BACKING_UP, message)
    await p.report.event("Normal", reasons.BACKUP_STARTED, message)
    return 1.0


async def record_backup(p: Pass, action: d.RecordBackup) -> float:
    """status.backup from the recorded (verified) backup; then the guarded step may start."""
    spec, status = p.spec, p.status
    assert spec.backup is not None
    previous = status.backup
    record = action.record
    if record is None:
        status.backup = BackupStatus(
            state="Skipped", before_step=action.step, message=action.message, finished_at=now_iso()
        )
        await p.report.save(status, reasons.STEP_RUNNING, action.message)
        await p.report.event("Warning", reasons.BACKUP_SKIPPED, action.message)
        return 0.0
    status.backup = BackupStatus(
        state="Succeeded",
        before_step=action.step,
        job=previous.job if previous is not None else None,
        location=record.location,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        seconds=record.seconds,
        scope=record.scope,  # type: ignore[arg-type]
        tables=list(record.tables) or None,
        restore_command=restore_command(spec.backup, record.location),
        server_version=record.server_version,
        client_version=record.client_version,
        message="verified: pg_restore --list reads it, sha256 and size match what was stored",
        started_at=previous.started_at if previous is not None else None,
        finished_at=record.finished_at or now_iso(),
    )
    message = (
        f"backup before step {action.step!r} verified: {record.location}, "
        f"{record.size_bytes} bytes, sha256 {record.sha256[:12]}, {record.seconds:.1f}s"
    )
    await p.report.save(status, reasons.STEP_RUNNING, message)
    await p.report.event("Normal", reasons.BACKUP_SUCCEEDED, message)
    return 0.0


async def fail_backup(p: Pass, action: d.FailBackup) -> float:
    """The guarded step does not start: Failed, BackupFailed, until a person acts."""
    status = p.status
    message = redact_dsn(action.message, p.report.dsn)
    previous = status.backup
    status.backup = BackupStatus(
        state="Failed",
        before_step=action.step,
        job=previous.job if previous is not None else None,
        scope=previous.scope if previous is not None else None,
        tables=previous.tables if previous is not None else None,
        message=message,
        started_at=previous.started_at if previous is not None else None,
        finished_at=(
            previous.finished_at
            if previous is not None and previous.state == "Failed" and previous.finished_at
            else now_iso()
        ),
    )
    wait = d.Wait(
        "Failed",
        reasons.BACKUP_FAILED,
        message,
        step=action.step,
        stalled=True,
        requeue_after=10.0,
    )
    await p.report.report_wait(status, wait)
    await p.database.release_lock()  # other migrations of this database may go on meanwhile
    return wait.requeue_after


BACKUP_EFFECTS: dict[type, Any] = {
    d.RunBackup: run_backup,
    d.RecordBackup: record_backup,
    d.FailBackup: fail_backup,
}

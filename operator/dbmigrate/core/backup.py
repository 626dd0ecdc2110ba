"""The backup gate (`spec.backup`): which step a backup guards, and what to do before it starts.

Pure. Before the guarded step (the first step, or the first point-of-no-return step, per
`backup.when`) starts, a verified backup must be recorded in the database by the backup Job
(`dbmigrate.backups`, read into `Observation.backup`): until then the step waits for the Job
(`BackingUp`); a Job that failed, or that completed without recording a verified backup, stops
the migration before the step (`BackupFailed`). Deleting the failed Job is how a person asks for
the backup to be taken again once the cause is fixed (`backup_retry`). Where there is no cluster
to run the Job (`dbmigrate apply`), no backup is taken, and status says so.
"""

from __future__ import annotations

import shlex

from dbmigrate.api import reasons
from dbmigrate.api.backup import Backup
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, Step
from dbmigrate.core.actions import (
    ANNOTATE_TO_ROLL_BACK,
    Action,
    FailBackup,
    Observation,
    RecordBackup,
    RunBackup,
    Wait,
)

# The part of a backup Job's name (`core.jobs.job_name`) standing for the step it guards: a
# slash cannot occur in a step name, so no step's own Job has this name.
JOB_STEP_PREFIX = "backup/"
SKIPPED_HERE = (
    "no backup taken: dbmigrate apply runs no backup Job (there is no cluster); take one "
    "yourself (pg_dump -Fc) before running a migration that needs it"
)


def guarded_step(spec: DatabaseMigrationSpec) -> str | None:
    """The step the backup is taken before; None without `spec.backup`.

    BeforePointOfNoReturn: the first step marked pointOfNoReturn, or, in a migration without
    one, its first step (everything is undone by rollback then, but the backup is asked for).
    """
    if spec.backup is None:
        return None
    if spec.backup.when == "BeforePointOfNoReturn":
        for step in spec.steps:
            if step.point_of_no_return:
                return step.name
    return spec.steps[0].name


def backup_job_step(step: str) -> str:
    """What `core.jobs.job_name` is given as the step of the backup Job guarding `step`."""
    return f"{JOB_STEP_PREFIX}{step}"


def backup_retry(status: DatabaseMigrationStatus, obs: Observation) -> bool:
    """A migration Failed by its backup takes it again once the failed Job is gone (a person
    deleted it after fixing the cause), unless a rollback was asked for meanwhile."""
    backup = status.backup
    return (
        backup is not None
        and backup.state == "Failed"
        and obs.backup_job is None
        and not obs.rollback_requested
        and status.rollback is None
    )


def decide_backup(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation, step: Step
) -> Action | None:
    """What the backup asks for before `step` starts; None: nothing (the step may start)."""
    if guarded_step(spec) != step.name:
        return None
    current = status.backup
    record = obs.backup
    if record is not None:
        if (
            current is None
            or current.state != "Succeeded"
            or current.before_step != step.name
            or current.sha256 != record.sha256
        ):
            return RecordBackup(step.name, record)
        job = obs.backup_job
        if job is not None and job.foreign_owner is None and job.active and not job.succeeded:
            # A pod retried after the record committed (its predecessor died right after) only
            # finds the record and exits: the step starts once no backup pod is left running.
            return Wait(
                "Progressing",
                reasons.BACKING_UP,
                f"backup before step {step.name!r} recorded; waiting for job {job.name}'s pod to "
                "finish",
                step=step.name,
                requeue_after=1.0,
            )
        return None
    if not obs.rollout_gates:
        if current is None or current.state != "Skipped":
            return RecordBackup(step.name, None, SKIPPED_HERE)
        return None
    job = obs.backup_job
    if job is None:
        return RunBackup(step.name)
    retry = (
        f"fix the cause, then delete job {job.name} to take the backup again (or "
        f"{ANNOTATE_TO_ROLL_BACK})"
    )
    if job.foreign_owner is not None:
        return Wait(
            "Waiting",
            reasons.JOB_NAME_CONFLICT,
            f"backup before step {step.name!r}: job {job.name} exists but is not this "
            f"migration's (owner: {job.foreign_owner}); delete that job to let the backup run",
            step=step.name,
            stalled=True,
            requeue_after=10.0,
        )
    if job.failed:
        why = job.message or "no termination message"
        return FailBackup(
            step.name,
            f"backup job {job.name} failed: {why}; step {step.name!r} not started; {retry}",
        )
    if job.succeeded:
        return FailBackup(
            step.name,
            f"backup job {job.name} completed but recorded no verified backup; step "
            f"{step.name!r} not started; {retry}",
        )
    return Wait(
        "Progressing",
        reasons.BACKING_UP,
        f"backing up before step {step.name!r}: job {job.name} running",
        step=step.name,
        requeue_after=2.0,
    )


def restore_command(backup: Backup, location: str) -> str:
    """The command that restores the dump at `location` (as the worker recorded it), the
    connection left to the person: PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE.

    `--clean --if-exists` drops what the dump re-creates (the dumped tables, or everything of a
    Database-scope dump) before re-creating it; in one transaction, stopping at the first error.
    """
    restore = (
        "pg_restore --clean --if-exists --no-owner --single-transaction --exit-on-error "
        '--dbname "$PGDATABASE"'
    )
    if location.startswith("s3://") and backup.s3 is not None:
        tls = " --no-verify-ssl" if backup.s3.insecure_skip_tls_verify else ""
        region = f" --region {shlex.quote(backup.s3.region)}" if backup.s3.region else ""
        fetch = (
            f"aws s3 cp --endpoint-url {shlex.quote(backup.s3.endpoint)}{region}{tls} "
            f"{shlex.quote(location)} -"
        )
        return f"{fetch} | {restore}"
    path = location.partition("/")[2] if location.startswith("pvc:") else location
    # $CLAIM_ROOT: wherever the claim is mounted where the command runs.
    return f'{restore} "$CLAIM_ROOT"/{shlex.quote(path)}'

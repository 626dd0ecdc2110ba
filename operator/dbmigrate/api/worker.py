"""What the operator and the backfill worker (`dbmigrate backfill`) agree on, importable
without pydantic: the worker starts without building the API's models."""

from __future__ import annotations

# The most pods one backfill step may run (`steps[].backfill.parallelism`).
MAX_PARALLELISM = 16

# The exit codes of `dbmigrate backfill`, and what the Job's podFailurePolicy
# (`core.jobs.backfill_pod_failure_policy`) does with each:
BACKFILL_EXIT_FAILED = 1  # an error that cannot heal (no primary key, bad SQL): FailJob
BACKFILL_EXIT_USAGE = 2  # bad arguments: FailJob
# The database stayed unavailable (connection lost or refused, 57P01, 53300, ...) or a lock
# stayed taken past the worker's own retries with back-off (EX_TEMPFAIL of sysexits.h): the
# pod is retried (Count, up to backoffLimitPerIndex) and resumes from its checkpoint.
BACKFILL_EXIT_RETRYABLE = 75
BACKFILL_EXIT_STOPPED = 143  # SIGTERM (128 + 15): finished its batch and stopped; retried

# `dbmigrate backup` (the worker of backup Jobs, `core.jobs.build_backup_job`): the S3
# credentials come from these environment variables (secretKeyRef), never from arguments.
BACKUP_S3_ACCESS_KEY_ENV = "DBMIGRATE_S3_ACCESS_KEY_ID"
BACKUP_S3_SECRET_KEY_ENV = "DBMIGRATE_S3_SECRET_ACCESS_KEY"  # noqa: S105 - a variable's name
# Where a backup Job mounts its PersistentVolumeClaim.
BACKUP_MOUNT_PATH = "/backup"
# Its exit codes: the podFailurePolicy fails the Job at once on FAILED and USAGE (a server
# newer than pg_dump, a missing table, a wrong password or bucket do not heal by retrying);
# RETRYABLE (the database or the storage unreachable) is retried up to the backoffLimit.
BACKUP_EXIT_FAILED = 1
BACKUP_EXIT_USAGE = 2
BACKUP_EXIT_RETRYABLE = 75

"""Condition types and the fixed condition reasons of a DatabaseMigration.

Conditions follow kstatus: `Ready` (the migration reached its goal), `Reconciling` (the operator
is working towards it) and `Stalled` (it cannot progress without a change or a person).
Events carry a condition reason or one of the event reasons further down.
Every reason below is a stable API: alerts, Argo CD health and scripts match on them.
"""

from __future__ import annotations

from typing import Final

READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"

# progress
PENDING: Final = "Pending"  # seen, nothing done yet
STEP_RUNNING: Final = "StepRunning"
WAITING_FOR_ROLLOUT: Final = "WaitingForRollout"
ANOTHER_MIGRATION_RUNNING: Final = "AnotherMigrationRunning"
SUSPENDED: Final = "Suspended"
SETTLING: Final = "Settling"  # all steps done, analysis keeps watching for `settle`
# a required item of spec.checklist does not hold yet: the first step waits
CHECKLIST_INCOMPLETE: Final = "ChecklistIncomplete"
SUCCEEDED: Final = "Succeeded"
REHEARSING: Final = "Rehearsing"  # the migration runs on a scratch copy before it starts
BACKING_UP: Final = "BackingUp"  # the backup Job runs; the step it guards waits for it

# step failures
ROLLOUT_FAILED: Final = "RolloutFailed"
ROLLOUT_TIMEOUT: Final = "RolloutTimeout"
LOCK_TIMEOUT: Final = "LockTimeout"
# the step's statement kept blocking application queries longer than safety.maxBlockedDuration
# and was cancelled each time, until safety.lockRetries ran out
BLOCKING_APPLICATION: Final = "BlockingApplication"
SQL_ERROR: Final = "SqlError"
VERIFY_FAILED: Final = "VerifyFailed"
JOB_FAILED: Final = "JobFailed"
JOB_INVALID: Final = "JobInvalid"  # the API server rejected the step's Job (422)
# the backup before the guarded step failed or could not be verified: that step does not start
BACKUP_FAILED: Final = "BackupFailed"

# configuration / runtime problems (retried while they last)
LINT_FAILED: Final = "LintFailed"
SECRET_NOT_FOUND: Final = "SecretNotFound"  # noqa: S105 - a reason, not a secret
INVALID_DSN: Final = "InvalidDsn"  # the Secret's DSN does not parse (nothing of it is shown)
# a Secret the migration names lacks the label this operator requires (DBMIGRATE_SECRET_LABEL)
SECRET_NOT_PERMITTED: Final = "SecretNotPermitted"  # noqa: S105 - a reason, not a secret
CONFIG_MAP_NOT_FOUND: Final = "ConfigMapNotFound"
DEPLOYMENT_NOT_FOUND: Final = "DeploymentNotFound"
DATABASE_UNREACHABLE: Final = "DatabaseUnreachable"
# the session lost the migration lock (a step's unlock, a transaction-pooling pooler)
MIGRATION_LOCK_LOST: Final = "MigrationLockLost"
CHECKSUM_MISMATCH: Final = "ChecksumMismatch"
INVALID_SPEC: Final = "InvalidSpec"
TRANSIENT_ERROR: Final = "TransientError"  # an unexpected error; retried with backoff
JOB_NAME_CONFLICT: Final = "JobNameConflict"  # a Job not ours holds the step's Job name

# rehearsal (spec.rehearsal)
# the migration failed its rehearsal on the scratch copy: nothing runs on the real database
REHEARSAL_FAILED: Final = "RehearsalFailed"
# the rehearsal could not run (no CREATEDB, pg_dump missing or too old, scratch server down):
# not a verdict on the migration; retried with backoff
REHEARSAL_UNAVAILABLE: Final = "RehearsalUnavailable"

# analysis and rollback
SLO_BREACHED: Final = "SloBreached"
ANALYSIS_INCONCLUSIVE: Final = "AnalysisInconclusive"
ROLLBACK_REQUESTED: Final = "RollbackRequested"
ROLLING_BACK: Final = "RollingBack"
STOPPING_JOBS: Final = "StoppingJobs"  # the rollback waits for the migration's Jobs to stop
PAST_POINT_OF_NO_RETURN: Final = "PastPointOfNoReturn"
IRREVERSIBLE_STEP: Final = "IrreversibleStep"
ROLLBACK_FAILED: Final = "RollbackFailed"
ROLLED_BACK: Final = "RolledBack"
AWAITING_MANUAL_ROLLBACK: Final = "AwaitingManualRollback"

# after the last step (spec.postDeploy): the watch, its findings, the cleanup
WATCHING: Final = "Watching"  # also the type of the condition shown while the watch lasts
WATCH_FINISHED: Final = "WatchFinished"
# pg_stat_statements is not installed (or not loaded): only the new indexes are watched
STATEMENTS_UNAVAILABLE: Final = "StatementsUnavailable"
QUERY_REGRESSION: Final = "QueryRegression"
UNUSED_INDEX: Final = "UnusedIndex"
CLEANING_UP: Final = "CleaningUp"
CLEANUP_FAILED: Final = "CleanupFailed"
# dbmigrate apply ends at the last step: the watch and the cleanup are the operator's
POST_DEPLOY_SKIPPED: Final = "PostDeploySkipped"

# Argo CD after a rollback (spec.rollback.argoCD): the type of the condition shown while the
# operator keeps an Application's automated sync switched off, and its reasons
AUTO_SYNC_PAUSED: Final = "AutoSyncPaused"
# True: switched off by the rollback, waiting for Git to drop the rolled-back release
# (resumeAutoSync: OnRevert) or for a person (Never)
ARGO_CD_AUTO_SYNC_PAUSED: Final = "ArgoCDAutoSyncPaused"
# False: switched back on by the operator once Git no longer holds the rolled-back release
ARGO_CD_AUTO_SYNC_RESUMED: Final = "ArgoCDAutoSyncResumed"
# False: somebody else switched it back on (or changed the sync policy) meanwhile
ARGO_CD_AUTO_SYNC_CHANGED: Final = "ArgoCDAutoSyncChanged"
# False: the Application is gone
ARGO_CD_APPLICATION_GONE: Final = "ArgoCDApplicationGone"

# event reasons: the Events the operator posts carry these or a condition reason above
STARTED: Final = "Started"
LINT_FINDINGS: Final = "LintFindings"
STEP_STARTED: Final = "StepStarted"
STEP_SUCCEEDED: Final = "StepSucceeded"
STEP_FAILED: Final = "StepFailed"
ROLLBACK_STARTED: Final = "RollbackStarted"
ROLLOUT_UNDONE: Final = "RolloutUndone"
STEP_REVERTING: Final = "StepReverting"
STEP_REVERTED: Final = "StepReverted"
ANALYSIS_VERDICT: Final = "AnalysisVerdict"
ARGO_CD_NOT_PAUSED: Final = "ArgoCDNotPaused"
REHEARSAL_PASSED: Final = "RehearsalPassed"
BACKUP_STARTED: Final = "BackupStarted"
BACKUP_SUCCEEDED: Final = "BackupSucceeded"
BACKUP_SKIPPED: Final = "BackupSkipped"
# application queries waited on a step's statement or batch past safety.maxBlockedDuration:
# it was cancelled (and is retried)
APPLICATION_BLOCKED: Final = "ApplicationBlocked"
# the migration's record (dbmigrate.runs row, report ConfigMap) could not be written; the
# outcome was saved all the same
REPORT_FAILED: Final = "ReportFailed"

EVENT_REASONS: Final = (
    STARTED,
    LINT_FINDINGS,
    STEP_STARTED,
    STEP_SUCCEEDED,
    STEP_FAILED,
    ROLLBACK_STARTED,
    ROLLOUT_UNDONE,
    STEP_REVERTING,
    STEP_REVERTED,
    ANALYSIS_VERDICT,
    ARGO_CD_NOT_PAUSED,
    REHEARSAL_PASSED,
    BACKUP_STARTED,
    BACKUP_SUCCEEDED,
    BACKUP_SKIPPED,
    APPLICATION_BLOCKED,
    REPORT_FAILED,
)

ALL_REASONS: Final = (
    PENDING,
    STEP_RUNNING,
    WAITING_FOR_ROLLOUT,
    ANOTHER_MIGRATION_RUNNING,
    SUSPENDED,
    SETTLING,
    CHECKLIST_INCOMPLETE,
    SUCCEEDED,
    REHEARSING,
    BACKING_UP,
    ROLLOUT_FAILED,
    ROLLOUT_TIMEOUT,
    LOCK_TIMEOUT,
    BLOCKING_APPLICATION,
    SQL_ERROR,
    VERIFY_FAILED,
    JOB_FAILED,
    JOB_INVALID,
    BACKUP_FAILED,
    LINT_FAILED,
    SECRET_NOT_FOUND,
    INVALID_DSN,
    SECRET_NOT_PERMITTED,
    CONFIG_MAP_NOT_FOUND,
    DEPLOYMENT_NOT_FOUND,
    DATABASE_UNREACHABLE,
    MIGRATION_LOCK_LOST,
    CHECKSUM_MISMATCH,
    INVALID_SPEC,
    TRANSIENT_ERROR,
    JOB_NAME_CONFLICT,
    REHEARSAL_FAILED,
    REHEARSAL_UNAVAILABLE,
    SLO_BREACHED,
    ANALYSIS_INCONCLUSIVE,
    ROLLBACK_REQUESTED,
    ROLLING_BACK,
    STOPPING_JOBS,
    PAST_POINT_OF_NO_RETURN,
    IRREVERSIBLE_STEP,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    AWAITING_MANUAL_ROLLBACK,
    WATCHING,
    WATCH_FINISHED,
    STATEMENTS_UNAVAILABLE,
    QUERY_REGRESSION,
    UNUSED_INDEX,
    CLEANING_UP,
    CLEANUP_FAILED,
    POST_DEPLOY_SKIPPED,
    ARGO_CD_AUTO_SYNC_PAUSED,
    ARGO_CD_AUTO_SYNC_RESUMED,
    ARGO_CD_AUTO_SYNC_CHANGED,
    ARGO_CD_APPLICATION_GONE,
)

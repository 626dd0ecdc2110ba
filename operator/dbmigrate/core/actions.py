"""What `core.decide` sees and what it answers: the Observation and the Actions.

Pure data, and the small rules every part of the state machine shares (is a step applied, is
the migration still active, what a step failure is under the rollback policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from dbmigrate.api.checklist import ChecklistStatus
from dbmigrate.api.models import (
    ROLLBACK_ANNOTATION,
    ROLLBACK_REQUESTED,
    TERMINAL_PHASES,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    LintFinding,
    Phase,
)
from dbmigrate.core.argocd import paused_pending
from dbmigrate.core.rollout import Revision, RolloutState

if TYPE_CHECKING:  # core.watch builds on these actions
    from dbmigrate.core.watch import Judgement, WatchObservation

Direction = Literal["up", "down"]
ANNOTATE_TO_ROLL_BACK = f"annotate {ROLLBACK_ANNOTATION}={ROLLBACK_REQUESTED} to roll back"
ROLLBACK_BY_ANNOTATION = f"rollback requested with the {ROLLBACK_ANNOTATION} annotation"

# ------------------------------------------------------------------------------------------------
# observation


@dataclass(frozen=True)
class AppliedStep:
    """The latest history row of a step."""

    direction: Direction
    checksum: str


@dataclass(frozen=True)
class JobState:
    """The Job named in a step's status (or by `core.jobs.job_name`).

    `foreign_owner` is set (to a description of its owner, or "no owner") when a Job of that
    name exists but its ownerReference is not this DatabaseMigration's uid: it is somebody
    else's Job, and nothing about it says anything about this migration's step.
    """

    name: str
    active: int = 0
    succeeded: bool = False
    failed: bool = False
    message: str | None = None
    foreign_owner: str | None = None


@dataclass(frozen=True)
class BackupRecord:
    """A verified backup as its worker recorded it in `dbmigrate.backups` (the truth about
    whether the guarded step may start: a Job that completed without this row took none)."""

    step: str
    location: str
    size_bytes: int
    sha256: str
    seconds: float
    scope: str
    tables: tuple[str, ...]
    server_version: str
    client_version: str
    finished_at: str


@dataclass(frozen=True)
class ActiveJob:
    """A Job of this migration (its uid in the ownerReference) that has not finished, or whose
    deletion is under way: its pods may still run a backfill batch or a tool."""

    name: str
    uid: str
    deleting: bool = False  # deleted (foreground): waiting for its pods to go
    pods: int = 0  # pods that still exist


@dataclass(frozen=True)
class ConfigProblem:
    """Something the operator could not read: retried, shown in status until it is fixed."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    now: datetime
    generation: int = 1
    # history table: step name -> latest row; steps with statements committed but not finished
    applied: dict[str, AppliedStep] = field(default_factory=dict)
    partially_applied: frozenset[str] = frozenset()
    # checksum of each step as the spec defines it now (ConfigMap SQL resolved)
    checksums: dict[str, str] = field(default_factory=dict)
    lock_held: bool = True
    deployment: RolloutState | None = None
    deployment_missing: bool = False
    # Before the start, when the target already runs the migration's version: the target's
    # revisions, newest first (the rollback undoes to the newest without that version).
    revisions: tuple[Revision, ...] = ()
    jobs: dict[str, JobState] = field(default_factory=dict)
    # spec.backup: the verified backup recorded for the guarded step by this migration (its
    # uid), and the backup Job of that step when it exists
    backup: BackupRecord | None = None
    backup_job: JobState | None = None
    # While rolling back: the migration's Jobs that still run (or are being deleted).
    active_jobs: tuple[ActiveJob, ...] = ()
    problem: ConfigProblem | None = None
    lint_errors: int = 0  # error findings (they block the start under safety.lint Enforce)
    lint_findings: tuple[LintFinding, ...] = ()  # all findings, for status.lint
    rollback_requested: bool = False
    # False where there is no cluster (`dbmigrate apply`): no gates, awaitRollout is skipped
    rollout_gates: bool = True
    slo_breach: str | None = None  # reason text when analysis says roll back
    analysis_pause: str | None = None  # reason text when analysis says pause
    # The pre-deployment checklist as it stands (its required items hold the first step).
    checklist: ChecklistStatus | None = None
    # spec.postDeploy, while the watch lasts and a sample is due: the snapshot taken before the
    # first step and the database's statistics now
    watch: WatchObservation | None = None


# ------------------------------------------------------------------------------------------------
# actions


@dataclass(frozen=True)
class Wait:
    """Nothing to do now; show why and look again later."""

    phase: Phase
    reason: str
    message: str
    step: str | None = None
    stalled: bool = False
    requeue_after: float = 5.0
    step_waiting: bool = False  # the step itself is under way and waiting (awaitRollout)


@dataclass(frozen=True)
class Start:
    """First pass: record startedAt and the target's revision (rollback goes back to it)."""

    target_revision: str | None
    # Why that revision is not the one running now (the target already ran the migration's
    # version when the migration started), for the Started event.
    note: str | None = None


@dataclass(frozen=True)
class Rehearse:
    """Before the start: run the migration on a scratch copy of the database (spec.rehearsal)
    and record what it found in status.rehearsal."""


@dataclass(frozen=True)
class RunStep:
    """Apply a step (sql: run it now; backfill/job: create its Job; awaitRollout: done)."""

    step: str


@dataclass(frozen=True)
class RunBackup:
    """Create the backup Job that must record a verified backup before `step` starts."""

    step: str


@dataclass(frozen=True)
class RecordBackup:
    """The backup before `step` is recorded in the database: show it in status.backup (or, with
    `record` None, that no backup is taken where there is no cluster to run its Job)."""

    step: str
    record: BackupRecord | None
    message: str = ""


@dataclass(frozen=True)
class FailBackup:
    """The backup before `step` failed or cannot be trusted: `step` does not start."""

    step: str
    message: str


@dataclass(frozen=True)
class RecordStep:
    """The step is done (history shows it, a Job completed, a rollout arrived): write history
    if it is not there yet and mark the step Succeeded."""

    step: str
    write_history: bool
    message: str = ""


@dataclass(frozen=True)
class FailStep:
    step: str
    reason: str
    message: str
    rollback: bool  # the rollback policy is Automatic


@dataclass(frozen=True)
class AwaitManualRollback:
    """The rollback policy is Manual: stop in Failed until a person asks for the rollback."""

    reason: str
    message: str


@dataclass(frozen=True)
class StartRollback:
    reason: str  # condition reason: SloBreached, RollbackRequested, a step failure reason
    message: str
    keep_rollout: str | None = None  # why the rollout is not to be undone (a finished migration)


@dataclass(frozen=True)
class RefuseRollback:
    """A finished migration past its point of no return: the requested rollback is refused and
    the migration stays Succeeded."""

    reason: str
    message: str


@dataclass(frozen=True)
class StopJobs:
    """Delete the migration's running Jobs (foreground: their pods go first) before the
    rollback changes anything, so that no backfill batch races the down SQL."""

    jobs: tuple[ActiveJob, ...]


@dataclass(frozen=True)
class UndoRollout:
    deployment: str
    to_revision: str


@dataclass(frozen=True)
class RevertStep:
    """Run the step's down SQL (none for backfill/awaitRollout) and record a `down` row."""

    step: str


@dataclass(frozen=True)
class FinishRollback:
    phase: Literal["RolledBack", "Failed"]
    reason: str
    message: str


@dataclass(frozen=True)
class Succeed:
    message: str


@dataclass(frozen=True)
class RecordWatch:
    """A post-deployment sample judged: show it in status.postDeploy, post its new findings
    (`final`: the watch is over; the cleanup comes next, if any)."""

    judgement: Judgement
    seen: WatchObservation
    final: bool


@dataclass(frozen=True)
class RunCleanup:
    """Run a cleanup step of spec.postDeploy (under the migration lock, with a history row)."""

    step: str


@dataclass(frozen=True)
class RecordCleanup:
    """A cleanup step is in the history table (a crash came between it and the status)."""

    step: str


@dataclass(frozen=True)
class FinishPostDeploy:
    """The watch and the cleanup are over: nothing more happens to the migration."""

    message: str


@dataclass(frozen=True)
class Done:
    """Terminal: nothing more will happen to this migration."""


Action = (
    Wait
    | Start
    | Rehearse
    | RunStep
    | RunBackup
    | RecordBackup
    | FailBackup
    | RecordStep
    | FailStep
    | AwaitManualRollback
    | StartRollback
    | RefuseRollback
    | StopJobs
    | UndoRollout
    | RevertStep
    | FinishRollback
    | Succeed
    | RecordWatch
    | RunCleanup
    | RecordCleanup
    | FinishPostDeploy
    | Done
)


# ------------------------------------------------------------------------------------------------
# shared rules


def is_applied(obs: Observation, step: str) -> bool:
    row = obs.applied.get(step)
    return row is not None and row.direction == "up"


def is_active(status: DatabaseMigrationStatus, rollback_requested: bool) -> bool:
    """Whether anything more will happen to the migration: not in a terminal phase, or
    Succeeded with its post-deployment watch or cleanup not over, or with a rollback requested
    that has not been answered yet, or rolled back with an Argo CD Application's automated
    sync still switched off by the rollback."""
    phase = status.phase or "Pending"
    if phase not in TERMINAL_PHASES or paused_pending(status):
        return True
    if phase != "Succeeded":
        return False
    pd = status.post_deploy
    watching = pd is not None and pd.finished_at is None and pd.state in ("Watching", "CleaningUp")
    return watching or (rollback_requested and status.rollback is None)


def fail_step(spec: DatabaseMigrationSpec, step: str, reason: str, message: str) -> FailStep:
    """A step failure; the rollback policy says whether the rollback starts by itself."""
    return FailStep(step, reason, message, rollback=spec.rollback.policy == "Automatic")

"""The status the operator writes (`status`): phase, steps, analysis, rollback, lint, conditions.

Read leniently (unknown fields ignored): a status written by a newer operator must not stop an
older one from reading what it knows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from dbmigrate.api.backup import BackupStatus
from dbmigrate.api.checklist import ChecklistStatus
from dbmigrate.api.postdeploy import PostDeployStatus
from dbmigrate.api.rehearsal import RehearsalStatus
from dbmigrate.api.schema import Model

Phase = Literal[
    "Pending",
    "Progressing",
    "Waiting",
    "Suspended",
    "Succeeded",
    "Failed",
    "RollingBack",
    "RolledBack",
]
# Nothing more happens to a migration in these phases: its runner stops.
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "RolledBack"})
StepState = Literal["Pending", "Running", "Waiting", "Succeeded", "Failed", "RolledBack", "Skipped"]
Verdict = Literal["Successful", "Failed", "Inconclusive"]


class _Status(Model):
    model_config = ConfigDict(extra="ignore")


class BackfillProgress(_Status):
    rows_done: int = 0
    rows_estimated: int | None = None
    percent: int | None = None
    rows_per_second: int | None = None
    eta: str | None = None
    # The workers it runs with (`parallelism`, or what `auto` stood for).
    workers: int | None = None
    # Batches the blocking guard cancelled (safety.maxBlockedDuration), and the last of them.
    blocking_episodes: int = 0
    last_blocked: str | None = None


class StepStatus(_Status):
    name: str
    state: StepState = "Pending"
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    lock_retries: int = 0
    # Times the guard cancelled this step's statement (or a batch of its backfill) because
    # application queries waited on it longer than safety.maxBlockedDuration.
    blocking_episodes: int = 0
    message: str | None = None
    reason: str | None = None
    job: str | None = None
    backfill: BackfillProgress | None = None
    # The step's checksum when the migration started (SQL from a ConfigMap resolved): a change
    # under a running migration is a ChecksumMismatch, not a different step applied silently.
    checksum: str | None = None


class Measurement(_Status):
    metric: str
    query: str | None = None
    sql: str | None = None
    value: float | None = None
    threshold: str | None = None
    result: Verdict
    message: str | None = None
    at: str | None = None


class DatabaseMeasurements(_Status):
    """What the database itself says (informational: no verdict)."""

    # Measured with every analysis round and, without analysis, while a step runs. An `sql:`
    # metric can gate on the same numbers.

    # sessions of the migration's database waiting for a lock, and the longest such wait
    blocked_backends: int = 0
    longest_lock_wait_seconds: float = 0.0
    # the worst replica's replay lag (pg_stat_replication); None: no replica, or not visible
    replication_lag_seconds: float | None = None
    measured_at: str | None = None


class AnalysisStatus(_Status):
    baseline: dict[str, float] | None = None
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    last: list[Measurement] | None = None
    last_measured_at: str | None = None
    database: DatabaseMeasurements | None = None


class ArgoCDRollbackStatus(_Status):
    application: str | None = None
    namespace: str | None = None
    auto_sync_paused: bool = False
    message: str | None = None
    # What was switched off, to be put back as it was: spec.syncPolicy.automated's flags
    # (prune, selfHeal, allowEmpty...), and the Git revision the Application was synced to.
    automated: dict[str, bool] | None = None
    paused_revision: str | None = None
    paused_at: str | None = None
    # A sync operation that was running when automated sync was switched off was ended.
    operation_terminated: bool = False
    # Automated sync is on again (by the operator, or somebody else): when, and at which
    # revision of Git the operator switched it back on.
    resumed_at: str | None = None
    resumed_revision: str | None = None


class RollbackStatus(_Status):
    reason: str | None = None
    trigger: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    undone_to_revision: str | None = None
    rollout_undone: bool = False
    # Why the rollout was left as it is: a finished migration's rollback undoes it only while
    # the target still runs the migration's version.
    rollout_kept: str | None = None
    database: str | None = None
    steps_reverted: list[str] | None = None
    # The step under way (or the last one done) when the rollback started.
    step: str | None = None
    argo_cd: ArgoCDRollbackStatus | None = Field(default=None, alias="argoCD")


class LintFinding(_Status):
    step: str | None = None
    rule: str
    # info: a lock finding on a table the database says is small (over in moments)
    severity: Literal["error", "warning", "info"]
    message: str
    statement: int | None = None
    suppressed: bool = False


class Condition(_Status):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class DatabaseMigrationStatus(_Status):
    observed_generation: int | None = None
    phase: Phase | None = None
    current_step: str | None = None
    progress: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    target_revision: str | None = None
    steps: list[StepStatus] | None = None
    analysis: AnalysisStatus | None = None
    rollback: RollbackStatus | None = None
    rehearsal: RehearsalStatus | None = None
    lint: list[LintFinding] | None = None
    backup: BackupStatus | None = None
    plan: str | None = None
    checklist: ChecklistStatus | None = None
    post_deploy: PostDeployStatus | None = None
    conditions: list[Condition] | None = None

    def step(self, name: str) -> StepStatus | None:
        for s in self.steps or []:
            if s.name == name:
                return s
        return None

    def condition(self, type_: str) -> Condition | None:
        for c in self.conditions or []:
            if c.type == type_:
                return c
        return None

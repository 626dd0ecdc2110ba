"""Pydantic models of the DatabaseMigration resource (dbmigrate.io/v1alpha1): the spec, and the
whole resource. The steps are in `dbmigrate.api.steps`, the analysis in `dbmigrate.api.analysis`,
what runs before the first step in `dbmigrate.api.rehearsal`, `.backup` and `.checklist`, the
status in `dbmigrate.api.status`, the shared names, patterns and base model in
`dbmigrate.api.schema`; this module re-exports the common ones, so `dbmigrate.api.models` stays
the one import for the API.

These models are the single source of the CRD schema (see `dbmigrate.api.schema`). Field names,
defaults and meanings follow ../shared/design/API.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from dbmigrate.api.analysis import Analysis, Metric, PrometheusRef
from dbmigrate.api.backup import Backup
from dbmigrate.api.checklist import Checklist
from dbmigrate.api.durations import check_within, parse_duration
from dbmigrate.api.postdeploy import PostDeploy, PostDeployStatus
from dbmigrate.api.rehearsal import Rehearsal, RehearsalStatus
from dbmigrate.api.schema import (
    APPROVAL_ANNOTATION,
    DNS_SUBDOMAIN,
    GROUP,
    KIND,
    MIGRATION_ID,
    PLURAL,
    ROLLBACK_ANNOTATION,
    ROLLBACK_REQUESTED,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    Duration,
    Model,
    cel_rules,
)
from dbmigrate.api.status import (
    TERMINAL_PHASES,
    AnalysisStatus,
    ArgoCDRollbackStatus,
    BackfillProgress,
    Condition,
    DatabaseMeasurements,
    DatabaseMigrationStatus,
    LintFinding,
    Measurement,
    Phase,
    RollbackStatus,
    StepStatus,
    Verdict,
)
from dbmigrate.api.steps import PodTemplate, SecretKeyRef, Step

__all__ = [
    "APPROVAL_ANNOTATION",
    "GROUP",
    "KIND",
    "PLURAL",
    "ROLLBACK_ANNOTATION",
    "ROLLBACK_REQUESTED",
    "SHORT_NAMES",
    "SINGULAR",
    "TERMINAL_PHASES",
    "VERSION",
    "Analysis",
    "AnalysisStatus",
    "ArgoCDRollbackStatus",
    "BackfillProgress",
    "Backup",
    "Checklist",
    "Condition",
    "DatabaseMeasurements",
    "DatabaseMigration",
    "DatabaseMigrationSpec",
    "DatabaseMigrationStatus",
    "LintFinding",
    "Measurement",
    "Metric",
    "Model",
    "Phase",
    "PodTemplate",
    "PostDeploy",
    "PostDeployStatus",
    "PrometheusRef",
    "Rehearsal",
    "RehearsalStatus",
    "RollbackStatus",
    "Safety",
    "Step",
    "StepStatus",
    "Verdict",
]


class Database(Model):
    """The PostgreSQL database the migration runs against."""

    dsn_secret_ref: Annotated[
        SecretKeyRef,
        Field(
            description=(
                "Secret key holding a libpq DSN (URI or key=value). The DSN is never logged "
                "and never copied into status, events, metrics or Job arguments."
            )
        ),
    ]


class Target(Model):
    """The application whose rollout gates every step."""

    deployment: Annotated[
        str | None,
        Field(
            default=None,
            max_length=253,
            pattern=DNS_SUBDOMAIN,
            description=(
                "Deployment in the same namespace. Before every step it must be fully rolled "
                "out (the `kubectl rollout status` rule); on rollback its pre-migration "
                "revision is restored."
            ),
        ),
    ]


class ArgoCD(Model):
    pause_auto_sync: Annotated[
        bool,
        Field(
            default=True,
            description="Switch off automated sync of the Argo CD Application tracking the "
            "target before undoing its rollout (self-heal would re-apply the bad version), "
            "and end a sync operation of it that is still running (its retries would too).",
        ),
    ]
    resume_auto_sync: Annotated[
        Literal["Never", "OnRevert"],
        Field(
            default="Never",
            description="OnRevert: switch the Application's automated sync back on, as it "
            "was, once its Git revision has moved on, no longer holds this migration and "
            "declares the target as the rollback left it (the release was reverted in Git). "
            "Never: a person switches it back on; the AutoSyncPaused condition says how.",
        ),
    ]


class Rollback(Model):
    policy: Annotated[
        Literal["Automatic", "Manual"],
        Field(
            default="Automatic",
            description=(
                f"Manual: stop in Failed and wait for the {ROLLBACK_ANNOTATION} annotation."
            ),
        ),
    ]
    undo_rollout: Annotated[
        bool | None,
        Field(
            default=None,
            description="Undo the target's rollout; defaults to true when "
            "target.deployment is set.",
        ),
    ]
    argo_cd: Annotated[ArgoCD, Field(default_factory=ArgoCD, alias="argoCD")]


LOCK_TIMEOUT_BOUNDS = ("10ms", "10m")
STATEMENT_TIMEOUT_BOUNDS = ("100ms", "24h")
MAX_BLOCKED_DURATION_BOUNDS = ("100ms", "10m")


class Safety(Model):
    """Bounded: a lock_timeout of 0 would switch the lock safety off, and a spec must not be
    able to ask for a statement that may run for days."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": "!has(self.lockTimeout) || "
                f"(duration(self.lockTimeout) >= duration('{LOCK_TIMEOUT_BOUNDS[0]}') && "
                f"duration(self.lockTimeout) <= duration('{LOCK_TIMEOUT_BOUNDS[1]}'))",
                "message": f"safety.lockTimeout must be between {LOCK_TIMEOUT_BOUNDS[0]} and "
                f"{LOCK_TIMEOUT_BOUNDS[1]}",
            },
            {
                "rule": "!has(self.statementTimeout) || "
                "duration(self.statementTimeout) == duration('0s') || "
                f"(duration(self.statementTimeout) >= duration('{STATEMENT_TIMEOUT_BOUNDS[0]}') "
                f"&& duration(self.statementTimeout) <= "
                f"duration('{STATEMENT_TIMEOUT_BOUNDS[1]}'))",
                "message": "safety.statementTimeout must be 0s (none) or between "
                f"{STATEMENT_TIMEOUT_BOUNDS[0]} and {STATEMENT_TIMEOUT_BOUNDS[1]}",
            },
            {
                "rule": "!has(self.maxBlockedDuration) || "
                "(duration(self.maxBlockedDuration) >= "
                f"duration('{MAX_BLOCKED_DURATION_BOUNDS[0]}') && "
                "duration(self.maxBlockedDuration) <= "
                f"duration('{MAX_BLOCKED_DURATION_BOUNDS[1]}'))",
                "message": "safety.maxBlockedDuration must be between "
                f"{MAX_BLOCKED_DURATION_BOUNDS[0]} and {MAX_BLOCKED_DURATION_BOUNDS[1]}",
            },
        )
    )

    lock_timeout: Annotated[
        Duration,
        Field(
            default="1s",
            description="SET lock_timeout for every DDL attempt (10ms to 10m).",
        ),
    ]
    lock_retries: Annotated[
        int,
        Field(
            default=30,
            ge=0,
            le=1000,
            description="Retries of SQLSTATE 55P03 (and of statements cancelled for blocking "
            "the application, see maxBlockedDuration) with exponential backoff and jitter "
            "(cap 30s).",
        ),
    ]
    statement_timeout: Annotated[
        Duration, Field(default="0s", description="0s means none; else 100ms to 24h.")
    ]
    max_blocked_duration: Annotated[
        Duration,
        Field(
            default="2s",
            description="While a step's statement or a backfill batch runs, other sessions "
            "waiting on its locks (directly or queued behind it) are watched; when one has "
            "waited longer than this, the statement is cancelled (its transaction rolls back) "
            "and retried with backoff, counting against lockRetries; a batch is retried at "
            "half its size. 100ms to 10m.",
        ),
    ]
    lint: Annotated[
        Literal["Enforce", "Warn", "Off"],
        Field(default="Enforce", description="Enforce: error findings block the migration."),
    ]

    @field_validator("lock_timeout")
    @classmethod
    def _lock_timeout_bounded(cls, value: str) -> str:
        check_within(value, LOCK_TIMEOUT_BOUNDS, "safety.lockTimeout")
        return value

    @field_validator("max_blocked_duration")
    @classmethod
    def _max_blocked_duration_bounded(cls, value: str) -> str:
        check_within(value, MAX_BLOCKED_DURATION_BOUNDS, "safety.maxBlockedDuration")
        return value

    @field_validator("statement_timeout")
    @classmethod
    def _statement_timeout_bounded(cls, value: str) -> str:
        if parse_duration(value) != 0:
            check_within(value, STATEMENT_TIMEOUT_BOUNDS, "safety.statementTimeout (or 0s: none)")
        return value


class DatabaseMigrationSpec(Model):
    """The desired migration."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": "self.steps.all(s, self.steps.filter(t, t.name == s.name).size() == 1)",
                "message": "step names must be unique",
                "fieldPath": ".steps",
            },
            {
                "rule": "!self.steps.exists(s, has(s.awaitRollout)) || "
                "(has(self.target) && has(self.target.deployment))",
                "message": "awaitRollout steps need target.deployment",
                "fieldPath": ".target",
            },
            {
                "rule": "!has(self.checklist) || !has(self.checklist.require) || "
                "!('Monitoring' in self.checklist.require) || has(self.analysis)",
                "message": "checklist item Monitoring needs spec.analysis",
                "fieldPath": ".checklist.require",
            },
            {
                "rule": "!has(self.checklist) || !has(self.checklist.require) || "
                "!('Rehearsal' in self.checklist.require) || has(self.rehearsal)",
                "message": "checklist item Rehearsal needs spec.rehearsal",
                "fieldPath": ".checklist.require",
            },
            {
                "rule": "!has(self.checklist) || !has(self.checklist.require) || "
                "!('Backup' in self.checklist.require) || has(self.backup)",
                "message": "checklist item Backup needs spec.backup",
                "fieldPath": ".checklist.require",
            },
            {
                "rule": "!has(self.postDeploy) || !has(self.postDeploy.cleanup) || "
                "!self.postDeploy.cleanup.exists(c, self.steps.exists(s, s.name == c.name))",
                "message": "a cleanup step must not have the name of a step",
                "fieldPath": ".postDeploy.cleanup",
            },
        )
    )

    migration_id: Annotated[
        str,
        Field(
            pattern=MIGRATION_ID,
            max_length=200,
            description="{timestamp}_{description}: the identity of the migration in the "
            "database's history table. Immutable.",
            json_schema_extra=cel_rules(
                {"rule": "self == oldSelf", "message": "migrationId is immutable"}
            ),
        ),
    ]
    database: Annotated[
        Database,
        Field(
            json_schema_extra=cel_rules(
                {"rule": "self == oldSelf", "message": "database is immutable"}
            ),
        ),
    ]
    target: Target | None = None
    steps: Annotated[
        list[Step],
        Field(
            min_length=1,
            max_length=50,
            description="Run in order.",
            json_schema_extra=cel_rules(
                {"rule": "self == oldSelf", "message": "steps are immutable"}
            ),
        ),
    ]
    analysis: Analysis | None = None
    rehearsal: Annotated[
        Rehearsal | None,
        Field(
            default=None,
            description="Rehearse the migration on a scratch copy of the database (schema and "
            "sample rows) before the first step: up, verify, down, the schema compared with "
            "the start, up again. A failed rehearsal stops the migration before it touches "
            "the real database.",
        ),
    ]
    rollback: Annotated[Rollback, Field(default_factory=Rollback)]
    safety: Annotated[Safety, Field(default_factory=Safety)]
    backup: Annotated[
        Backup | None,
        Field(
            default=None,
            description="Take a verified pg_dump before the first step or before the point of "
            "no return; a failed backup stops the migration before that step (BackupFailed).",
        ),
    ]
    pod_template: Annotated[
        PodTemplate | None,
        Field(
            default=None,
            description="What may be set on the pods of backfill and tool Jobs.",
        ),
    ]
    suspend: Annotated[
        bool, Field(default=False, description="Finish the running step, then wait.")
    ]
    checklist: Annotated[
        Checklist | None,
        Field(
            default=None,
            description="The pre-deployment checklist items the first step waits for "
            "(status.checklist shows them all).",
        ),
    ]

    post_deploy: Annotated[
        PostDeploy | None,
        Field(
            default=None,
            description="After the migration succeeded: watch the migrated tables' queries "
            "and new indexes for a while (the seed's first 24 hours), then run cleanup SQL.",
        ),
    ]

    @model_validator(mode="after")
    def _cleanup_names_are_not_step_names(self) -> DatabaseMigrationSpec:
        cleanup = self.post_deploy.cleanup if self.post_deploy else None
        names = {s.name for s in self.steps}
        for c in cleanup or []:
            if c.name in names:
                raise ValueError(f"cleanup step {c.name!r} has the name of a step")
        return self

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def undo_rollout_enabled(self) -> bool:
        if self.rollback.undo_rollout is not None:
            return self.rollback.undo_rollout and self.target_deployment is not None
        return self.target_deployment is not None

    @property
    def target_deployment(self) -> str | None:
        return self.target.deployment if self.target else None


class DatabaseMigration(Model):
    """The whole resource, as read from the API server or a YAML file."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DatabaseMigrationSpec
    status: DatabaseMigrationStatus = Field(default_factory=DatabaseMigrationStatus)

"""Pydantic models of the DatabaseMigration resource (dbmigrate.io/v1alpha1).

These models are the single source of the CRD schema: `dbmigrate.api.crd` renders
`crds/dbmigrate.io_databasemigrations.yaml` from them, including the CEL rules attached here
with `x-kubernetes-validations`, and a test keeps the checked-in file identical to the rendering.
Field names, defaults and meanings follow ../shared/design/API.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from dbmigrate.api.durations import Duration, parse_duration

GROUP = "dbmigrate.io"
VERSION = "v1alpha1"
KIND = "DatabaseMigration"
PLURAL = "databasemigrations"
SINGULAR = "databasemigration"
SHORT_NAMES = ("dbm", "dbmig")

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
MIGRATION_ID = r"^[0-9]{14}_[a-z0-9_]+$"
QUALIFIED_TABLE = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"
ROLLBACK_ANNOTATION = "dbmigrate.io/rollback"
ROLLBACK_REQUESTED = "requested"
# Inline SQL is part of the object (etcd stores it whole, every pass lints it): larger migrations
# keep their SQL in a ConfigMap (upFrom / downFrom).
MAX_INLINE_SQL = 65536


def _rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The resource form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------------------------
# spec


class SecretKeyRef(_Model):
    """A key of a Secret in the DatabaseMigration's own namespace."""

    name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")]
    key: Annotated[str, Field(max_length=253, pattern=CONFIG_KEY, description="Key in the Secret.")]


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the DatabaseMigration's own namespace."""

    name: Annotated[
        str, Field(max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name.")
    ]
    key: Annotated[
        str, Field(max_length=253, pattern=CONFIG_KEY, description="Key in the ConfigMap.")
    ]


class SqlFrom(_Model):
    """Where SQL text is read from when it is not inline."""

    config_map_key_ref: ConfigMapKeyRef


class Database(_Model):
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


class Target(_Model):
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


class SqlStep(_Model):
    """SQL run from the operator with lock-safe execution."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "has(self.up) != has(self.upFrom)",
                "message": "exactly one of sql.up and sql.upFrom must be set",
            },
            {
                "rule": "!(has(self.down) && has(self.downFrom))",
                "message": "sql.down and sql.downFrom are mutually exclusive",
            },
        )
    )

    up: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=MAX_INLINE_SQL,
            description="SQL for the forward direction (up to 64 KiB; more: upFrom).",
        ),
    ]
    up_from: Annotated[
        SqlFrom | None, Field(default=None, description="Read the forward SQL from a ConfigMap.")
    ]
    down: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            max_length=MAX_INLINE_SQL,
            description="Reverse SQL (up to 64 KiB; more: downFrom). A step without down SQL "
            "is irreversible.",
        ),
    ]
    down_from: Annotated[
        SqlFrom | None, Field(default=None, description="Read the reverse SQL from a ConfigMap.")
    ]
    transaction: Annotated[
        Literal["Auto", "Always", "Never"],
        Field(
            default="Auto",
            description=(
                "Auto: one transaction, except statements that cannot run in one (CREATE/DROP "
                "INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM, ...) which run alone. "
                "Always: all statements in one transaction. Never: each statement on its own."
            ),
        ),
    ]


class Backfill(_Model):
    """A batched data backfill, run as a Kubernetes Job of the operator's image."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "self.maxBatchSize >= self.batchSize",
                "message": "backfill.maxBatchSize must be at least backfill.batchSize",
            },
        )
    )

    table: Annotated[
        str,
        Field(
            pattern=QUALIFIED_TABLE,
            max_length=127,
            description="[schema.]table; it must have a primary key (composite allowed).",
        ),
    ]
    set: Annotated[
        str,
        Field(min_length=1, description="SQL assignment list, e.g. `a = expr, b = expr`."),
    ]
    where: Annotated[
        str | None, Field(default=None, min_length=1, description="SQL predicate: rows to touch.")
    ]
    batch_size: Annotated[int, Field(default=1000, ge=1, description="Starting batch size.")]
    max_batch_size: Annotated[int, Field(default=100000, ge=1, description="Largest batch size.")]
    target_batch_duration: Annotated[
        Duration, Field(default="500ms", description="The batch size adapts towards this.")
    ]
    pause: Annotated[Duration, Field(default="0s", description="Sleep between batches.")]
    parallelism: Annotated[
        int,
        Field(
            default=1,
            ge=1,
            le=16,
            description="Key ranges worked on by that many pods (an Indexed Job).",
        ),
    ]


class AwaitRollout(_Model):
    """Wait for the target Deployment's new version to roll out."""

    image: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            description="Wait until the target's pod template has this image AND the rollout "
            "is complete.",
        ),
    ]
    timeout: Annotated[Duration, Field(default="30m", description="Then the step fails.")]


class EnvVarSource(_Model):
    secret_key_ref: SecretKeyRef | None = None
    config_map_key_ref: ConfigMapKeyRef | None = None


class EnvVar(_Model):
    name: Annotated[str, Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]
    value: str | None = None
    value_from: EnvVarSource | None = None


class ToolJob(_Model):
    """Run any image (alembic, prisma, flyway, knex, django) as a Job."""

    image: Annotated[str, Field(min_length=1, description="Container image.")]
    command: Annotated[list[str] | None, Field(default=None, description="Entrypoint.")]
    args: Annotated[list[str] | None, Field(default=None, description="Arguments.")]
    env: Annotated[
        list[EnvVar] | None,
        Field(default=None, description="Environment; use valueFrom.secretKeyRef for secrets."),
    ]
    backoff_limit: Annotated[
        int, Field(default=1, ge=0, le=10, description="Retries of a failed pod.")
    ]
    timeout: Annotated[
        Duration,
        Field(
            default="1h",
            description="The Job's activeDeadlineSeconds: past it, its pod is stopped and the "
            "step fails.",
        ),
    ]


_OPEN_OBJECT: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


class PodTemplate(_Model):
    """What may be set on the pods of the migration's Jobs (backfill and tool steps).

    Everything else stays the operator's: the pods meet the restricted Pod Security Standard
    (non-root, RuntimeDefault seccomp, no privilege escalation, every capability dropped) and
    get no ServiceAccount token unless `automountServiceAccountToken` asks for one. Labels and
    annotations are added to the operator's own, never replace them.
    """

    service_account_name: Annotated[
        str | None,
        Field(
            default=None,
            max_length=253,
            pattern=DNS_SUBDOMAIN,
            description="The pods' ServiceAccount (workload identity).",
        ),
    ]
    automount_service_account_token: Annotated[
        bool, Field(default=False, description="Mount the ServiceAccount's token in the pods.")
    ]
    run_as_user: Annotated[
        int | None,
        Field(
            default=None,
            ge=1,
            description="The user a tool image runs as, when the image itself says root.",
        ),
    ]
    resources: Annotated[
        dict[str, Any] | None,
        Field(
            default=None,
            description="The container's resources (requests, limits).",
            json_schema_extra=_OPEN_OBJECT,
        ),
    ]
    node_selector: dict[str, str] | None = None
    tolerations: Annotated[
        list[dict[str, Any]] | None,
        Field(default=None, json_schema_extra={"items": {"type": "object", **_OPEN_OBJECT}}),
    ]
    affinity: Annotated[dict[str, Any] | None, Field(default=None, json_schema_extra=_OPEN_OBJECT)]
    priority_class_name: Annotated[
        str | None, Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    ]
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Step(_Model):
    """One step of the migration: exactly one of sql, backfill, awaitRollout, job."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "[has(self.sql), has(self.backfill), has(self.awaitRollout), "
                "has(self.job)].filter(x, x).size() == 1",
                "message": "exactly one of sql, backfill, awaitRollout, job must be set",
            },
            {
                "rule": "!has(self.verify) || has(self.sql) || has(self.job)",
                "message": "verify is only allowed on sql and job steps",
            },
        )
    )

    name: Annotated[str, Field(max_length=63, pattern=DNS_LABEL, description="Step name.")]
    sql: SqlStep | None = None
    backfill: Backfill | None = None
    await_rollout: AwaitRollout | None = None
    job: ToolJob | None = None
    verify: Annotated[
        str | None,
        Field(
            default=None,
            min_length=1,
            description="SQL returning one boolean, run after the step; false or error fails it.",
        ),
    ]
    point_of_no_return: Annotated[
        bool,
        Field(
            default=False,
            description="Once this step succeeded, automatic database rollback is refused.",
        ),
    ]

    @property
    def kind(self) -> Literal["sql", "backfill", "awaitRollout", "job"]:
        if self.sql is not None:
            return "sql"
        if self.backfill is not None:
            return "backfill"
        if self.await_rollout is not None:
            return "awaitRollout"
        return "job"

    @property
    def reversible(self) -> bool:
        """Whether rolling back can undo it: SQL with down SQL, and every backfill (its columns
        go with the down SQL of the step that added them) and rollout gate (undone by undoing
        the rollout); a tool job's own down migration is not something dbmigrate can run."""
        if self.sql is not None:
            return self.sql.down is not None or self.sql.down_from is not None
        return self.kind != "job"


class PrometheusRef(_Model):
    address: Annotated[
        str,
        Field(pattern=r"^https?://.+", max_length=2048, description="Prometheus HTTP API URL."),
    ]


class Metric(_Model):
    """One PromQL query and its thresholds."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "has(self.max) || has(self.min) || has(self.maxRatioToBaseline)",
                "message": "each analysis metric needs at least one of max, min, "
                "maxRatioToBaseline",
            },
        )
    )

    name: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]
    query: Annotated[str, Field(min_length=1, description="PromQL instant query.")]
    max: Annotated[float | None, Field(default=None, description="Fail when value > max.")]
    min: Annotated[float | None, Field(default=None, description="Fail when value < min.")]
    max_ratio_to_baseline: Annotated[
        float | None,
        Field(
            default=None,
            gt=0,
            description="Fail when value > ratio x baseline (the query over baselineWindow "
            "ending when the migration started).",
        ),
    ]


class Analysis(_Model):
    """SLO analysis in Prometheus while the migration is active."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            {
                "rule": "self.metrics.all(m, self.metrics.filter(n, n.name == m.name).size() == 1)",
                "message": "analysis metric names must be unique",
            },
        )
    )

    prometheus: PrometheusRef
    interval: Annotated[Duration, Field(default="30s")]
    failure_limit: Annotated[
        int,
        Field(
            default=2, ge=1, description="Consecutive failed measurements that trigger rollback."
        ),
    ]
    inconclusive_limit: Annotated[
        int,
        Field(
            default=3,
            ge=1,
            description="Consecutive empty/NaN/error results before onInconclusive applies.",
        ),
    ]
    on_inconclusive: Annotated[Literal["Pause", "Rollback", "Ignore"], Field(default="Pause")]
    baseline_window: Annotated[Duration, Field(default="10m")]
    settle: Annotated[
        Duration,
        Field(default="5m", description="Keep analysing after the last step before Succeeded."),
    ]
    metrics: Annotated[list[Metric], Field(min_length=1, max_length=20)]


class ArgoCD(_Model):
    pause_auto_sync: Annotated[
        bool,
        Field(
            default=True,
            description="Switch off automated sync of the Argo CD Application tracking the "
            "target before undoing its rollout (self-heal would re-apply the bad version).",
        ),
    ]


class Rollback(_Model):
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


class Safety(_Model):
    """Bounded: a lock_timeout of 0 would switch the lock safety off, and a spec must not be
    able to ask for a statement that may run for days."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
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
            description="Retries of SQLSTATE 55P03 with exponential backoff and jitter (cap 30s).",
        ),
    ]
    statement_timeout: Annotated[
        Duration, Field(default="0s", description="0s means none; else 100ms to 24h.")
    ]
    lint: Annotated[
        Literal["Enforce", "Warn", "Off"],
        Field(default="Enforce", description="Enforce: error findings block the migration."),
    ]

    @field_validator("lock_timeout")
    @classmethod
    def _lock_timeout_bounded(cls, value: str) -> str:
        _within(value, LOCK_TIMEOUT_BOUNDS, "safety.lockTimeout")
        return value

    @field_validator("statement_timeout")
    @classmethod
    def _statement_timeout_bounded(cls, value: str) -> str:
        if parse_duration(value) != 0:
            _within(value, STATEMENT_TIMEOUT_BOUNDS, "safety.statementTimeout (or 0s: none)")
        return value


def _within(value: str, bounds: tuple[str, str], what: str) -> None:
    low, high = bounds
    if not parse_duration(low) <= parse_duration(value) <= parse_duration(high):
        raise ValueError(f"{what} must be between {low} and {high}, not {value}")


class DatabaseMigrationSpec(_Model):
    """The desired migration."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
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
        )
    )

    migration_id: Annotated[
        str,
        Field(
            pattern=MIGRATION_ID,
            max_length=200,
            description="{timestamp}_{description}: the identity of the migration in the "
            "database's history table. Immutable.",
            json_schema_extra=_rules(
                {"rule": "self == oldSelf", "message": "migrationId is immutable"}
            ),
        ),
    ]
    database: Annotated[
        Database,
        Field(
            json_schema_extra=_rules(
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
            json_schema_extra=_rules({"rule": "self == oldSelf", "message": "steps are immutable"}),
        ),
    ]
    analysis: Analysis | None = None
    rollback: Annotated[Rollback, Field(default_factory=Rollback)]
    safety: Annotated[Safety, Field(default_factory=Safety)]
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


# ---------------------------------------------------------------------------------------------
# status

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


class _Status(_Model):
    model_config = ConfigDict(extra="ignore")


class BackfillProgress(_Status):
    rows_done: int = 0
    rows_estimated: int | None = None
    percent: int | None = None
    rows_per_second: int | None = None
    eta: str | None = None


class StepStatus(_Status):
    name: str
    state: StepState = "Pending"
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    lock_retries: int = 0
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
    value: float | None = None
    threshold: str | None = None
    result: Verdict
    message: str | None = None
    at: str | None = None


class AnalysisStatus(_Status):
    baseline: dict[str, float] | None = None
    consecutive_failures: int = 0
    consecutive_inconclusive: int = 0
    last: list[Measurement] | None = None
    last_measured_at: str | None = None


class ArgoCDRollbackStatus(_Status):
    application: str | None = None
    namespace: str | None = None
    auto_sync_paused: bool = False
    message: str | None = None


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
    argo_cd: ArgoCDRollbackStatus | None = Field(default=None, alias="argoCD")


class LintFinding(_Status):
    step: str | None = None
    rule: str
    severity: Literal["error", "warning"]
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
    lint: list[LintFinding] | None = None
    plan: str | None = None
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


class DatabaseMigration(_Model):
    """The whole resource, as read from the API server or a YAML file."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DatabaseMigrationSpec
    status: DatabaseMigrationStatus = Field(default_factory=DatabaseMigrationStatus)

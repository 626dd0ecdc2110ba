"""The steps of a DatabaseMigration (`spec.steps[]`): sql, backfill, awaitRollout, job, the
references they read SQL and environment from, and the narrow pod template of their Jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema

from dbmigrate.api.schema import (
    CONFIG_KEY,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_INLINE_SQL,
    QUALIFIED_TABLE,
    Duration,
    Model,
    cel_rules,
)
from dbmigrate.api.worker import MAX_PARALLELISM


class SecretKeyRef(Model):
    """A key of a Secret in the DatabaseMigration's own namespace."""

    name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")]
    key: Annotated[str, Field(max_length=253, pattern=CONFIG_KEY, description="Key in the Secret.")]


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the DatabaseMigration's own namespace."""

    name: Annotated[
        str, Field(max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name.")
    ]
    key: Annotated[
        str, Field(max_length=253, pattern=CONFIG_KEY, description="Key in the ConfigMap.")
    ]


class SqlFrom(Model):
    """Where SQL text is read from when it is not inline."""

    config_map_key_ref: ConfigMapKeyRef


class SqlStep(Model):
    """SQL run from the operator with lock-safe execution."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
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


class Backfill(Model):
    """A batched data backfill, run as a Kubernetes Job of the operator's image."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
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
        Annotated[int, Field(ge=1, le=MAX_PARALLELISM, strict=True)] | Literal["auto"],
        Field(default=1),
        WithJsonSchema(
            {
                "x-kubernetes-int-or-string": True,
                "default": 1,
                # Bounds the CEL rule's cost estimate (a string of unknown length is costly).
                "maxLength": 4,
                "description": (
                    f"Key slices worked on by that many pods (an Indexed Job), 1 to "
                    f"{MAX_PARALLELISM}; `auto`: chosen when the step starts, from the table's "
                    "size (a worker per million rows), at most the server's "
                    "max_parallel_workers_per_gather + 1, and 1 when `pause` is set. Slices "
                    "hold about as many rows each."
                ),
                **cel_rules(
                    {
                        "rule": "type(self) == int ? (self >= 1 && self <= "
                        f"{MAX_PARALLELISM}) : self == 'auto'",
                        "message": f"backfill.parallelism must be 1 to {MAX_PARALLELISM}, or auto",
                    }
                ),
            }
        ),
    ]


class AwaitRollout(Model):
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


class EnvVarSource(Model):
    secret_key_ref: SecretKeyRef | None = None
    config_map_key_ref: ConfigMapKeyRef | None = None


class EnvVar(Model):
    name: Annotated[str, Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]
    value: str | None = None
    value_from: EnvVarSource | None = None


class ToolJob(Model):
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


class PodTemplate(Model):
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


class Step(Model):
    """One step of the migration: exactly one of sql, backfill, awaitRollout, job."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
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

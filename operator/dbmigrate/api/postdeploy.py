"""What happens after the last step (the seed's Phase 6): the post-deployment watch of the
migrated tables' queries and new indexes (`spec.postDeploy`), the cleanup SQL that runs when the
watch is over, and what the operator reports of both (`status.postDeploy`).

The migration is `Succeeded` once its steps are done and its analysis settled; the watch keeps
its runner going, with a `Watching` condition, until `watch` has passed. It compares the
`pg_stat_statements` statements that touch the migrated tables with a snapshot taken before the
first step (mean time of the calls since the snapshot against the mean before it), and counts
the scans of the indexes the migration created. Then the `cleanup` steps run, under the
migration lock and the same lock safety as any step.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from dbmigrate.api.durations import check_within
from dbmigrate.api.schema import DNS_LABEL, MAX_INLINE_SQL, Duration, Model, cel_rules

WATCH_BOUNDS = ("10s", "720h")
INTERVAL_BOUNDS = ("1s", "1h")

OnRegression = Literal["Report", "Rollback"]
FindingKind = Literal["QueryRegression", "UnusedIndex"]
PostDeployState = Literal["Watching", "CleaningUp", "Finished", "RolledBack", "Failed", "Skipped"]


class CleanupStep(Model):
    """SQL that runs once the watch is over (drop a staging table, VACUUM): it has no down SQL,
    since nothing after the watch rolls back."""

    name: Annotated[str, Field(max_length=63, pattern=DNS_LABEL, description="Step name.")]
    sql: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_INLINE_SQL,
            description="Run like a step's up SQL: linted, with lockTimeout and retries, the "
            "blocking guard, and a history row.",
        ),
    ]


class PostDeploy(Model):
    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": f"duration(self.watch) >= duration('{WATCH_BOUNDS[0]}') && "
                f"duration(self.watch) <= duration('{WATCH_BOUNDS[1]}')",
                "message": f"postDeploy.watch must be between {WATCH_BOUNDS[0]} and "
                f"{WATCH_BOUNDS[1]}",
            },
            {
                "rule": "!has(self.interval) || "
                f"(duration(self.interval) >= duration('{INTERVAL_BOUNDS[0]}') && "
                f"duration(self.interval) <= duration('{INTERVAL_BOUNDS[1]}'))",
                "message": f"postDeploy.interval must be between {INTERVAL_BOUNDS[0]} and "
                f"{INTERVAL_BOUNDS[1]}",
            },
            {
                "rule": "!has(self.cleanup) || self.cleanup.all(s, "
                "self.cleanup.filter(t, t.name == s.name).size() == 1)",
                "message": "cleanup step names must be unique",
                "fieldPath": ".cleanup",
            },
        )
    )

    watch: Annotated[
        Duration,
        Field(
            description="How long to watch after the migration succeeded (10s to 720h), e.g. "
            "24h: the seed's first day.",
        ),
    ]
    interval: Annotated[
        Duration, Field(default="1m", description="How often to sample (1s to 1h).")
    ]
    max_query_regression: Annotated[
        float,
        Field(
            default=2.0,
            ge=1.1,
            le=100.0,
            description="A statement whose mean time since the snapshot is this many times "
            "its mean before the first step is a regression (2: the seed's latency trigger).",
        ),
    ]
    min_calls: Annotated[
        int,
        Field(
            default=20,
            ge=1,
            le=1_000_000,
            description="Calls since the snapshot before a statement's mean is judged.",
        ),
    ]
    on_regression: Annotated[
        OnRegression,
        Field(
            default="Report",
            description="Report: an event, a metric and a finding. Rollback: also roll the "
            "migration back, as an SLO breach does, while it is before its point of no return.",
        ),
    ]
    cleanup: Annotated[
        list[CleanupStep] | None,
        Field(
            default=None,
            max_length=20,
            description="SQL run in order when the watch is over.",
        ),
    ]

    @field_validator("watch")
    @classmethod
    def _watch_bounded(cls, value: str) -> str:
        check_within(value, WATCH_BOUNDS, "postDeploy.watch")
        return value

    @field_validator("interval")
    @classmethod
    def _interval_bounded(cls, value: str) -> str:
        check_within(value, INTERVAL_BOUNDS, "postDeploy.interval")
        return value


# --- status --------------------------------------------------------------------------------------


class _Status(Model):
    model_config = ConfigDict(extra="ignore")


class WatchedStatement(_Status):
    """A pg_stat_statements entry that touches a migrated table."""

    queryid: str
    query: str  # the normalized text, cut to 200 characters
    calls: int  # since the snapshot
    mean_ms: float  # of the calls since the snapshot
    max_ms: float  # pg_stat_statements' max (since its last reset)
    baseline_mean_ms: float | None = None  # before the first step; None: a new statement
    ratio: float | None = None


class WatchedIndex(_Status):
    """An index the migration created, and how often it was scanned since."""

    name: str
    table: str
    scans: int


class Finding(_Status):
    kind: FindingKind
    message: str
    at: str
    queryid: str | None = None
    index: str | None = None


class CleanupStepStatus(_Status):
    name: str
    state: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None


class PostDeployStatus(_Status):
    state: PostDeployState = "Watching"
    started_at: str | None = None
    ends_at: str | None = None
    finished_at: str | None = None
    last_sampled_at: str | None = None
    # False: pg_stat_statements is not installed in the database (only indexes are watched)
    statements_available: bool | None = None
    message: str | None = None
    statements: list[WatchedStatement] | None = None
    indexes: list[WatchedIndex] | None = None
    findings: list[Finding] | None = None
    cleanup: list[CleanupStepStatus] | None = None

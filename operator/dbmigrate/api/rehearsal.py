"""The rehearsal of a migration on a scratch copy of its database: `spec.rehearsal` (where and
how) and `status.rehearsal` (what the rehearsal found).

Before the first step touches the real database, the operator creates a scratch database,
copies the real database's schema and a sample of the rows of the tables the migration touches
into it, and runs the migration there: up, every verify, down of every reversible step, a
schema comparison with the start, and up again (`docs/rehearsal.md`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.schema import Duration, Model, cel_rules
from dbmigrate.api.steps import SecretKeyRef

MAX_SAMPLE_ROWS = 1_000_000
TIMEOUT_BOUNDS = ("1m", "24h")
# status.rehearsal stays small (etcd keeps it whole): a long schema diff is cut.
MAX_DIFF_LINES = 50

RehearsalResult = Literal["Passed", "Failed"]
RehearsalPhase = Literal["up", "verify", "down", "reapply"]


class Rehearsal(Model):
    """Rehearse the migration on a scratch copy before the first step runs for real."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            {
                "rule": "!has(self.timeout) || "
                f"(duration(self.timeout) >= duration('{TIMEOUT_BOUNDS[0]}') && "
                f"duration(self.timeout) <= duration('{TIMEOUT_BOUNDS[1]}'))",
                "message": f"rehearsal.timeout must be between {TIMEOUT_BOUNDS[0]} and "
                f"{TIMEOUT_BOUNDS[1]}",
            },
        )
    )

    dsn_secret_ref: Annotated[
        SecretKeyRef | None,
        Field(
            default=None,
            description=(
                "Secret key holding a libpq DSN of another server (a staging server) to "
                "rehearse on. The scratch database is created there, the same way as on the "
                "migration's own server (the default): the server's own databases are never "
                "changed. Either way the role needs CREATEDB."
            ),
        ),
    ]
    sample_rows: Annotated[
        int,
        Field(
            default=1000,
            ge=0,
            le=MAX_SAMPLE_ROWS,
            description=(
                "Rows copied from each table the migration touches (and the tables they "
                "reference); 0 copies the schema only. Rows whose foreign key targets were "
                "not copied are left out."
            ),
        ),
    ]
    timeout: Annotated[
        Duration,
        Field(
            default="15m",
            description="The whole rehearsal's limit (1m to 24h); past it, it failed.",
        ),
    ]

    @field_validator("timeout")
    @classmethod
    def _timeout_bounded(cls, value: str) -> str:
        low, high = TIMEOUT_BOUNDS
        if not parse_duration(low) <= parse_duration(value) <= parse_duration(high):
            raise ValueError(f"rehearsal.timeout must be between {low} and {high}, not {value}")
        return value


class _Status(Model):
    model_config = ConfigDict(extra="ignore")


class RehearsalStep(_Status):
    """One step in one phase of the rehearsal."""

    step: str
    phase: RehearsalPhase
    seconds: float
    result: Literal["Succeeded", "Failed"]
    message: str | None = None


class RehearsalSkip(_Status):
    """A step the rehearsal did not run, and why."""

    step: str
    why: str


class RehearsalTable(_Status):
    """A table whose rows were copied into the scratch database."""

    table: str
    rows: int


class RehearsalStatus(_Status):
    """What the rehearsal found. Absent until one finished (a crash mid-rehearsal leaves it
    absent, and the next pass rehearses again)."""

    result: RehearsalResult
    # The spec's generation it was made for: a failed rehearsal is tried again once the spec
    # changes (a longer timeout, other sample rows); the steps themselves cannot change.
    generation: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    database: str | None = None  # the scratch database's name (never a DSN)
    rows_copied: int = 0
    tables: list[RehearsalTable] | None = None
    steps: list[RehearsalStep] | None = None
    up_only: list[str] | None = None  # past the point of no return: checked up only
    skipped: list[RehearsalSkip] | None = None
    schema_diff: list[str] | None = None  # when down did not restore the starting schema
    message: str | None = None

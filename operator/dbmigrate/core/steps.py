"""A step as it runs: its SQL resolved from ConfigMaps, its checksum, its execution limits.

Pure: what the history table records for a step (`step_checksum`) and how long its statements
may wait for locks and run (`limits_of`) follow from the spec and the resolved SQL alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import DatabaseMigrationSpec, Step
from dbmigrate.core.statements import checksum


@dataclass(frozen=True)
class ResolvedSql:
    """A sql step's statements, inline or read from a ConfigMap."""

    up: str
    down: str | None


@dataclass(frozen=True)
class ExecutionLimits:
    """How the executor runs a step's statements."""

    lock_timeout: float  # seconds
    lock_retries: int
    statement_timeout: float  # seconds; 0 = none
    # seconds another session may wait on a statement of ours before it is cancelled; 0 = none
    max_blocked_duration: float = 0.0


def limits_of(spec: DatabaseMigrationSpec) -> ExecutionLimits:
    return ExecutionLimits(
        lock_timeout=parse_duration(spec.safety.lock_timeout),
        lock_retries=spec.safety.lock_retries,
        statement_timeout=parse_duration(spec.safety.statement_timeout),
        max_blocked_duration=parse_duration(spec.safety.max_blocked_duration),
    )


def step_checksum(step: Step, sql: dict[str, ResolvedSql]) -> str:
    """What the history table records for a step's forward direction."""
    if step.sql is not None:
        resolved = sql.get(step.name)
        return checksum(resolved.up if resolved else step.sql.up, step.verify)
    if step.backfill is not None:
        bf = step.backfill
        return checksum(f"UPDATE {bf.table} SET {bf.set} WHERE {bf.where or 'true'}")
    if step.job is not None:
        return checksum(
            " ".join([step.job.image, *(step.job.command or []), *(step.job.args or [])]),
            step.verify,
        )
    return checksum(f"-- awaitRollout {step.await_rollout.image if step.await_rollout else ''}")

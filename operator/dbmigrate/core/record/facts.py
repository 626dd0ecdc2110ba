"""The facts a migration's record is written from, gathered from its spec and final status.

Everything here was measured or recorded while the migration ran (status.steps, status.analysis,
status.rollback, status.backup, status.postDeploy); nothing is estimated. The rendering
(`core.record.markdown`) only arranges these facts, and `run_steps` turns them into the
`steps` column of `dbmigrate.runs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from dbmigrate.api.backup import BackupStatus
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.api.postdeploy import PostDeployStatus
from dbmigrate.api.status import DatabaseMeasurements, RollbackStatus

Outcome = Literal["Succeeded", "RolledBack", "Failed"]
# The message `core.decide` records for a step an earlier run applied (the history table has it).
FOUND_IN_HISTORY = "found in history"


@dataclass(frozen=True)
class StepFacts:
    number: int  # 1-based, in the spec's order
    name: str
    kind: str  # sql, backfill, awaitRollout, job
    state: str  # the step's final state in status
    started_at: str | None
    finished_at: str | None
    seconds: float | None  # finished - started, when both were recorded
    rows: int | None  # rows the backfill wrote (backfill steps only)
    lock_retries: int
    blocking_episodes: int
    attempts: int
    point_of_no_return: bool
    reversible: bool  # rolling back can undo it (down SQL, a backfill, a rollout gate)
    has_down_sql: bool
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class MetricFacts:
    """One SLO metric: its baseline and its last measurement."""

    metric: str
    baseline: float | None
    value: float | None
    threshold: str | None
    result: str | None  # Successful, Failed, Inconclusive; None: never measured
    at: str | None
    message: str | None


@dataclass(frozen=True)
class RecordFacts:
    migration_id: str
    resource: str  # namespace/name of the DatabaseMigration, or "dbmigrate apply"
    outcome: Outcome
    reason: str | None  # the final condition's reason (SloBreached, RolledBack, ...)
    message: str | None
    started_at: str | None
    finished_at: str | None
    seconds: float | None
    target_revision: str | None
    steps: tuple[StepFacts, ...]
    analysed: bool  # the spec has an analysis
    metrics: tuple[MetricFacts, ...]
    database: DatabaseMeasurements | None
    current_step: str | None  # the step under way when the migration stopped
    rollback: RollbackStatus | None  # only a rollback that started (not a refused request)
    backup: BackupStatus | None
    post_deploy: PostDeployStatus | None

    @property
    def applied(self) -> tuple[StepFacts, ...]:
        """Steps still applied at the end (succeeded and not reverted)."""
        return tuple(s for s in self.steps if s.state == "Succeeded")

    @property
    def nothing_ran(self) -> bool:
        """Every step was applied by an earlier run (a repeated `dbmigrate apply`): this run
        has nothing of its own to record."""
        return bool(self.steps) and all(
            s.state == "Succeeded" and (s.message or "").startswith(FOUND_IN_HISTORY)
            for s in self.steps
        )

    @property
    def rows_backfilled(self) -> int | None:
        rows = [s.rows for s in self.steps if s.rows is not None]
        return sum(rows) if rows else None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_between(start: str | None, end: str | None) -> float | None:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return None
    return max(0.0, (ended - began).total_seconds())


def gather_facts(
    spec: DatabaseMigrationSpec,
    status: DatabaseMigrationStatus,
    *,
    resource: str,
    outcome: Outcome,
    reason: str | None = None,
    message: str | None = None,
) -> RecordFacts:
    """The record's facts; `reason`/`message` default to the Ready condition's."""
    ready = status.condition("Ready")
    steps = []
    for number, step in enumerate(spec.steps, start=1):
        st = status.step(step.name)
        backfill = st.backfill if st is not None else None
        steps.append(
            StepFacts(
                number=number,
                name=step.name,
                kind=step.kind,
                state=st.state if st is not None else "Pending",
                started_at=st.started_at if st is not None else None,
                finished_at=st.finished_at if st is not None else None,
                seconds=seconds_between(st.started_at, st.finished_at) if st else None,
                rows=backfill.rows_done if step.kind == "backfill" and backfill else None,
                lock_retries=st.lock_retries if st is not None else 0,
                blocking_episodes=st.blocking_episodes if st is not None else 0,
                attempts=st.attempts if st is not None else 0,
                point_of_no_return=step.point_of_no_return,
                reversible=step.reversible,
                has_down_sql=step.sql is not None
                and (step.sql.down is not None or step.sql.down_from is not None),
                reason=st.reason if st is not None else None,
                message=st.message if st is not None else None,
            )
        )
    rollback = status.rollback
    return RecordFacts(
        migration_id=spec.migration_id,
        resource=resource,
        outcome=outcome,
        reason=reason if reason is not None else (ready.reason if ready else None),
        message=message if message is not None else (ready.message if ready else None),
        started_at=status.started_at,
        finished_at=status.finished_at,
        seconds=seconds_between(status.started_at, status.finished_at),
        target_revision=status.target_revision,
        steps=tuple(steps),
        analysed=spec.analysis is not None,
        metrics=_metrics(spec, status),
        database=status.analysis.database if status.analysis else None,
        current_step=status.current_step,
        rollback=rollback if rollback is not None and rollback.started_at else None,
        backup=status.backup,
        post_deploy=status.post_deploy,
    )


def _metrics(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus
) -> tuple[MetricFacts, ...]:
    analysis = status.analysis
    baseline = (analysis.baseline if analysis else None) or {}
    last = {m.metric: m for m in (analysis.last if analysis else None) or []}
    names = [m.name for m in spec.analysis.metrics] if spec.analysis else []
    names += [n for n in [*baseline, *last] if n not in names]
    out = []
    for name in names:
        m = last.get(name)
        out.append(
            MetricFacts(
                metric=name,
                baseline=baseline.get(name),
                value=m.value if m else None,
                threshold=m.threshold if m else None,
                result=m.result if m else None,
                at=m.at if m else None,
                message=m.message if m else None,
            )
        )
    return tuple(out)


def run_steps(facts: RecordFacts, up_sql: dict[str, str]) -> list[dict[str, Any]]:
    """The `steps` column of `dbmigrate.runs`; `sql` is the resolved up SQL of sql steps.

    The keys are read by `dbmigrate docs` (which migration added a column): keep them.
    """
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "state": s.state,
            "startedAt": s.started_at,
            "finishedAt": s.finished_at,
            "seconds": s.seconds,
            "rows": s.rows,
            "lockRetries": s.lock_retries,
            "blockingEpisodes": s.blocking_episodes,
            "sql": up_sql.get(s.name) if s.kind == "sql" else None,
        }
        for s in facts.steps
    ]

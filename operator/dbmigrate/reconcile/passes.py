"""One pass of a migration's runner as the effects see it: `Pass` (what was seen, the status
being written), the `Reporter` that writes that status and posts events with the DSN redacted,
and the runner's database session (`StepDatabase`) as the effects use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from dbmigrate.api import reasons
from dbmigrate.api.models import (
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    StepStatus,
)
from dbmigrate.api.steps import Backfill
from dbmigrate.core import decide as d
from dbmigrate.core import slo
from dbmigrate.core.conditions import set_conditions
from dbmigrate.core.status import count_progress, status_patch
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.core.watch import WatchBaseline
from dbmigrate.db.errors import redact_dsn
from dbmigrate.db.executor import StepResult
from dbmigrate.db.runs import RunRecord
from dbmigrate.metrics import registry as metrics
from dbmigrate.reconcile.platform import Platform
from dbmigrate.settings import Settings


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(step: StepStatus | None) -> float:
    if step is None or not step.started_at:
        return 0.0
    started = datetime.fromisoformat(step.started_at.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - started).total_seconds())


class StepDatabase(Protocol):
    """The runner's session as the effects use it: apply SQL under the migration lock."""

    async def apply_sql(self, **step: Any) -> StepResult:
        """`db.executor.apply_sql` on the session's connection (same keyword arguments)."""
        ...

    async def release_lock(self) -> None: ...

    async def backfill_workers(self, checkpoint: str, backfill: Backfill) -> tuple[int, str]:
        """The workers a backfill step runs with (`parallelism: auto` resolved), and why."""
        ...

    async def analyze(self, table: str, lock_timeout: float) -> str | None:
        """ANALYZE the table after its backfill (`db.statistics`); None when done, else why
        not."""
        ...

    async def take_watch_baseline(
        self, migration_id: str, uid: str, tables: tuple[str, ...], indexes: tuple[str, ...]
    ) -> WatchBaseline:
        """The post-deployment watch's snapshot before the first step (`db.watch`)."""
        ...

    async def write_run(self, run: RunRecord) -> None:
        """Upsert the migration's row of `dbmigrate.runs` (`db.runs.write_run`)."""
        ...


@dataclass
class EventMemory:
    """What the runner remembers between passes: the last wait it posted an event for (a wait
    is shown in status every pass but posted as an event once), and how often in a row a
    rehearsal could not run."""

    last_wait: tuple[str, str] | None = None
    rehearsal_failures: int = 0  # rehearsals in a row that could not run (their backoff)


@dataclass
class Reporter:
    """Writes the status and posts the events of one migration, the DSN redacted."""

    platform: Platform
    generation: int
    dsn: str | None = None
    memory: EventMemory = field(default_factory=EventMemory)

    async def save(
        self,
        status: DatabaseMigrationStatus,
        reason: str,
        message: str,
        *,
        stalled: bool = False,
        recount: bool = True,
    ) -> None:
        if recount:
            status.progress = count_progress(status)
        else:
            status.progress = status.progress or f"0/{len(status.steps or [])}"
        set_conditions(
            status,
            reason=reason,
            message=redact_dsn(message, self.dsn),
            generation=self.generation,
            now=now_iso(),
            stalled=stalled,
        )
        metrics.MIGRATIONS.set(
            self.platform.namespace, self.platform.name, status.phase or "Pending"
        )
        await self.platform.write_status(status_patch(status))

    async def event(self, type_: str, reason: str, message: str) -> None:
        await self.platform.event(type_, reason, redact_dsn(message, self.dsn))

    async def report_wait(self, status: DatabaseMigrationStatus, wait: d.Wait) -> None:
        """A Wait in status every pass; as an event when its reason or step changes."""
        status = status.model_copy(deep=True)
        status.phase = wait.phase
        if wait.step:
            status.current_step = wait.step
            st = status.step(wait.step)
            if st is not None and wait.step_waiting:
                st.state = "Waiting"
                st.started_at = st.started_at or now_iso()
                st.message = wait.message
        await self.save(status, wait.reason, wait.message, stalled=wait.stalled, recount=False)
        key = (wait.reason, wait.step or "")
        if key != self.memory.last_wait:
            self.memory.last_wait = key
            await self.event("Warning" if wait.stalled else "Normal", wait.reason, wait.message)

    async def verdict_changes(self, changes: tuple[slo.VerdictChange, ...]) -> None:
        for change in changes:
            failed = change.current.result != slo.SUCCESSFUL
            await self.event(
                "Warning" if failed else "Normal", reasons.ANALYSIS_VERDICT, change.message
            )


@dataclass
class Pass:
    """One pass: what was seen, and the status being written as the action is carried out."""

    report: Reporter
    database: StepDatabase
    settings: Settings
    body: dict[str, Any]
    spec: DatabaseMigrationSpec
    status: DatabaseMigrationStatus
    obs: d.Observation
    sql: dict[str, ResolvedSql]

    def step_status(self, name: str) -> StepStatus:
        st = self.status.step(name)
        assert st is not None  # the status lists every step of the spec (with_step_list)
        return st

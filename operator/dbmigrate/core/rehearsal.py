"""The rehearsal, decided: when a migration is rehearsed, what the rehearsal runs in which
order, and the scratch database's name.

Pure. `rehearsal_gate` is the one place `core.decide` asks about the rehearsal before the
migration starts; `plan_rehearsal` says which steps go up and down (steps before the point of
no return make the round trip, the rest are checked up only) and which are not rehearsed
(`awaitRollout`: no rollout on a copy; `job`: container images need the cluster). The database
work is `db.rehearsal`'s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, Step
from dbmigrate.core.actions import Action, Observation, Rehearse, Wait

SCRATCH_PREFIX = "dbmigrate_rehearsal_"
# PostgreSQL identifiers are at most 63 bytes.
MAX_IDENTIFIER = 63

SKIP_AWAIT_ROLLOUT = "awaitRollout: there is no rollout to wait for on a scratch copy"
SKIP_JOB = "job: its container image runs on the cluster, not in a rehearsal"


def scratch_database_name(namespace: str, name: str, migration_id: str) -> str:
    """The scratch database of one migration: the same name every time (a rehearsal that died
    finds its leftover and drops it), never the name of anything else."""
    digest = hashlib.sha256(f"{namespace}/{name}/{migration_id}".encode()).hexdigest()[:20]
    return (SCRATCH_PREFIX + digest)[:MAX_IDENTIFIER]


@dataclass(frozen=True)
class RehearsalPlan:
    """What the rehearsal runs: `round_trip` up (then their verifies), down in reverse, the
    schema compared; then every runnable step up again (`reapply`)."""

    round_trip: tuple[Step, ...]
    reapply: tuple[Step, ...]
    up_only: tuple[str, ...]  # past the point of no return: up only
    skipped: tuple[tuple[str, str], ...]  # (step, why)
    # Why the round trip cannot come back down (a step without down SQL before the point of
    # no return): the rehearsal fails there, as a rollback would.
    irreversible: str | None = None


def runnable(step: Step) -> bool:
    """Whether the rehearsal runs the step (sql and backfill steps)."""
    return step.kind in ("sql", "backfill")


def plan_rehearsal(spec: DatabaseMigrationSpec) -> RehearsalPlan:
    steps = list(spec.steps)
    ponr = next((i for i, s in enumerate(steps) if s.point_of_no_return), len(steps))
    skipped = tuple(
        (s.name, SKIP_AWAIT_ROLLOUT if s.kind == "awaitRollout" else SKIP_JOB)
        for s in steps
        if not runnable(s)
    )
    round_trip = tuple(s for s in steps[:ponr] if runnable(s))
    irreversible = next(
        (s for s in round_trip if s.sql is not None and not s.reversible),
        None,
    )
    why = None
    if irreversible is not None:
        where = (
            f"before the point of no return ({steps[ponr].name!r})"
            if ponr < len(steps)
            else "and no step is marked pointOfNoReturn"
        )
        why = (
            f"step {irreversible.name!r} has no down SQL {where}: the rehearsal cannot come "
            "back down, and neither could a rollback; give it down SQL, or mark it (or an "
            "earlier step) pointOfNoReturn"
        )
    return RehearsalPlan(
        round_trip=round_trip,
        reapply=tuple(s for s in steps if runnable(s)),
        up_only=tuple(s.name for s in steps[ponr:] if runnable(s)),
        skipped=skipped,
        irreversible=why,
    )


def rehearsal_gate(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action | None:
    """Before the start: rehearse (once per spec generation while it fails), stop on a failed
    rehearsal, or go on (None) once it passed or when there is none to do.

    A migration whose steps the history table already knows (its status was lost) is not
    rehearsed: the copy would be of a database it has partly changed."""
    if spec.rehearsal is None or status.started_at is not None:
        return None
    done = status.rehearsal
    if done is not None and done.result == "Passed":
        return None
    if rehearsal_failed(status, obs.generation):
        assert done is not None
        return Wait(
            "Failed",
            reasons.REHEARSAL_FAILED,
            f"the rehearsal on a scratch copy failed: {done.message or 'see status.rehearsal'}; "
            "nothing ran on the real database (steps cannot change: fix them in a new "
            "migration; a changed spec.rehearsal rehearses again)",
            stalled=True,
            requeue_after=60.0,
        )
    if obs.applied or not obs.lock_held:
        return None  # the history decides; or the lock wait comes first
    return Rehearse()


def rehearsal_failed(status: DatabaseMigrationStatus, generation: int) -> bool:
    """The migration stopped before its start on a failed rehearsal of this generation (it
    then leaves the database's migration lock to others, as a lint-blocked one does)."""
    done = status.rehearsal
    return (
        status.started_at is None
        and done is not None
        and done.result == "Failed"
        and done.generation == generation
    )


def rehearsal_pending(spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus) -> bool:
    """A rehearsal is configured and has not passed yet (it runs before anything else)."""
    done = status.rehearsal
    return (
        spec.rehearsal is not None
        and status.started_at is None
        and (done is None or done.result != "Passed")
    )

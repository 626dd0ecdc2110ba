"""The rollback half of the state machine: RollingBack, a Failed migration waiting for a person,
and a rollback requested after the migration finished.

Pure; `core.decide.decide` hands these phases over to the functions here.
"""

from __future__ import annotations

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, Phase, Step
from dbmigrate.core.actions import (
    ROLLBACK_BY_ANNOTATION,
    Action,
    FinishRollback,
    Observation,
    RefuseRollback,
    RevertStep,
    Start,
    StartRollback,
    StopJobs,
    UndoRollout,
    Wait,
    is_applied,
)
from dbmigrate.core.rollout import image_matches, revision_before_version


def decide_failed(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """Failed: a Manual policy waits for the annotation; anything else stays failed."""
    rolled = status.rollback is not None and status.rollback.started_at is not None
    if obs.rollback_requested and not rolled:
        return StartRollback(reasons.ROLLBACK_REQUESTED, ROLLBACK_BY_ANNOTATION)
    ready = status.condition(reasons.READY)
    return Wait(
        "Failed",
        (ready.reason if ready and ready.reason else reasons.ROLLBACK_FAILED),
        (ready.message if ready and ready.message else "migration failed"),
        stalled=True,
        requeue_after=60.0,
    )


def steps_to_revert(spec: DatabaseMigrationSpec, obs: Observation) -> list[Step]:
    """Applied (or partly applied) steps, newest first."""
    return [
        s
        for s in reversed(spec.steps)
        if is_applied(obs, s.name) or s.name in obs.partially_applied
    ]


def past_point_of_no_return(spec: DatabaseMigrationSpec, obs: Observation) -> Step | None:
    for s in spec.steps:
        if s.point_of_no_return and is_applied(obs, s.name):
            return s
    return None


def decide_finished_rollback(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """A rollback requested after the migration finished (the seed's Phase 5: the watch after
    the deployment found a problem): refused past the point of no return, else like any other
    rollback, but the rollout is undone only while the target still runs this migration's
    version (a later release is not ours to undo)."""
    waiting = _database_not_ready(obs, "Succeeded", "to roll back")
    if waiting is not None:
        return waiting
    pnr = past_point_of_no_return(spec, obs)
    if pnr is not None:
        return RefuseRollback(
            reasons.PAST_POINT_OF_NO_RETURN,
            f"rollback refused: step {pnr.name!r} is the point of no return and has been "
            "applied; roll forward or restore from backup",
        )
    return StartRollback(
        reasons.ROLLBACK_REQUESTED,
        f"{ROLLBACK_BY_ANNOTATION} after the migration finished",
        keep_rollout=rollout_to_keep(spec, obs),
    )


def migration_version(spec: DatabaseMigrationSpec) -> str | None:
    """The application version the migration goes with: the image its last awaitRollout step
    waits for (None: it waits for none)."""
    releases = [s.await_rollout.image for s in spec.steps if s.await_rollout is not None]
    return releases[-1] if releases else None


def start(spec: DatabaseMigrationSpec, obs: Observation) -> Start:
    """The start, with the revision a rollback undoes the target to: the one running now, or,
    when the target already runs the migration's version (Argo CD applied the Deployment in
    the same sync wave, or in an earlier one), the newest revision before that version."""
    dep = obs.deployment
    current = dep.revision if dep is not None else None
    version = migration_version(spec)
    if dep is None or version is None or not image_matches(dep.images, version):
        return Start(current)
    before = revision_before_version(obs.revisions, version)
    if before is None or before.revision == current:
        return Start(current)
    return Start(
        before.revision,
        note=f"revision {current} already runs {version}, this migration's version: a rollback "
        f"undoes it to revision {before.revision} ({', '.join(before.images) or 'no image'})",
    )


def rollout_to_keep(spec: DatabaseMigrationSpec, obs: Observation) -> str | None:
    """Why a finished migration's rollback leaves the rollout alone (None: undo it)."""
    if not obs.rollout_gates or not spec.undo_rollout_enabled:
        return None  # nothing would be undone anyway
    version = migration_version(spec)
    if version is None:
        return "the migration waited for no version of its own: the rollout is kept"
    if obs.deployment is None or obs.deployment_missing:
        return f"target deployment {spec.target_deployment!r} not found: the rollout is kept"
    if not image_matches(obs.deployment.images, version):
        return (
            f"the target runs {', '.join(obs.deployment.images) or 'no image'}, not the "
            f"migration's version {version}: the rollout is kept"
        )
    return None


def decide_rollback(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """RollingBack: stop the migration's running Jobs and wait until their pods are gone, undo
    the rollout to the recorded revision, then revert steps newest first."""
    running = tuple(j for j in obs.active_jobs if not j.deleting)
    if running:
        return StopJobs(running)
    if obs.active_jobs:
        pods = sum(j.pods for j in obs.active_jobs)
        names = ", ".join(j.name for j in obs.active_jobs)
        return Wait(
            "RollingBack",
            reasons.STOPPING_JOBS,
            f"waiting for job(s) {names} to stop ({pods} pod(s) left) before rolling back",
            requeue_after=1.0,
        )
    rb = status.rollback
    deployment = spec.target_deployment
    if (
        obs.rollout_gates
        and spec.undo_rollout_enabled
        and deployment is not None
        and status.target_revision is not None
        and not (rb is not None and (rb.rollout_undone or rb.rollout_kept))
    ):
        if obs.deployment_missing:
            return FinishRollback(
                "Failed",
                reasons.ROLLBACK_FAILED,
                f"cannot undo the rollout: deployment {deployment!r} not found",
            )
        return UndoRollout(deployment, status.target_revision)
    if rb is not None and rb.rollout_undone and obs.deployment is not None:
        if obs.deployment.failed:
            return FinishRollback(
                "Failed",
                reasons.ROLLBACK_FAILED,
                f"rollout undo did not complete: {obs.deployment.message}",
            )
        if not obs.deployment.complete:
            return Wait(
                "RollingBack",
                reasons.WAITING_FOR_ROLLOUT,
                f"rollout undone to revision {status.target_revision}; {obs.deployment.message}",
                requeue_after=2.0,
            )

    pnr = past_point_of_no_return(spec, obs)
    if pnr is not None:
        undone = " (the rollout was undone)" if rb is not None and rb.rollout_undone else ""
        return FinishRollback(
            "Failed",
            reasons.PAST_POINT_OF_NO_RETURN,
            f"database rollback refused: step {pnr.name!r} is the point of no return and has "
            f"been applied{undone}; roll forward or restore from backup",
        )
    waiting = _database_not_ready(obs, "RollingBack", "to revert steps")
    if waiting is not None:
        return waiting
    for step in steps_to_revert(spec, obs):
        if not step.reversible:
            return FinishRollback(
                "Failed",
                reasons.IRREVERSIBLE_STEP,
                f"step {step.name!r} has no down migration; the rollback stopped before it "
                "(steps after it were reverted)",
            )
        return RevertStep(step.name)
    return FinishRollback("RolledBack", reasons.ROLLED_BACK, rolled_back_message(status))


def rolled_back_message(status: DatabaseMigrationStatus) -> str:
    """The Ready message of a finished rollback: why it happened and what it undid (Argo CD
    shows it as the migration's Degraded health, `kubectl get` as its message)."""
    rb = status.rollback
    if rb is None:
        return "rollback complete"
    why = f" ({rb.trigger})" if rb.trigger else ""
    parts = [f"rolled back{why}: {rb.reason}" if rb.reason else f"rolled back{why}"]
    if rb.rollout_undone and rb.undone_to_revision:
        parts.append(f"rollout undone to revision {rb.undone_to_revision}")
    elif rb.rollout_kept:
        parts.append(rb.rollout_kept)
    reverted = len(rb.steps_reverted or [])
    parts.append(f"{reverted} step(s) reverted" if reverted else "no step to revert")
    return "; ".join(parts)


def _database_not_ready(obs: Observation, phase: Phase, purpose: str) -> Wait | None:
    """A rollback needs the database and its migration lock: wait while either is missing."""
    if obs.problem is not None:
        return Wait(phase, obs.problem.reason, obs.problem.message, requeue_after=10.0)
    if not obs.lock_held:
        return Wait(
            phase,
            reasons.ANOTHER_MIGRATION_RUNNING,
            f"waiting for the database's migration lock {purpose}",
            requeue_after=5.0,
        )
    return None

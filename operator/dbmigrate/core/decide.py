"""The migration state machine: `decide(spec, status, observation) -> Action`.

Pure. The reconciler observes the world (history table, Deployment, Jobs, analysis verdicts,
annotations), calls `decide`, carries out the one Action it returns, records the outcome in
status and calls `decide` again. The database's history table is the truth about which steps are
applied; status is the operator's report. Every branch is covered by the tables of cases in
tests/unit/test_decide.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from dbmigrate.api import reasons
from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import (
    ROLLBACK_ANNOTATION,
    ROLLBACK_REQUESTED,
    TERMINAL_PHASES,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    LintFinding,
    Phase,
    Step,
)
from dbmigrate.core.rollout import RolloutState, image_matches

Direction = Literal["up", "down"]
ANNOTATE_TO_ROLL_BACK = f"annotate {ROLLBACK_ANNOTATION}={ROLLBACK_REQUESTED} to roll back"
ROLLBACK_BY_ANNOTATION = f"rollback requested with the {ROLLBACK_ANNOTATION} annotation"

# ------------------------------------------------------------------------------------------------
# observation


@dataclass(frozen=True)
class AppliedStep:
    """The latest history row of a step."""

    direction: Direction
    checksum: str


@dataclass(frozen=True)
class JobState:
    """The Job named in a step's status (or by `core.jobs.job_name`).

    `foreign_owner` is set (to a description of its owner, or "no owner") when a Job of that
    name exists but its ownerReference is not this DatabaseMigration's uid: it is somebody
    else's Job, and nothing about it says anything about this migration's step.
    """

    name: str
    active: int = 0
    succeeded: bool = False
    failed: bool = False
    message: str | None = None
    foreign_owner: str | None = None


@dataclass(frozen=True)
class ActiveJob:
    """A Job of this migration (its uid in the ownerReference) that has not finished, or whose
    deletion is under way: its pods may still run a backfill batch or a tool."""

    name: str
    uid: str
    deleting: bool = False  # deleted (foreground): waiting for its pods to go
    pods: int = 0  # pods that still exist


@dataclass(frozen=True)
class ConfigProblem:
    """Something the operator could not read: retried, shown in status until it is fixed."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    now: datetime
    generation: int = 1
    # history table: step name -> latest row; steps with statements committed but not finished
    applied: dict[str, AppliedStep] = field(default_factory=dict)
    partially_applied: frozenset[str] = frozenset()
    # checksum of each step as the spec defines it now (ConfigMap SQL resolved)
    checksums: dict[str, str] = field(default_factory=dict)
    lock_held: bool = True
    deployment: RolloutState | None = None
    deployment_missing: bool = False
    jobs: dict[str, JobState] = field(default_factory=dict)
    # While rolling back: the migration's Jobs that still run (or are being deleted).
    active_jobs: tuple[ActiveJob, ...] = ()
    problem: ConfigProblem | None = None
    lint_errors: int = 0  # error findings (they block the start under safety.lint Enforce)
    lint_findings: tuple[LintFinding, ...] = ()  # all findings, for status.lint
    rollback_requested: bool = False
    # False where there is no cluster (`dbmigrate apply`): no gates, awaitRollout is skipped
    rollout_gates: bool = True
    slo_breach: str | None = None  # reason text when analysis says roll back
    analysis_pause: str | None = None  # reason text when analysis says pause


# ------------------------------------------------------------------------------------------------
# actions


@dataclass(frozen=True)
class Wait:
    """Nothing to do now; show why and look again later."""

    phase: Phase
    reason: str
    message: str
    step: str | None = None
    stalled: bool = False
    requeue_after: float = 5.0
    step_waiting: bool = False  # the step itself is under way and waiting (awaitRollout)


@dataclass(frozen=True)
class Start:
    """First pass: record startedAt and the target's revision (rollback goes back to it)."""

    target_revision: str | None


@dataclass(frozen=True)
class RunStep:
    """Apply a step (sql: run it now; backfill/job: create its Job; awaitRollout: done)."""

    step: str


@dataclass(frozen=True)
class RecordStep:
    """The step is done (history shows it, a Job completed, a rollout arrived): write history
    if it is not there yet and mark the step Succeeded."""

    step: str
    write_history: bool
    message: str = ""


@dataclass(frozen=True)
class FailStep:
    step: str
    reason: str
    message: str
    rollback: bool  # the rollback policy is Automatic


@dataclass(frozen=True)
class AwaitManualRollback:
    """The rollback policy is Manual: stop in Failed until a person asks for the rollback."""

    reason: str
    message: str


@dataclass(frozen=True)
class StartRollback:
    reason: str  # condition reason: SloBreached, RollbackRequested, a step failure reason
    message: str
    keep_rollout: str | None = None  # why the rollout is not to be undone (a finished migration)


@dataclass(frozen=True)
class RefuseRollback:
    """A finished migration past its point of no return: the requested rollback is refused and
    the migration stays Succeeded."""

    reason: str
    message: str


@dataclass(frozen=True)
class StopJobs:
    """Delete the migration's running Jobs (foreground: their pods go first) before the
    rollback changes anything, so that no backfill batch races the down SQL."""

    jobs: tuple[ActiveJob, ...]


@dataclass(frozen=True)
class UndoRollout:
    deployment: str
    to_revision: str


@dataclass(frozen=True)
class RevertStep:
    """Run the step's down SQL (none for backfill/awaitRollout) and record a `down` row."""

    step: str


@dataclass(frozen=True)
class FinishRollback:
    phase: Literal["RolledBack", "Failed"]
    reason: str
    message: str


@dataclass(frozen=True)
class Succeed:
    message: str


@dataclass(frozen=True)
class Done:
    """Terminal: nothing more will happen to this migration."""


Action = (
    Wait
    | Start
    | RunStep
    | RecordStep
    | FailStep
    | AwaitManualRollback
    | StartRollback
    | RefuseRollback
    | StopJobs
    | UndoRollout
    | RevertStep
    | FinishRollback
    | Succeed
    | Done
)


# ------------------------------------------------------------------------------------------------
# helpers


def is_applied(obs: Observation, step: str) -> bool:
    row = obs.applied.get(step)
    return row is not None and row.direction == "up"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _rollout_gate(spec: DatabaseMigrationSpec, obs: Observation, step: Step) -> Wait | None:
    """No step starts while the target Deployment is mid-rollout (awaitRollout handles itself)."""
    name = spec.target_deployment
    if name is None or step.kind == "awaitRollout" or not obs.rollout_gates:
        return None
    if obs.deployment_missing or obs.deployment is None:
        return Wait(
            "Waiting",
            reasons.DEPLOYMENT_NOT_FOUND,
            f"target deployment {name!r} not found",
            step=step.name,
            stalled=True,
            requeue_after=10.0,
        )
    if obs.deployment.failed:
        return Wait(
            "Waiting",
            reasons.ROLLOUT_FAILED,
            f"{obs.deployment.message}; step {step.name!r} waits for a healthy rollout",
            step=step.name,
            stalled=True,
            requeue_after=10.0,
        )
    if not obs.deployment.complete:
        return Wait(
            "Waiting",
            reasons.WAITING_FOR_ROLLOUT,
            f"{obs.deployment.message}; step {step.name!r} starts when it completes",
            step=step.name,
            requeue_after=2.0,
        )
    return None


def is_active(status: DatabaseMigrationStatus, rollback_requested: bool) -> bool:
    """Whether anything more will happen to the migration: not in a terminal phase, or
    Succeeded with a rollback requested that has not been answered yet."""
    phase = status.phase or "Pending"
    if phase not in TERMINAL_PHASES:
        return True
    return phase == "Succeeded" and rollback_requested and status.rollback is None


def fail_step(spec: DatabaseMigrationSpec, step: str, reason: str, message: str) -> FailStep:
    """A step failure; the rollback policy says whether the rollback starts by itself."""
    return FailStep(step, reason, message, rollback=spec.rollback.policy == "Automatic")


# ------------------------------------------------------------------------------------------------
# decide


def decide(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """The next thing to do for this migration."""
    phase = status.phase or "Pending"
    if phase == "Succeeded" and is_active(status, obs.rollback_requested):
        return _decide_finished_rollback(spec, status, obs)
    if phase in TERMINAL_PHASES:
        return Done()
    if phase == "RollingBack":
        return decide_rollback(spec, status, obs)
    if phase == "Failed" and status.started_at is not None:
        return _decide_failed(spec, status, obs)

    if obs.rollback_requested:
        return StartRollback(reasons.ROLLBACK_REQUESTED, ROLLBACK_BY_ANNOTATION)
    if obs.slo_breach is not None and status.started_at is not None:
        if spec.rollback.policy == "Automatic":
            return StartRollback(reasons.SLO_BREACHED, obs.slo_breach)
        return AwaitManualRollback(
            reasons.SLO_BREACHED,
            f"{obs.slo_breach}; rollback policy is Manual: {ANNOTATE_TO_ROLL_BACK}",
        )

    if obs.lint_errors and spec.safety.lint == "Enforce" and status.started_at is None:
        return Wait(
            "Failed",
            reasons.LINT_FAILED,
            f"{obs.lint_errors} lint error(s) block the migration before anything runs "
            "(see status.lint; fix the SQL, suppress with -- dbmigrate:ignore <rule> <why>, "
            "or set safety.lint: Warn)",
            stalled=True,
            requeue_after=60.0,
        )
    if obs.problem is not None:
        return Wait(
            "Pending" if status.started_at is None else "Waiting",
            obs.problem.reason,
            obs.problem.message,
            stalled=obs.problem.reason != reasons.DATABASE_UNREACHABLE,
            requeue_after=10.0,
        )
    if not obs.lock_held:
        return Wait(
            "Waiting",
            reasons.ANOTHER_MIGRATION_RUNNING,
            "another migration holds this database's migration lock; waiting for it to finish",
            requeue_after=5.0,
        )

    for step in spec.steps:
        row = obs.applied.get(step.name)
        expected = obs.checksums.get(step.name)
        if row is not None and expected is not None and row.checksum != expected:
            return Wait(
                "Failed" if status.started_at else "Pending",
                reasons.CHECKSUM_MISMATCH,
                f"step {step.name!r} was applied with checksum {row.checksum[:12]} but its SQL "
                f"now has checksum {expected[:12]}: an applied step must not be edited; create a "
                "new migration instead",
                step=step.name,
                stalled=True,
                requeue_after=60.0,
            )
        st = status.step(step.name)
        pinned = st.checksum if st is not None else None
        if pinned and expected and pinned != expected and not is_applied(obs, step.name):
            return Wait(
                "Failed",
                reasons.CHECKSUM_MISMATCH,
                f"step {step.name!r} changed since the migration started: it had checksum "
                f"{pinned[:12]}, its SQL now has checksum {expected[:12]}; a running "
                "migration's steps must not be edited: restore the SQL, or roll back and "
                "create a new migration",
                step=step.name,
                stalled=True,
                requeue_after=60.0,
            )

    if status.started_at is None:
        revision = obs.deployment.revision if obs.deployment is not None else None
        if (
            obs.rollout_gates
            and spec.target_deployment is not None
            and (obs.deployment is None or obs.deployment_missing)
        ):
            return Wait(
                "Pending",
                reasons.DEPLOYMENT_NOT_FOUND,
                f"target deployment {spec.target_deployment!r} not found",
                stalled=True,
                requeue_after=10.0,
            )
        return Start(target_revision=revision)

    for step in spec.steps:
        if is_applied(obs, step.name):
            st = status.step(step.name)
            if st is None or st.state != "Succeeded":
                return RecordStep(step.name, write_history=False, message="found in history")
            continue
        return _decide_step(spec, status, obs, step)

    return _decide_finish(spec, status, obs)


def _decide_step(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation, step: Step
) -> Action:
    st = status.step(step.name)
    # Only a started step is past its gate; "Waiting" is an awaitRollout step under way.
    running = st is not None and st.state in ("Running", "Waiting")
    if st is not None and st.state == "Failed":
        # A failed step under a Manual policy stays failed until a person decides.
        return Wait(
            "Failed",
            st.reason or reasons.SQL_ERROR,
            st.message or f"step {step.name!r} failed",
            step=step.name,
            stalled=True,
            requeue_after=60.0,
        )
    if spec.suspend and not running:
        return Wait(
            "Suspended",
            reasons.SUSPENDED,
            f"suspended before step {step.name!r}; set spec.suspend to false to continue",
            step=step.name,
            requeue_after=30.0,
        )
    if obs.analysis_pause is not None and not running:
        return Wait(
            "Waiting",
            reasons.ANALYSIS_INCONCLUSIVE,
            f"{obs.analysis_pause}; paused before step {step.name!r}",
            step=step.name,
            requeue_after=5.0,
        )

    if step.kind == "awaitRollout":
        return _decide_await_rollout(spec, status, obs, step)

    if not running:
        gate = _rollout_gate(spec, obs, step)
        if gate is not None:
            return gate

    if step.kind in ("backfill", "job"):
        job = obs.jobs.get(step.name)
        if job is None:
            # Not created yet, or the Job we created is gone (deleted by a person): create it
            # (again); the worker resumes from its checkpoint.
            return RunStep(step.name)
        if job.foreign_owner is not None:
            # Our (hashed, uid-bound) name is taken by a Job we did not create: it is not
            # adopted and its outcome is not ours. Only a person can say what it is; once it is
            # deleted, the step creates its own Job.
            return Wait(
                "Waiting",
                reasons.JOB_NAME_CONFLICT,
                f"step {step.name!r}: job {job.name} exists but is not this migration's (owner: "
                f"{job.foreign_owner}); delete that job to let the step create its own",
                step=step.name,
                stalled=True,
                requeue_after=10.0,
            )
        if job.succeeded:
            return RecordStep(step.name, write_history=True, message=f"job {job.name} completed")
        if job.failed:
            return fail_step(
                spec,
                step.name,
                reasons.JOB_FAILED,
                f"job {job.name} failed: {job.message or 'no termination message'}",
            )
        return Wait(
            "Progressing",
            reasons.STEP_RUNNING,
            f"step {step.name!r}: job {job.name} running",
            step=step.name,
            requeue_after=2.0,
        )

    return RunStep(step.name)


def _decide_await_rollout(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation, step: Step
) -> Action:
    assert step.await_rollout is not None
    if not obs.rollout_gates:
        return RecordStep(
            step.name,
            write_history=True,
            message="skipped: no Kubernetes rollout to wait for here (dbmigrate apply)",
        )
    wanted = step.await_rollout.image
    st = status.step(step.name)
    started = _parse_time(st.started_at if st else None)
    timeout = parse_duration(step.await_rollout.timeout)
    name = spec.target_deployment or "?"
    if obs.deployment is None or obs.deployment_missing:
        state_msg = f"target deployment {name!r} not found"
    elif obs.deployment.failed:
        return fail_step(spec, step.name, reasons.ROLLOUT_FAILED, obs.deployment.message)
    elif obs.deployment.complete and image_matches(obs.deployment.images, wanted):
        return RecordStep(
            step.name,
            write_history=True,
            message=f"deployment {name!r} rolled out" + (f" with image {wanted}" if wanted else ""),
        )
    elif not image_matches(obs.deployment.images, wanted):
        state_msg = f"waiting for deployment {name!r} to be updated to image {wanted}"
    else:
        state_msg = obs.deployment.message
    if started is not None and (obs.now - started).total_seconds() > timeout:
        return fail_step(
            spec,
            step.name,
            reasons.ROLLOUT_TIMEOUT,
            f"{state_msg}: not done within {step.await_rollout.timeout}",
        )
    return Wait(
        "Waiting",
        reasons.WAITING_FOR_ROLLOUT,
        state_msg,
        step=step.name,
        requeue_after=2.0,
        step_waiting=True,
    )


def _decide_finish(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    if spec.analysis is not None:
        last_finished = max(
            (t for t in (_parse_time(s.finished_at) for s in status.steps or []) if t is not None),
            default=None,
        )
        settle = parse_duration(spec.analysis.settle)
        if last_finished is not None:
            remaining = settle - (obs.now - last_finished).total_seconds()
            if remaining > 0:
                return Wait(
                    "Progressing",
                    reasons.SETTLING,
                    f"all steps done; analysis keeps watching for {spec.analysis.settle} "
                    f"({round(remaining)}s left)",
                    requeue_after=min(remaining, 5.0),
                )
    return Succeed(f"all {len(spec.steps)} steps applied")


def _decide_failed(
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


# ------------------------------------------------------------------------------------------------
# rollback


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


def _decide_finished_rollback(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """A rollback requested after the migration finished (the seed's Phase 5: the watch after
    the deployment found a problem): refused past the point of no return, else like any other
    rollback, but the rollout is undone only while the target still runs this migration's
    version (a later release is not ours to undo)."""
    if obs.problem is not None:
        return Wait("Succeeded", obs.problem.reason, obs.problem.message, requeue_after=10.0)
    if not obs.lock_held:
        return Wait(
            "Succeeded",
            reasons.ANOTHER_MIGRATION_RUNNING,
            "waiting for the database's migration lock to roll back",
            requeue_after=5.0,
        )
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
        keep_rollout=_rollout_to_keep(spec, obs),
    )


def _rollout_to_keep(spec: DatabaseMigrationSpec, obs: Observation) -> str | None:
    """Why a finished migration's rollback leaves the rollout alone (None: undo it)."""
    if not obs.rollout_gates or not spec.undo_rollout_enabled:
        return None  # nothing would be undone anyway
    releases = [s.await_rollout.image for s in spec.steps if s.await_rollout is not None]
    version = releases[-1] if releases else None
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
    if obs.problem is not None:
        return Wait("RollingBack", obs.problem.reason, obs.problem.message, requeue_after=10.0)
    if not obs.lock_held:
        return Wait(
            "RollingBack",
            reasons.ANOTHER_MIGRATION_RUNNING,
            "waiting for the database's migration lock to revert steps",
            requeue_after=5.0,
        )
    for step in steps_to_revert(spec, obs):
        if not step.reversible:
            return FinishRollback(
                "Failed",
                reasons.IRREVERSIBLE_STEP,
                f"step {step.name!r} has no down migration; the rollback stopped before it "
                "(steps after it were reverted)",
            )
        return RevertStep(step.name)
    return FinishRollback("RolledBack", reasons.ROLLED_BACK, "rollback complete")

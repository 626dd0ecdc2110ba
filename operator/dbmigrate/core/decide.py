"""The migration state machine: `decide(spec, status, observation) -> Action`.

Pure. The reconciler observes the world (history table, Deployment, Jobs, analysis verdicts,
annotations), calls `decide`, carries out the one Action it returns, records the outcome in
status and calls `decide` again. The database's history table is the truth about which steps are
applied; status is the operator's report. This module decides the way forward; the Observation
and the Actions are in `core.actions`, the rollback phases in `core.rollback`. Every branch is
covered by the tables of cases in tests/unit/test_decide.py.
"""

from __future__ import annotations

from datetime import datetime

from dbmigrate.api import reasons
from dbmigrate.api.durations import parse_duration
from dbmigrate.api.models import (
    TERMINAL_PHASES,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    Step,
)
from dbmigrate.core.actions import (
    ANNOTATE_TO_ROLL_BACK,
    ROLLBACK_BY_ANNOTATION,
    Action,
    ActiveJob,
    AppliedStep,
    AwaitManualRollback,
    BackupRecord,
    ConfigProblem,
    Direction,
    Done,
    FailBackup,
    FailStep,
    FinishPostDeploy,
    FinishRollback,
    JobState,
    Observation,
    RecordBackup,
    RecordCleanup,
    RecordStep,
    RecordWatch,
    RefuseRollback,
    Rehearse,
    RevertStep,
    RunBackup,
    RunCleanup,
    RunStep,
    Start,
    StartRollback,
    StopJobs,
    Succeed,
    UndoRollout,
    Wait,
    fail_step,
    is_active,
    is_applied,
)
from dbmigrate.core.backup import backup_retry, decide_backup
from dbmigrate.core.checklist import missing_needs_a_new_spec, waiting_message
from dbmigrate.core.rehearsal import rehearsal_failed, rehearsal_gate, rehearsal_pending
from dbmigrate.core.rollback import (
    decide_failed,
    decide_finished_rollback,
    decide_rollback,
    past_point_of_no_return,
    start,
    steps_to_revert,
)
from dbmigrate.core.rollout import image_matches
from dbmigrate.core.watch import decide_post_deploy, watch_pending

__all__ = [
    "ANNOTATE_TO_ROLL_BACK",
    "ROLLBACK_BY_ANNOTATION",
    "Action",
    "ActiveJob",
    "AppliedStep",
    "AwaitManualRollback",
    "BackupRecord",
    "ConfigProblem",
    "Direction",
    "Done",
    "FailBackup",
    "FailStep",
    "FinishPostDeploy",
    "FinishRollback",
    "JobState",
    "Observation",
    "RecordBackup",
    "RecordCleanup",
    "RecordStep",
    "RecordWatch",
    "RefuseRollback",
    "Rehearse",
    "RevertStep",
    "RunBackup",
    "RunCleanup",
    "RunStep",
    "Start",
    "StartRollback",
    "StopJobs",
    "Succeed",
    "UndoRollout",
    "Wait",
    "decide",
    "decide_rollback",
    "fail_step",
    "holds_lock_before_start",
    "is_active",
    "is_applied",
    "past_point_of_no_return",
    "steps_to_revert",
]

# ------------------------------------------------------------------------------------------------
# helpers


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


def pre_start_gate(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action | None:
    """What holds the first step: first the rehearsal on a scratch copy (under the migration
    lock; a failed one stops the migration), then the required checklist items (waited for
    without the lock: a migration waiting for its approval must not keep other migrations of
    the database waiting)."""
    gate = rehearsal_gate(spec, status, obs)
    if gate is not None:
        return gate
    if status.started_at is not None or rehearsal_pending(spec, status):
        return None
    checklist = obs.checklist
    if checklist is not None and not checklist.complete:
        return Wait(
            "Waiting",
            reasons.CHECKLIST_INCOMPLETE,
            waiting_message(checklist),
            stalled=missing_needs_a_new_spec(checklist),
            requeue_after=30.0,
        )
    return None


def holds_lock_before_start(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> bool:
    """Whether a migration that has not started yet takes the lock this pass: to rehearse, and
    to start once nothing holds it; not after a failed rehearsal nor while the checklist waits."""
    if rehearsal_failed(status, obs.generation):
        return False
    if rehearsal_pending(spec, status):
        return True
    return obs.checklist is None or obs.checklist.complete


# ------------------------------------------------------------------------------------------------
# decide


def decide(
    spec: DatabaseMigrationSpec, status: DatabaseMigrationStatus, obs: Observation
) -> Action:
    """The next thing to do for this migration."""
    phase = status.phase or "Pending"
    if phase == "Succeeded" and obs.rollback_requested and status.rollback is None:
        return decide_finished_rollback(spec, status, obs)
    if phase == "Succeeded" and watch_pending(status):
        return decide_post_deploy(spec, status, obs)
    if phase in TERMINAL_PHASES:
        return Done()
    if phase == "RollingBack":
        return decide_rollback(spec, status, obs)
    if phase == "Failed" and status.started_at is not None and not backup_retry(status, obs):
        return decide_failed(spec, status, obs)

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

    gate = pre_start_gate(spec, status, obs)
    if gate is not None:
        return gate
    if not obs.lock_held:
        return Wait(
            "Waiting",
            reasons.ANOTHER_MIGRATION_RUNNING,
            "another migration holds this database's migration lock; waiting for it to finish",
            requeue_after=5.0,
        )

    if status.started_at is None:
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
        return start(spec, obs)

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

    if not running:
        backup = decide_backup(spec, status, obs, step)
        if backup is not None:
            return backup

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

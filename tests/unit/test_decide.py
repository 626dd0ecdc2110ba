"""The migration state machine, `core.decide.decide`: one case per state x event.

Aspects: start and target revision (the one before the migration's version when the target
already runs it); step order and history as the truth; rollout gates;
awaitRollout (image, timeout, ProgressDeadlineExceeded); Jobs (create, running, completed,
failed, a Job of our name owned by another); suspend; lint enforcement; config problems; the
migration lock; checksum mismatch; settle; rollback triggers (annotation, SLO breach, failed
step, Manual policy); the rollback procedure (stop the migration's running Jobs and wait for
their pods, undo, wait for it, point of no return, irreversible steps, reverse order).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.models import (
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    RollbackStatus,
    StepStatus,
)
from dbmigrate.core import decide as d
from dbmigrate.core.conditions import set_conditions
from dbmigrate.core.rollout import Revision, RolloutState

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
EARLIER = (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

STEPS: list[dict[str, Any]] = [
    {
        "name": "expand",
        "sql": {"up": "ALTER TABLE t ADD COLUMN c int", "down": "ALTER TABLE t DROP COLUMN c"},
    },
    {"name": "backfill", "backfill": {"table": "t", "set": "c = 1"}},
    {"name": "release", "awaitRollout": {"image": "app:v2", "timeout": "30m"}},
    {
        "name": "contract",
        "sql": {"up": "ALTER TABLE t ALTER c SET NOT NULL"},
        "pointOfNoReturn": True,
    },
]


def spec(**overrides: Any) -> DatabaseMigrationSpec:
    base: dict[str, Any] = {
        "migrationId": "20240115120000_add_c",
        "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
        "target": {"deployment": "app"},
        "steps": STEPS,
    }
    base.update(overrides)
    return DatabaseMigrationSpec.model_validate(base)


def status(
    phase: str | None = "Progressing", *, started: bool | None = None, **steps: str
) -> DatabaseMigrationStatus:
    if started is None:
        started = phase not in (None, "Pending")
    st = DatabaseMigrationStatus(
        phase=phase,  # type: ignore[arg-type]
        started_at=EARLIER if started else None,
        target_revision="1" if started else None,
    )
    st.steps = [StepStatus(name=s["name"]) for s in STEPS]
    for name, state in steps.items():
        step = st.step(name)
        assert step is not None
        step.state = state  # type: ignore[assignment]
        step.started_at = EARLIER
        if state == "Running" and name == "backfill":
            step.job = "m-backfill"
    return st


ROLLED_OUT = RolloutState(True, False, "rolled out", "1", ("app:v1",), False)
ROLLED_OUT_V2 = RolloutState(True, False, "rolled out", "2", ("app:v2",), False)
MID_ROLLOUT = RolloutState(False, False, "1 of 3 updated", "2", ("app:v2",), False)
DEADLINE = RolloutState(False, True, "exceeded its progress deadline", "2", ("app:v2",), False)
# newest first, as the operator reads them from the ReplicaSets
HISTORY_V2 = (Revision("2", ("app:v2",)), Revision("1", ("app:v1",)))


def applied(*names: str) -> dict[str, d.AppliedStep]:
    return {n: d.AppliedStep("up", f"sum-{n}") for n in names}


def obs(**kw: Any) -> d.Observation:
    base = d.Observation(
        now=NOW,
        deployment=ROLLED_OUT,
        checksums={s["name"]: f"sum-{s['name']}" for s in STEPS},
    )
    return replace(base, **kw)


def with_finished(st: DatabaseMigrationStatus, at: str) -> DatabaseMigrationStatus:
    for step in st.steps or []:
        step.finished_at = at
    return st


def failed_with(reason: str, **steps: str) -> DatabaseMigrationStatus:
    """Failed, with the Ready condition a failure writes (its reason stays while it waits)."""
    st = status("Failed", **steps)
    set_conditions(st, reason=reason, message="stopped", generation=1, now=EARLIER)
    return st


def pinned(st: DatabaseMigrationStatus, **sums: str) -> DatabaseMigrationStatus:
    """The checksums the Start pinned in status."""
    for name, sum_ in sums.items():
        step = st.step(name)
        assert step is not None
        step.checksum = sum_
    return st


def refused(st: DatabaseMigrationStatus) -> DatabaseMigrationStatus:
    st.rollback = RollbackStatus(started_at=EARLIER, finished_at=EARLIER, database="Refused")
    return st


def kept(st: DatabaseMigrationStatus) -> DatabaseMigrationStatus:
    st.rollback = RollbackStatus(started_at=EARLIER, rollout_kept="the target moved on")
    return st


def rolled(st: DatabaseMigrationStatus) -> DatabaseMigrationStatus:
    st.rollback = RollbackStatus(started_at=EARLIER, rollout_undone=True, undone_to_revision="1")
    return st


RUNNING_JOB = d.ActiveJob("m-backfill-1", uid="j-1", pods=1)
DELETING_JOB = d.ActiveJob("m-tool-2", uid="j-2", deleting=True, pods=1)

CASES = [
    # --- starting ---------------------------------------------------------------------------
    pytest.param(spec(), status(None), obs(), d.Start("1"), id="new-records-target-revision"),
    pytest.param(
        spec(),
        status(None),
        obs(deployment=ROLLED_OUT_V2, revisions=HISTORY_V2),
        d.Start(
            "1",
            note="revision 2 already runs app:v2, this migration's version: a rollback undoes "
            "it to revision 1 (app:v1)",
        ),
        id="new-after-its-version-records-the-revision-before-it",
    ),
    pytest.param(
        spec(),
        status(None),
        obs(deployment=ROLLED_OUT_V2, revisions=(Revision("2", ("app:v2",)),)),
        d.Start("2"),
        id="new-after-its-version-no-older-revision",
    ),
    pytest.param(
        spec(steps=STEPS[:2]),
        status(None),
        obs(deployment=ROLLED_OUT_V2, revisions=HISTORY_V2),
        d.Start("2"),
        id="new-without-a-version-records-the-running-revision",
    ),
    pytest.param(
        spec(target=None, steps=STEPS[:2]),
        status(None),
        obs(deployment=None),
        d.Start(None),
        id="new-without-target",
    ),
    pytest.param(
        spec(),
        status(None),
        obs(deployment=None, deployment_missing=True),
        "Wait:DeploymentNotFound",
        id="new-target-missing",
    ),
    pytest.param(
        spec(),
        status(None),
        obs(lint_errors=2),
        "Wait:LintFailed",
        id="lint-enforce-blocks",
    ),
    pytest.param(
        spec(safety={"lint": "Warn"}),
        status(None),
        obs(lint_errors=2),
        d.Start("1"),
        id="lint-warn-goes-on",
    ),
    pytest.param(
        spec(safety={"lint": "Warn"}),
        status("Failed", started=False),
        obs(lint_errors=2),
        d.Start("1"),
        id="lint-fixed-by-warn-restarts",
    ),
    pytest.param(
        spec(),
        status("Failed", started=False),
        obs(lint_errors=0),
        d.Start("1"),
        id="lint-fixed-by-sql-restarts",
    ),
    pytest.param(
        spec(),
        status(None),
        obs(problem=d.ConfigProblem(reasons.SECRET_NOT_FOUND, "secret 'db' not found")),
        "Wait:SecretNotFound",
        id="secret-missing",
    ),
    pytest.param(
        spec(),
        status(None),
        obs(problem=d.ConfigProblem(reasons.DATABASE_UNREACHABLE, "refused")),
        "Wait:DatabaseUnreachable",
        id="database-unreachable",
    ),
    pytest.param(
        spec(),
        status(None),
        obs(lock_held=False),
        "Wait:AnotherMigrationRunning",
        id="lock-held-elsewhere",
    ),
    # --- steps in order, history is the truth -------------------------------------------------
    pytest.param(spec(), status(), obs(), d.RunStep("expand"), id="first-step-runs"),
    pytest.param(
        spec(),
        status(),
        obs(applied=applied("expand")),
        d.RecordStep("expand", write_history=False, message="found in history"),
        id="applied-but-status-lost-is-recorded-not-rerun",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded"),
        obs(applied=applied("expand")),
        d.RunStep("backfill"),
        id="backfill-creates-job",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), jobs={"backfill": d.JobState("m-backfill", active=1)}),
        "Wait:StepRunning",
        id="backfill-running",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), jobs={"backfill": d.JobState("m-backfill", succeeded=True)}),
        d.RecordStep("backfill", write_history=True, message="job m-backfill completed"),
        id="backfill-job-complete",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Running"),
        obs(
            applied=applied("expand"),
            jobs={"backfill": d.JobState("m-backfill", failed=True, message="no pk")},
        ),
        d.FailStep("backfill", reasons.JOB_FAILED, "job m-backfill failed: no pk", rollback=True),
        id="backfill-job-failed-rolls-back",
    ),
    pytest.param(
        spec(rollback={"policy": "Manual"}),
        status(expand="Succeeded", backfill="Running"),
        obs(
            applied=applied("expand"),
            jobs={"backfill": d.JobState("m-backfill", failed=True, message="x")},
        ),
        d.FailStep("backfill", reasons.JOB_FAILED, "job m-backfill failed: x", rollback=False),
        id="backfill-job-failed-manual-policy",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand")),
        d.RunStep("backfill"),
        id="job-deleted-is-recreated",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Running"),
        obs(
            applied=applied("expand"),
            jobs={"backfill": d.JobState("m-backfill", succeeded=True, foreign_owner="no owner")},
        ),
        "Wait:JobNameConflict",
        id="foreign-job-is-not-adopted",
    ),
    # --- rollout gates ------------------------------------------------------------------------
    pytest.param(
        spec(),
        status(),
        obs(deployment=MID_ROLLOUT),
        "Wait:WaitingForRollout",
        id="gate-mid-rollout",
    ),
    pytest.param(
        spec(),
        status(),
        obs(deployment=DEADLINE),
        "Wait:RolloutFailed",
        id="gate-deadline",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Running"),
        obs(
            applied=applied("expand"),
            deployment=MID_ROLLOUT,
            jobs={"backfill": d.JobState("m-backfill", active=1)},
        ),
        "Wait:StepRunning",
        id="gate-does-not-stop-a-running-step",
    ),
    # --- awaitRollout -------------------------------------------------------------------------
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded"),
        obs(applied=applied("expand", "backfill")),
        "Wait:WaitingForRollout",
        id="await-wrong-image",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded"),
        obs(applied=applied("expand", "backfill"), deployment=MID_ROLLOUT),
        "Wait:WaitingForRollout",
        id="await-right-image-mid-rollout",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded"),
        obs(applied=applied("expand", "backfill"), deployment=ROLLED_OUT_V2),
        "RecordStep:release",
        id="await-done",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded"),
        obs(applied=applied("expand", "backfill"), deployment=DEADLINE),
        "FailStep:RolloutFailed",
        id="await-progress-deadline",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded", release="Waiting"),
        obs(applied=applied("expand", "backfill"), now=NOW + timedelta(hours=1)),
        "FailStep:RolloutTimeout",
        id="await-timeout",
    ),
    # --- suspend, analysis pause, finish ------------------------------------------------------
    pytest.param(spec(suspend=True), status(), obs(), "Wait:Suspended", id="suspend-between-steps"),
    pytest.param(
        spec(suspend=True),
        status(expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), jobs={"backfill": d.JobState("m-backfill", active=1)}),
        "Wait:StepRunning",
        id="suspend-lets-running-step-finish",
    ),
    pytest.param(
        spec(),
        status(),
        obs(analysis_pause="error-rate inconclusive"),
        "Wait:AnalysisInconclusive",
        id="analysis-pause",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded", release="Succeeded", contract="Succeeded"),
        obs(applied=applied("expand", "backfill", "release", "contract")),
        d.Succeed("all 4 steps applied"),
        id="all-done-succeeds",
    ),
    pytest.param(
        spec(
            analysis={
                "prometheus": {"address": "http://p:9090"},
                "settle": "5m",
                "metrics": [{"name": "e", "query": "q", "max": 1}],
            }
        ),
        with_finished(
            status(
                expand="Succeeded", backfill="Succeeded", release="Succeeded", contract="Succeeded"
            ),
            EARLIER,
        ),
        obs(applied=applied("expand", "backfill", "release", "contract")),
        "Wait:Settling",
        id="settle-after-last-step",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded"),
        obs(applied={"expand": d.AppliedStep("up", "other-sum")}),
        "Wait:ChecksumMismatch",
        id="edited-applied-step-refused",
    ),
    pytest.param(
        spec(),
        pinned(status(expand="Succeeded"), backfill="sum-as-started"),
        obs(applied=applied("expand")),
        "Wait:ChecksumMismatch",
        id="step-edited-since-the-start-refused",
    ),
    pytest.param(
        spec(),
        pinned(status(expand="Succeeded"), expand="sum-expand", backfill="sum-backfill"),
        obs(applied=applied("expand")),
        d.RunStep("backfill"),
        id="pinned-unchanged-goes-on",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded"),
        obs(applied=applied("expand"), checksums={"backfill": "any"}),
        d.RunStep("backfill"),
        id="unpinned-started-before-pinning-goes-on",
    ),
    pytest.param(spec(), status("Succeeded"), obs(), d.Done(), id="succeeded-is-terminal"),
    pytest.param(spec(), status("RolledBack"), obs(), d.Done(), id="rolledback-is-terminal"),
    # --- rollback triggers --------------------------------------------------------------------
    pytest.param(
        spec(),
        status(expand="Succeeded"),
        obs(applied=applied("expand"), rollback_requested=True),
        "StartRollback:RollbackRequested",
        id="annotation-triggers-rollback",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded"),
        obs(applied=applied("expand"), slo_breach="error-rate 0.3 > max 0.05"),
        "StartRollback:SloBreached",
        id="slo-breach-triggers-rollback",
    ),
    pytest.param(
        spec(rollback={"policy": "Manual"}),
        status(expand="Succeeded"),
        obs(applied=applied("expand"), slo_breach="error-rate 0.3 > max 0.05"),
        "AwaitManualRollback:SloBreached",
        id="slo-breach-manual-stops-failed",
    ),
    pytest.param(
        spec(rollback={"policy": "Manual"}),
        status("Failed", expand="Succeeded"),
        obs(applied=applied("expand"), rollback_requested=True),
        "StartRollback:RollbackRequested",
        id="manual-failed-annotation-rolls-back",
    ),
    pytest.param(
        spec(rollback={"policy": "Manual"}),
        failed_with(reasons.SLO_BREACHED, expand="Succeeded"),
        obs(applied=applied("expand")),
        "Wait:SloBreached",
        id="manual-failed-waits",
    ),
    # --- a rollback requested after the migration finished --------------------------------------
    pytest.param(
        spec(steps=STEPS[:3]),
        status("Succeeded", **dict.fromkeys(("expand", "backfill", "release"), "Succeeded")),
        obs(
            applied=applied("expand", "backfill", "release"),
            deployment=ROLLED_OUT_V2,
            rollback_requested=True,
        ),
        d.StartRollback(
            reasons.ROLLBACK_REQUESTED,
            "rollback requested with the dbmigrate.io/rollback annotation after the migration "
            "finished",
        ),
        id="succeeded-rolls-back-on-request",
    ),
    pytest.param(
        spec(),
        status("Succeeded", **{s["name"]: "Succeeded" for s in STEPS}),
        obs(applied=applied(*(s["name"] for s in STEPS)), rollback_requested=True),
        "RefuseRollback:PastPointOfNoReturn",
        id="succeeded-past-point-of-no-return-refused",
    ),
    pytest.param(
        spec(steps=STEPS[:3]),
        refused(status("Succeeded")),
        obs(applied=applied("expand", "backfill", "release"), rollback_requested=True),
        d.Done(),
        id="succeeded-request-answered-is-done",
    ),
    pytest.param(
        spec(steps=STEPS[:3]),
        status("Succeeded"),
        obs(applied=applied("expand"), rollback_requested=True, lock_held=False),
        "Wait:AnotherMigrationRunning",
        id="succeeded-rollback-waits-for-the-lock",
    ),
    pytest.param(
        spec(),
        kept(status("RollingBack", expand="Succeeded")),
        obs(applied=applied("expand")),
        d.RevertStep("expand"),
        id="rollback-with-kept-rollout-skips-the-undo",
    ),
    # --- rollback procedure -------------------------------------------------------------------
    pytest.param(
        spec(),
        status("RollingBack", expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), active_jobs=(RUNNING_JOB,)),
        d.StopJobs((RUNNING_JOB,)),
        id="rollback-stops-running-jobs-first",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack", expand="Succeeded", backfill="Running")),
        obs(applied=applied("expand"), active_jobs=(RUNNING_JOB,)),
        d.StopJobs((RUNNING_JOB,)),
        id="rollback-stops-jobs-before-any-down",
    ),
    pytest.param(
        spec(),
        status("RollingBack", expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), active_jobs=(RUNNING_JOB, DELETING_JOB)),
        d.StopJobs((RUNNING_JOB,)),
        id="rollback-stops-only-jobs-not-yet-deleted",
    ),
    pytest.param(
        spec(),
        status("RollingBack", expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), active_jobs=(DELETING_JOB,)),
        "Wait:StoppingJobs",
        id="rollback-waits-for-job-pods",
    ),
    pytest.param(
        spec(),
        status("RollingBack", expand="Succeeded", backfill="Running"),
        obs(applied=applied("expand"), active_jobs=(DELETING_JOB,), lock_held=False),
        "Wait:StoppingJobs",
        id="rollback-stops-jobs-without-the-lock",
    ),
    pytest.param(
        spec(),
        status("RollingBack", expand="Succeeded"),
        obs(applied=applied("expand")),
        d.UndoRollout("app", "1"),
        id="rollback-undoes-rollout-first",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack", expand="Succeeded")),
        obs(applied=applied("expand"), deployment=MID_ROLLOUT),
        "Wait:WaitingForRollout",
        id="rollback-waits-for-undo",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack", expand="Succeeded", backfill="Succeeded")),
        obs(applied=applied("expand", "backfill")),
        d.RevertStep("backfill"),
        id="rollback-reverts-newest-first",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack", expand="Succeeded")),
        obs(applied={**applied("expand"), "backfill": d.AppliedStep("down", "sum-backfill")}),
        d.RevertStep("expand"),
        id="rollback-skips-reverted",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack")),
        obs(applied={"expand": d.AppliedStep("down", "sum-expand")}),
        "FinishRollback:RolledBack",
        id="rollback-complete",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack")),
        obs(partially_applied=frozenset({"expand"})),
        d.RevertStep("expand"),
        id="rollback-reverts-partly-applied-step",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack")),
        obs(applied=applied("expand", "backfill", "release", "contract")),
        "FinishRollback:PastPointOfNoReturn",
        id="point-of-no-return-refuses-db-rollback",
    ),
    pytest.param(
        spec(),
        status("RollingBack"),
        obs(applied=applied("expand", "backfill", "release", "contract")),
        d.UndoRollout("app", "1"),
        id="point-of-no-return-still-undoes-rollout",
    ),
    pytest.param(
        spec(steps=[{"name": "a", "sql": {"up": "SELECT 1"}}], target=None),
        status("RollingBack"),
        obs(applied={"a": d.AppliedStep("up", "x")}, deployment=None),
        "FinishRollback:IrreversibleStep",
        id="irreversible-step-stops-rollback",
    ),
    # --- without Kubernetes (dbmigrate apply) ---------------------------------------------------
    pytest.param(
        spec(),
        status(None),
        obs(deployment=None, rollout_gates=False),
        d.Start(None),
        id="apply-starts-without-deployment",
    ),
    pytest.param(
        spec(),
        status(),
        obs(deployment=MID_ROLLOUT, rollout_gates=False),
        d.RunStep("expand"),
        id="apply-has-no-gates",
    ),
    pytest.param(
        spec(),
        status(expand="Succeeded", backfill="Succeeded"),
        obs(applied=applied("expand", "backfill"), deployment=None, rollout_gates=False),
        "RecordStep:release",
        id="apply-skips-await-rollout",
    ),
    pytest.param(
        spec(),
        status("RollingBack", expand="Succeeded"),
        obs(applied=applied("expand"), deployment=None, rollout_gates=False),
        d.RevertStep("expand"),
        id="apply-rollback-has-no-undo",
    ),
    pytest.param(
        spec(rollback={"undoRollout": False}),
        status("RollingBack", expand="Succeeded"),
        obs(applied=applied("expand")),
        d.RevertStep("expand"),
        id="undo-rollout-disabled",
    ),
    pytest.param(
        spec(),
        rolled(status("RollingBack", expand="Succeeded")),
        obs(applied=applied("expand"), lock_held=False),
        "Wait:AnotherMigrationRunning",
        id="rollback-needs-lock",
    ),
]


def describe(action: d.Action) -> str:
    name = type(action).__name__
    reason = getattr(action, "reason", None)
    step = getattr(action, "step", None)
    if isinstance(action, d.RecordStep):
        return f"{name}:{step}"
    return f"{name}:{reason}" if reason else name


@pytest.mark.parametrize(("the_spec", "the_status", "observation", "expected"), CASES)
def test_decide(
    the_spec: DatabaseMigrationSpec,
    the_status: DatabaseMigrationStatus,
    observation: d.Observation,
    expected: d.Action | str,
) -> None:
    action = d.decide(the_spec, the_status, observation)
    if isinstance(expected, str):
        assert describe(action) == expected or describe(action).startswith(expected + ":"), action
    else:
        assert action == expected


@pytest.mark.parametrize(
    ("rollback", "message"),
    [
        pytest.param(
            RollbackStatus(
                trigger="SloBreached",
                reason="error-rate 0.5 > max 0.05 (2 consecutive)",
                rollout_undone=True,
                undone_to_revision="1",
                steps_reverted=["rename", "release"],
            ),
            "rolled back (SloBreached): error-rate 0.5 > max 0.05 (2 consecutive); rollout "
            "undone to revision 1; 2 step(s) reverted",
            id="slo-breach",
        ),
        pytest.param(
            RollbackStatus(
                trigger="RollbackRequested",
                reason="requested",
                rollout_kept="the target runs app:v4: the rollout is kept",
            ),
            "rolled back (RollbackRequested): requested; the target runs app:v4: the rollout "
            "is kept; no step to revert",
            id="requested-rollout-kept",
        ),
    ],
)
def test_a_finished_rollback_says_why_and_what_it_undid(
    rollback: RollbackStatus, message: str
) -> None:
    """The Ready message Argo CD shows as the Degraded migration's health message."""
    st = status("RollingBack")
    st.rollback = rollback
    action = d.decide(spec(), st, obs(applied={"expand": d.AppliedStep("down", "sum-expand")}))
    assert action == d.FinishRollback("RolledBack", reasons.ROLLED_BACK, message)


def test_wait_messages_name_the_step_and_the_cause() -> None:
    action = d.decide(spec(), status(), obs(deployment=MID_ROLLOUT))
    assert isinstance(action, d.Wait)
    assert action.step == "expand"
    assert "1 of 3 updated" in action.message


def test_checksum_mismatch_message_says_what_to_do() -> None:
    action = d.decide(
        spec(), status(expand="Succeeded"), obs(applied={"expand": d.AppliedStep("up", "abc")})
    )
    assert isinstance(action, d.Wait)
    assert action.stalled
    assert "create a new migration" in action.message


@pytest.mark.parametrize(
    ("deployment", "kept_because"),
    [
        pytest.param(ROLLED_OUT_V2, None, id="target-runs-the-version-undo"),
        pytest.param(
            replace(ROLLED_OUT_V2, images=("app:v3",)),
            "the target runs app:v3, not the migration's version app:v2: the rollout is kept",
            id="target-moved-on-keep",
        ),
    ],
)
def test_a_finished_migration_undoes_only_its_own_rollout(
    deployment: RolloutState, kept_because: str | None
) -> None:
    action = d.decide(
        spec(steps=STEPS[:3]),
        status("Succeeded"),
        obs(applied=applied("expand"), deployment=deployment, rollback_requested=True),
    )
    assert isinstance(action, d.StartRollback)
    assert action.keep_rollout == kept_because


@pytest.mark.parametrize(
    ("phase", "requested", "rollback", "active"),
    [
        pytest.param("Progressing", False, None, True, id="under-way"),
        pytest.param("Succeeded", False, None, False, id="succeeded"),
        pytest.param("Succeeded", True, None, True, id="succeeded-rollback-requested"),
        pytest.param(
            "Succeeded", True, RollbackStatus(database="Refused"), False, id="request-answered"
        ),
        pytest.param("RolledBack", True, None, False, id="rolled-back"),
    ],
)
def test_is_active(
    phase: str, requested: bool, rollback: RollbackStatus | None, active: bool
) -> None:
    st = DatabaseMigrationStatus(phase=phase, rollback=rollback)  # type: ignore[arg-type]
    assert d.is_active(st, requested) is active

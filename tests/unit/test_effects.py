"""The effects of each Action (reconcile.effects) against a fake Platform and database session.

Aspects: what each action writes to status (phase, step state, rollback record, conditions),
which events it posts and with which reason, what it asks of the database (direction, SQL,
checksum) and of the cluster (Jobs, rollout undo, Argo CD), when it releases the migration lock,
how long the runner waits afterwards, and that the DSN never leaves in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.models import (
    ArgoCDRollbackStatus,
    DatabaseMigrationSpec,
    DatabaseMigrationStatus,
    RollbackStatus,
    StepStatus,
)
from dbmigrate.core import decide as d
from dbmigrate.core.argocd import POLL_SECONDS
from dbmigrate.core.rollout import Revision, UndoPlan
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.db.executor import StepResult
from dbmigrate.db.runs import RunRecord
from dbmigrate.reconcile import effects, passes
from dbmigrate.reconcile.platform import Invalid
from dbmigrate.settings import Settings

DSN = "postgresql://app:hunter2-secret@db/app"
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)

STEPS: list[dict[str, Any]] = [
    {"name": "expand", "sql": {"up": "ALTER TABLE t ADD c int", "down": "ALTER TABLE t DROP c"}},
    {"name": "backfill", "backfill": {"table": "t", "set": "c = 1"}},
    {"name": "tool", "job": {"image": "tool:1", "command": ["run"]}},
    {"name": "release", "awaitRollout": {"image": "app:v2"}},
]


@dataclass
class FakePlatform:
    """Records what the effects ask of the cluster; status patches merge into `status`."""

    namespace: str = "ns"
    name: str = "m"
    has_rollouts: bool = True
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    undone: list[tuple[str, str]] = field(default_factory=list)
    undo_plan: UndoPlan = field(default_factory=lambda: UndoPlan([], "rolled back to revision 1"))
    argo: ArgoCDRollbackStatus | None = None
    paused_with: str | None = None  # resumeAutoSync that pause_argo_cd was called with
    confirmed: list[str] = field(default_factory=list)
    reject_jobs: str | None = None  # start_job raises Invalid with this message
    stopped: list[d.ActiveJob] = field(default_factory=list)
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def read_resource(self) -> dict[str, Any]:
        raise AssertionError("effects do not read the resource")

    async def write_status(self, patch: dict[str, Any]) -> None:
        self.status = {k: v for k, v in patch.items() if v is not None}

    async def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def read_secret(self, name: str, key: str) -> str:
        raise AssertionError("effects do not read secrets")

    async def check_secret(self, name: str) -> None:
        raise AssertionError("effects do not check secrets")

    async def read_config_map(self, name: str, key: str) -> str:
        raise AssertionError("effects do not read config maps")

    async def read_deployment(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}}

    async def undo_rollout(self, deployment: str, to_revision: str) -> UndoPlan:
        self.undone.append((deployment, to_revision))
        return self.undo_plan

    async def deployment_revisions(self, deployment: dict[str, Any]) -> tuple[Revision, ...]:
        raise AssertionError("effects do not read revisions")

    async def pause_argo_cd(
        self, deployment: dict[str, Any], resume: str
    ) -> ArgoCDRollbackStatus | None:
        self.paused_with = resume
        return self.argo.model_copy() if self.argo is not None else None

    async def read_argo_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        raise AssertionError("effects do not read Applications")

    async def resume_argo_auto_sync(self, app: dict[str, Any], automated: dict[str, bool]) -> None:
        raise AssertionError("effects do not resume automated sync")

    async def start_job(self, job: dict[str, Any]) -> None:
        if self.reject_jobs is not None:
            raise Invalid(self.reject_jobs)
        self.jobs.append(job)

    async def job_state(self, name: str, owner_uid: str) -> d.JobState | None:
        raise AssertionError("effects do not watch jobs")

    async def active_jobs(self, owner_uid: str) -> list[d.ActiveJob]:
        raise AssertionError("effects do not watch jobs")

    async def stop_job(self, job: d.ActiveJob) -> None:
        self.stopped.append(job)

    async def confirm_rollout(self, step: str, image: str | None) -> None:
        self.confirmed.append(step)

    def run_name(self, body: dict[str, Any]) -> tuple[str, str]:
        return f"{self.namespace}/{self.name}", "uid-1"

    async def save_report(self, body: dict[str, Any], markdown: str) -> str:
        # the status at the time: the report is written before the final status is saved
        self.reports.append((markdown, dict(self.status)))
        return f"configmap {self.namespace}/{self.name}-report"

    def reasons_posted(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


@dataclass
class FakeDatabase:
    """The runner's session: records every apply_sql call, answers with `result`."""

    result: StepResult = field(default_factory=lambda: StepResult(True, duration_ms=7))
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock_held: bool = True
    analyzed: list[str] = field(default_factory=list)
    analyze_refused: str | None = None  # why ANALYZE did not run, as the database would say
    runs: list[RunRecord] = field(default_factory=list)
    runs_refused: str | None = None  # write_run raises with this message

    async def apply_sql(self, **step: Any) -> StepResult:
        self.calls.append(step)
        return self.result

    async def release_lock(self) -> None:
        self.lock_held = False

    async def backfill_workers(self, checkpoint: str, backfill: Any) -> tuple[int, str]:
        """`parallelism: auto` stands for 3 here (the database decides it in production)."""
        workers = 3 if backfill.parallelism == "auto" else backfill.parallelism
        return workers, f"{workers} workers"

    async def analyze(self, table: str, lock_timeout: float) -> str | None:
        self.analyzed.append(table)
        return self.analyze_refused

    async def write_run(self, run: RunRecord) -> None:
        if self.runs_refused is not None:
            raise RuntimeError(self.runs_refused)
        self.runs.append(run)


def make_pass(
    *,
    policy: str = "Automatic",
    phase: str = "Progressing",
    states: dict[str, str] | None = None,
    result: StepResult | None = None,
    platform: FakePlatform | None = None,
    steps: list[dict[str, Any]] | None = None,
    **spec_extra: Any,
) -> tuple[effects.Pass, FakePlatform, FakeDatabase]:
    spec = DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_c",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "target": {"deployment": "app"},
            "rollback": {"policy": policy},
            "steps": steps or STEPS,
            **spec_extra,
        }
    )
    status = DatabaseMigrationStatus(phase=phase, started_at="2026-11-28T11:59:00Z")  # type: ignore[arg-type]
    status.target_revision = "1"
    status.steps = [StepStatus(name=s["name"]) for s in STEPS]
    for name, state in (states or {}).items():
        st = status.step(name)
        assert st is not None
        st.state = state  # type: ignore[assignment]
        st.started_at = "2026-11-28T11:59:00Z"
    fake = platform or FakePlatform()
    db = FakeDatabase(result=result or StepResult(True, duration_ms=7))
    body = {"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1}}
    the_pass = effects.Pass(
        report=passes.Reporter(fake, generation=1, dsn=DSN),  # type: ignore[arg-type]
        database=db,
        settings=Settings(image="dbmigrate:test"),
        body=body,
        spec=spec,
        status=status,
        obs=d.Observation(now=NOW, checksums={s["name"]: f"sum-{s['name']}" for s in STEPS}),
        sql={"expand": ResolvedSql(STEPS[0]["sql"]["up"], STEPS[0]["sql"]["down"])},
    )
    return the_pass, fake, db


def condition(fake: FakePlatform, type_: str) -> dict[str, Any]:
    return next(c for c in fake.status["conditions"] if c["type"] == type_)


def step_of(fake: FakePlatform, name: str) -> dict[str, Any]:
    return next(s for s in fake.status["steps"] if s["name"] == name)


FAILED_SQL = StepResult(False, reasons.SQL_ERROR, f"42P01: relation does not exist ({DSN})")


# --- progress ------------------------------------------------------------------------------------


async def test_start_records_the_revision_and_posts_started() -> None:
    p, fake, _ = make_pass(phase="Pending")
    p.status.started_at = None
    assert await effects.carry_out(p, d.Start("3")) == 0.0
    assert fake.status["phase"] == "Progressing"
    assert fake.status["targetRevision"] == "3"
    assert fake.status["startedAt"]
    assert [s.get("checksum") for s in fake.status["steps"]] == [f"sum-{s['name']}" for s in STEPS]
    assert fake.events == [
        (
            "Normal",
            reasons.STARTED,
            "migration 20240115120000_add_c started (deployment revision 3)",
        )
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param(
            "sql",
            ["Succeeded", [reasons.STEP_STARTED, reasons.STEP_SUCCEEDED]],
            id="sql-applied",
        ),
        pytest.param("backfill", ["Running", [reasons.STEP_STARTED]], id="backfill-job-created"),
        pytest.param("tool", ["Running", [reasons.STEP_STARTED]], id="tool-job-created"),
    ],
)
async def test_run_step(kind: str, expected: list[Any]) -> None:
    name = "expand" if kind == "sql" else kind
    p, fake, db = make_pass()
    assert await effects.carry_out(p, d.RunStep(name)) == 0.0
    state, posted = expected
    assert step_of(fake, name)["state"] == state
    assert step_of(fake, name)["attempts"] == 1
    assert fake.reasons_posted() == posted
    assert fake.status["currentStep"] == name
    if kind == "sql":
        (call,) = db.calls
        assert (call["direction"], call["sql"], call["step"]) == ("up", STEPS[0]["sql"]["up"], name)
        assert step_of(fake, name)["message"] == "applied in 7 ms"
        assert fake.status["progress"] == "1/4"
        assert not fake.jobs
    else:
        assert db.calls == []
        (job,) = fake.jobs
        assert step_of(fake, name)["job"] == job["metadata"]["name"]


@pytest.mark.parametrize(
    ("parallelism", "workers"),
    [pytest.param(2, 2, id="a-number"), pytest.param("auto", 3, id="auto-as-resolved")],
)
async def test_a_backfill_job_runs_the_resolved_worker_count(
    parallelism: int | str, workers: int
) -> None:
    steps = [dict(s) for s in STEPS]
    steps[1] = {
        "name": "backfill",
        "backfill": {"table": "t", "set": "c = 1", "parallelism": parallelism},
    }
    p, fake, _ = make_pass(steps=steps)
    await effects.carry_out(p, d.RunStep("backfill"))
    (job,) = fake.jobs
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (workers, workers)
    assert (
        f"$(JOB_COMPLETION_INDEX)/{workers}"
        in job["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert fake.events[-1][2].endswith(f"started: job {job['metadata']['name']}, {workers} workers")


LABEL_422 = (
    'Job.batch "m-backfill-0123456789" is invalid: metadata.labels: Invalid value: "xxx": '
    "must be no more than 63 characters"
)


@pytest.mark.parametrize(
    ("policy", "phase", "lock_held"),
    [
        pytest.param("Automatic", "RollingBack", True, id="automatic-rolls-back"),
        pytest.param("Manual", "Failed", False, id="manual-stops-and-releases-the-lock"),
    ],
)
async def test_a_rejected_job_fails_the_step_instead_of_retrying(
    policy: str, phase: str, lock_held: bool
) -> None:
    p, fake, db = make_pass(policy=policy, platform=FakePlatform(reject_jobs=LABEL_422))
    assert await effects.carry_out(p, d.RunStep("backfill")) == 0.0
    assert fake.status["phase"] == phase
    step = step_of(fake, "backfill")
    assert (step["state"], step["reason"]) == ("Failed", reasons.JOB_INVALID)
    assert "rejected by the API server" in step["message"]
    assert "must be no more than 63 characters" in step["message"]
    assert "job" not in step  # nothing was created
    assert reasons.STEP_FAILED in fake.reasons_posted()
    assert db.lock_held is lock_held
    if policy == "Manual":
        assert condition(fake, reasons.READY)["reason"] == reasons.JOB_INVALID
        assert condition(fake, reasons.STALLED)["status"] == "True"
    else:
        assert fake.status["rollback"]["trigger"] == reasons.JOB_INVALID


async def test_lock_retries_are_counted_and_shown_while_the_step_runs() -> None:
    p, fake, db = make_pass()

    async def apply_sql(**step: Any) -> StepResult:
        await step["on_lock_retry"](1, "ALTER TABLE t")
        assert step_of(fake, "expand")["lockRetries"] == 1
        assert "retry 1/" in step_of(fake, "expand")["message"]
        return StepResult(True, duration_ms=1)

    db.apply_sql = apply_sql  # type: ignore[method-assign]
    await effects.carry_out(p, d.RunStep("expand"))
    assert step_of(fake, "expand")["state"] == "Succeeded"


@pytest.mark.parametrize(
    ("write_history", "calls"),
    [
        pytest.param(True, 1, id="job-done-writes-history"),
        pytest.param(False, 0, id="found-in-history-only-marks"),
    ],
)
async def test_record_step(write_history: bool, calls: int) -> None:
    p, fake, db = make_pass(states={"backfill": "Running"})
    action = d.RecordStep("backfill", write_history=write_history, message="job m-backfill done")
    assert await effects.carry_out(p, action) == 0.0
    assert len(db.calls) == calls
    if calls:
        assert (db.calls[0]["sql"], db.calls[0]["checksum"]) == ("", "sum-backfill")
    assert step_of(fake, "backfill")["state"] == "Succeeded"
    assert db.analyzed == ["t"]  # the backfilled table gets planner statistics
    assert fake.events[-1] == (
        "Normal",
        reasons.STEP_SUCCEEDED,
        "step 'backfill' succeeded: job m-backfill done; t analyzed",
    )


async def test_a_refused_analyze_does_not_fail_the_backfill() -> None:
    p, fake, db = make_pass(states={"backfill": "Running"})
    db.analyze_refused = "canceling statement due to lock timeout"
    await effects.carry_out(p, d.RecordStep("backfill", write_history=True, message="done"))
    assert step_of(fake, "backfill")["state"] == "Succeeded"
    assert (
        "Warning",
        reasons.STEP_SUCCEEDED,
        "step 'backfill': ANALYZE t skipped (canceling statement due to lock timeout); "
        "autovacuum will do it",
    ) in fake.events


async def test_await_rollout_is_confirmed_where_there_are_no_rollouts() -> None:
    p, fake, _ = make_pass(platform=FakePlatform(has_rollouts=False))
    await effects.carry_out(p, d.RecordStep("release", write_history=True, message="skipped"))
    assert fake.confirmed == ["release"]


async def test_succeed_ends_the_migration_and_releases_the_lock() -> None:
    p, fake, db = make_pass(states={s["name"]: "Succeeded" for s in STEPS})
    p.status.current_step = "release"
    assert await effects.carry_out(p, d.Succeed("all 4 steps applied")) is None
    assert fake.status["phase"] == "Succeeded"
    assert "currentStep" not in fake.status
    assert fake.status["finishedAt"]
    assert condition(fake, reasons.READY)["status"] == "True"
    assert fake.events == [("Normal", reasons.SUCCEEDED, "all 4 steps applied")]
    assert not db.lock_held


async def test_a_wait_is_shown_every_pass_and_posted_once() -> None:
    wait = d.Wait("Waiting", reasons.WAITING_FOR_ROLLOUT, "1 of 3 updated", step="expand")
    p, fake, _ = make_pass()
    assert await effects.carry_out(p, wait) == wait.requeue_after
    assert await effects.carry_out(p, wait) == wait.requeue_after
    assert fake.status["phase"] == "Waiting"
    assert condition(fake, reasons.READY)["reason"] == reasons.WAITING_FOR_ROLLOUT
    assert fake.reasons_posted() == [reasons.WAITING_FOR_ROLLOUT]


ANALYSIS = {
    "interval": "10s",
    "metrics": [{"name": "errors", "sql": "SELECT 0", "max": 0}],
}


@pytest.mark.parametrize(
    ("phase", "requeue"),
    [
        pytest.param("Waiting", 0.1, id="under-way-wakes-for-the-overdue-measurement"),
        pytest.param("Succeeded", 30.0, id="watching-after-success-no-measurement"),
        pytest.param("Failed", 30.0, id="failed-no-measurement"),
    ],
)
async def test_a_wait_wakes_early_only_for_a_measurement_that_will_be_taken(
    phase: str, requeue: float
) -> None:
    """The analysis measures while the migration is under way; a Succeeded (watched) or Failed
    migration with an overdue measurement must not be woken every 0.1 s for one never taken."""
    p, _, _ = make_pass(phase=phase, analysis=ANALYSIS)
    wait = d.Wait(phase, reasons.WATCHING, "waiting", requeue_after=30.0)  # type: ignore[arg-type]
    assert await effects.carry_out(p, wait) == requeue


# --- failure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "phase", "posted", "lock_held"),
    [
        pytest.param(
            "Automatic",
            "RollingBack",
            [reasons.STEP_STARTED, reasons.STEP_FAILED, reasons.ROLLBACK_STARTED],
            True,
            id="automatic-rolls-back",
        ),
        pytest.param(
            "Manual",
            "Failed",
            [reasons.STEP_STARTED, reasons.STEP_FAILED],
            False,
            id="manual-stops-and-releases-the-lock",
        ),
    ],
)
async def test_a_failed_sql_step(
    policy: str, phase: str, posted: list[str], lock_held: bool
) -> None:
    p, fake, db = make_pass(policy=policy, result=FAILED_SQL)
    assert await effects.carry_out(p, d.RunStep("expand")) == 0.0
    assert fake.status["phase"] == phase
    assert step_of(fake, "expand")["state"] == "Failed"
    assert step_of(fake, "expand")["reason"] == reasons.SQL_ERROR
    assert fake.reasons_posted() == posted
    assert db.lock_held is lock_held
    ready = condition(fake, reasons.READY)
    if policy == "Manual":
        assert ready["reason"] == reasons.SQL_ERROR
        assert "annotate dbmigrate.io/rollback=requested to roll back" in ready["message"]
        assert condition(fake, reasons.STALLED)["status"] == "True"
    else:
        assert fake.status["rollback"]["trigger"] == reasons.SQL_ERROR


async def test_manual_slo_breach_stops_without_a_rollback_record() -> None:
    p, fake, db = make_pass(policy="Manual", states={"expand": "Succeeded"})
    action = d.AwaitManualRollback(reasons.SLO_BREACHED, "error-rate 0.3 > max 0.05; annotate")
    assert await effects.carry_out(p, action) == 60.0
    assert fake.status["phase"] == "Failed"
    assert "rollback" not in fake.status
    assert "finishedAt" not in fake.status  # waiting for a person, not finished
    assert condition(fake, reasons.READY)["reason"] == reasons.SLO_BREACHED
    assert condition(fake, reasons.STALLED)["status"] == "True"
    assert fake.events == [("Warning", reasons.SLO_BREACHED, action.message)]
    assert not db.lock_held


async def test_the_dsn_never_leaves_in_a_message() -> None:
    p, fake, _ = make_pass(policy="Manual", result=FAILED_SQL)
    await effects.carry_out(p, d.RunStep("expand"))
    shown = repr(fake.status) + repr(fake.events)
    assert "hunter2" not in shown
    assert "***" in step_of(fake, "expand")["message"]


# --- rollback ------------------------------------------------------------------------------------


async def test_start_rollback_records_the_trigger() -> None:
    p, fake, _ = make_pass()
    action = d.StartRollback(reasons.SLO_BREACHED, "error-rate 0.3 > max 0.05")
    assert await effects.carry_out(p, action) == 0.0
    assert fake.status["phase"] == "RollingBack"
    assert fake.status["rollback"]["trigger"] == reasons.SLO_BREACHED
    assert fake.status["rollback"]["reason"] == action.message
    assert fake.events == [
        ("Warning", reasons.ROLLBACK_STARTED, f"rolling back (SloBreached): {action.message}")
    ]


async def test_stop_jobs_deletes_them_and_the_wait_that_follows_posts_nothing_more() -> None:
    p, fake, db = make_pass(phase="RollingBack", states={"backfill": "Running"})
    p.status.rollback = RollbackStatus(started_at="2026-11-28T11:59:30Z")
    step = p.status.step("backfill")
    assert step is not None
    step.job = "m-backfill-0123456789"
    jobs = (d.ActiveJob("m-backfill-0123456789", uid="j-1", pods=1),)
    assert await effects.carry_out(p, d.StopJobs(jobs)) == 1.0
    assert fake.stopped == list(jobs)
    assert fake.status["phase"] == "RollingBack"
    assert condition(fake, reasons.READY)["reason"] == reasons.STOPPING_JOBS
    assert (
        step_of(fake, "backfill")["message"] == "job m-backfill-0123456789 stopped by the rollback"
    )
    assert fake.events == [
        (
            "Normal",
            reasons.STOPPING_JOBS,
            "stopping job(s) m-backfill-0123456789 before rolling back",
        )
    ]
    assert db.calls == []  # nothing reverted yet
    assert db.lock_held
    waiting = d.Wait("RollingBack", reasons.STOPPING_JOBS, "waiting for 1 pod(s)")
    assert await effects.carry_out(p, waiting) == waiting.requeue_after
    assert len(fake.events) == 1


@pytest.mark.parametrize(
    ("plan", "argo", "phase", "posted"),
    [
        pytest.param(
            UndoPlan([], "rolled back to revision 1"),
            None,
            "RollingBack",
            [reasons.ROLLOUT_UNDONE],
            id="undone",
        ),
        pytest.param(
            UndoPlan([], "rolled back to revision 1"),
            ArgoCDRollbackStatus(
                application="app", namespace="argocd", auto_sync_paused=True, message="paused"
            ),
            "RollingBack",
            [reasons.ROLLOUT_UNDONE],
            id="undone-argo-paused",
        ),
        pytest.param(
            UndoPlan(None, "revision 1 not found", error=True),
            None,
            "Failed",
            [reasons.ROLLBACK_FAILED],
            id="revision-gone-fails",
        ),
    ],
)
async def test_undo_rollout(
    plan: UndoPlan, argo: ArgoCDRollbackStatus | None, phase: str, posted: list[str]
) -> None:
    fake = FakePlatform(undo_plan=plan, argo=argo)
    p, fake, db = make_pass(phase="RollingBack", platform=fake)
    p.status.rollback = RollbackStatus(started_at="2026-11-28T11:59:30Z")
    assert await effects.carry_out(p, d.UndoRollout("app", "1")) == 0.0
    assert fake.undone == [("app", "1")]
    assert fake.status["phase"] == phase
    assert fake.reasons_posted() == posted
    rollback = fake.status["rollback"]
    assert rollback.get("rolloutUndone", False) is (phase == "RollingBack")
    assert ("argoCD" in rollback) is (argo is not None)
    assert db.lock_held is (phase == "RollingBack")
    paused = [c for c in fake.status["conditions"] if c["type"] == reasons.AUTO_SYNC_PAUSED]
    if argo is not None and argo.auto_sync_paused:
        assert fake.paused_with == "Never"
        assert rollback["argoCD"]["pausedAt"]
        assert [(c["status"], c["reason"], c["message"]) for c in paused] == [
            ("True", reasons.ARGO_CD_AUTO_SYNC_PAUSED, "paused")
        ]
    else:
        assert paused == []


@pytest.mark.parametrize(
    ("result", "state", "phase"),
    [
        pytest.param(StepResult(True, duration_ms=3), "RolledBack", "RollingBack", id="reverted"),
        pytest.param(FAILED_SQL, "Succeeded", "Failed", id="down-fails"),
    ],
)
async def test_revert_step(result: StepResult, state: str, phase: str) -> None:
    p, fake, db = make_pass(phase="RollingBack", states={"expand": "Succeeded"}, result=result)
    p.status.rollback = RollbackStatus(started_at="2026-11-28T11:59:30Z", rollout_undone=True)
    assert await effects.carry_out(p, d.RevertStep("expand")) == 0.0
    (call,) = db.calls
    assert (call["direction"], call["sql"]) == ("down", STEPS[0]["sql"]["down"])
    assert step_of(fake, "expand")["state"] == state
    assert fake.status["phase"] == phase
    assert fake.reasons_posted()[0] == reasons.STEP_REVERTING
    if phase == "RollingBack":
        assert fake.status["rollback"]["stepsReverted"] == ["expand"]
    else:
        assert condition(fake, reasons.READY)["reason"] == reasons.ROLLBACK_FAILED
        assert "hunter2" not in repr(fake.status)


@pytest.mark.parametrize(
    ("action", "delay", "database"),
    [
        pytest.param(
            d.FinishRollback("RolledBack", reasons.ROLLED_BACK, "rollback complete"),
            None,
            "RolledBack",
            id="rolled-back",
        ),
        pytest.param(
            d.FinishRollback("RolledBack", reasons.ROLLED_BACK, "rollback complete"),
            POLL_SECONDS,
            "RolledBack",
            id="rolled-back-argo-cd-paused-keeps-looking",
        ),
        pytest.param(
            d.FinishRollback("Failed", reasons.PAST_POINT_OF_NO_RETURN, "refused"),
            60.0,
            "Refused",
            id="past-point-of-no-return",
        ),
        pytest.param(
            d.FinishRollback("Failed", reasons.IRREVERSIBLE_STEP, "no down"),
            60.0,
            None,
            id="irreversible-step",
        ),
    ],
)
async def test_finish_rollback(
    action: d.FinishRollback, delay: float | None, database: str
) -> None:
    p, fake, db = make_pass(phase="RollingBack")
    p.status.rollback = RollbackStatus(started_at="2026-11-28T11:59:30Z")
    if delay == POLL_SECONDS:  # the rollback switched an Application's automated sync off
        p.status.rollback.argo_cd = ArgoCDRollbackStatus(
            application="shop", namespace="argocd", auto_sync_paused=True
        )
    assert await effects.carry_out(p, action) == delay
    assert fake.status["phase"] == action.phase
    assert fake.status["rollback"].get("database") == database
    assert fake.status["rollback"]["finishedAt"] == fake.status["finishedAt"]
    assert condition(fake, reasons.STALLED)["status"] == str(action.phase == "Failed")
    kind = "Normal" if action.phase == "RolledBack" else "Warning"
    assert fake.events == [(kind, action.reason, action.message)]
    assert not db.lock_held


async def test_a_refused_rollback_keeps_the_migration_succeeded() -> None:
    p, fake, db = make_pass(phase="Succeeded", states={s["name"]: "Succeeded" for s in STEPS})
    action = d.RefuseRollback(reasons.PAST_POINT_OF_NO_RETURN, "rollback refused: step 'x'")
    assert await effects.carry_out(p, action) is None
    assert fake.status["phase"] == "Succeeded"
    assert fake.status["rollback"]["database"] == "Refused"
    assert fake.status["rollback"]["trigger"] == reasons.ROLLBACK_REQUESTED
    assert condition(fake, reasons.READY)["reason"] == reasons.PAST_POINT_OF_NO_RETURN
    assert fake.events == [("Warning", reasons.PAST_POINT_OF_NO_RETURN, action.message)]
    assert not db.lock_held


async def test_a_finished_migration_rolling_back_is_no_longer_finished() -> None:
    p, fake, _ = make_pass(phase="Succeeded")
    p.status.finished_at = "2026-11-28T11:59:50Z"
    action = d.StartRollback(reasons.ROLLBACK_REQUESTED, "requested", keep_rollout="moved on")
    await effects.carry_out(p, action)
    assert fake.status["phase"] == "RollingBack"
    assert "finishedAt" not in fake.status
    assert fake.status["rollback"]["rolloutKept"] == "moved on"


async def test_done_does_nothing() -> None:
    p, fake, db = make_pass(phase="Succeeded")
    assert await effects.carry_out(p, d.Done()) is None
    assert (fake.status, fake.events, db.calls) == ({}, [], [])


def test_every_action_has_an_effect() -> None:
    actions = set(d.Action.__args__)  # type: ignore[attr-defined]
    assert set(effects.EFFECTS) == actions - {d.Done}


# --- the record ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "states", "action", "outcome", "heading"),
    [
        pytest.param(
            "Progressing",
            {s["name"]: "Succeeded" for s in STEPS},
            d.Succeed("all 4 steps applied"),
            "Succeeded",
            "# Migration Log",
            id="succeeded-log-entry",
        ),
        pytest.param(
            "RollingBack",
            {"expand": "RolledBack"},
            d.FinishRollback("RolledBack", reasons.ROLLED_BACK, "rollback complete"),
            "RolledBack",
            "## Rollback Post-Mortem",
            id="rolled-back-post-mortem",
        ),
        pytest.param(
            "RollingBack",
            {"expand": "Succeeded"},
            d.FinishRollback("Failed", reasons.PAST_POINT_OF_NO_RETURN, "refused"),
            "Failed",
            "## Rollback Post-Mortem",
            id="failed-rollback-post-mortem",
        ),
        pytest.param(
            "Progressing",
            {"expand": "Succeeded"},
            d.AwaitManualRollback(reasons.SLO_BREACHED, "error-rate 0.3 > max 0.05"),
            "Failed",
            "## Failure Post-Mortem",
            id="manual-stop-post-mortem",
        ),
    ],
)
async def test_the_record_is_written_before_the_final_status(
    phase: str, states: dict[str, str], action: d.Action, outcome: str, heading: str
) -> None:
    p, fake, db = make_pass(phase=phase, states=states)
    if phase == "RollingBack":
        p.status.rollback = RollbackStatus(
            started_at="2026-11-28T11:59:30Z", trigger=reasons.SLO_BREACHED, step="expand"
        )
    await effects.carry_out(p, action)
    (run,) = db.runs
    ((report, status_then),) = fake.reports
    assert status_then.get("phase") != fake.status["phase"]  # written before the final status
    assert fake.status["phase"] == outcome
    assert (run.migration_id, run.name, run.uid, run.outcome) == (
        "20240115120000_add_c",
        "ns/m",
        "uid-1",
        outcome,
    )
    assert run.report == report
    assert heading in report
    assert run.finished_at is not None or outcome == "Failed"
    assert [s["name"] for s in run.steps] == [s["name"] for s in STEPS]
    assert run.steps[0]["sql"] == STEPS[0]["sql"]["up"]
    assert run.steps[1]["sql"] is None
    assert reasons.REPORT_FAILED not in fake.reasons_posted()


async def test_a_record_that_cannot_be_written_does_not_cost_the_outcome() -> None:
    p, fake, db = make_pass(states={s["name"]: "Succeeded" for s in STEPS})
    db.runs_refused = f"connection to {DSN} lost"
    assert await effects.carry_out(p, d.Succeed("all 4 steps applied")) is None
    assert fake.status["phase"] == "Succeeded"
    assert condition(fake, reasons.READY)["status"] == "True"
    failed = [m for t, r, m in fake.events if r == reasons.REPORT_FAILED]
    assert failed == [
        "could not write the record to dbmigrate.runs: RuntimeError: connection to *** lost"
    ]
    assert len(fake.reports) == 1  # the ConfigMap is still written
    assert not db.lock_held


async def test_the_dsn_never_reaches_the_record() -> None:
    p, fake, db = make_pass(policy="Manual", result=FAILED_SQL)
    await effects.carry_out(p, d.RunStep("expand"))
    ((report, _),) = fake.reports
    (run,) = db.runs
    assert "42P01: relation does not exist" in report
    assert "hunter2" not in report + repr(run.steps)

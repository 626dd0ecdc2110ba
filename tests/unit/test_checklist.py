"""The pre-deployment checklist (`core.checklist`): each item judged from the spec, the status
and the pass's facts; the approval's setter from managedFields; the gate in `decide` and the
lock it does not take while it waits."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.checklist import ChecklistStatus
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.api.rehearsal import RehearsalStatus, RehearsalStep
from dbmigrate.core import decide as d
from dbmigrate.core.checklist import (
    Approval,
    ChecklistFacts,
    MonitoringFacts,
    approval_of,
    evaluate_checklist,
)
from dbmigrate.reconcile.observe import wants_lock

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
REVERSIBLE = {"name": "expand", "sql": {"up": "SELECT 1", "down": "SELECT 2"}}
IRREVERSIBLE = {"name": "seed", "sql": {"up": "SELECT 1"}}
TOOL = {"name": "tool", "job": {"image": "alembic:1"}}
POINT = {"name": "contract", "sql": {"up": "SELECT 3"}, "pointOfNoReturn": True}
ANALYSIS = {
    "prometheus": {"address": "http://prometheus:9090"},
    "metrics": [{"name": "errors", "query": "rate(x[1m])", "max": 0.1}],
}


def spec(steps: list[dict[str, Any]] | None = None, **extra: Any) -> DatabaseMigrationSpec:
    body: dict[str, Any] = {
        "migrationId": "20261202120000_checklist",
        "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
        "steps": steps or [REVERSIBLE],
    }
    body.update(extra)
    return DatabaseMigrationSpec.model_validate(body)


def judge(s: DatabaseMigrationSpec, facts: ChecklistFacts | None = None) -> ChecklistStatus:
    return evaluate_checklist(s, DatabaseMigrationStatus(), facts or ChecklistFacts())


@pytest.mark.parametrize(
    ("steps", "satisfied", "detail"),
    [
        pytest.param([REVERSIBLE], True, "every step can be undone (1)", id="all-reversible"),
        pytest.param([REVERSIBLE, IRREVERSIBLE], False, "'seed'", id="no-down-sql"),
        pytest.param([REVERSIBLE, TOOL], False, "'tool'", id="tool-job"),
        pytest.param(
            [REVERSIBLE, POINT, IRREVERSIBLE],
            True,
            "the 1 step(s) before the point of no return 'contract'",
            id="irreversible-after-point",
        ),
        pytest.param([POINT, IRREVERSIBLE], True, "the first step 'contract' is", id="point-first"),
        pytest.param([IRREVERSIBLE, POINT], False, "'seed'", id="irreversible-before-point"),
    ],
)
def test_rollback_plan(steps: list[dict[str, Any]], satisfied: bool, detail: str) -> None:
    item = judge(spec(steps)).item("RollbackPlan")
    assert item is not None
    assert item.satisfied is satisfied
    assert detail in (item.detail or "")


@pytest.mark.parametrize(
    ("lint", "errors", "findings", "satisfied", "detail"),
    [
        pytest.param("Enforce", 0, 0, True, "passed: no error finding", id="clean"),
        pytest.param("Warn", 0, 2, True, "(2 warning(s) or note(s))", id="warnings"),
        pytest.param("Warn", 1, 3, False, "1 error finding(s)", id="error-under-warn"),
        pytest.param("Off", 0, 0, False, "not run (safety.lint: Off)", id="off"),
    ],
)
def test_lint(lint: str, errors: int, findings: int, satisfied: bool, detail: str) -> None:
    s = spec(safety={"lint": lint})
    item = judge(s, ChecklistFacts(lint_errors=errors, lint_findings=findings)).item("Lint")
    assert item is not None
    assert (item.satisfied, detail in (item.detail or "")) == (satisfied, True)


@pytest.mark.parametrize(
    ("analysis", "monitoring", "satisfied", "detail"),
    [
        pytest.param(None, None, False, "not configured (spec.analysis)", id="no-analysis"),
        pytest.param(ANALYSIS, None, False, "checked before the start", id="not-measured"),
        pytest.param(
            ANALYSIS,
            MonitoringFacts(baselines={"errors": 0.02}, problems={}),
            True,
            "baselines: errors 0.02",
            id="baseline",
        ),
        pytest.param(
            ANALYSIS,
            MonitoringFacts(baselines={}, problems={"errors": "cannot connect to Prometheus"}),
            False,
            "errors: cannot connect to Prometheus",
            id="unreachable",
        ),
    ],
)
def test_monitoring(
    analysis: dict[str, Any] | None,
    monitoring: MonitoringFacts | None,
    satisfied: bool,
    detail: str,
) -> None:
    s = spec(analysis=analysis) if analysis else spec()
    item = judge(s, ChecklistFacts(monitoring=monitoring)).item("Monitoring")
    assert item is not None
    assert item.satisfied is satisfied
    assert detail in (item.detail or "")


def test_monitoring_after_the_start_keeps_what_held_then() -> None:
    s = spec(analysis=ANALYSIS)
    before = evaluate_checklist(
        s,
        DatabaseMigrationStatus(),
        ChecklistFacts(monitoring=MonitoringFacts(baselines={"errors": 0.5}, problems={})),
    )
    after = evaluate_checklist(s, DatabaseMigrationStatus(checklist=before), ChecklistFacts())
    assert after.item("Monitoring") == before.item("Monitoring")


def test_required_items_and_checkboxes() -> None:
    s = spec(checklist={"require": ["Approval", "RollbackPlan"]})
    waiting = judge(s)
    assert (waiting.complete, waiting.missing) == (False, ["Approval"])
    assert waiting.checkboxes is not None
    assert "[x] RollbackPlan (required): every step can be undone (1)" in waiting.checkboxes
    assert "[ ] Approval (required): not approved (annotation dbmigrate.io/approved-by)" in (
        waiting.checkboxes
    )
    assert "[ ] Monitoring: not configured (spec.analysis)" in waiting.checkboxes
    approved = judge(s, ChecklistFacts(approval=Approval("alice", "kubectl-annotate", "T")))
    assert (approved.complete, approved.missing) == (True, None)
    assert approved.approved_by == "alice"
    assert approved.approval_set_by == "kubectl-annotate"


def _metadata(*entries: tuple[str, str, bool], value: str | None = "alice") -> dict[str, Any]:
    managed = []
    for manager, time, owns in entries:
        annotations = {"f:dbmigrate.io/approved-by": {}} if owns else {"f:other": {}}
        managed.append(
            {
                "manager": manager,
                "operation": "Update",
                "time": time,
                "fieldsV1": {"f:metadata": {"f:annotations": annotations}},
            }
        )
    annotations = {"dbmigrate.io/approved-by": value} if value is not None else {}
    return {"annotations": annotations, "managedFields": managed}


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(_metadata(value=None), None, id="no-annotation"),
        pytest.param(_metadata(value="  "), None, id="blank"),
        pytest.param(_metadata(), Approval("alice"), id="no-managed-fields"),
        pytest.param(
            _metadata(
                ("kubectl-client-side-apply", "2026-12-01T10:00:00Z", False),
                ("kubectl-annotate", "2026-12-02T09:00:00Z", True),
            ),
            Approval("alice", "kubectl-annotate", "2026-12-02T09:00:00Z"),
            id="annotate",
        ),
        pytest.param(
            _metadata(
                ("argocd-controller", "2026-12-01T10:00:00Z", True),
                ("kubectl-annotate", "2026-12-02T09:00:00Z", True),
            ),
            Approval("alice", "kubectl-annotate", "2026-12-02T09:00:00Z"),
            id="newest-owner",
        ),
    ],
)
def test_approval_of(metadata: dict[str, Any], expected: Approval | None) -> None:
    assert approval_of(metadata) == expected


@pytest.mark.parametrize(
    ("require", "facts", "reason", "stalled"),
    [
        pytest.param(
            ["Approval"],
            ChecklistFacts(),
            reasons.CHECKLIST_INCOMPLETE,
            False,
            id="awaiting-approval",
        ),
        pytest.param(
            ["Approval"], ChecklistFacts(approval=Approval("bob")), None, False, id="approved"
        ),
        pytest.param(
            ["Lint"],
            ChecklistFacts(lint_errors=1, lint_findings=1),
            reasons.CHECKLIST_INCOMPLETE,
            True,
            id="lint-needs-a-new-spec",
        ),
        pytest.param([], ChecklistFacts(), None, False, id="nothing-required"),
    ],
)
def test_decide_holds_the_first_step(
    require: list[str], facts: ChecklistFacts, reason: str | None, stalled: bool
) -> None:
    s = spec(checklist={"require": require}, safety={"lint": "Warn"})
    st = DatabaseMigrationStatus()
    obs = d.Observation(
        now=NOW,
        rollout_gates=False,
        checklist=evaluate_checklist(s, st, facts),
        lint_errors=facts.lint_errors,
    )
    action = d.decide(s, st, obs)
    if reason is None:
        assert isinstance(action, d.Start)
        assert wants_lock(s, st, obs)
        return
    assert isinstance(action, d.Wait)
    assert (action.phase, action.reason, action.stalled) == ("Waiting", reason, stalled)
    assert "checklist incomplete, waiting for:" in action.message
    # Waiting for a person must not keep other migrations of the database waiting.
    assert not wants_lock(s, st, obs)


def test_the_gate_holds_only_before_the_start() -> None:
    s = spec(checklist={"require": ["Approval"]})
    st = DatabaseMigrationStatus(phase="Progressing", started_at="2026-12-02T11:00:00Z")
    obs = d.Observation(now=NOW, rollout_gates=False, checklist=judge(s))
    action = d.decide(s, st, obs)
    assert isinstance(action, d.RunStep)
    assert wants_lock(s, st, obs)


def _rehearsed(result: str) -> DatabaseMigrationStatus:
    done = RehearsalStatus(
        result=result,  # type: ignore[arg-type]
        generation=1,
        seconds=2.5,
        rows_copied=100,
        steps=[
            RehearsalStep(step="expand", phase="up", seconds=0.5, result="Succeeded"),
            RehearsalStep(step="expand", phase="down", seconds=0.25, result="Succeeded"),
        ],
        message=None if result == "Passed" else "down did not restore the schema",
    )
    return DatabaseMigrationStatus(rehearsal=done)


@pytest.mark.parametrize(
    ("st", "lock_held", "action", "wants"),
    [
        pytest.param(DatabaseMigrationStatus(), True, d.Rehearse, True, id="rehearse-first"),
        pytest.param(DatabaseMigrationStatus(), False, d.Wait, True, id="lock-for-rehearsal"),
        pytest.param(_rehearsed("Passed"), False, d.Wait, False, id="then-the-checklist"),
        pytest.param(_rehearsed("Failed"), False, d.Wait, False, id="failed-rehearsal-stops"),
    ],
)
def test_the_rehearsal_comes_before_the_approval(
    st: DatabaseMigrationStatus, lock_held: bool, action: type, wants: bool
) -> None:
    s = spec(rehearsal={}, checklist={"require": ["Rehearsal", "Approval"]})
    obs = d.Observation(now=NOW, rollout_gates=False, lock_held=lock_held)
    obs = replace(obs, checklist=evaluate_checklist(s, st, ChecklistFacts()))
    got = d.decide(s, st, obs)
    assert isinstance(got, action)
    assert wants_lock(s, st, obs) is wants
    if isinstance(got, d.Wait) and st.rehearsal is not None:
        expected = (
            reasons.CHECKLIST_INCOMPLETE
            if st.rehearsal.result == "Passed"
            else reasons.REHEARSAL_FAILED
        )
        assert got.reason == expected
    rehearsal = obs.checklist.item("Rehearsal") if obs.checklist else None
    assert rehearsal is not None
    if st.rehearsal is not None and st.rehearsal.result == "Passed":
        assert rehearsal.satisfied
        assert rehearsal.detail == "passed in 2.5s (up 0.5s, down 0.2s; 100 rows copied)"

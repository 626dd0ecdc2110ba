"""The rehearsal, decided (`core.rehearsal`) and gated in `core.decide`.

Aspects: the sequence (round trip before the point of no return, up only past it, every
runnable step reapplied; awaitRollout and job steps skipped with why; a step without down SQL
before the point of no return makes the round trip fail); the scratch database's name (stable,
a PostgreSQL identifier, one per migration); `decide` before the start: rehearse once, go on
after a pass, stop on a failure of this generation and rehearse again after a spec change,
never once started, never over history rows, after lint and configuration problems; a failed
rehearsal lets go of the database's migration lock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, RehearsalStatus
from dbmigrate.core import decide as d
from dbmigrate.core.rehearsal import (
    SCRATCH_PREFIX,
    SKIP_AWAIT_ROLLOUT,
    SKIP_JOB,
    plan_rehearsal,
    scratch_database_name,
)
from dbmigrate.reconcile.observe import wants_lock

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def sql(name: str, down: bool = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"up": f"CREATE TABLE {name} (id int)"}
    if down:
        body["down"] = f"DROP TABLE {name}"
    return {"name": name, "sql": body, **extra}


BACKFILL = {"name": "fill", "backfill": {"table": "t", "set": "c = 1"}}
RELEASE = {"name": "release", "awaitRollout": {"image": "app:v2"}}
TOOL = {"name": "tool", "job": {"image": "tool:1"}}


def spec(steps: list[dict[str, Any]], **extra: Any) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_c",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "target": {"deployment": "app"},
            "steps": steps,
            **extra,
        }
    )


# --- the sequence ---------------------------------------------------------------------------


def names(steps: tuple[Any, ...]) -> list[str]:
    return [s.name for s in steps]


PLANS = [
    pytest.param(
        [sql("a"), BACKFILL, sql("b")],
        (["a", "fill", "b"], ["a", "fill", "b"], [], []),
        id="no-point-of-no-return-everything-round-trips",
    ),
    pytest.param(
        [sql("a"), sql("b", pointOfNoReturn=True), sql("c", down=False)],
        (["a"], ["a", "b", "c"], ["b", "c"], []),
        id="point-of-no-return-and-after-up-only",
    ),
    pytest.param(
        [sql("a", pointOfNoReturn=True), sql("b")],
        ([], ["a", "b"], ["a", "b"], []),
        id="first-step-is-the-point-of-no-return",
    ),
    pytest.param(
        [sql("a"), RELEASE, TOOL, sql("b")],
        (
            ["a", "b"],
            ["a", "b"],
            [],
            [("release", SKIP_AWAIT_ROLLOUT), ("tool", SKIP_JOB)],
        ),
        id="rollout-and-job-steps-skipped",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), PLANS)
def test_plan(steps: list[dict[str, Any]], expected: tuple[Any, ...]) -> None:
    plan = plan_rehearsal(spec(steps))
    round_trip, reapply, up_only, skipped = expected
    assert names(plan.round_trip) == round_trip
    assert names(plan.reapply) == reapply
    assert list(plan.up_only) == up_only
    assert list(plan.skipped) == skipped
    assert plan.irreversible is None


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        pytest.param(
            [sql("a"), sql("b", down=False), sql("c", pointOfNoReturn=True)],
            "step 'b' has no down SQL before the point of no return ('c')",
            id="before-the-point-of-no-return",
        ),
        pytest.param(
            [sql("a", down=False)],
            "step 'a' has no down SQL and no step is marked pointOfNoReturn",
            id="no-point-of-no-return",
        ),
    ],
)
def test_irreversible_step_in_the_round_trip(steps: list[dict[str, Any]], words: str) -> None:
    plan = plan_rehearsal(spec(steps))
    assert plan.irreversible is not None
    assert words in plan.irreversible


def test_job_step_before_the_point_of_no_return_does_not_block_the_round_trip() -> None:
    plan = plan_rehearsal(spec([sql("a"), TOOL, sql("b")]))
    assert plan.irreversible is None
    assert names(plan.round_trip) == ["a", "b"]


# --- the scratch database ----------------------------------------------------------------------


def test_scratch_name_is_stable_short_and_per_migration() -> None:
    one = scratch_database_name("shop", "add-email", "20240115120000_add_email")
    assert one == scratch_database_name("shop", "add-email", "20240115120000_add_email")
    assert one.startswith(SCRATCH_PREFIX)
    assert len(one.encode()) <= 63
    assert one.replace("_", "").isalnum()
    assert one == one.lower()
    others = {
        scratch_database_name("other", "add-email", "20240115120000_add_email"),
        scratch_database_name("shop", "add-email-2", "20240115120000_add_email"),
        scratch_database_name("shop", "add-email", "20240115120001_add_email"),
        scratch_database_name("shop", "x" * 253, "2" * 14 + "_" + "y" * 185),
    }
    assert one not in others
    assert len(others) == 4
    assert all(len(o) <= 63 for o in others)


# --- decide -------------------------------------------------------------------------------------

REHEARSED = spec([sql("a"), sql("b")], rehearsal={"sampleRows": 10})


def status(
    rehearsal: str | None = None, generation: int = 1, started: bool = False
) -> DatabaseMigrationStatus:
    st = DatabaseMigrationStatus(
        phase="Progressing" if started else ("Failed" if rehearsal == "Failed" else "Pending"),
        started_at="2026-11-28T11:59:00Z" if started else None,
    )
    if rehearsal is not None:
        st.rehearsal = RehearsalStatus(
            result=rehearsal,  # type: ignore[arg-type]
            generation=generation,
            message="down did not restore the schema",
        )
    return st


def obs(**kw: Any) -> d.Observation:
    return replace(d.Observation(now=NOW, rollout_gates=False), **kw)


REHEARSAL_FAILED = d.Wait(
    "Failed",
    reasons.REHEARSAL_FAILED,
    "the rehearsal on a scratch copy failed: down did not restore the schema; nothing ran on "
    "the real database (steps cannot change: fix them in a new migration; a changed "
    "spec.rehearsal rehearses again)",
    stalled=True,
    requeue_after=60.0,
)

DECISIONS = [
    pytest.param(spec([sql("a")]), status(), obs(), d.Start(None), id="no-rehearsal-asked-starts"),
    pytest.param(REHEARSED, status(), obs(), d.Rehearse(), id="rehearses-first"),
    pytest.param(REHEARSED, status("Passed"), obs(), d.Start(None), id="passed-starts"),
    pytest.param(
        REHEARSED, status("Failed"), obs(), REHEARSAL_FAILED, id="failed-stops-before-the-start"
    ),
    pytest.param(
        REHEARSED,
        status("Failed"),
        obs(lock_held=False),
        REHEARSAL_FAILED,
        id="failed-needs-no-lock",
    ),
    pytest.param(
        REHEARSED,
        status("Failed", generation=1),
        obs(generation=2),
        d.Rehearse(),
        id="failed-then-spec-changed-rehearses-again",
    ),
    pytest.param(
        REHEARSED,
        status("Passed", generation=1),
        obs(generation=2),
        d.Start(None),
        id="passed-stays-passed-after-a-spec-change",
    ),
    pytest.param(
        REHEARSED,
        status(started=True),
        obs(),
        d.RunStep("a"),
        id="started-is-never-rehearsed",
    ),
    pytest.param(
        REHEARSED,
        status(),
        obs(lock_held=False),
        d.Wait(
            "Waiting",
            reasons.ANOTHER_MIGRATION_RUNNING,
            "another migration holds this database's migration lock; waiting for it to finish",
            requeue_after=5.0,
        ),
        id="waits-for-the-lock-before-rehearsing",
    ),
    pytest.param(
        REHEARSED,
        status(),
        obs(applied={"a": d.AppliedStep("up", "x")}),
        d.Start(None),
        id="history-rows-are-not-rehearsed",
    ),
    pytest.param(
        REHEARSED,
        status(),
        obs(problem=d.ConfigProblem(reasons.DATABASE_UNREACHABLE, "down")),
        d.Wait("Pending", reasons.DATABASE_UNREACHABLE, "down", requeue_after=10.0),
        id="configuration-problem-first",
    ),
]


@pytest.mark.parametrize(("the_spec", "the_status", "seen", "expected"), DECISIONS)
def test_decide(
    the_spec: DatabaseMigrationSpec,
    the_status: DatabaseMigrationStatus,
    seen: d.Observation,
    expected: d.Action,
) -> None:
    assert d.decide(the_spec, the_status, seen) == expected


def test_lint_errors_block_before_the_rehearsal() -> None:
    action = d.decide(REHEARSED, status(), obs(lint_errors=1))
    assert isinstance(action, d.Wait)
    assert action.reason == reasons.LINT_FAILED


@pytest.mark.parametrize(
    ("the_status", "generation", "wanted"),
    [
        pytest.param(status(), 1, True, id="before-the-rehearsal"),
        pytest.param(status("Passed"), 1, True, id="passed"),
        pytest.param(status("Failed"), 1, False, id="failed-lets-go"),
        pytest.param(status("Failed", generation=1), 2, True, id="failed-then-changed"),
    ],
)
def test_migration_lock_after_a_rehearsal(
    the_status: DatabaseMigrationStatus, generation: int, wanted: bool
) -> None:
    assert wants_lock(REHEARSED, the_status, obs(generation=generation)) is wanted

"""The post-deployment watch's judgement and decisions (core.watch), as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.api import reasons
from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.api.postdeploy import Finding, PostDeploy, PostDeployStatus
from dbmigrate.core import decide as d
from dbmigrate.core.actions import is_active
from dbmigrate.core.lint import lint_migration
from dbmigrate.core.plan import watched_relations
from dbmigrate.core.watch import (
    IndexStats,
    StatementStats,
    WatchBaseline,
    WatchObservation,
    WatchSample,
    judge,
    seconds_until_sample,
)

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
POST = PostDeploy(watch="1h", interval="1m", min_calls=10)


def stmt(qid: str, calls: int, total_ms: float) -> StatementStats:
    return StatementStats(
        queryid=qid,
        query=f"SELECT * FROM users WHERE q{qid}",
        calls=calls,
        total_ms=total_ms,
        max_ms=total_ms,
    )


def seen(
    before: list[StatementStats],
    now: list[StatementStats],
    indexes_before: frozenset[str] = frozenset(),
    indexes_now: tuple[IndexStats, ...] = (),
) -> WatchObservation:
    return WatchObservation(
        WatchBaseline(("users",), tuple(before), indexes_before),
        WatchSample(tuple(now), indexes_now),
    )


JUDGED = [
    pytest.param(
        seen([stmt("1", 100, 50.0)], [stmt("1", 200, 50.0 + 100 * 1.6)]),
        [],
        id="3.2x-slower-is-a-regression",
    ),
    pytest.param(
        seen([stmt("1", 100, 50.0)], [stmt("1", 200, 50.0 + 100 * 0.9)]),
        None,
        id="1.8x-is-within-2x",
    ),
    pytest.param(
        seen([stmt("1", 100, 2.0)], [stmt("1", 200, 2.0 + 100 * 0.1)]),
        None,
        id="5x-of-a-tiny-time-is-noise",
    ),
    pytest.param(
        seen([stmt("1", 100, 50.0)], [stmt("1", 105, 50.0 + 5 * 10.0)]),
        None,
        id="too-few-calls-since-the-snapshot",
    ),
    pytest.param(
        seen([stmt("1", 100, 50.0)], [stmt("1", 20, 20 * 2.0)]),
        [],
        id="a-reset-since-the-snapshot-counts-all-calls",
    ),
    pytest.param(
        seen([], [stmt("9", 500, 5000.0)]),
        None,
        id="a-new-statement-has-nothing-to-compare-with",
    ),
]


@pytest.mark.parametrize(("observation", "expected"), JUDGED)
def test_judge_statements(observation: WatchObservation, expected: list[str] | None) -> None:
    j = judge(POST, observation, None, NOW, final=False)
    kinds = [f.kind for f in j.new_findings]
    assert kinds == (["QueryRegression"] if expected is not None else [])
    if expected is not None:
        assert j.new_findings[0].queryid == "1"
        assert "limit 2.0x" in j.new_findings[0].message


def test_a_finding_is_reported_once() -> None:
    obs = seen([stmt("1", 100, 50.0)], [stmt("1", 200, 250.0)])
    first = judge(POST, obs, None, NOW, final=False)
    second = judge(POST, obs, list(first.findings), NOW, final=False)
    assert len(first.new_findings) == 1
    assert second.new_findings == ()
    assert len(second.findings) == 1


@pytest.mark.parametrize(
    ("scans", "final", "unused"),
    [
        pytest.param(0, True, True, id="never-scanned-at-the-end"),
        pytest.param(0, False, False, id="never-scanned-yet"),
        pytest.param(3, True, False, id="scanned"),
    ],
)
def test_unused_index(scans: int, final: bool, unused: bool) -> None:
    obs = seen(
        [],
        [],
        frozenset({"users_pkey"}),
        (IndexStats("users_pkey", "users", 0), IndexStats("idx_new", "users", scans)),
    )
    j = judge(POST, obs, None, NOW, final=final)
    assert [ix.name for ix in j.indexes] == ["idx_new"]  # the old index is not the migration's
    assert [f.index for f in j.new_findings] == (["idx_new"] if unused else [])


def test_sampling_interval_and_the_end() -> None:
    pd = PostDeployStatus(ends_at="2026-12-02T12:30:00Z", last_sampled_at="2026-12-02T11:59:30Z")
    assert seconds_until_sample(POST, pd, NOW) == 30.0
    assert seconds_until_sample(POST, pd.model_copy(update={"last_sampled_at": None}), NOW) == 0
    ended = pd.model_copy(update={"ends_at": "2026-12-02T11:59:59Z"})
    assert seconds_until_sample(POST, ended, NOW) == 0


# --- decide ------------------------------------------------------------------------------------


def spec(**post: Any) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20260101000000_x",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": [
                {
                    "name": "drop-index",
                    "sql": {"up": "DROP INDEX i", "down": "CREATE INDEX i ON t (a)"},
                },
                {"name": "contract", "sql": {"up": "SELECT 1"}, "pointOfNoReturn": True},
            ],
            "postDeploy": {"watch": "1h", **post},
        }
    )


def watching(**pd: Any) -> DatabaseMigrationStatus:
    return DatabaseMigrationStatus(
        phase="Succeeded",
        started_at="2026-12-02T11:00:00Z",
        post_deploy=PostDeployStatus(
            state=pd.pop("state", "Watching"), ends_at="2026-12-02T13:00:00Z", **pd
        ),
    )


REGRESSION = Finding(
    kind="QueryRegression", queryid="1", at="2026-12-02T11:59:00Z", message="q 1 3x"
)
UP = d.AppliedStep("up", "x")

DECISIONS = [
    pytest.param(
        spec(),
        watching(last_sampled_at="2026-12-02T11:59:50Z"),
        d.Observation(NOW),
        "Wait:Watching",
        id="between-samples",
    ),
    pytest.param(
        spec(),
        watching(),
        d.Observation(NOW, watch=seen([], [])),
        "RecordWatch",
        id="a-sample-is-due",
    ),
    pytest.param(
        spec(onRegression="Rollback"),
        watching(findings=[REGRESSION]),
        d.Observation(NOW, applied={"drop-index": UP}),
        f"StartRollback:{reasons.QUERY_REGRESSION}",
        id="regression-rolls-back",
    ),
    pytest.param(
        spec(onRegression="Rollback"),
        watching(findings=[REGRESSION]),
        d.Observation(NOW, applied={"drop-index": UP, "contract": UP}),
        "Wait:Watching",
        id="not-past-the-point-of-no-return",
    ),
    pytest.param(
        spec(),
        watching(findings=[REGRESSION]),
        d.Observation(NOW, applied={"drop-index": UP}),
        "Wait:Watching",
        id="report-only-by-default",
    ),
    pytest.param(
        spec(cleanup=[{"name": "vacuum", "sql": "VACUUM t"}]),
        watching(state="CleaningUp"),
        d.Observation(NOW),
        "RunCleanup:vacuum",
        id="cleanup-runs",
    ),
    pytest.param(
        spec(cleanup=[{"name": "vacuum", "sql": "VACUUM t"}]),
        watching(state="CleaningUp"),
        d.Observation(NOW, lock_held=False),
        f"Wait:{reasons.ANOTHER_MIGRATION_RUNNING}",
        id="cleanup-waits-for-the-lock",
    ),
    pytest.param(
        spec(cleanup=[{"name": "vacuum", "sql": "VACUUM t"}]),
        watching(state="CleaningUp"),
        d.Observation(NOW, applied={"vacuum": UP}),
        "RecordCleanup:vacuum",
        id="cleanup-found-in-history-after-a-crash",
    ),
    pytest.param(
        spec(cleanup=[{"name": "vacuum", "sql": "VACUUM t"}]),
        watching(state="CleaningUp", cleanup=[{"name": "vacuum", "state": "Succeeded"}]),
        d.Observation(NOW, applied={"vacuum": UP}),
        "FinishPostDeploy",
        id="cleanup-done",
    ),
    pytest.param(
        spec(),
        watching(),
        d.Observation(NOW, problem=d.ConfigProblem(reasons.DATABASE_UNREACHABLE, "down")),
        f"Wait:{reasons.DATABASE_UNREACHABLE}",
        id="database-unreachable",
    ),
    pytest.param(
        spec(),
        watching(findings=[REGRESSION]),
        d.Observation(NOW, rollback_requested=True),
        f"StartRollback:{reasons.ROLLBACK_REQUESTED}",
        id="rollback-asked-during-the-watch",
    ),
]


def describe(action: d.Action) -> str:
    if isinstance(action, d.Wait):
        return f"Wait:{action.reason}"
    if isinstance(action, d.StartRollback):
        return f"StartRollback:{action.reason}"
    if isinstance(action, d.RunCleanup | d.RecordCleanup):
        return f"{type(action).__name__}:{action.step}"
    return type(action).__name__


@pytest.mark.parametrize(("the_spec", "the_status", "observation", "expected"), DECISIONS)
def test_decide_after_success(
    the_spec: DatabaseMigrationSpec,
    the_status: DatabaseMigrationStatus,
    observation: d.Observation,
    expected: str,
) -> None:
    assert describe(d.decide(the_spec, the_status, observation)) == expected


@pytest.mark.parametrize(
    ("state", "finished", "active"),
    [
        pytest.param("Watching", False, True, id="watching"),
        pytest.param("CleaningUp", False, True, id="cleaning-up"),
        pytest.param("Finished", True, False, id="finished"),
        pytest.param("Skipped", True, False, id="skipped-by-apply"),
    ],
)
def test_a_watched_migration_keeps_its_runner(state: str, finished: bool, active: bool) -> None:
    st = watching(state=state, finished_at="2026-12-02T13:00:00Z" if finished else None)
    assert is_active(st, rollback_requested=False) is active


def test_cleanup_names_must_not_be_step_names() -> None:
    with pytest.raises(ValueError, match="has the name of a step"):
        spec(cleanup=[{"name": "contract", "sql": "VACUUM t"}])


def test_the_watched_relations_include_indexes_named_alone() -> None:
    the_spec = spec()
    assert watched_relations(the_spec, {}) == ((), ("i",))


def test_cleanup_sql_is_linted() -> None:
    findings = lint_migration(spec(cleanup=[{"name": "idx", "sql": "CREATE INDEX j ON t (b)"}]))
    assert any(f.step == "idx" and f.severity == "error" for f in findings)

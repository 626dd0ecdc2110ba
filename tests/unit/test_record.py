"""The migration's record, rendered from its spec and final status (core.record).

Aspects: the Succeeded log entry (per-step durations, rows backfilled, lock retries and
blocking episodes, the SLOs' baseline against their last value, rollback availability from the
point of no return and down SQL, the backup, the post-deployment watch's findings); the
post-mortem draft after a rollback or a failure (the trigger, the breaching measurements with
their timestamps, the step under way, the rollout undone, what was reverted, what was left past
the point of no return, and the team's questions left as placeholders); the `steps` column of
`dbmigrate.runs`; the ConfigMap (name, labels, owner, a report too large cut with a note).
"""

from __future__ import annotations

from typing import Any

import pytest

from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus
from dbmigrate.core.record import (
    CONFIG_MAP_KEY,
    build_report_config_map,
    fit_report,
    gather_facts,
    render_record,
    run_steps,
)
from dbmigrate.core.record.markdown import duration

STEPS: list[dict[str, Any]] = [
    {
        "name": "expand",
        "sql": {
            "up": "ALTER TABLE users ADD COLUMN email_verified boolean",
            "down": "ALTER TABLE users DROP COLUMN email_verified",
        },
    },
    {"name": "backfill", "backfill": {"table": "users", "set": "email_verified = false"}},
    {"name": "release", "awaitRollout": {"image": "app:v2"}},
    {
        "name": "contract",
        "sql": {"up": "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL"},
        "pointOfNoReturn": True,
    },
]

ANALYSIS = {
    "prometheus": {"address": "http://prometheus:9090"},
    "metrics": [
        {"name": "error-rate", "query": "rate(errors[1m])", "max": 0.05},
        {"name": "p99-latency", "query": "p99", "maxRatioToBaseline": 2},
    ],
}


def spec(steps: list[dict[str, Any]] = STEPS, analysis: bool = True) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_email_verified_column",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "target": {"deployment": "app"},
            "steps": steps,
            **({"analysis": ANALYSIS} if analysis else {}),
        }
    )


def step(name: str, state: str, start: str | None, end: str | None, **more: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "startedAt": start, "finishedAt": end, **more}


SUCCEEDED: dict[str, Any] = {
    "phase": "Succeeded",
    "startedAt": "2026-01-15T12:00:00Z",
    "finishedAt": "2026-01-15T12:03:32Z",
    "targetRevision": "4",
    "steps": [
        step("expand", "Succeeded", "2026-01-15T12:00:01Z", "2026-01-15T12:00:02Z", lockRetries=2),
        step(
            "backfill",
            "Succeeded",
            "2026-01-15T12:00:02Z",
            "2026-01-15T12:01:07Z",
            blockingEpisodes=1,
            backfill={"rowsDone": 1234567},
        ),
        step("release", "Succeeded", "2026-01-15T12:01:07Z", "2026-01-15T12:02:00Z"),
        step("contract", "Succeeded", "2026-01-15T12:02:00Z", "2026-01-15T12:02:01Z"),
    ],
    "analysis": {
        "baseline": {"error-rate": 0.002, "p99-latency": 0.120},
        "last": [
            {
                "metric": "error-rate",
                "value": 0.003,
                "threshold": "max 0.05",
                "result": "Successful",
                "at": "2026-01-15T12:03:30Z",
            },
            {
                "metric": "p99-latency",
                "value": 0.150,
                "threshold": "maxRatioToBaseline 2 (0.24)",
                "result": "Successful",
                "at": "2026-01-15T12:03:30Z",
            },
        ],
        "database": {"blockedBackends": 0, "longestLockWaitSeconds": 0.4},
    },
    "backup": {
        "state": "Succeeded",
        "location": "s3://backups/dbmigrate/20240115120000.dump",
        "beforeStep": "contract",
        "sizeBytes": 52428800,
    },
}

ROLLED_BACK: dict[str, Any] = {
    "phase": "RolledBack",
    "startedAt": "2026-01-15T12:00:00Z",
    "finishedAt": "2026-01-15T12:02:40Z",
    "targetRevision": "4",
    "currentStep": "release",
    "steps": [
        step("expand", "RolledBack", "2026-01-15T12:00:01Z", "2026-01-15T12:00:02Z"),
        step(
            "backfill",
            "RolledBack",
            "2026-01-15T12:00:02Z",
            "2026-01-15T12:01:07Z",
            backfill={"rowsDone": 5000},
        ),
        step("release", "RolledBack", "2026-01-15T12:01:07Z", None),
        step("contract", "Pending", None, None),
    ],
    "analysis": {
        "baseline": {"error-rate": 0.002},
        "last": [
            {
                "metric": "error-rate",
                "value": 0.31,
                "threshold": "max 0.05",
                "result": "Failed",
                "at": "2026-01-15T12:02:10Z",
            },
            {
                "metric": "p99-latency",
                "value": 0.130,
                "threshold": "maxRatioToBaseline 2 (0.24)",
                "result": "Successful",
                "at": "2026-01-15T12:02:10Z",
            },
        ],
    },
    "rollback": {
        "trigger": "SloBreached",
        "reason": "error-rate 0.31 > max 0.05 (2 consecutive)",
        "startedAt": "2026-01-15T12:02:11Z",
        "finishedAt": "2026-01-15T12:02:40Z",
        "rolloutUndone": True,
        "undoneToRevision": "4",
        "database": "RolledBack",
        "stepsReverted": ["release", "backfill", "expand"],
        "step": "release",
    },
}

PAST_PONR: dict[str, Any] = {
    **ROLLED_BACK,
    "phase": "Failed",
    "currentStep": None,
    "steps": [
        step("expand", "Succeeded", "2026-01-15T12:00:01Z", "2026-01-15T12:00:02Z"),
        step("backfill", "Succeeded", "2026-01-15T12:00:02Z", "2026-01-15T12:01:07Z"),
        step("release", "Succeeded", "2026-01-15T12:01:07Z", "2026-01-15T12:02:00Z"),
        step("contract", "Succeeded", "2026-01-15T12:02:00Z", "2026-01-15T12:02:01Z"),
    ],
    "rollback": {
        "trigger": "SloBreached",
        "reason": "error-rate 0.31 > max 0.05 (2 consecutive)",
        "startedAt": "2026-01-15T12:02:11Z",
        "rolloutUndone": True,
        "undoneToRevision": "4",
        "database": "Refused",
        "step": "contract",
    },
}

MANUAL_STEP_FAILURE: dict[str, Any] = {
    "phase": "Failed",
    "startedAt": "2026-01-15T12:00:00Z",
    "finishedAt": None,
    "currentStep": "backfill",
    "steps": [
        step("expand", "Succeeded", "2026-01-15T12:00:01Z", "2026-01-15T12:00:02Z"),
        step(
            "backfill",
            "Failed",
            "2026-01-15T12:00:02Z",
            "2026-01-15T12:00:09Z",
            reason="JobFailed",
            message="worker 1/2: canceling statement due to lock timeout",
        ),
        step("release", "Pending", None, None),
        step("contract", "Pending", None, None),
    ],
}


def render(status: dict[str, Any], outcome: str, *, analysis: bool = True, **kw: Any) -> str:
    facts = gather_facts(
        spec(analysis=analysis),
        DatabaseMigrationStatus.model_validate(status),
        resource="shop/add-email-verified",
        outcome=outcome,  # type: ignore[arg-type]
        **kw,
    )
    return render_record(facts)


@pytest.mark.parametrize(
    ("status", "outcome", "kw", "expected", "absent"),
    [
        pytest.param(
            SUCCEEDED,
            "Succeeded",
            {},
            [
                "# Migration Log",
                "## 2026-01-15: add_email_verified_column",
                "- Migration: `20240115120000_add_email_verified_column` (shop/add-email-verified)",
                "- Duration: 3 min 32 s",
                "- Rows backfilled: 1,234,567 (`backfill` 1,234,567)",
                "2 lock retries",
                "1 blocking episode ",
                "`expand` 2/0, `backfill` 0/1",
                "| 2 | `backfill` | backfill | Succeeded | 2026-01-15T12:00:02Z | "
                "2026-01-15T12:01:07Z | 1 min 5 s | 1,234,567 | 0 | 1 |",
                "| 1 | `expand` | sql | Succeeded |",
                "every SLO within its threshold",
                "`error-rate` 0.002 → 0.003",
                "| `p99-latency` | 0.12 | 0.15 | maxRatioToBaseline 2 (0.24) | Successful | "
                "2026-01-15T12:03:30Z |",
                "longest lock wait 0.4 s",
                "- Rollback: Not available: step `contract` is the point of no return",
                "- Backup: Succeeded, at `s3://backups/dbmigrate/20240115120000.dump`, before "
                "step `contract`, 52,428,800 bytes",
            ],
            ["Post-Mortem", "Root Cause"],
            id="log-entry-past-the-point-of-no-return",
        ),
        pytest.param(
            {
                **SUCCEEDED,
                "steps": [{**s, "state": "Succeeded"} for s in SUCCEEDED["steps"][:3]],
            },
            "Succeeded",
            {},
            ["- Rollback: Available (down SQL of step `expand`, in that order)"],
            ["Not available"],
            id="log-entry-rollback-available",
        ),
        pytest.param(
            {**SUCCEEDED, "analysis": {**SUCCEEDED["analysis"], "baseline": {"p99-latency": 0.12}}},
            "Succeeded",
            {},
            ["`error-rate` 0.003 (no baseline recorded); `p99-latency` 0.12 → 0.15"],
            [],
            id="log-entry-metric-without-baseline",
        ),
        pytest.param(
            {**SUCCEEDED, "analysis": None, "backup": None},
            "Succeeded",
            {"analysis": False},
            [
                "- Impact: not measured (no spec.analysis)",
                "Not measured: the migration has no `spec.analysis`.",
            ],
            ["- Backup:"],
            id="log-entry-without-analysis-says-so",
        ),
        pytest.param(
            ROLLED_BACK,
            "RolledBack",
            {"reason": "RolledBack", "message": "rollback complete"},
            [
                "## Rollback Post-Mortem: 20240115120000_add_email_verified_column",
                "### What Happened",
                "- Trigger: SloBreached: error-rate 0.31 > max 0.05 (2 consecutive)",
                "  - `error-rate` = 0.31, threshold max 0.05, baseline 0.002, at "
                "2026-01-15T12:02:10Z",
                "- Step running at the time: `release` (step 3, awaitRollout, started "
                "2026-01-15T12:01:07Z)",
                "- Rollout: undone to revision 4",
                "- Reverted: `release`, `backfill`, `expand` (newest first)",
                "- Left applied: nothing",
                "### Root Cause",
                "### Why We Missed It",
                "### Action Items",
                "- [ ] _To be decided by the team._",
                "### Next Attempt",
            ],
            ["`p99-latency` = ", "# Migration Log"],
            id="post-mortem-slo-breach-rolled-back",
        ),
        pytest.param(
            PAST_PONR,
            "Failed",
            {"reason": "PastPointOfNoReturn", "message": "database rollback refused"},
            [
                "- Outcome: Failed (PastPointOfNoReturn)",
                "- Step running at the time: `contract` (step 4, sql",
                "- Reverted: nothing (no step was reverted)",
                "- Left applied: `expand`, `backfill`, `release`, `contract` (point of no "
                "return) (no down migration): past the point of no return `contract`, not "
                "rolled back",
                "`error-rate` = 0.31",
            ],
            [],
            id="post-mortem-past-the-point-of-no-return",
        ),
        pytest.param(
            MANUAL_STEP_FAILURE,
            "Failed",
            {
                "reason": "JobFailed",
                "message": "step 'backfill' failed; rollback policy is Manual",
            },
            [
                "## Failure Post-Mortem",
                "- Trigger: JobFailed: step 'backfill' failed; rollback policy is Manual",
                "- Breaching measurements: none (the last analysis round breached no SLO)",
                "- Step running at the time: `backfill` (step 2, backfill",
                "- Step `backfill` failed (JobFailed): worker 1/2: canceling statement due to "
                "lock timeout",
                "- Rollout: not undone",
                "- Left applied: `expand`",
                "- Finished: —",
            ],
            ["Rollback started"],
            id="post-mortem-manual-policy-step-failure",
        ),
    ],
)
def test_rendered_record_holds_the_facts(
    status: dict[str, Any],
    outcome: str,
    kw: dict[str, Any],
    expected: list[str],
    absent: list[str],
) -> None:
    analysis = kw.pop("analysis", True)
    text = render(status, outcome, analysis=analysis, **kw)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    for fragment in absent:
        assert fragment not in text, f"{fragment!r} in:\n{text}"


def test_post_deploy_findings_are_in_the_log_entry() -> None:
    status = {
        **SUCCEEDED,
        "postDeploy": {
            "state": "Finished",
            "startedAt": "2026-01-15T12:03:32Z",
            "finishedAt": "2026-01-16T12:03:32Z",
            "statementsAvailable": True,
            "statements": [
                {
                    "queryid": "42",
                    "query": "SELECT * FROM users WHERE email = $1",
                    "calls": 900,
                    "meanMs": 3.5,
                    "maxMs": 20.0,
                    "baselineMeanMs": 1.0,
                    "ratio": 3.5,
                }
            ],
            "indexes": [{"name": "users_email_verified_idx", "table": "users", "scans": 0}],
            "findings": [
                {
                    "kind": "UnusedIndex",
                    "message": "index users_email_verified_idx was never scanned",
                    "at": "2026-01-16T12:03:32Z",
                    "index": "users_email_verified_idx",
                }
            ],
        },
    }
    text = render(status, "Succeeded")
    assert "### Post-deployment watch" in text
    assert "- State: Finished (2026-01-15T12:03:32Z to 2026-01-16T12:03:32Z)" in text
    assert "  - UnusedIndex at 2026-01-16T12:03:32Z: index users_email_verified_idx" in text
    assert "| `SELECT * FROM users WHERE email = $1` | 900 | 3.5 | 1 | 3.5 | 20 |" in text
    assert "| `users_email_verified_idx` | `users` | 0 |" in text


def test_a_query_regression_is_the_breaching_measurement_of_its_post_mortem() -> None:
    finding = {
        "kind": "QueryRegression",
        "queryid": "42",
        "at": "2026-01-15T12:05:00Z",
        "message": "query 42 (SELECT id FROM users WHERE email = $1) takes 9.1 ms on average "
        "over 120 call(s) since the migration, 130.0x its 0.07 ms before it (limit 2.0x)",
    }
    status = {
        **SUCCEEDED,
        "phase": "RolledBack",
        "finishedAt": "2026-01-15T12:05:04Z",
        "analysis": None,
        "rollback": {
            "trigger": "QueryRegression",
            "reason": "after the migration, ...; postDeploy.onRegression is Rollback",
            "startedAt": "2026-01-15T12:05:01Z",
            "step": "release",
            "stepsReverted": ["release", "backfill", "expand"],
        },
        "postDeploy": {"state": "RolledBack", "findings": [finding]},
    }
    text = render(status, "RolledBack", analysis=False)
    assert "- Trigger: QueryRegression: after the migration" in text
    assert (
        "  - query regression at 2026-01-15T12:05:00Z (post-deployment watch): query 42 "
        "(SELECT id FROM users WHERE email = $1) takes 9.1 ms" in text
    )
    assert "Breaching measurements: none" not in text
    assert "- Step running at the time: `release`" in text


def test_run_steps_carry_timings_rows_and_the_up_sql_of_sql_steps() -> None:
    facts = gather_facts(
        spec(),
        DatabaseMigrationStatus.model_validate(SUCCEEDED),
        resource="shop/m",
        outcome="Succeeded",
    )
    up = {"expand": STEPS[0]["sql"]["up"], "contract": STEPS[3]["sql"]["up"]}
    steps = run_steps(facts, up)
    assert [set(s) for s in steps] == [
        {
            "name",
            "kind",
            "state",
            "startedAt",
            "finishedAt",
            "seconds",
            "rows",
            "lockRetries",
            "blockingEpisodes",
            "sql",
        }
    ] * 4
    assert steps[0] == {
        "name": "expand",
        "kind": "sql",
        "state": "Succeeded",
        "startedAt": "2026-01-15T12:00:01Z",
        "finishedAt": "2026-01-15T12:00:02Z",
        "seconds": 1.0,
        "rows": None,
        "lockRetries": 2,
        "blockingEpisodes": 0,
        "sql": "ALTER TABLE users ADD COLUMN email_verified boolean",
    }
    assert (steps[1]["kind"], steps[1]["rows"], steps[1]["sql"], steps[1]["seconds"]) == (
        "backfill",
        1234567,
        None,
        65.0,
    )
    assert steps[2]["sql"] is None


def test_a_rerun_that_found_every_step_in_history_has_nothing_to_record() -> None:
    status = {
        **SUCCEEDED,
        "steps": [
            {**s, "message": "found in history" + ("; users analyzed" if i == 1 else "")}
            for i, s in enumerate(SUCCEEDED["steps"])
        ],
    }
    facts = gather_facts(
        spec(), DatabaseMigrationStatus.model_validate(status), resource="x", outcome="Succeeded"
    )
    assert facts.nothing_ran
    ran = gather_facts(
        spec(), DatabaseMigrationStatus.model_validate(SUCCEEDED), resource="x", outcome="Succeeded"
    )
    assert not ran.nothing_ran


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(None, "—", id="unknown"),
        pytest.param(0.2, "<1 s", id="sub-second"),
        pytest.param(32, "32 s", id="seconds"),
        pytest.param(65, "1 min 5 s", id="minutes"),
        pytest.param(3 * 3600 + 120, "3 h 2 min", id="hours"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_the_config_map_is_named_labelled_and_owned_by_the_migration() -> None:
    body = {"metadata": {"name": "add-email", "namespace": "shop", "uid": "u-1"}}
    cm = build_report_config_map(body, "# Migration Log\n")
    assert cm["metadata"]["name"] == "add-email-report"
    assert cm["metadata"]["namespace"] == "shop"
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "dbmigrate",
        "dbmigrate.io/migration": "add-email",
    }
    (owner,) = cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "DatabaseMigration",
        "add-email",
        "u-1",
        True,
    )
    assert cm["data"] == {CONFIG_MAP_KEY: "# Migration Log\n"}


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        pytest.param("short", False, id="fits"),
        pytest.param("x" * 2000, True, id="ascii-cut"),
        pytest.param("é" * 1500, True, id="cut-on-a-character-boundary"),
    ],
)
def test_a_report_too_large_for_a_config_map_is_cut_with_a_note(text: str, cut: bool) -> None:
    fitted = fit_report(text, limit=1000)
    assert len(fitted.encode("utf-8")) <= 1000
    assert ("This report was cut" in fitted) is cut
    if cut:
        assert "dbmigrate.runs" in fitted
        assert fitted.startswith(text[:100])
    else:
        assert fitted == text

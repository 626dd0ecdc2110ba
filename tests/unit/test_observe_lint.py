"""Lint as the runner observes it (reconcile.observe): once per change, and bounded in status.

Aspects: the same spec and SQL are linted once however many passes see them; a change of the
resolved SQL (a ConfigMap), of the spec or of the server version lints again; status keeps at
most MAX_FINDINGS_IN_STATUS findings, errors first, while the count of blocking errors covers
all of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dbmigrate.api.models import DatabaseMigrationSpec, DatabaseMigrationStatus, LintFinding
from dbmigrate.core import decide as d
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.reconcile import linting

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RISKY = "ALTER TABLE users ADD COLUMN flag boolean NOT NULL"  # an error finding
SAFE = "ALTER TABLE users ADD COLUMN flag boolean"


def spec(**safety: Any) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20261201120000_lint",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "safety": {"lint": "Enforce", **safety},
            "steps": [
                {"name": "one", "sql": {"upFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}}
            ],
        }
    )


def sql(up: str) -> dict[str, ResolvedSql]:
    return {"one": ResolvedSql(up, None)}


@pytest.mark.parametrize(
    ("second", "runs"),
    [
        pytest.param((spec(), sql(RISKY), 15), 1, id="same-inputs-linted-once"),
        pytest.param((spec(), sql(SAFE), 15), 2, id="sql-changed-lints-again"),
        pytest.param((spec(lockTimeout="3s"), sql(RISKY), 15), 2, id="spec-changed-lints-again"),
        pytest.param((spec(), sql(RISKY), 16), 2, id="server-changed-lints-again"),
    ],
)
async def test_lint_runs_once_per_change(second: tuple[Any, ...], runs: int) -> None:
    cache = linting.LintCache()
    first = await linting.lint(spec(), d.Observation(now=NOW), sql(RISKY), 15, cache)
    assert first.lint_errors >= 1
    again = await linting.lint(second[0], d.Observation(now=NOW), second[1], second[2], cache)
    assert cache.runs == runs
    if runs == 1:
        assert again.lint_findings == first.lint_findings


def finding(i: int, severity: str) -> LintFinding:
    return LintFinding(step="one", rule=f"rule-{i}", severity=severity, message="m")  # type: ignore[arg-type]


def test_status_keeps_a_bounded_list_errors_first() -> None:
    many = (*(finding(i, "warning") for i in range(80)), finding(80, "error"))
    obs = d.Observation(now=NOW, lint_findings=many, lint_errors=1)
    status = linting.record_lint_and_plan(
        spec(), DatabaseMigrationStatus(plan="kept"), obs, sql(SAFE), 15
    )
    assert status.lint is not None
    assert len(status.lint) == linting.MAX_FINDINGS_IN_STATUS
    assert status.lint[0].rule == "rule-80"
    assert status.plan == "kept"

"""The migration plan (core.plan) and `dbmigrate plan` without a database.

Aspects covered: step types derived from the statements; locks, rewrites and scans per
statement (SET NOT NULL after a validated CHECK needs no scan); estimates (rows, size, backfill
time at the given rate); reversibility, the safe rollback window, the point of no return (given,
or implied by a step without down SQL); how a backfill is undone; tables the plan reads
estimates for; the status.plan summary; formatting helpers; the CLI's usage errors.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from dbmigrate.api.models import DatabaseMigrationSpec
from dbmigrate.cli import main
from dbmigrate.core.batching import format_count as format_rows
from dbmigrate.core.plan import (
    TableEstimate,
    build_plan,
    format_bytes,
    format_seconds,
    render_plan,
    render_plan_summary,
    tables_touched,
)


def spec(*steps: dict[str, Any], **extra: Any) -> DatabaseMigrationSpec:
    doc: dict[str, Any] = {
        "migrationId": "20240115120000_test",
        "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
        "steps": list(steps),
        **extra,
    }
    return DatabaseMigrationSpec.model_validate(doc)


EXPAND = {
    "name": "expand",
    "sql": {
        "up": "ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified boolean;",
        "down": "ALTER TABLE users DROP COLUMN IF EXISTS email_verified;",
    },
}
BACKFILL = {
    "name": "backfill",
    "backfill": {
        "table": "users",
        "set": "email_verified = false",
        "where": "email_verified IS NULL",
    },
}
GATE = {"name": "release", "awaitRollout": {"image": "app:v2", "timeout": "10m"}}


@pytest.mark.parametrize(
    ("step", "label"),
    [
        pytest.param(EXPAND, "DDL", id="ddl"),
        pytest.param(
            {"name": "s", "sql": {"up": "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a);"}},
            "index",
            id="index",
        ),
        pytest.param(
            {"name": "s", "sql": {"up": "ALTER TABLE t VALIDATE CONSTRAINT c;"}},
            "constraint",
            id="constraint",
        ),
        pytest.param(
            {
                "name": "s",
                "sql": {
                    "up": "ALTER TABLE t ADD COLUMN IF NOT EXISTS a int;\n"
                    "UPDATE t SET a = 1 WHERE id < 10;"
                },
            },
            "DDL + DML",
            id="ddl-and-dml",
        ),
        pytest.param(BACKFILL, "backfill", id="backfill"),
        pytest.param(GATE, "rollout gate", id="gate"),
        pytest.param({"name": "s", "job": {"image": "alembic:1"}}, "tool job", id="job"),
    ],
)
def test_step_type(step: dict[str, Any], label: str) -> None:
    extra = {"target": {"deployment": "app"}} if "awaitRollout" in step else {}
    [planned] = build_plan(spec(step, **extra)).steps
    assert planned.type_label == label


def test_estimates_and_backfill_time() -> None:
    plan = build_plan(
        spec(EXPAND, BACKFILL),
        estimates={"users": TableEstimate(rows=5_000_000, size_bytes=1_288_490_189)},
        backfill_rate=50_000,
        backfill_rate_source="assumed",
    )
    backfill = plan.steps[1]
    assert (backfill.backfill_rows, backfill.backfill_seconds) == (5_000_000, 100.0)
    text = render_plan(plan)
    assert "- Tables: users (5,000,000 rows, 1.2 GiB)" in text
    assert "≈ 1 min 40 s of backfill at 50,000 rows/s (assumed)" in text
    assert "- Estimate: up to 5,000,000 rows ≈ 1 min 40 s at 50,000 rows/s (assumed)" in text
    assert "Row estimates: none" not in text


def test_without_estimates_the_plan_says_how_to_get_them() -> None:
    text = render_plan(build_plan(spec(EXPAND, BACKFILL), backfill_rate=50_000))
    assert "- Row estimates: none (run `dbmigrate plan --dsn …` to read them)" in text
    assert "backfill time unknown for backfill (no row estimate)" in text


def test_statement_table_has_lock_rewrite_and_scan() -> None:
    text = render_plan(
        build_plan(
            spec(
                {"name": "retype", "sql": {"up": "ALTER TABLE users ALTER COLUMN id TYPE bigint;"}}
            ),
            estimates={"users": TableEstimate(rows=10, size_bytes=8192)},
        )
    )
    assert (
        "| 1 | `ALTER TABLE users ALTER COLUMN id TYPE bigint` | ACCESS EXCLUSIVE (whole table "
        "rewrite) on users | yes | ALTER COLUMN id TYPE bigint rewrites users |"
    ) in text
    assert "- Table rewrites: retype: users" in text
    assert (
        "- Downtime: ACCESS EXCLUSIVE blocks reads and writes on users (10 rows, 8.0 KiB) for "
        "the whole rewrite (step retype)"
    ) in text
    assert "Migration with blocking phases" in text
    assert "- Reversible: **no** (no down SQL)" in text


def test_set_not_null_after_a_validated_check_needs_no_scan() -> None:
    plan = build_plan(
        spec(
            {
                "name": "check",
                "sql": {
                    "up": "ALTER TABLE users ADD CONSTRAINT c CHECK (a IS NOT NULL) NOT VALID;",
                    "down": "ALTER TABLE users DROP CONSTRAINT IF EXISTS c;",
                },
            },
            {
                "name": "validate",
                "sql": {"up": "ALTER TABLE users VALIDATE CONSTRAINT c;", "down": "SELECT 1;"},
            },
            {
                "name": "set",
                "sql": {
                    "up": "ALTER TABLE users ALTER COLUMN a SET NOT NULL;",
                    "down": "ALTER TABLE users ALTER COLUMN a DROP NOT NULL;",
                },
            },
        )
    )
    set_not_null = plan.steps[2].up[0]
    assert (set_not_null.effect.scan, set_not_null.effect.describe_lock()) == (
        False,
        "ACCESS EXCLUSIVE (brief)",
    )
    assert plan.findings == ()
    assert "Downtime: zero expected" in render_plan(plan)


def test_rollback_window_and_point_of_no_return() -> None:
    contract = {
        "name": "contract",
        "pointOfNoReturn": True,
        "sql": {"up": "ALTER TABLE users DROP COLUMN IF EXISTS legacy;"},
    }
    plan = build_plan(spec(EXPAND, BACKFILL, GATE, contract, target={"deployment": "app"}))
    assert [s.reversible for s in plan.steps] == [True, True, True, False]
    assert plan.point_of_no_return is plan.steps[3]
    text = render_plan(plan)
    assert (
        "- Steps 1 to 3 (`expand`, `backfill`, `release`): full rollback — undo the rollout, "
        "then the down SQL of the completed steps in reverse order; instant (every down "
        "statement is metadata-only)"
    ) in text
    rollback_steps = text.split("### Rollback Steps\n\n")[1].split("\n\n")[0].splitlines()
    assert rollback_steps[0].startswith("1. Undo the rollout of Deployment `app`")
    assert rollback_steps[1:] == [
        "2. `release`: nothing to run (the rollout is undone above)",
        "3. `backfill`: nothing to run; the values go with column(s) email_verified dropped by "
        "`expand`'s down SQL",
        "4. `expand`: `ALTER TABLE users DROP COLUMN IF EXISTS email_verified` (ACCESS EXCLUSIVE "
        "(brief))",
    ]
    assert "After step 4 `contract` succeeds" in text
    assert "Decision point: before step 4 `contract`." in text


def test_irreversible_step_is_the_effective_point_of_no_return() -> None:
    plan = build_plan(
        spec(
            {
                "name": "one-way",
                "sql": {"up": "ALTER TABLE users ADD COLUMN IF NOT EXISTS a text;"},
            },
            EXPAND,
        )
    )
    text = render_plan(plan)
    assert plan.point_of_no_return is None
    assert "Step 1 (`one-way`) has no down SQL" in text
    assert "None declared, but step 1 `one-way` cannot be undone" in text


def test_backfill_not_undone_by_an_earlier_down() -> None:
    plan = build_plan(spec(BACKFILL))
    assert "the rows it changed keep their new values" in render_plan(plan)


def test_lint_findings_are_in_the_plan() -> None:
    plan = build_plan(spec({"name": "idx", "sql": {"up": "CREATE INDEX i ON users (a);"}}))
    text = render_plan(plan)
    assert "- Lint: 1 error(s), 0 warning(s)" in text
    assert "- **error** `require-concurrent-index-creation` (idx, line 1): " in text


def test_tables_touched_leaves_out_tables_the_migration_creates() -> None:
    migration = spec(
        {"name": "create", "sql": {"up": "CREATE TABLE IF NOT EXISTS audit (id bigint);"}},
        {
            "name": "fk",
            "sql": {
                "up": "ALTER TABLE audit ADD CONSTRAINT f FOREIGN KEY (id) "
                "REFERENCES accounts (id) NOT VALID;"
            },
        },
        BACKFILL,
        {"name": "cm", "sql": {"upFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}},
    )
    assert tables_touched(migration) == ["accounts", "users"]
    resolved = {"cm": ("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON billing.invoices (a);", None)}
    assert tables_touched(migration, resolved) == ["accounts", "users", "billing.invoices"]


def test_summary_for_status() -> None:
    contract = {
        "name": "contract",
        "pointOfNoReturn": True,
        "sql": {"up": "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL;"},
    }
    summary = render_plan_summary(
        spec(EXPAND, BACKFILL, GATE, contract, target={"deployment": "a"})
    )
    assert summary.splitlines() == [
        "4 step(s): expand (DDL; ACCESS EXCLUSIVE (brief) on users), backfill (backfill of "
        "users), release (rollout gate), contract (constraint; ACCESS EXCLUSIVE (whole table "
        "scan) on users; point of no return).",
        "Table rewrites: none.",
        "Down SQL: expand; irreversible: contract.",
        "Automatic rollback possible until contract succeeds.",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.2, "1 s", id="under-a-second"),
        pytest.param(45, "45 s", id="seconds"),
        pytest.param(100, "1 min 40 s", id="minutes"),
        pytest.param(120, "2 min", id="whole-minutes"),
        pytest.param(7500, "2 h 5 min", id="hours"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        pytest.param(512, "512 B", id="bytes"),
        pytest.param(8192, "8.0 KiB", id="kib"),
        pytest.param(5 * 1024**3, "5.0 GiB", id="gib"),
    ],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text
    assert format_rows(1234567) == "1,234,567"


# ---------------------------------------------------------------------------------------------
# the command


@pytest.mark.parametrize(
    ("text", "argv", "message"),
    [
        pytest.param(None, [], "no such file", id="missing-file"),
        pytest.param("a: [", [], "invalid YAML", id="bad-yaml"),
        pytest.param("apiVersion: v1\nkind: ConfigMap\n", [], "no DatabaseMigration", id="none"),
        pytest.param(
            "kind: DatabaseMigration\nspec: {migrationId: x}\n", [], "spec.migrationId", id="bad"
        ),
        pytest.param(None, ["--backfill-rate", "0"], "must be positive", id="bad-rate"),
    ],
)
def test_plan_usage_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    argv: list[str],
    message: str,
) -> None:
    path = tmp_path / "m.yaml"
    if text is not None:
        path.write_text(text)
    elif argv:
        path.write_text(Path("examples/index-concurrently.yaml").read_text())
    assert main(["plan", "-f", str(path), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_plan_command_prints_each_migration_with_configmap_sql(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBMIGRATE_DSN", raising=False)
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: sql}
            data: {up.sql: "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON orders (a);"}
            ---
            kind: DatabaseMigration
            metadata: {name: one}
            spec:
              migrationId: "20240101000000_one"
              database: {dsnSecretRef: {name: db, key: dsn}}
              steps:
                - name: idx
                  sql: {upFrom: {configMapKeyRef: {name: sql, key: up.sql}}}
            ---
            kind: DatabaseMigration
            metadata: {name: two}
            spec:
              migrationId: "20240101000001_two"
              database: {dsnSecretRef: {name: db, key: dsn}}
              steps: [{name: b, backfill: {table: users, set: a = 1}}]
            """
        )
    )
    assert main(["plan", "-f", str(path), "--server-version", "13"]) == 0
    out = capsys.readouterr().out
    assert out.count("# Migration Plan: ") == 2
    assert "`CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON orders (a)`" in out
    assert "- Server: PostgreSQL 13 (given)" in out

"""`dbmigrate apply` against a real PostgreSQL: the operator's engine without Kubernetes.

Aspects: the seed's migration (expand, concurrent index, batched backfill, rollout gate,
NOT NULL via CHECK NOT VALID) applies to success, the awaitRollout step is skipped with a notice;
re-running is a no-op (the history table); the rehearsal runs first, and a checklist that
requires approval stops the command until `--approved-by` gives it; `spec.backup` takes no backup
here (no cluster to run its Job) and says so; a failing step rolls back the earlier ones and exits
1; SQL from a ConfigMap in the same file; usage errors exit 2 and never print the DSN.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.apply_helpers import create_users, run_apply, seed_migration


@pytest.fixture
def users(pg_conn: psycopg.Connection) -> psycopg.Connection:
    return create_users(pg_conn, 20_000)


def history(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT step, direction FROM dbmigrate.history ORDER BY id").fetchall()


def test_seed_migration_applies_and_rerun_is_a_noop(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    proc = run_apply(
        tmp_path, [seed_migration(before_the_start=True)], pg_dsn, "--approved-by", "alice"
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stderr
    assert "RehearsalPassed" in out
    assert "checklist complete" in out
    assert "approved by alice" in out
    assert "skipped: no Kubernetes rollout" in out
    assert "Succeeded" in out
    assert pg_dsn not in out
    assert "dbmigrate-local-only" not in out
    steps = ["expand", "index", "backfill", "release-v2", "contract-check", "contract"]
    assert history(users) == [(s, "up") for s in steps]
    assert users.execute(
        "SELECT count(*) FILTER (WHERE email_verified), count(*) FILTER (WHERE NOT "
        "email_verified) FROM users"
    ).fetchone() == (6666, 13334)
    nullable = users.execute(
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'email_verified'"
    ).fetchone()
    assert nullable == ("NO",)
    assert "users analyzed" in out
    # our ANALYZE after the backfill (a manual one; autovacuum's is last_autoanalyze)
    deadline = time.monotonic() + 10
    while (analyzed := _last_analyze(users)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert analyzed is not None

    again = run_apply(
        tmp_path, [seed_migration(before_the_start=True)], pg_dsn, "--approved-by", "alice"
    )
    assert again.returncode == 0, again.stderr
    assert "found in history" in again.stderr
    assert len(history(users)) == len(steps)


def _last_analyze(conn: psycopg.Connection) -> object:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'users'"
    ).fetchone()
    return row[0] if row else None


def test_a_required_approval_stops_the_command_before_anything_runs(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    proc = run_apply(tmp_path, [seed_migration(before_the_start=True)], pg_dsn)
    assert proc.returncode == 1, proc.stderr
    assert "ChecklistIncomplete" in proc.stderr
    assert "missing: Approval (pass --approved-by NAME); nothing was applied" in proc.stderr
    assert "[x] Rehearsal (required): passed" in proc.stderr
    assert history(users) == []  # (the rehearsal ran under the lock, which made the table)


def test_a_backup_is_not_taken_without_a_cluster_and_it_says_so(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    doc = seed_migration()
    doc["spec"]["backup"] = {"persistentVolumeClaim": {"claimName": "backups"}}
    proc = run_apply(tmp_path, [doc], pg_dsn)
    assert proc.returncode == 0, proc.stderr
    assert "no backup taken: dbmigrate apply runs no backup Job" in proc.stderr
    assert [s for s, _ in history(users)][-1] == "contract"


def test_failing_step_rolls_back_the_earlier_ones(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    doc = seed_migration()
    doc["spec"]["steps"] = [
        *copy.deepcopy(doc["spec"]["steps"][:3]),
        {"name": "broken", "sql": {"up": "ALTER TABLE nope ADD COLUMN x int", "down": "SELECT 1"}},
    ]
    proc = run_apply(tmp_path, [doc], pg_dsn)
    assert proc.returncode == 1, proc.stderr
    assert "42P01" in proc.stderr
    assert "RolledBack" in proc.stderr
    cols = users.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' "
        "AND column_name = 'email_verified'"
    ).fetchone()
    assert cols == (0,)
    assert history(users)[-3:] == [("backfill", "down"), ("index", "down"), ("expand", "down")]


def test_sql_from_a_config_map_in_the_same_file(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    migration = {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "from-cm"},
        "spec": {
            "migrationId": "20240301000000_from_configmap",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "steps": [
                {
                    "name": "a",
                    "sql": {"upFrom": {"configMapKeyRef": {"name": "sql", "key": "up.sql"}}},
                }
            ],
        },
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "sql"},
        "data": {"up.sql": "CREATE TABLE from_cm (id bigint PRIMARY KEY);"},
    }
    proc = run_apply(tmp_path, [migration, cm], pg_dsn)
    assert proc.returncode == 0, proc.stderr
    assert users.execute("SELECT to_regclass('from_cm') IS NOT NULL").fetchone() == (True,)


@pytest.mark.parametrize(
    ("docs", "extra", "words"),
    [
        pytest.param([], (), "has no DatabaseMigration", id="empty-file"),
        pytest.param(
            [
                {
                    "kind": "DatabaseMigration",
                    "apiVersion": "dbmigrate.io/v1alpha1",
                    "metadata": {"name": "x"},
                    "spec": {"migrationId": "nope"},
                }
            ],
            (),
            "migrationId",
            id="invalid-migration",
        ),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, pg_dsn: str, docs: list[dict[str, Any]], extra: tuple[str, ...], words: str
) -> None:
    proc = run_apply(tmp_path, docs, pg_dsn, *extra)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert "dbmigrate-local-only" not in proc.stderr


def test_interactive_waits_for_enter_at_await_rollout(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    doc = seed_migration()
    doc["spec"]["steps"] = [
        doc["spec"]["steps"][0],
        {"name": "release-v2", "awaitRollout": {"image": "shop-api:v2"}},
    ]
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "dbmigrate", "apply", "-f", str(path), "--interactive"],
        input="\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "DBMIGRATE_DSN": pg_dsn},
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "step 'release-v2': deploy the new version (shop-api:v2), then press Enter" in proc.stdout
    )
    assert history(users) == [("expand", "up"), ("release-v2", "up")]


# --- the record: dbmigrate.runs, --report FILE, dbmigrate report --------------------------------


def runs(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT migration_id, name, uid, outcome, started_at, finished_at, steps, report "
        "FROM dbmigrate.runs ORDER BY id"
    ).fetchall()


def run_report(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "report", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DBMIGRATE_DSN": dsn},
        timeout=60,
        check=False,
    )


def test_apply_records_the_run_in_dbmigrate_runs(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    doc = seed_migration()
    out = tmp_path / "log.md"
    proc = run_apply(tmp_path, [doc], pg_dsn, "--report", str(out))
    assert proc.returncode == 0, proc.stderr
    migration_id = doc["spec"]["migrationId"]
    assert f"record: Succeeded row of {migration_id} in dbmigrate.runs" in proc.stderr
    assert f"report: {out}" in proc.stderr
    ((mid, name, uid, outcome, started, finished, steps, report),) = runs(users)
    assert (mid, name, uid, outcome) == (migration_id, "dbmigrate apply", "", "Succeeded")
    assert started is not None
    assert finished >= started
    names = ["expand", "index", "backfill", "release-v2", "contract-check", "contract"]
    assert [s["name"] for s in steps] == names
    expand = doc["spec"]["steps"][0]["sql"]["up"]
    assert steps[0]["sql"] == expand
    assert steps[0]["kind"] == "sql"
    assert steps[0]["state"] == "Succeeded"
    assert steps[2]["rows"] == 20000
    assert steps[2]["sql"] is None
    assert all(s["seconds"] is not None for s in steps)
    assert out.read_text() == report
    assert "# Migration Log" in report
    assert "- Rows backfilled: 20,000 (`backfill` 20,000)" in report
    assert "- Impact: not measured (no spec.analysis)" in report
    assert "- Rollback: Not available: step `contract` is the point of no return" in report
    assert pg_dsn not in report

    printed = run_report(pg_dsn, "--migration-id", migration_id)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == report
    assert pg_dsn not in printed.stdout + printed.stderr

    # Applied again, nothing runs: the record of the run that applied it stays.
    again = run_apply(tmp_path, [doc], pg_dsn)
    assert again.returncode == 0, again.stderr
    assert "record: nothing ran; dbmigrate.runs keeps the record" in again.stderr
    assert [r[7] for r in runs(users)] == [report]


def test_a_failed_verify_rolls_back_and_records_a_post_mortem(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    doc = seed_migration()
    doc["spec"]["steps"] = [
        doc["spec"]["steps"][0],
        {
            "name": "check",
            "sql": {"up": "SELECT 1", "down": "SELECT 1"},
            "verify": "SELECT count(*) = 0 FROM users",
        },
    ]
    proc = run_apply(tmp_path, [doc], pg_dsn)
    assert proc.returncode == 1, proc.stderr
    migration_id = doc["spec"]["migrationId"]
    assert f"record: RolledBack row of {migration_id} in dbmigrate.runs" in proc.stderr
    ((_, _, _, outcome, _, finished, steps, report),) = runs(users)
    assert outcome == "RolledBack"
    assert finished is not None
    assert [(s["name"], s["state"]) for s in steps] == [
        ("expand", "RolledBack"),
        ("check", "Failed"),
    ]
    assert "## Rollback Post-Mortem: 20240115120000_add_email_verified_column" in report
    assert "- Trigger: VerifyFailed: step 'check' failed" in report
    assert "- Step running at the time: `check` (step 2, sql" in report
    assert "- Step `check` failed (VerifyFailed)" in report
    assert "- Reverted: `expand` (newest first)" in report
    assert "- Left applied: nothing (no step is still applied)" in report
    for question in ("### Root Cause", "### Why We Missed It", "### Action Items"):
        assert question in report
    printed = run_report(pg_dsn, "--migration-id", migration_id)
    assert printed.stdout == report


def test_report_without_a_run_says_so(pg_dsn: str, users: psycopg.Connection) -> None:
    printed = run_report(pg_dsn, "--migration-id", "20990101000000_never")
    assert printed.returncode == 1
    assert "no run of 20990101000000_never in dbmigrate.runs" in printed.stderr

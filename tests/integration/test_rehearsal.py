"""The rehearsal (`db.rehearsal.rehearse`) against a real PostgreSQL, and `dbmigrate rehearse`.

Aspects: the seed's migration passes (up with its backfill, verify, down, schema compared, up
again; the awaitRollout step skipped; the step past the point of no return up only); a down
that leaves an index behind fails with a diff naming it; a verify that is false, a step
without down SQL before the point of no return, and the timeout fail; sample rows respect
foreign keys (orphans pruned, the constraint added), `sampleRows: 0` copies the schema only,
sequences continue where the real ones stand; the scratch database is gone after a pass, after
a failure and after a timeout, and a leftover of a rehearsal that died is dropped first; the
real database is only read (no history, no column, its rows as they were); a role without
CREATEDB and a pg_dump older than the server are "could not rehearse", never a verdict; no
password in any message; the CLI's report and exit codes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from dbmigrate.api.models import DatabaseMigrationSpec, RehearsalStatus
from dbmigrate.core.rehearsal import scratch_database_name
from dbmigrate.core.steps import ResolvedSql
from dbmigrate.db.rehearsal import RehearsalRequest, RehearsalUnavailable, rehearse
from dbmigrate_dev.postgres import PASSWORD, PostgresServer

ROOT = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((ROOT / "examples" / "add-email-verified.yaml").read_text())

EXPAND = {
    "name": "expand",
    "sql": {
        "up": "ALTER TABLE users ADD COLUMN flag boolean;\n"
        "CREATE INDEX users_email_idx ON users (email);",
        "down": "DROP INDEX users_email_idx;\nALTER TABLE users DROP COLUMN flag;",
    },
}
# Down drops the column but forgets the index on another column.
FORGETFUL = {
    "name": "expand",
    "sql": {
        "up": EXPAND["sql"]["up"],  # type: ignore[index]
        "down": "ALTER TABLE users DROP COLUMN flag;",
    },
}


def spec_of(steps: list[dict[str, Any]], **extra: Any) -> DatabaseMigrationSpec:
    return DatabaseMigrationSpec.model_validate(
        {
            "migrationId": "20240115120000_add_flag",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "safety": {"lint": "Off"},
            "steps": steps,
            **extra,
        }
    )


def request(dsn: str, spec: DatabaseMigrationSpec, name: str = "m", **kw: Any) -> RehearsalRequest:
    sql = {s.name: ResolvedSql(s.sql.up or "", s.sql.down) for s in spec.steps if s.sql is not None}
    database = scratch_database_name(
        "test", f"{name}-{psycopg.conninfo.conninfo_to_dict(dsn)['dbname']}", spec.migration_id
    )
    return RehearsalRequest(spec=spec, sql=sql, real_dsn=dsn, database=database, **kw)


def databases(pg_server: PostgresServer) -> set[str]:
    with psycopg.connect(pg_server.dsn()) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def real_state(conn: psycopg.Connection) -> tuple[Any, ...]:
    """What a rehearsal must leave as it was: the users columns, indexes, row checksum and
    whether any history exists."""
    columns = conn.execute(
        "SELECT array_agg(column_name::text ORDER BY column_name) FROM information_schema.columns "
        "WHERE table_name = 'users'"
    ).fetchone()
    indexes = conn.execute(
        "SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes "
        "WHERE tablename = 'users'"
    ).fetchone()
    rows = conn.execute("SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u").fetchone()
    history = conn.execute("SELECT to_regclass('dbmigrate.history')").fetchone()
    return columns, indexes, rows, history


@pytest.fixture
def users(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute(
        "CREATE TABLE users (id bigserial PRIMARY KEY, email text, email_confirmed_at timestamptz)"
    )
    pg_conn.execute(
        "INSERT INTO users (email, email_confirmed_at) SELECT 'u' || g, "
        "CASE WHEN g % 3 = 0 THEN now() END FROM generate_series(1, 3000) g"
    )
    return pg_conn


def phases(verdict: RehearsalStatus) -> list[tuple[str, str, str]]:
    return [(s.phase, s.step, s.result) for s in verdict.steps or []]


# --- verdicts ---------------------------------------------------------------------------------


async def test_seed_migration_passes_and_leaves_nothing(
    pg_dsn: str, users: psycopg.Connection, pg_server: PostgresServer
) -> None:
    before = real_state(users)
    spec = DatabaseMigrationSpec.model_validate(SEED["spec"])
    req = request(pg_dsn, spec, sample_rows=500, generation=4)
    verdict = await rehearse(req)
    assert verdict.result == "Passed", verdict.message
    assert verdict.generation == 4
    assert phases(verdict) == [
        ("up", "expand", "Succeeded"),
        ("up", "index", "Succeeded"),
        ("up", "backfill", "Succeeded"),
        ("up", "contract-check", "Succeeded"),
        ("down", "contract-check", "Succeeded"),
        ("down", "backfill", "Succeeded"),
        ("down", "index", "Succeeded"),
        ("down", "expand", "Succeeded"),
        ("reapply", "expand", "Succeeded"),
        ("reapply", "index", "Succeeded"),
        ("reapply", "backfill", "Succeeded"),
        ("reapply", "contract-check", "Succeeded"),
        ("reapply", "contract", "Succeeded"),
        ("verify", "contract", "Succeeded"),
    ]
    backfills = [
        s.message for s in verdict.steps or [] if s.step == "backfill" and s.phase != "down"
    ]
    assert backfills == ["500 rows in 1 batches"] * 2  # the sample, backfilled twice
    assert verdict.rows_copied == 500
    assert [(t.table, t.rows) for t in verdict.tables or []] == [("public.users", 500)]
    assert verdict.up_only == ["contract"]
    assert [s.step for s in verdict.skipped or []] == ["release-v2"]
    assert verdict.schema_diff is None
    assert "checked up only: contract" in (verdict.message or "")
    assert req.database not in databases(pg_server)
    assert real_state(users) == before


async def test_down_that_forgets_an_index_fails_with_a_diff(
    pg_dsn: str, users: psycopg.Connection, pg_server: PostgresServer
) -> None:
    before = real_state(users)
    req = request(pg_dsn, spec_of([FORGETFUL]))
    verdict = await rehearse(req)
    assert verdict.result == "Failed"
    assert verdict.schema_diff == ["index public.users_email_idx exists after down but not before"]
    assert "down did not restore the schema" in (verdict.message or "")
    assert "users_email_idx" in (verdict.message or "")
    assert phases(verdict) == [("up", "expand", "Succeeded"), ("down", "expand", "Succeeded")]
    assert req.database not in databases(pg_server)
    assert real_state(users) == before  # no column, no index, no history: nothing touched


async def test_a_correct_down_passes(pg_dsn: str, users: psycopg.Connection) -> None:
    verdict = await rehearse(request(pg_dsn, spec_of([EXPAND])))
    assert verdict.result == "Passed", verdict.message
    assert phases(verdict) == [
        ("up", "expand", "Succeeded"),
        ("down", "expand", "Succeeded"),
        ("reapply", "expand", "Succeeded"),
    ]


async def test_false_verify_fails(pg_dsn: str, users: psycopg.Connection) -> None:
    step = {**EXPAND, "verify": "SELECT count(*) = 0 FROM users"}
    verdict = await rehearse(request(pg_dsn, spec_of([step]), sample_rows=10))
    assert verdict.result == "Failed"
    (entry,) = verdict.steps or []
    assert (entry.phase, entry.result) == ("up", "Failed")
    assert "verify returned false" in (entry.message or "")
    assert "step 'expand' failed in the up phase" in (verdict.message or "")


async def test_sql_error_fails_without_a_password(pg_dsn: str, users: psycopg.Connection) -> None:
    step = {"name": "bad", "sql": {"up": "ALTER TABLE nope ADD COLUMN x int", "down": "SELECT 1"}}
    verdict = await rehearse(request(pg_dsn, spec_of([step])))
    assert verdict.result == "Failed"
    assert "42P01" in (verdict.message or "")
    assert PASSWORD not in verdict.model_dump_json()


async def test_point_of_no_return_is_checked_up_only(
    pg_dsn: str, users: psycopg.Connection
) -> None:
    contract = {
        "name": "contract",
        "pointOfNoReturn": True,
        "sql": {"up": "ALTER TABLE users DROP COLUMN email_confirmed_at"},  # no down
    }
    verdict = await rehearse(request(pg_dsn, spec_of([EXPAND, contract])))
    assert verdict.result == "Passed", verdict.message
    assert phases(verdict) == [
        ("up", "expand", "Succeeded"),
        ("down", "expand", "Succeeded"),
        ("reapply", "expand", "Succeeded"),
        ("reapply", "contract", "Succeeded"),
    ]
    assert verdict.up_only == ["contract"]


async def test_irreversible_step_before_the_point_of_no_return_fails(
    pg_dsn: str, users: psycopg.Connection
) -> None:
    drop = {"name": "drop", "sql": {"up": "ALTER TABLE users DROP COLUMN email_confirmed_at"}}
    verdict = await rehearse(request(pg_dsn, spec_of([EXPAND, drop])))
    assert verdict.result == "Failed"
    assert "step 'drop' has no down SQL" in (verdict.message or "")
    assert [p for p, _, _ in phases(verdict)] == ["up", "up"]


async def test_timeout_fails_and_drops_the_scratch_database(
    pg_dsn: str, users: psycopg.Connection, pg_server: PostgresServer
) -> None:
    slow = {"name": "slow", "sql": {"up": "SELECT pg_sleep(30)", "down": "SELECT 1"}}
    req = request(pg_dsn, spec_of([slow]), timeout=2.0)
    verdict = await rehearse(req)
    assert verdict.result == "Failed"
    assert "did not finish within 2s" in (verdict.message or "")
    assert "up: step 'slow'" in (verdict.message or "")
    assert req.database not in databases(pg_server)


# --- the copy ---------------------------------------------------------------------------------


async def test_sample_rows_respect_foreign_keys(
    pg_dsn: str, pg_conn: psycopg.Connection, pg_server: PostgresServer
) -> None:
    pg_conn.execute("CREATE TABLE teams (id int PRIMARY KEY)")
    pg_conn.execute("CREATE TABLE users (id int PRIMARY KEY, team_id int REFERENCES teams)")
    pg_conn.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users, note text)"
    )
    pg_conn.execute("CREATE TABLE unrelated (id int PRIMARY KEY)")
    pg_conn.execute("INSERT INTO teams SELECT g FROM generate_series(1, 1000) g")
    pg_conn.execute("INSERT INTO users SELECT g, 1001 - g FROM generate_series(1, 1000) g")
    pg_conn.execute(
        "INSERT INTO orders SELECT g, (g * 37) % 1000 + 1, NULL FROM generate_series(1, 1000) g"
    )
    pg_conn.execute("INSERT INTO unrelated SELECT g FROM generate_series(1, 10) g")
    step = {
        "name": "note",
        "sql": {
            "up": "ALTER TABLE orders ALTER COLUMN note SET DEFAULT 'x'",
            "down": "ALTER TABLE orders ALTER COLUMN note DROP DEFAULT",
        },
    }
    req = request(pg_dsn, spec_of([step]), sample_rows=100, keep=True)
    verdict = await rehearse(req)
    try:
        assert verdict.result == "Passed", verdict.message
        copied = {t.table: t.rows for t in verdict.tables or []}
        # users 1..100 reference teams 901..1000, not sampled (teams 1..100 are): pruned, and
        # with them every order.
        assert copied == {"public.orders": 0, "public.users": 0, "public.teams": 100}
        assert verdict.rows_copied == 100
        with psycopg.connect(pg_server.dsn(req.database)) as scratch:
            assert scratch.execute("SELECT count(*) FROM unrelated").fetchone() == (0,)
            fks = scratch.execute(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
            ).fetchone()
            assert fks == (2,)
    finally:
        pg_server.drop_database(req.database)


async def test_sampled_children_keep_their_parents(
    pg_dsn: str, pg_conn: psycopg.Connection, pg_server: PostgresServer
) -> None:
    pg_conn.execute("CREATE TABLE users (id int PRIMARY KEY)")
    pg_conn.execute("CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users)")
    pg_conn.execute("INSERT INTO users SELECT g FROM generate_series(1, 1000) g")
    pg_conn.execute(
        "INSERT INTO orders SELECT g, (g - 1) % 1000 + 1 FROM generate_series(1, 2000) g"
    )
    pg_conn.execute("INSERT INTO orders VALUES (2001, NULL)")  # references nothing: kept
    step = {
        "name": "idx",
        "sql": {
            "up": "CREATE INDEX orders_user_idx ON orders (user_id)",
            "down": "DROP INDEX orders_user_idx",
        },
    }
    verdict = await rehearse(request(pg_dsn, spec_of([step]), sample_rows=300))
    assert verdict.result == "Passed", verdict.message
    copied = {t.table: t.rows for t in verdict.tables or []}
    # orders 1..300 reference users 1..300, all sampled
    assert copied == {"public.orders": 300, "public.users": 300}


async def test_schema_only_and_sequences_continue(pg_dsn: str, users: psycopg.Connection) -> None:
    insert = {
        "name": "seed-row",
        "sql": {
            "up": "INSERT INTO users (email) VALUES ('new@example.com')",
            "down": "DELETE FROM users WHERE email = 'new@example.com'",
        },
        "verify": "SELECT id > 3000 FROM users WHERE email = 'new@example.com'",
    }
    schema_only = await rehearse(request(pg_dsn, spec_of([insert]), sample_rows=0))
    assert schema_only.result == "Passed", schema_only.message
    assert schema_only.rows_copied == 0
    assert schema_only.tables is None
    sampled = await rehearse(request(pg_dsn, spec_of([insert]), sample_rows=3000))
    assert sampled.result == "Passed", sampled.message  # id 3001, not a duplicate of row 1
    assert sampled.rows_copied == 3000


async def test_leftover_of_a_rehearsal_that_died_is_dropped(
    pg_dsn: str, users: psycopg.Connection, pg_server: PostgresServer
) -> None:
    req = request(pg_dsn, spec_of([EXPAND]))
    pg_server.create_database(req.database)  # what a rehearsal killed mid-way leaves
    with psycopg.connect(pg_server.dsn(req.database), autocommit=True) as leftover:
        leftover.execute("CREATE TABLE half_done (id int)")
    verdict = await rehearse(req)
    assert verdict.result == "Passed", verdict.message  # half_done would be in the diff
    assert req.database not in databases(pg_server)


# --- could not rehearse -----------------------------------------------------------------------


async def test_role_without_createdb_is_unavailable(
    pg_dsn: str, users: psycopg.Connection, pg_server: PostgresServer
) -> None:
    role = f"nocreate_{os.getpid()}"
    users.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB PASSWORD 'rehearse-pw-123'")
    users.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    dsn = pg_dsn.replace(f"postgres:{PASSWORD}@", f"{role}:rehearse-pw-123@")
    try:
        with pytest.raises(RehearsalUnavailable) as caught:
            await rehearse(request(dsn, spec_of([EXPAND])))
        assert "CREATEDB" in str(caught.value)
        assert "rehearse-pw-123" not in str(caught.value)
    finally:
        users.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        users.execute(f"DROP ROLE {role}")


async def test_unreachable_server_is_unavailable(pg_dsn: str, users: psycopg.Connection) -> None:
    from dbmigrate_dev.postgres import free_port

    other = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/postgres?connect_timeout=2"
    with pytest.raises(RehearsalUnavailable) as caught:
        await rehearse(request(pg_dsn, spec_of([EXPAND]), server_dsn=other))
    assert "cannot reach the rehearsal server" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_pg_dump_older_than_the_server_is_unavailable(
    pg_dsn: str,
    users: psycopg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_server: PostgresServer,
) -> None:
    # A pg_dump that says it is version 9: the version check must refuse it by its words.
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    req = request(pg_dsn, spec_of([EXPAND]))
    with pytest.raises(RehearsalUnavailable) as caught:
        await rehearse(req)
    assert "pg_dump 9 cannot copy the schema of a PostgreSQL 15 server" in str(caught.value)
    assert req.database not in databases(pg_server)


# --- the command line -------------------------------------------------------------------------


def run_rehearse(
    tmp_path: Path, steps: list[dict[str, Any]], dsn: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    doc = {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "cli", "namespace": "test"},
        "spec": spec_of(steps, rehearsal={"sampleRows": 50}).to_k8s(),
    }
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "rehearse", "-f", str(path), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "DBMIGRATE_DSN": dsn, "COLUMNS": "200"},
        timeout=240,
        check=False,
    )


def test_cli_passes_with_exit_0(tmp_path: Path, pg_dsn: str, users: psycopg.Connection) -> None:
    proc = run_rehearse(tmp_path, [EXPAND], pg_dsn)
    assert proc.returncode == 0, proc.stderr
    for words in ("reapply", "rows copied: 50 (public.users 50)", "Passed:"):
        assert words in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout


def test_cli_fails_with_exit_1_and_the_diff(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    proc = run_rehearse(tmp_path, [FORGETFUL], pg_dsn, "--sample-rows", "0")
    assert proc.returncode == 1, proc.stderr
    assert "the schema after down differs from the schema before" in proc.stderr
    assert "index public.users_email_idx exists after down but not before" in proc.stderr
    assert "rows copied: 0" in proc.stderr


def test_cli_usage_and_unavailable_exit_codes(
    tmp_path: Path, pg_dsn: str, users: psycopg.Connection
) -> None:
    bad_dsn = run_rehearse(tmp_path, [EXPAND], "postgresql://u:pw-secret@h:notaport/db")
    assert bad_dsn.returncode == 2
    assert "pw-secret" not in bad_dsn.stderr
    too_many = run_rehearse(tmp_path, [EXPAND], pg_dsn, "--sample-rows", "2000000")
    assert too_many.returncode == 2
    from dbmigrate_dev.postgres import free_port

    nowhere = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/x?connect_timeout=2"
    unavailable = run_rehearse(tmp_path, [EXPAND], nowhere)
    assert unavailable.returncode == 3, unavailable.stderr
    assert "could not rehearse" in unavailable.stderr
    assert PASSWORD not in unavailable.stderr

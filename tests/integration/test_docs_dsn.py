"""`dbmigrate docs --dsn` against a real PostgreSQL: the schema documentation from the catalog,
`dbmigrate.runs` and `dbmigrate.history`.

Aspects covered: per column, the migration and day that added it (with its default and
comment) and the one that set NOT NULL and indexed it; a migration reverted since (its history
rows `down`) and a rolled-back run are not counted; `--table` narrows (names as SQL spells
them, one table named twice documented once), `-o` writes a file; a
table and a column renamed by migrations are documented under their new names with their
history, a schema-qualified table as `schema.table`, a dropped one not at all; a `--table`
that does not exist is an error; the CLI as a subprocess, with the DSN from the environment,
never prints the DSN or its password, also when the connection fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from dbmigrate.cli import main
from dbmigrate.db.history import ensure_schema, insert_history
from dbmigrate.db.runs import RunRecord, write_run

ADD_COLUMN = "20240115120000_add_email_verified_column"
NOT_NULL = "20240116090000_email_verified_not_null"
REVERTED = "20240117100000_add_nickname"
ROLLED_BACK = "20240118100000_email_default"

EMAIL_VERIFIED = """\
### email_verified
- Type: boolean
- Default: false
- Nullable: no
- Description: Indicates if user's email has been verified
- Added: 2024-01-15 (Migration 20240115120000_add_email_verified_column, step expand)
- Changed: 2024-01-16 (Migration 20240116090000_email_verified_not_null, step contract, \
SET NOT NULL)
- Changed: 2024-01-16 (Migration 20240116090000_email_verified_not_null, step index, \
CREATE INDEX idx_users_email_verified USING btree)
- Indexes: idx_users_email_verified (btree, partial)
"""


async def migrate(
    conn: psycopg.AsyncConnection,
    migration_id: str,
    finished: datetime,
    steps: list[tuple[str, str]],
    *,
    outcome: str = "Succeeded",
) -> None:
    """Run the steps' SQL, record each step's history row and the run's row, as a migration
    that ended with `outcome` does."""
    for name, sql in steps:
        await conn.execute(sql)  # type: ignore[arg-type]  # the test's own SQL
        await insert_history(
            conn,
            migration_id=migration_id,
            step=name,
            step_kind="sql",
            direction="up",
            checksum="sha256:test",
            duration_ms=5,
        )
    await write_run(
        conn,
        RunRecord(
            migration_id=migration_id,
            name=f"shop/{migration_id}",
            outcome=outcome,
            started_at=finished,
            finished_at=finished,
            report=f"# {migration_id}\n",
            steps=[
                {
                    "name": name,
                    "kind": "sql",
                    "state": "Succeeded",
                    "startedAt": finished.isoformat(),
                    "finishedAt": finished.isoformat(),
                    "seconds": 0.005,
                    "rows": None,
                    "lockRetries": 0,
                    "blockingEpisodes": 0,
                    "sql": sql,
                }
                for name, sql in steps
            ],
        ),
    )


async def revert(
    conn: psycopg.AsyncConnection, migration_id: str, steps: list[tuple[str, str]]
) -> None:
    """Run the steps' down SQL and write their `down` history rows (a later rollback)."""
    for name, sql in steps:
        await conn.execute(sql)  # type: ignore[arg-type]
        await insert_history(
            conn,
            migration_id=migration_id,
            step=name,
            step_kind="sql",
            direction="down",
            checksum="sha256:test",
            duration_ms=5,
        )


@pytest.fixture
async def shop(pg_dsn: str) -> str:
    """users, changed by two Succeeded migrations, one reverted since and one rolled back."""
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await ensure_schema(conn)
        await conn.execute("CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL)")
        await conn.execute("CREATE TABLE unrelated (id int)")
        await migrate(
            conn,
            ADD_COLUMN,
            datetime(2024, 1, 15, 12, 0, 30, tzinfo=UTC),
            [
                (
                    "expand",
                    "ALTER TABLE users ADD COLUMN email_verified boolean DEFAULT false; "
                    "COMMENT ON COLUMN users.email_verified IS "
                    "'Indicates if user''s email has been verified';",
                )
            ],
        )
        await migrate(
            conn,
            NOT_NULL,
            datetime(2024, 1, 16, 9, 0, tzinfo=UTC),
            [
                ("contract", "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL;"),
                (
                    "index",
                    "CREATE INDEX CONCURRENTLY idx_users_email_verified ON users "
                    "(email_verified) WHERE email_verified;",
                ),
            ],
        )
        await migrate(
            conn,
            REVERTED,
            datetime(2024, 1, 17, 10, 0, tzinfo=UTC),
            [
                ("expand", "ALTER TABLE users ADD COLUMN nickname text;"),
                ("email-default", "ALTER TABLE users ALTER COLUMN email SET DEFAULT '';"),
            ],
        )
        await revert(
            conn,
            REVERTED,
            [
                ("email-default", "ALTER TABLE users ALTER COLUMN email DROP DEFAULT;"),
                ("expand", "ALTER TABLE users DROP COLUMN nickname;"),
            ],
        )
        # A run that was rolled back: its step ran and was undone (history up, then down).
        await migrate(
            conn,
            ROLLED_BACK,
            datetime(2024, 1, 18, 10, 0, tzinfo=UTC),
            [("default", "ALTER TABLE users ALTER COLUMN email SET DEFAULT 'x';")],
            outcome="RolledBack",
        )
        await revert(
            conn, ROLLED_BACK, [("default", "ALTER TABLE users ALTER COLUMN email DROP DEFAULT;")]
        )
    return pg_dsn


def test_each_column_names_its_migrations_and_ignores_the_reverted(
    shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["docs", "--dsn", shop]) == 0
    out = capsys.readouterr().out
    assert "## users\n\n- Created: before dbmigrate's history\n" in out
    assert EMAIL_VERIFIED in out
    assert (
        "### email\n- Type: text\n- Default: none\n- Nullable: no\n"
        "- Added: before dbmigrate's history\n\n"
    ) in out
    assert (
        "### id\n- Type: bigint\n- Default: nextval('users_id_seq'::regclass)\n- Nullable: no\n"
        "- Added: before dbmigrate's history\n- Indexes: users_pkey (btree, primary key)\n"
    ) in out
    # Reverted since: counted nowhere, and said so once; the rolled-back run not at all.
    assert "### nickname" not in out
    assert out.count(REVERTED) == 1
    assert f"Not counted, reverted since (their latest history row is `down`): {REVERTED}." in out
    assert ROLLED_BACK not in out
    # Only the tables migrations changed.
    assert "unrelated" not in out
    assert shop not in out


def test_table_option_and_output_file(
    shop: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "schema.md"
    assert main(["docs", "--dsn", shop, "--table", "unrelated", "-o", str(target)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"1 table(s) written to {target}" in captured.err
    text = target.read_text()
    assert "## unrelated\n" in text
    assert "## users" not in text
    assert "### id\n- Type: integer\n- Default: none\n- Nullable: yes\n" in text

    # Names as SQL spells them: both are public.users, documented once, with its history.
    assert main(["docs", "--dsn", shop, "--table", "public.users", "--table", "USERS"]) == 0
    out = capsys.readouterr().out
    assert out.count("## users\n") == 1
    assert EMAIL_VERIFIED in out

    assert main(["docs", "--dsn", shop, "--table", "public.users", "--table", "missing"]) == 1
    assert "dbmigrate docs: no such table: missing" in capsys.readouterr().err


@pytest.fixture
async def billing(pg_dsn: str) -> str:
    """billing.inv created with a staging table, then renamed (table and column), its column
    widened, the staging table dropped."""
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await ensure_schema(conn)
        await conn.execute("CREATE SCHEMA billing")
        await migrate(
            conn,
            "m1_invoices",
            datetime(2024, 2, 1, tzinfo=UTC),
            [
                (
                    "create",
                    "CREATE TABLE billing.inv (id bigint PRIMARY KEY, amount numeric(10,2)); "
                    "CREATE TABLE billing.staging (id bigint);",
                )
            ],
        )
        await migrate(
            conn,
            "m2_rename",
            datetime(2024, 2, 2, tzinfo=UTC),
            [
                ("table", "ALTER TABLE billing.inv RENAME TO invoices;"),
                ("column", "ALTER TABLE billing.invoices RENAME COLUMN amount TO total;"),
                ("widen", "ALTER TABLE billing.invoices ALTER COLUMN total TYPE numeric(12,2);"),
                ("cleanup", "DROP TABLE billing.staging;"),
            ],
        )
    return pg_dsn


def test_renames_are_followed(billing: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", "--dsn", billing]) == 0
    out = capsys.readouterr().out
    assert (
        "## billing.invoices\n\n"
        "- Created: 2024-02-01 (Migration m1_invoices, step create)\n"
        "- Renamed: 2024-02-02 (Migration m2_rename, step table, from billing.inv)\n"
    ) in out
    assert (
        "### total\n- Type: numeric(12,2)\n- Default: none\n- Nullable: yes\n"
        "- Added: 2024-02-01 (Migration m1_invoices, step create, with the table)\n"
        "- Renamed: 2024-02-02 (Migration m2_rename, step column, from amount)\n"
        "- Changed: 2024-02-02 (Migration m2_rename, step widen, TYPE numeric(12, 2))\n"
    ) in out
    assert "staging" not in out
    assert "## billing.inv\n" not in out


def run_docs(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "docs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DBMIGRATE_DSN": dsn},
        timeout=60,
        check=False,
    )


def test_cli_never_prints_the_dsn_or_its_password(shop: str) -> None:
    proc = run_docs(shop)
    assert proc.returncode == 0, proc.stderr
    assert EMAIL_VERIFIED in proc.stdout
    password = psycopg.conninfo.conninfo_to_dict(shop)["password"]
    assert password not in proc.stdout + proc.stderr

    info = psycopg.conninfo.conninfo_to_dict(shop)
    info["password"] = "s3cret-Pa55"
    bad = psycopg.conninfo.make_conninfo(**info)
    proc = run_docs(bad, "--table", "users")
    assert proc.returncode == 1
    assert "dbmigrate docs: cannot read the database: " in proc.stderr
    assert "password authentication failed" in proc.stderr
    assert "s3cret-Pa55" not in proc.stdout + proc.stderr
    assert bad not in proc.stdout + proc.stderr

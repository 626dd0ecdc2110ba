"""`dbmigrate plan --dsn` and `db.catalog` against a real PostgreSQL (the session fixture).

Aspects covered: row and size estimates after ANALYZE appear in the plan with the backfill
time; the server version is read from the database; DBMIGRATE_DSN works like --dsn; the DSN
(and its password) is never printed, also when the connection fails; the catalog look-ups for
missing, never-analysed, schema-qualified and mixed-case tables.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from dbmigrate.cli import main
from dbmigrate.db import catalog

MIGRATION = """
apiVersion: dbmigrate.io/v1alpha1
kind: DatabaseMigration
metadata: {name: demo, namespace: shop}
spec:
  migrationId: "20240115120000_add_email_verified_column"
  database: {dsnSecretRef: {name: db, key: dsn}}
  steps:
    - name: expand
      sql:
        up: ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified boolean;
        down: ALTER TABLE users DROP COLUMN IF EXISTS email_verified;
    - name: backfill
      backfill:
        table: users
        set: email_verified = false
        where: email_verified IS NULL
"""


@pytest.fixture
def users_table(pg_conn: psycopg.Connection) -> int:
    rows = 20_000
    pg_conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
    pg_conn.execute(
        "INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, %s) g",
        (rows,),
    )
    pg_conn.execute("ANALYZE users")
    return rows


@pytest.fixture
def migration_file(tmp_path: Path) -> Path:
    path = tmp_path / "migration.yaml"
    path.write_text(MIGRATION)
    return path


def test_plan_shows_row_estimate_and_backfill_time(
    pg_dsn: str, users_table: int, migration_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["plan", "-f", str(migration_file), "--dsn", pg_dsn, "--backfill-rate", "10000"])
    out = capsys.readouterr().out
    assert code == 0
    assert "- Tables: users (20,000 rows, " in out
    assert "- Estimate: up to 20,000 rows ≈ 2 s at 10,000 rows/s (given)" in out
    assert "(read from the database)" in out
    assert pg_dsn not in out


def test_dsn_from_the_environment(
    pg_dsn: str,
    users_table: int,
    migration_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBMIGRATE_DSN", pg_dsn)
    assert main(["plan", "-f", str(migration_file)]) == 0
    out = capsys.readouterr().out
    assert "users (20,000 rows, " in out
    assert "at 50,000 rows/s (assumed; pass --backfill-rate)" in out


def test_failed_connection_never_prints_the_password(
    pg_dsn: str, migration_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    info["password"] = "s3cret-Pa55"
    bad = psycopg.conninfo.make_conninfo(**info)
    assert main(["plan", "-f", str(migration_file), "--dsn", bad]) == 1
    captured = capsys.readouterr()
    assert "cannot read the database" in captured.err
    assert "s3cret-Pa55" not in captured.err + captured.out
    assert bad not in captured.err + captured.out


def test_catalog_estimates(pg_conn: psycopg.Connection) -> None:
    pg_conn.execute("CREATE SCHEMA billing")
    pg_conn.execute("CREATE TABLE billing.invoices (id bigint)")
    pg_conn.execute("INSERT INTO billing.invoices SELECT generate_series(1, 500)")
    pg_conn.execute("ANALYZE billing.invoices")
    pg_conn.execute('CREATE TABLE "MixedCase" (id bigint)')
    estimates = catalog.fetch_table_estimates(
        pg_conn, ["billing.invoices", "MixedCase", "missing_table"]
    )
    assert set(estimates) == {"billing.invoices", "MixedCase"}
    assert estimates["billing.invoices"].rows == 500
    assert (estimates["billing.invoices"].size_bytes or 0) > 0
    # Never analysed: no row estimate (reltuples is -1), but a size.
    assert estimates["MixedCase"].rows is None
    assert estimates["MixedCase"].size_bytes is not None
    assert catalog.server_major_version(pg_conn) >= 11


@pytest.mark.parametrize(
    ("dsn", "message", "expected"),
    [
        pytest.param(
            "postgresql://app:hunter2@db:5432/shop",
            "failed for postgresql://app:hunter2@db:5432/shop with password hunter2",
            "failed for *** with password ***",
            id="uri",
        ),
        pytest.param(
            "host=db user=app password=hunter2",
            "bad password hunter2",
            "bad password ***",
            id="key-value",
        ),
    ],
)
def test_redact(dsn: str, message: str, expected: str) -> None:
    assert catalog.redact(message, dsn) == expected

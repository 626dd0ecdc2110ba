"""The backup worker (`dbmigrate backup`) against a real PostgreSQL and real storage: a
directory (what a backup Job's PersistentVolumeClaim is to it) and SeaweedFS's S3 gateway.

Aspects:
- tables scope: only the migration's tables are dumped; the stored dump is recorded with its
  size and sha256 (those of the stored bytes), and restores into a fresh database with the same
  row counts and row checksums;
- database scope to S3: every table, restored from the object and compared;
- a recorded backup is not taken again (a retried pod);
- refusals record nothing and store nothing: a server newer than pg_dump (a pg_dump on PATH
  reporting an older version: our seam, standing for an image with an older client), wrong S3
  credentials, an unreachable endpoint, no table to dump;
- the DSN's password is in no output.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbmigrate.backup.pgdump import libpq_env
from dbmigrate_dev.postgres import PostgresServer
from dbmigrate_dev.seaweedfs import SeaweedS3

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
MIGRATION = "20240101000000_add_email_verified"
ROWS = 5000


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, born date);"
            "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint REFERENCES users, "
            "total numeric(10, 2));"
            f"INSERT INTO users SELECT g, 'u' || g || '@example.com', date '2000-01-01' + g "
            f"FROM generate_series(1, {ROWS}) g;"
            "INSERT INTO orders (user_id, total) SELECT g % 100 + 1, g * 1.5 "
            "FROM generate_series(1, 700) g;"
        )


def _fingerprint(dsn: str, table: str) -> tuple[int, str]:
    """Row count and md5 of every row in key order: equal means the same rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) "
            f"FROM {table} t"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    return {r[0] for r in rows}


def _record(dsn: str, step: str, run: str) -> tuple | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('dbmigrate.backups')").fetchone()[0] is None:
            return None
        return conn.execute(
            "SELECT location, size_bytes, sha256, scope, tables, server_version, client_version, "
            "toc_entries FROM dbmigrate.backups WHERE migration_id = %s AND step = %s AND "
            "run_uid = %s",
            (MIGRATION, step, run),
        ).fetchone()


def _backup(
    dsn: str, *args: str, env: dict[str, str] | None = None, step: str = "drop-old"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dbmigrate",
            "backup",
            "--migration-id",
            MIGRATION,
            "--step",
            step,
            "--run",
            "uid-1",
            *args,
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(OPERATOR),
            "DBMIGRATE_DSN": dsn,
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _restore(archive: bytes, dsn: str) -> None:
    """What status.backup.restoreCommand does: pg_restore from stdin, PG* for the connection."""
    done = subprocess.run(
        [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            "--dbname",
            libpq_env(dsn)["PGDATABASE"],
        ],
        input=archive,
        env={**os.environ, **libpq_env(dsn)},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture
def fresh_dsn(pg_server: PostgresServer) -> Iterator[str]:
    name = f"restore_{uuid.uuid4().hex[:10]}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


def test_tables_scope_to_a_directory_restores_the_same_rows(
    pg_dsn: str, fresh_dsn: str, tmp_path: Path
) -> None:
    _seed(pg_dsn)
    out = tmp_path / "claim" / "backups"
    done = _backup(
        pg_dsn,
        "--table",
        "users",
        "--table",
        "created_by_the_migration",
        "--output-dir",
        str(out),
        "--location",
        "pvc:claim/backups",
    )
    assert done.returncode == 0, done.stderr
    files = list(out.iterdir())
    assert len(files) == 1
    assert files[0].name.startswith(f"{MIGRATION}-drop-old-")
    data = files[0].read_bytes()
    record = _record(pg_dsn, "drop-old", "uid-1")
    assert record is not None
    location, size, sha, scope, tables, server, client, entries = record
    assert location == f"pvc:claim/backups/{files[0].name}"
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert (scope, tables) == ("Tables", ["public.users"])
    assert server.split(".")[0] == client.split(".")[0] == "15"
    assert entries >= 2  # the table and its data at least
    assert '"missingTables": ["created_by_the_migration"]' in done.stdout

    _restore(data, fresh_dsn)
    assert _tables(fresh_dsn) == {"users"}  # orders was not the migration's
    assert _fingerprint(fresh_dsn, "users") == _fingerprint(pg_dsn, "users")
    assert _fingerprint(fresh_dsn, "users")[0] == ROWS


def test_a_recorded_backup_is_not_taken_again(pg_dsn: str, tmp_path: Path) -> None:
    _seed(pg_dsn)
    first = _backup(pg_dsn, "--table", "users", "--output-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    again = _backup(pg_dsn, "--table", "users", "--output-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert '"alreadyRecorded": true' in again.stdout
    assert len(list(tmp_path.iterdir())) == 1


def test_tables_scope_to_s3(
    pg_dsn: str, fresh_dsn: str, seaweed_s3: SeaweedS3, s3_bucket: str
) -> None:
    _seed(pg_dsn)
    done = _backup(
        pg_dsn,
        "--table",
        "public.orders",
        "--table",
        "users",
        "--s3-endpoint",
        seaweed_s3.endpoint,
        "--s3-bucket",
        s3_bucket,
        "--s3-prefix",
        "prod/db1",
        env={
            "DBMIGRATE_S3_ACCESS_KEY_ID": seaweed_s3.access_key,
            "DBMIGRATE_S3_SECRET_ACCESS_KEY": seaweed_s3.secret_key,
        },
    )
    assert done.returncode == 0, done.stderr
    keys = seaweed_s3.list_keys(s3_bucket)
    assert len(keys) == 1
    assert keys[0].startswith(f"prod/db1/{MIGRATION}-drop-old-")
    data = seaweed_s3.read_object(s3_bucket, keys[0])
    record = _record(pg_dsn, "drop-old", "uid-1")
    assert record is not None
    assert record[0] == f"s3://{s3_bucket}/{keys[0]}"
    assert (record[1], record[2]) == (len(data), hashlib.sha256(data).hexdigest())
    assert seaweed_s3.secret_key not in done.stdout + done.stderr

    # orders references users: a Tables-scope dump restores elsewhere with what it references
    _restore(data, fresh_dsn)
    assert _tables(fresh_dsn) == {"orders", "users"}
    for table in ("users", "orders"):
        assert _fingerprint(fresh_dsn, table) == _fingerprint(pg_dsn, table)


def test_database_scope_to_s3_restores_every_table(
    pg_dsn: str, fresh_dsn: str, seaweed_s3: SeaweedS3, s3_bucket: str
) -> None:
    _seed(pg_dsn)
    done = _backup(
        pg_dsn,
        "--scope",
        "Database",
        "--s3-endpoint",
        seaweed_s3.endpoint,
        "--s3-bucket",
        s3_bucket,
        env={
            "DBMIGRATE_S3_ACCESS_KEY_ID": seaweed_s3.access_key,
            "DBMIGRATE_S3_SECRET_ACCESS_KEY": seaweed_s3.secret_key,
        },
    )
    assert done.returncode == 0, done.stderr
    (key,) = seaweed_s3.list_keys(s3_bucket)
    record = _record(pg_dsn, "drop-old", "uid-1")
    assert record is not None
    assert record[3] == "Database"
    assert record[4] == []
    _restore(seaweed_s3.read_object(s3_bucket, key), fresh_dsn)
    assert _tables(fresh_dsn) == {"users", "orders"}
    for table in ("users", "orders"):
        assert _fingerprint(fresh_dsn, table) == _fingerprint(pg_dsn, table)


def test_a_server_newer_than_pg_dump_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    # Our seam: a pg_dump first on PATH that says it is version 14 (an image whose client is
    # older than the server). It must not be asked to dump anything.
    fake = tmp_path / "bin"
    fake.mkdir()
    called = tmp_path / "dumped"
    (fake / "pg_dump").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 14.11"; exit 0; fi\n'
        f"touch {called}\nexit 1\n"
    )
    (fake / "pg_dump").chmod(0o755)
    _seed(pg_dsn)
    out = tmp_path / "out"
    done = _backup(
        pg_dsn,
        "--table",
        "users",
        "--output-dir",
        str(out),
        env={"PATH": f"{fake}:{os.environ['PATH']}"},
    )
    assert done.returncode == 1
    assert "server 15 is newer than pg_dump 14 in this image" in done.stderr
    assert not called.exists()
    assert not out.exists() or list(out.iterdir()) == []
    assert _record(pg_dsn, "drop-old", "uid-1") is None


@pytest.mark.parametrize(
    ("endpoint", "wrong_secret", "code", "says"),
    [
        pytest.param(None, True, 1, "SignatureDoesNotMatch", id="wrong-secret-key"),
        pytest.param("http://127.0.0.1:1", False, 75, "unreachable", id="unreachable-endpoint"),
    ],
)
def test_s3_failures_record_nothing(
    pg_dsn: str,
    seaweed_s3: SeaweedS3,
    s3_bucket: str,
    endpoint: str | None,
    wrong_secret: bool,
    code: int,
    says: str,
) -> None:
    _seed(pg_dsn)
    done = _backup(
        pg_dsn,
        "--table",
        "users",
        "--s3-endpoint",
        endpoint or seaweed_s3.endpoint,
        "--s3-bucket",
        s3_bucket,
        env={
            "DBMIGRATE_S3_ACCESS_KEY_ID": seaweed_s3.access_key,
            "DBMIGRATE_S3_SECRET_ACCESS_KEY": "not-the-secret" if wrong_secret else "x",
        },
    )
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert "not-the-secret" not in done.stderr
    assert seaweed_s3.list_keys(s3_bucket) == []
    assert _record(pg_dsn, "drop-old", "uid-1") is None


def test_nothing_to_dump_is_refused(pg_dsn: str, tmp_path: Path) -> None:
    done = _backup(pg_dsn, "--table", "not_there", "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "none of the tables the migration touches exists" in done.stderr
    assert _record(pg_dsn, "drop-old", "uid-1") is None


def test_the_password_is_in_no_output(pg_server: PostgresServer, pg_dsn: str) -> None:
    _seed(pg_dsn)
    password = libpq_env(pg_dsn).get("PGPASSWORD")
    assert password, "the test server's DSN carries a password"
    failing = _backup(pg_dsn, "--table", "users", "--output-dir", "/proc/not-writable")
    assert failing.returncode != 0
    assert password not in failing.stdout + failing.stderr

"""The lint gate weighs findings by the database's own table sizes (the runner reads
pg_class before the start): `safety.lint: Enforce` lets a rewrite of a small lookup table
through (an info finding) and stops the same statement on a big table (LintFailed). Driven
through `dbmigrate apply`, the operator's engine against a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml


def _apply(tmp_path: Path, table: str, dsn: str) -> subprocess.CompletedProcess[str]:
    doc = {
        "apiVersion": "dbmigrate.io/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": {"name": "logged"},
        "spec": {
            "migrationId": f"20240101000000_{table}_logged",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "safety": {"lint": "Enforce"},
            "steps": [
                {
                    "name": "logged",
                    "sql": {
                        "up": f"ALTER TABLE {table} SET LOGGED",
                        "down": f"ALTER TABLE {table} SET UNLOGGED",
                    },
                }
            ],
        },
    }
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "DBMIGRATE_DSN": dsn, "COLUMNS": "200"},
        timeout=240,
        check=False,
    )


@pytest.fixture
def tables(pg_conn: psycopg.Connection) -> psycopg.Connection:
    pg_conn.execute("CREATE UNLOGGED TABLE lookup (id bigint PRIMARY KEY, name text)")
    pg_conn.execute("INSERT INTO lookup SELECT g, 'x' FROM generate_series(1, 200) g")
    pg_conn.execute("CREATE UNLOGGED TABLE big (id bigint PRIMARY KEY, name text)")
    pg_conn.execute("INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, 50000) g")
    pg_conn.execute("ANALYZE lookup")
    pg_conn.execute("ANALYZE big")
    return pg_conn


def _persistence(conn: psycopg.Connection, table: str) -> str:
    row = conn.execute("SELECT relpersistence FROM pg_class WHERE relname = %s", (table,))
    return str(row.fetchone()[0])  # type: ignore[index]


def test_a_small_table_passes_the_gate(
    tables: psycopg.Connection, pg_dsn: str, tmp_path: Path
) -> None:
    proc = _apply(tmp_path, "lookup", pg_dsn)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _persistence(tables, "lookup") == "p", "the statement ran"


def test_a_big_table_is_stopped_by_the_gate(
    tables: psycopg.Connection, pg_dsn: str, tmp_path: Path
) -> None:
    proc = _apply(tmp_path, "big", pg_dsn)
    assert proc.returncode != 0
    assert "LintFailed" in proc.stdout + proc.stderr
    assert "blocking-lock" in proc.stdout + proc.stderr
    assert _persistence(tables, "big") == "u", "nothing ran"

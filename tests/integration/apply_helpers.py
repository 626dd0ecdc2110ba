"""Helpers of the `dbmigrate apply` tests: the seed's example as a dict, the command run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "add-email-verified.yaml"


def example() -> dict[str, Any]:
    """The example as shipped (its analysis against a Prometheus in a cluster)."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def seed_migration(*, before_the_start: bool = False) -> dict[str, Any]:
    """The example without its analysis (analysed against a real Prometheus elsewhere); with
    `before_the_start`, its rehearsal, backup and checklist kept, else only its steps."""
    doc = example()
    del doc["spec"]["analysis"]
    if before_the_start:
        doc["spec"]["checklist"]["require"].remove("Monitoring")  # (it needs the analysis)
    else:
        for field in ("rehearsal", "backup", "checklist"):
            del doc["spec"][field]
    return doc


def run_apply(
    tmp_path: Path,
    docs: list[dict[str, Any]],
    dsn: str,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """`dbmigrate apply` with stdout and stderr to pipes (what a CI log gets)."""
    path = tmp_path / "migration.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "apply", "-f", str(path), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "DBMIGRATE_DSN": dsn, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
        check=False,
    )


def create_users(conn: psycopg.Connection, rows: int) -> psycopg.Connection:
    """The seed's users table with `rows` rows (a third confirmed), never analysed."""
    conn.execute(
        "CREATE TABLE users (id bigserial PRIMARY KEY, email text, email_confirmed_at timestamptz)"
    )
    conn.execute(
        "INSERT INTO users (email, email_confirmed_at) SELECT 'u' || g, "
        "CASE WHEN g %% 3 = 0 THEN now() END FROM generate_series(1, %s) g",
        (rows,),
    )
    return conn

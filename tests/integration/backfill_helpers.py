"""What the backfill integration tests share (test modules import from here, never from each
other): tables with a copy to compare against one UPDATE, and the `dbmigrate backfill` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg

COUNTER_SET = "n = n + 1, v = md5(v || n::text)"


def make_table(conn: psycopg.Connection[Any], name: str, key_ddl: str, key_expr: str, rows: int):
    """`name` with the given key columns, plus `n int` (a counter), `v text`, `flag boolean`,
    and a copy `<name>_expected` of it (same rows, no primary key needed)."""
    conn.execute(f"CREATE TABLE {name} ({key_ddl}, n int NOT NULL DEFAULT 0, v text, flag boolean)")
    conn.execute(
        f"INSERT INTO {name} SELECT {key_expr}, 0, md5(g::text), (g % 3 = 0) "
        f"FROM generate_series(1, {int(rows)}) AS g"
    )
    conn.execute(f"CREATE TABLE {name}_expected AS SELECT * FROM {name}")
    conn.execute(f"ANALYZE {name}")


def assert_same_as_single_update(
    conn: psycopg.Connection[Any], name: str, set_sql: str, where: str | None = None
) -> None:
    conn.execute(f"UPDATE {name}_expected SET {set_sql}" + (f" WHERE {where}" if where else ""))
    diff = conn.execute(
        f"SELECT count(*) FROM ((TABLE {name} EXCEPT ALL TABLE {name}_expected) "
        f"UNION ALL (TABLE {name}_expected EXCEPT ALL TABLE {name})) AS d"
    ).fetchone()
    assert diff == (0,)


def cli(dsn: str | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbmigrate", "backfill", *args],
        env=cli_env(dsn),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_env(dsn: str | None) -> dict[str, str]:
    """The environment of a `dbmigrate backfill` process: the DSN only through it, as in a Job."""
    env = {k: v for k, v in os.environ.items() if k != "DBMIGRATE_DSN"}
    env["PYTHONUNBUFFERED"] = "1"
    if dsn is not None:
        env["DBMIGRATE_DSN"] = dsn
    return env

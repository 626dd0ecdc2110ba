"""The operator's progress estimate runs the step's own predicate, never SQL read back from the
checkpoint table: whoever may write to the `dbmigrate` schema must not get the operator's
session (often a more privileged role) to run their SQL. Real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg

from dbmigrate.db.backfill import BackfillOptions, read_backfill_progress, run_backfill


def test_a_tampered_checkpoint_predicate_is_not_run(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    pg_conn.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
    pg_conn.execute("INSERT INTO items (id) SELECT g FROM generate_series(1, 300) g")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        run_backfill(conn, BackfillOptions(table="items", set="n = 1", where="n = 0"))
    pg_conn.execute("CREATE TABLE pwned (at timestamptz DEFAULT now())")
    pg_conn.execute(
        "CREATE FUNCTION pwn() RETURNS boolean LANGUAGE sql AS "
        "$$ INSERT INTO pwned DEFAULT VALUES RETURNING true $$"
    )
    # Someone with write access to the dbmigrate schema: the backfill looks unfinished again and
    # its predicate calls their function.
    pg_conn.execute(
        "UPDATE dbmigrate.backfill_checkpoints "
        "SET finished_at = NULL, last_key = NULL, where_sql = 'pwn()', table_name = 'pwned'"
    )
    (name,) = pg_conn.execute("SELECT name FROM dbmigrate.backfill_checkpoints").fetchone()  # type: ignore[misc]

    progress = read_backfill_progress(pg_conn, name, table="items", where="n = 0")

    assert pg_conn.execute("SELECT count(*) FROM pwned").fetchone() == (0,)
    assert progress.rows_done == 300
    assert progress.rows_estimated == 300  # the spec's predicate: no row left with n = 0

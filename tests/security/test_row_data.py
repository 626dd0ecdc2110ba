"""Data and integrity errors (SQLSTATE classes 22 and 23) keep their SQLSTATE and the names of
the table, column and constraint, and lose the row's values: a step's error is copied into
status and Events, which the `view` role reads. Against a real PostgreSQL, through the executor
as a step runs it."""

from __future__ import annotations

import psycopg
import pytest

from dbmigrate.core.steps import ExecutionLimits
from dbmigrate.db import executor, history

SECRET = "Zq7Xk-4111-1111-1111-1111"  # a value of a row: a card number, an e-mail, a token

# The values come from the table's rows, never from the step's SQL (which is in the spec anyway).
TABLE = f"""
CREATE TABLE customers (
    id int PRIMARY KEY,
    email text,
    card text CHECK (card NOT LIKE 'Zq7X%'),
    code varchar(40)
);
INSERT INTO customers (id, email, code) VALUES (1, '{SECRET}', '{SECRET}'), (2, '{SECRET}', NULL);
"""


@pytest.mark.parametrize(
    ("sql", "sqlstate", "names"),
    [
        pytest.param(
            "CREATE UNIQUE INDEX customers_email ON customers (email)",
            "23505",
            ["customers_email"],
            id="unique-index-over-duplicates",
        ),
        pytest.param(
            "INSERT INTO customers (id, email) SELECT id, email FROM customers",
            "23505",
            ["customers_pkey"],
            id="duplicate-key",
        ),
        pytest.param(
            "UPDATE customers SET card = email",
            "23514",
            ["customers_card_check", "customers"],
            id="check-failing-row",
        ),
        pytest.param(
            "UPDATE customers SET id = NULL WHERE id = 1",
            "23502",
            ["id", "customers"],
            id="not-null-failing-row",
        ),
        pytest.param(
            "ALTER TABLE customers ALTER COLUMN code TYPE varchar(4)",
            "22001",
            [],
            id="too-long",
        ),
        pytest.param(
            "ALTER TABLE customers ALTER COLUMN email TYPE int USING email::int",
            "22P02",
            [],
            id="bad-integer",
        ),
        pytest.param(
            "UPDATE customers SET code = code::date::text",
            "22007",
            [],
            id="bad-date",
        ),
    ],
)
async def test_a_failed_step_names_the_constraint_not_the_row(
    pg_dsn: str, sql: str, sqlstate: str, names: list[str]
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute(TABLE)  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await history.ensure_schema(conn)
        result = await executor.apply_sql(
            conn,
            migration_id="m",
            step="s",
            step_kind="sql",
            direction="up",
            sql=sql,
            mode="auto",
            checksum="c",
            limits=ExecutionLimits(1.0, 1, 0),
        )
    assert not result.ok
    assert result.sqlstate == sqlstate
    message = result.message or ""
    for piece in ("Zq7X", "4111", "1111"):
        assert piece not in message, message
    assert "row values not shown" in message
    for name in names:
        assert name in message, message

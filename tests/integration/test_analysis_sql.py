"""`sql:` analysis metrics and the database's own measurements against a real PostgreSQL.

Aspects: a metric's SQL returns one number, measured on a read-only session of its own; NULL,
no row, several rows or columns, a non-number, an SQL error, a write and a second statement
are each Inconclusive with a reason (never Failed, never a crash); an unreachable database
makes every sql metric Inconclusive without showing the DSN's password; a round of an
sql-only analysis (no Prometheus) judges max/min and takes an sql metric's baseline from the
round before the first step only; blocked backends and the longest lock wait are read from
pg_locks (no replica: no replication lag).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from dbmigrate.api.models import Analysis
from dbmigrate.db import measurements
from dbmigrate.reconcile.slo import NO_SQL_BASELINE, measure_round

AT = datetime(2024, 1, 15, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def orders(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, note text)")
        conn.execute(
            "INSERT INTO orders SELECT g, CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'ok' END "
            "FROM generate_series(1, 100) g"
        )
    return pg_dsn


@pytest.fixture
async def session(orders: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await measurements.connect_analysis(orders)
    yield conn
    await conn.close()


@pytest.mark.parametrize(
    ("sql", "value", "error"),
    [
        pytest.param("SELECT count(*) FROM orders WHERE status = 'failed'", 10.0, None, id="count"),
        pytest.param("SELECT avg(id) FROM orders", 50.5, None, id="numeric"),
        pytest.param("SELECT 0.25::float8", 0.25, None, id="float"),
        pytest.param(
            "SELECT max(id) FROM orders WHERE false", None, "sql returned NULL", id="null"
        ),
        pytest.param("SELECT 1 FROM orders WHERE false", None, "sql returned no row", id="no-row"),
        pytest.param(
            "SELECT id FROM orders", None, "sql returned more than one row", id="several-rows"
        ),
        pytest.param("SELECT 1, 2", None, "sql returned 2 columns", id="two-columns"),
        pytest.param("SELECT 'many'", None, "sql returned a str, not a number", id="text"),
        pytest.param("SELECT true", None, "sql returned a bool, not a number", id="boolean"),
        pytest.param("SELECT 1/0", None, "sql failed: SQLSTATE 22012", id="division-by-zero"),
        pytest.param(
            "SELECT count(*) FROM nope", None, "sql failed: SQLSTATE 42P01", id="no-table"
        ),
        pytest.param(
            "UPDATE orders SET note = 'x' RETURNING 1",
            None,
            "sql failed: SQLSTATE 25006",
            id="write-refused",
        ),
        pytest.param(
            "SELECT 1; DELETE FROM orders",
            None,
            "sql failed: SQLSTATE 42601",
            id="second-statement-refused",
        ),
    ],
)
async def test_measure_sql(
    session: psycopg.AsyncConnection, orders: str, sql: str, value: float | None, error: str | None
) -> None:
    result = await measurements.measure_sql(session, sql)
    assert result.value == value
    if error is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert result.error.startswith(error), result.error
    with psycopg.connect(orders) as conn:
        assert conn.execute("SELECT count(*), count(note) FROM orders").fetchone() == (100, 0)
    # the session is usable for the next metric, whatever this one did
    assert (await measurements.measure_sql(session, "SELECT 1")).value == 1.0


async def test_the_analysis_session_is_read_only_and_bounded(
    session: psycopg.AsyncConnection,
) -> None:
    cur = await session.execute(
        "SELECT current_setting('default_transaction_read_only'), "
        "current_setting('statement_timeout'), current_setting('application_name')"
    )
    assert await cur.fetchone() == ("on", "5s", "dbmigrate-analysis")


async def test_unreachable_database_is_inconclusive_without_the_password(orders: str) -> None:
    bad = psycopg.conninfo.make_conninfo(orders, dbname="no_such_database")
    results = await measurements.measure_sql_metrics(bad, {"a": "SELECT 1", "b": "SELECT 2"})
    assert set(results) == {"a", "b"}
    for result in results.values():
        assert result.value is None
        assert result.error is not None
        assert result.error.startswith("cannot connect to the database")
        assert "no_such_database" in result.error
        password = psycopg.conninfo.conninfo_to_dict(orders).get("password")
        assert password is None or str(password) not in result.error


def sql_analysis(**metric: object) -> Analysis:
    return Analysis.model_validate(
        {"metrics": [{"name": "failed-orders", "sql": "SELECT count(*) FROM orders "
                      "WHERE status = 'failed'", **metric}]}
    )  # fmt: skip


async def test_round_without_prometheus_judges_sql_metrics(orders: str) -> None:
    round_ = await measure_round(sql_analysis(max=5), None, AT, AT, dsn=orders)
    (m,) = round_.measurements
    assert (m.metric, m.value, m.result) == ("failed-orders", 10.0, "Failed")
    assert m.sql is not None
    assert m.query is None
    assert round_.status.consecutive_failures == 1


async def test_sql_baseline_is_the_value_before_the_first_step(orders: str) -> None:
    analysis = sql_analysis(maxRatioToBaseline=1.5)
    first = await measure_round(analysis, None, AT, AT, dsn=orders, before_first_step=True)
    assert first.status.baseline == {"failed-orders": 10.0}
    assert first.measurements[0].result == "Successful"
    with psycopg.connect(orders, autocommit=True) as conn:
        conn.execute("UPDATE orders SET status = 'failed' WHERE id <= 20")  # 10 -> 28 failed
    second = await measure_round(analysis, first.status, AT, AT, dsn=orders)
    assert second.status.baseline == {"failed-orders": 10.0}  # kept, not measured again
    assert second.measurements[0].result == "Failed"
    assert second.measurements[0].message == "28 > max 1.5x baseline 10 = 15"


async def test_no_sql_baseline_once_a_step_ran(orders: str) -> None:
    round_ = await measure_round(sql_analysis(maxRatioToBaseline=1.5), None, AT, AT, dsn=orders)
    assert round_.status.baseline is None
    assert round_.measurements[0].result == "Inconclusive"
    assert NO_SQL_BASELINE.error is not None
    assert NO_SQL_BASELINE.error in (round_.measurements[0].message or "")


async def test_database_measurements_see_a_blocked_backend(orders: str) -> None:
    holder = psycopg.connect(orders, autocommit=True)
    holder.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    waiter = psycopg.connect(orders, autocommit=True)
    thread = threading.Thread(
        target=waiter.execute, args=("SELECT count(*) FROM orders",), daemon=True
    )
    thread.start()
    await asyncio.sleep(0.6)
    conn = await psycopg.AsyncConnection.connect(orders, autocommit=True)
    try:
        measured = await measurements.read_database_measurements(conn)
    finally:
        holder.execute("ROLLBACK")
        thread.join(5)
        holder.close()
        waiter.close()
    assert measured.blocked_backends == 1
    assert measured.longest_lock_wait_seconds >= 0.5
    assert measured.longest_lock_wait_seconds < 10
    assert measured.replication_lag_seconds is None  # the test server has no replica
    after = await measurements.read_database_measurements(conn)
    await conn.close()
    assert (after.blocked_backends, after.longest_lock_wait_seconds) == (0, 0.0)

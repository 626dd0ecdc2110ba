"""Measurements in the migration's own database: `sql:` analysis metrics and what the database
says about itself (lock waits, replication lag).

An `sql:` metric runs on a session of its own (`connect_analysis`): read-only by default and
in an explicit READ ONLY transaction, statement_timeout 5 s, lock_timeout 1 s, application name
`dbmigrate-analysis`, one statement only (the extended protocol refuses a second). Its answer
must be one row with one number; NULL, no row, several rows, a non-number or an error is a
`QueryResult` without a value, which the analysis calls Inconclusive (as for Prometheus).
The DSN never appears in a result: the server's messages do not carry it, and the connection
error is told with `first_line` only after `redact_dsn`.
"""

from __future__ import annotations

import decimal
from typing import Any

import psycopg
from psycopg import sql as pgsql

from dbmigrate.api.models import DatabaseMeasurements
from dbmigrate.core.slo import QueryResult
from dbmigrate.db.errors import describe_error, first_line, redact_dsn

APPLICATION_NAME = "dbmigrate-analysis"
SESSION_OPTIONS = (
    "-c default_transaction_read_only=on -c statement_timeout=5s -c lock_timeout=1s "
    "-c idle_in_transaction_session_timeout=10s"
)


async def connect_analysis(dsn: str, connect_timeout: int = 10) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(
        dsn,
        autocommit=True,
        connect_timeout=connect_timeout,
        application_name=APPLICATION_NAME,
        options=SESSION_OPTIONS,
    )


def _value(rows: list[Any]) -> QueryResult:
    if not rows:
        return QueryResult.failed("sql returned no row")
    if len(rows) > 1:
        return QueryResult.failed("sql returned more than one row (it must return one number)")
    row = rows[0]
    if len(row) != 1:
        return QueryResult.failed(f"sql returned {len(row)} columns (it must return one number)")
    value = row[0]
    if value is None:
        return QueryResult.failed("sql returned NULL")
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        return QueryResult.failed(f"sql returned a {type(value).__name__}, not a number")
    return QueryResult.of(float(value))


async def measure_sql(conn: psycopg.AsyncConnection, query: str) -> QueryResult:
    """One `sql:` metric's value now (never raises for a bad answer or an SQL error)."""
    try:
        async with conn.transaction():
            await conn.execute("SET TRANSACTION READ ONLY")
            # binary=True: the extended protocol, so one statement only.
            cur = await conn.execute(pgsql.SQL(query), binary=True)  # type: ignore[arg-type]
            rows = await cur.fetchmany(2)
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            return QueryResult.failed(f"lost the database connection: {first_line(exc)}")
        return QueryResult.failed(f"sql failed: SQLSTATE {describe_error(exc)}")
    return _value(rows)


async def measure_sql_metrics(
    dsn: str, queries: dict[str, str], connect_timeout: int = 10
) -> dict[str, QueryResult]:
    """Each named query's value, on one analysis session opened for the round."""
    if not queries:
        return {}
    try:
        conn = await connect_analysis(dsn, connect_timeout)
    except (psycopg.Error, OSError) as exc:
        why = redact_dsn(f"cannot connect to the database: {first_line(exc)}", dsn)
        return {name: QueryResult.failed(why) for name in queries}
    async with conn:
        return {name: await measure_sql(conn, query) for name, query in queries.items()}


# Sessions of this database waiting for a lock and the longest wait (pg_locks.waitstart is
# PostgreSQL 14+; before, the waiting query's start), and the worst replica's replay lag.
_FACTS = """
SELECT count(*),
       coalesce(extract(epoch FROM max(clock_timestamp() - coalesce(w.since, a.query_start))), 0),
       (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication)
FROM (SELECT pid, {since} AS since FROM pg_locks WHERE NOT granted AND pid IS NOT NULL
      GROUP BY pid) AS w
JOIN pg_stat_activity AS a USING (pid)
WHERE a.datname = current_database()
"""


async def read_database_measurements(conn: psycopg.AsyncConnection) -> DatabaseMeasurements:
    """Blocked backends, the longest lock wait and replication lag, now (measured_at unset)."""
    since = "min(waitstart)" if conn.info.server_version >= 140000 else "NULL::timestamptz"
    cur = await conn.execute(_FACTS.format(since=since))  # type: ignore[arg-type]
    row = await cur.fetchone()
    if row is None:
        return DatabaseMeasurements()
    return DatabaseMeasurements(
        blocked_backends=int(row[0]),
        longest_lock_wait_seconds=round(float(row[1] or 0.0), 3),
        replication_lag_seconds=None if row[2] is None else round(float(row[2]), 3),
    )

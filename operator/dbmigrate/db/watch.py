"""The database side of the post-deployment watch: the snapshot before the first step
(`dbmigrate.watch_baselines`) and the samples of `pg_stat_statements` and
`pg_stat_user_indexes` while the watch lasts.

The statements read are those of this database whose text names a watched table as a word
(the seed's `WHERE query LIKE '%email_verified%'`, made exact), the operator's own sessions'
statements left out by their text (the `dbmigrate` schema) and by kind (DDL and maintenance are
not what the application runs). Reading other users' query texts needs `pg_read_all_stats`;
without it pg_stat_statements hides them and they cannot match.
"""

from __future__ import annotations

import json
import re

import psycopg
from psycopg import sql

from dbmigrate.core.watch import IndexStats, StatementStats, WatchBaseline, WatchSample

BASELINES_DDL = """
CREATE TABLE IF NOT EXISTS dbmigrate.watch_baselines (
    migration_id text        NOT NULL,
    uid          text        NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now(),
    tables       jsonb       NOT NULL,
    statements   jsonb       NOT NULL,
    indexes      jsonb       NOT NULL,
    statements_available boolean NOT NULL,
    PRIMARY KEY (migration_id, uid)
);
"""

# The most-called statements read per sample: the watch is about what the application runs.
STATEMENT_LIMIT = 500
_APP_STATEMENT = r"^\s*(select|insert|update|delete|with|merge|values|table)\M"


async def _statements_view(conn: psycopg.AsyncConnection) -> tuple[str | None, str | None]:
    """(schema of pg_stat_statements, None) when it can be read; else (None, why not)."""
    cur = await conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    )
    row = await cur.fetchone()
    if row is None:
        return None, (
            "pg_stat_statements is not installed in this database (CREATE EXTENSION "
            "pg_stat_statements; the server needs it in shared_preload_libraries)"
        )
    return str(row[0]), None


def _table_pattern(tables: tuple[str, ...]) -> str:
    """A regular expression matching any of the tables' names as a word (unqualified: a
    query may name the table with or without its schema)."""
    names = sorted({t.split(".")[-1].strip('"') for t in tables})
    return r"\m(" + "|".join(re.escape(n) for n in names) + r")\M"


async def read_statements(
    conn: psycopg.AsyncConnection, tables: tuple[str, ...]
) -> tuple[tuple[StatementStats, ...], str | None]:
    """The statements of this database naming a watched table, or (), why not."""
    if not tables:
        return (), None
    schema, why_not = await _statements_view(conn)
    if schema is None:
        return (), why_not
    query = sql.SQL(
        """
        SELECT queryid::text, query, sum(calls)::bigint, sum(total_exec_time),
               max(max_exec_time)
        FROM {view}
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query ~* %s AND query ~* %s AND query !~* '\\mdbmigrate\\.'
        GROUP BY queryid, query
        ORDER BY sum(calls) DESC
        LIMIT %s
        """
    ).format(view=sql.Identifier(schema, "pg_stat_statements"))
    try:
        async with conn.transaction():
            cur = await conn.execute(
                query, (_APP_STATEMENT, _table_pattern(tables), STATEMENT_LIMIT)
            )
            rows = await cur.fetchall()
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:
        # installed, but not loaded: "must be loaded via shared_preload_libraries"
        return (), f"pg_stat_statements cannot be read: {exc.diag.message_primary}"
    return (
        tuple(
            StatementStats(
                queryid=str(qid),
                query=str(text),
                calls=int(calls),
                total_ms=float(total),
                max_ms=float(mx or 0.0),
            )
            for qid, text, calls, total, mx in rows
        ),
        None,
    )


async def read_indexes(
    conn: psycopg.AsyncConnection, tables: tuple[str, ...]
) -> tuple[IndexStats, ...]:
    """The indexes of the watched tables and their scans (pg_stat_user_indexes)."""
    if not tables:
        return ()
    cur = await conn.execute(
        """
        SELECT CASE WHEN s.schemaname = 'public' THEN s.indexrelname
                    ELSE s.schemaname || '.' || s.indexrelname END,
               CASE WHEN s.schemaname = 'public' THEN s.relname
                    ELSE s.schemaname || '.' || s.relname END,
               s.idx_scan
        FROM pg_stat_user_indexes s
        WHERE s.relid = ANY (SELECT to_regclass(t)::oid FROM unnest(%s::text[]) AS t)
        ORDER BY 1
        """,
        (list(tables),),
    )
    return tuple(
        IndexStats(name=str(n), table=str(t), scans=int(s or 0)) for n, t, s in await cur.fetchall()
    )


async def read_sample(conn: psycopg.AsyncConnection, tables: tuple[str, ...]) -> WatchSample:
    statements, why_not = await read_statements(conn, tables)
    return WatchSample(
        statements=statements,
        indexes=await read_indexes(conn, tables),
        statements_unavailable=why_not,
    )


async def tables_of_indexes(
    conn: psycopg.AsyncConnection, indexes: tuple[str, ...]
) -> tuple[str, ...]:
    """The tables of the named indexes that exist (a `DROP INDEX` names only the index)."""
    if not indexes:
        return ()
    cur = await conn.execute(
        """
        SELECT DISTINCT CASE WHEN n.nspname = 'public' THEN c.relname
                             ELSE n.nspname || '.' || c.relname END
        FROM unnest(%s::text[]) AS i(name)
        JOIN pg_index x ON x.indexrelid = to_regclass(i.name)
        JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        ORDER BY 1
        """,
        (list(indexes),),
    )
    return tuple(str(r[0]) for r in await cur.fetchall())


async def take_baseline(
    conn: psycopg.AsyncConnection,
    migration_id: str,
    uid: str,
    tables: tuple[str, ...],
    indexes: tuple[str, ...] = (),
) -> WatchBaseline:
    """Snapshot the watched tables' statements and indexes before the first step (replacing
    an earlier snapshot of the same migration: nothing has run yet). `indexes` named by the
    steps add their tables to the watched ones."""
    more = await tables_of_indexes(conn, indexes)
    tables = tuple(dict.fromkeys((*tables, *more)))
    sample = await read_sample(conn, tables)
    baseline = WatchBaseline(
        tables=tables,
        statements=sample.statements,
        indexes=frozenset(ix.name for ix in sample.indexes),
        statements_available=sample.statements_unavailable is None,
    )
    async with conn.transaction():
        await conn.execute(BASELINES_DDL)
        await conn.execute(
            """
            INSERT INTO dbmigrate.watch_baselines
                (migration_id, uid, tables, statements, indexes, statements_available)
            VALUES (%s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s)
            ON CONFLICT (migration_id, uid) DO UPDATE SET
                taken_at = now(), tables = EXCLUDED.tables, statements = EXCLUDED.statements,
                indexes = EXCLUDED.indexes,
                statements_available = EXCLUDED.statements_available
            """,
            (
                migration_id,
                uid,
                json.dumps(list(tables)),
                json.dumps(
                    [
                        [s.queryid, s.query, s.calls, s.total_ms, s.max_ms]
                        for s in baseline.statements
                    ]
                ),
                json.dumps(sorted(baseline.indexes)),
                baseline.statements_available,
            ),
        )
    return baseline


async def read_baseline(
    conn: psycopg.AsyncConnection, migration_id: str, uid: str
) -> WatchBaseline | None:
    cur = await conn.execute("SELECT to_regclass('dbmigrate.watch_baselines') IS NOT NULL")
    row = await cur.fetchone()
    if not (row and row[0]):
        return None
    cur = await conn.execute(
        "SELECT tables, statements, indexes, statements_available "
        "FROM dbmigrate.watch_baselines WHERE migration_id = %s AND uid = %s",
        (migration_id, uid),
    )
    found = await cur.fetchone()
    if found is None:
        return None
    tables, statements, indexes, available = found
    return WatchBaseline(
        tables=tuple(tables),
        statements=tuple(
            StatementStats(queryid=q, query=t, calls=int(c), total_ms=float(tm), max_ms=float(m))
            for q, t, c, tm, m in statements
        ),
        indexes=frozenset(indexes),
        statements_available=bool(available),
    )

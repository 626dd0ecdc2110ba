"""Planner statistics after a step changed a table's data (the seed's Step 6.2, "ANALYZE").

A backfill fills a column the planner has no statistics for yet: until autovacuum gets to the
table, queries filtering on it are planned blind (and row estimates of the rows still to do are
off, as the backfill's own progress estimate found). `analyze_table` runs `ANALYZE` on the
migration's session right after the step, bounded like every statement of the migration (its
lock timeout; ANALYZE takes SHARE UPDATE EXCLUSIVE, which waits only for DDL, VACUUM and
another ANALYZE) and by a statement timeout (it samples, so it is quick even on a big table).
"""

from __future__ import annotations

import psycopg
from psycopg import sql as pgsql

from dbmigrate.db.errors import first_line

STATEMENT_TIMEOUT = "5min"


async def analyze_table(
    conn: psycopg.AsyncConnection, table: str, *, lock_timeout: float
) -> str | None:
    """ANALYZE `table` ([schema.]name as a spec names it); None when done, else why not (the
    table is gone, a lock wait ran out, ...). Never raises for the database's refusal: statistics
    are worth having, not worth failing a finished step for."""
    try:
        async with conn.transaction():
            await conn.execute(
                pgsql.SQL("SET LOCAL lock_timeout = {}").format(
                    pgsql.Literal(f"{max(1, round(lock_timeout * 1000))}ms")
                )
            )
            await conn.execute(
                pgsql.SQL("SET LOCAL statement_timeout = {}").format(
                    pgsql.Literal(STATEMENT_TIMEOUT)
                )
            )
            cur = await conn.execute("SELECT to_regclass(%s)::text", (table,))
            row = await cur.fetchone()
            if row is None or row[0] is None:
                return f"table {table} not found"
            # regclass's text form is the name quoted as needed: safe to use as SQL.
            await conn.execute(pgsql.SQL("ANALYZE {}").format(pgsql.SQL(row[0])))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
        return first_line(exc)
    except psycopg.errors.InsufficientPrivilege as exc:
        return first_line(exc)
    return None

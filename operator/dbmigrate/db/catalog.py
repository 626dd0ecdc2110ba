"""Reading the PostgreSQL catalog for plans: table size estimates and the server's version.

Each function takes an open psycopg connection; nothing here writes. Row counts come from the
planner's statistics (`pg_class.reltuples`, as fresh as the last ANALYZE or autovacuum), not
from `count(*)`, so asking about a huge table costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from dbmigrate.core.lint.context import TableEstimate
from dbmigrate.db.errors import redact_dsn

# What connect() and the look-ups raise when the database cannot be read.
DatabaseError = psycopg.Error

# Every table in one round trip: the name as given, its estimates and its columns' types.
_ESTIMATES_SQL = """
SELECT t.name, c.reltuples::bigint, pg_total_relation_size(c.oid), c.relkind = 'p',
       ARRAY(SELECT ARRAY[a.attname::text, format_type(a.atttypid, a.atttypmod)]
             FROM pg_attribute AS a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum)
FROM unnest(%s::text[], %s::text[]) AS t(name, regclass)
JOIN pg_class AS c ON c.oid = to_regclass(t.regclass)
"""


def _regclass_text(table: str) -> str:
    """`schema.table` with every part double-quoted: the names come from the SQL parser, which
    has already folded unquoted identifiers, so they must be looked up exactly."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


def redact(message: str, dsn: str) -> str:
    """An error message safe to print: the DSN and its password replaced by `***`."""
    return redact_dsn(message, dsn)


def connect(dsn: str, *, connect_timeout: int = 10) -> psycopg.Connection:
    """A read-only autocommit connection for catalog look-ups. Read-only by the session's
    default: psycopg's `read_only` only applies to the transactions it begins, and an
    autocommit connection begins none."""
    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=connect_timeout,
        options="-c default_transaction_read_only=on",
    )


def server_major_version(conn: psycopg.Connection) -> int:
    """15 for PostgreSQL 15.x (server_version_num 150004)."""
    return int(conn.info.server_version) // 10000


def fetch_table_estimates(
    conn: psycopg.Connection, tables: Iterable[str]
) -> dict[str, TableEstimate]:
    """Estimates for the tables that exist, keyed by the name as given (`users`,
    `billing.invoices`, resolved with the connection's search_path), with their columns' types.
    A table never analysed has no row estimate (reltuples is -1 from PostgreSQL 14 on, 0
    before) but still a size."""
    names = list(dict.fromkeys(tables))
    if not names:
        return {}
    rows = conn.execute(_ESTIMATES_SQL, (names, [_regclass_text(t) for t in names])).fetchall()
    out: dict[str, TableEstimate] = {}
    for table, reltuples, size, partitioned, columns in rows:
        out[table] = TableEstimate(
            rows=int(reltuples) if reltuples is not None and reltuples >= 0 else None,
            size_bytes=int(size) if size is not None else None,
            partitioned=bool(partitioned),
            columns=tuple((str(name), str(kind)) for name, kind in columns),
        )
    return out


def read_tables(
    dsn: str, tables: Iterable[str], *, connect_timeout: int = 10
) -> tuple[int, dict[str, TableEstimate]]:
    """The server's major version and the tables' estimates, on a connection of their own."""
    with connect(dsn, connect_timeout=connect_timeout) as conn:
        return server_major_version(conn), fetch_table_estimates(conn, tables)

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

_ESTIMATE_SQL = """
SELECT c.reltuples::bigint, pg_total_relation_size(c.oid), c.relkind = 'p'
FROM pg_class AS c
WHERE c.oid = to_regclass(%s)
"""


_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def _regclass_text(table: str) -> str:
    """`schema.table` with every part double-quoted: the names come from the SQL parser, which
    has already folded unquoted identifiers, so they must be looked up exactly."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


def redact(message: str, dsn: str) -> str:
    """An error message safe to print: the DSN and its password replaced by `***`."""
    return redact_dsn(message, dsn)


def connect(dsn: str, *, connect_timeout: int = 10) -> psycopg.Connection:
    """A read-only autocommit connection for catalog look-ups."""
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout)
    conn.read_only = True
    return conn


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
    out: dict[str, TableEstimate] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(_ESTIMATE_SQL, (_regclass_text(table),))
            row = cur.fetchone()
            if row is None:
                continue
            reltuples, size, partitioned = row
            rows = int(reltuples) if reltuples is not None and reltuples >= 0 else None
            cur.execute(_COLUMNS_SQL, (_regclass_text(table),))
            columns = tuple((str(name), str(kind)) for name, kind in cur.fetchall())
            out[table] = TableEstimate(
                rows=rows,
                size_bytes=int(size) if size is not None else None,
                partitioned=bool(partitioned),
                columns=columns,
            )
    return out

"""The table a backfill walks: its primary key, a check of the author's SQL, its size.

Owns `TableInfo` (the table's server-quoted name and its key columns, with the SQL fragments
that compare and serialise keys), `read_table` (no table or no primary key fails before
anything is written), `check_statements` (EXPLAIN of the UPDATE, nothing executed) and the
cheap size estimates from `pg_class.reltuples` and the planner, which slicing and progress
use so that neither ever scans a big table.

Keys travel as JSON arrays made by the server (`jsonb_build_array`): integer columns as
numbers, every other type as its text form, cast back with the column's own type, so any key
type whose text form round-trips (all built-in ones) works without Python conversions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from dbmigrate.db.backfill.model import BackfillSqlError, NoPrimaryKey, TableNotFound

_INTEGER_TYPES = {20, 21, 23}  # int8, int2, int4


@dataclass(frozen=True)
class TableInfo:
    oid: int
    name: str  # schema-qualified and quoted as the server formats it: public.users
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]  # format_type() of each key column
    key_type_oids: tuple[int, ...]

    @property
    def ident(self) -> sql.Composable:
        # `name` comes from format('%I.%I') on the catalog: already quoted by the server.
        return sql.SQL(self.name)

    @property
    def integer_key(self) -> bool:
        return len(self.key_type_oids) == 1 and self.key_type_oids[0] in _INTEGER_TYPES

    @property
    def key_row(self) -> sql.Composable:
        """`(a, b)`: the key as a row, for row comparisons the btree index can serve."""
        return sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, self.key_columns)))

    @property
    def key_order(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.key_columns))

    def key_range(self, lower: sql.Composable | None, upper: sql.Composable) -> sql.Composable:
        """`(a, b) > lower AND (a, b) <= upper` for JSON array keys; no lower bound if None."""
        rng = self.key_row + sql.SQL(" <= ") + self.key_value(upper)
        if lower is None:
            return rng
        return self.key_row + sql.SQL(" > ") + self.key_value(lower) + sql.SQL(" AND ") + rng

    def key_json(self) -> sql.Composable:
        """The key of a row as a JSON array text: `jsonb_build_array(a, b::text)::text`."""
        parts = []
        for column, type_oid in zip(self.key_columns, self.key_type_oids, strict=True):
            ref = sql.Identifier(column)
            parts.append(ref if type_oid in _INTEGER_TYPES else sql.SQL("{}::text").format(ref))
        return sql.SQL("jsonb_build_array({})::text").format(sql.SQL(", ").join(parts))

    def key_value(self, value: sql.Composable) -> sql.Composable:
        """A JSON array key (a placeholder or a literal) as a typed row: `((k->>0)::bigint)`."""
        parts = [
            sql.SQL("(({}::jsonb ->> {})::{})").format(value, sql.SQL(str(i)), sql.SQL(type_))
            for i, type_ in enumerate(self.key_types)
        ]
        return sql.SQL("({})").format(sql.SQL(", ").join(parts))


def read_table(conn: psycopg.Connection[Any], table: str) -> TableInfo:
    """The table and its primary key; `TableNotFound` / `NoPrimaryKey` otherwise."""
    try:
        row = conn.execute(
            """
            SELECT c.oid, format('%%I.%%I', n.nspname, c.relname), c.relkind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = to_regclass(%s)
            """,
            (table,),
        ).fetchone()
    except psycopg.Error as exc:
        raise BackfillSqlError(f"cannot read table {table!r}", exc) from exc
    if row is None:
        raise TableNotFound(f"table {table} does not exist (or is not visible to this user)")
    oid, name, relkind = row
    if relkind not in ("r", "p"):
        raise TableNotFound(f"{name} is not a table")
    keys = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s AND i.indisprimary
        ORDER BY k.ord
        """,
        (oid,),
    ).fetchall()
    if not keys:
        raise NoPrimaryKey(
            f"table {name} has no primary key: a backfill walks the primary key in batches "
            "(add one, e.g. ALTER TABLE ... ADD PRIMARY KEY USING INDEX ...)"
        )
    return TableInfo(
        oid=oid,
        name=name,
        key_columns=tuple(k[0] for k in keys),
        key_types=tuple(k[1] for k in keys),
        key_type_oids=tuple(k[2] for k in keys),
    )


def check_statements(
    conn: psycopg.Connection[Any], info: TableInfo, set_sql: str, where_sql: str | None
) -> None:
    """EXPLAIN the UPDATE (nothing runs): bad `set`/`where` SQL fails here, before any write."""
    query = sql.SQL("EXPLAIN UPDATE {} SET {}").format(info.ident, sql.SQL(set_sql))
    if where_sql:
        query += sql.SQL(" WHERE ({})").format(sql.SQL(where_sql))
    try:
        # binary=True forces the extended protocol: exactly one statement is accepted.
        conn.execute(query, binary=True)
    except errors.LockNotAvailable:
        raise  # planning an UPDATE locks the table: retried by the caller
    except psycopg.Error as exc:
        raise BackfillSqlError("the backfill's set/where SQL is invalid", exc) from exc


# ---------------------------------------------------------------------------------------------
# size estimates


def read_reltuples(conn: psycopg.Connection[Any], info: TableInfo) -> float:
    """Live rows at the last VACUUM/ANALYZE; -1 when the table never had either."""
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s", (info.oid,)).fetchone()
    return float(row[0]) if row else -1.0


# pg_class.relpages at the last VACUUM/ANALYZE against the table's size now: grown beyond
# this factor (and past a few pages), reltuples describes another table.
STALE_GROWTH = 4.0
STALE_MIN_PAGES = 8


def statistics_stale(conn: psycopg.Connection[Any], info: TableInfo) -> bool:
    """No usable statistics: never analysed (reltuples -1), the table grew far since, or a
    column has none (added since the last ANALYZE: typically the one the backfill fills).

    A table filled right after CREATE TABLE has none until autovacuum comes by, nor has a
    column the migration just added; the planner then guesses a predicate's selectivity
    (0.5 % for `col IS NULL`, 33 % for a range) and an estimate built on it can be wrong
    600-fold.
    """
    row = conn.execute(
        """
        SELECT c.reltuples, c.relpages, c.relkind,
               pg_relation_size(c.oid) / current_setting('block_size')::int,
               EXISTS (
                 SELECT 1 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND NOT EXISTS (
                     SELECT 1 FROM pg_stats s
                     WHERE s.schemaname = n.nspname AND s.tablename = c.relname
                       AND s.attname = a.attname))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = %s
        """,
        (info.oid,),
    ).fetchone()
    if row is None:
        return True
    reltuples, relpages, relkind, pages, column_without = row
    if float(reltuples) < 0 or column_without:
        return True
    if relkind == "p":
        return False  # a partitioned table's size is its partitions'
    return int(pages) > STALE_MIN_PAGES and int(pages) > STALE_GROWTH * max(int(relpages), 1)


def table_rows_estimate(conn: psycopg.Connection[Any], info: TableInfo) -> float:
    """Rows in the table by its statistics, or by the planner when it has none yet."""
    reltuples = read_reltuples(conn, info)
    if reltuples >= 0:
        return reltuples
    # Never vacuumed or analysed: the planner extrapolates from the table's size on disk.
    return planner_rows(conn, sql.SQL("SELECT 1 FROM {}").format(info.ident))


def rows_to_do_estimate(
    conn: psycopg.Connection[Any], info: TableInfo, where_sql: str | None
) -> float:
    """Rows matching `where_sql` by the planner (the table's rows without one); never scans."""
    if not where_sql:
        return table_rows_estimate(conn, info)
    return planner_rows(
        conn, sql.SQL("SELECT 1 FROM {} WHERE {}").format(info.ident, sql.SQL(where_sql))
    )


def planner_rows(conn: psycopg.Connection[Any], query: sql.Composable) -> float:
    """The planner's row count for `query`, which is planned, never run."""
    # binary=True forces the extended protocol: one statement only, whatever `where` holds.
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, binary=True).fetchone()
    if row is None:
        return 0.0
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return float(plan[0]["Plan"]["Plan Rows"])

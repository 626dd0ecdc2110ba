"""Reading tables from the catalog for `dbmigrate docs`: columns with their types, defaults,
nullability and comments, the indexes and constraints on each column, the table's comment.

Tables are looked up by name with `to_regclass` (the connection's search_path resolves an
unqualified name, as it did for the migration's SQL); only ordinary and partitioned tables are
returned, keyed by the name as given. Nothing here writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import psycopg

from dbmigrate.core.schema_docs import ColumnFacts, IndexFacts, TableFacts

_TABLES = """
SELECT t.name, c.oid, n.nspname || '.' || c.relname, obj_description(c.oid, 'pg_class')
FROM unnest(%s::text[], %s::text[]) AS t(name, regclass)
JOIN pg_class c ON c.oid = to_regclass(t.regclass)
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
       col_description(a.attrelid, a.attnum),
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END
FROM pg_attribute a
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# An index is on a column when the column is one of its keys or INCLUDE columns, or its
# expressions or predicate use the column (PostgreSQL records those as dependencies).
_INDEXES = """
SELECT i.indrelid, a.attname, ic.relname, am.amname, i.indisunique, i.indisprimary,
       i.indpred IS NOT NULL, i.indisvalid
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped
WHERE i.indrelid = ANY(%s::oid[])
  AND (a.attnum = ANY(i.indkey) OR EXISTS (
        SELECT 1 FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
          AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid
          AND d.refobjsubid = a.attnum))
ORDER BY ic.relname
"""

# Check, foreign key and exclusion constraints (unique and primary keys show as indexes).
_CONSTRAINTS = """
SELECT k.conrelid, a.attname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
WHERE k.conrelid = ANY(%s::oid[]) AND k.contype IN ('c', 'f', 'x')
ORDER BY k.conname
"""


def regclass_text(table: str) -> str:
    """`schema.table` with every part double-quoted, for a name the SQL parser already
    folded (it must be looked up exactly)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


async def read_table_facts(
    conn: psycopg.AsyncConnection, tables: Iterable[tuple[str, str]]
) -> dict[str, TableFacts]:
    """The tables that exist, keyed by name. `tables` are (name, lookup) pairs: the lookup is
    the text given to `to_regclass` (`regclass_text(name)` for a parsed name, or a name as a
    person typed it)."""
    pairs = list(dict.fromkeys(tables))
    if not pairs:
        return {}
    cur = await conn.execute(
        _TABLES, ([name for name, _ in pairs], [lookup for _, lookup in pairs])
    )
    found = {
        str(name): (int(oid), str(qualified), comment)
        for name, oid, qualified, comment in await cur.fetchall()
    }
    oids = sorted({oid for oid, _, _ in found.values()})
    indexes: dict[tuple[int, str], list[IndexFacts]] = defaultdict(list)
    cur = await conn.execute(_INDEXES, (oids,))
    for oid, column, name, method, unique, primary, partial, valid in await cur.fetchall():
        indexes[(oid, column)].append(
            IndexFacts(name, method, bool(unique), bool(primary), bool(partial), bool(valid))
        )
    constraints: dict[tuple[int, str], list[str]] = defaultdict(list)
    cur = await conn.execute(_CONSTRAINTS, (oids,))
    for oid, column, name, definition in await cur.fetchall():
        constraints[(oid, column)].append(f"{name} {definition}")
    columns: dict[int, list[ColumnFacts]] = defaultdict(list)
    cur = await conn.execute(_COLUMNS, (oids,))
    for oid, name, type_, nullable, default, comment, identity, generated in await cur.fetchall():
        columns[oid].append(
            ColumnFacts(
                name=name,
                type=type_,
                nullable=bool(nullable),
                default=default,
                comment=comment,
                identity=identity,
                generated=generated,
                indexes=tuple(indexes[(oid, name)]),
                constraints=tuple(constraints[(oid, name)]),
            )
        )
    return {
        name: TableFacts(qualified, tuple(columns[oid]), comment)
        for name, (oid, qualified, comment) in found.items()
    }

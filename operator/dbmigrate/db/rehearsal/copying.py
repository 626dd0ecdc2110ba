"""Filling a scratch database from the real one: its schema, and sample rows of the tables a
migration touches.

The order keeps the copy cheap and consistent: the schema's pre-data section (types, tables,
functions, sequences) first, then the rows (no index or constraint to maintain yet), then the
rows whose foreign key targets were not sampled are pruned, then the post-data section
(primary keys, indexes, foreign keys, triggers) is applied, its foreign keys checked against
rows that satisfy them. Sequences are set to the real ones' values, so a step inserting rows
does not collide with the copied ones.

The real database is only read: `pg_dump` (ACCESS SHARE locks, waiting for them at most
`LOCK_WAIT`) and `COPY (SELECT …) TO STDOUT` on a read-only session. The history schema
(`dbmigrate`) is not copied; the rehearsal makes its own in the scratch database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

from dbmigrate.db.rehearsal.scratch import run_tool

HISTORY_SCHEMA = "dbmigrate"
LOCK_WAIT = "30s"
_DUMP_OPTIONS = (
    "--schema-only",
    "--no-owner",
    "--no-privileges",
    "--no-tablespaces",
    "--no-publications",
    "--no-subscriptions",
    "--no-security-labels",
    f"--exclude-schema={HISTORY_SCHEMA}",
    f"--lock-wait-timeout={LOCK_WAIT}",
)


async def copy_schema_section(
    pg_dump: str, psql: str, real_dsn: str, scratch_dsn: str, section: str
) -> None:
    """One section (`pre-data`, `post-data`) of the real database's schema into the scratch
    database, in one transaction: all of it or nothing."""
    dump = await run_tool(
        [pg_dump, *_DUMP_OPTIONS, f"--section={section}"], real_dsn, redact=(scratch_dsn,)
    )
    await run_tool(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-"],
        scratch_dsn,
        stdin=dump,
        redact=(real_dsn,),
    )


async def copy_sequence_values(
    real: psycopg.AsyncConnection, scratch: psycopg.AsyncConnection
) -> None:
    """Every sequence of the scratch database where the real one stands."""
    cur = await real.execute(
        "SELECT format('%%I.%%I', schemaname, sequencename), last_value FROM pg_sequences "
        "WHERE last_value IS NOT NULL AND schemaname <> %s",
        (HISTORY_SCHEMA,),
    )
    for name, value in await cur.fetchall():
        await scratch.execute("SELECT setval(%s::regclass, %s)", (name, value))


# A table as (schema, name), unquoted.
Table = tuple[str, str]


def table_name(table: Table) -> str:
    """How a person reads it: `public.users`."""
    return f"{table[0]}.{table[1]}"


def _table(table: Table) -> pgsql.Composed:
    return pgsql.SQL("{}.{}").format(pgsql.Identifier(table[0]), pgsql.Identifier(table[1]))


@dataclass(frozen=True)
class ForeignKey:
    child: Table
    child_columns: tuple[str, ...]
    parent: Table
    parent_columns: tuple[str, ...]


_RESOLVE_SQL = """
SELECT n.nspname, c.relname
FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i)
JOIN pg_class c ON c.oid = to_regclass(t.name)
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> %s
ORDER BY t.i
"""

_FOREIGN_KEYS_SQL = """
SELECT cn.nspname, c.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS x(attnum, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum
             ORDER BY x.i),
       pn.nspname, p.relname,
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS x(attnum, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = x.attnum
             ORDER BY x.i)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = k.confrelid
JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0
"""


def _regclass_text(table: str) -> str:
    """`schema.table` with every part double-quoted: the names come from the SQL parser, which
    has already folded unquoted identifiers, so they must be looked up exactly."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


async def tables_to_sample(real: psycopg.AsyncConnection, touched: Iterable[str]) -> list[Table]:
    """The touched tables that exist, and every table they reference through foreign keys
    (transitively): what the sample copies."""
    names = [_regclass_text(t) for t in touched]
    cur = await real.execute(_RESOLVE_SQL, (names, HISTORY_SCHEMA))
    tables: list[Table] = list(dict.fromkeys((row[0], row[1]) for row in await cur.fetchall()))
    keys = await foreign_keys(real)
    grew = True
    while grew:
        grew = False
        for fk in keys:
            if fk.child in tables and fk.parent not in tables:
                tables.append(fk.parent)
                grew = True
    return tables


async def foreign_keys(conn: psycopg.AsyncConnection) -> list[ForeignKey]:
    cur = await conn.execute(_FOREIGN_KEYS_SQL)
    return [
        ForeignKey((cs, cr), tuple(cc), (ps, pr), tuple(pc))
        for cs, cr, cc, ps, pr, pc in await cur.fetchall()
    ]


async def _copy_columns(real: psycopg.AsyncConnection, table: Table) -> list[str]:
    """The columns a COPY can fill (generated columns are computed, not copied)."""
    cur = await real.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' ORDER BY a.attnum",
        table,
    )
    return [row[0] for row in await cur.fetchall()]


async def copy_sample(
    real: psycopg.AsyncConnection, scratch: psycopg.AsyncConnection, table: Table, rows: int
) -> None:
    """Up to `rows` rows of the table, binary COPY from the real database to the scratch one."""
    columns = await _copy_columns(real, table)
    if not columns:
        return
    cols = pgsql.SQL(", ").join(pgsql.Identifier(c) for c in columns)
    source = pgsql.SQL("COPY (SELECT {} FROM {} LIMIT {}) TO STDOUT (FORMAT binary)").format(
        cols, _table(table), pgsql.Literal(rows)
    )
    target = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(_table(table), cols)
    async with (
        real.cursor() as rcur,
        scratch.cursor() as scur,
        rcur.copy(source) as out,
        scur.copy(target) as into,
    ):
        async for chunk in out:
            await into.write(chunk)


async def prune_orphans(
    scratch: psycopg.AsyncConnection, keys: list[ForeignKey], tables: list[Table]
) -> int:
    """Delete sampled rows whose foreign key targets were not sampled, until none is left (a
    deleted parent row can orphan a grandchild); the rows deleted. Only the keys between
    sampled tables count (a table not sampled has no rows to orphan)."""
    keys = [fk for fk in keys if fk.child in tables and fk.parent in tables]
    deleted = 0
    while True:
        this_round = 0
        for fk in keys:
            match = pgsql.SQL(" AND ").join(
                pgsql.SQL("p.{} = c.{}").format(pgsql.Identifier(pc), pgsql.Identifier(cc))
                for pc, cc in zip(fk.parent_columns, fk.child_columns, strict=True)
            )
            # MATCH SIMPLE: a row with a NULL in the key references nothing.
            not_null = pgsql.SQL(" AND ").join(
                pgsql.SQL("c.{} IS NOT NULL").format(pgsql.Identifier(cc))
                for cc in fk.child_columns
            )
            cur = await scratch.execute(
                pgsql.SQL(
                    "DELETE FROM {} AS c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})"
                ).format(_table(fk.child), not_null, _table(fk.parent), match)
            )
            this_round += cur.rowcount
        deleted += this_round
        if this_round == 0:
            return deleted


async def count_rows(scratch: psycopg.AsyncConnection, table: Table) -> int:
    cur = await scratch.execute(pgsql.SQL("SELECT count(*) FROM {}").format(_table(table)))
    row = await cur.fetchone()
    return int(row[0]) if row else 0

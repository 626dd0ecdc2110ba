"""Reading a database's schema from its catalog into a `core.schema_diff.SchemaSnapshot`.

What is compared of each object is what a migration's down must restore: tables (kind,
persistence), columns (type, nullability, default, identity, generated expression, collation),
constraints (definition, validity), indexes (definition, validity), sequences (type, bounds,
owner column), triggers (definition, enabled), views and materialized views (definition),
functions and procedures (result, a digest of the definition), enum and domain types, schemas
and extensions. Positions are not compared (a column dropped and added again goes to the end).
The system schemas and dbmigrate's own (`dbmigrate`) are left out, as are the objects an
extension owns. Nothing here writes.
"""

from __future__ import annotations

import psycopg

from dbmigrate.core.schema_diff import CatalogObject, SchemaSnapshot

# Schemas that are not the user's: the system's and dbmigrate's history schema.
_USER_NAMESPACE = """
    n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbmigrate')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""
_NOT_FROM_EXTENSION = """
    NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')
"""

_SCHEMAS = f"SELECT n.nspname FROM pg_namespace n WHERE {_USER_NAMESPACE}"

_EXTENSIONS = "SELECT extname, extversion FROM pg_extension"

_TABLES = f"""
SELECT n.nspname || '.' || c.relname,
       CASE c.relkind WHEN 'p' THEN 'partitioned' ELSE 'ordinary' END,
       CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary'
            ELSE 'logged' END,
       pg_get_expr(c.relpartbound, c.oid),
       CASE WHEN c.relrowsecurity THEN 'on' ELSE 'off' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {_USER_NAMESPACE}
  AND {_NOT_FROM_EXTENSION.format(oid="c.oid")}
"""

_COLUMNS = f"""
SELECT n.nspname || '.' || c.relname, a.attname,
       format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE 'nullable' END,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
       CASE a.attidentity WHEN 'a' THEN 'ALWAYS' WHEN 'd' THEN 'BY DEFAULT' END,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_NAMESPACE}
  AND {_NOT_FROM_EXTENSION.format(oid="c.oid")}
"""

_CONSTRAINTS = f"""
SELECT n.nspname || '.' || c.relname, k.conname, pg_get_constraintdef(k.oid),
       CASE WHEN k.convalidated THEN 'valid' ELSE 'NOT VALID' END
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NAMESPACE} AND {_NOT_FROM_EXTENSION.format(oid="c.oid")}
"""

_INDEXES = f"""
SELECT n.nspname || '.' || ic.relname, n.nspname || '.' || tc.relname,
       pg_get_indexdef(i.indexrelid),
       CASE WHEN i.indisvalid THEN 'valid' ELSE 'INVALID' END
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE tc.relkind IN ('r', 'p', 'm') AND {_USER_NAMESPACE}
  AND {_NOT_FROM_EXTENSION.format(oid="tc.oid")}
"""

_SEQUENCES = f"""
SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL), s.seqstart::text,
       s.seqincrement::text, s.seqmin::text, s.seqmax::text,
       CASE WHEN s.seqcycle THEN 'cycle' ELSE 'no cycle' END,
       (SELECT tn.nspname || '.' || tc.relname || '.' || a.attname
        FROM pg_depend d
        JOIN pg_class tc ON tc.oid = d.refobjid
        JOIN pg_namespace tn ON tn.oid = tc.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LIMIT 1)
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NAMESPACE} AND {_NOT_FROM_EXTENSION.format(oid="c.oid")}
"""

_TRIGGERS = f"""
SELECT n.nspname || '.' || c.relname, t.tgname, pg_get_triggerdef(t.oid),
       CASE t.tgenabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica'
            WHEN 'A' THEN 'always' ELSE 'enabled' END
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND {_USER_NAMESPACE}
"""

_VIEWS = f"""
SELECT n.nspname || '.' || c.relname,
       CASE c.relkind WHEN 'm' THEN 'materialized' ELSE 'plain' END,
       pg_get_viewdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND {_USER_NAMESPACE}
  AND {_NOT_FROM_EXTENSION.format(oid="c.oid")}
"""

_FUNCTIONS = f"""
SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
       pg_get_function_result(p.oid),
       'md5 ' || left(md5(pg_get_functiondef(p.oid)), 12)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prokind IN ('f', 'p') AND {_USER_NAMESPACE}
  AND {_NOT_FROM_EXTENSION.format(oid="p.oid")}
"""

_TYPES = f"""
SELECT n.nspname || '.' || t.typname,
       CASE t.typtype WHEN 'e' THEN 'enum' ELSE 'domain' END,
       CASE WHEN t.typtype = 'e' THEN
           (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
            FROM pg_enum e WHERE e.enumtypid = t.oid)
       ELSE format_type(t.typbasetype, t.typtypmod) END,
       CASE WHEN t.typtype = 'd' THEN
           (SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), '; '
                              ORDER BY k.conname)
            FROM pg_constraint k WHERE k.contypid = t.oid) END,
       CASE WHEN t.typtype = 'd' AND t.typnotnull THEN 'NOT NULL' END,
       t.typdefault
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd') AND {_USER_NAMESPACE}
  AND {_NOT_FROM_EXTENSION.format(oid="t.oid")}
"""


async def read_snapshot(conn: psycopg.AsyncConnection) -> SchemaSnapshot:
    """The user schemas of the connection's database."""
    objects: list[CatalogObject] = []

    async def rows(query: str) -> list[tuple[str | None, ...]]:
        cur = await conn.execute(query)  # type: ignore[arg-type]  # constant SQL
        return list(await cur.fetchall())

    for (name,) in await rows(_SCHEMAS):
        objects.append(CatalogObject("schema", str(name)))
    for name, version in await rows(_EXTENSIONS):
        objects.append(CatalogObject("extension", str(name), {"version": version}))
    for name, kind, base, constraints, notnull, default in await rows(_TYPES):
        objects.append(
            CatalogObject(
                "type",
                str(name),
                {
                    "kind": kind,
                    "labels" if kind == "enum" else "base type": base,
                    "constraints": constraints,
                    "nullability": notnull,
                    "default": default,
                },
            )
        )
    for name, kind, persistence, bound, rls in await rows(_TABLES):
        attrs = {"kind": kind, "persistence": persistence, "partition of": bound, "RLS": rls}
        objects.append(CatalogObject("table", str(name), attrs))
    for table, column, type_, null, default, identity, generated, collation in await rows(_COLUMNS):
        attrs = {
            "type": type_,
            "nullability": null,
            "default": default,
            "identity": identity,
            "generated": generated,
            "collation": collation,
        }
        objects.append(
            CatalogObject("column", f"{table}.{column}", attrs, parent=("table", str(table)))
        )
    for table, name, definition, valid in await rows(_CONSTRAINTS):
        attrs = {"definition": definition, "validity": valid}
        objects.append(
            CatalogObject("constraint", f"{table}.{name}", attrs, parent=("table", str(table)))
        )
    for name, table, definition, valid in await rows(_INDEXES):
        attrs = {"definition": definition, "validity": valid}
        objects.append(CatalogObject("index", str(name), attrs, parent=("table", str(table))))
    for name, type_, start, increment, low, high, cycle, owner in await rows(_SEQUENCES):
        attrs = {
            "type": type_,
            "start": start,
            "increment": increment,
            "min": low,
            "max": high,
            "cycle": cycle,
            "owned by": owner,
        }
        objects.append(CatalogObject("sequence", str(name), attrs))
    for table, name, definition, enabled in await rows(_TRIGGERS):
        attrs = {"definition": definition, "enabled": enabled}
        objects.append(
            CatalogObject("trigger", f"{table}.{name}", attrs, parent=("table", str(table)))
        )
    for name, kind, definition in await rows(_VIEWS):
        objects.append(CatalogObject("view", str(name), {"kind": kind, "definition": definition}))
    for name, kind, result, digest in await rows(_FUNCTIONS):
        attrs = {"kind": kind, "result": result, "definition": digest}
        objects.append(CatalogObject("function", str(name), attrs))
    return SchemaSnapshot.of(objects)

"""What a step's SQL did to tables and columns, read from its syntax tree (seed Step 6.3).

Pure. `parse_changes` turns the up SQL of a step into `SchemaChange`s: tables created, renamed
(or moved to another schema) and dropped; columns added, changed (type, default, NOT NULL,
identity, generation expression), renamed and dropped; indexes and constraints added, renamed,
validated and dropped, with the columns they are on. `dbmigrate docs` folds these, migration by
migration, into each column's history (`core.schema_history`).

Names are as the parser folded them; tables are keyed like everywhere in `core`
(`sqlast.table_key`: `public.` dropped), indexes the same way (an index lives in its table's
schema). Statements that change no table's shape (DML, functions, DO blocks) give nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.stream import maybe_double_quote_name

from dbmigrate.core.sqlast import (
    deparse,
    dotted_name,
    name_in_schema_of,
    relation_name,
    table_key,
    walk,
)
from dbmigrate.core.statements import parse_statements

ChangeKind = Literal[
    "create-table",
    "rename-table",
    "drop-table",
    "add-column",
    "alter-column",
    "rename-column",
    "drop-column",
    "add-index",
    "rename-index",
    "drop-index",
    "add-constraint",
    "rename-constraint",
    "validate-constraint",
    "drop-constraint",
]


@dataclass(frozen=True)
class SchemaChange:
    """One change to a table's shape.

    - `table`: the table's key; "" for index renames and drops, whose statement does not name
      the table.
    - `columns`: the columns the change is about (a table's listed columns when created; an
      index's or constraint's columns).
    - `name`: the index or constraint (for renames, the old name; for `rename-table`, unused).
    - `new_name`: the new name of a renamed table (its key), column, index or constraint.
    - `what`: the change in SQL words, for a reader: `SET NOT NULL`, `TYPE bigint`,
      `SET DEFAULT false`, `CHECK (a > 0) NOT VALID`.
    - `all_columns`: for `create-table`, whether `columns` are all the table got (false with
      LIKE, INHERITS, PARTITION OF, OF type and CREATE TABLE AS).
    """

    kind: ChangeKind
    table: str
    columns: tuple[str, ...] = ()
    name: str | None = None
    new_name: str | None = None
    what: str = ""
    all_columns: bool = True


def parse_changes(sql: str) -> list[SchemaChange]:
    """The changes of a step's SQL, in statement order; SqlSyntaxError when it does not parse."""
    out: list[SchemaChange] = []
    for statement in parse_statements(sql):
        out.extend(statement_changes(statement.node))
    return out


def statement_changes(node: Any) -> Iterator[SchemaChange]:
    """The changes of one parsed statement."""
    if isinstance(node, ast.CreateStmt):
        yield _create_table(node)
    elif isinstance(node, ast.CreateTableAsStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        into: Any = node.into
        yield SchemaChange(
            "create-table",
            table_key(relation_name(into.rel)),
            tuple(str(getattr(c, "sval", c)) for c in into.colNames or ()),
            what="AS query",
            all_columns=False,
        )
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        table = table_key(relation_name(node.relation))
        for cmd in node.cmds or ():
            yield from _alter_table(table, cmd)
    elif isinstance(node, ast.IndexStmt):
        yield _create_index(node)
    elif isinstance(node, ast.RenameStmt):
        yield from _rename(node)
    elif isinstance(node, ast.AlterObjectSchemaStmt) and node.objectType == ObjectType.OBJECT_TABLE:
        relation: Any = node.relation
        old = relation_name(relation)
        new = f"{node.newschema}.{relation.relname}"
        yield SchemaChange("rename-table", table_key(old), new_name=table_key(new))
    elif isinstance(node, ast.DropStmt):
        yield from _drop(node)


def _create_table(node: Any) -> SchemaChange:
    columns: list[str] = []
    complete = not (node.inhRelations or node.partbound or node.ofTypename)
    for element in node.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            columns.append(str(element.colname))
        elif isinstance(element, ast.TableLikeClause):
            complete = False
    return SchemaChange(
        "create-table",
        table_key(relation_name(node.relation)),
        tuple(columns),
        all_columns=complete,
    )


# ALTER COLUMN sub-commands that take no value: their words.
_COLUMN_WORDS = {
    AlterTableType.AT_SetNotNull: "SET NOT NULL",
    AlterTableType.AT_DropNotNull: "DROP NOT NULL",
    AlterTableType.AT_DropIdentity: "DROP IDENTITY",
    AlterTableType.AT_SetIdentity: "SET identity options",
    AlterTableType.AT_AddIdentity: "ADD GENERATED AS IDENTITY",
    AlterTableType.AT_DropExpression: "DROP EXPRESSION",
    AlterTableType.AT_SetExpression: "SET EXPRESSION",
}


def _alter_table(table: str, cmd: Any) -> Iterator[SchemaChange]:
    subtype = cmd.subtype
    if subtype == AlterTableType.AT_AddColumn:
        coldef = cmd.def_
        yield SchemaChange("add-column", table, (str(coldef.colname),), what=deparse(coldef))
    elif subtype == AlterTableType.AT_AlterColumnType:
        yield SchemaChange(
            "alter-column", table, (str(cmd.name),), what=f"TYPE {deparse(cmd.def_)}"
        )
    elif subtype == AlterTableType.AT_ColumnDefault:
        what = "DROP DEFAULT" if cmd.def_ is None else f"SET DEFAULT {deparse(cmd.def_)}"
        yield SchemaChange("alter-column", table, (str(cmd.name),), what=what)
    elif subtype in _COLUMN_WORDS and cmd.name:
        yield SchemaChange("alter-column", table, (str(cmd.name),), what=_COLUMN_WORDS[subtype])
    elif subtype == AlterTableType.AT_DropColumn:
        yield SchemaChange("drop-column", table, (str(cmd.name),))
    elif subtype == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        constraint = cmd.def_
        yield SchemaChange(
            "add-constraint",
            table,
            constraint_columns(constraint),
            name=constraint.conname,
            what=_constraint_words(constraint),
        )
    elif subtype == AlterTableType.AT_ValidateConstraint:
        yield SchemaChange("validate-constraint", table, name=str(cmd.name))
    elif subtype == AlterTableType.AT_DropConstraint:
        yield SchemaChange("drop-constraint", table, name=str(cmd.name))


def _constraint_words(constraint: Any) -> str:
    """`CHECK (a > 0) NOT VALID`: the constraint as SQL without its `CONSTRAINT name` prefix."""
    text = deparse(constraint)
    if constraint.conname:
        prefix = f"CONSTRAINT {maybe_double_quote_name(constraint.conname)} "
        text = text.removeprefix(prefix)
    return text


def constraint_columns(constraint: Any) -> tuple[str, ...]:
    """The columns of this table that a table constraint is on (not a foreign key's target)."""
    kind = constraint.contype
    names: list[str] = []
    if kind == ConstrType.CONSTR_FOREIGN:
        names = [str(getattr(a, "sval", a)) for a in constraint.fk_attrs or ()]
    elif kind == ConstrType.CONSTR_CHECK:
        names = list(_column_refs(constraint.raw_expr))
    elif kind == ConstrType.CONSTR_EXCLUSION:
        for pair in constraint.exclusions or ():
            names.extend(_index_elem_columns(pair[0]))
    else:  # PRIMARY KEY, UNIQUE, NOT NULL: key columns and INCLUDE columns
        for key in (*(constraint.keys or ()), *(constraint.including or ())):
            names.append(str(getattr(key, "sval", key)))
    return tuple(dict.fromkeys(names))


def _create_index(node: Any) -> SchemaChange:
    columns: list[str] = []
    for elem in (*(node.indexParams or ()), *(node.indexIncludingParams or ())):
        columns.extend(_index_elem_columns(elem))
    columns.extend(_column_refs(node.whereClause))
    table = relation_name(node.relation)
    create = "CREATE UNIQUE INDEX" if node.unique else "CREATE INDEX"
    name = table_key(name_in_schema_of(node.relation, node.idxname)) if node.idxname else None
    what = f"{create} {node.idxname or ''} USING {node.accessMethod}".replace("  ", " ")
    return SchemaChange(
        "add-index", table_key(table), tuple(dict.fromkeys(columns)), name=name, what=what
    )


def _index_elem_columns(elem: Any) -> Iterator[str]:
    if getattr(elem, "name", None):
        yield str(elem.name)
    else:
        yield from _column_refs(getattr(elem, "expr", None))


def _column_refs(expr: Any) -> Iterator[str]:
    """The column names an expression refers to (the last part of each column reference)."""
    for node in walk(expr):
        if isinstance(node, ast.ColumnRef) and node.fields:
            last = node.fields[-1]
            if isinstance(last, ast.String):
                yield str(last.sval)


def _rename(node: Any) -> Iterator[SchemaChange]:
    kind = node.renameType
    if kind == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE:
        yield SchemaChange(
            "rename-column",
            table_key(relation_name(node.relation)),
            (str(node.subname),),
            new_name=str(node.newname),
        )
    elif kind == ObjectType.OBJECT_TABLE:
        old = relation_name(node.relation)
        new = name_in_schema_of(node.relation, node.newname)
        yield SchemaChange("rename-table", table_key(old), new_name=table_key(new))
    elif kind == ObjectType.OBJECT_INDEX:
        old = relation_name(node.relation)
        new = name_in_schema_of(node.relation, node.newname)
        yield SchemaChange("rename-index", "", name=table_key(old), new_name=table_key(new))
    elif kind == ObjectType.OBJECT_TABCONSTRAINT:
        yield SchemaChange(
            "rename-constraint",
            table_key(relation_name(node.relation)),
            name=str(node.subname),
            new_name=str(node.newname),
        )


def _drop(node: Any) -> Iterator[SchemaChange]:
    if node.removeType == ObjectType.OBJECT_TABLE:
        for parts in node.objects or ():
            yield SchemaChange("drop-table", table_key(dotted_name(parts)))
    elif node.removeType == ObjectType.OBJECT_INDEX:
        for parts in node.objects or ():
            yield SchemaChange("drop-index", "", name=table_key(dotted_name(parts)))

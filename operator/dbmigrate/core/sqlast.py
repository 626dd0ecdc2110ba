"""Generic helpers for pglast syntax trees: walking nodes, the names of relations, columns and
types as SQL spells them, deparsing, and the few questions about a node that several layers
ask (its ALTER TABLE sub-commands, its column constraints, whether it opens a transaction).

Nothing here knows about locks, lint rules or plans; it is the bottom of `core`'s SQL layers
(statements, locks, lint and plan all build on it), so it imports no other `dbmigrate` module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, TransactionStmtKind
from pglast.stream import RawStream, maybe_double_quote_name

# ---------------------------------------------------------------------------------------------
# names


def relation_name(rangevar: Any) -> str:
    """`schema.table` as written (the parser has already folded unquoted names to lower case)."""
    if rangevar is None:
        return "?"
    schema = getattr(rangevar, "schemaname", None)
    name = str(getattr(rangevar, "relname", "?"))
    return f"{schema}.{name}" if schema else name


def name_in_schema_of(rangevar: Any, name: Any) -> str:
    """`name` qualified with the schema `rangevar` names, if it names one: the new name of a
    renamed table, or an index, which lives in its table's schema."""
    schema = getattr(rangevar, "schemaname", None)
    return f"{schema}.{name}" if schema else str(name)


def dotted_name(parts: Iterable[Any]) -> str:
    """A name given as a list of String nodes (DROP objects, function names, type names)."""
    return ".".join(str(getattr(p, "sval", p)) for p in parts)


def table_key(name: str) -> str:
    """The name used to recognise the same table across statements: `public.` is dropped."""
    return name.removeprefix("public.")


def quote_name(name: str) -> str:
    """A dotted name as SQL: parts double-quoted where needed (pglast's own quoting rule)."""
    return ".".join(maybe_double_quote_name(part) for part in name.split("."))


# ---------------------------------------------------------------------------------------------
# walking and printing


def walk(node: Any) -> Iterator[Any]:
    """Every AST node below `node` (itself included), depth first."""
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk(getattr(node, attr))
    elif isinstance(node, list | tuple):
        for item in node:
            yield from walk(item)


def deparse(node: Any) -> str:
    """An expression, type or statement as SQL text (pglast's printer)."""
    return str(RawStream()(node))


def deparse_with(node: Any, changes: Iterable[tuple[Any, str, Any]]) -> str:
    """The node as SQL with some attributes changed, e.g. CONCURRENTLY or NOT VALID added.
    The node is restored afterwards (cheaper than copying the tree)."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in changes]
    try:
        for obj, attr, value in changes:
            setattr(obj, attr, value)
        return deparse(node)
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def has_option(options: Iterable[Any] | None, name: str) -> bool:
    """Whether a statement's option list (`DefElem`s: VACUUM (FULL), REINDEX (CONCURRENTLY))
    names `name`."""
    return any(isinstance(o, ast.DefElem) and o.defname == name for o in options or ())


# ---------------------------------------------------------------------------------------------
# types and column definitions

SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


def type_name(typename: Any) -> str:
    """The last element of a TypeName (`pg_catalog.int4` -> `int4`, `timestamptz`)."""
    names = getattr(typename, "names", None) or ()
    return str(getattr(names[-1], "sval", "")) if names else ""


def type_modifiers(typename: Any) -> tuple[int, ...]:
    """The integer modifiers of a TypeName: `varchar(40)` -> (40,)."""
    out: list[int] = []
    for mod in getattr(typename, "typmods", None) or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if isinstance(value, int):
            out.append(value)
    return tuple(out)


def column_constraints(coldef: Any) -> tuple[Any, ...]:
    return tuple(getattr(coldef, "constraints", None) or ())


def column_default(coldef: Any) -> Any:
    """The DEFAULT expression of a column definition, or None."""
    for constraint in column_constraints(coldef):
        if constraint.contype == ConstrType.CONSTR_DEFAULT:
            return constraint.raw_expr
    return None


def has_constraint(coldef: Any, kind: ConstrType) -> bool:
    return any(c.contype == kind for c in column_constraints(coldef))


def is_null_constant(expr: Any) -> bool:
    return isinstance(expr, ast.A_Const) and bool(expr.isnull)


# ---------------------------------------------------------------------------------------------
# statements


def alter_commands(node: Any, *subtypes: AlterTableType) -> Iterator[tuple[str, Any]]:
    """(table, command) for each ALTER TABLE sub-command of the given kinds."""
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != ObjectType.OBJECT_TABLE:
        return
    table = relation_name(node.relation)
    for cmd in node.cmds or ():
        if cmd.subtype in subtypes:
            yield table, cmd


def transaction_block_change(node: Any) -> Literal["open", "close"] | None:
    """Whether a statement opens or closes an explicit transaction block."""
    if not isinstance(node, ast.TransactionStmt):
        return None
    if node.kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
        return "open"
    if node.kind in (
        TransactionStmtKind.TRANS_STMT_COMMIT,
        TransactionStmtKind.TRANS_STMT_ROLLBACK,
        TransactionStmtKind.TRANS_STMT_PREPARE,
    ):
        return "close"
    return None


def has_non_null_default(coldef: Any) -> bool:
    """ADD COLUMN with a DEFAULT other than NULL (existing rows get a value)."""
    default = column_default(coldef)
    return default is not None and not is_null_constant(default)


def parse_type(text: str) -> tuple[str, tuple[int, ...]] | None:
    """A type as the catalog prints it (`character varying(100)`, `numeric(12,2)`) as
    (`varchar`, (100,)); None when it does not parse."""
    try:
        (raw,) = pglast.parse_sql(f"SELECT NULL::{text}")
    except (pglast.parser.ParseError, ValueError):
        return None
    stmt: Any = raw.stmt
    target = stmt.targetList[0].val
    if not isinstance(target, ast.TypeCast):
        return None
    return type_name(target.typeName), type_modifiers(target.typeName)


# Types whose limit only restricts values: a larger limit (or none) is binary-coercible.
_LIMITED = frozenset({"varchar", "varbit", "bpchar"})


def widens(old: tuple[str, tuple[int, ...]], new: tuple[str, tuple[int, ...]]) -> bool | None:
    """Whether changing a column from `old` to `new` is binary-coercible (catalog-only): True,
    False (a rewrite or a check of every row), or None (not a case this knows)."""
    (old_name, old_mods), (new_name, new_mods) = old, new
    if old_name in ("varchar", "text") and new_name == "text":
        return True
    if old_name in _LIMITED and new_name == old_name:
        if not new_mods:
            return True
        return bool(old_mods) and new_mods[0] >= old_mods[0]
    if old_name == "text" and new_name == "varchar":
        return not new_mods
    if old_name == "numeric" and new_name == "numeric":
        if not new_mods:
            return True
        if not old_mods:
            return False  # unconstrained to constrained: every value is checked
        old_scale = old_mods[1] if len(old_mods) > 1 else 0
        new_scale = new_mods[1] if len(new_mods) > 1 else 0
        return new_scale == old_scale and new_mods[0] >= old_mods[0]
    return None

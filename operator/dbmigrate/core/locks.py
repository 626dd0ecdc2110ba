"""What a statement does to the tables it touches: the lock it takes, on which relations,
whether it rewrites the table and whether it reads every row while holding that lock.

The lock levels follow PostgreSQL's documentation ("Explicit Locking", table-level lock modes,
and the lock level given for each ALTER TABLE sub-command). Everything here is a pure function
of a pglast AST node and the server's major version; nothing is looked up in a database, so
when the answer depends on what is in the database (the current type of a column, the
volatility of a user-defined function) the effect says so ("maybe", notes) instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType, TransactionStmtKind
from pglast.stream import RawStream


class LockMode(IntEnum):
    """PostgreSQL's table-level lock modes, weakest first (the values are LOCK TABLE's codes)."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """As PostgreSQL's documentation spells it: `ACCESS EXCLUSIVE`."""
        return self.name.replace("_", " ")

    @property
    def blocks_reads(self) -> bool:
        """Plain SELECTs (ACCESS SHARE) wait for it."""
        return self is LockMode.ACCESS_EXCLUSIVE

    @property
    def blocks_writes(self) -> bool:
        """INSERT/UPDATE/DELETE (ROW EXCLUSIVE) wait for it."""
        return self >= LockMode.SHARE

    @property
    def blocks(self) -> str:
        """What the application's queries on the table wait for while the lock is held."""
        if self.blocks_reads:
            return "reads and writes"
        if self.blocks_writes:
            return "writes"
        return "no reads or writes (only other DDL, VACUUM and index builds)"


Category = Literal[
    "DDL", "DML", "index", "constraint", "maintenance", "transaction control", "other"
]
Rewrite = Literal["no", "yes", "maybe"]
Volatility = Literal["non-volatile", "volatile", "unknown"]


@dataclass(frozen=True)
class RelationLock:
    """A lock on one relation. For `DROP INDEX` the relation named is the index: the lock is
    on the table it belongs to, which the SQL alone does not say (`of_index_table`)."""

    relation: str
    mode: LockMode
    of_index_table: bool = False

    @property
    def where(self) -> str:
        return f"the table of index {self.relation}" if self.of_index_table else self.relation


@dataclass(frozen=True)
class StatementEffect:
    """The table-level consequences of one statement."""

    category: Category
    locks: tuple[RelationLock, ...] = ()
    rewrite: Rewrite = "no"
    # Reads every row of the (strongest-locked) table while holding the lock: a validation
    # scan, an index build, a full UPDATE.
    scan: bool = False
    notes: tuple[str, ...] = ()

    @property
    def strongest(self) -> LockMode | None:
        return max((lock.mode for lock in self.locks), default=None)

    @property
    def relations(self) -> tuple[str, ...]:
        """Relations in first-mention order, without duplicates."""
        return tuple(dict.fromkeys(lock.relation for lock in self.locks))

    @property
    def long_running(self) -> bool:
        """The lock is held for time proportional to the table's size, not just a moment."""
        return self.rewrite != "no" or self.scan

    def describe_lock(self) -> str:
        """`ACCESS EXCLUSIVE (brief)`, `SHARE (whole index build)`, or `none`."""
        mode = self.strongest
        if mode is None:
            return "none"
        if self.rewrite == "yes":
            return f"{mode.label} (whole table rewrite)"
        if self.rewrite == "maybe":
            return f"{mode.label} (may rewrite the whole table)"
        if self.scan:
            return f"{mode.label} (whole table scan)"
        if mode <= LockMode.ROW_EXCLUSIVE:
            return mode.label
        return f"{mode.label} (brief)"


# ---------------------------------------------------------------------------------------------
# names and small AST helpers


def relation_name(rangevar: Any) -> str:
    """`schema.table` as written (the parser has already folded unquoted names to lower case)."""
    if rangevar is None:
        return "?"
    schema = getattr(rangevar, "schemaname", None)
    name = str(getattr(rangevar, "relname", "?"))
    return f"{schema}.{name}" if schema else name


def dotted_name(parts: Iterable[Any]) -> str:
    """A name given as a list of String nodes (DROP objects, function names, type names)."""
    return ".".join(str(getattr(p, "sval", p)) for p in parts)


def table_key(name: str) -> str:
    """The name used to recognise the same table across statements: `public.` is dropped."""
    return name.removeprefix("public.")


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
    """An expression or type as SQL text (pglast's printer)."""
    return str(RawStream()(node))


def type_name(typename: Any) -> str:
    """The last element of a TypeName (`pg_catalog.int4` -> `int4`, `timestamptz`)."""
    names = getattr(typename, "names", None) or ()
    return str(getattr(names[-1], "sval", "")) if names else ""


def type_modifiers(typename: Any) -> tuple[int, ...]:
    out: list[int] = []
    for mod in getattr(typename, "typmods", None) or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if isinstance(value, int):
            out.append(value)
    return tuple(out)


SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


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


# ---------------------------------------------------------------------------------------------
# volatility of DEFAULT expressions

# Built-in functions whose pg_proc.provolatile is 'v': a DEFAULT calling one of them is
# evaluated per row, so ADD COLUMN has to rewrite the table.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "txid_current",
        "pg_current_xact_id",
        "pg_sleep",
    }
)

# Built-in stable or immutable functions commonly seen in defaults; PostgreSQL 11+ evaluates
# them once, stores the value in the catalog and does not rewrite.
NON_VOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "statement_timestamp",
        "transaction_timestamp",
        "current_setting",
        "to_timestamp",
        "to_date",
        "to_char",
        "to_json",
        "to_jsonb",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "make_interval",
        "date_trunc",
        "date_part",
        "timezone",
        "lower",
        "upper",
        "length",
        "char_length",
        "md5",
        "concat",
        "concat_ws",
        "format",
        "replace",
        "substr",
        "substring",
        "btrim",
        "ltrim",
        "rtrim",
        "left",
        "right",
        "abs",
        "round",
        "floor",
        "ceil",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "array_fill",
        "int4range",
        "int8range",
        "tstzrange",
        "daterange",
    }
)


def default_volatility(expr: Any) -> tuple[Volatility, str | None]:
    """Whether a DEFAULT expression is volatile, and the function that decides it.

    Constants, casts, operators and SQL value functions (CURRENT_TIMESTAMP, CURRENT_USER) are
    not volatile; a call to a built-in volatile function makes the whole expression volatile;
    a call to a function we do not know (user-defined, an extension) is "unknown".
    """
    unknown: str | None = None
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            name = dotted_name(node.funcname or ())
            short = name.removeprefix("pg_catalog.")
            if short in VOLATILE_FUNCTIONS:
                return "volatile", short
            if short not in NON_VOLATILE_FUNCTIONS and unknown is None:
                unknown = name
        elif isinstance(node, ast.SubLink):
            return "unknown", "a sub-query"
    if unknown is not None:
        return "unknown", unknown
    return "non-volatile", None


def add_column_rewrite(coldef: Any, server_version: int) -> tuple[Rewrite, str | None]:
    """Whether `ADD COLUMN coldef` rewrites the table, and why."""
    kind = type_name(coldef.typeName)
    if kind in SERIAL_TYPES:
        return "yes", f"{kind} column: its nextval() default is volatile"
    for constraint in column_constraints(coldef):
        if constraint.contype == ConstrType.CONSTR_IDENTITY:
            return "yes", "identity column: every existing row gets a sequence value"
        if constraint.contype == ConstrType.CONSTR_GENERATED:
            return "yes", "stored generated column: computed for every existing row"
    default = column_default(coldef)
    if default is None or _is_null_constant(default):
        return "no", None
    if server_version < 11:
        return "yes", f"PostgreSQL {server_version} rewrites the table for any non-NULL DEFAULT"
    volatility, function = default_volatility(default)
    if volatility == "volatile":
        return "yes", f"DEFAULT {deparse(default)} is volatile ({function}() runs per row)"
    if volatility == "unknown":
        return "maybe", f"DEFAULT {deparse(default)} calls {function}, whose volatility is unknown"
    return "no", None


def _is_null_constant(expr: Any) -> bool:
    return isinstance(expr, ast.A_Const) and bool(expr.isnull)


# ---------------------------------------------------------------------------------------------
# the effect of each kind of statement

# ALTER TABLE sub-commands documented as SHARE UPDATE EXCLUSIVE.
_SUE_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_SetStatistics,
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_ClusterOn,
        AlterTableType.AT_DropCluster,
        AlterTableType.AT_SetRelOptions,
        AlterTableType.AT_ResetRelOptions,
        AlterTableType.AT_SetOptions,
        AlterTableType.AT_ResetOptions,
        AlterTableType.AT_AttachPartition,
    }
)
# ... and SHARE ROW EXCLUSIVE.
_SRE_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_EnableTrig,
        AlterTableType.AT_EnableAlwaysTrig,
        AlterTableType.AT_EnableReplicaTrig,
        AlterTableType.AT_DisableTrig,
        AlterTableType.AT_EnableTrigAll,
        AlterTableType.AT_DisableTrigAll,
        AlterTableType.AT_EnableTrigUser,
        AlterTableType.AT_DisableTrigUser,
    }
)
# Sub-commands that copy the whole table into new files.
_REWRITING_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_SetLogged,
        AlterTableType.AT_SetUnLogged,
        AlterTableType.AT_SetTableSpace,
        AlterTableType.AT_SetAccessMethod,
    }
)
_CONSTRAINT_SUBCOMMANDS = frozenset(
    {
        AlterTableType.AT_AddConstraint,
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_DropConstraint,
        AlterTableType.AT_AlterConstraint,
        AlterTableType.AT_SetNotNull,
        AlterTableType.AT_DropNotNull,
    }
)
# ALTER COLUMN TYPE to these can be binary-coercible from the usual old types (varchar(n) to
# text or a longer varchar, numeric(p,s) to unconstrained numeric): no rewrite then.
_POSSIBLY_COERCIBLE_TYPES = frozenset({"text", "varchar", "numeric", "varbit", "citext"})


@dataclass
class _Accumulator:
    locks: dict[str, RelationLock]
    rewrite: Rewrite = "no"
    scan: bool = False

    def lock(self, relation: str, mode: LockMode, *, of_index_table: bool = False) -> None:
        held = self.locks.get(relation)
        if held is None or mode > held.mode:
            self.locks[relation] = RelationLock(relation, mode, of_index_table)

    def rewrites(self, value: Rewrite) -> None:
        order = {"no": 0, "maybe": 1, "yes": 2}
        if order[value] > order[self.rewrite]:
            self.rewrite = value


def statement_category(node: Any) -> Category:
    """The kind of change a statement makes, as the seed's plan names them."""
    if isinstance(node, ast.TransactionStmt):
        return "transaction control"
    if isinstance(node, ast.IndexStmt | ast.ReindexStmt):
        return "index"
    if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX:
        return "index"
    if isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_INDEX:
        return "index"
    if isinstance(node, ast.AlterTableStmt):
        cmds = node.cmds or ()
        if node.objtype == ObjectType.OBJECT_INDEX:
            return "index"
        if cmds and all(cmd.subtype in _CONSTRAINT_SUBCOMMANDS for cmd in cmds):
            return "constraint"
        return "DDL"
    if isinstance(
        node,
        ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt | ast.MergeStmt | ast.CopyStmt,
    ):
        return "DML"
    if isinstance(node, ast.DoStmt | ast.CallStmt):
        return "DML"
    if isinstance(node, ast.SelectStmt):
        return "DDL" if node.intoClause is not None else "DML"
    if isinstance(node, ast.VacuumStmt | ast.ClusterStmt | ast.RefreshMatViewStmt):
        return "maintenance"
    if isinstance(node, ast.VariableSetStmt | ast.VariableShowStmt):
        return "other"
    return "DDL"


def statement_effect(node: Any, server_version: int = 15) -> StatementEffect:
    """The locks, rewrite and scan of one parsed statement (a pglast node)."""
    category = statement_category(node)
    acc = _Accumulator(locks={})
    notes: list[str] = []
    handler = _HANDLERS.get(type(node))
    if handler is not None:
        handler(node, acc, notes, server_version)
    elif isinstance(getattr(node, "relation", None), ast.RangeVar):
        # A statement on a table we have no entry for: assume the strongest lock.
        acc.lock(relation_name(node.relation), LockMode.ACCESS_EXCLUSIVE)
        notes.append("lock level assumed (statement kind not in dbmigrate's lock table)")
    return StatementEffect(
        category=category,
        locks=tuple(acc.locks.values()),
        rewrite=acc.rewrite,
        scan=acc.scan,
        notes=tuple(notes),
    )


def strongest_lock(node: Any, server_version: int = 15) -> LockMode | None:
    """The strongest table-level lock a statement takes (None: no table lock)."""
    return statement_effect(node, server_version).strongest


def rewrites_table(node: Any, server_version: int = 15) -> Rewrite:
    """Whether the statement rewrites a table: "yes", "no" or "maybe" (depends on the data)."""
    return statement_effect(node, server_version).rewrite


def _alter_table(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    table = relation_name(node.relation)
    if node.objtype == ObjectType.OBJECT_INDEX:
        # ALTER INDEX ... SET/RENAME: SHARE UPDATE EXCLUSIVE on the index.
        acc.lock(table, LockMode.SHARE_UPDATE_EXCLUSIVE)
        return
    for cmd in node.cmds or ():
        subtype = cmd.subtype
        if subtype in _SUE_SUBCOMMANDS:
            acc.lock(table, LockMode.SHARE_UPDATE_EXCLUSIVE)
            if subtype == AlterTableType.AT_ValidateConstraint:
                acc.scan = True
                notes.append(f"VALIDATE CONSTRAINT {cmd.name} scans {table}; writes continue")
            continue
        if subtype in _SRE_SUBCOMMANDS:
            acc.lock(table, LockMode.SHARE_ROW_EXCLUSIVE)
            continue
        if subtype == AlterTableType.AT_DetachPartition:
            concurrent = bool(getattr(cmd.def_, "concurrent", False))
            mode = LockMode.SHARE_UPDATE_EXCLUSIVE if concurrent else LockMode.ACCESS_EXCLUSIVE
            acc.lock(table, mode)
            continue
        if subtype == AlterTableType.AT_AddConstraint:
            _add_constraint(table, cmd.def_, acc, notes)
            continue
        acc.lock(table, LockMode.ACCESS_EXCLUSIVE)
        if subtype in _REWRITING_SUBCOMMANDS:
            acc.rewrites("yes")
        elif subtype == AlterTableType.AT_AddColumn:
            _add_column(table, cmd.def_, acc, notes, version)
        elif subtype == AlterTableType.AT_AlterColumnType:
            _alter_column_type(table, cmd, acc, notes)
        elif subtype == AlterTableType.AT_SetNotNull:
            acc.scan = True
            notes.append(
                f"SET NOT NULL scans {table} unless a valid CHECK ({cmd.name} IS NOT NULL) proves "
                "it (PostgreSQL 12+)"
            )


def _add_column(table: str, coldef: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    rewrite, why = add_column_rewrite(coldef, version)
    acc.rewrites(rewrite)
    if why:
        notes.append(why)
    for constraint in column_constraints(coldef):
        if constraint.contype == ConstrType.CONSTR_FOREIGN:
            acc.lock(relation_name(constraint.pktable), LockMode.SHARE_ROW_EXCLUSIVE)
            acc.scan = True
        elif constraint.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            acc.scan = True
            notes.append(f"builds a unique index on {table} while holding the lock")
        elif constraint.contype == ConstrType.CONSTR_CHECK:
            acc.scan = True


def _alter_column_type(table: str, cmd: Any, acc: _Accumulator, notes: list[str]) -> None:
    coldef = cmd.def_
    target = type_name(coldef.typeName)
    if getattr(coldef, "raw_default", None) is not None:  # USING expression
        acc.rewrites("yes")
        notes.append(f"ALTER COLUMN {cmd.name} TYPE ... USING rewrites {table}")
    elif target in _POSSIBLY_COERCIBLE_TYPES:
        acc.rewrites("maybe")
        notes.append(
            f"ALTER COLUMN {cmd.name} TYPE {deparse(coldef.typeName)}: no rewrite only if the "
            "old type is binary-coercible to it (e.g. varchar(n) to text or a longer varchar)"
        )
    else:
        acc.rewrites("yes")
        notes.append(f"ALTER COLUMN {cmd.name} TYPE {deparse(coldef.typeName)} rewrites {table}")


def _add_constraint(table: str, constraint: Any, acc: _Accumulator, notes: list[str]) -> None:
    kind = constraint.contype
    validated = not bool(constraint.skip_validation)
    if kind == ConstrType.CONSTR_FOREIGN:
        # Both tables: SHARE ROW EXCLUSIVE.
        acc.lock(table, LockMode.SHARE_ROW_EXCLUSIVE)
        acc.lock(relation_name(constraint.pktable), LockMode.SHARE_ROW_EXCLUSIVE)
        if validated:
            acc.scan = True
            notes.append(f"validates every row of {table} against the referenced table")
        return
    acc.lock(table, LockMode.ACCESS_EXCLUSIVE)
    if kind in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION):
        if getattr(constraint, "indexname", None):
            notes.append(f"uses the existing index {constraint.indexname}: no build")
        else:
            acc.scan = True
            notes.append(f"builds an index on {table} while holding ACCESS EXCLUSIVE")
    elif kind == ConstrType.CONSTR_CHECK and validated:
        acc.scan = True
        notes.append(f"validates every row of {table} while holding ACCESS EXCLUSIVE")


def _create_table(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    # The new table is invisible to other sessions until commit; only referenced tables and a
    # partition parent are locked.
    for element in node.tableElts or ():
        constraints: tuple[Any, ...] = ()
        if isinstance(element, ast.ColumnDef):
            constraints = column_constraints(element)
        elif isinstance(element, ast.Constraint):
            constraints = (element,)
        for constraint in constraints:
            if constraint.contype == ConstrType.CONSTR_FOREIGN:
                acc.lock(relation_name(constraint.pktable), LockMode.SHARE_ROW_EXCLUSIVE)
    for parent in node.inhRelations or ():
        if getattr(node, "partbound", None) is not None:
            acc.lock(relation_name(parent), LockMode.ACCESS_EXCLUSIVE)
        else:
            acc.lock(relation_name(parent), LockMode.SHARE_UPDATE_EXCLUSIVE)
    notes.append(f"creates {relation_name(node.relation)}")


def _read_relations(query: Any, acc: _Accumulator, mode: LockMode) -> None:
    for node in walk(query):
        if isinstance(node, ast.RangeVar):
            acc.lock(relation_name(node), mode)


def _create_table_as(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    _read_relations(node.query, acc, LockMode.ACCESS_SHARE)
    notes.append(f"creates {relation_name(node.into.rel)} from a query")


def _select(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    mode = LockMode.ROW_SHARE if node.lockingClause else LockMode.ACCESS_SHARE
    if node.intoClause is not None:
        notes.append(f"creates {relation_name(node.intoClause.rel)} from a query")
        _read_relations((node.fromClause, node.whereClause, node.withClause), acc, mode)
        return
    _read_relations(node, acc, mode)


def _dml(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    target = relation_name(node.relation)
    acc.lock(target, LockMode.ROW_EXCLUSIVE)
    for attr in ("fromClause", "usingClause", "whereClause", "selectStmt", "sourceRelation"):
        sub = getattr(node, attr, None)
        if sub is not None:
            _read_relations(sub, acc, LockMode.ACCESS_SHARE)
    acc.lock(target, LockMode.ROW_EXCLUSIVE)  # the target may also appear as a source
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt) and node.whereClause is None:
        acc.scan = True
        notes.append(f"touches every row of {target} in one transaction")


def _copy(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    if node.relation is not None:
        mode = LockMode.ROW_EXCLUSIVE if node.is_from else LockMode.ACCESS_SHARE
        acc.lock(relation_name(node.relation), mode)
    elif node.query is not None:
        _read_relations(node.query, acc, LockMode.ACCESS_SHARE)


def _index(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    table = relation_name(node.relation)
    acc.scan = True
    if node.concurrent:
        acc.lock(table, LockMode.SHARE_UPDATE_EXCLUSIVE)
        notes.append(f"builds the index with two scans of {table}; writes continue")
    else:
        acc.lock(table, LockMode.SHARE)
        notes.append(f"blocks writes to {table} for the whole index build")


def _reindex(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    concurrent = any(
        isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
    )
    name = relation_name(node.relation) if node.relation is not None else str(node.name)
    acc.scan = True
    if concurrent:
        acc.lock(name, LockMode.SHARE_UPDATE_EXCLUSIVE)
    else:
        # SHARE on the table, ACCESS EXCLUSIVE on the index being rebuilt (reads using it wait).
        acc.lock(name, LockMode.SHARE)
        notes.append("ACCESS EXCLUSIVE on the index itself: queries using it wait")


def _drop(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    names = [
        dotted_name(obj) if isinstance(obj, list | tuple) else str(obj) for obj in node.objects
    ]
    if node.removeType == ObjectType.OBJECT_INDEX:
        mode = LockMode.SHARE_UPDATE_EXCLUSIVE if node.concurrent else LockMode.ACCESS_EXCLUSIVE
        for name in names:
            acc.lock(name, mode, of_index_table=True)
        return
    if node.removeType in (
        ObjectType.OBJECT_TABLE,
        ObjectType.OBJECT_VIEW,
        ObjectType.OBJECT_MATVIEW,
        ObjectType.OBJECT_SEQUENCE,
        ObjectType.OBJECT_FOREIGN_TABLE,
    ):
        for name in names:
            acc.lock(name, LockMode.ACCESS_EXCLUSIVE)
    elif node.removeType in (
        ObjectType.OBJECT_TRIGGER,
        ObjectType.OBJECT_POLICY,
        ObjectType.OBJECT_RULE,
    ):
        # DROP TRIGGER name ON table: the last object element is the trigger, the rest the table.
        for obj in node.objects:
            parts = list(obj) if isinstance(obj, list | tuple) else [obj]
            if len(parts) > 1:
                acc.lock(dotted_name(parts[:-1]), LockMode.ACCESS_EXCLUSIVE)


def _rename(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    if node.relation is None:
        return
    name = relation_name(node.relation)
    if node.renameType == ObjectType.OBJECT_INDEX and version >= 12:
        acc.lock(name, LockMode.SHARE_UPDATE_EXCLUSIVE)
    else:
        acc.lock(name, LockMode.ACCESS_EXCLUSIVE)


def _truncate(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    for rel in node.relations or ():
        acc.lock(relation_name(rel), LockMode.ACCESS_EXCLUSIVE)
    notes.append("removes every row")


def _vacuum(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    full = any(isinstance(opt, ast.DefElem) and opt.defname == "full" for opt in node.options or ())
    mode = LockMode.ACCESS_EXCLUSIVE if full else LockMode.SHARE_UPDATE_EXCLUSIVE
    for rel in node.rels or ():
        acc.lock(relation_name(rel.relation), mode)
    # VACUUM reads the whole table; ANALYZE (is_vacuumcmd false) only samples it.
    acc.scan = bool(node.is_vacuumcmd)
    if full:
        acc.rewrites("yes")


def _cluster(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    if node.relation is not None:
        acc.lock(relation_name(node.relation), LockMode.ACCESS_EXCLUSIVE)
    acc.rewrites("yes")


def _refresh(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    mode = LockMode.EXCLUSIVE if node.concurrent else LockMode.ACCESS_EXCLUSIVE
    acc.lock(relation_name(node.relation), mode)
    acc.rewrites("yes")


def _trigger(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.relation), LockMode.SHARE_ROW_EXCLUSIVE)


def _lock(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    for rel in node.relations or ():
        acc.lock(relation_name(rel), LockMode(int(node.mode)))
    notes.append("held until the end of the transaction")


def _comment(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    if node.objtype in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_COLUMN):
        parts = list(node.object) if isinstance(node.object, list | tuple) else []
        if node.objtype == ObjectType.OBJECT_COLUMN:
            parts = parts[:-1]
        if parts:
            acc.lock(dotted_name(parts), LockMode.SHARE_UPDATE_EXCLUSIVE)


def _view(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.view), LockMode.ACCESS_EXCLUSIVE)


def _policy(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    acc.lock(relation_name(node.table), LockMode.ACCESS_EXCLUSIVE)


def _no_table_lock(node: Any, acc: _Accumulator, notes: list[str], version: int) -> None:
    if isinstance(node, ast.DoStmt):
        notes.append("DO block: its body is not analysed")
    elif isinstance(node, ast.TransactionStmt) and node.kind in (
        TransactionStmtKind.TRANS_STMT_BEGIN,
        TransactionStmtKind.TRANS_STMT_START,
    ):
        notes.append("opens a transaction block")


_Handler = Any
_HANDLERS: dict[type, _Handler] = {
    ast.AlterTableStmt: _alter_table,
    ast.CreateStmt: _create_table,
    ast.CreateTableAsStmt: _create_table_as,
    ast.SelectStmt: _select,
    ast.InsertStmt: _dml,
    ast.UpdateStmt: _dml,
    ast.DeleteStmt: _dml,
    ast.MergeStmt: _dml,
    ast.CopyStmt: _copy,
    ast.IndexStmt: _index,
    ast.ReindexStmt: _reindex,
    ast.DropStmt: _drop,
    ast.RenameStmt: _rename,
    ast.TruncateStmt: _truncate,
    ast.VacuumStmt: _vacuum,
    ast.ClusterStmt: _cluster,
    ast.RefreshMatViewStmt: _refresh,
    ast.CreateTrigStmt: _trigger,
    ast.LockStmt: _lock,
    ast.CommentStmt: _comment,
    ast.ViewStmt: _view,
    ast.CreatePolicyStmt: _policy,
    ast.AlterPolicyStmt: _policy,
    ast.DoStmt: _no_table_lock,
    ast.CallStmt: _no_table_lock,
    ast.TransactionStmt: _no_table_lock,
    ast.VariableSetStmt: _no_table_lock,
    ast.CreateSeqStmt: _no_table_lock,
    ast.AlterSeqStmt: _no_table_lock,
    ast.CreateFunctionStmt: _no_table_lock,
    ast.CreateEnumStmt: _no_table_lock,
    ast.AlterEnumStmt: _no_table_lock,
    ast.CreateExtensionStmt: _no_table_lock,
    ast.CreateSchemaStmt: _no_table_lock,
    ast.CreateDomainStmt: _no_table_lock,
    ast.CompositeTypeStmt: _no_table_lock,
    ast.GrantStmt: _no_table_lock,
    ast.GrantRoleStmt: _no_table_lock,
    ast.CreateRoleStmt: _no_table_lock,
}

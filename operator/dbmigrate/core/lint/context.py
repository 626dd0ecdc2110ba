"""What the linter knows about the migration so far, and where the current statement runs.

A `LintContext` travels through a migration's steps in order. The engine records into it what
each statement creates or proves (new tables and indexes, validated `CHECK (col IS NOT NULL)`
constraints, constraints added NOT VALID) so that later statements are judged with that
knowledge, and sets, before each statement, the transaction it will run in. Rules only read it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pglast import ast
from pglast.enums import AlterTableType, BoolExprType, ConstrType, NullTestType, ObjectType

from dbmigrate.core.locks import DEFAULT_SERVER_VERSION, LockMode
from dbmigrate.core.sqlast import dotted_name, name_in_schema_of, relation_name, table_key
from dbmigrate.core.statements import TransactionMode

Direction = Literal["up", "down"]

# Below both, an existing table is small: a rewrite, scan or index build of it is over in
# milliseconds, so a lock finding on it is information, not an error.
SMALL_TABLE_ROWS = 10_000
SMALL_TABLE_BYTES = 16 * 1024 * 1024


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable: the loop returns at TiB


@dataclass(frozen=True)
class TableEstimate:
    """What the database's statistics say about a table (None: unknown): `pg_class.reltuples`
    and `pg_total_relation_size`."""

    rows: int | None = None
    size_bytes: int | None = None
    partitioned: bool = False  # relkind 'p': its rows live in its partitions
    # (column, type as the catalog prints it): what a type change starts from
    columns: tuple[tuple[str, str], ...] = ()

    def column_type(self, column: str) -> str | None:
        return next((t for name, t in self.columns if name == column), None)

    def describe(self) -> str:
        """`1,234 rows, 48.0 KiB` (what is known of it)."""
        parts = []
        if self.rows is not None:
            parts.append(f"{self.rows:,} rows")
        if self.size_bytes is not None:
            parts.append(format_bytes(self.size_bytes))
        return ", ".join(parts) or "size unknown"

    @property
    def small(self) -> bool:
        return (
            self.rows is not None
            and self.size_bytes is not None
            and self.rows <= SMALL_TABLE_ROWS
            and self.size_bytes <= SMALL_TABLE_BYTES
        )


def sizes_by_key(sizes: Mapping[str, TableEstimate] | None) -> dict[str, TableEstimate]:
    """Table sizes keyed as the context looks them up (`table_key`)."""
    return {table_key(name): size for name, size in (sizes or {}).items()}


@dataclass(frozen=True)
class PendingConstraint:
    """A constraint added NOT VALID and not validated yet."""

    table: str
    not_null_columns: frozenset[str]
    transaction: tuple[object, ...] | None
    statement_line: int


@dataclass
class LintContext:
    """The linter's knowledge of the migration up to the statement being judged."""

    server_version: int = DEFAULT_SERVER_VERSION
    direction: Direction = "up"
    step: str | None = None
    transaction_mode: TransactionMode = "Auto"
    # True in the steps after an awaitRollout step: the new application version is running,
    # so dropping what only the old one used is the expected contract phase.
    contract_phase: bool = False
    created_tables: set[str] = field(default_factory=set)
    # index name -> the table it is on, for indexes created earlier in this migration
    created_indexes: dict[str, str] = field(default_factory=dict)
    not_null_proven: set[tuple[str, str]] = field(default_factory=set)
    pending_constraints: dict[str, PendingConstraint] = field(default_factory=dict)

    # Set by the engine before each statement.
    in_transaction_block: bool = False
    transaction_block_line: int | None = None
    # Identifies the transaction the statement runs in (None: autocommit, on its own).
    transaction: tuple[object, ...] | None = None
    # A later transaction of the same step follows: if it fails, this statement runs again
    # when the step is retried.
    rerun_on_retry: bool = False
    # Tables locked so far in the current transaction (`transaction_locks_key`), how strongly.
    transaction_locks: dict[str, LockMode] = field(default_factory=dict)
    transaction_locks_key: tuple[object, ...] | None = None
    # Counts the pieces of SQL analysed, so that transactions of different steps differ.
    sql_serial: int = 0
    # Functions defined earlier in the migration: name -> (line, their body's findings), so
    # that a call of one is judged by what its body does.
    function_findings: dict[str, tuple[int, tuple[Any, ...]]] = field(default_factory=dict)
    # Tables created with PARTITION BY in this migration.
    partitioned_tables: set[str] = field(default_factory=set)
    # The existing tables' sizes, by `table_key`, when the linter was given the database.
    table_sizes: dict[str, TableEstimate] = field(default_factory=dict)

    def is_partitioned(self, name: str) -> bool:
        """Created with PARTITION BY in this migration, or so in the database (with a DSN)."""
        key = table_key(name)
        size = self.table_sizes.get(key)
        return key in self.partitioned_tables or (size is not None and size.partitioned)

    def size_of(self, name: str) -> TableEstimate | None:
        """The table's size estimate, if the database was read and has the table."""
        return self.table_sizes.get(table_key(name))

    def is_new_table(self, name: str) -> bool:
        """Created earlier in this migration (so nobody else uses it yet)."""
        return table_key(name) in self.created_tables

    def index_table(self, name: str) -> str | None:
        """The table of an index created earlier in this migration."""
        return self.created_indexes.get(table_key(name))

    def is_index_on_new_table(self, name: str) -> bool:
        table = self.index_table(name)
        return table is not None and self.is_new_table(table)

    def not_null_is_proven(self, table: str, column: str) -> bool:
        return (table_key(table), column) in self.not_null_proven

    def for_rollback(self) -> LintContext:
        """A copy for linting a step's down SQL: what it creates does not leak into later ups."""
        clone = copy.deepcopy(self)
        clone.direction = "down"
        return clone

    # -----------------------------------------------------------------------------------------
    # recording what a statement did (called by the engine after the rules ran)

    def record(self, node: Any, line: int) -> None:
        if isinstance(node, ast.CreateStmt):
            self.created_tables.add(table_key(relation_name(node.relation)))
            if node.partspec is not None:
                self.partitioned_tables.add(table_key(relation_name(node.relation)))
        elif isinstance(node, ast.CreateTableAsStmt):
            self.created_tables.add(table_key(relation_name(getattr(node.into, "rel", None))))
        elif isinstance(node, ast.ViewStmt):
            self.created_tables.add(table_key(relation_name(node.view)))
        elif isinstance(node, ast.SelectStmt) and node.intoClause is not None:
            self.created_tables.add(table_key(relation_name(node.intoClause.rel)))
        elif isinstance(node, ast.IndexStmt) and node.idxname:
            name = name_in_schema_of(node.relation, node.idxname)
            self.created_indexes[table_key(name)] = table_key(relation_name(node.relation))
        elif isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_TABLE:
            old = table_key(relation_name(node.relation))
            if old in self.created_tables:
                self.created_tables.discard(old)
                self.created_tables.add(table_key(name_in_schema_of(node.relation, node.newname)))
        elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE:
            for obj in node.objects or ():
                self.created_tables.discard(table_key(dotted_name(obj)))
        elif isinstance(node, ast.AlterTableStmt):
            self._record_alter_table(node, line)

    def _record_alter_table(self, node: Any, line: int) -> None:
        table = table_key(relation_name(node.relation))
        for cmd in node.cmds or ():
            if cmd.subtype == AlterTableType.AT_AddConstraint:
                constraint = cmd.def_
                columns = not_null_check_columns(constraint)
                if constraint.skip_validation:
                    if constraint.conname:
                        self.pending_constraints[str(constraint.conname)] = PendingConstraint(
                            table, columns, self.transaction, line
                        )
                else:
                    self.not_null_proven.update((table, column) for column in columns)
            elif cmd.subtype == AlterTableType.AT_ValidateConstraint:
                pending = self.pending_constraints.pop(str(cmd.name), None)
                if pending is not None:
                    self.not_null_proven.update(
                        (pending.table, column) for column in pending.not_null_columns
                    )
            elif cmd.subtype == AlterTableType.AT_SetNotNull:
                self.not_null_proven.add((table, str(cmd.name)))


def not_null_check_columns(constraint: Any) -> frozenset[str]:
    """Columns a CHECK constraint proves NOT NULL: `CHECK (col IS NOT NULL [AND ...])`."""
    if constraint.contype != ConstrType.CONSTR_CHECK:
        return frozenset()
    out: set[str] = set()
    pending = [constraint.raw_expr]
    while pending:
        expr = pending.pop()
        if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.AND_EXPR:
            pending.extend(expr.args or ())
        elif (
            isinstance(expr, ast.NullTest)
            and expr.nulltesttype == NullTestType.IS_NOT_NULL
            and isinstance(expr.arg, ast.ColumnRef)
        ):
            fields = expr.arg.fields or ()
            last = getattr(fields[-1], "sval", None) if fields else None
            if last is not None:
                out.add(str(last))
    return frozenset(out)

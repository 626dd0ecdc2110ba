"""The lint rules: one small function per rule, registered with its id, severity and summary.

Each check receives one parsed statement, its effect (`core.locks`) and the `LintContext`, and
yields a `Hit` per problem. A message names the statement, the lock it takes and for how long,
and the safe alternative — derived from the user's own statement where possible (the same
statement with CONCURRENTLY or NOT VALID added, the CHECK recipe with the real table and
column), following the seed workflow's patterns.

Context rules shared by the checks: a table created earlier in the migration is exempt from
the index, constraint and column rules (nobody else uses it yet); DROP COLUMN / DROP TABLE are
expected in the contract phase (a step after an awaitRollout step).

There is deliberately no `require-lock-timeout` rule (squawk has one): dbmigrate's executor
sets `lock_timeout` (spec.safety.lockTimeout) and retries every DDL statement itself, so the
SQL must not, and need not, set it.

How each rule treats a step's down (rollback) SQL is its `rollback` policy: "keep" (a
statement that makes the rollback fail outright stays an error), "warn" (lock and rewrite
problems are reported as warnings: rollbacks run under pressure and should be fast, but
blocking one would leave the migration half-undone), "skip" (design rules about the schema
being built, and drops/renames, which are what a rollback is for).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.stream import maybe_double_quote_name

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.locks import LockMode, StatementEffect, default_volatility
from dbmigrate.core.sqlast import (
    SERIAL_TYPES,
    column_constraints,
    column_default,
    deparse,
    dotted_name,
    has_constraint,
    relation_name,
    type_modifiers,
    type_name,
)
from dbmigrate.core.statements import Statement, compact_sql, statement_cannot_run_in_transaction

Severity = Literal["error", "warning"]
RollbackPolicy = Literal["keep", "warn", "skip"]


@dataclass(frozen=True)
class Hit:
    """One problem a check found; `severity` None means the rule's own severity."""

    message: str
    severity: Severity | None = None


Check = Callable[[Statement, StatementEffect, LintContext], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    summary: str
    rollback: RollbackPolicy
    check: Check | None  # None: emitted by the engine itself (syntax errors, suppressions)


RULES: dict[str, Rule] = {}


def _register(
    rule_id: str, severity: Severity, summary: str, rollback: RollbackPolicy = "warn"
) -> Callable[[Check], Check]:
    def add(check: Check) -> Check:
        RULES[rule_id] = Rule(rule_id, severity, summary, rollback, check)
        return check

    return add


def _engine_rule(
    rule_id: str, severity: Severity, summary: str, rollback: RollbackPolicy = "keep"
) -> None:
    RULES[rule_id] = Rule(rule_id, severity, summary, rollback, None)


_engine_rule("syntax-error", "error", "SQL that PostgreSQL's parser rejects")
_engine_rule(
    "invalid-suppression",
    "warning",
    "a dbmigrate:ignore comment that names no or unknown rules, gives no reason, or is attached "
    "to no statement",
)
_engine_rule(
    "sql-not-available",
    "warning",
    "SQL read from a ConfigMap that was not provided to the linter",
)


# ---------------------------------------------------------------------------------------------
# message helpers


def _ident(name: str) -> str:
    """A name as SQL: parts double-quoted where needed (pglast's own quoting rule)."""
    return ".".join(maybe_double_quote_name(part) for part in name.split("."))


@functools.lru_cache(maxsize=256)
def _compact(text: str) -> str:
    return compact_sql(text, 200)


def _said(statement: Statement) -> str:
    return f"`{_compact(statement.text)}`"


def _deparse_with(node: Any, changes: Iterable[tuple[Any, str, Any]]) -> str:
    """The statement as SQL with some attributes changed (CONCURRENTLY, NOT VALID added): the
    safe alternative derived from the user's own statement. The node is restored afterwards
    (cheaper than copying the tree)."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in changes]
    try:
        for obj, attr, value in changes:
            setattr(obj, attr, value)
        return deparse(node)
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def _with_not_valid(node: Any, contype: Any) -> str:
    """The ALTER TABLE again, with its added constraints of `contype` marked NOT VALID."""
    return _deparse_with(
        node,
        [
            (cmd.def_, "skip_validation", True)
            for cmd in node.cmds
            if getattr(cmd.def_, "contype", None) == contype
        ],
    )


def _base(table: str) -> str:
    return table.rsplit(".", 1)[-1]


def _constraint_name(table: str, *parts: str) -> str:
    name = "_".join((_base(table), *parts))
    return name[:63]


def _alter_commands(node: Any, *subtypes: AlterTableType) -> Iterator[tuple[str, Any]]:
    """(table, command) for each ALTER TABLE sub-command of the given kinds."""
    if not isinstance(node, ast.AlterTableStmt) or node.objtype != ObjectType.OBJECT_TABLE:
        return
    table = relation_name(node.relation)
    for cmd in node.cmds or ():
        if cmd.subtype in subtypes:
            yield table, cmd


def _added_constraints(node: Any, ctx: LintContext) -> Iterator[tuple[str, Any, Any]]:
    """(table, constraint, column or None) for constraints added to an existing table, either
    by ADD CONSTRAINT or inline in ADD COLUMN."""
    for table, cmd in _alter_commands(
        node, AlterTableType.AT_AddConstraint, AlterTableType.AT_AddColumn
    ):
        if ctx.is_new_table(table):
            continue
        if cmd.subtype == AlterTableType.AT_AddConstraint:
            yield table, cmd.def_, None
        else:
            for constraint in column_constraints(cmd.def_):
                yield table, constraint, cmd.def_


def _not_null_recipe(table: str, column: str) -> str:
    check = _constraint_name(table, column, "not_null")
    t, c, k = _ident(table), _ident(column), _ident(check)
    return (
        f"ALTER TABLE {t} ADD CONSTRAINT {k} CHECK ({c} IS NOT NULL) NOT VALID; then, in a "
        f"separate transaction, ALTER TABLE {t} VALIDATE CONSTRAINT {k}; (SHARE UPDATE "
        f"EXCLUSIVE: reads and writes continue during the scan); then ALTER TABLE {t} ALTER "
        f"COLUMN {c} SET NOT NULL; (PostgreSQL 12+ uses the valid CHECK and skips the scan) and "
        f"ALTER TABLE {t} DROP CONSTRAINT {k};"
    )


_LOCK_NOTE = {
    LockMode.ACCESS_EXCLUSIVE: "blocking reads and writes",
    LockMode.SHARE_ROW_EXCLUSIVE: "blocking writes",
    LockMode.SHARE: "blocking writes",
}


# ---------------------------------------------------------------------------------------------
# transactions


@_register(
    "transaction-control",
    "error",
    "BEGIN/COMMIT/ROLLBACK/SAVEPOINT in a step: the executor manages transactions",
    rollback="keep",
)
def transaction_control(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if not isinstance(s.node, ast.TransactionStmt):
        return
    yield Hit(
        f"{_said(s)}: dbmigrate manages a step's transactions itself (it records the step in its "
        "history table in the same transaction and retries lock timeouts). Remove it and choose "
        "sql.transaction: Auto (default), Always (the whole step in one transaction) or Never "
        "(each statement on its own)."
    )


def _inside_transaction(ctx: LintContext) -> str | None:
    if ctx.in_transaction_block:
        where = f" (line {ctx.transaction_block_line})" if ctx.transaction_block_line else ""
        return f"inside the BEGIN … COMMIT block opened{where}"
    if ctx.transaction_mode == "Always":
        return "in a step with sql.transaction: Always (one transaction for the whole step)"
    return None


@_register(
    "ban-concurrent-index-creation-in-transaction",
    "error",
    "CREATE INDEX CONCURRENTLY inside a transaction (PostgreSQL refuses it)",
    rollback="keep",
)
def concurrent_index_in_transaction(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    if not (isinstance(s.node, ast.IndexStmt) and s.node.concurrent):
        return
    where = _inside_transaction(ctx)
    if where is None:
        return
    yield Hit(
        f"{_said(s)} runs {where}; PostgreSQL refuses CREATE INDEX CONCURRENTLY in a "
        "transaction block (SQLSTATE 25001), so the step fails. Remove BEGIN/COMMIT and use "
        "sql.transaction: Auto (the default), which runs this statement on its own, outside any "
        "transaction, taking only SHARE UPDATE EXCLUSIVE (reads and writes continue)."
    )


@_register(
    "non-transactional-statement-in-transaction",
    "error",
    "DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM … inside a transaction",
    rollback="keep",
)
def non_transactional_in_transaction(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    node = s.node
    if isinstance(node, ast.IndexStmt) or not statement_cannot_run_in_transaction(node):
        return
    where = _inside_transaction(ctx)
    if where is None:
        return
    yield Hit(
        f"{_said(s)} runs {where}; PostgreSQL refuses this statement in a transaction block "
        "(SQLSTATE 25001), so the step fails. Use sql.transaction: Auto (the default), which "
        "runs it on its own."
    )


@_register(
    "strong-locks-on-several-tables",
    "warning",
    "one transaction takes write-blocking locks on several existing tables",
)
def strong_locks_on_several_tables(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    if ctx.transaction is None:
        return
    for lock in effect.locks:
        if not lock.mode.blocks_writes or lock.of_index_table or ctx.is_new_table(lock.relation):
            continue
        held = {
            t: m
            for t, m in ctx.transaction_locks.items()
            if m.blocks_writes and t != lock.relation and not ctx.is_new_table(t)
        }
        if not held:
            continue
        others = ", ".join(f"{m.label} on {t}" for t, m in held.items())
        yield Hit(
            f"{_said(s)} takes {lock.mode.label} on {lock.relation} in a transaction that "
            f"already holds {others}: while it waits for {lock.relation}, queries on the "
            "other tables queue behind the held locks, and application transactions touching "
            "the tables in the other order can deadlock. Put the changes to each table in "
            "their own step (or use sql.transaction: Never)."
        )
        return


# ---------------------------------------------------------------------------------------------
# adding columns


@_register(
    "adding-field-with-volatile-default",
    "error",
    "ADD COLUMN with a volatile DEFAULT (or serial) rewrites the table",
)
def adding_field_with_volatile_default(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_AddColumn):
        if ctx.is_new_table(table):
            continue
        coldef = cmd.def_
        column = str(coldef.colname)
        t, c = _ident(table), _ident(column)
        kind = type_name(coldef.typeName)
        rewrite = (
            f"PostgreSQL rewrites {table} under ACCESS EXCLUSIVE, blocking reads and writes for "
            "the whole rewrite"
        )
        if kind in SERIAL_TYPES:
            yield Hit(
                f"{_said(s)} adds {kind} column {column}: its nextval() default is volatile, so "
                f"{rewrite}. Safe alternative: ADD COLUMN {c} bigint (no default; brief lock, "
                f"no rewrite); CREATE SEQUENCE; ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT "
                "nextval('…') (new rows only); then number the existing rows in a backfill step."
            )
            continue
        default = column_default(coldef)
        if default is None or (isinstance(default, ast.A_Const) and default.isnull):
            continue
        expr = deparse(default)
        later = (
            f"ADD COLUMN {c} {deparse(coldef.typeName)} without a default (brief ACCESS "
            f"EXCLUSIVE, no rewrite); then ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {expr} "
            f"(new rows only); then fill existing rows with a backfill step (set: {c} = {expr})."
        )
        if ctx.server_version < 11:
            yield Hit(
                f"{_said(s)}: on PostgreSQL {ctx.server_version} (before 11) any non-NULL "
                f"DEFAULT is written into every row, so {rewrite}. Safe alternative: {later}"
            )
            continue
        volatility, function = default_volatility(default)
        if volatility == "volatile":
            yield Hit(
                f"{_said(s)}: DEFAULT {expr} is volatile ({function}() is evaluated for every "
                f"row), so {rewrite}. Safe alternative: {later}"
            )
        elif volatility == "unknown":
            yield Hit(
                f"{_said(s)}: DEFAULT {expr} calls {function}, whose volatility dbmigrate cannot "
                f"tell; if it is volatile, {rewrite} (stable and immutable defaults are "
                "evaluated once on PostgreSQL 11+, no rewrite). Check pg_proc.provolatile; if "
                f"it is 'v', use: {later}",
                severity="warning",
            )


@_register(
    "adding-generated-column",
    "error",
    "ADD COLUMN … GENERATED (stored or identity) rewrites the table",
)
def adding_generated_column(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_AddColumn):
        if ctx.is_new_table(table):
            continue
        coldef = cmd.def_
        c, t = _ident(str(coldef.colname)), _ident(table)
        if has_constraint(coldef, ConstrType.CONSTR_IDENTITY):
            yield Hit(
                f"{_said(s)} adds an identity column: every existing row gets a sequence value, "
                f"so PostgreSQL rewrites {table} under ACCESS EXCLUSIVE, blocking reads and "
                f"writes for the whole rewrite. Safe alternative: ADD COLUMN {c} bigint; fill it "
                f"with a backfill step; then ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL (the "
                f"CHECK … NOT VALID recipe) and ALTER TABLE {t} ALTER COLUMN {c} ADD GENERATED "
                "BY DEFAULT AS IDENTITY (no rewrite)."
            )
        elif has_constraint(coldef, ConstrType.CONSTR_GENERATED):
            yield Hit(
                f"{_said(s)} adds a stored generated column: it is computed for every existing "
                f"row, so PostgreSQL rewrites {table} under ACCESS EXCLUSIVE, blocking reads and "
                f"writes for the whole rewrite. Safe alternative: ADD COLUMN {c} as a plain "
                "column, keep it up to date with a trigger for new rows and fill existing rows "
                "with a backfill step."
            )


@_register(
    "adding-required-field",
    "error",
    "ADD COLUMN … NOT NULL without a DEFAULT fails on a table with rows",
)
def adding_required_field(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_AddColumn):
        coldef = cmd.def_
        if ctx.is_new_table(table) or not has_constraint(coldef, ConstrType.CONSTR_NOTNULL):
            continue
        if column_default(coldef) is not None or type_name(coldef.typeName) in SERIAL_TYPES:
            continue
        if has_constraint(coldef, ConstrType.CONSTR_IDENTITY) or has_constraint(
            coldef, ConstrType.CONSTR_GENERATED
        ):
            continue
        column = str(coldef.colname)
        yield Hit(
            f"{_said(s)} adds NOT NULL column {column} without a DEFAULT: it fails on a table "
            "that has rows (they would hold NULL), and the running application cannot insert "
            f"without naming it. Safe alternative (the seed's pattern): ADD COLUMN {_ident(column)}"
            f" {deparse(coldef.typeName)} nullable (or with a constant DEFAULT: no rewrite on "
            "PostgreSQL 11+); fill existing rows with a backfill step; then "
            + _not_null_recipe(table, column)
        )


@_register(
    "adding-not-nullable-field",
    "error",
    "SET NOT NULL without a validated CHECK (col IS NOT NULL) scans under ACCESS EXCLUSIVE",
)
def adding_not_nullable_field(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_SetNotNull):
        column = str(cmd.name)
        if ctx.is_new_table(table):
            continue
        if ctx.server_version < 12:
            yield Hit(
                f"{_said(s)} takes ACCESS EXCLUSIVE on {table} and scans every row to prove no "
                f"NULLs, blocking reads and writes for the whole scan; PostgreSQL "
                f"{ctx.server_version} (before 12) cannot use a CHECK constraint to skip it. "
                "Safe alternative: keep the CHECK (col IS NOT NULL) constraint (validated with "
                "NOT VALID + VALIDATE CONSTRAINT) instead of SET NOT NULL until the server is "
                "upgraded."
            )
        elif not ctx.not_null_is_proven(table, column):
            yield Hit(
                f"{_said(s)} takes ACCESS EXCLUSIVE on {table} and scans every row to prove no "
                "NULLs, blocking reads and writes for the whole scan. Safe alternative: "
                + _not_null_recipe(table, column)
            )


# ---------------------------------------------------------------------------------------------
# constraints


@_register(
    "adding-foreign-key-without-not-valid",
    "error",
    "a FOREIGN KEY added without NOT VALID validates every row while blocking writes",
)
def adding_foreign_key_without_not_valid(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, constraint, coldef in _added_constraints(s.node, ctx):
        if constraint.contype != ConstrType.CONSTR_FOREIGN or constraint.skip_validation:
            continue
        referenced = relation_name(constraint.pktable)
        locks = (
            f"takes SHARE ROW EXCLUSIVE on {table} and {referenced} and checks every row of "
            f"{table}, blocking writes to both tables for the whole scan"
        )
        if coldef is None:
            fixed = _with_not_valid(s.node, ConstrType.CONSTR_FOREIGN)
            name = constraint.conname or _constraint_name(table, "fkey")
            yield Hit(
                f"{_said(s)} {locks}. Safe alternative: {fixed}; then, in a separate "
                f"transaction, ALTER TABLE {_ident(table)} VALIDATE CONSTRAINT {_ident(name)}; "
                f"(SHARE UPDATE EXCLUSIVE on {table}, ROW SHARE on {referenced}: writes continue)."
            )
        else:
            column = str(coldef.colname)
            name = constraint.conname or _constraint_name(table, column, "fkey")
            pk = ", ".join(_ident(str(getattr(a, "sval", a))) for a in constraint.pk_attrs or ())
            target = f"{_ident(referenced)} ({pk})" if pk else _ident(referenced)
            yield Hit(
                f"{_said(s)} adds column {column} with an inline REFERENCES: it {locks}. Safe "
                f"alternative: ADD COLUMN {_ident(column)} {deparse(coldef.typeName)} without "
                f"REFERENCES; then ALTER TABLE {_ident(table)} ADD CONSTRAINT {_ident(name)} "
                f"FOREIGN KEY ({_ident(column)}) REFERENCES {target} NOT VALID; then, in a "
                f"separate transaction, VALIDATE CONSTRAINT {_ident(name)}."
            )


@_register(
    "constraint-missing-not-valid",
    "error",
    "a CHECK added without NOT VALID (or validated in the same transaction) scans under "
    "ACCESS EXCLUSIVE",
)
def constraint_missing_not_valid(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, constraint, coldef in _added_constraints(s.node, ctx):
        if coldef is not None or constraint.contype != ConstrType.CONSTR_CHECK:
            continue
        if constraint.skip_validation:
            continue
        fixed = _with_not_valid(s.node, ConstrType.CONSTR_CHECK)
        name = constraint.conname or _constraint_name(table, "check")
        yield Hit(
            f"{_said(s)} takes ACCESS EXCLUSIVE on {table} and checks every row, blocking reads "
            f"and writes for the whole scan. Safe alternative: {fixed}; then, in a "
            f"separate transaction, ALTER TABLE {_ident(table)} VALIDATE CONSTRAINT "
            f"{_ident(name)}; (SHARE UPDATE EXCLUSIVE: reads and writes continue)."
        )
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_ValidateConstraint):
        pending = ctx.pending_constraints.get(str(cmd.name))
        if pending is None or pending.transaction is None:
            continue
        if pending.transaction == ctx.transaction:
            yield Hit(
                f"{_said(s)} runs in the same transaction as the ADD CONSTRAINT … NOT VALID on "
                f"line {pending.statement_line}, so the ACCESS EXCLUSIVE lock that statement "
                f"took on {table} is still held during the validation scan: NOT VALID gains "
                "nothing. Validate in a separate transaction: a step of its own, or "
                "sql.transaction: Never."
            )


def _uses_index_alternative(table: str, constraint: Any, coldef: Any, kind: str) -> str:
    if coldef is not None:  # inline in ADD COLUMN: the key is that column
        keys = [str(coldef.colname)]
    else:
        keys = [str(getattr(k, "sval", k)) for k in constraint.keys or ()]
    cols = ", ".join(_ident(k) for k in keys) or "…"
    suffix = "pkey" if kind == "PRIMARY KEY" else "key"
    name = constraint.conname or _constraint_name(table, *keys, suffix)
    index = _constraint_name(str(name), "idx")
    extra = (
        " (the columns must already be NOT NULL: use the CHECK … NOT VALID recipe first)"
        if kind == "PRIMARY KEY"
        else ""
    )
    return (
        f"CREATE UNIQUE INDEX CONCURRENTLY {_ident(index)} ON {_ident(table)} ({cols}); "
        f"(SHARE UPDATE EXCLUSIVE: reads and writes continue) then ALTER TABLE {_ident(table)} "
        f"ADD CONSTRAINT {_ident(str(name))} {kind} USING INDEX {_ident(index)}; (brief ACCESS "
        f"EXCLUSIVE){extra}."
    )


@_register(
    "adding-primary-key-without-using-index",
    "error",
    "ADD PRIMARY KEY builds its index under ACCESS EXCLUSIVE",
)
def adding_primary_key_without_using_index(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, constraint, coldef in _added_constraints(s.node, ctx):
        if constraint.contype != ConstrType.CONSTR_PRIMARY or constraint.indexname:
            continue
        yield Hit(
            f"{_said(s)} builds the primary key's unique index while holding ACCESS EXCLUSIVE on "
            f"{table}, blocking reads and writes for the whole build. Safe alternative: "
            + _uses_index_alternative(table, constraint, coldef, "PRIMARY KEY")
        )


@_register(
    "disallowed-unique-constraint",
    "error",
    "ADD UNIQUE builds its index under ACCESS EXCLUSIVE",
)
def disallowed_unique_constraint(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, constraint, coldef in _added_constraints(s.node, ctx):
        if constraint.contype != ConstrType.CONSTR_UNIQUE or constraint.indexname:
            continue
        yield Hit(
            f"{_said(s)} builds the unique constraint's index while holding ACCESS EXCLUSIVE on "
            f"{table}, blocking reads and writes for the whole build. Safe alternative: "
            + _uses_index_alternative(table, constraint, coldef, "UNIQUE")
        )


# ---------------------------------------------------------------------------------------------
# changing and removing things the running application uses


@_register(
    "changing-column-type",
    "error",
    "ALTER COLUMN TYPE rewrites the table under ACCESS EXCLUSIVE (unless binary-coercible)",
)
def changing_column_type(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_AlterColumnType):
        if ctx.is_new_table(table):
            continue
        column = str(cmd.name)
        coldef = cmd.def_
        new_type = deparse(coldef.typeName)
        safe = (
            f"Safe alternative (the seed's type-change pattern): ADD COLUMN {_ident(column)}_new "
            f"{new_type}; keep it in sync with a trigger and fill it with a backfill step; "
            "switch the application with an awaitRollout step; then drop the old column and "
            "rename in the contract phase."
        )
        target = type_name(coldef.typeName)
        using = getattr(coldef, "raw_default", None) is not None
        if not using and target in ("text", "varchar", "citext"):
            yield Hit(
                f"{_said(s)} takes ACCESS EXCLUSIVE on {table}; it is metadata-only (brief) if "
                f"the current type of {column} is binary-coercible to {new_type} (varchar(n) to "
                "text, or to a longer varchar), otherwise it rewrites the table, blocking reads "
                "and writes. If the change only widens the type, suppress this with a reason; "
                + safe,
                severity="warning",
            )
            continue
        yield Hit(
            f"{_said(s)} rewrites {table} (and rebuilds its indexes) under ACCESS EXCLUSIVE, "
            "blocking reads and writes for the whole rewrite, and the running application may "
            f"not handle the new type. {safe}"
        )


@_register(
    "ban-drop-column",
    "error",
    "DROP COLUMN before the application stopped using it (outside the contract phase)",
    rollback="skip",
)
def ban_drop_column(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if ctx.contract_phase:
        return
    for table, cmd in _alter_commands(s.node, AlterTableType.AT_DropColumn):
        if ctx.is_new_table(table):
            continue
        yield Hit(
            f"{_said(s)} drops column {cmd.name} of {table} (brief ACCESS EXCLUSIVE, no "
            "rewrite) while the running application version may still read or write it: its "
            "queries fail, and a rollback cannot bring the data back. Drop it in a step after "
            "an awaitRollout step (contract phase), once no running version uses the column."
        )


@_register(
    "ban-drop-table",
    "error",
    "DROP TABLE before the application stopped using it (outside the contract phase)",
    rollback="skip",
)
def ban_drop_table(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if ctx.contract_phase or not isinstance(node, ast.DropStmt):
        return
    if node.removeType != ObjectType.OBJECT_TABLE:
        return
    for obj in node.objects or ():
        table = dotted_name(obj)
        if ctx.is_new_table(table):
            continue
        yield Hit(
            f"{_said(s)} drops {table} (ACCESS EXCLUSIVE) while the running application version "
            "may still use it: its queries fail, and a rollback cannot bring the data back. "
            "Drop it in a step after an awaitRollout step (contract phase), once no running "
            "version uses the table."
        )


@_register(
    "renaming-column",
    "error",
    "RENAME COLUMN breaks the running application version",
    rollback="skip",
)
def renaming_column(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.RenameStmt) or node.renameType != ObjectType.OBJECT_COLUMN:
        return
    table = relation_name(node.relation)
    if ctx.is_new_table(table):
        return
    old, new = str(node.subname), str(node.newname)
    t = _ident(table)
    yield Hit(
        f"{_said(s)} is fast (brief ACCESS EXCLUSIVE) but every query of the running "
        f"application that names {old} fails at once. Safe alternative (the seed's "
        f"zero-downtime rename): ALTER TABLE {t} ADD COLUMN {_ident(new)} <type>; a trigger "
        f"keeping {new} and {old} in sync; a backfill step (set: {_ident(new)} = {_ident(old)}); "
        f"an awaitRollout step for the version that uses {new}; then ALTER TABLE {t} DROP "
        f"COLUMN {_ident(old)} in the contract phase."
    )


@_register(
    "renaming-table",
    "error",
    "RENAME TABLE breaks the running application version",
    rollback="skip",
)
def renaming_table(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.RenameStmt) or node.renameType != ObjectType.OBJECT_TABLE:
        return
    table = relation_name(node.relation)
    if ctx.is_new_table(table):
        return
    schema = getattr(node.relation, "schemaname", None)
    new = f"{schema}.{node.newname}" if schema else str(node.newname)
    yield Hit(
        f"{_said(s)} is fast (brief ACCESS EXCLUSIVE) but every query of the running "
        f"application that names {table} fails at once. Safe alternative: in one step, rename "
        f"and CREATE VIEW {_ident(table)} AS SELECT * FROM {_ident(new)}; (a simple view is "
        "updatable, so the old version keeps working); roll out the version that uses the new "
        "name with an awaitRollout step; DROP VIEW in the contract phase."
    )


# ---------------------------------------------------------------------------------------------
# indexes


@_register(
    "require-concurrent-index-creation",
    "error",
    "CREATE INDEX without CONCURRENTLY blocks writes for the whole build",
)
def require_concurrent_index_creation(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.IndexStmt) or node.concurrent:
        return
    table = relation_name(node.relation)
    if ctx.is_new_table(table):
        return
    changes: list[tuple[Any, str, Any]] = [(node, "concurrent", True)]
    if node.idxname:
        changes.append((node, "if_not_exists", True))
    fixed = _deparse_with(node, changes)
    yield Hit(
        f"{_said(s)} takes SHARE on {table}, blocking writes for the whole index build. Safe "
        f"alternative: {fixed}; (SHARE UPDATE EXCLUSIVE: reads and writes continue; "
        "sql.transaction: Auto runs it outside a transaction)."
    )


@_register(
    "require-concurrent-index-deletion",
    "error",
    "DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the table",
)
def require_concurrent_index_deletion(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.DropStmt) or node.removeType != ObjectType.OBJECT_INDEX:
        return
    if node.concurrent:
        return
    names = [dotted_name(obj) for obj in node.objects or ()]
    if all(ctx.is_index_on_new_table(name) for name in names):
        return
    # DROP INDEX CONCURRENTLY takes one index at a time.
    fixed = " ".join(f"DROP INDEX CONCURRENTLY IF EXISTS {_ident(name)};" for name in names)
    tables = ", ".join(dict.fromkeys(lock.where for lock in effect.locks))
    yield Hit(
        f"{_said(s)} takes ACCESS EXCLUSIVE on {tables}, blocking reads and writes "
        f"(and it waits behind every open transaction on it). Safe alternative: {fixed} "
        "(SHARE UPDATE EXCLUSIVE; sql.transaction: Auto runs it outside a transaction)."
    )


# ---------------------------------------------------------------------------------------------
# maintenance commands


@_register("vacuum-full", "error", "VACUUM FULL rewrites the table under ACCESS EXCLUSIVE")
def vacuum_full(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.VacuumStmt):
        return
    if not any(isinstance(o, ast.DefElem) and o.defname == "full" for o in node.options or ()):
        return
    tables = ", ".join(effect.relations) or "every table of the database"
    yield Hit(
        f"{_said(s)} rewrites {tables} under ACCESS EXCLUSIVE, blocking reads and writes for the "
        "whole rewrite. Safe alternative: plain VACUUM (SHARE UPDATE EXCLUSIVE) reclaims space "
        "for reuse; to shrink files online use an extension such as pg_repack, outside the "
        "migration."
    )


@_register("cluster", "error", "CLUSTER rewrites the table under ACCESS EXCLUSIVE")
def cluster(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if not isinstance(s.node, ast.ClusterStmt):
        return
    tables = ", ".join(effect.relations) or "every previously clustered table"
    yield Hit(
        f"{_said(s)} rewrites {tables} in index order under ACCESS EXCLUSIVE, blocking reads "
        "and writes for the whole rewrite. Safe alternative: leave physical ordering out of "
        "migrations (pg_repack --order-by does it online)."
    )


# ---------------------------------------------------------------------------------------------
# data changes


@_register(
    "prefer-backfill-step",
    "warning",
    "UPDATE/DELETE of a whole existing table in one transaction",
)
def prefer_backfill_step(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.UpdateStmt | ast.DeleteStmt) or node.whereClause is not None:
        return
    table = relation_name(node.relation)
    if ctx.is_new_table(table):
        return
    verb = "updates" if isinstance(node, ast.UpdateStmt) else "deletes"
    yield Hit(
        f"{_said(s)} {verb} every row of {table} in one transaction: row locks on the whole "
        "table until it commits, one huge WAL burst, dead tuples for VACUUM, and no progress "
        "or resume. Safe alternative: a backfill step (keyset batches of its own short "
        "transactions, resumable, adaptive batch size)."
    )


# ---------------------------------------------------------------------------------------------
# re-running a step


def _is_robust(node: Any) -> bool | None:
    """Whether re-running the statement after it succeeded is harmless (None: not applicable)."""
    if isinstance(node, ast.CreateStmt):
        return bool(node.if_not_exists)
    if isinstance(node, ast.CreateTableAsStmt):
        return bool(node.if_not_exists)
    if isinstance(node, ast.IndexStmt):
        return bool(node.if_not_exists) if node.idxname else False
    if isinstance(node, ast.DropStmt):
        return bool(node.missing_ok)
    if isinstance(node, ast.CreateSeqStmt | ast.CreateExtensionStmt | ast.CreateSchemaStmt):
        return bool(node.if_not_exists)
    if isinstance(node, ast.CreateFunctionStmt | ast.CreateTrigStmt | ast.ViewStmt):
        return bool(node.replace)
    if isinstance(node, ast.AlterEnumStmt) and node.newVal is not None:
        return bool(node.skipIfNewValExists)
    if isinstance(node, ast.RenameStmt):
        return False
    if isinstance(node, ast.AlterTableStmt):
        dropped_first: set[str] = set()
        for cmd in node.cmds or ():
            if (
                cmd.subtype
                in (
                    AlterTableType.AT_AddColumn,
                    AlterTableType.AT_DropColumn,
                    AlterTableType.AT_DropConstraint,
                )
                and not cmd.missing_ok
            ):
                return False
            if cmd.subtype == AlterTableType.AT_DropConstraint:
                dropped_first.add(str(cmd.name))
            # ADD CONSTRAINT has no IF NOT EXISTS; `DROP CONSTRAINT IF EXISTS c, ADD CONSTRAINT
            # c …` in the same statement re-runs fine.
            if cmd.subtype == AlterTableType.AT_AddConstraint and (
                cmd.def_.conname is None or str(cmd.def_.conname) not in dropped_first
            ):
                return False
        return True
    return None


@_register(
    "prefer-robust-stmts",
    "warning",
    "a statement that fails when its step is retried after a later transaction failed",
)
def prefer_robust_stmts(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if not ctx.rerun_on_retry or _is_robust(s.node) is not False:
        return
    tables = effect.relations
    if (
        tables
        and all(ctx.is_new_table(t) for t in tables)
        and not isinstance(s.node, ast.CreateStmt)
    ):
        return
    node = s.node
    if isinstance(node, ast.AlterTableStmt) and any(
        cmd.subtype == AlterTableType.AT_AddConstraint for cmd in node.cmds or ()
    ):
        advice = (
            "ADD CONSTRAINT has no IF NOT EXISTS: precede it with DROP CONSTRAINT IF EXISTS in "
            "the same ALTER TABLE, or put it in a step of its own"
        )
    elif isinstance(node, ast.RenameStmt):
        advice = "RENAME cannot be made re-runnable: put it in a step of its own"
    elif isinstance(node, ast.AlterTableStmt):
        advice = "Use ADD COLUMN IF NOT EXISTS / DROP COLUMN IF EXISTS / DROP CONSTRAINT IF EXISTS"
    elif isinstance(node, ast.DropStmt):
        advice = "Use DROP … IF EXISTS"
    elif isinstance(node, ast.IndexStmt) and not node.idxname:
        advice = "Name the index and use IF NOT EXISTS"
    else:
        advice = "Use IF NOT EXISTS (or OR REPLACE)"
    yield Hit(
        f"{_said(s)} commits before a later transaction of the same step; if that one fails, "
        f"the step is retried from the start and this statement fails on the second run. "
        f"{advice}."
    )


# ---------------------------------------------------------------------------------------------
# column types


def _column_definitions(node: Any) -> Iterator[tuple[str, str, Any]]:
    """(table, column, TypeName) for columns created or retyped by the statement."""
    if isinstance(node, ast.CreateStmt):
        table = relation_name(node.relation)
        for element in node.tableElts or ():
            if isinstance(element, ast.ColumnDef):
                yield table, str(element.colname), element.typeName
        return
    for table, cmd in _alter_commands(
        node, AlterTableType.AT_AddColumn, AlterTableType.AT_AlterColumnType
    ):
        coldef = cmd.def_
        column = cmd.name if cmd.subtype == AlterTableType.AT_AlterColumnType else coldef.colname
        yield table, str(column), coldef.typeName


@_register(
    "prefer-bigint-over-int",
    "warning",
    "integer/smallint/serial columns can run out of values",
    rollback="skip",
)
def prefer_bigint_over_int(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    small = {"int2": "smallint", "int4": "integer", "serial": "serial", "serial4": "serial"}
    small |= {"smallserial": "smallserial", "serial2": "smallserial"}
    for table, column, typename in _column_definitions(s.node):
        kind = type_name(typename)
        if kind not in small:
            continue
        yield Hit(
            f"{_said(s)}: column {column} of {table} is {small[kind]}; ids and counters "
            "outgrow it, and changing the type later rewrites the table under ACCESS "
            "EXCLUSIVE. Use bigint (bigserial / bigint GENERATED … AS IDENTITY): 4 more bytes "
            "per row."
        )


@_register(
    "prefer-timestamptz",
    "warning",
    "timestamp without time zone",
    rollback="skip",
)
def prefer_timestamptz(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, column, typename in _column_definitions(s.node):
        if type_name(typename) != "timestamp":
            continue
        yield Hit(
            f"{_said(s)}: column {column} of {table} is timestamp without time zone; "
            "its values change meaning with the session's TimeZone. Use timestamptz."
        )


@_register(
    "prefer-text-field",
    "warning",
    "varchar(n): changing the limit later takes ACCESS EXCLUSIVE",
    rollback="skip",
)
def prefer_text_field(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, column, typename in _column_definitions(s.node):
        mods = type_modifiers(typename)
        if type_name(typename) != "varchar" or not mods:
            continue
        yield Hit(
            f"{_said(s)}: column {column} of {table} is varchar({mods[0]}); changing the limit "
            "later takes ACCESS EXCLUSIVE (and shrinking it scans the table). Use text with "
            f"CHECK (char_length({_ident(column)}) <= {mods[0]}) added NOT VALID: that limit can "
            "be changed without blocking."
        )


@_register("ban-char-field", "warning", "char(n) pads with spaces", rollback="skip")
def ban_char_field(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, column, typename in _column_definitions(s.node):
        if type_name(typename) != "bpchar":
            continue
        yield Hit(
            f"{_said(s)}: column {column} of {table} is {deparse(typename)}, "
            "which pads values with spaces and is no faster than text. Use text (with a CHECK "
            "on char_length if the length matters)."
        )

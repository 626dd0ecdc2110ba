"""Rules about adding constraints to an existing table: foreign keys and CHECKs without NOT
VALID (or validated in the same transaction), and PRIMARY KEY / UNIQUE constraints that build
their index under ACCESS EXCLUSIVE instead of USING INDEX."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast.enums import AlterTableType, ConstrType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import (
    added_constraints,
    constraint_name,
    said,
    with_not_valid,
)
from dbmigrate.core.lint.rules.registry import Check, Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import (
    alter_commands,
    deparse,
    has_non_null_default,
    quote_name,
    relation_name,
)
from dbmigrate.core.statements import Statement


def _not_valid_recipe(
    s: Statement, table: str, constraint: Any, suffix: str, validation_locks: str
) -> str:
    """The statement again with the constraint NOT VALID, then VALIDATE CONSTRAINT on its own."""
    fixed = with_not_valid(s.node, constraint.contype)
    name = quote_name(constraint.conname or constraint_name(table, suffix))
    return (
        f"Safe alternative: {fixed}; then, in a separate transaction, ALTER TABLE "
        f"{quote_name(table)} VALIDATE CONSTRAINT {name}; ({validation_locks})."
    )


@register(
    "adding-foreign-key-without-not-valid",
    "error",
    "a FOREIGN KEY added without NOT VALID validates every row while blocking writes",
)
def adding_foreign_key_without_not_valid(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, constraint, coldef in added_constraints(s.node, ctx):
        if constraint.contype != ConstrType.CONSTR_FOREIGN or constraint.skip_validation:
            continue
        if coldef is not None and not has_non_null_default(coldef):
            continue  # a new column is all NULL: nothing to validate, the locks are brief
        referenced = relation_name(constraint.pktable)
        locks = (
            f"takes SHARE ROW EXCLUSIVE on {table} and {referenced} and checks every row of "
            f"{table}, blocking writes to both tables for the whole scan"
        )
        if coldef is None:
            validate = (
                f"SHARE UPDATE EXCLUSIVE on {table}, ROW SHARE on {referenced}: writes continue"
            )
            yield Hit(
                f"{said(s)} {locks}. " + _not_valid_recipe(s, table, constraint, "fkey", validate)
            )
        else:
            column = str(coldef.colname)
            name = constraint.conname or constraint_name(table, column, "fkey")
            pk = ", ".join(
                quote_name(str(getattr(a, "sval", a))) for a in constraint.pk_attrs or ()
            )
            target = f"{quote_name(referenced)} ({pk})" if pk else quote_name(referenced)
            yield Hit(
                f"{said(s)} adds column {column} with an inline REFERENCES: it {locks}. Safe "
                f"alternative: ADD COLUMN {quote_name(column)} {deparse(coldef.typeName)} without "
                f"REFERENCES; then ALTER TABLE {quote_name(table)} ADD CONSTRAINT "
                f"{quote_name(name)} FOREIGN KEY ({quote_name(column)}) REFERENCES {target} NOT "
                f"VALID; then, in a separate transaction, VALIDATE CONSTRAINT {quote_name(name)}."
            )


@register(
    "constraint-missing-not-valid",
    "error",
    "a CHECK added without NOT VALID (or validated in the same transaction) scans under "
    "ACCESS EXCLUSIVE",
)
def constraint_missing_not_valid(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, constraint, coldef in added_constraints(s.node, ctx):
        if coldef is not None or constraint.contype != ConstrType.CONSTR_CHECK:
            continue
        if constraint.skip_validation:
            continue
        yield Hit(
            f"{said(s)} takes ACCESS EXCLUSIVE on {table} and checks every row, blocking reads "
            "and writes for the whole scan. "
            + _not_valid_recipe(
                s, table, constraint, "check", "SHARE UPDATE EXCLUSIVE: reads and writes continue"
            )
        )
    for table, cmd in alter_commands(s.node, AlterTableType.AT_ValidateConstraint):
        pending = ctx.pending_constraints.get(str(cmd.name))
        if pending is None or pending.transaction is None or ctx.is_new_table(table):
            continue
        if pending.transaction == ctx.transaction:
            yield Hit(
                f"{said(s)} runs in the same transaction as the ADD CONSTRAINT … NOT VALID on "
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
    cols = ", ".join(quote_name(k) for k in keys) or "…"
    suffix = "pkey" if kind == "PRIMARY KEY" else "key"
    name = constraint.conname or constraint_name(table, *keys, suffix)
    index = constraint_name(str(name), "idx")
    extra = (
        " (the columns must already be NOT NULL: use the CHECK … NOT VALID recipe first)"
        if kind == "PRIMARY KEY"
        else ""
    )
    return (
        f"CREATE UNIQUE INDEX CONCURRENTLY {quote_name(index)} ON {quote_name(table)} ({cols}); "
        f"(SHARE UPDATE EXCLUSIVE: reads and writes continue) then ALTER TABLE "
        f"{quote_name(table)} ADD CONSTRAINT {quote_name(str(name))} {kind} USING INDEX "
        f"{quote_name(index)}; (brief ACCESS EXCLUSIVE){extra}."
    )


def _index_building_constraint(
    rule_id: str, summary: str, contype: ConstrType, kind: str, index: str
) -> Check:
    """The PRIMARY KEY and UNIQUE rules: the same check and advice for either kind."""

    @register(rule_id, "error", summary)
    def check(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
        for table, constraint, coldef in added_constraints(s.node, ctx):
            if constraint.contype != contype or constraint.indexname:
                continue
            yield Hit(
                f"{said(s)} builds {index} while holding ACCESS EXCLUSIVE on {table}, blocking "
                "reads and writes for the whole build. Safe alternative: "
                + _uses_index_alternative(table, constraint, coldef, kind)
            )

    return check


adding_primary_key_without_using_index = _index_building_constraint(
    "adding-primary-key-without-using-index",
    "ADD PRIMARY KEY builds its index under ACCESS EXCLUSIVE",
    ConstrType.CONSTR_PRIMARY,
    "PRIMARY KEY",
    "the primary key's unique index",
)
disallowed_unique_constraint = _index_building_constraint(
    "disallowed-unique-constraint",
    "ADD UNIQUE builds its index under ACCESS EXCLUSIVE",
    ConstrType.CONSTR_UNIQUE,
    "UNIQUE",
    "the unique constraint's index",
)

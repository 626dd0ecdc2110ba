"""Rules about adding columns to an existing table: defaults and generated columns that
rewrite it, NOT NULL columns that fail on its rows, and SET NOT NULL's validation scan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast.enums import AlterTableType, ConstrType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import (
    existing_alter_commands,
    not_null_recipe,
    rewrite_note,
    said,
)
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect, default_volatility
from dbmigrate.core.sqlast import (
    SERIAL_TYPES,
    column_default,
    deparse,
    has_constraint,
    is_null_constant,
    quote_name,
    type_name,
)
from dbmigrate.core.statements import Statement


def _added_columns(s: Statement, ctx: LintContext) -> Iterator[tuple[str, Any]]:
    """(table, column definition) for each ADD COLUMN on an existing table."""
    for table, cmd in existing_alter_commands(s.node, ctx, AlterTableType.AT_AddColumn):
        yield table, cmd.def_


@register(
    "adding-field-with-volatile-default",
    "error",
    "ADD COLUMN with a volatile DEFAULT (or serial) rewrites the table",
)
def adding_field_with_volatile_default(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, coldef in _added_columns(s, ctx):
        column = str(coldef.colname)
        t, c = quote_name(table), quote_name(column)
        kind = type_name(coldef.typeName)
        rewrite = rewrite_note(table)
        if kind in SERIAL_TYPES:
            yield Hit(
                f"{said(s)} adds {kind} column {column}: its nextval() default is volatile, so "
                f"{rewrite}. Safe alternative: ADD COLUMN {c} bigint (no default; brief lock, "
                f"no rewrite); CREATE SEQUENCE; ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT "
                "nextval('…') (new rows only); then number the existing rows in a backfill step."
            )
            continue
        default = column_default(coldef)
        if default is None or is_null_constant(default):
            continue
        expr = deparse(default)
        later = (
            f"ADD COLUMN {c} {deparse(coldef.typeName)} without a default (brief ACCESS "
            f"EXCLUSIVE, no rewrite); then ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {expr} "
            f"(new rows only); then fill existing rows with a backfill step (set: {c} = {expr})."
        )
        if ctx.server_version < 11:
            yield Hit(
                f"{said(s)}: on PostgreSQL {ctx.server_version} (before 11) any non-NULL "
                f"DEFAULT is written into every row, so {rewrite}. Safe alternative: {later}"
            )
            continue
        volatility, function = default_volatility(default)
        if volatility == "volatile":
            yield Hit(
                f"{said(s)}: DEFAULT {expr} is volatile ({function}() is evaluated for every "
                f"row), so {rewrite}. Safe alternative: {later}"
            )
        elif volatility == "unknown":
            yield Hit(
                f"{said(s)}: DEFAULT {expr} calls {function}, whose volatility dbmigrate cannot "
                f"tell; if it is volatile, {rewrite} (stable and immutable defaults are "
                "evaluated once on PostgreSQL 11+, no rewrite). Check pg_proc.provolatile; if "
                f"it is 'v', use: {later}",
                severity="warning",
            )


@register(
    "adding-generated-column",
    "error",
    "ADD COLUMN … GENERATED (stored or identity) rewrites the table",
)
def adding_generated_column(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, coldef in _added_columns(s, ctx):
        c, t = quote_name(str(coldef.colname)), quote_name(table)
        if has_constraint(coldef, ConstrType.CONSTR_IDENTITY):
            yield Hit(
                f"{said(s)} adds an identity column: every existing row gets a sequence value, "
                f"so {rewrite_note(table)}. Safe alternative: ADD COLUMN {c} bigint; fill it "
                f"with a backfill step; then ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL (the "
                f"CHECK … NOT VALID recipe) and ALTER TABLE {t} ALTER COLUMN {c} ADD GENERATED "
                "BY DEFAULT AS IDENTITY (no rewrite)."
            )
        elif has_constraint(coldef, ConstrType.CONSTR_GENERATED):
            yield Hit(
                f"{said(s)} adds a stored generated column: it is computed for every existing "
                f"row, so {rewrite_note(table)}. Safe alternative: ADD COLUMN {c} as a plain "
                "column, keep it up to date with a trigger for new rows and fill existing rows "
                "with a backfill step."
            )


@register(
    "adding-required-field",
    "error",
    "ADD COLUMN … NOT NULL without a DEFAULT fails on a table with rows",
)
def adding_required_field(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, coldef in _added_columns(s, ctx):
        if not has_constraint(coldef, ConstrType.CONSTR_NOTNULL):
            continue
        if column_default(coldef) is not None or type_name(coldef.typeName) in SERIAL_TYPES:
            continue
        if has_constraint(coldef, ConstrType.CONSTR_IDENTITY) or has_constraint(
            coldef, ConstrType.CONSTR_GENERATED
        ):
            continue
        column = str(coldef.colname)
        yield Hit(
            f"{said(s)} adds NOT NULL column {column} without a DEFAULT: it fails on a table "
            "that has rows (they would hold NULL), and the running application cannot insert "
            f"without naming it. Safe alternative (the seed's pattern): ADD COLUMN "
            f"{quote_name(column)} {deparse(coldef.typeName)} nullable (or with a constant "
            "DEFAULT: no rewrite on PostgreSQL 11+); fill existing rows with a backfill step; "
            "then " + not_null_recipe(table, column)
        )


@register(
    "adding-not-nullable-field",
    "error",
    "SET NOT NULL without a validated CHECK (col IS NOT NULL) scans under ACCESS EXCLUSIVE",
)
def adding_not_nullable_field(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, cmd in existing_alter_commands(s.node, ctx, AlterTableType.AT_SetNotNull):
        column = str(cmd.name)
        scan = (
            f"{said(s)} takes ACCESS EXCLUSIVE on {table} and scans every row to prove no "
            "NULLs, blocking reads and writes for the whole scan"
        )
        if ctx.server_version < 12:
            yield Hit(
                f"{scan}; PostgreSQL {ctx.server_version} (before 12) cannot use a CHECK "
                "constraint to skip it. Safe alternative: keep the CHECK (col IS NOT NULL) "
                "constraint (validated with NOT VALID + VALIDATE CONSTRAINT) instead of SET NOT "
                "NULL until the server is upgraded."
            )
        elif not ctx.not_null_is_proven(table, column):
            yield Hit(f"{scan}. Safe alternative: " + not_null_recipe(table, column))

"""Rules about changing and removing what the running application version uses: column type
changes, DROP COLUMN / DROP TABLE before the contract phase, and renames. Drops and renames
are what a rollback is for, so their rollback policy is "skip"."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType, ObjectType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import existing_alter_commands, said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import (
    deparse,
    dotted_name,
    name_in_schema_of,
    parse_type,
    quote_name,
    relation_name,
    type_modifiers,
    type_name,
    widens,
)
from dbmigrate.core.statements import Statement


@register(
    "changing-column-type",
    "error",
    "ALTER COLUMN TYPE rewrites the table under ACCESS EXCLUSIVE (unless binary-coercible)",
)
def changing_column_type(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, cmd in existing_alter_commands(s.node, ctx, AlterTableType.AT_AlterColumnType):
        column = str(cmd.name)
        coldef = cmd.def_
        new_type = deparse(coldef.typeName)
        safe = (
            "Safe alternative (the seed's type-change pattern): ADD COLUMN "
            f"{quote_name(column)}_new {new_type}; keep it in sync with a trigger and fill it "
            "with a backfill step; switch the application with an awaitRollout step; then drop "
            "the old column and rename in the contract phase."
        )
        target = type_name(coldef.typeName)
        using = getattr(coldef, "raw_default", None) is not None
        current = _current_type(ctx, table, column)
        if current is not None and not using and coldef.collClause is None:
            verdict = widens(current[1], (target, type_modifiers(coldef.typeName)))
            if verdict:
                yield Hit(
                    f"{said(s)}: {column} of {table} is {current[0]} in the database, which is "
                    f"binary-coercible to {new_type}: a catalog change under a brief ACCESS "
                    "EXCLUSIVE, no rewrite.",
                    severity="info",
                )
                continue
            if verdict is False:
                yield Hit(
                    f"{said(s)}: {column} of {table} is {current[0]} in the database, and "
                    f"changing it to {new_type} checks or rewrites every row under ACCESS "
                    f"EXCLUSIVE, blocking reads and writes. {safe}"
                )
                continue
        limited = bool(coldef.typeName.typmods)  # varchar(n), numeric(p,s): may narrow
        if not using and limited and target in ("varchar", "numeric", "varbit"):
            yield Hit(
                f"{said(s)} takes ACCESS EXCLUSIVE on {table} and, unless the current type of "
                f"{column} is the same type with a limit no larger (varchar(m) with m ≤ n, "
                "numeric with no more digits and the same scale), checks or rewrites every row, "
                "blocking reads and writes; a new COLLATE rebuilds the column's indexes. If it "
                "only widens, suppress this with that reason. " + safe
            )
            continue
        if not using and not limited and target in ("text", "varchar", "citext"):
            yield Hit(
                f"{said(s)} takes ACCESS EXCLUSIVE on {table}; it is metadata-only (brief) if "
                f"the current type of {column} is binary-coercible to {new_type} (varchar(n) to "
                "text, or to a longer varchar), otherwise it rewrites the table, blocking reads "
                "and writes. If the change only widens the type, suppress this with a reason; "
                + safe,
                severity="warning",
            )
            continue
        yield Hit(
            f"{said(s)} rewrites {table} (and rebuilds its indexes) under ACCESS EXCLUSIVE, "
            "blocking reads and writes for the whole rewrite, and the running application may "
            f"not handle the new type. {safe}"
        )


def _current_type(
    ctx: LintContext, table: str, column: str
) -> tuple[str, tuple[str, tuple[int, ...]]] | None:
    """The column's type in the database (given with --dsn / read by the operator): as printed,
    and parsed."""
    size = ctx.size_of(table)
    printed = size.column_type(column) if size is not None else None
    parsed = parse_type(printed) if printed else None
    return (printed, parsed) if printed and parsed else None


def _drop_advice(what: str) -> str:
    return (
        "its queries fail, and a rollback cannot bring the data back. Drop it in a step after "
        f"an awaitRollout step (contract phase), once no running version uses the {what}."
    )


@register(
    "ban-drop-column",
    "error",
    "DROP COLUMN before the application stopped using it (outside the contract phase)",
    rollback="skip",
)
def ban_drop_column(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if ctx.contract_phase:
        return
    for table, cmd in existing_alter_commands(s.node, ctx, AlterTableType.AT_DropColumn):
        yield Hit(
            f"{said(s)} drops column {cmd.name} of {table} (brief ACCESS EXCLUSIVE, no "
            "rewrite) while the running application version may still read or write it: "
            + _drop_advice("column")
        )


@register(
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
            f"{said(s)} drops {table} (ACCESS EXCLUSIVE) while the running application version "
            "may still use it: " + _drop_advice("table")
        )


def _renamed(s: Statement, ctx: LintContext, kind: ObjectType) -> str | None:
    """The table of a RENAME of `kind` on an existing table."""
    node = s.node
    if not isinstance(node, ast.RenameStmt) or node.renameType != kind:
        return None
    table = relation_name(node.relation)
    return None if ctx.is_new_table(table) else table


def _rename_breaks(s: Statement, old: str) -> str:
    return (
        f"{said(s)} is fast (brief ACCESS EXCLUSIVE) but every query of the running "
        f"application that names {old} fails at once. Safe alternative"
    )


@register(
    "renaming-column",
    "error",
    "RENAME COLUMN breaks the running application version",
    rollback="skip",
)
def renaming_column(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    table = _renamed(s, ctx, ObjectType.OBJECT_COLUMN)
    if table is None:
        return
    old, new = str(s.node.subname), str(s.node.newname)
    t = quote_name(table)
    yield Hit(
        f"{_rename_breaks(s, old)} (the seed's zero-downtime rename): ALTER TABLE {t} ADD "
        f"COLUMN {quote_name(new)} <type>; a trigger keeping {new} and {old} in sync; a "
        f"backfill step (set: {quote_name(new)} = {quote_name(old)}); an awaitRollout step for "
        f"the version that uses {new}; then ALTER TABLE {t} DROP COLUMN {quote_name(old)} in "
        "the contract phase."
    )


@register(
    "renaming-table",
    "error",
    "RENAME TABLE breaks the running application version",
    rollback="skip",
)
def renaming_table(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    table = _renamed(s, ctx, ObjectType.OBJECT_TABLE)
    if table is None:
        return
    new = name_in_schema_of(s.node.relation, s.node.newname)
    yield Hit(
        f"{_rename_breaks(s, table)}: in one step, rename and CREATE VIEW {quote_name(table)} AS "
        f"SELECT * FROM {quote_name(new)}; (a simple view is updatable, so the old version "
        "keeps working); roll out the version that uses the new name with an awaitRollout "
        "step; DROP VIEW in the contract phase."
    )

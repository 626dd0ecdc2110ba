"""Rules about what the running application relies on besides its tables' columns: views, the
schema a table lives in, enum values, sequences, triggers, and the rows themselves. Like drops
and renames, the first three are expected in the contract phase (after an awaitRollout step)
and are what a rollback is for; emptying a table, restarting a sequence or switching a trigger
off is never a schema change the application can follow.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType, DropBehavior, ObjectType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import existing_alter_commands, said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import dotted_name, has_option, relation_name
from dbmigrate.core.statements import Statement

_CONTRACT = (
    "Do it in a step after an awaitRollout step (contract phase), once no running version uses it."
)


@register(
    "ban-drop-view",
    "error",
    "DROP VIEW / DROP MATERIALIZED VIEW before the application stopped using it",
    rollback="skip",
    weighs_size=False,
)
def ban_drop_view(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if ctx.contract_phase or not isinstance(node, ast.DropStmt):
        return
    if node.removeType not in (ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW):
        return
    for obj in node.objects or ():
        view = dotted_name(obj)
        if not ctx.is_new_table(view):
            yield Hit(
                f"{said(s)} drops {view} while the running application version may still "
                f"query it: its queries fail. {_CONTRACT}"
            )


@register(
    "ban-set-schema",
    "error",
    "ALTER TABLE … SET SCHEMA moves a table out of the schema the application queries",
    rollback="skip",
    weighs_size=False,
)
def ban_set_schema(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if ctx.contract_phase or not isinstance(node, ast.AlterObjectSchemaStmt):
        return
    if node.relation is None:
        return
    table = relation_name(node.relation)
    if not ctx.is_new_table(table):
        yield Hit(
            f"{said(s)} is brief (ACCESS EXCLUSIVE) but moves {table} to schema "
            f"{node.newschema}: every query of the running application that finds it through "
            f"its search_path fails at once. {_CONTRACT}"
        )


@register(
    "renaming-enum-value",
    "error",
    "ALTER TYPE … RENAME VALUE while the application writes and compares the old value",
    rollback="skip",
    weighs_size=False,
)
def renaming_enum_value(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if ctx.contract_phase or not isinstance(node, ast.AlterEnumStmt) or not node.oldVal:
        return
    yield Hit(
        f"{said(s)}: the running application version still writes and compares "
        f"'{node.oldVal}': its inserts fail and its filters match nothing. Add the new value "
        "(ADD VALUE), move the application and the rows to it, and retire the old value in "
        "the contract phase."
    )


@register(
    "ban-truncate",
    "error",
    "TRUNCATE of an existing table: ACCESS EXCLUSIVE, and every row the application reads gone",
    weighs_size=False,
)
def ban_truncate(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.TruncateStmt):
        return
    tables = [relation_name(r) for r in node.relations or ()]
    existing = [t for t in tables if not ctx.is_new_table(t)]
    if not existing:
        return
    cascade = (
        " CASCADE also empties every table with a foreign key to them."
        if node.behavior == DropBehavior.DROP_CASCADE
        else ""
    )
    yield Hit(
        f"{said(s)} takes ACCESS EXCLUSIVE on {', '.join(existing)} and deletes every row the "
        f"running application reads, with no way back but a restore.{cascade} A migration "
        "changes the schema; removing data belongs in a backfill step with a WHERE (batched, "
        "resumable) or outside the migration."
    )


@register(
    "ban-sequence-restart",
    "error",
    "ALTER SEQUENCE … RESTART hands out ids that may already exist",
    weighs_size=False,
)
def ban_sequence_restart(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.AlterSeqStmt) or not has_option(node.options, "restart"):
        return
    sequence = relation_name(node.sequence)
    yield Hit(
        f"{said(s)}: the next values of {sequence} may already be in use: the application's "
        "inserts fail with unique violations (and a rollback cannot undo it). Only ever move "
        "a sequence forward (setval to above the current maximum)."
    )


_DISABLE_TRIGGER = (
    AlterTableType.AT_DisableTrig,
    AlterTableType.AT_DisableTrigAll,
    AlterTableType.AT_DisableTrigUser,
)


@register(
    "ban-disable-trigger",
    "error",
    "ALTER TABLE … DISABLE TRIGGER: writes stop firing a trigger in use",
    weighs_size=False,
)
def ban_disable_trigger(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    for table, cmd in existing_alter_commands(s.node, ctx, *_DISABLE_TRIGGER):
        what = (
            "every trigger, the foreign-key checks included: writes can break referential integrity"
            if cmd.subtype == AlterTableType.AT_DisableTrigAll
            else f"trigger {cmd.name}"
            if cmd.name
            else "the user triggers"
        )
        yield Hit(
            f"{said(s)} switches off {what} on {table} for the application's writes too, "
            "until it is enabled again: rows it should have written or checked go missing "
            "silently. Drop or replace the trigger in the contract phase instead."
        )

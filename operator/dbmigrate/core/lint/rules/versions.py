"""Rules whose answer depends on the PostgreSQL version the SQL will run on (`--pg-version`,
the server's own with a DSN, else 15) or on what the table is: partitions detached without
blocking (14+), enum values added in a transaction (12+), NOT VALID foreign keys on
partitioned tables (18+), concurrent index builds on partitioned tables (never), and what older
servers cannot parse at all.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast
from pglast.enums import AlterTableType, ConstrType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import partitioned_index_recipe, said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import alter_commands, has_option, relation_name
from dbmigrate.core.statements import Statement


@register(
    "require-concurrent-partition-detach",
    "error",
    "DETACH PARTITION without CONCURRENTLY takes ACCESS EXCLUSIVE on the partitioned table",
)
def require_concurrent_partition_detach(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    for table, cmd in alter_commands(s.node, AlterTableType.AT_DetachPartition):
        if getattr(cmd.def_, "concurrent", False) or ctx.is_new_table(table):
            continue
        if ctx.server_version < 14:
            yield Hit(
                f"{said(s)} takes ACCESS EXCLUSIVE on {table}: every query on it waits until "
                f"the detach is done, and PostgreSQL {ctx.server_version} has no CONCURRENTLY "
                "form (14+). Keep the lock wait short (the executor's lock_timeout does) and "
                "run it when the table is quiet.",
                severity="warning",
            )
            continue
        yield Hit(
            f"{said(s)} takes ACCESS EXCLUSIVE on {table}: every query on it waits. Safe "
            "alternative: … DETACH PARTITION … CONCURRENTLY (SHARE UPDATE EXCLUSIVE; outside a "
            "transaction: sql.transaction: Auto runs it on its own)."
        )


@register(
    "unsupported-on-server-version",
    "error",
    "a statement the target PostgreSQL version refuses (too old for it, or not in a transaction)",
    rollback="keep",
    covers_locks=False,
)
def unsupported_on_server_version(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    node, version = s.node, ctx.server_version
    needs: list[tuple[int, str]] = []
    if isinstance(node, ast.AlterEnumStmt) and node.newVal and ctx.transaction and version < 12:
        yield Hit(
            f"{said(s)} fails: PostgreSQL {version} (before 12) refuses ALTER TYPE … ADD VALUE "
            "inside a transaction block, and this statement runs in one. Give it a step of its "
            "own with sql.transaction: Never."
        )
        return
    if isinstance(node, ast.ReindexStmt) and has_option(node.params, "concurrently"):
        needs.append((12, "REINDEX CONCURRENTLY"))
    for _, cmd in alter_commands(node, AlterTableType.AT_DetachPartition):
        if getattr(cmd.def_, "concurrent", False):
            needs.append((14, "DETACH PARTITION … CONCURRENTLY"))
    for _, _cmd in alter_commands(node, AlterTableType.AT_SetAccessMethod):
        needs.append((15, "ALTER TABLE … SET ACCESS METHOD"))
    for _, _cmd in alter_commands(node, AlterTableType.AT_SetExpression):
        needs.append((17, "ALTER COLUMN … SET EXPRESSION"))
    if isinstance(node, ast.IndexStmt) and node.concurrent and node.relation is not None:
        table = relation_name(node.relation)
        if ctx.is_partitioned(table):
            yield Hit(
                f"{said(s)} fails: PostgreSQL cannot build an index on the partitioned table "
                f"{table} CONCURRENTLY. " + partitioned_index_recipe(node, table)
            )
    for table, cmd in alter_commands(node, AlterTableType.AT_AddConstraint):
        constraint = cmd.def_
        if (
            constraint.contype == ConstrType.CONSTR_FOREIGN
            and constraint.skip_validation
            and ctx.is_partitioned(table)
            and version < 18
        ):
            yield Hit(
                f"{said(s)} fails: PostgreSQL {version} (before 18) cannot add a NOT VALID "
                f"foreign key to the partitioned table {table}. Add it NOT VALID to each "
                "partition and validate those, or add it validated in a quiet period."
            )
    if isinstance(node, ast.MergeStmt):
        needs.append((15, "MERGE"))
    if isinstance(node, ast.IndexStmt) and getattr(node, "nulls_not_distinct", False):
        needs.append((15, "NULLS NOT DISTINCT"))
    for since, what in needs:
        if version < since:
            yield Hit(
                f"{said(s)} fails: {what} needs PostgreSQL {since} or later, and the SQL will "
                f"run on {version}."
            )

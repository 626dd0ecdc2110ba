"""Rules about indexes: CREATE INDEX and DROP INDEX without CONCURRENTLY."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.enums import ObjectType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import partitioned_index_recipe, said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import deparse_with, dotted_name, quote_name, relation_name
from dbmigrate.core.statements import Statement


@register(
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
    if ctx.is_new_table(table) or (node.relation is not None and not node.relation.inh):
        return  # ON ONLY: an invalid index on the partitioned parent alone, nothing is built
    if ctx.is_partitioned(table):
        yield Hit(
            f"{said(s)} takes SHARE on {table} and all its partitions, blocking writes for "
            "every partition's build; CONCURRENTLY is not possible on a partitioned table. "
            + partitioned_index_recipe(node, table)
        )
        return
    changes: list[tuple[Any, str, Any]] = [(node, "concurrent", True)]
    if node.idxname:
        changes.append((node, "if_not_exists", True))
    fixed = deparse_with(node, changes)
    yield Hit(
        f"{said(s)} takes SHARE on {table}, blocking writes for the whole index build. Safe "
        f"alternative: {fixed}; (SHARE UPDATE EXCLUSIVE: reads and writes continue; "
        "sql.transaction: Auto runs it outside a transaction)."
    )


@register(
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
    fixed = " ".join(f"DROP INDEX CONCURRENTLY IF EXISTS {quote_name(name)};" for name in names)
    tables = ", ".join(dict.fromkeys(lock.where for lock in effect.locks))
    yield Hit(
        f"{said(s)} takes ACCESS EXCLUSIVE on {tables}, blocking reads and writes "
        f"(and it waits behind every open transaction on it). Safe alternative: {fixed} "
        "(SHARE UPDATE EXCLUSIVE; sql.transaction: Auto runs it outside a transaction)."
    )

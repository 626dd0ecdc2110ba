"""Rules about data changes in SQL steps: a whole-table UPDATE or DELETE belongs in a
backfill step."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import relation_name
from dbmigrate.core.statements import Statement


@register(
    "prefer-backfill-step", "warning", "UPDATE/DELETE of a whole existing table in one transaction"
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
        f"{said(s)} {verb} every row of {table} in one transaction: row locks on the whole "
        "table until it commits, one huge WAL burst, dead tuples for VACUUM, and no progress "
        "or resume. Safe alternative: a backfill step (keyset batches of its own short "
        "transactions, resumable, adaptive batch size)."
    )

"""Rules about data changes in SQL steps: an UPDATE or DELETE of an existing table that nothing
bounds — no WHERE, or a WHERE that names no key range, batch or join — belongs in a backfill
step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.enums import A_Expr_Kind

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.sqlast import relation_name, walk
from dbmigrate.core.statements import Statement

_BACKFILL = (
    "Safe alternative: a backfill step (keyset batches of its own short transactions, "
    "resumable, adaptive batch size)."
)


@register(
    "prefer-backfill-step",
    "error",
    "UPDATE/DELETE of an existing table that nothing bounds, in one transaction",
)
def prefer_backfill_step(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.UpdateStmt | ast.DeleteStmt):
        return
    table = relation_name(node.relation)
    if ctx.is_new_table(table):
        return
    verb = "updates" if isinstance(node, ast.UpdateStmt) else "deletes"
    if node.whereClause is None:
        yield Hit(
            f"{said(s)} {verb} every row of {table} in one transaction: row locks on the whole "
            "table until it commits, one huge WAL burst, dead tuples for VACUUM, and no "
            f"progress or resume. {_BACKFILL}"
        )
    elif not _bounded(node):
        yield Hit(
            f"{said(s)} {verb} every row of {table} its WHERE matches, in one transaction, and "
            "nothing in it bounds how many (no key range, id list, LIMITed batch or join): on a "
            "big table that is most of it, row-locked until commit. If the rows are known to "
            f"be few, suppress this with the reason. {_BACKFILL}"
        )


def _bounded(node: Any) -> bool:
    """The statement names which rows — a key compared or listed, a column equal to a value, a
    subquery or a join picking them — rather than only a condition on their data (`IS NULL`,
    `< now()`), which can match most of a big table."""
    if getattr(node, "fromClause", None) or getattr(node, "usingClause", None):
        return True  # joined to a batch, a staging table or a list
    for sub in walk(node.whereClause):
        if isinstance(sub, ast.SubLink):
            return True  # `id IN (SELECT … LIMIT n)`, `EXISTS (…)`: rows picked by a query
        if not isinstance(sub, ast.A_Expr):
            continue
        if _names_a_key(sub.lexpr):
            return True
        if sub.kind == A_Expr_Kind.AEXPR_IN or (
            sub.kind == A_Expr_Kind.AEXPR_OP
            and _operator(sub) == "="
            and isinstance(sub.rexpr, ast.A_Const | ast.ParamRef)
        ):
            return True
    return False


def _operator(expr: Any) -> str:
    names = expr.name or ()
    return str(getattr(names[-1], "sval", "")) if names else ""


def _names_a_key(expr: Any) -> bool:
    if not isinstance(expr, ast.ColumnRef):
        return False
    last = expr.fields[-1] if expr.fields else None
    name = str(getattr(last, "sval", "")).lower()
    return name == "id" or name.endswith("_id") or name in ("pk", "key", "uuid")

"""Rules about re-running a step: a statement that committed before a later transaction of the
same step failed runs again when the step is retried, so it must not fail the second time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.statements import Statement


def _is_robust(node: Any) -> bool | None:
    """Whether re-running the statement after it succeeded is harmless (None: not applicable)."""
    if isinstance(
        node,
        ast.CreateStmt
        | ast.CreateTableAsStmt
        | ast.CreateSeqStmt
        | ast.CreateExtensionStmt
        | ast.CreateSchemaStmt,
    ):
        return bool(node.if_not_exists)
    if isinstance(node, ast.IndexStmt):
        return bool(node.if_not_exists) if node.idxname else False
    if isinstance(node, ast.DropStmt):
        return bool(node.missing_ok)
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


@register(
    "prefer-robust-stmts",
    "warning",
    "a statement that fails when its step is retried after a later transaction failed",
    covers_locks=False,
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
        f"{said(s)} commits before a later transaction of the same step; if that one fails, "
        f"the step is retried from the start and this statement fails on the second run. "
        f"{advice}."
    )

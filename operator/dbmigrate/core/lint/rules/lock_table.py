"""The safety net under the specific rules: what `core.locks` knows of every statement.

A statement on an existing table that takes a lock conflicting with reads or writes (SHARE and
stronger) for longer than an instant — while it rewrites the table, reads every row, builds an
index, or until its transaction ends — is an error even when no rule of the catalogue names
it, and a statement whose locks the lock table does not know is a warning. It runs only on
statements no lock-covering rule had a finding for (the engine sees to that), so a statement
is reported once, by the rule with the most specific advice.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import LockMode, StatementEffect
from dbmigrate.core.plpgsql import calls_in
from dbmigrate.core.statements import Statement

_HOW_LONG = {
    "rewrite": "while it rewrites the whole table",
    "scan": "while it reads every row",
    "index build": "for the whole index build",
    "transaction": "until its transaction ends",
}


@register(
    "blocking-lock",
    "error",
    "a statement no specific rule names that blocks reads or writes of an existing table for "
    "longer than an instant (from dbmigrate's lock table), or whose locks are unknown",
    catch_all=True,
)
def blocking_lock(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    existing = [
        lock for lock in effect.locks if lock.of_index_table or not ctx.is_new_table(lock.relation)
    ]
    if not effect.known:
        if any(name in ctx.function_findings for name in calls_in(s.node)):
            return  # a procedure the migration defines: its body is judged at the call
        if existing or not effect.locks:
            yield Hit(
                f"{said(s)}: dbmigrate's lock table has no entry for this kind of statement, so "
                "which tables it locks, in which mode and for how long is not known. Check the "
                "command's documentation before running it against a busy database.",
                severity="warning",
            )
        return
    if isinstance(s.node, ast.RefreshMatViewStmt) and s.node.concurrent:
        return  # EXCLUSIVE on a materialized view blocks no reads, and it takes no writes
    holds = effect.holds
    if holds == "instant":
        return  # a catalog change: brief once granted, and the executor bounds the wait
    if effect.locks and ctx.is_new_table(effect.locks[0].relation):
        return  # what it rewrites, scans or indexes is the statement's own table: new, empty
    blocking = [lock for lock in existing if lock.mode >= LockMode.SHARE]
    if not blocking:
        return
    worst = max(blocking, key=lambda lock: lock.mode)
    how_long = _HOW_LONG[holds]
    if holds == "rewrite" and effect.rewrite == "maybe":
        how_long = "while it rewrites the whole table (if it has to: it depends on the data)"
    yield Hit(
        f"{said(s)} takes {worst.mode.label} on {worst.where}, blocking {worst.mode.blocks} "
        f"{how_long}. No specific rule covers this statement: the lock table does. Find a "
        "form that holds the strong lock only for an instant (the expand/contract patterns: a "
        "new object built concurrently or NOT VALID, then a brief switch), or run it in a "
        "maintenance window."
    )

"""Judging one statement: its lock effect given what the migration did before it, every rule
on it (the lock table's catch-all only where no specific rule spoke), the weight the tables'
sizes give a lock finding, and the locks its transaction holds afterwards.
"""

from __future__ import annotations

from dataclasses import replace

from pglast import ast
from pglast.enums import AlterTableType

from dbmigrate.core.lint.context import LintContext, TableEstimate
from dbmigrate.core.lint.findings import Finding
from dbmigrate.core.lint.rules import RULES, Severity
from dbmigrate.core.lint.suppress import Suppression
from dbmigrate.core.locks import RelationLock, StatementEffect
from dbmigrate.core.sqlast import relation_name
from dbmigrate.core.statements import Statement


def note_locks(effect: StatementEffect, context: LintContext) -> None:
    """Remember the locks the current transaction now holds (until it commits)."""
    if context.transaction is None:
        return
    for lock in effect.locks:
        if lock.of_index_table:
            continue
        held = context.transaction_locks.get(lock.relation)
        if held is None or lock.mode > held:
            context.transaction_locks[lock.relation] = lock.mode


def effect_in_context(
    effect: StatementEffect, s: Statement, context: LintContext
) -> StatementEffect:
    """The statement's effect given what the migration did before it: DROP INDEX of an index
    created earlier locks that index's (known) table; SET NOT NULL skips its scan when a
    validated CHECK (col IS NOT NULL) exists (PostgreSQL 12+)."""
    node = s.node
    if any(lock.of_index_table for lock in effect.locks):
        locks = tuple(
            RelationLock(table, lock.mode)
            if lock.of_index_table and (table := context.index_table(lock.relation)) is not None
            else lock
            for lock in effect.locks
        )
        return replace(effect, locks=locks)
    if not isinstance(node, ast.AlterTableStmt) or context.server_version < 12:
        return effect
    cmds = node.cmds or ()
    set_not_null = [c for c in cmds if c.subtype == AlterTableType.AT_SetNotNull]
    if not set_not_null or len(set_not_null) != len(cmds):
        return effect
    table = relation_name(node.relation)
    if all(context.not_null_is_proven(table, str(c.name)) for c in set_not_null):
        return replace(
            effect,
            scan=False,
            notes=("a validated CHECK (… IS NOT NULL) proves it: no scan",),
        )
    return effect


def run_rules(
    s: Statement,
    effect: StatementEffect,
    context: LintContext,
    step: str | None,
    suppressions: list[Suppression],
) -> list[Finding]:
    out: list[Finding] = []
    rollback = context.direction == "down"
    covered = False
    for rule in RULES.values():
        if rule.check is None or (rollback and rule.rollback == "skip"):
            continue
        if rule.catch_all and covered:
            continue  # a specific rule already judged this statement's locks
        for hit in rule.check(s, effect, context):
            covered = covered or rule.covers_locks
            severity: Severity = hit.severity or rule.severity
            message = hit.message
            if rollback and rule.rollback == "warn":
                if severity == "error":
                    severity = "warning"
                message += (
                    " (In rollback SQL: it runs while undoing a failed migration, often under "
                    "pressure, so it should not block either; reported as a warning.)"
                )
            if rule.weighs_size and context.table_sizes:
                severity, message = _weigh(severity, message, effect, context)
            matched = next((x for x in suppressions if rule.id in x.rules), None)
            out.append(
                Finding(
                    rule=rule.id,
                    severity=severity,
                    message=message,
                    step=step,
                    statement=s.index,
                    line=s.line,
                    direction=context.direction,
                    suppressed=matched is not None,
                    reason=matched.reason if matched is not None else None,
                )
            )
    return out


def _weigh(
    severity: Severity, message: str, effect: StatementEffect, context: LintContext
) -> tuple[Severity, str]:
    """With the database's table sizes: a lock finding on existing tables that are all small
    is information (the rewrite or scan is over in milliseconds); the sizes are quoted."""
    sizes: list[tuple[str, TableEstimate]] = []
    for lock in effect.locks:
        if lock.of_index_table or context.is_new_table(lock.relation):
            continue
        estimate = context.size_of(lock.relation)
        if estimate is None:
            return severity, message  # a table the database does not have (yet), or unknown
        sizes.append((lock.relation, estimate))
    if not sizes:
        return severity, message
    described = ", ".join(f"{table}: {estimate.describe()}" for table, estimate in sizes)
    if all(estimate.small for _, estimate in sizes):
        return "info", f"{message} (Table size {described}: small enough to be over in moments.)"
    return severity, f"{message} (Table size {described}.)"

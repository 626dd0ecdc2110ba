"""Rules about transactions: transaction control in a step, statements PostgreSQL refuses in a
transaction block, and one transaction holding write-blocking locks on several tables."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.lint.rules.messages import said
from dbmigrate.core.lint.rules.registry import Hit, register
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.statements import Statement, statement_cannot_run_in_transaction


@register(
    "transaction-control",
    "error",
    "BEGIN/COMMIT/ROLLBACK/SAVEPOINT in a step: the executor manages transactions",
    rollback="keep",
    covers_locks=False,
)
def transaction_control(s: Statement, effect: StatementEffect, ctx: LintContext) -> Iterator[Hit]:
    if not isinstance(s.node, ast.TransactionStmt):
        return
    yield Hit(
        f"{said(s)}: dbmigrate manages a step's transactions itself (it records the step in its "
        "history table in the same transaction and retries lock timeouts). Remove it and choose "
        "sql.transaction: Auto (default), Always (the whole step in one transaction) or Never "
        "(each statement on its own)."
    )


def _refused_in_transaction(
    s: Statement, ctx: LintContext, refused: str, advice: str
) -> Iterator[Hit]:
    """A hit for a statement PostgreSQL refuses in a transaction block, if it runs in one."""
    if ctx.in_transaction_block:
        where = f" (line {ctx.transaction_block_line})" if ctx.transaction_block_line else ""
        where = f"inside the BEGIN … COMMIT block opened{where}"
    elif ctx.transaction_mode == "Always":
        where = "in a step with sql.transaction: Always (one transaction for the whole step)"
    else:
        return
    yield Hit(
        f"{said(s)} runs {where}; PostgreSQL refuses {refused} in a transaction block (SQLSTATE "
        f"25001), so the step fails. {advice}"
    )


@register(
    "ban-concurrent-index-creation-in-transaction",
    "error",
    "CREATE INDEX CONCURRENTLY inside a transaction (PostgreSQL refuses it)",
    rollback="keep",
    covers_locks=False,
)
def concurrent_index_in_transaction(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    if isinstance(s.node, ast.IndexStmt) and s.node.concurrent:
        yield from _refused_in_transaction(
            s,
            ctx,
            "CREATE INDEX CONCURRENTLY",
            "Remove BEGIN/COMMIT and use sql.transaction: Auto (the default), which runs this "
            "statement on its own, outside any transaction, taking only SHARE UPDATE EXCLUSIVE "
            "(reads and writes continue).",
        )


@register(
    "non-transactional-statement-in-transaction",
    "error",
    "DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM … inside a transaction",
    rollback="keep",
    covers_locks=False,
)
def non_transactional_in_transaction(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    node = s.node
    if not isinstance(node, ast.IndexStmt) and statement_cannot_run_in_transaction(node):
        yield from _refused_in_transaction(
            s,
            ctx,
            "this statement",
            "Use sql.transaction: Auto (the default), which runs it on its own.",
        )


@register(
    "strong-locks-on-several-tables",
    "warning",
    "one transaction takes write-blocking locks on several existing tables",
    covers_locks=False,
)
def strong_locks_on_several_tables(
    s: Statement, effect: StatementEffect, ctx: LintContext
) -> Iterator[Hit]:
    if ctx.transaction is None:
        return
    for lock in effect.locks:
        if not lock.mode.blocks_writes or lock.of_index_table or ctx.is_new_table(lock.relation):
            continue
        held = {
            t: m
            for t, m in ctx.transaction_locks.items()
            if m.blocks_writes and t != lock.relation and not ctx.is_new_table(t)
        }
        if not held:
            continue
        others = ", ".join(f"{m.label} on {t}" for t, m in held.items())
        yield Hit(
            f"{said(s)} takes {lock.mode.label} on {lock.relation} in a transaction that "
            f"already holds {others}: while it waits for {lock.relation}, queries on the "
            "other tables queue behind the held locks, and application transactions touching "
            "the tables in the other order can deadlock. Put the changes to each table in "
            "their own step (or use sql.transaction: Never)."
        )
        return

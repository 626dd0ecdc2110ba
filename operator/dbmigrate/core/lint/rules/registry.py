"""The rule registry: each rule's id, severity, summary and rollback policy, in registration
order (the engine runs the checks in this order, so it is the order of a statement's
findings), plus the rules the engine emits itself.

A family module registers its checks with `@register(...)` when `rules/__init__` imports it,
so the import order there is the registry's order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from dbmigrate.core.lint.context import LintContext
from dbmigrate.core.locks import StatementEffect
from dbmigrate.core.statements import Statement

Severity = Literal["error", "warning", "info"]
RollbackPolicy = Literal["keep", "warn", "skip"]


@dataclass(frozen=True)
class Hit:
    """One problem a check found; `severity` None means the rule's own severity."""

    message: str
    severity: Severity | None = None


Check = Callable[[Statement, StatementEffect, LintContext], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    summary: str
    rollback: RollbackPolicy
    check: Check | None  # None: emitted by the engine itself (syntax errors, suppressions)
    # Judges how long the statement holds its locks (else: schema design, transactions,
    # re-runs): a finding of such a rule means the lock table's catch-all has nothing to add.
    covers_locks: bool = True
    # Runs only on statements no lock-covering rule had a finding for (`lock_table`).
    catch_all: bool = False
    # Its findings are about how long a lock is held, so the table's size decides how much
    # they matter (a rewrite of a 200-row table is information); not so for breaking changes.
    weighs_size: bool = True


RULES: dict[str, Rule] = {}


def register(
    rule_id: str,
    severity: Severity,
    summary: str,
    rollback: RollbackPolicy = "warn",
    *,
    covers_locks: bool = True,
    catch_all: bool = False,
    weighs_size: bool | None = None,
) -> Callable[[Check], Check]:
    def add(check: Check) -> Check:
        weighs = covers_locks if weighs_size is None else weighs_size
        RULES[rule_id] = Rule(
            rule_id, severity, summary, rollback, check, covers_locks, catch_all, weighs
        )
        return check

    return add


def _engine_rule(
    rule_id: str, severity: Severity, summary: str, rollback: RollbackPolicy = "keep"
) -> None:
    RULES[rule_id] = Rule(
        rule_id, severity, summary, rollback, None, covers_locks=False, weighs_size=False
    )


_engine_rule("syntax-error", "error", "SQL that PostgreSQL's parser rejects")
_engine_rule(
    "invalid-suppression",
    "warning",
    "a dbmigrate:ignore comment that names no or unknown rules, gives no reason, or is attached "
    "to no statement",
)
_engine_rule(
    "sql-not-available",
    "warning",
    "SQL read from a ConfigMap that was not provided to the linter",
)
